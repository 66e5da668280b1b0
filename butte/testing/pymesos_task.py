"""Runs one `true` task through the unmodified pymesos scheduler driver, for compatibility
tests that only need to know a pymesos framework works against a master set up some way
(authentication, TLS downgrade ...)."""

from __future__ import annotations

import threading
from typing import Any


def pymesos_runs_a_task(
    pymesos: Any, master: str, name: str, timeout: float = 60.0, **driver_options: Any
) -> bool:
    """Subscribes with pymesos' driver (``driver_options`` such as principal/secret), launches
    one task named ``name`` on the first offer, declines the rest; True once it finished."""
    finished = threading.Event()

    class OneTask(pymesos.Scheduler):  # pymesos has no types: it is Any here
        launched = False

        def resourceOffers(self, driver: Any, offers: list[dict]) -> None:  # noqa: N802
            for offer in offers:
                if self.launched:
                    driver.declineOffer(offer["id"])
                    continue
                self.launched = True
                task = {
                    "task_id": {"value": name},
                    "agent_id": offer["agent_id"],
                    "name": name,
                    "command": {"value": "true"},
                    "resources": [
                        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                        {"name": "mem", "type": "SCALAR", "scalar": {"value": 16}},
                    ],
                }
                driver.launchTasks(offer["id"], [task])

        def statusUpdate(self, driver: Any, update: dict) -> None:  # noqa: N802
            if update["state"] == "TASK_FINISHED":
                finished.set()

    framework = {"user": "root", "name": f"pymesos-{name}", "hostname": "localhost"}
    driver = pymesos.MesosSchedulerDriver(
        OneTask(), framework, master, use_addict=False, **driver_options
    )
    driver.start()
    try:
        return finished.wait(timeout)
    finally:
        driver.stop()
        driver.join()
