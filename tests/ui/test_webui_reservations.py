"""The agent page shows the agent's reservations and persistent volumes (with the task that
uses a volume), escaped like everything else; the roles page shows reserved resources.
A cluster of its own (one agent with a static reservation), Debian's chromium under
Playwright (tests/ui/conftest.py)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from butte.testing.cluster import start_cluster
from butte.testing.require import require_module

pytestmark = pytest.mark.integration

expect = require_module("playwright.sync_api").expect

USER = Path(__file__).resolve().parents[1] / "integration" / "volume_user.py"
HOSTILE = '<img src=x onerror="window.__xss=1">'


def _call(url: str, call_type: str, payload: dict[str, Any]) -> None:
    body = {"type": call_type, call_type.lower(): payload}
    answer = requests.post(url + "/api/v1", json=body, timeout=10)
    assert answer.status_code == 202, answer.text


def _db(name: str, value: float) -> dict[str, Any]:
    labels = {"labels": [{"key": "team", "value": "storage"}, {"key": "note", "value": HOSTILE}]}
    reservation = {"type": "DYNAMIC", "role": "db", "principal": "dba", "labels": labels}
    return {
        "name": name,
        "type": "SCALAR",
        "scalar": {"value": value},
        "reservations": [reservation],
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, bare_browser) -> Iterator[tuple[Any, str, subprocess.Popen, str]]:
    """One agent with ``cpus(eng):1`` (static), ``db`` reserved by an operator with a volume
    ``pg`` that a task of `volume_user` holds; yields (cluster, agent id, user, task id)."""
    base = tmp_path_factory.mktemp("ui-resv")
    resources = "cpus:4;mem:2048;disk:1000;ports:[31000-31100];cpus(eng):1"
    with start_cluster(base / "c", resources=resources) as c:
        url = c.master_url
        agent_id = c.state()["slaves"][0]["id"]
        reserve = [_db("cpus", 1), _db("mem", 256), _db("disk", 200)]
        _call(url, "RESERVE_RESOURCES", {"agent_id": {"value": agent_id}, "resources": reserve})
        volume = _db("disk", 64)
        volume["disk"] = {
            "persistence": {"id": "pg", "principal": "dba"},
            "volume": {"container_path": "pgdata", "mode": "RW"},
        }
        _call(url, "CREATE_VOLUMES", {"agent_id": {"value": agent_id}, "volumes": [volume]})
        user = subprocess.Popen(
            [sys.executable, str(USER), c.master_address, "db", "pg"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert user.stdout is not None
            line = user.stdout.readline()
            assert line.startswith("running "), line
            yield c, agent_id, user, line.split()[1]
        finally:
            user.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                user.wait(10)


@pytest.fixture
def page(bare_browser: Any) -> Iterator[Any]:
    context = bare_browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(15000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on(
        "console",
        lambda message: (
            errors.append(message.text)
            if message.type == "error" and "Content Security Policy" in message.text
            else None
        ),
    )
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def test_agent_page_shows_reservations_and_volumes(cluster, page, screenshot):
    c, agent_id, user, task_id = cluster
    page.goto(f"{c.master_url}/#/agents/{agent_id}")
    reservations = page.locator('table[data-table="reservations"]')
    db = reservations.locator('tr[data-role="db"]')
    expect(db).to_contain_text("DYNAMIC")
    expect(db).to_contain_text("dba")
    expect(db).to_contain_text("team=storage")
    expect(db).to_contain_text("cpus:1;disk:200;mem:256")
    expect(db).to_contain_text(task_id)  # the task holding the volume uses the reservation
    eng = reservations.locator('tr[data-role="eng"]')
    expect(eng).to_contain_text("STATIC")
    expect(eng).to_contain_text("cpus:1")
    expect(eng).to_contain_text("no")
    volume = page.locator('table[data-table="volumes"] tr[data-volume="pg"]')
    expect(volume).to_contain_text("64 MB")
    expect(volume).to_contain_text("pgdata")
    expect(volume).to_contain_text("ROOT")
    link = volume.locator("a")
    expect(link).to_have_text(task_id)
    assert link.get_attribute("href") == f"#/tasks/{task_id}"
    # a label's value is text, never markup
    expect(db).to_contain_text(HOSTILE)
    assert page.locator('table[data-table="reservations"] img').count() == 0
    assert page.evaluate("() => window.__xss") is None
    screenshot(page, "agent-reservations")

    # the task ends: the page sees the volume free again without a reload
    user.kill()
    user.wait(10)
    expect(volume).to_contain_text("free", timeout=60000)


def test_roles_page_shows_reserved_resources(cluster, page):
    c, _, _, _ = cluster
    page.goto(f"{c.master_url}/#/roles")
    row = page.locator('table[data-table="roles"] tr[data-role="db"]')
    expect(row).to_contain_text("1 cpus · 256 MB · disk 200 MB")


def test_agent_resources_endpoint_refuses_bad_requests(cluster):
    c, _, _, _ = cluster
    for query, status in (("", 400), ("?agent_id=nope", 404)):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"{c.master_url}/master/ui/agent-resources{query}", timeout=5)
        assert e.value.code == status
    request = urllib.request.Request(
        f"{c.master_url}/master/ui/agent-resources?agent_id=x", method="POST", data=b""
    )
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(request, timeout=5)
    assert e.value.code == 405
