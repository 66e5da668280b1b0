"""Following the leader across a real failover: two masters contending in a real ZooKeeper
(`butte.testing.zookeeper`), Debian's chromium. A page opened on the standby is sent to the
leader (another origin, whose storage knew nothing) and still knows the standby there; when
the leader dies the page finds the standby, which now leads, and goes on live there."""

from __future__ import annotations

import json

import pytest

from butte.testing.require import require, require_module
from butte.testing.zookeeper import MasterGroup, ZooKeeperEnsemble, zookeeper_missing

pytestmark = pytest.mark.integration

expect = require_module("playwright.sync_api").expect


def test_page_follows_the_new_leader_after_the_leader_dies(bare_browser, tmp_path) -> None:
    reason = zookeeper_missing()
    if reason:
        require(reason, "ZooKeeper")
    flags = ["--zk_session_timeout=2secs"]
    with (
        ZooKeeperEnsemble(tmp_path / "zk", size=1) as zk,
        MasterGroup(tmp_path / "masters", zk.url("/mesos"), 2, flags=flags) as group,
    ):
        leader = group.wait_leader(30)
        standby = 1 - leader
        group.wait_state(standby, lambda s: s.get("leader_info"))
        leader_url, standby_url = (f"http://{group.addresses[i]}" for i in (leader, standby))
        context = bare_browser.new_context(viewport={"width": 1400, "height": 900})
        try:
            page = context.new_page()
            page.goto(f"{standby_url}/#/frameworks")
            # The standby sends the page on (same view); the address is clean again there.
            page.wait_for_url(f"{leader_url}/#/frameworks", timeout=20000)
            known = json.loads(page.evaluate("() => localStorage.getItem('butte.masters')"))
            assert group.addresses[standby] in known, known
            expect(page.locator("#live-status")).to_have_attribute("data-mode", "stream")

            group.kill(leader)
            # Offline, it probes the masters it has seen: the standby answers and takes over.
            page.wait_for_url(f"{standby_url}/#/frameworks", timeout=30000)
            assert group.wait_leader(30, exclude=leader) == standby
            live = page.locator("#live-status")
            expect(live).to_have_attribute("data-mode", "stream", timeout=30000)
            expect(page.locator("#banner")).to_be_hidden(timeout=30000)
            expect(page.locator(".page-head h1")).to_contain_text("Frameworks")
        finally:
            context.close()
