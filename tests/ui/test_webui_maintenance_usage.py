"""The maintenance page's machines (every agent's, with its mode) and the executor page's
disk use, against a real master and two real agents with Debian's chromium under Playwright
(tests/ui/conftest.py).

* Maintenance: one agent's machine (``maint-drain.test``) in a window, the other agent's
  (``maint-up.test``) in none: the page lists both, DRAINING with its window and UP, each
  with a link to its agent's page; ``/master/ui/maintenance`` pages, filters and refuses bad
  queries.
* Executor: a task with disk on the agent run with ``disk/du`` writes 3 MB; its executor's
  page shows the disk its container uses (the agent's ``disk_used_bytes``) next to what was
  allocated, and "–" for the GPUs it does not measure.
* ACLs: ``/master/ui/maintenance`` lists to each principal only the machines it may see
  under ``get_maintenance_statuses``.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from butte.cli.local import free_port
from butte.core.auth import basic_header
from butte.master import maintenance
from butte.master.maintenance_view import MachineQuery, machine_rows
from butte.testing.cluster import ClusterHandle, start_cluster
from butte.testing.require import require_module

pytestmark = pytest.mark.integration

expect = require_module("playwright.sync_api").expect

DRAINING_HOST = "maint-drain.test"
UP_HOST = "maint-up.test"
BLOB_BYTES = 3_000_000


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, bare_browser: Any
) -> Iterator[tuple[ClusterHandle, dict[str, Any]]]:
    """A master, an agent on ``maint-drain.test`` with ``disk/du`` running one task that
    wrote `BLOB_BYTES` to its sandbox, then a second agent on ``maint-up.test``; (the
    cluster, the task)."""
    base = tmp_path_factory.mktemp("ui-maint-usage")
    flags = [
        f"--hostname={DRAINING_HOST}",
        "--isolation=posix/cpu,posix/mem,disk/du",
        "--container_disk_watch_interval=500ms",
    ]
    processes: list[subprocess.Popen] = []
    with start_cluster(base / "c", agent_flags=flags) as c:
        try:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "butte", "run", "--master", c.master_address]
                    + ["--name", "disk-ui", "--resources", "cpus:0.1;mem:32;disk:64"]
                    + ["--command", f"head -c {BLOB_BYTES} /dev/zero > blob; sleep 300"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            task = _running(c, "disk-ui")
            # The second agent comes after the task is placed, so the task is on the first.
            log = open(base / "agent-up.log", "wb")  # noqa: SIM115 - closed below
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "butte", "agent", "--master", c.master_address]
                    + ["--port", str(free_port()), "--ip", "127.0.0.1"]
                    + ["--work_dir", str(base / "agent-up"), f"--hostname={UP_HOST}"]
                    + ["--resources", "cpus:2;mem:1024;disk:1024"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            c.wait_agents_active(2, timeout=30)
            yield c, task
        finally:
            for process in reversed(processes):
                process.terminate()
            for process in processes:
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
            with contextlib.suppress(NameError):
                log.close()


def _running(cluster: ClusterHandle, name: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    tasks: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        tasks = cluster.get("/master/tasks")["tasks"]
        for task in tasks:
            if task["name"] == name and task["state"] == "TASK_RUNNING":
                return task
        time.sleep(0.2)
    raise TimeoutError(f"no running task {name!r}: {tasks}")


@pytest.fixture
def page(bare_browser: Any) -> Iterator[Any]:
    """A fresh page; JavaScript errors on it fail the test."""
    context = bare_browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(15000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        yield page
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def _post(url: str, body: Any) -> None:
    answer = requests.post(url, json=body, timeout=10)
    assert answer.status_code == 200, answer.text


def _agent_of(c: ClusterHandle, hostname: str) -> str:
    (agent,) = [a["id"] for a in c.state()["slaves"] if a["hostname"] == hostname]
    return agent


def test_maintenance_page_lists_every_agents_machine(cluster, page, screenshot):
    c, _ = cluster
    drain_agent, up_agent = _agent_of(c, DRAINING_HOST), _agent_of(c, UP_HOST)
    start_ns = (int(time.time()) + 3600) * 1_000_000_000
    window = {
        "machine_ids": [{"hostname": DRAINING_HOST}],
        "unavailability": {
            "start": {"nanoseconds": start_ns},
            "duration": {"nanoseconds": 3 * 3600 * 1_000_000_000},
        },
    }
    _post(f"{c.master_url}/master/maintenance/schedule", {"windows": [window]})
    try:
        page.goto(f"{c.master_url}/#/maintenance")
        machines = page.locator('table[data-table="maintenance-machines"]')
        drain_row = machines.locator(f'tr[data-machine="{DRAINING_HOST}"]')
        up_row = machines.locator(f'tr[data-machine="{UP_HOST}"]')
        # The agent in no window is listed, UP, with its IP.
        expect(up_row.locator("[data-mode]")).to_have_text("UP")
        expect(up_row).to_contain_text("127.0.0.1")
        expect(drain_row.locator("[data-mode]")).to_have_text("DRAINING")
        expect(drain_row).to_contain_text("3h 0m")  # its window's duration
        # DRAINING first, then UP; the header counts both.
        expect(machines.locator("tbody tr").first).to_have_attribute("data-mode", "DRAINING")
        expect(page.locator(".page-sub")).to_contain_text("1 draining · 0 down · 1 up")
        # The task running on the draining machine got an inverse offer: its framework's
        # answer (UNKNOWN until it answers) shows.
        expect(drain_row.locator(".chip[data-answer]")).to_contain_text("butte-run")
        screenshot(page, "maintenance-machines")

        # Each row links to its agent's page.
        expect(drain_row.locator(f'.agent-chip[data-agent="{drain_agent}"]')).to_be_visible()
        up_row.locator(f'.agent-chip[data-agent="{up_agent}"] a').click()
        expect(page).to_have_url(re.compile(rf"#/agents/{re.escape(up_agent)}$"))
        page.go_back()

        # At 800 px the wide table scrolls in its own box: nothing sticks out sideways.
        page.set_viewport_size({"width": 800, "height": 900})
        expect(up_row).to_be_visible()
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"the page is {overflow}px wider than the window"
        page.set_viewport_size({"width": 1400, "height": 900})

        # Filtered by mode (kept in the address).
        page.locator("#machine-mode").select_option("UP")
        expect(page).to_have_url(re.compile(r"#/maintenance\?.*mode=UP"))
        expect(machines.locator("tbody tr[data-machine]")).to_have_count(1)
        expect(up_row).to_be_visible()
    finally:
        _post(f"{c.master_url}/master/maintenance/schedule", {"windows": []})
    page.goto(f"{c.master_url}/#/maintenance")
    expect(machines.locator(f'tr[data-machine="{DRAINING_HOST}"] [data-mode]')).to_have_text("UP")
    expect(machines).to_contain_text("Every machine is UP")


def test_maintenance_listing_endpoint(cluster):
    c, _ = cluster
    url = f"{c.master_url}/master/ui/maintenance"
    down = "maint-down.example"
    windows = [
        {
            "machine_ids": [{"hostname": DRAINING_HOST}],
            "unavailability": {"start": {"nanoseconds": (int(time.time()) + 60) * 10**9}},
        },
        {
            "machine_ids": [{"hostname": down}],
            "unavailability": {"start": {"nanoseconds": int(time.time()) * 10**9}},
        },
    ]
    _post(f"{c.master_url}/master/maintenance/schedule", {"windows": windows})
    _post(f"{c.master_url}/master/machine/down", [{"hostname": down}])
    try:
        doc = requests.get(url, timeout=10).json()
        assert doc["counts"] == {"DOWN": 1, "DRAINING": 1, "UP": 1}
        assert [(r["hostname"], r["mode"]) for r in doc["rows"]] == [
            (down, "DOWN"),
            (DRAINING_HOST, "DRAINING"),
            (UP_HOST, "UP"),
        ]
        by_host = {r["hostname"]: r for r in doc["rows"]}
        assert by_host[down]["agents"] == [] and by_host[down]["agent_count"] == 0
        assert [a["id"] for a in by_host[UP_HOST]["agents"]] == [_agent_of(c, UP_HOST)]
        assert by_host[UP_HOST]["unavailability"] is None
        assert by_host[DRAINING_HOST]["unavailability"] == windows[0]["unavailability"]
        paged = requests.get(url, params={"offset": 1, "limit": 1}, timeout=10).json()
        assert paged["total"] == 3 and [r["hostname"] for r in paged["rows"]] == [DRAINING_HOST]
        found = requests.get(url, params={"q": "UP.TEST"}, timeout=10).json()
        assert [r["hostname"] for r in found["rows"]] == [UP_HOST]
        moded = requests.get(url, params={"mode": "down"}, timeout=10).json()
        assert [r["hostname"] for r in moded["rows"]] == [down]
    finally:
        _post(f"{c.master_url}/master/machine/up", [{"hostname": down}])
        _post(f"{c.master_url}/master/maintenance/schedule", {"windows": []})
    for bad in (
        {"mode": "SIDEWAYS"},
        {"limit": "5000"},
        {"limit": "-1"},
        {"offset": "x"},
        {"q": "y" * 5000},
        {"sort": "hostname"},
    ):
        answer = requests.get(url, params=bad, timeout=10)
        assert answer.status_code == 400, (bad, answer.text)
    assert requests.post(url, timeout=10).status_code == 405


def test_machine_rows_narrowed_to_allowed_machines():
    """Under ``--acls`` the listing holds only the machines the caller may see under
    ``get_maintenance_statuses``, agents' machines in no window included (pure)."""
    state = maintenance.Maintenance()
    state.set_windows([maintenance.Window((("a.example", ""),), 10**18)])

    class FakeAgent:  # the fields machine_rows reads of an Agent
        def __init__(self, agent_id: str, hostname: str) -> None:
            self.agent_id, self.hostname, self.ip = agent_id, hostname, "10.0.0.1"
            self.port, self.connected = 5051, True

    agents: list[Any] = [FakeAgent("A", "a.example"), FakeAgent("B", "b.example")]
    every = machine_rows(state, agents, {}, MachineQuery())
    assert [(r["hostname"], r["mode"]) for r in every["rows"]] == [
        ("a.example", "DRAINING"),
        ("b.example", "UP"),
    ]
    narrowed = machine_rows(
        state, agents, {}, MachineQuery(), lambda m: m.get("hostname") == "b.example"
    )
    assert [r["hostname"] for r in narrowed["rows"]] == ["b.example"]
    assert narrowed["counts"] == {"DOWN": 0, "DRAINING": 0, "UP": 1}


def test_executor_page_shows_disk_used_and_gpus(cluster, page, screenshot):
    c, task = cluster
    executor = task["executor_id"] or task["id"]

    def disk_used() -> float:
        doc = requests.get(
            f"{c.master_url}/master/ui/task-usage", params={"task_id": task["id"]}, timeout=10
        ).json()
        return float(doc["tasks"][0].get("statistics", {}).get("disk_used_bytes", 0))

    deadline = time.monotonic() + 30
    while disk_used() < BLOB_BYTES and time.monotonic() < deadline:
        time.sleep(0.5)
    assert disk_used() >= BLOB_BYTES

    page.goto(
        f"{c.master_url}/#/agents/{task['slave_id']}/frameworks/{task['framework_id']}"
        f"/executors/{executor}"
    )
    resources = page.locator('table[data-table="executor-resources"]')
    disk = resources.locator('tr[data-resource="disk"] td')
    # In use: the sandbox's 3 MB (du counts blocks: 2.9 MB and a little more).
    expect(disk.nth(0)).to_have_text(re.compile(r"^(2\.9|3\.\d) MB$"))
    expect(disk.nth(1)).to_have_text("64 MB")  # allocated: the task's disk
    gpus = resources.locator('tr[data-resource="gpus"] td')
    expect(gpus.nth(0)).to_have_text("–")
    expect(gpus.nth(1)).to_have_text("0")
    screenshot(page, "executor-disk")


def test_maintenance_listing_narrowed_under_acls(cluster_factory, tmp_path):
    """With ``get_maintenance_statuses`` rules, ``/master/ui/maintenance`` lists to each
    principal only the machines it may see: ``ops`` every one (the agent's UP machine
    included), ``some`` only ``maint-b.example``; no credentials: 401."""
    secrets = {"ops": "ops-Secret-m1", "some": "some-Secret-m2"}
    creds = tmp_path / "credentials"
    creds.write_text("".join(f"{p} {s}\n" for p, s in secrets.items()))
    rules = [
        {"principals": {"values": ["ops"]}, "machines": {"type": "ANY"}},
        {"principals": {"values": ["some"]}, "machines": {"values": ["maint-b.example"]}},
        {"principals": {"type": "ANY"}, "machines": {"type": "NONE"}},
    ]
    c = cluster_factory(
        agents=1,
        http_auth=("ops", secrets["ops"]),
        master_flags=[
            "--authenticate_http_readonly",
            "--authenticate_http_readwrite",
            f"--credentials={creds}",
            f"--acls={json.dumps({'get_maintenance_statuses': rules})}",
        ],
    )
    url = c.master_url
    ops = {"Authorization": basic_header("ops", secrets["ops"])}
    some = {"Authorization": basic_header("some", secrets["some"])}
    windows = [
        {
            "machine_ids": [{"hostname": "maint-a.example"}, {"hostname": "maint-b.example"}],
            "unavailability": {"start": {"nanoseconds": 1_900_000_000 * 10**9}},
        }
    ]
    answer = requests.post(
        f"{url}/master/maintenance/schedule", json={"windows": windows}, headers=ops, timeout=10
    )
    assert answer.status_code == 200, answer.text
    agent_host = c.state()["slaves"][0]["hostname"].lower()

    def hosts(headers: dict[str, str]) -> list[tuple[str, str]]:
        got = requests.get(f"{url}/master/ui/maintenance", headers=headers, timeout=10)
        assert got.status_code == 200, got.text
        return [(r["hostname"], r["mode"]) for r in got.json()["rows"]]

    assert hosts(ops) == [
        ("maint-a.example", "DRAINING"),
        ("maint-b.example", "DRAINING"),
        (agent_host, "UP"),
    ]
    assert hosts(some) == [("maint-b.example", "DRAINING")]
    assert requests.get(f"{url}/master/ui/maintenance", timeout=10).status_code == 401
