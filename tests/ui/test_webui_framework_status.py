"""A framework that disconnects shows as inactive on its page and in the frameworks list while
the change feed is live: the master sends no operator event for a disconnection (as Mesos, no
FRAMEWORK_UPDATED until the framework subscribes again), so those pages poll."""

from __future__ import annotations

import contextlib
import re
import socket
import threading

import pytest
import requests

from butte.testing.require import require_module

pytestmark = pytest.mark.integration

expect = require_module("playwright.sync_api").expect

# The status badges' whole text (a substring "active" would match "inactive" too).
ACTIVE, INACTIVE = re.compile(r"^active$"), re.compile(r"^inactive$")


class Subscribed:
    """A framework that stays subscribed, its stream read in the background, until `close`
    (a stream left unread and its iterator dropped would close the connection at once)."""

    def __init__(self, master_url: str, name: str) -> None:
        info = {"user": "root", "name": name, "failover_timeout": 600}
        body = {"type": "SUBSCRIBE", "subscribe": {"framework_info": info}}
        self.response = requests.post(
            f"{master_url}/api/v1/scheduler", json=body, stream=True, timeout=30
        )
        assert self.response.status_code == 200, self.response.text
        self._lines = self.response.iter_lines()
        self.id = ""
        for line in self._lines:
            if b"SUBSCRIBED" in line:
                start = line.index(b'"framework_id"')
                self.id = line[start:].split(b'"value":"', 1)[1].split(b'"', 1)[0].decode()
                break
        assert self.id, "no SUBSCRIBED event"
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        with contextlib.suppress(Exception):  # ends when `close` closes the stream
            for _ in self._lines:
                pass

    def close(self) -> None:
        # The draining thread's read holds the connection until it returns (at the next
        # heartbeat, up to 15 s away): shutting the socket down drops it at once.
        with contextlib.suppress(AttributeError, OSError):
            self.response.raw._fp.fp.raw._sock.shutdown(socket.SHUT_RDWR)
        self.response.close()


def test_a_disconnected_framework_shows_as_inactive_without_an_event(ui_cluster, page):
    first = Subscribed(ui_cluster.url, "status-one")
    second = Subscribed(ui_cluster.url, "status-two")
    try:
        page.goto(f"{ui_cluster.url}/#/frameworks/{first.id}")
        expect(page.locator("#live-status")).to_have_attribute("data-mode", "stream")
        content = page.locator("#content")
        expect(content.locator("dd", has_text="status-one")).to_be_visible()
        expect(content.locator(".badge", has_text=ACTIVE)).to_have_count(1)
        # Past the reload that the feed's connection triggers (at most 2 s after a load):
        # what shows the change below can only be the page's own polling.
        page.wait_for_timeout(3000)
        first.close()  # its connection drops; it stays (failover timeout), inactive
        expect(content.locator(".badge", has_text=INACTIVE)).to_have_count(1, timeout=15000)
        expect(page.locator("#live-status")).to_have_attribute("data-mode", "stream")

        page.goto(f"{ui_cluster.url}/#/frameworks")
        row = page.locator("tr", has_text="status-two")
        expect(row.locator(".badge", has_text=ACTIVE)).to_have_count(1)
        page.wait_for_timeout(3000)
        second.close()
        expect(row.locator(".badge", has_text=INACTIVE)).to_have_count(1, timeout=20000)
        expect(page.locator("#live-status")).to_have_attribute("data-mode", "stream")
    finally:
        first.close()
        second.close()
