"""Nested containers across an agent restart, with a real agent process (SIGKILLed and
started again on the same port and work dir) against the fake master of
`test_agent_process`: a checkpointing framework's task, nested containers launched under it
through the agent's operator API, and what the restarted agent makes of them
(`butte.agent.nested`, "Checkpoint and recovery"):

- one still running is adopted: GET_CONTAINERS lists it under its parent, its output (which
  its launcher wrote to the sandbox while the agent was down) goes on and ATTACH follows it,
  KILL signals it and WAIT reports the signal;
- one that ended while the agent was down, and one that had ended before, report their exit
  statuses to WAIT;
- a session's container (its connection broke with the agent) is killed (SIGKILL, with a
  message), as Mesos destroys a DEBUG container on recovery;
- the parent's executor is the one adopted, never a nested command (a nested container's
  end after the restart must not end its parent's task).

Once with the command launcher (the default) and once with an executor process per task.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from test_agent_process import AID, FID, FRAMEWORK, AgentProcess, FakeMaster, process_gone, wait_for

from butte.cli.local import free_port
from butte.client.operator import OperatorClient
from butte.core.internal import AGENT_PATH
from butte.core.recordio import RecordIOReader

pytestmark = pytest.mark.integration

CHECKPOINTING = {**FRAMEWORK, "checkpoint": True}
# Counts, one line every 0.1 s: its output shows whether it ran on while the agent was down.
TICKER = "i=0; while :; do echo $i; i=$((i+1)); sleep 0.1; done"


async def start_master(master: FakeMaster) -> None:
    """`FakeMaster.start` on a port from `free_port` rather than any the kernel picks."""
    app = web.Application()
    app.router.add_get(AGENT_PATH, master._agent)
    master._runner = web.AppRunner(app)
    await master._runner.setup()
    master.port = free_port()
    await web.TCPSite(master._runner, "127.0.0.1", master.port).start()


class Agent:
    """The agent's operator API (blocking calls run off the event loop)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.client = OperatorClient(f"127.0.0.1:{port}", timeout=20)

    async def call(self, kind: str, payload: dict[str, Any] | None = None) -> Any:
        return await asyncio.to_thread(self.client.call, kind, payload)

    async def nested(self) -> dict[str, dict[str, Any]]:
        """GET_CONTAINERS (show_nested): every container by its id."""
        listed = await self.call("GET_CONTAINERS", {"show_nested": True})
        return {c["container_id"]["value"]: c for c in listed.get("containers", [])}

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)


def open_session(agent: Agent, cid: dict[str, Any], command: str) -> http.client.HTTPConnection:
    """A LAUNCH_NESTED_CONTAINER_SESSION whose answer stays unread (the client's side of the
    connection stays open until the agent goes)."""
    call = {
        "type": "LAUNCH_NESTED_CONTAINER_SESSION",
        "launch_nested_container_session": {"container_id": cid, "command": {"value": command}},
    }
    conn = agent.connect()
    conn.request(
        "POST",
        "/api/v1",
        json.dumps(call).encode(),
        {"Content-Type": "application/json", "Accept": "application/recordio"},
    )
    assert conn.getresponse().status == 200
    return conn


def first_output(agent: Agent, cid: dict[str, Any]) -> bytes:
    """The first output ATTACH_CONTAINER_OUTPUT streams."""
    call = {"type": "ATTACH_CONTAINER_OUTPUT", "attach_container_output": {"container_id": cid}}
    conn = agent.connect()
    try:
        conn.request(
            "POST",
            "/api/v1",
            json.dumps(call).encode(),
            {"Content-Type": "application/json", "Accept": "application/recordio"},
        )
        response = conn.getresponse()
        assert response.status == 200, response.read()
        reader = RecordIOReader()
        while True:
            chunk = response.read1(4096)
            assert chunk, "the output stream ended"
            for record in reader.feed(chunk):
                return base64.b64decode(json.loads(record)["data"]["data"])
    finally:
        conn.close()


def kill_leftovers(work: Path) -> None:
    """SIGKILLs what still works in a sandbox of ``work`` (a failed scenario may leave
    nested commands that no agent knows of)."""
    root = str(work) + os.sep
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{name}/cwd").startswith(root):
                    os.kill(int(name), signal.SIGKILL)


def lines(path: Path) -> list[str]:
    return path.read_text().split()


Scenario = Callable[[FakeMaster, AgentProcess, Agent], Awaitable[None]]


def run_with_restartable_agent(
    work: Path, scenario: Scenario, *flags: str, port: int | None = None
) -> None:
    """Runs ``scenario`` with a fake master and an agent on a port of its own (``port``, else
    a free one: a restarted agent must be found where it was); stops both and shows the
    agent's log on failure."""
    port = port or free_port()

    async def main() -> None:
        master = FakeMaster()
        await start_master(master)
        agent_process = AgentProcess(master.port, work, "--port", str(port), *flags)
        await agent_process.start()
        try:
            await wait_for(lambda: master.of_type("REGISTER_AGENT"), "registration")
            await scenario(master, agent_process, Agent(port))
        except BaseException as e:
            raise AssertionError(f"{e!r}\n--- agent log ---\n{agent_process.logs()}") from e
        finally:
            if agent_process.proc is not None and agent_process.proc.returncode is None:
                await agent_process.stop()
            await master.stop()
            kill_leftovers(work)

    asyncio.run(main())


@pytest.mark.parametrize("launcher", ["true", "false"], ids=["launcher", "executor"])
def test_nested_containers_survive_an_agent_restart(tmp_path: Path, launcher: str) -> None:
    work = tmp_path / "work"

    async def scenario(master: FakeMaster, agent_process: AgentProcess, agent: Agent) -> None:
        await master.run_task("box", "exec sleep 60", framework=CHECKPOINTING)
        await wait_for(lambda: "TASK_RUNNING" in master.states("box"), "the task running")
        ((parent_id, parent),) = (await agent.nested()).items()
        executor_pid = parent["container_status"]["executor_pid"]

        def cid(name: str) -> dict[str, Any]:
            return {"value": name, "parent": {"value": parent_id}}

        async def launch(name: str, command: str) -> None:
            payload = {"container_id": cid(name), "command": {"value": command}}
            await agent.call("LAUNCH_NESTED_CONTAINER", payload)

        async def wait(name: str) -> dict[str, Any]:
            return await agent.call("WAIT_NESTED_CONTAINER", {"container_id": cid(name)})

        await launch("ticker", TICKER)
        await launch("quick", "sleep 1; exit 3")
        await launch("done", "exit 5")
        session = await asyncio.to_thread(open_session, agent, cid("debug"), "exec sleep 60")
        assert await wait("done") == {"exit_status": 5 << 8}
        sandbox = work / "slaves" / AID / "frameworks" / FID / "executors" / "box" / "runs"
        ticker_out = sandbox / parent_id / "containers" / "ticker" / "stdout"
        await wait_for(lambda: ticker_out.exists() and lines(ticker_out), "the ticker's output")
        listed = await agent.nested()
        session_pid = listed["debug"]["container_status"]["executor_pid"]

        await agent_process.kill()
        at_kill = len(lines(ticker_out))
        await asyncio.sleep(1.5)  # "quick" ends meanwhile; the ticker goes on
        await agent_process.start()
        await wait_for(lambda: master.connections >= 2, "the agent back", timeout=20)
        session.close()

        listed = await agent.nested()
        # The parent's own executor was adopted (not a nested command working in its
        # sandbox), the running container with it; the ended ones and the session are not
        # listed as running.
        assert listed[parent_id]["container_status"]["executor_pid"] == executor_pid
        assert set(listed) == {parent_id, "ticker"}, listed
        assert listed["ticker"]["container_id"] == cid("ticker")
        assert await wait("quick") == {"exit_status": 3 << 8}
        assert await wait("done") == {"exit_status": 5 << 8}
        debug = await wait("debug")
        assert debug["exit_status"] == signal.SIGKILL and "restarted" in debug["message"]
        assert process_gone(session_pid)
        # The ticker wrote on while the agent was down (its launcher copied that output to
        # the sandbox) and goes on; ATTACH follows it from the sandbox file.
        assert len(lines(ticker_out)) > at_kill + 5
        assert (await asyncio.to_thread(first_output, agent, cid("ticker"))).strip()
        numbers = [int(n) for n in lines(ticker_out)]
        assert numbers == list(range(len(numbers))), "output lost around the restart"
        await agent.call(
            "KILL_NESTED_CONTAINER", {"container_id": cid("ticker"), "signal": signal.SIGTERM}
        )
        assert await wait("ticker") == {"exit_status": signal.SIGTERM}
        # Nested containers ending after the restart left their parent's task alone.
        await asyncio.sleep(0.5)
        assert master.states("box") == ["TASK_STARTING", "TASK_RUNNING"]
        assert not process_gone(executor_pid)
        checkpoint = work / "meta" / "containers" / parent_id / "containers" / "ticker"
        assert (checkpoint / "termination").exists()
        await agent.call("REMOVE_NESTED_CONTAINER", {"container_id": cid("ticker")})
        assert not checkpoint.exists() and not ticker_out.exists()

    run_with_restartable_agent(work, scenario, f"--command_launcher={launcher}")


def test_nested_containers_of_a_task_not_recovered_are_killed(tmp_path: Path) -> None:
    """A framework without checkpointing: its task ends with the agent, and the restarted
    agent kills the task's nested containers, every one (they are no sessions leaders in a
    sandbox that the orphan scan would find), and drops their checkpoint."""
    work = tmp_path / "work"

    async def scenario(master: FakeMaster, agent_process: AgentProcess, agent: Agent) -> None:
        await master.run_task("plain", "exec sleep 60")
        await wait_for(lambda: "TASK_RUNNING" in master.states("plain"), "the task running")
        ((parent_id, _),) = (await agent.nested()).items()
        for name in ("one", "two", "three"):
            cid = {"value": name, "parent": {"value": parent_id}}
            command = {"value": "exec sleep 60"}
            await agent.call("LAUNCH_NESTED_CONTAINER", {"container_id": cid, "command": command})
        listed = await agent.nested()
        pids = [listed[n]["container_status"]["executor_pid"] for n in ("one", "two", "three")]
        await agent_process.kill()
        await agent_process.start()
        await wait_for(lambda: master.connections >= 2, "the agent back", timeout=20)
        await wait_for(lambda: all(process_gone(pid) for pid in pids), "the nested commands gone")
        assert set(await agent.nested()) == set()
        assert not (work / "meta" / "containers" / parent_id).exists()

    run_with_restartable_agent(work, scenario)
