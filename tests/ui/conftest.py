"""Fixtures of the browser tests: one real cluster per module with a few frameworks and tasks,
Debian's chromium driven by Playwright (sync API), and screenshots under
``test-artifacts/ui/``.

The cluster (``ui_cluster``) has two agents and:
* ``offer-holder`` (tests/ui/offer_holder.py): a framework in role ``analytics`` (weight 2.5)
  that keeps one agent's offer outstanding and declines the other agent;
* ``butte run --name hello``: one task on the other agent that prints ``hello-ui``, waits for
  the file ``ui_cluster.go_file`` to exist, prints ``tail-works`` and sleeps.

Tests skip, saying why, only when ``/usr/bin/chromium`` or the ``playwright`` package is
missing (scripts/setup.sh installs both) or the daemons do not exist.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from butte.testing.cluster import ClusterHandle, daemons_missing, start_cluster
from butte.testing.require import require

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
HOLDER = Path(__file__).with_name("offer_holder.py")
ROLE, WEIGHT = "analytics", 2.5


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (Debian package 'chromium'; scripts/setup.sh installs it)"
    if importlib.util.find_spec("playwright") is None:
        return "the Python package 'playwright' is missing (scripts/setup.sh installs it)"
    return daemons_missing()


@dataclass
class UICluster:
    """The running cluster of the browser tests and what runs on it."""

    cluster: ClusterHandle
    go_file: Path
    task_id: str = ""
    role: str = ROLE
    held_agent: str = ""
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.cluster.master_url

    def run_task(self, name: str, command: str) -> subprocess.Popen:
        """``butte run`` in the background (its framework lives as long as it does)."""
        process = subprocess.Popen(
            [sys.executable, "-m", "butte", "run", "--master", self.cluster.master_address]
            + ["--name", name, "--command", command],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.processes.append(process)
        return process

    def tasks(self) -> list[dict[str, Any]]:
        return self.cluster.get("/master/tasks?limit=1000")["tasks"]

    def wait_task(self, name: str, state: str = "TASK_RUNNING", timeout: float = 20) -> str:
        """Polls until a task called ``name`` is in ``state``; its id."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for task in self.tasks():
                if task["name"] == name and task["state"] == state:
                    return task["id"]
            time.sleep(0.1)
        raise TimeoutError(f"no task {name!r} in {state} within {timeout}s: {self.tasks()}")


def _put_weight(master_url: str) -> None:
    body = json.dumps([{"role": ROLE, "weight": WEIGHT}]).encode()
    request = urllib.request.Request(f"{master_url}/master/weights", data=body, method="PUT")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def _start_holder(ui: UICluster) -> None:
    holder = subprocess.Popen(
        [sys.executable, str(HOLDER), ui.cluster.master_address, ROLE],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    ui.processes.append(holder)
    assert holder.stdout is not None
    line = holder.stdout.readline()  # blocks until it holds an offer (or dies: "")
    assert line.startswith("holding "), f"offer holder did not hold an offer: {line!r}"
    ui.held_agent = line.split()[1]


@pytest.fixture(scope="module")
def ui_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UICluster]:
    reason = browser_missing()
    if reason:
        require(reason, "the browser of the UI tests")
    base = tmp_path_factory.mktemp("ui")
    with start_cluster(base / "cluster", agents=2) as cluster:
        ui = UICluster(cluster, go_file=base / "go")
        try:
            _put_weight(cluster.master_url)
            _start_holder(ui)
            command = (
                f"echo hello-ui; while [ ! -e {ui.go_file} ]; do sleep 0.2; done; "
                "echo tail-works; sleep 120"
            )
            ui.run_task("hello", command)
            ui.task_id = ui.wait_task("hello")
            yield ui
        finally:
            for process in ui.processes:
                process.kill()
            for process in ui.processes:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(5)


@pytest.fixture(scope="module")
def browser(ui_cluster: UICluster, bare_browser: Any) -> Any:
    """The browser, with ``ui_cluster`` running."""
    return bare_browser


@pytest.fixture(scope="module")
def bare_browser() -> Iterator[Any]:
    """Debian's chromium under Playwright, without a cluster of its own."""
    reason = browser_missing()
    if reason:
        require(reason, "the browser of the UI tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, chromium_sandbox=False
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh browser context and page; JavaScript errors on it fail the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
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


@pytest.fixture
def screenshot() -> Any:
    """``screenshot(page, name)`` saves the whole page as ``test-artifacts/ui/<name>.png``."""

    def save(page: Any, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save
