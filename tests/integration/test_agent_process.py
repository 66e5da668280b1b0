"""A real agent process (``python -m butte.agent``) against a tiny fake master written here:
an aiohttp WebSocket server on 127.0.0.1 that speaks the internal agent protocol
(butte/core/internal.py) and records everything the agent sends."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from butte.core.internal import AGENT_PATH
from butte.testing.require import require_module

pytestmark = pytest.mark.integration

FID = "fm-0000"
AID = "fm-S0"
FRAMEWORK = {"user": "root", "name": "test", "id": {"value": FID}}


class FakeMaster:
    """Accepts agent WebSockets, records their messages, registers them, optionally acks."""

    def __init__(self, auto_ack: bool = True) -> None:
        self.auto_ack = auto_ack
        self.messages: list[dict[str, Any]] = []
        self.framework_of: dict[str, str] = {}  # task id -> its framework's id (run_task)
        self.connections = 0
        self.ws: web.WebSocketResponse | None = None
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(AGENT_PATH, self._agent)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _agent(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.ws = ws
        self.connections += 1
        async for msg in ws:
            message = json.loads(msg.data)
            self.messages.append(message)
            if message["type"] == "REGISTER_AGENT":
                kind = "AGENT_REREGISTERED" if "id" in message["agent_info"] else "AGENT_REGISTERED"
                await self.send({"type": kind, "agent_id": {"value": AID}, "master_id": "fm"})
            elif message["type"] == "STATUS_UPDATE" and self.auto_ack:
                await self.ack(message["status"])
        return ws

    async def send(self, message: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send_str(json.dumps(message))

    async def ack(self, status: dict[str, Any]) -> None:
        await self.send(
            {
                "type": "STATUS_UPDATE_ACK",
                "framework_id": {"value": self.framework_of.get(status["task_id"]["value"], FID)},
                "task_id": status["task_id"],
                "uuid": status["uuid"],
            }
        )

    async def run_task(
        self,
        task_id: str,
        command: str,
        uris: list[dict[str, Any]] | None = None,
        framework: dict[str, Any] = FRAMEWORK,
        **extra: Any,
    ) -> None:
        task = {
            **extra,
            "name": task_id,
            "task_id": {"value": task_id},
            "agent_id": {"value": AID},
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}}],
            "command": {"value": command, **({"uris": uris} if uris else {})},
        }
        self.framework_of[task_id] = framework["id"]["value"]
        await self.send({"type": "RUN_TASK", "framework": framework, "task": task})

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m["type"] == kind]

    def updates(self, task_id: str | None = None) -> list[dict[str, Any]]:
        statuses = [m["status"] for m in self.of_type("STATUS_UPDATE")]
        return [s for s in statuses if task_id is None or s["task_id"]["value"] == task_id]

    def states(self, task_id: str) -> list[str]:
        """Distinct states in order (retries collapsed)."""
        out: list[str] = []
        for status in self.updates(task_id):
            if not out or out[-1] != status["state"]:
                out.append(status["state"])
        return out


async def wait_for(predicate: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class AgentProcess:
    """``python -m butte.agent`` as a subprocess, logging to a file."""

    def __init__(self, master_port: int, work_dir: Path, *extra: str) -> None:
        self.argv = [
            sys.executable,
            "-m",
            "butte.agent",
            "--master",
            f"127.0.0.1:{master_port}",
            "--port",
            "0",
            "--work_dir",
            str(work_dir),
            "--resources",
            "cpus:4;mem:1024;disk:1024;ports:[31000-31100]",
            "--status_update_retry_interval_min",
            "200ms",
            "--registration_backoff_factor",
            "100ms",
            "--executor_shutdown_grace_period",
            "1secs",
            *extra,
        ]
        self.log = work_dir.parent / "agent.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                *self.argv, stdout=log, stderr=asyncio.subprocess.STDOUT
            )

    async def stop(self, timeout: float = 10.0, number: int = signal.SIGUSR1) -> int:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(number)
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise AssertionError(f"agent did not stop on SIGTERM; log:\n{self.logs()}") from None

    async def kill(self) -> None:
        """SIGKILL, like a crash: executors and tasks are left running."""
        assert self.proc is not None
        self.proc.kill()
        await self.proc.wait()

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def run_scenario(
    tmp_path: Path, scenario: Callable, *, auto_ack: bool = True, agent_flags: tuple = ()
) -> None:
    """Runs ``scenario(master, agent)`` with a fresh fake master and agent; always stops them
    and shows the agent log when the scenario fails."""

    async def main() -> None:
        master = FakeMaster(auto_ack=auto_ack)
        await master.start()
        agent = AgentProcess(master.port, tmp_path / "work", *agent_flags)
        await agent.start()
        try:
            await wait_for(lambda: master.of_type("REGISTER_AGENT"), "registration")
            await scenario(master, agent)
        except BaseException as e:
            if agent.proc is not None and agent.proc.returncode is None:
                agent.proc.kill()
                await agent.proc.wait()
            raise AssertionError(f"{e!r}\n--- agent log ---\n{agent.logs()}") from e
        finally:
            if agent.proc is not None and agent.proc.returncode is None:
                await agent.stop()
            await master.stop()

    asyncio.run(main())


def agent_port(master: FakeMaster) -> int:
    return master.of_type("REGISTER_AGENT")[0]["agent_info"]["port"]


def sandbox(tmp_path: Path, task_id: str) -> Path:
    return tmp_path / f"work/slaves/{AID}/frameworks/{FID}/executors/{task_id}/runs/latest"


def process_gone(pid: int) -> bool:
    """Dead or a zombie (an orphan's zombie may linger where pid 1 does not reap)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (FileNotFoundError, ProcessLookupError):  # gone before the open, or before the read
        return True


def test_task_updates_are_retried_until_acked_and_output_lands_in_sandbox(tmp_path):
    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await wait_for(lambda: master.ws is not None, "socket")
        await master.run_task("t1", "echo hello; exit 3")
        # Not acked: STARTING must be resent (200ms, 400ms ...) and nothing after it sent.
        await wait_for(lambda: len(master.updates("t1")) >= 3, "retries of TASK_STARTING")
        first = master.updates("t1")
        assert {s["state"] for s in first} == {"TASK_STARTING"}
        assert len({s["uuid"] for s in first}) == 1
        master.auto_ack = True
        await master.ack(first[0])
        await wait_for(lambda: "TASK_FAILED" in master.states("t1"), "TASK_FAILED")
        assert master.states("t1") == ["TASK_STARTING", "TASK_RUNNING", "TASK_FAILED"]
        failed = master.updates("t1")[-1]
        assert failed["message"] == "Command exited with status 3"
        assert failed["source"] == "SOURCE_EXECUTOR"
        for status in master.updates("t1"):
            assert len(base64.b64decode(status["uuid"])) == 16
            assert status["agent_id"] == {"value": AID}
            assert status["executor_id"] == {"value": "t1"}
        running = next(s for s in master.updates("t1") if s["state"] == "TASK_RUNNING")
        assert running["container_status"]["executor_pid"] > 0
        assert (sandbox(tmp_path, "t1") / "stdout").read_text() == "hello\n"
        url = f"http://127.0.0.1:{agent_port(master)}/state"
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            state = await response.json()
        assert state["id"] == AID and state["resources"]["cpus"] == 4.0

    run_scenario(tmp_path, scenario, auto_ack=False)


def test_state_shows_what_an_executor_holds_and_the_role_of_each(tmp_path):
    """The agent's /state as Mesos': an executor's ``resources`` are its own and its tasks'
    (what its container is limited to), and a task names its role, labels and discovery."""
    web = {"allocation_info": {"role": "web"}}
    resources = [
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}, **web},
        {"name": "mem", "type": "SCALAR", "scalar": {"value": 64}, **web},
    ]

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        task = {
            "name": "held",
            "task_id": {"value": "held"},
            "agent_id": {"value": AID},
            "resources": resources,
            "command": {"value": "sleep 30"},
            "labels": {"labels": [{"key": "tier", "value": "web"}]},
            "discovery": {"visibility": "FRAMEWORK", "name": "held"},
        }
        await master.send({"type": "RUN_TASK", "framework": FRAMEWORK, "task": task})
        await wait_for(lambda: "TASK_RUNNING" in master.states("held"), "TASK_RUNNING")
        url = f"http://127.0.0.1:{agent_port(master)}/state"
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            state = await response.json()
        [framework] = state["frameworks"]
        [executor] = framework["executors"]
        [task] = executor["tasks"]
        assert task["role"] == "web" and task["resources"]["cpus"] == 0.5
        # Labels are a plain array, as Mesos writes them (mesos_exporter reads them so).
        assert task["labels"] == [{"key": "tier", "value": "web"}]
        assert task["discovery"] == {"visibility": "FRAMEWORK", "name": "held"}
        own = executor["resources"]
        assert own["cpus"] >= 0.5 and own["mem"] >= 64, own

    run_scenario(tmp_path, scenario)


def test_kill_task_kills_the_whole_process_tree(tmp_path):
    pids_file = tmp_path / "pids"
    command = (
        f"sleep 100 & echo $! >> {pids_file}; "
        f"(sleep 100 & echo $! >> {pids_file}; wait) & echo $! >> {pids_file}; "
        f"echo $$ >> {pids_file}; wait"
    )

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await master.run_task("k1", command)
        await wait_for(lambda: "TASK_RUNNING" in master.states("k1"), "TASK_RUNNING")
        await wait_for(
            lambda: pids_file.exists() and len(pids_file.read_text().split()) == 4, "pids"
        )
        pids = [int(p) for p in pids_file.read_text().split()]
        assert not any(process_gone(p) for p in pids)
        await master.send(
            {"type": "KILL_TASK", "framework_id": {"value": FID}, "task_id": {"value": "k1"}}
        )
        await wait_for(lambda: "TASK_KILLED" in master.states("k1"), "TASK_KILLED")
        await wait_for(lambda: all(process_gone(p) for p in pids), "whole tree gone", 5.0)
        killed = master.updates("k1")[-1]
        assert killed["message"] == "Command terminated with signal Terminated"

    run_scenario(tmp_path, scenario)


def test_reconnect_reregisters_with_tasks_and_resends_unacked_update(tmp_path):
    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await master.run_task("r1", "sleep 100")
        await wait_for(lambda: "TASK_RUNNING" in master.states("r1"), "TASK_RUNNING")
        master.auto_ack = False
        await master.send(
            {"type": "KILL_TASK", "framework_id": {"value": FID}, "task_id": {"value": "r1"}}
        )
        await wait_for(lambda: "TASK_KILLED" in master.states("r1"), "TASK_KILLED")
        killed = master.updates("r1")[-1]
        assert master.ws is not None
        await master.ws.close()  # the master drops the agent
        await wait_for(lambda: master.connections == 2, "reconnection")
        register = await wait_for(
            lambda: [m for m in master.of_type("REGISTER_AGENT") if "id" in m["agent_info"]],
            "re-registration",
        )
        assert register[0]["agent_info"]["id"] == {"value": AID}
        (task,) = register[0]["tasks"]
        assert task["task_id"] == {"value": "r1"} and task["state"] == "TASK_KILLED"
        assert task["status_update_uuid"] == killed["uuid"]
        assert [f["id"] for f in register[0]["frameworks"]] == [{"value": FID}]
        # The unacknowledged TASK_KILLED goes out again after AGENT_REREGISTERED.
        await wait_for(
            lambda: sum(s["uuid"] == killed["uuid"] for s in master.updates("r1")) >= 2,
            "resent TASK_KILLED",
        )

    run_scenario(tmp_path, scenario)


def test_running_task_is_reported_on_reregistration_and_killed_on_sigusr1(tmp_path):
    pid_file = tmp_path / "pid"

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await master.run_task("s1", f"echo $$ > {pid_file}; exec sleep 100")
        await wait_for(lambda: "TASK_RUNNING" in master.states("s1"), "TASK_RUNNING")
        await wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), "pid")
        pid = int(pid_file.read_text())
        assert master.ws is not None
        await master.ws.close()
        register = await wait_for(
            lambda: [m for m in master.of_type("REGISTER_AGENT") if "id" in m["agent_info"]],
            "re-registration",
        )
        (task,) = register[0]["tasks"]
        assert task["state"] == "TASK_RUNNING"
        await wait_for(lambda: master.ws is not None and not master.ws.closed, "new socket")
        assert await agent.stop() == 0
        assert master.of_type("UNREGISTER_AGENT")
        await wait_for(lambda: process_gone(pid), "task killed with the agent", 5.0)

    run_scenario(tmp_path, scenario)


def grace(seconds: float) -> dict[str, Any]:
    return {"grace_period": {"nanoseconds": int(seconds * 1e9)}}


def test_a_kill_under_way_survives_an_agent_restart(tmp_path):
    """Mesos' command executor outlives its agent and keeps its kill going (its grace timer
    and its "killed" flag, src/launcher/executor.cpp kill() and reaped()). The launcher's
    tasks have their executor in the agent, which takes a kill up again after a restart from
    the TASK_KILLING it recovers: SIGKILL when a grace period (counted again from the
    recovery) ends, and TASK_KILLED even for a task that then exits 0 on its own."""
    deaf, late = tmp_path / "deaf", tmp_path / "late"  # pid files
    fw = {**FRAMEWORK, "checkpoint": True, "capabilities": [{"type": "TASK_KILLING_STATE"}]}

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        # Both ignore SIGTERM; "late" ends by itself (exit 0) before its grace period ends.
        command = f"trap '' TERM; echo $$ > {deaf}; sleep 600"
        await master.run_task("deaf", command, framework=fw, kill_policy=grace(2))
        command = f"trap '' TERM; echo $$ > {late}; sleep 4; echo done"
        await master.run_task("late", command, framework=fw, kill_policy=grace(30))
        for task_id in ("deaf", "late"):
            await wait_for(lambda t=task_id: "TASK_RUNNING" in master.states(t), task_id)
            kill = {"framework_id": {"value": FID}, "task_id": {"value": task_id}}
            await master.send({"type": "KILL_TASK", **kill})
            await wait_for(lambda t=task_id: "TASK_KILLING" in master.states(t), "KILLING")
        pid = int(deaf.read_text())
        assert await agent.stop(number=signal.SIGTERM) == 0
        assert not process_gone(pid)
        await agent.start()
        await wait_for(
            lambda: [m for m in master.of_type("REGISTER_AGENT") if "id" in m["agent_info"]],
            "re-registration",
        )
        await wait_for(lambda: process_gone(pid), "SIGKILL after the grace period", 8.0)
        for task_id, message in (
            ("deaf", "Command terminated with signal Killed"),
            ("late", "Command exited with status 0"),
        ):
            await wait_for(lambda t=task_id: "TASK_KILLED" in master.states(t), task_id)
            assert master.states(task_id)[-2:] == ["TASK_KILLING", "TASK_KILLED"]
            assert master.updates(task_id)[-1]["message"] == message
        assert (sandbox(tmp_path, "late") / "stdout").read_text() == "done\n"

    run_scenario(tmp_path, scenario)


def test_executor_api_rejects_bad_input_and_agent_stays_up(tmp_path):
    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        base = f"http://127.0.0.1:{agent_port(master)}"
        url = base + "/api/v1/executor"
        json_headers = {"Content-Type": "application/json"}
        subscribe = {
            "type": "SUBSCRIBE",
            "framework_id": {"value": FID},
            "executor_id": {"value": "x"},
            "subscribe": {},
        }
        async with aiohttp.ClientSession() as http:
            no_type = {"skip_auto_headers": ["Content-Type"]}
            cases = [
                (lambda: http.get(url), 405),
                (lambda: http.post(url, data=b"{}", **no_type), 400),
                (lambda: http.post(url, data=b"{}", headers={"Content-Type": "text/plain"}), 415),
                (lambda: http.post(url, data=b"{not json", headers=json_headers), 400),
                (lambda: http.post(url, data=b'{"type":"SUBSCRIBE"}', headers=json_headers), 400),
                (
                    lambda: http.post(
                        url, data=json.dumps({**subscribe, "type": "BOGUS"}), headers=json_headers
                    ),
                    400,
                ),
                (lambda: http.post(url, data=json.dumps(subscribe), headers=json_headers), 400),
                (
                    lambda: http.post(
                        url,
                        data=json.dumps(subscribe),
                        headers={**json_headers, "Accept": "text/html"},
                    ),
                    406,
                ),
            ]
            for request, expected in cases:
                async with request() as response:
                    assert response.status == expected, (expected, await response.text())
            async with http.get(base + "/health") as response:
                assert response.status == 200
            async with http.get(base + "/slave(1)/state") as response:
                assert (await response.json())["id"] == AID
            async with http.get(base + "/version") as response:
                assert (await response.json())["version"].replace(".", "").isdigit()
            async with http.get(base + "/files/read", params={"path": "/etc/passwd"}) as r:
                assert r.status == 404
        assert agent.proc is not None and agent.proc.returncode is None

    run_scenario(tmp_path, scenario)


PYMESOS_EXECUTOR = """
import threading
import pymesos


class Echo(pymesos.Executor):
    def launchTask(self, driver, task):
        def run():
            driver.sendStatusUpdate({"task_id": task["task_id"], "state": "TASK_RUNNING"})
            driver.sendStatusUpdate(
                {"task_id": task["task_id"], "state": "TASK_FINISHED", "message": "done"}
            )

        threading.Thread(target=run).start()

    def frameworkMessage(self, driver, data):
        driver.sendFrameworkMessage(data)


pymesos.MesosExecutorDriver(Echo(), use_addict=False).run()
"""


def test_custom_executor_pymesos_runs_task_relays_messages_and_shuts_down(tmp_path):
    require_module("pymesos")
    script = tmp_path / "echo_executor.py"
    script.write_text(PYMESOS_EXECUTOR)
    executor = {"executor_id": {"value": "pe"}, "command": {"value": f"{sys.executable} {script}"}}
    task = {
        "name": "p1",
        "task_id": {"value": "p1"},
        "agent_id": {"value": AID},
        "executor": executor,
    }

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await master.send({"type": "RUN_TASK", "framework": FRAMEWORK, "task": task})
        await wait_for(lambda: "TASK_FINISHED" in master.states("p1"), "TASK_FINISHED", 15)
        assert master.states("p1") == ["TASK_RUNNING", "TASK_FINISHED"]
        assert all(s["executor_id"] == {"value": "pe"} for s in master.updates("p1"))
        data = base64.b64encode(b"ping").decode()
        await master.send(
            {
                "type": "FRAMEWORK_MESSAGE",
                "framework_id": {"value": FID},
                "executor_id": {"value": "pe"},
                "data": data,
            }
        )
        (echo,) = await wait_for(lambda: master.of_type("EXECUTOR_MESSAGE"), "echo")
        assert echo["data"] == data and echo["executor_id"] == {"value": "pe"}
        await master.send(
            {
                "type": "SHUTDOWN_EXECUTOR",
                "framework_id": {"value": FID},
                "executor_id": {"value": "pe"},
            }
        )
        (exited,) = await wait_for(lambda: master.of_type("EXECUTOR_EXITED"), "exit", 10)
        assert exited["executor_id"] == {"value": "pe"}

    run_scenario(tmp_path, scenario)


def test_task_group_failure_kills_the_rest_of_the_group(tmp_path):
    def member(task_id: str, command: str) -> dict[str, Any]:
        return {
            "name": task_id,
            "task_id": {"value": task_id},
            "agent_id": {"value": AID},
            "command": {"value": command},
        }

    group = {
        "type": "RUN_TASK_GROUP",
        "framework": FRAMEWORK,
        "executor": {"executor_id": {"value": "g1"}, "type": "DEFAULT"},
        "task_group": {
            "tasks": [member("a", "echo a-out; sleep 100"), member("b", "sleep 0.5; exit 1")]
        },
    }

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await master.send(group)
        await wait_for(lambda: "TASK_FAILED" in master.states("b"), "b fails", 10)
        await wait_for(lambda: "TASK_KILLED" in master.states("a"), "a killed", 10)
        assert master.updates("b")[-1]["message"] == "Command exited with status 1"
        out = sandbox(tmp_path, "g1") / "tasks" / "a" / "stdout"
        assert out.read_text() == "a-out\n"

    run_scenario(tmp_path, scenario)


def test_a_group_member_that_cannot_start_ends_the_group(tmp_path):
    """Mesos' default executor: a member whose container fails to launch gets TASK_FAILED,
    and its restart policy then kills the rest of the group."""
    members = [
        {"name": "ok", "command": {"value": "sleep 100"}},
        {"name": "bad", "command": {"shell": False, "value": "/nonexistent/program"}},
    ]
    group = {
        "type": "RUN_TASK_GROUP",
        "framework": FRAMEWORK,
        "executor": {"executor_id": {"value": "g2"}, "type": "DEFAULT"},
        "task_group": {
            "tasks": [
                {**m, "task_id": {"value": m["name"]}, "agent_id": {"value": AID}} for m in members
            ]
        },
    }

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await master.send(group)
        await wait_for(lambda: "TASK_FAILED" in master.states("bad"), "bad fails", 10)
        assert master.updates("bad")[-1]["message"].startswith("Failed to launch task: ")
        await wait_for(lambda: "TASK_KILLED" in master.states("ok"), "ok killed", 10)

    run_scenario(tmp_path, scenario)


def test_max_completion_time_fails_the_task(tmp_path):
    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        limit = {"nanoseconds": 300_000_000}
        await master.run_task("m1", "sleep 100", max_completion_time=limit)
        await wait_for(lambda: "TASK_FAILED" in master.states("m1"), "TASK_FAILED", 10)
        failed = master.updates("m1")[-1]
        assert failed["reason"] == "REASON_MAX_COMPLETION_TIME_REACHED"

    run_scenario(tmp_path, scenario)


def zygote_pid(agent_pid: int) -> int | None:
    """The executor zygote among the agent's children."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read()
        except (OSError, ValueError, IndexError):
            continue
        if parent == agent_pid and b"executor.zygote" in cmdline:
            return int(name)
    return None


def test_agent_survives_the_executor_zygote_dying(tmp_path):
    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        assert agent.proc is not None
        await master.run_task("z1", "sleep 0.5")
        await wait_for(lambda: "TASK_RUNNING" in master.states("z1"), "z1 running")
        pid = zygote_pid(agent.proc.pid)
        assert pid is not None, "no zygote found"
        os.kill(pid, signal.SIGKILL)
        # The orphaned executor still finishes its task; new tasks start without the zygote.
        await wait_for(lambda: "TASK_FINISHED" in master.states("z1"), "z1 finished", 10)
        await master.run_task("z2", "echo after")
        await wait_for(lambda: "TASK_FINISHED" in master.states("z2"), "z2 finished", 10)
        assert (sandbox(tmp_path, "z2") / "stdout").read_text() == "after\n"
        assert master.states("z1") == ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]

    run_scenario(tmp_path, scenario, agent_flags=("--command_launcher=false",))


def test_executors_without_zygote(tmp_path):
    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        assert agent.proc is not None and zygote_pid(agent.proc.pid) is None
        await master.run_task("n1", "echo plain; exit 0")
        await wait_for(lambda: "TASK_FINISHED" in master.states("n1"), "n1 finished", 10)
        assert (sandbox(tmp_path, "n1") / "stdout").read_text() == "plain\n"

    flags = ("--executor_zygote=false", "--command_launcher=false")
    run_scenario(tmp_path, scenario, agent_flags=flags)


def test_ended_tasks_are_counted_after_their_framework_is_gone(tmp_path):
    """As Mesos' agent: slave/tasks_finished and the other terminal states are counters of
    tasks that ended, not of tasks whose executors the agent still holds."""

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await wait_for(lambda: master.ws is not None, "socket")
        await master.run_task("done1", "true")
        await wait_for(lambda: "TASK_FINISHED" in master.states("done1"), "TASK_FINISHED")
        await master.send({"type": "SHUTDOWN_FRAMEWORK", "framework_id": FRAMEWORK["id"]})
        url = f"http://127.0.0.1:{agent_port(master)}"
        async with aiohttp.ClientSession() as http:

            async def frameworks() -> list:
                async with http.get(url + "/state") as response:
                    return (await response.json())["frameworks"]

            deadline = time.monotonic() + 15
            while await frameworks():
                assert time.monotonic() < deadline, "the framework stayed"
                await asyncio.sleep(0.1)
            async with http.get(url + "/metrics/snapshot") as response:
                metrics = await response.json()
        assert metrics["slave/tasks_finished"] == 1.0

    run_scenario(tmp_path, scenario)
