"""The unmodified PyPI pymesos scheduler driver against a real butte cluster."""

from __future__ import annotations

import threading
from collections import defaultdict

import pytest

from butte.testing.require import require_module

pymesos = require_module("pymesos")

pytestmark = [pytest.mark.compat, pytest.mark.integration]

TASKS = 100
CPUS, MEM = 0.1, 32


class HundredTasks(pymesos.Scheduler):
    """Launches TASKS command tasks as offers allow and records every status per task."""

    def __init__(self) -> None:
        self.pending = [f"task-{i}" for i in range(TASKS)]
        self.states: dict[str, list[str]] = defaultdict(list)
        self.updates_without_agent: list[dict] = []
        self.registered_id: str | None = None
        self.done = threading.Event()
        self.lock = threading.Lock()

    def registered(self, driver, framework_id, master_info):
        self.registered_id = framework_id["value"]

    def resourceOffers(self, driver, offers):
        for offer in offers:
            scalars = {r["name"]: r["scalar"]["value"] for r in offer["resources"] if "scalar" in r}
            cpus, mem = scalars.get("cpus", 0), scalars.get("mem", 0)
            tasks = []
            with self.lock:
                while self.pending and cpus >= CPUS - 1e-9 and mem >= MEM:
                    task_id = self.pending.pop()
                    cpus, mem = cpus - CPUS, mem - MEM
                    tasks.append(
                        {
                            "task_id": {"value": task_id},
                            "agent_id": {"value": offer["agent_id"]["value"]},
                            "name": task_id,
                            "command": {"value": "true"},
                            "resources": [
                                {"name": "cpus", "type": "SCALAR", "scalar": {"value": CPUS}},
                                {"name": "mem", "type": "SCALAR", "scalar": {"value": MEM}},
                            ],
                        }
                    )
            if tasks:
                driver.launchTasks(offer["id"], tasks, {"refuse_seconds": 0.1})
            else:
                driver.declineOffer(offer["id"], {"refuse_seconds": 1})

    def statusUpdate(self, driver, update):
        if "agent_id" not in update:
            self.updates_without_agent.append(update)
        with self.lock:
            self.states[update["task_id"]["value"]].append(update["state"])
            finished = sum(1 for s in self.states.values() if s[-1] == "TASK_FINISHED")
        driver.acknowledgeStatusUpdate(update)
        if finished == TASKS:
            self.done.set()


@pytest.mark.timeout(180)
def test_pymesos_scheduler_runs_100_command_tasks(cluster):
    scheduler = HundredTasks()
    framework = {"user": "root", "name": "pymesos-compat", "hostname": "localhost"}
    driver = pymesos.MesosSchedulerDriver(
        scheduler,
        framework,
        cluster.master_address,
        use_addict=False,
        implicit_acknowledgements=False,
    )
    driver.start()
    try:
        assert scheduler.done.wait(150), f"finished: {dict(scheduler.states)}"
    finally:
        driver.stop()
        driver.join()

    assert scheduler.registered_id
    assert len(scheduler.states) == TASKS
    for task_id, states in scheduler.states.items():
        # Every task went through the command executor's updates in order. Delivery is at least
        # once, so a retried update may repeat, but never out of order.
        collapsed = [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s]
        assert collapsed == ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"], (task_id, states)
    assert scheduler.updates_without_agent == []

    def torn_down(state: dict) -> bool:
        return any(f["id"] == scheduler.registered_id for f in state["completed_frameworks"])

    cluster.wait_until(torn_down, what="framework torn down")
