"""The command launcher's batched socket protocol end to end (docs/design.md "The command
launcher"): the agent's `LauncherClient` and a real launcher process, with hundreds of
launches asked for at once, some of which cannot start. Every answer arrives, a task's
start (or failure) in the order it was asked for and its exit after its start."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from test_agent_process import wait_for

from butte.agent.containerizer.launcher import LauncherClient
from butte.agent.server import launcher_argv

pytestmark = pytest.mark.integration

TASKS = 300


def test_many_concurrent_launches_are_all_answered_in_order(tmp_path: Path) -> None:
    events: list[tuple[str, str, object]] = []
    lost: list[bool] = []

    async def scenario() -> None:
        client = LauncherClient(
            asyncio.get_running_loop(),
            launcher_argv(),
            str(tmp_path),
            60.0,
            on_started=lambda cid, pid: events.append(("started", cid, pid)),
            on_failed=lambda cid, why: events.append(("failed", cid, why)),
            on_exited=lambda cid, status: events.append(("exited", cid, status)),
            on_lost=lambda: lost.append(True),
        )
        assert client.connect() == {}
        client.attach()
        ids = [f"c{n:03d}" for n in range(TASKS)]
        broken = {cid for n, cid in enumerate(ids) if n % 7 == 3}  # no such program
        try:
            for n, cid in enumerate(ids):  # all in one callback: batched by the client
                executor = tmp_path / "executors" / f"e{n}"
                client.launch(
                    {
                        "id": cid,
                        "sandbox": str(executor / "runs" / cid),
                        "program": "/nonexistent/program" if cid in broken else "/bin/sh",
                        "argv": ["sh", "-c", f"exit {n % 100}"],
                        "search": False,
                        "env": {"PATH": "/usr/bin:/bin"},
                        "checkpoint": True,
                    }
                )

            def answered() -> bool:
                ends = sum(1 for kind, _, _ in events if kind in ("failed", "exited"))
                return ends == TASKS or bool(lost)

            await wait_for(answered, "an answer for every launch", 120)
            assert not lost, "the launcher went away"
            firsts = [cid for kind, cid, _ in events if kind in ("started", "failed")]
            assert firsts == ids  # answered in the order asked
            seen: set[str] = set()
            for kind, cid, detail in events:
                if kind == "started":
                    assert cid not in broken and cid not in seen
                    seen.add(cid)
                elif kind == "exited":
                    assert cid in seen, f"{cid} exited before it started"
                    assert os.WIFEXITED(detail) and os.WEXITSTATUS(detail) == ids.index(cid) % 100
                else:
                    assert cid in broken, detail
            assert len(seen) == TASKS - len(broken)
            for cid in seen:
                client.forget(cid)
        finally:
            await client.close(stop=True)

    asyncio.run(scenario())
