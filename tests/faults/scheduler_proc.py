"""A small framework for the fault-injection suite, run as its own process so that tests can
SIGKILL it and fail over to a new one:

    python tests/faults/scheduler_proc.py CONFIG.json

CONFIG names the master, a journal file, the FrameworkInfo knobs (checkpoint, partition
awareness, failover timeout, an id to re-subscribe with) and the tasks to launch (TaskInfo
templates without ``agent_id``; launched once, from the first offers, only by a process that
did not get a framework id to fail over to). Every event the master sends is appended to the
journal as one JSON line (``{"t", "pid", "event", "acked"}``), so a test sees exactly what the
framework saw, across processes. Updates with a ``uuid`` are acknowledged unless the file
``ack_hold`` names exists; held updates are acknowledged when the agent resends them after
the file is gone. ``reconcile`` asks for implicit reconciliation after every SUBSCRIBED,
``reconcile_every`` (seconds) also periodically.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from butte.client.scheduler import (  # noqa: E402 - after the path set-up above
    CallError,
    SchedulerClient,
    SchedulerError,
)


class Journal:
    """Append-only JSON lines, one write per line (O_APPEND keeps lines whole)."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, **entry: Any) -> None:
        entry.setdefault("t", time.time())
        entry.setdefault("pid", os.getpid())
        os.write(self.fd, (json.dumps(entry, separators=(",", ":")) + "\n").encode())


def framework_info(config: dict[str, Any]) -> dict[str, Any]:
    info: dict[str, Any] = {
        "name": config.get("name", "faults"),
        "user": "root",
        "checkpoint": bool(config.get("checkpoint", True)),
        "failover_timeout": float(config.get("failover_timeout", 60.0)),
        "capabilities": [{"type": "TASK_KILLING_STATE"}],
    }
    if config.get("partition_aware"):
        info["capabilities"].append({"type": "PARTITION_AWARE"})
    if config.get("framework_id"):
        info["id"] = {"value": config["framework_id"]}
    return info


async def launch_from(client: SchedulerClient, offer: dict, pending: list[dict]) -> list[dict]:
    """Launches every pending task on ``offer`` (the tests ask for little); the rest."""
    if not pending:
        await client.decline([offer], refuse_seconds=3600)
        return pending
    await client.launch(offer, pending, refuse_seconds=3600)
    return []


async def acknowledge(client: SchedulerClient, status: dict, journal: Journal) -> bool:
    try:
        return await client.acknowledge_status(status)
    except CallError as e:
        journal.write(note=f"ack failed: {e}")
        return False


async def run(config: dict[str, Any]) -> int:
    journal = Journal(config["journal"])
    pending = [] if config.get("framework_id") else list(config.get("tasks", []))
    hold = config.get("ack_hold")
    client = SchedulerClient(
        config["master"],
        framework_info(config),
        retry_timeout=None,
        backoff_max=0.5,
        call_timeout=5.0,
    )
    try:
        await client.subscribe()
    except SchedulerError as e:
        journal.write(note=f"subscribe failed: {e}")
        return 3
    reconciler = None
    if config.get("reconcile_every"):
        reconciler = asyncio.create_task(reconcile_every(client, float(config["reconcile_every"])))
    async for event in client:
        kind = event["type"]
        if kind == "HEARTBEAT":
            continue
        acked = False
        if kind == "UPDATE":
            status = event["update"]["status"]
            if not (hold and os.path.exists(hold)):
                acked = await acknowledge(client, status, journal)
        journal.write(event=event, acked=acked)
        try:
            if kind == "SUBSCRIBED" and config.get("reconcile"):
                await client.reconcile()
            elif kind == "OFFERS":
                for offer in event["offers"]["offers"]:
                    had = bool(pending)
                    pending = await launch_from(client, offer, pending)
                    if had and not pending:
                        journal.write(note="launched")
        except CallError as e:
            journal.write(note=f"call failed: {e}")
    journal.write(note="event stream ended")
    if reconciler is not None:
        reconciler.cancel()
    return 0


async def reconcile_every(client: SchedulerClient, period: float) -> None:
    while True:
        await asyncio.sleep(period)
        with contextlib.suppress(CallError):
            await client.reconcile()


def main() -> int:
    with open(sys.argv[1]) as f:
        config = json.load(f)
    return asyncio.run(run(config))


if __name__ == "__main__":
    sys.exit(main())
