"""The unmodified pymesos driver reserves resources, creates a persistent volume, runs a task
that writes into it and a second that reads the data back, then destroys the volume and
unreserves, with operation feedback for each step (docs/reservations.md)."""

from __future__ import annotations

import json
import queue
import threading
import urllib.request
from typing import Any

import pytest

from butte.testing.require import require_module

pymesos = require_module("pymesos")

pytestmark = [pytest.mark.compat, pytest.mark.integration]

ROLE, PRINCIPAL = "db", "db-principal"


def _reserved(name: str, value: float) -> dict[str, Any]:
    # The pre-refinement form: pymesos frameworks do not ask for RESERVATION_REFINEMENT.
    return {
        "name": name,
        "type": "SCALAR",
        "scalar": {"value": value},
        "role": ROLE,
        "reservation": {"principal": PRINCIPAL},
    }


def _volume(size: float) -> dict[str, Any]:
    return {
        **_reserved("disk", size),
        "disk": {
            "persistence": {"id": "vol-1", "principal": PRINCIPAL},
            "volume": {"container_path": "data", "mode": "RW"},
        },
    }


class Steps(pymesos.Scheduler):
    """Runs one step per offer: each step is a list of operations for ACCEPT."""

    def __init__(self, steps: list[list[dict[str, Any]]]) -> None:
        self.steps = steps
        self.statuses: queue.Queue[dict] = queue.Queue()
        self.operations: queue.Queue[dict] = queue.Queue()
        self.offers: list[dict] = []
        self.go = threading.Event()  # the next step may run on the next offer
        self.go.set()

    def resourceOffers(self, driver, offers):  # noqa: N802
        for offer in offers:
            if self.steps and self.go.is_set():
                self.go.clear()
                self.offers.append(offer)
                ops = self.steps.pop(0)
                for op in ops:
                    if op["type"] == "LAUNCH":
                        for t in op["launch"]["task_infos"]:
                            t["agent_id"] = offer["agent_id"]
                driver.acceptOffers([offer["id"]], ops, filters={"refuse_seconds": 0.1})
            else:
                driver.declineOffer(offer["id"], filters={"refuse_seconds": 0.1})

    def statusUpdate(self, driver, update):  # noqa: N802
        self.statuses.put(update)

    def operationStatusUpdate(self, driver, status):  # noqa: N802
        self.operations.put(status)


def _operations(url: str) -> list[dict]:
    body = json.dumps({"type": "GET_OPERATIONS"}).encode()
    request = urllib.request.Request(
        url + "/api/v1", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["get_operations"]["operations"]


def _task(task_id: str, command: str) -> dict[str, Any]:
    return {
        "task_id": {"value": task_id},
        "name": task_id,
        "command": {"value": command},
        "resources": [_reserved("cpus", 0.5), _reserved("mem", 64), _volume(64)],
    }


def _wait_task(sched: Steps, task_id: str) -> str:
    while True:
        update = sched.statuses.get(timeout=60)
        if update["task_id"]["value"] == task_id and update["state"] in (
            "TASK_FINISHED",
            "TASK_FAILED",
            "TASK_ERROR",
            "TASK_LOST",
        ):
            return update["state"]


def _wait_ops(sched: Steps, *ids: str) -> dict[str, str]:
    """The states of the operations ``ids``; statuses of others (the agent resending one
    whose acknowledgement had not reached it yet) are skipped."""
    out = {}
    while len(out) < len(ids):
        status = sched.operations.get(timeout=60)
        assert status.get("agent_id"), status
        assert "resource_provider_id" not in status
        if status["operation_id"]["value"] in ids:
            out[status["operation_id"]["value"]] = status["state"]
    return out


def test_pymesos_reserves_creates_a_volume_keeps_data_and_cleans_up(cluster_factory):
    cluster = cluster_factory(agents=1)
    agent_dir = cluster.agents[0].work_dir
    reserve = [_reserved("cpus", 0.5), _reserved("mem", 64), _reserved("disk", 64)]
    steps = [
        [
            {"type": "RESERVE", "id": {"value": "reserve"}, "reserve": {"resources": reserve}},
            {"type": "CREATE", "id": {"value": "create"}, "create": {"volumes": [_volume(64)]}},
            {"type": "LAUNCH", "launch": {"task_infos": [_task("writer", "echo kept > data/f")]}},
        ],
        [
            {
                "type": "LAUNCH",
                "launch": {"task_infos": [_task("reader", 'test "$(cat data/f)" = kept')]},
            }
        ],
        [
            {"type": "DESTROY", "id": {"value": "destroy"}, "destroy": {"volumes": [_volume(64)]}},
            {
                "type": "UNRESERVE",
                "id": {"value": "unreserve"},
                "unreserve": {"resources": reserve},
            },
        ],
    ]
    sched = Steps(steps)
    framework = {
        "user": "root",
        "name": "pymesos-volumes",
        "hostname": "localhost",
        "role": ROLE,
        "principal": PRINCIPAL,
    }
    driver = pymesos.MesosSchedulerDriver(
        sched, framework, cluster.master_address, use_addict=False
    )
    driver.start()
    try:
        assert _wait_ops(sched, "reserve", "create") == {
            "reserve": "OPERATION_FINISHED",
            "create": "OPERATION_FINISHED",
        }
        assert _wait_task(sched, "writer") == "TASK_FINISHED"
        volume_dir = agent_dir / "volumes" / "roles" / ROLE / "vol-1"
        assert (volume_dir / "f").read_text() == "kept\n"
        [agent] = cluster.state()["slaves"]
        assert agent["reserved_resources"][ROLE]["disk"] == 64
        sched.go.set()
        assert _wait_task(sched, "reader") == "TASK_FINISHED"
        sched.go.set()
        assert _wait_ops(sched, "destroy", "unreserve") == {
            "destroy": "OPERATION_FINISHED",
            "unreserve": "OPERATION_FINISHED",
        }
        cluster.wait_until(lambda s: not s["slaves"][0]["reserved_resources"], timeout=20)
        cluster.wait_until(lambda s: not volume_dir.exists(), timeout=20)
        # Acknowledged (pymesos acknowledges implicitly): nothing is left to list.
        cluster.wait_until(lambda s: not _operations(cluster.master_url), timeout=20)
    finally:
        driver.stop()
        driver.join()
