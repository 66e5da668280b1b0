"""Input to nested containers across an agent restart, with a real agent process SIGKILLed
and started again (same port, same work dir) against the fake master of
`test_agent_process`: the launcher of each nested command keeps the command's input end
(stdin pipe or pty master) and hands it to the restarted agent on its socket
(`butte.agent.containerizer.nested_exec`, "Input across an agent restart"), so that
ATTACH_CONTAINER_INPUT writes to the command again, ends its input and sizes its terminal;
a launcher whose socket is gone leaves the container without input (409).

The agent listens on a port of this file's range (29000-29499).
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import signal
import socket
from pathlib import Path
from typing import Any

import pytest
from test_agent_process import AID, FID, AgentProcess, FakeMaster, wait_for
from test_nested_recovery import CHECKPOINTING, Agent, run_with_restartable_agent

pytestmark = pytest.mark.integration

PORTS = range(29000, 29500)
INPUT_HEADERS = {"Content-Type": "application/recordio", "Message-Content-Type": "application/json"}


def port_of_this_range() -> int:
    """A port of `PORTS` that nothing listens on now."""
    for port in PORTS:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError("no free port in 29000-29499")


def _record(payload: dict[str, Any]) -> bytes:
    body = json.dumps(
        {"type": "ATTACH_CONTAINER_INPUT", "attach_container_input": payload}
    ).encode()
    return str(len(body)).encode() + b"\n" + body


def stdin(data: bytes) -> dict[str, Any]:
    return {"type": "DATA", "data": {"type": "STDIN", "data": base64.b64encode(data).decode()}}


def window(rows: int, columns: int) -> dict[str, Any]:
    size = {"window_size": {"rows": rows, "columns": columns}}
    return {"type": "CONTROL", "control": {"type": "TTY_INFO", "tty_info": size}}


def send_input(port: int, cid: dict[str, Any], records: list[dict[str, Any]]) -> tuple[int, str]:
    """One ATTACH_CONTAINER_INPUT stream: its status and text."""
    body = _record({"type": "CONTAINER_ID", "container_id": cid})
    for io in records:
        body += _record({"type": "PROCESS_IO", "process_io": io})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request("POST", "/api/v1", body, INPUT_HEADERS)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


def test_input_reaches_nested_commands_after_an_agent_restart(tmp_path: Path) -> None:
    work = tmp_path / "work"
    port = port_of_this_range()

    async def scenario(master: FakeMaster, agent_process: AgentProcess, agent: Agent) -> None:
        await master.run_task("box", "exec sleep 60", framework=CHECKPOINTING)
        await wait_for(lambda: "TASK_RUNNING" in master.states("box"), "the task running")
        ((parent_id, _),) = (await agent.nested()).items()
        runs = work / "slaves" / AID / "frameworks" / FID / "executors" / "box" / "runs"

        def cid(name: str) -> dict[str, Any]:
            return {"value": name, "parent": {"value": parent_id}}

        def stdout(name: str) -> str:
            path = runs / parent_id / "containers" / name / "stdout"
            return path.read_text(errors="replace") if path.exists() else ""

        async def launch(name: str, command: str, **container: Any) -> None:
            payload: dict[str, Any] = {"container_id": cid(name), "command": {"value": command}}
            if container:
                payload["container"] = {"type": "MESOS", **container}
            await agent.call("LAUNCH_NESTED_CONTAINER", payload)

        async def feed(name: str, *records: dict[str, Any]) -> tuple[int, str]:
            return await asyncio.to_thread(send_input, port, cid(name), list(records))

        async def wait(name: str) -> dict[str, Any]:
            return await agent.call("WAIT_NESTED_CONTAINER", {"container_id": cid(name)})

        await launch("reader", 'while read line; do echo "got:$line"; done; echo eof')
        tty = window(24, 80)["control"]["tty_info"]
        await launch("term", "stty size; read a; stty size; echo got:$a", tty_info=tty)
        await launch("lost", "cat")
        # Input before the restart, as ever (the stream ends without the end of input).
        assert await feed("reader", stdin(b"before\n")) == (200, "")
        await wait_for(lambda: "got:before" in stdout("reader"), "the first line read")
        await wait_for(lambda: "24 80" in stdout("term"), "the terminal's first size")

        await agent_process.kill()
        # The "lost" container's launcher can no longer be reached: no input for it.
        socket_path = work / "meta" / "containers" / parent_id / "containers" / "lost" / "io"
        assert socket_path.is_socket()
        assert socket_path.stat().st_mode & 0o077 == 0  # its owner only: it hands out input
        socket_path.unlink()
        await agent_process.start()
        await wait_for(lambda: master.connections >= 2, "the agent back", timeout=20)

        # Data and the end of input reach the pipe's reader through the restarted agent.
        assert await feed("reader", stdin(b"after\n"), stdin(b"")) == (200, "")
        assert await wait("reader") == {"exit_status": 0}
        assert stdout("reader").split() == ["got:before", "got:after", "eof"]
        reader_socket = socket_path.parent.parent / "reader" / "io"
        await wait_for(lambda: not reader_socket.exists(), "the ended launcher's socket gone")
        # The terminal is sized, and its input read, after the restart too.
        assert await feed("term", window(40, 120), stdin(b"x\n")) == (200, "")
        assert await wait("term") == {"exit_status": 0}
        # (the terminal echoes the "x" typed)
        assert stdout("term").split() == ["24", "80", "x", "40", "120", "got:x"], stdout("term")
        # No launcher to hand the input back: refused, with the reason.
        status, text = await feed("lost", stdin(b"x\n"))
        assert status == 409 and "takes no input" in text, (status, text)
        await agent.call("KILL_NESTED_CONTAINER", {"container_id": cid("lost")})
        assert await wait("lost") == {"exit_status": signal.SIGKILL}

    run_with_restartable_agent(work, scenario, port=port)
