"""The ``butte marathon`` services page (``/ui``) in a real Chromium: an app and a pod, the
pod's instance with each container's state linking to its sandbox in the master's web UI,
and a pod's deployment among those in progress."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from butte.testing.marathon import start_marathon
from butte.testing.require import require

pytestmark = [pytest.mark.integration]

CHROMIUM = "/usr/bin/chromium"


def test_the_services_page_shows_pods_with_their_containers(cluster, tmp_path: Path) -> None:
    if not os.access(CHROMIUM, os.X_OK):
        require(f"{CHROMIUM} is missing", "Chromium")
    if importlib.util.find_spec("playwright") is None:
        require("the Python package 'playwright' is missing", "Playwright")
    from playwright.sync_api import sync_playwright

    sleeper = {
        "exec": {"command": {"shell": "exec sleep 600"}},
        "resources": {"cpus": 0.1, "mem": 16},
    }
    pod = {
        "id": "/shop/cart",
        "containers": [{"name": "web", **sleeper}, {"name": "log", **sleeper}],
    }
    # A pod that cannot be placed (more cpus than the agent has): its deployment stays.
    stuck = {
        "id": "/shop/big",
        "containers": [{"name": "huge", **sleeper, "resources": {"cpus": 64, "mem": 16}}],
    }
    with start_marathon(cluster.master_address, tmp_path) as marathon:
        for body in (pod, stuck):
            assert marathon.request("POST", "/v2/pods", body)[0] == 201
        app = {"id": "/shop/api", "cmd": "exec sleep 600", "cpus": 0.1, "mem": 16}
        assert marathon.request("POST", "/v2/apps", app)[0] == 201
        marathon.wait_until(
            lambda: marathon.get("/v2/pods/shop/cart::status")["status"] == "STABLE",
            60,
            "the pod stable",
        )
        (inst,) = marathon.get("/v2/pods/shop/cart::status")["instances"]
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
            )
            try:
                page = browser.new_page()
                page.goto(marathon.url + "/ui")
                row = page.locator('tr[data-pod="/shop/cart"]')
                row.wait_for(timeout=20000)
                text = row.inner_text()
                assert "STABLE" in text and inst["id"] in text, text
                members = row.locator(".member")
                assert members.count() == 2
                assert "web:" in members.first.inner_text()
                assert "TASK_RUNNING" in members.first.inner_text()
                href = members.first.locator("a").get_attribute("href")
                task_id = f"{inst['id']}.web"
                assert href == f"{cluster.master_url}/#/tasks/{task_id}", href
                deployments = page.locator("#deps")
                deployments.get_by_text("StartPod /shop/big").wait_for(timeout=20000)
                assert "StartPod /shop/big" in deployments.inner_text()
                assert "/shop/api" in page.locator("#apps").inner_text()
                big = page.locator('tr[data-pod="/shop/big"]').inner_text()
                assert "DEPLOYING" in big, big
            finally:
                browser.close()
