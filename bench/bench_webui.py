"""Benchmark 11: the web UI at 10,000 agents and 100,000 tasks, in Chromium.

A real master; a ``butte sim`` process whose ``--agents`` agents each report
``--tasks_per_agent`` running tasks (``--preload_tasks``, as after a master failover);
Debian's chromium driven by Playwright. Each page (overview, agents, one agent, frameworks,
one framework, tasks, one task, roles, offers) is opened ``--rounds`` times in a fresh browser
context, and the figure is the page's own clock (``performance.now()`` from the start of the
navigation) when its first row is in the DOM (`butte.testing.ui_timing`); the note gives the
CPU time the master spent meanwhile (``/proc``), which other load on the machine inflates far
less than the wall-clock time. Then, with the task list open, a ``butte run`` task is
started and the time until its row shows RUNNING on the page, without a reload, is taken
(the page must be on the change feed, ``live``).
For comparison: the time of a GET of ``/master/state-summary`` (what the agents and
frameworks pages read before) and of one page of ``/master/ui/agents``.

    .venv/bin/python bench/bench_webui.py [--agents 10000] [--tasks_per_agent 10] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
import urllib.request

from common import (
    BUTTE,
    Figure,
    Master,
    cpu_seconds,
    exit_on_sigterm,
    http_json,
    print_table,
    processes,
    sim_process,
    work_dir,
)

from butte.testing.ui_timing import PageCheck, first_rows_seconds, fresh_page, pages, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]


def timed_get(url: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=60) as response:
        response.read()
    return time.perf_counter() - started


def live_probe(browser, master: Master) -> tuple[str, float, float]:
    """(the page's live mode, seconds from starting ``butte run`` until the master has its
    task RUNNING, seconds from then until the open task list shows that row)."""
    with fresh_page(browser) as page:
        page.goto(f"{master.url}/#/tasks")
        page.wait_for_selector('table[data-table="tasks"] tbody tr[data-task]')
        page.wait_for_function(
            "() => document.getElementById('live-status').dataset.mode === 'stream'",
            timeout=30000,
        )
        mode = page.evaluate("() => document.getElementById('live-status').dataset.mode")
        started = time.perf_counter()
        run = subprocess.Popen(
            [*BUTTE, "run", f"--master={master.address}", "--name=live-probe"]
            + ["--command=sleep 600"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            url = f"{master.url}/master/ui/tasks?q=live-probe&state=TASK_RUNNING&limit=1"
            wait_for(lambda: http_json(url)["tasks"], 120, "the probe task RUNNING")
            running = time.perf_counter()
            page.wait_for_function(
                """() => [...document.querySelectorAll('table[data-table="tasks"] tbody tr')]
                    .some((r) => r.textContent.includes('live-probe')
                                 && r.textContent.includes('RUNNING'))""",
                timeout=60000,
                polling=50,
            )
            return mode, running - started, time.perf_counter() - running
        finally:
            run.terminate()


def measure_pages(
    browser, master: Master, checks: list[PageCheck], rounds: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """({page: seconds to first rows}, {page: master CPU seconds until then}) per round."""
    times: dict[str, list[float]] = {c.name: [] for c in checks}
    cpu: dict[str, list[float]] = {c.name: [] for c in checks}
    for _ in range(rounds):
        for check in checks:
            with fresh_page(browser) as page:
                before = cpu_seconds(master.pid)
                times[check.name].append(first_rows_seconds(page, master.url, check))
                cpu[check.name].append(cpu_seconds(master.pid) - before)
    return times, cpu


def run_webui_bench(agents: int, tasks_per_agent: int, rounds: int) -> dict:
    from playwright.sync_api import sync_playwright

    with work_dir("webui") as tmp:
        master = Master(tmp)
        sim = sim_process(
            tmp,
            master.address,
            agents,
            [f"--preload_tasks={tasks_per_agent}", "--task_duration=forever"],
        )
        with processes(master, sim):
            master.start()
            master.wait_healthy()
            sim.start()
            master.wait_agents(agents, timeout=60 + agents / 50)
            wait_for(
                lambda: master.metrics().get("master/tasks_running", 0) >= agents * tasks_per_agent,
                120,
                "every preloaded task",
            )
            base = master.url
            agent = http_json(f"{base}/master/ui/agents?limit=1")["rows"][0]["id"]
            framework = http_json(f"{base}/master/ui/frameworks?limit=1")["rows"][0]["id"]
            checks = pages(task_id="preload-7-3", agent_id=agent, framework_id=framework)
            summary = [timed_get(f"{base}/master/state-summary") for _ in range(rounds)]
            listing = [timed_get(f"{base}/master/ui/agents?limit=50") for _ in range(rounds)]
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, args=CHROMIUM_ARGS, chromium_sandbox=False
                )
                try:
                    times, cpu = measure_pages(browser, master, checks, rounds)
                    mode, to_running, to_row = live_probe(browser, master)
                finally:
                    browser.close()
            return {
                "pages": times,
                "cpu": cpu,
                "mode": mode,
                "to_running": to_running,
                "live": to_row,
                "summary": summary,
                "listing": listing,
            }


def figures(r: dict, agents: int, tasks: int) -> list[Figure]:
    scale = f"{agents} agents / {tasks} tasks"
    out = [
        Figure(
            "11",
            f"web UI first rows: {name}, {scale}",
            samples,
            "s",
            1.0,
            note=f"master CPU {statistics.median(r['cpu'][name]):.2f} s",
        )
        for name, samples in r["pages"].items()
    ]
    out.append(
        Figure(
            "11",
            "task RUNNING on the master -> its row on the open task list",
            [r["live"]],
            "s",
            None,
            note=f"updates: {r['mode']}; butte run start -> RUNNING {r['to_running']:.1f} s",
        )
    )
    out.append(Figure("11", "GET /master/state-summary (before)", r["summary"], "s", None))
    out.append(Figure("11", "GET /master/ui/agents, one page", r["listing"], "s", None))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=10_000)
    parser.add_argument("--tasks_per_agent", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    result = run_webui_bench(args.agents, args.tasks_per_agent, args.rounds)
    tasks = args.agents * args.tasks_per_agent
    print_table(figures(result, args.agents, tasks), "benchmark 11: the web UI at scale")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
