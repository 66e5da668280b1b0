"""Marathon's HTTP callback subscriptions (``--event_subscriber http_callback``) through the
unmodified PyPI ``marathon`` client: subscribe a receiver on loopback, get the bus's events
POSTed to it as JSON, keep the subscription across a restart, unsubscribe; and the 400 of a
Marathon without the subscriber."""

from __future__ import annotations

import collections
import collections.abc
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from butte.testing.cluster import start_cluster
from butte.testing.marathon import start_marathon
from butte.testing.require import require_module

marathon = require_module("marathon")
from marathon.exceptions import MarathonHttpError  # noqa: E402
from marathon.models import MarathonApp  # noqa: E402

collections.Iterable = collections.abc.Iterable  # type: ignore[attr-defined]

pytestmark = [pytest.mark.compat, pytest.mark.integration]


class Receiver:
    """An HTTP server on loopback that keeps every JSON body POSTed to it."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length", 0))
                assert self.headers.get("Content-Type") == "application/json"
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.events = received
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/events"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def types(self) -> list[str]:
        return [e.get("eventType") for e in list(self.events)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_callback_subscribers_get_every_event_and_survive_a_restart(tmp_path: Path) -> None:
    receiver, early = Receiver(), Receiver()
    flags = ["--event_subscriber", "http_callback", "--http_endpoints", early.url]
    try:
        with (
            start_cluster(tmp_path / "cluster") as cluster,
            start_marathon(cluster.master_address, tmp_path, flags) as m,
        ):
            c = marathon.MarathonClient(m.url, timeout=20)
            assert c.list_event_subscriptions() == [early.url]
            created = c.create_event_subscription(receiver.url)
            assert created["eventType"] == "subscribe_event"
            assert created["callbackUrl"] == receiver.url and created["clientIp"] == "127.0.0.1"
            assert c.list_event_subscriptions() == [early.url, receiver.url]
            c.create_event_subscription(receiver.url)  # again: still one subscription
            assert c.list_event_subscriptions() == [early.url, receiver.url]
            info = c.get_info()
            assert info.event_subscriber.type == "http_callback"

            c.create_app("/cb/web", MarathonApp(cmd="sleep 600", cpus=0.05, mem=16))

            def seen(*kinds: str) -> bool:
                return all(k in receiver.types() for k in kinds)

            m.wait_until(
                lambda: seen("api_post_event", "deployment_success", "status_update_event"),
                60,
                "the app's events posted",
            )
            running = [e for e in receiver.events if e.get("eventType") == "status_update_event"]
            assert running[-1]["appId"] == "/cb/web"
            assert "subscribe_event" in early.types() and "api_post_event" in early.types()

            # The subscription is kept in the store: a restarted marathon posts on.
            m.restart()
            c = marathon.MarathonClient(m.url, timeout=20)
            assert c.list_event_subscriptions() == [early.url, receiver.url]
            before = len(receiver.events)
            c.scale_app("/cb/web", instances=0)
            m.wait_until(lambda: len(receiver.events) > before, 30, "events after the restart")

            removed = c.delete_event_subscription(receiver.url)
            assert removed["eventType"] == "unsubscribe_event"
            assert c.list_event_subscriptions() == [early.url]
            m.wait_until(lambda: "unsubscribe_event" in early.types(), 30, "the unsubscribe")
            count = len(receiver.events)
            c.delete_app("/cb/web", force=True)
            m.wait_until(lambda: "app_terminated_event" in early.types(), 30, "the deletion")
            assert len(receiver.events) == count  # nothing for the unsubscribed one

            # Bad callback URLs: a clear 400.
            for bad in ("", "ftp://x/y", "not-a-url"):
                status, body = m.request("POST", f"/v2/eventSubscriptions?callbackUrl={bad}")
                assert status == 400 and "callbackUrl" in body["message"], (bad, body)
            assert m.request("PUT", "/v2/eventSubscriptions")[0] == 405
    finally:
        receiver.close()
        early.close()


def test_without_the_subscriber_subscriptions_are_refused(tmp_path: Path) -> None:
    with (
        start_cluster(tmp_path / "cluster") as cluster,
        start_marathon(cluster.master_address, tmp_path) as m,
    ):
        c = marathon.MarathonClient(m.url, timeout=20)
        with pytest.raises(MarathonHttpError) as e:
            c.create_event_subscription("http://127.0.0.1:9/x")
        assert e.value.status_code == 400
        assert "--event_subscriber" in str(e.value)
        assert c.get_info().event_subscriber is None
