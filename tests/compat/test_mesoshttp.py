"""The unmodified PyPI mesoshttp client (0.4.2) against a real butte master.

mesoshttp reads the scheduler stream with ``requests``' ``iter_lines`` and decodes a record
only when the line it ends on is complete, i.e. when the next record's length and newline
have arrived. The master therefore ends every burst of events with a HEARTBEAT record
(docs/protocol.md §0.3, §6.4); without it the first OFFERS after SUBSCRIBED, and the last
updates of a run, reach mesoshttp only at the next periodic heartbeat (15 s).
"""

from __future__ import annotations

import threading
import time

import pytest

from butte.testing.require import require_module

mesoshttp_client = require_module("mesoshttp.client")

pytestmark = [pytest.mark.compat, pytest.mark.integration]

TASKS = 20


class ShortTasks:
    """Launches TASKS `true` tasks from the first offers and records when things arrive."""

    def __init__(self, url: str) -> None:
        self.client = mesoshttp_client.MesosClient(mesos_urls=[url], frameworkName="mh-compat")
        self.client.on(mesoshttp_client.MesosClient.SUBSCRIBED, self.subscribed)
        self.client.on(mesoshttp_client.MesosClient.OFFERS, self.offers)
        self.client.on(mesoshttp_client.MesosClient.UPDATE, self.update)
        self.subscribed_at: float | None = None
        self.first_offers_at: float | None = None
        self.launched = 0
        self.finished: set[str] = set()
        self.all_finished = threading.Event()
        self.lock = threading.Lock()

    def subscribed(self, driver) -> None:
        self.subscribed_at = time.monotonic()

    def offers(self, offers) -> None:
        if self.first_offers_at is None:
            self.first_offers_at = time.monotonic()
        for offer in offers:
            info = offer.get_offer()
            tasks = []
            with self.lock:
                while self.launched < TASKS and len(tasks) < 20:
                    self.launched += 1
                    tasks.append(
                        {
                            "name": f"t{self.launched}",
                            "task_id": {"value": f"t{self.launched}"},
                            "agent_id": {"value": info["agent_id"]["value"]},
                            "command": {"value": "true"},
                            "resources": [
                                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                                {"name": "mem", "type": "SCALAR", "scalar": {"value": 16}},
                            ],
                        }
                    )
            if tasks:
                offer.accept(tasks, {"filters": {"refuse_seconds": 1}})
            else:
                offer.decline({"filters": {"refuse_seconds": 60}})

    def update(self, update: dict) -> None:
        status = update["status"]
        if status["state"] == "TASK_FINISHED":
            with self.lock:
                self.finished.add(status["task_id"]["value"])
                if len(self.finished) == TASKS:
                    self.all_finished.set()


def test_mesoshttp_sees_offers_and_updates_without_waiting_for_a_heartbeat(cluster) -> None:
    framework = ShortTasks(cluster.master_url)
    thread = threading.Thread(target=framework.client.register, daemon=True)
    started = time.monotonic()
    thread.start()
    try:
        assert framework.all_finished.wait(30), (
            f"{len(framework.finished)}/{TASKS} tasks finished as seen by mesoshttp"
        )
        elapsed = time.monotonic() - started
        assert framework.subscribed_at is not None and framework.first_offers_at is not None
        offer_latency = framework.first_offers_at - framework.subscribed_at
        # The master allocates within its 100 ms interval; a record stuck until the next
        # periodic heartbeat would take up to 15 s.
        assert offer_latency < 3.0, f"first OFFERS {offer_latency:.2f} s after SUBSCRIBED"
        assert elapsed < 10.0, f"{TASKS} short tasks took {elapsed:.1f} s through mesoshttp"
    finally:
        framework.client.stop = True
