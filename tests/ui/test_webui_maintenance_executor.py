"""The maintenance page and the executor page of the web UI, against real clusters with
Debian's chromium under Playwright (tests/ui/conftest.py).

* Maintenance: a window scheduled through the master's API shows on ``#/maintenance``
  (reached from the navigation) with each machine's mode, DRAINING, then DOWN after
  ``/machine/down``; once the machines are brought up and the schedule cleared, the page
  says every machine is UP, without a reload.
* Executor: a real task on a real agent; its executor's page is opened from the agent page
  (and from the framework page) at Mesos' address
  ``#/agents/<agent>/frameworks/<framework>/executors/<executor>``, shows the task running,
  and its sandbox link opens the sandbox with the task's stdout.
* View ACLs: a principal who may not view the framework sees neither its executor nor its
  tasks (``/master/ui/executor`` answers 404, ``/master/ui/executors`` has no rows, the page
  shows no task); one who may view it sees them.
* At scale (1,000 simulated agents, 10,000 tasks of one framework, 500 scheduled machines):
  the executors cards and the maintenance page show their first rows quickly, in the style of
  tests/ui/test_webui_scale.py.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from butte.cli.local import free_port
from butte.core.auth import basic_header
from butte.testing.cluster import ClusterHandle, start_cluster
from butte.testing.require import require_module
from butte.testing.ui_timing import PageCheck, fresh_page, measure, wait_for

pytestmark = pytest.mark.integration

expect = require_module("playwright.sync_api").expect

MARK = "executor-page-stdout"
ELSEWHERE = "maint-elsewhere.example"


def _run(master: str, name: str, command: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "butte", "run", "--master", master]
        + ["--name", name, "--command", command, *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


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


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, bare_browser) -> Iterator[tuple[ClusterHandle, dict[str, Any]]]:
    """One agent running one ``butte run`` task that prints `MARK`; (cluster, its task)."""
    base = tmp_path_factory.mktemp("ui-maint-exec")
    with start_cluster(base / "c") as c:
        run = _run(c.master_address, "exec-ui", f"echo {MARK}; sleep 300")
        try:
            yield c, _running(c, "exec-ui")
        finally:
            run.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                run.wait(10)


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


def test_maintenance_page_shows_schedule_and_modes(cluster, page, screenshot):
    c, _ = cluster
    host = c.state()["slaves"][0]["hostname"]
    start_ns = (int(time.time()) + 3600) * 1_000_000_000
    schedule = {
        "windows": [
            {
                "machine_ids": [{"hostname": host}],
                "unavailability": {
                    "start": {"nanoseconds": start_ns},
                    "duration": {"nanoseconds": 2 * 3600 * 1_000_000_000},
                },
            },
            {
                "machine_ids": [{"hostname": ELSEWHERE}],
                "unavailability": {"start": {"nanoseconds": start_ns - 60 * 1_000_000_000}},
            },
        ]
    }
    _post(f"{c.master_url}/master/maintenance/schedule", schedule)
    _post(f"{c.master_url}/master/machine/down", [{"hostname": ELSEWHERE}])
    try:
        page.goto(f"{c.master_url}/#/")
        page.locator('#nav a[data-route="maintenance"]').click()
        expect(page).to_have_url(re.compile(r"#/maintenance$"))
        windows = page.locator('table[data-table="maintenance-windows"] tbody tr')
        expect(windows).to_have_count(2)
        ours = page.locator(f'table[data-table="maintenance-windows"] .chip[data-machine="{host}"]')
        expect(ours).to_contain_text("DRAINING")
        # Sorted by begin: ELSEWHERE's (open-ended) first, then ours (two hours).
        expect(windows.first).to_contain_text("open-ended")
        expect(windows.nth(1)).to_contain_text("2h 0m")
        machines = page.locator('table[data-table="maintenance-machines"]')
        ours_row = machines.locator(f'tr[data-machine="{host}"]')
        expect(ours_row).to_contain_text("DRAINING")
        # The framework running there was sent an inverse offer: its answer, by name.
        expect(ours_row.locator(".chip[data-answer]")).to_contain_text("butte-run")
        expect(machines.locator(f'tr[data-machine="{ELSEWHERE}"]')).to_contain_text("DOWN")
        expect(machines.locator(f'tr[data-machine="{ELSEWHERE}"] [data-mode]')).to_have_text("DOWN")
        expect(page.locator(".page-sub")).to_contain_text("1 draining · 1 down")
        screenshot(page, "maintenance")
    finally:
        _post(f"{c.master_url}/master/machine/up", [{"hostname": ELSEWHERE}])
        _post(f"{c.master_url}/master/maintenance/schedule", {"windows": []})
    # The page follows without a reload: every machine is UP again.
    expect(page.locator('table[data-table="maintenance-machines"]')).to_contain_text(
        "Every machine is UP", timeout=20000
    )
    expect(page.locator('table[data-table="maintenance-windows"]')).to_contain_text(
        "No maintenance is scheduled"
    )


def _executor_hash(task: dict[str, Any]) -> str:
    executor = task["executor_id"] or task["id"]
    return f"#/agents/{task['slave_id']}/frameworks/{task['framework_id']}/executors/{executor}"


def _agent_executor(c: ClusterHandle, task: dict[str, Any]) -> dict[str, Any]:
    """The task's executor in its agent's own ``/state`` (asked directly, not through the
    master)."""
    (agent,) = [a for a in c.state()["slaves"] if a["id"] == task["slave_id"]]
    address = agent["pid"].split("@", 1)[1]
    state = requests.get(f"http://{address}/state", timeout=10).json()
    executor = task["executor_id"] or task["id"]
    (fw,) = [f for f in state["frameworks"] if f["id"] == task["framework_id"]]
    (found,) = [e for e in fw["executors"] if e["id"] == executor]
    return found


def test_executor_page_from_agent_page_with_task_and_sandbox(cluster, page, screenshot):
    c, task = cluster
    page.goto(f"{c.master_url}/#/agents/{task['slave_id']}")
    executor = task["executor_id"] or task["id"]
    row = page.locator(f'table[data-table="executors"] tr[data-executor="{executor}"]')
    expect(row).to_contain_text("1")  # one active task
    row.locator("a.executor-link").click()
    expect(page).to_have_url(re.compile(re.escape(_executor_hash(task)) + "$"))
    expect(page.locator("#executor-id")).to_have_text(executor)
    running = page.locator(f'table[data-table="tasks"] tr[data-task="{task["id"]}"]')
    expect(running).to_contain_text("RUNNING")
    expect(running).to_contain_text("exec-ui")
    resources = page.locator('table[data-table="executor-resources"]')
    # Allocated as the agent's own /state has it (the task's and its executor's).
    allocated = _agent_executor(c, task)["resources"]
    expect(resources.locator('tr[data-resource="cpus"] td').nth(1)).to_have_text(
        f"{allocated['cpus']:g}"
    )
    expect(resources.locator('tr[data-resource="mem"] td').nth(1)).to_have_text(
        f"{allocated['mem']:g} MB"
    )
    screenshot(page, "executor")

    # The executor's sandbox link opens the sandbox browser with the task's stdout.
    page.locator("#executor-sandbox").click()
    expect(page).to_have_url(re.compile(rf"#/agents/{task['slave_id']}/browse\?path="))
    expect(page.locator('#sandbox-listing tr[data-file="stdout"]')).to_be_visible()
    expect(page.locator("#tail")).to_contain_text(MARK)

    # ... and so does the task row's, through the executor page again.
    page.go_back()
    expect(running).to_contain_text("RUNNING")
    running.locator("a.sandbox-link").click()
    expect(page.locator("#tail")).to_contain_text(MARK)


def test_executor_page_from_framework_and_task_pages(cluster, page):
    c, task = cluster
    page.goto(f"{c.master_url}/#/frameworks/{task['framework_id']}")
    executor = task["executor_id"] or task["id"]
    row = page.locator(f'table[data-table="executors"] tr[data-executor="{executor}"]')
    row.locator("a.executor-link").click()
    expect(page).to_have_url(re.compile(re.escape(_executor_hash(task)) + "$"))
    expect(page.locator(f'table[data-table="tasks"] tr[data-task="{task["id"]}"]')).to_be_visible()
    page.goto(f"{c.master_url}/#/tasks/{task['id']}")
    page.locator("#task-executor").click()
    expect(page).to_have_url(re.compile(re.escape(_executor_hash(task)) + "$"))
    expect(page.locator("#executor-id")).to_have_text(executor)


def test_executor_endpoints_refuse_bad_requests(cluster):
    c, task = cluster
    url = c.master_url + "/master/ui/executor"
    good = {
        "agent_id": task["slave_id"],
        "framework_id": task["framework_id"],
        "executor_id": task["executor_id"] or task["id"],
    }
    answer = requests.get(url, params=good, timeout=10)
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert [t["id"] for t in doc["executor"]["tasks"]] == [task["id"]]
    assert doc["executor"]["completed"] is False and doc["framework"]["id"] == good["framework_id"]
    assert doc["agent"]["id"] == good["agent_id"] and "executors" not in doc["framework"]
    for name in good:
        missing = {k: v for k, v in good.items() if k != name}
        assert requests.get(url, params=missing, timeout=10).status_code == 400
        huge = {**good, name: "x" * 5000}
        assert requests.get(url, params=huge, timeout=10).status_code == 400
    unknown_agent = requests.get(url, params={**good, "agent_id": "nope"}, timeout=10)
    assert unknown_agent.status_code == 404
    unknown = requests.get(url, params={**good, "executor_id": "nope"}, timeout=10)
    assert unknown.status_code == 404 and "no executor nope" in unknown.text
    assert requests.post(url, params=good, timeout=10).status_code == 405

    listing = c.master_url + "/master/ui/executors"
    for params in ({}, {"agent_id": "a", "framework_id": "b"}, {"agent_id": "y" * 5000}):
        assert requests.get(listing, params=params, timeout=10).status_code == 400
    assert requests.get(listing, params={"agent_id": "nope"}, timeout=10).status_code == 404
    rows = requests.get(listing, params={"framework_id": task["framework_id"]}, timeout=10)
    assert rows.json()["total"] == 1
    (row,) = rows.json()["executors"]
    assert row["executor_id"] == good["executor_id"] and row["active_tasks"] == 1
    assert row["agent_id"] == good["agent_id"] and row["framework"]


# -- view ACLs ------------------------------------------------------------------------------

SECRETS = {"ops": "ops-Secret-e1", "viewer": "viewer-Secret-e2", "peeker": "peeker-Secret-e3"}
# viewer may view no framework (so none of its executors or tasks); peeker may view all.
ACLS = {"view_frameworks": [{"principals": {"values": ["viewer"]}, "users": {"type": "NONE"}}]}


def _auth(principal: str) -> dict[str, str]:
    return {"Authorization": basic_header(principal, SECRETS[principal])}


@pytest.fixture
def secured(cluster_factory, tmp_path: Path) -> Iterator[tuple[ClusterHandle, dict[str, Any]]]:
    """Master and agent authenticate every HTTP request, under `ACLS`; one running task of
    ``ops``; (the cluster, the task)."""
    creds = tmp_path / "credentials"
    creds.write_text("".join(f"{p} {s}\n" for p, s in SECRETS.items()))
    auth_flags = ["--authenticate_http_readonly", "--authenticate_http_readwrite"]
    c = cluster_factory(
        master_flags=[*auth_flags, f"--credentials={creds}", f"--acls={json.dumps(ACLS)}"],
        agent_flags=[*auth_flags, f"--http_credentials={creds}"],
        http_auth=("ops", SECRETS["ops"]),
    )
    run = _run(
        c.master_address, "guarded", "sleep 600", "--principal", "ops", "--secret", SECRETS["ops"]
    )
    try:
        yield c, _running(c, "guarded")
    finally:
        run.kill()
        run.wait(10)


def test_executor_hidden_from_who_may_not_view_its_framework(secured, bare_browser):
    c, task = secured
    executor = task["executor_id"] or task["id"]
    params = {
        "agent_id": task["slave_id"],
        "framework_id": task["framework_id"],
        "executor_id": executor,
    }
    url = c.master_url + "/master/ui/executor"
    listing = c.master_url + "/master/ui/executors"
    assert requests.get(url, params=params, timeout=10).status_code == 401
    seen = requests.get(url, params=params, headers=_auth("peeker"), timeout=10)
    assert seen.status_code == 200, seen.text
    assert [t["id"] for t in seen.json()["executor"]["tasks"]] == [task["id"]]
    hidden = requests.get(url, params=params, headers=_auth("viewer"), timeout=10)
    assert hidden.status_code == 404, hidden.text
    for key in ("agent_id", "framework_id"):
        query = {key: params[key]}
        assert (
            requests.get(listing, params=query, headers=_auth("peeker"), timeout=10).json()["total"]
            == 1
        )
        assert requests.get(listing, params=query, headers=_auth("viewer"), timeout=10).json() == {
            "executors": [],
            "total": 0,
        }

    # In the browser: the viewer's executor page says there is no such executor and shows
    # no task; the agent page lists no executor. The peeker sees the task.
    for principal, shows in (("viewer", False), ("peeker", True)):
        context = bare_browser.new_context(
            http_credentials={"username": principal, "password": SECRETS[principal]}
        )
        try:
            page = context.new_page()
            page.goto(f"{c.master_url}/{_executor_hash(task)}")
            row = page.locator(f'table[data-table="tasks"] tr[data-task="{task["id"]}"]')
            if shows:
                expect(row).to_contain_text("RUNNING")
            else:
                expect(page.locator(".error[role=alert]")).to_contain_text("404")
                expect(page.locator('table[data-table="tasks"]')).to_have_count(0)
            page.goto(f"{c.master_url}/#/agents/{task['slave_id']}")
            executors = page.locator('table[data-table="executors"]')
            if shows:
                expect(executors.locator(f'tr[data-executor="{executor}"]')).to_be_visible()
            else:
                expect(executors).to_contain_text("No executor runs on this agent.")
                expect(executors).not_to_contain_text(executor)
        finally:
            context.close()


# -- at scale -------------------------------------------------------------------------------

SIM_AGENTS, SIM_TASKS_PER_AGENT = 1000, 10
FIRST_ROWS_LIMIT = 3.0  # as tests/ui/test_webui_scale.py: generous for a shared 2-core CI


def test_pages_quick_on_a_large_cluster(tmp_path: Path, bare_browser: Any) -> None:
    """At 1,000 simulated agents and 10,000 tasks of one framework (10,000 command
    executors), with 500 machines in the maintenance schedule: the agent's and the
    framework's executors cards and the maintenance page show their first rows within
    `FIRST_ROWS_LIMIT`, and the framework's card lists the first 200 executors of 10,000."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    processes: list[subprocess.Popen] = []

    def spawn(*args: str, log: str) -> None:
        out = open(tmp_path / log, "wb")  # noqa: SIM115 - closed with the process
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "butte", *args], stdout=out, stderr=subprocess.STDOUT
            )
        )

    def running() -> float:
        with contextlib.suppress(OSError, ValueError, requests.RequestException):
            return float(
                requests.get(f"{url}/metrics/snapshot", timeout=10).json()["master/tasks_running"]
            )
        return 0.0

    try:
        spawn(
            "master",
            f"--port={port}",
            f"--work_dir={tmp_path / 'master'}",
            "--logging_level=WARNING",
            log="master.log",
        )
        spawn(
            "sim",
            f"--master=127.0.0.1:{port}",
            f"--agents={SIM_AGENTS}",
            f"--preload_tasks={SIM_TASKS_PER_AGENT}",
            "--task_duration=forever",
            "--status_interval=0",
            log="sim.log",
        )
        wait_for(lambda: running() >= SIM_AGENTS * SIM_TASKS_PER_AGENT, 120, "the sim's tasks")
        agents = requests.get(f"{url}/master/ui/agents?limit=1&sort=hostname", timeout=10)
        agent = agents.json()["rows"][0]["id"]
        frameworks = requests.get(f"{url}/master/ui/frameworks?limit=1", timeout=10)
        framework = frameworks.json()["rows"][0]["id"]
        start_ns = (int(time.time()) + 3600) * 1_000_000_000
        windows = [
            {
                "machine_ids": [{"hostname": f"m{w}-{m}.example"} for m in range(10)],
                "unavailability": {"start": {"nanoseconds": start_ns + w * 10**12}},
            }
            for w in range(50)
        ]
        _post(f"{url}/master/maintenance/schedule", {"windows": windows})

        started = time.monotonic()
        listing = requests.get(
            f"{url}/master/ui/executors", params={"framework_id": framework}, timeout=30
        ).json()
        listing_seconds = time.monotonic() - started
        assert listing["total"] == SIM_AGENTS * SIM_TASKS_PER_AGENT
        assert len(listing["executors"]) == 200

        row = 'table[data-table="executors"] tbody tr[data-executor]'
        checks = [
            PageCheck("agent-executors", f"/agents/{agent}", row),
            PageCheck("framework-executors", f"/frameworks/{framework}", row),
            PageCheck(
                "maintenance",
                "/maintenance",
                'table[data-table="maintenance-machines"] tbody tr[data-machine]',
            ),
        ]
        times = measure(bare_browser, url, checks)
        print("executors listing (s):", round(listing_seconds, 3))
        print("first rows (s):", {name: round(t[0], 3) for name, t in times.items()})
        slow = {name: t for name, t in times.items() if t[0] > FIRST_ROWS_LIMIT}
        assert not slow, f"first rows later than {FIRST_ROWS_LIMIT}s: {slow}"
        with fresh_page(bare_browser) as page:
            page.goto(f"{url}/#/frameworks/{framework}")
            expect(page.locator(row)).to_have_count(200)
            expect(page.locator("#content")).to_contain_text("The first 200 of 10,000.")
            page.goto(f"{url}/#/maintenance")
            machines = page.locator('table[data-table="maintenance-machines"] tr[data-machine]')
            expect(machines).to_have_count(500)
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
