"""How long each web UI page takes to show its first rows, measured in a real browser.

Shared by the browser test at a small simulated cluster (tests/ui/test_webui_scale.py) and
the benchmark at 10,000 agents and 100,000 tasks (bench/bench_webui.py). Each page is opened
in a fresh browser context (nothing cached) and the time is the page's own clock
(``performance.now()``, from the start of the navigation) when the first row is in the DOM:
loading the page and its scripts, the master's answers and drawing are all included.

Drives Playwright's sync API; the caller owns the browser.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote


@dataclass(frozen=True, slots=True)
class PageCheck:
    """One page: its name, its address (after ``#``) and what its first row looks like."""

    name: str
    route: str
    first_row: str


def pages(task_id: str, agent_id: str, framework_id: str) -> list[PageCheck]:
    """Every page of the UI, the detail pages for the given ids."""
    return [
        PageCheck("overview", "/", '[data-resource="cpus"] .big'),
        PageCheck("agents", "/agents", 'table[data-table="agents"] tbody tr[data-agent]'),
        PageCheck("agent", f"/agents/{quote(agent_id)}", "#content dl.facts"),
        PageCheck(
            "frameworks", "/frameworks", 'table[data-table="frameworks"] tbody tr[data-framework]'
        ),
        PageCheck("framework", f"/frameworks/{quote(framework_id)}", "#content dl.facts"),
        PageCheck("tasks", "/tasks", 'table[data-table="tasks"] tbody tr[data-task]'),
        PageCheck("task", f"/tasks/{quote(task_id)}", "#task-history tr[data-state]"),
        PageCheck("roles", "/roles", 'table[data-table="roles"] tbody tr[data-role]'),
        PageCheck("offers", "/offers", 'table[data-table="offers"] tbody tr'),
    ]


@contextmanager
def fresh_page(browser: Any, width: int = 1400, height: int = 900) -> Iterator[Any]:
    """A page in a new browser context (empty cache, storage and connections)."""
    context = browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(60000)
    try:
        yield context.new_page()
    finally:
        context.close()


def first_rows_seconds(page: Any, base_url: str, check: PageCheck) -> float:
    """Opens ``check``'s page and returns the seconds until its first row was drawn."""
    page.goto(f"{base_url}/#{check.route}", wait_until="commit")
    handle = page.wait_for_function(
        "(sel) => document.querySelector(sel) ? performance.now() : false",
        arg=check.first_row,
        polling="raf",
    )
    return float(handle.json_value()) / 1000.0


def measure(browser: Any, base_url: str, checks: list[PageCheck], rounds: int = 1) -> dict:
    """{page name: [seconds per round]}, each round opening every page afresh."""
    out: dict[str, list[float]] = {c.name: [] for c in checks}
    for _ in range(rounds):
        for check in checks:
            with fresh_page(browser) as page:
                out[check.name].append(first_rows_seconds(page, base_url, check))
    return out


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    """Polls ``predicate`` until it returns something truthy; raises TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not within {timeout}s")
        time.sleep(0.2)
