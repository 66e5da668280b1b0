"""The web UI's LOG links in a real browser (Mesos' LOG pager): the overview's opens the
master's ``/master/log`` (``--log_dir``) in the live tail, an agent page's opens that agent's
``/slave/log`` read through the master, and an agent without a log file says so. Its own
master and agents, since the shared UI cluster runs without log files."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from butte.cli.local import free_port

HOST = "127.0.0.1"


def _wait_up(url: str, process: subprocess.Popen, output: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert process.poll() is None, output.read_text(errors="replace")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url + "/health", timeout=2).status_code == 200:
                return
        time.sleep(0.1)
    raise AssertionError(output.read_text(errors="replace"))


@pytest.fixture
def logged_cluster(tmp_path: Path, bare_browser: Any) -> Iterator[dict[str, Any]]:
    """A master and an agent with --log_dir, and an agent without; their URLs and ids."""
    processes: list[subprocess.Popen] = []
    out: dict[str, Any] = {}
    try:
        master_port = free_port()
        specs = [("master", ["--ip", HOST, "--log_dir", str(tmp_path / "master-logs")])]
        for name, flags in (("logged", ["--log_dir", str(tmp_path / "agent-logs")]), ("bare", [])):
            agent = ["--ip", HOST, "--master", f"{HOST}:{master_port}", *flags]
            specs.append(
                (name, agent + ["--resources", "cpus:1;mem:256;disk:256;ports:[11490-11499]"])
            )
        for name, flags in specs:
            port = master_port if name == "master" else free_port()
            kind = "master" if name == "master" else "agent"
            output = tmp_path / f"{name}.out"
            with output.open("wb") as f:
                process = subprocess.Popen(
                    [sys.executable, "-m", "butte", kind, "--port", str(port)]
                    + ["--work_dir", str(tmp_path / name), *flags],
                    stdout=f,
                    stderr=subprocess.STDOUT,
                )
            processes.append(process)
            url = f"http://{HOST}:{port}"
            _wait_up(url, process, output)
            out[name] = url
        for name in ("logged", "bare"):
            deadline = time.monotonic() + 20
            while not (agent_id := requests.get(out[name] + "/state", timeout=5).json().get("id")):
                assert time.monotonic() < deadline, f"agent {name} did not register"
                time.sleep(0.1)
            out[f"{name}_id"] = agent_id
        yield out
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


def test_log_links_open_the_master_and_agent_logs(logged_cluster, bare_browser, screenshot):
    context = bare_browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(15000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    try:
        master = logged_cluster["master"]
        page.goto(master + "/#/")
        page.click("#master-log-link")
        page.wait_for_url("**/#/log")
        tail = page.locator("#tail")
        port = master.rsplit(":", 1)[1]
        tail.filter(has_text=f"listening on {HOST}:{port}").wait_for()
        assert page.locator("#log-viewer a[download]").count() == 1
        screenshot(page, "master-log")

        logged = logged_cluster["logged_id"]
        page.goto(f"{master}/#/agents/{logged}")
        page.click("#agent-log-link")
        page.wait_for_url(f"**/#/agents/{logged}/log")
        page.locator("#tail").filter(has_text="connected to master at").wait_for()
        screenshot(page, "agent-log")

        page.goto(f"{master}/#/agents/{logged_cluster['bare_id']}/log")
        missing = page.locator("#log-missing")
        missing.wait_for()
        assert "--log_dir or --external_log_file" in missing.inner_text()
        assert page.locator("#tail").count() == 0
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
