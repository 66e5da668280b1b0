"""A framework that runs one long task using a persistent volume, for the tests that show
which task uses a volume (``butte volumes``, the web UI's agent page).

Run as ``python volume_user.py HOST:PORT ROLE VOLUME_ID``: it subscribes in ROLE, waits for an
offer holding the volume, launches ``sleep 600`` with 0.1 cpus, 32 MB and the volume, prints
``running <task id>`` once the task runs, and runs until killed.
"""

from __future__ import annotations

import asyncio
import copy
import sys
from typing import Any

from butte.client.scheduler import SchedulerClient


def _part(offered: dict[str, Any], value: float) -> dict[str, Any]:
    out = copy.deepcopy(offered)
    out["scalar"] = {"value": value}
    return out


def task_resources(offer: dict[str, Any], volume_id: str) -> list[dict[str, Any]] | None:
    """The volume plus a little cpu and memory of the offer, or None if it lacks any."""
    volume = cpus = mem = None
    for r in offer["resources"]:
        if r.get("disk", {}).get("persistence", {}).get("id") == volume_id:
            volume = r
        elif r["name"] == "cpus" and r["scalar"]["value"] >= 0.1 and "disk" not in r:
            cpus = r
        elif r["name"] == "mem" and r["scalar"]["value"] >= 32:
            mem = r
    if volume is None or cpus is None or mem is None:
        return None
    return [volume, _part(cpus, 0.1), _part(mem, 32)]


async def use(master: str, role: str, volume_id: str) -> None:
    capabilities = [{"type": "MULTI_ROLE"}, {"type": "RESERVATION_REFINEMENT"}]
    info = {"name": "volume-user", "roles": [role], "capabilities": capabilities}
    async with SchedulerClient(master, info) as client:
        launched = running = False
        async for event in client:
            if event["type"] == "OFFERS":
                for offer in event["offers"]["offers"]:
                    resources = None if launched else task_resources(offer, volume_id)
                    if resources is None:
                        await client.decline([offer["id"]], refuse_seconds=1)
                        continue
                    task = {
                        "name": "volume-user",
                        "task_id": {"value": f"uses-{volume_id}"},
                        "resources": resources,
                        "command": {"value": "sleep 600"},
                    }
                    await client.launch(offer, [task], refuse_seconds=3600)
                    launched = True
            elif event["type"] == "UPDATE":
                status = event["update"]["status"]
                await client.acknowledge_status(status)
                if status["state"] == "TASK_RUNNING" and not running:
                    running = True
                    print(f"running {status['task_id']['value']}", flush=True)
                elif status["state"] not in ("TASK_STAGING", "TASK_STARTING", "TASK_RUNNING"):
                    print(f"task {status['state']}: {status.get('message', '')}", flush=True)


if __name__ == "__main__":
    asyncio.run(use(sys.argv[1], sys.argv[2], sys.argv[3]))
