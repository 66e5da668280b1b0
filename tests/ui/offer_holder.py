"""A framework that keeps one offer outstanding, for the UI's offers and roles pages.

Run as ``python offer_holder.py HOST:PORT ROLE``: it subscribes in ROLE, keeps the first offer
it gets, declines every other one for an hour (so other frameworks get those agents), prints
``holding <agent id>`` once, and runs until killed.
"""

from __future__ import annotations

import asyncio
import sys

from butte.client.scheduler import SchedulerClient


async def hold(master: str, role: str) -> None:
    info = {"name": "offer-holder", "roles": [role], "capabilities": [{"type": "MULTI_ROLE"}]}
    async with SchedulerClient(master, info) as client:
        held: str | None = None
        async for event in client:
            if event["type"] != "OFFERS":
                continue
            for offer in event["offers"]["offers"]:
                if held is None:
                    held = offer["id"]["value"]
                    print(f"holding {offer['agent_id']['value']}", flush=True)
                else:
                    await client.decline([offer["id"]], refuse_seconds=3600)


if __name__ == "__main__":
    asyncio.run(hold(sys.argv[1], sys.argv[2]))
