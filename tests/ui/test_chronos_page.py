"""The ``butte chronos`` jobs page in a real Chromium: jobs with schedule, next run and last
runs (linked to their sandboxes in the master's UI), and the dependency graph."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from butte.testing.chronos import ChronosProcess
from butte.testing.require import require

pytestmark = [pytest.mark.integration]

CHROMIUM = "/usr/bin/chromium"
BERLIN = ZoneInfo("Europe/Berlin")


def test_jobs_page_shows_schedule_runs_sandbox_links_and_graph(cluster, tmp_path) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        require(f"{CHROMIUM} is missing", "Chromium")
    if importlib.util.find_spec("playwright") is None:
        require("the Python package 'playwright' is missing", "Playwright")
    from playwright.sync_api import sync_playwright

    with ChronosProcess(tmp_path / "chronos", cluster.master_address) as proc:
        start = datetime.fromtimestamp(math.ceil(time.time() + 1), UTC)
        job = {
            "name": "nightly",
            "command": "true",
            "owner": "ops@example.com",
            # A wall time in the zone: as in Chronos, the zone overrides a written offset. Two
            # seconds apart: a slot due while the first run goes on would be dropped.
            "schedule": f"R2/{start.astimezone(BERLIN).strftime('%Y-%m-%dT%H:%M:%S')}/PT2S",
            "scheduleTimeZone": "Europe/Berlin",
            "description": "the nightly <b>build</b>",
        }
        assert proc.request("POST", "/v1/scheduler/iso8601", json.dumps(job).encode())[0] == 204
        child = {"name": "report", "command": "true", "owner": "o", "parents": ["nightly"]}
        assert (
            proc.request("POST", "/v1/scheduler/dependency", json.dumps(child).encode())[0] == 204
        )
        deadline = time.monotonic() + 60
        while proc.get("/v1/scheduler/job/stat/report")["successCount"] < 2:
            assert time.monotonic() < deadline, "runs did not finish"
            time.sleep(0.3)
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
            )
            try:
                page = browser.new_page()
                page.goto(proc.url + "/")
                row = page.locator('tr[data-job="nightly"]')
                row.wait_for(timeout=20000)
                text = row.inner_text()
                assert "R0/" in text and "Europe/Berlin" in text
                assert "2 / 0 / 0" in text
                assert "the nightly <b>build</b>" in text  # shown as text, not markup
                links = row.locator("a", has_text="sandbox")
                assert links.count() == 2
                href = links.first.get_attribute("href")
                assert href.startswith(cluster.master_url + "/#/tasks/ct%3A")
                assert "after nightly" in page.locator('tr[data-job="report"]').inner_text()
                graph = page.locator("#graph svg")
                assert graph.locator("line").count() == 1
                assert "report" in graph.text_content() and "nightly" in graph.text_content()
            finally:
                browser.close()
