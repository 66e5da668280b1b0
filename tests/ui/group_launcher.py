"""A framework that launches one task group, for the UI's and the CLI's task-group sandboxes.

Run as ``python group_launcher.py HOST:PORT``: it subscribes, launches on its first offer a
LAUNCH_GROUP of two members (``member-a``, ``member-b``, each printing ``<id>-out`` and
sleeping) under the DEFAULT executor ``group-exec``, declines every other offer, prints
``launched <agent id>`` once, acknowledges every update and runs until killed.
"""

from __future__ import annotations

import asyncio
import sys

from butte.client.scheduler import SchedulerClient

MEMBERS = ("member-a", "member-b")


def _scalars(cpus: float, mem: float) -> list[dict]:
    return [
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": cpus}},
        {"name": "mem", "type": "SCALAR", "scalar": {"value": mem}},
    ]


async def launch(master: str) -> None:
    async with SchedulerClient(master, {"name": "group-launcher"}) as client:
        launched = False
        async for event in client:
            if event["type"] == "UPDATE":  # the agent sends a task's next update once acked
                await client.acknowledge_status(event["update"]["status"])
            if event["type"] != "OFFERS":
                continue
            for offer in event["offers"]["offers"]:
                if launched:
                    await client.decline([offer["id"]], refuse_seconds=3600)
                    continue
                agent = offer["agent_id"]
                executor = {
                    "executor_id": {"value": "group-exec"},
                    "framework_id": {"value": client.framework_id},
                    "type": "DEFAULT",
                    "resources": _scalars(0.1, 32),
                }
                tasks = [
                    {
                        "name": name,
                        "task_id": {"value": name},
                        "agent_id": agent,
                        "resources": _scalars(0.1, 16),
                        "command": {"value": f"echo {name}-out; sleep 600"},
                    }
                    for name in MEMBERS
                ]
                group = {"executor": executor, "task_group": {"tasks": tasks}}
                operation = {"type": "LAUNCH_GROUP", "launch_group": group}
                await client.accept([offer["id"]], [operation], refuse_seconds=3600)
                launched = True
                print(f"launched {agent['value']}", flush=True)


if __name__ == "__main__":
    asyncio.run(launch(sys.argv[1]))
