"""The web UI end to end: a real cluster (tests/ui/conftest.py), Debian's chromium driven by
Playwright, each page checked for real content and saved to ``test-artifacts/ui/<page>.png``.

Every wait is Playwright's polling ``expect`` with a timeout, never a fixed sleep.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from butte.testing.require import require_module

pytestmark = pytest.mark.integration

expect = require_module("playwright.sync_api").expect


def _rows(page, table: str):
    return page.locator(f'table[data-table="{table}"] tbody tr')


def test_overview_shows_resources_counts_and_a_chart(ui_cluster, page, screenshot):
    page.goto(ui_cluster.url + "/")
    cpus = page.locator('[data-resource="cpus"]')
    expect(cpus).to_contain_text("/ 8")  # two agents of 4 CPUs
    expect(cpus).to_contain_text(re.compile(r"offered [1-9]"))  # the holder's offer
    expect(page.locator('[data-count="agents"]')).to_contain_text(re.compile(r"active\s*2"))
    metrics = ui_cluster.cluster.get("/metrics/snapshot")  # other tests may add frameworks
    frameworks, running = metrics["master/frameworks_active"], metrics["master/tasks_running"]
    assert frameworks >= 2 and running >= 1
    expect(page.locator('[data-count="frameworks"]')).to_contain_text(
        re.compile(rf"active\s*{frameworks:.0f}")
    )
    expect(page.locator('[data-count="tasks"]')).to_contain_text(
        re.compile(rf"running\s*{running:.0f}")
    )
    expect(page.locator(".legend")).to_contain_text("CPUs")
    expect(page.locator("#live-status")).to_have_attribute("data-mode", "stream")
    painted = page.evaluate(
        """() => {
            const c = document.getElementById('utilisation-chart');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0;
            for (let i = 3; i < d.length; i += 4) if (d[i]) n++;
            return n;
        }"""
    )
    assert painted > 1000  # grid, labels and at least one sample
    screenshot(page, "overview")


def test_chart_draws_the_masters_hour_of_samples_at_once(ui_cluster, page):
    """The master samples utilisation every 5 s whether or not a page is open; a page that
    opens draws all of it at once (the page keeps no samples of its own)."""
    kept = ui_cluster.cluster.get("/master/ui/utilisation")["samples"]
    if not kept:  # a young master: its first sample comes 5 s after it starts
        deadline = time.monotonic() + 15
        while not kept and time.monotonic() < deadline:
            time.sleep(0.5)
            kept = ui_cluster.cluster.get("/master/ui/utilisation")["samples"]
    assert kept and len(kept[0]) == 13
    page.goto(ui_cluster.url + "/")
    chart = page.locator("#utilisation-chart")
    expect(chart).to_have_attribute("data-samples", re.compile(r"^[1-9]"))
    drawn = page.evaluate("() => Butte.history.samples")
    assert drawn[0] == kept[0]  # the oldest the master kept, drawn on first load
    assert page.evaluate("() => sessionStorage.length") == 0


def test_agents_table_lists_and_filters_agents(ui_cluster, page, screenshot):
    agents = [a["id"] for a in ui_cluster.cluster.get("/master/slaves")["slaves"]]
    page.goto(ui_cluster.url + "/#/agents")
    rows = _rows(page, "agents")
    expect(rows).to_have_count(2)
    for agent_id in agents:
        expect(page.locator(f'tr[data-agent="{agent_id}"]')).to_contain_text("127.0.0.1:")
    screenshot(page, "agents")
    page.fill("input.search", agents[1][-6:])
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-agent", agents[1])
    rows.first.locator("a").first.click()
    expect(page.locator("h1")).to_have_text("Agent")
    expect(page.locator("table.data.compact")).to_contain_text("cpus")
    screenshot(page, "agent")


def test_frameworks_page_and_framework_detail(ui_cluster, page, screenshot):
    page.goto(ui_cluster.url + "/#/frameworks")
    rows = _rows(page, "frameworks")
    expect(rows.filter(has_text="butte-run").first).to_contain_text("active")
    expect(rows.filter(has_text="offer-holder")).to_contain_text(ui_cluster.role)
    screenshot(page, "frameworks")
    page.get_by_role("link", name="offer-holder").click()
    expect(page.locator("dl.facts")).to_contain_text(ui_cluster.role)
    expect(page.locator('table[data-table="offers"] tbody tr')).to_have_count(1)
    screenshot(page, "framework")


def test_tasks_table_search_and_filters(ui_cluster, page, screenshot):
    page.goto(ui_cluster.url + "/#/tasks")
    row = page.locator(f'tr[data-task="{ui_cluster.task_id}"]')
    expect(row).to_contain_text("RUNNING")
    expect(row).to_contain_text("butte-run")
    screenshot(page, "tasks")
    page.fill("#task-search", "no-such-task-xyz")
    expect(page.locator('table[data-table="tasks"]')).to_contain_text("No task matches.")
    assert "q=no-such-task-xyz" in page.url  # the search is part of the address
    page.fill("#task-search", "hell")
    expect(row).to_be_visible()
    page.select_option("#task-state", "TASK_FINISHED")
    expect(page.locator('table[data-table="tasks"]')).to_contain_text("No task matches.")
    page.select_option("#task-state", "active")
    expect(row).to_be_visible()
    page.fill("#task-search", "")
    page.select_option("#task-state", "")
    framework = next(t for t in ui_cluster.tasks() if t["id"] == ui_cluster.task_id)["framework_id"]
    page.select_option("#task-framework", framework)
    expect(row).to_be_visible()
    # Reloading the address restores the view.
    page.reload()
    expect(page.locator("#task-framework")).to_have_value(framework)
    expect(row).to_be_visible()


def test_task_detail_history_sandbox_and_live_tail(ui_cluster, page, screenshot):
    page.goto(ui_cluster.url + "/#/tasks")
    page.locator(f'tr[data-task="{ui_cluster.task_id}"] a.task-link').click()
    history = page.locator('table[data-table="history"]')
    expect(history.locator('tr[data-state="TASK_RUNNING"]')).to_have_count(1)
    files = page.locator('table[data-table="files"]')
    expect(files.locator('tr[data-file="stdout"]')).to_contain_text("B")
    expect(files.locator('tr[data-file="stderr"]')).to_have_count(1)
    tail = page.locator("#tail")
    expect(tail).to_contain_text("hello-ui")
    # a plain command task: the mesos containerizer, no image
    expect(page.locator("#task-container-type")).to_have_text("MESOS")
    expect(page.locator("#task-image")).to_have_count(0)
    screenshot(page, "task")
    ui_cluster.go_file.touch()  # the task now prints its second line
    expect(tail).to_contain_text("tail-works", timeout=10000)
    page.locator('a.file-link[data-file="stderr"]').click()
    expect(page.locator(".viewer-head")).to_contain_text("stderr")


def test_roles_show_weights_and_offered_resources(ui_cluster, page, screenshot):
    page.goto(ui_cluster.url + "/#/roles")
    analytics = page.locator(f'tr[data-role="{ui_cluster.role}"]')
    expect(analytics).to_contain_text("2.5")
    expect(analytics).to_contain_text("4 cpus")  # the held offer
    cpus = page.locator('tr[data-role="*"] td').nth(3)  # allocated CPUs
    expect(cpus).to_have_text(re.compile(r"^0\.[1-9]$"))  # the hello task (and maybe another)
    screenshot(page, "roles")


def test_offers_page_lists_outstanding_offers(ui_cluster, page, screenshot):
    page.goto(ui_cluster.url + "/#/offers")
    rows = _rows(page, "offers").filter(has_text="offer-holder")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("offer-holder")
    expect(rows.first).to_contain_text(ui_cluster.role)
    expect(rows.first).to_contain_text("31000-32000")
    screenshot(page, "offers")


def test_new_task_appears_without_reload(ui_cluster, page, screenshot):
    page.goto(ui_cluster.url + "/#/tasks")
    expect(page.locator("#live-status")).to_have_attribute("data-mode", "stream")
    expect(page.locator(f'tr[data-task="{ui_cluster.task_id}"]')).to_be_visible()
    page.evaluate("() => { window.__sameDocument = true; }")
    ui_cluster.run_task("second", "sleep 120")
    expect(page.locator('table[data-table="tasks"] tbody tr', has_text="second")).to_contain_text(
        "RUNNING", timeout=15000
    )
    assert page.evaluate("() => window.__sameDocument") is True  # no reload happened


def test_lost_master_shows_banner_and_recovers(ui_cluster, page, screenshot):
    page.goto(ui_cluster.url + "/#/agents")
    expect(_rows(page, "agents")).to_have_count(2)
    page.route("**/*", lambda route: route.abort())
    banner = page.locator("#banner")
    expect(banner).to_contain_text("Lost contact", timeout=15000)
    expect(page.locator("#live-status")).to_have_attribute("data-mode", "offline")
    page.unroute("**/*")
    expect(banner).to_be_hidden(timeout=15000)
    expect(page.locator("#live-status")).to_have_attribute("data-mode", "stream", timeout=15000)


def test_standby_master_sends_the_page_to_the_leader(ui_cluster, page, screenshot):
    port = ui_cluster.cluster.master.port
    standby = f"http://127.0.0.1:{port}"

    def standby_metrics(route):
        response = route.fetch()
        body = response.json()
        body["master/elected"] = 0
        route.fulfill(response=response, json=body)

    def standby_state(route):
        leader = {"hostname": "localhost", "port": port, "id": "leader", "pid": "x"}
        route.fulfill(json={"leader_info": leader, "slaves": [], "frameworks": []})

    page.route(f"{standby}/metrics/snapshot", standby_metrics)
    page.route(f"{standby}/master/state", standby_state)
    page.goto(standby + "/#/agents")
    page.wait_for_url(f"http://localhost:{port}/#/agents")
    expect(_rows(page, "agents")).to_have_count(2)


def test_unknown_paths_are_still_404_on_the_master(ui_cluster):
    for path in ("/nope", "/master/nope/deeper", "/static/../../etc/passwd", "/static/x.js"):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(ui_cluster.url + path, timeout=5)
        assert info.value.code == 404, path
    with urllib.request.urlopen(ui_cluster.url + "/", timeout=5) as response:
        assert response.headers["Content-Type"].startswith("text/html")


def test_recordio_parser_handles_split_records_and_multibyte_text(ui_cluster, page):
    page.goto(ui_cluster.url + "/#/roles")
    records = page.evaluate(
        """() => {
            const enc = new TextEncoder();
            const one = JSON.stringify({type: "HEARTBEAT"});
            const two = JSON.stringify({type: "X", name: "caf\\u00e9 \\u6771\\u4eac"});
            const bytes = enc.encode(
                `${enc.encode(one).length}\\n${one}${enc.encode(two).length}\\n${two}`);
            const parser = new Butte.RecordIO();
            const out = [];
            // Cut everywhere: inside the length, between length and body, inside a character.
            for (let i = 0; i < bytes.length; i += 3) {
                out.push(...parser.feed(bytes.slice(i, i + 3)));
            }
            return out;
        }"""
    )
    assert records == [{"type": "HEARTBEAT"}, {"type": "X", "name": "café 東京"}]
    bad = page.evaluate(
        "() => { try { new Butte.RecordIO().feed(new TextEncoder().encode('x\\n{}')); }"
        " catch (e) { return e.message; } return null; }"
    )
    assert bad and "RecordIO" in bad


def test_failed_task_says_why_in_the_list_and_on_its_page(ui_cluster, page, screenshot):
    ui_cluster.run_task("doomed", "echo about to fail; exit 3")
    task_id = ui_cluster.wait_task("doomed", "TASK_FAILED")
    page.goto(ui_cluster.url + "/#/tasks?state=TASK_FAILED")
    row = page.locator(f'tr[data-task="{task_id}"]')
    expect(row.locator(".why")).to_contain_text("Command exited with status 3")
    expect(row.locator(".why")).to_contain_text("from executor")
    screenshot(page, "tasks-failed")
    row.locator("a.task-link").click()
    failure = page.locator("#task-failure")
    expect(failure).to_contain_text("Failed")
    expect(failure).to_contain_text("Command exited with status 3")
    expect(failure).to_contain_text("SOURCE_EXECUTOR")
    history = page.locator('table[data-table="history"] tr[data-state="TASK_FAILED"]')
    expect(history).to_contain_text("Command exited with status 3")
    screenshot(page, "task-failed")


def test_running_task_shows_real_cpu_and_memory_next_to_what_it_asked(ui_cluster, page, screenshot):
    # Busy for a while (niced: it only takes what is idle), then asleep.
    ui_cluster.run_task("busy", "timeout 60 nice -n 19 sh -c 'while :; do :; done'; sleep 300")
    task_id = ui_cluster.wait_task("busy")
    page.goto(ui_cluster.url + f"/#/tasks/{task_id}")
    cpus = page.locator('table[data-table="usage"] tr[data-usage="cpus"] td')
    expect(cpus.nth(1)).to_have_text("0.1")  # asked for
    expect(cpus.nth(0)).to_have_text(re.compile(r"^\d+(\.\d+)?$"), timeout=20000)
    memory = page.locator('table[data-table="usage"] tr[data-usage="memory"] td')
    expect(memory.nth(0)).to_have_text(re.compile(r"^[\d.,]+ (B|KB|MB)$"))
    expect(memory.nth(1)).to_have_text("32 MB")
    # The spinning task takes CPU time, seen as a positive rate.
    page.wait_for_function(
        """() => {
            const cell = document.querySelector('tr[data-usage="cpus"] td');
            return cell && Number(cell.textContent) > 0.01;
        }""",
        timeout=30000,
    )
    screenshot(page, "task-usage")
    page.goto(ui_cluster.url + "/#/tasks?q=busy")
    row = page.locator(f'tr[data-task="{task_id}"]')
    expect(row).to_contain_text(re.compile(r"[\d.]+ / 0\.1"), timeout=20000)
    expect(row).to_contain_text(re.compile(r"(KB|MB) / 32 MB"))


def test_layout_holds_at_800_px(ui_cluster, browser, screenshot):
    context = browser.new_context(viewport={"width": 800, "height": 900})
    context.set_default_timeout(15000)
    page = context.new_page()
    agent = ui_cluster.cluster.get("/master/slaves")["slaves"][0]["id"]
    framework = next(t for t in ui_cluster.tasks() if t["id"] == ui_cluster.task_id)
    routes = {
        "overview": ("/", '[data-resource="cpus"]'),
        "agents": ("/agents", 'table[data-table="agents"] tbody tr[data-agent]'),
        "agent": (f"/agents/{agent}", "dl.facts"),
        "frameworks": ("/frameworks", 'table[data-table="frameworks"] tbody tr'),
        "framework": (f"/frameworks/{framework['framework_id']}", "dl.facts"),
        "tasks": ("/tasks", 'table[data-table="tasks"] tbody tr[data-task]'),
        "task": (f"/tasks/{ui_cluster.task_id}", "#task-history tr[data-state]"),
        "roles": ("/roles", 'table[data-table="roles"] tbody tr'),
        "offers": ("/offers", 'table[data-table="offers"] tbody tr'),
    }
    try:
        for name, (route, ready) in routes.items():
            page.goto(f"{ui_cluster.url}/#{route}")
            expect(page.locator(ready).first).to_be_visible()
            # Nothing sticks out sideways: wide tables scroll inside their own box.
            overflow = page.evaluate(
                "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{name}: the page is {overflow}px wider than the window"
            for link in page.locator("#nav a").all():
                box = link.bounding_box()
                assert box and box["x"] >= 0 and box["x"] + box["width"] <= 800, (name, box)
            status = page.locator("#live-status").bounding_box()
            assert status and status["x"] + status["width"] <= 800, (name, status)
            screenshot(page, f"{name}-800px")
    finally:
        context.close()


def test_ui_endpoints_answer_pages_and_refuse_bad_queries(ui_cluster):
    url = ui_cluster.url
    agents = ui_cluster.cluster.get("/master/ui/agents?limit=1&sort=hostname&order=des")
    assert agents["total"] == agents["count"] == 2 and len(agents["rows"]) == 1
    tasks = ui_cluster.cluster.get(f"/master/ui/tasks?q={ui_cluster.task_id}")
    assert [t["id"] for t in tasks["tasks"]] == [ui_cluster.task_id]
    for path in (
        "/master/ui/agents?limit=x",
        "/master/ui/agents?sort=bogus",
        "/master/ui/frameworks?completed=maybe",
        "/master/ui/tasks?state=TASK_BOGUS",
        "/master/ui/utilisation?since=yesterday",
        "/master/ui/task-usage",
    ):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url + path, timeout=5)
        assert info.value.code == 400, path
    post = urllib.request.Request(url + "/master/ui/agents", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(post, timeout=5)
    assert info.value.code == 405
    # The change feed starts with SUBSCRIBED and no state.
    with urllib.request.urlopen(url + "/master/ui/changes", timeout=5) as feed:
        length = int(feed.readline())
        first = json.loads(feed.read(length))
    assert first["type"] == "SUBSCRIBED" and "get_state" not in first["subscribed"]


def _update_quota(url: str, configs: list[dict]) -> None:
    body = {"type": "UPDATE_QUOTA", "update_quota": {"quota_configs": configs}}
    request = urllib.request.Request(
        url + "/api/v1", json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    urllib.request.urlopen(request, timeout=10).close()


def test_roles_show_quota_guarantee_limit_and_consumption(ui_cluster, page, screenshot):
    role = ui_cluster.role
    limits = {"cpus": {"value": 8}}
    _update_quota(ui_cluster.url, [{"role": role, "guarantees": {"cpus": {"value": 1}},
                                    "limits": limits}])  # fmt: skip
    try:
        page.goto(ui_cluster.url + "/#/roles")
        row = page.locator(f'tr[data-role="{role}"]')
        expect(row).to_contain_text("cpus 1")  # guarantee
        expect(row).to_contain_text("cpus 8")  # limit
        # Consumed, as Mesos reports it: what tasks use; the offer the role holds is not.
        expect(row).not_to_contain_text("cpus 4")
        screenshot(page, "roles-quota")
    finally:
        _update_quota(ui_cluster.url, [{"role": role}])


def test_tail_counts_bytes_read_not_decoded_text(ui_cluster, page):
    """Invalid UTF-8 comes back as U+FFFD (three bytes in UTF-8 for one byte in the file): the
    tail still advances by the bytes read, so no line is skipped."""
    invalid = "\\377" * 30
    lines = 60
    command = (
        f"i=0; while [ $i -lt {lines} ]; do printf '{invalid}line-%03d\\n' $i; "
        "i=$((i+1)); sleep 0.1; done; sleep 600"
    )
    ui_cluster.run_task("badbytes", command)
    task_id = ui_cluster.wait_task("badbytes", timeout=60)
    page.goto(f"{ui_cluster.url}/#/tasks/{task_id}")
    tail = page.locator("#tail")
    expect(tail).to_contain_text(f"line-{lines - 1:03d}", timeout=30000)
    text = tail.text_content()
    assert re.findall(r"line-(\d{3})", text) == [f"{i:03d}" for i in range(lines)], text
    assert text.count("\ufffd") == 30 * lines
    expect(page.locator(".viewer-head")).to_contain_text(f"{39 * lines / 1024:.1f} KB read")


def test_task_group_member_shows_its_own_sandbox(ui_cluster, page, screenshot):
    """A task group member's sandbox is ``tasks/<id>`` in its default executor's, as in Mesos'
    UI; ``butte task info`` names the same directory."""
    launcher = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("group_launcher.py"))]
        + [ui_cluster.cluster.master_address],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    ui_cluster.processes.append(launcher)
    assert launcher.stdout is not None
    assert launcher.stdout.readline().startswith("launched ")
    ui_cluster.wait_task("member-b", timeout=60)
    page.goto(f"{ui_cluster.url}/#/tasks/member-b")
    expect(page.locator("#tail")).to_contain_text("member-b-out")
    files = page.locator('table[data-table="files"]')
    expect(files.locator('tr[data-file="stdout"]')).to_have_count(1)
    expect(files.locator('tr[data-file="tasks"]')).to_have_count(0)  # not the executor's
    screenshot(page, "task-group-member")
    info = subprocess.run(
        [sys.executable, "-m", "butte", "task", "info", "member-b"]
        + ["--master", ui_cluster.cluster.master_address],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "400"},
    )
    assert info.returncode == 0, info.stderr
    (sandbox,) = [line for line in info.stdout.splitlines() if line.startswith("Sandbox:")]
    assert sandbox.endswith("/executors/group-exec/runs/latest/tasks/member-b"), sandbox
    # The kill button refuses a member: its container is the executor's, shared by all.
    kill = urllib.request.Request(
        ui_cluster.url + "/master/kill-task", json.dumps({"task_id": "member-b"}).encode()
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(kill, timeout=30).close()
    assert refused.value.code == 400
    assert "task group member" in refused.value.read().decode()


def _settled_box(page, locator) -> dict | None:
    """The element's box, read again while the list's live updates redraw its row between
    two reads (the box of an element just replaced reads None)."""
    for _ in range(50):
        box = locator.bounding_box()
        if box is not None:
            return box
        page.wait_for_timeout(100)
    return None


def test_long_task_ids_are_cut_in_the_list(ui_cluster, page):
    """A 188-character id does not push the other columns out of view: it is cut with an
    ellipsis, the whole id in its tooltip."""
    name = "long" + "x" * 173
    ui_cluster.run_task(name, "sleep 600")
    task_id = ui_cluster.wait_task(name, timeout=60)
    assert len(task_id) == 188
    page.goto(f"{ui_cluster.url}/#/tasks?q=longxxx")
    link = page.locator(f'tr[data-task="{task_id}"] a.task-link')
    expect(link).to_have_attribute("title", task_id)
    expect(link).to_have_text(task_id)  # all of it is there, cut by the style only
    box = _settled_box(page, link)
    assert box is not None and box["width"] < 350, box
    assert link.evaluate("(a) => a.scrollWidth > a.clientWidth")  # cut
    row = page.locator(f'tr[data-task="{task_id}"]')
    last = _settled_box(page, row.locator("td").last)  # "Last update": still in the window
    assert last is not None and last["x"] + last["width"] <= 1400, last
