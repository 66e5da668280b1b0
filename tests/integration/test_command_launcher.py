"""The command launcher (docs/design.md "The command launcher") with a real agent process
against the fake master of `test_agent_process`: a plain command task runs without an
executor process, its updates look as the command executor's do, kills honour the grace
period, the launcher's tasks survive an agent SIGKILL (ends during the downtime reported
after recovery), and a dead launcher fails its tasks as a dead executor would."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import test_isolation as iso
from test_agent_process import (
    AID,
    FID,
    FRAMEWORK,
    AgentProcess,
    FakeMaster,
    process_gone,
    run_scenario,
    sandbox,
    wait_for,
)
from test_agent_recovery import CHECKPOINTING, fixed_port, pid_of, reregistrations

pytestmark = pytest.mark.integration

cgroups_root = iso.cgroups_root  # the fixture, for the isolation test
KILLING = {**CHECKPOINTING, "capabilities": [{"type": "TASK_KILLING_STATE"}]}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def _launcher_pid(work: Path) -> int:
    for name in os.listdir("/proc"):
        if name.isdigit() and "butte.agent.executor.launcher" in _cmdline(int(name)):
            if str(work) in _cmdline(int(name)):
                return int(name)
    raise AssertionError("no command launcher running")


def test_plain_task_runs_without_an_executor_and_reports_like_one(tmp_path):
    pid_file = tmp_path / "pid"

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await wait_for(lambda: master.ws is not None, "socket")
        await master.run_task("t1", f"echo $$ > {pid_file}; echo out; echo err >&2; exit 3")
        await wait_for(lambda: "TASK_FAILED" in master.states("t1"), "TASK_FAILED")
        assert master.states("t1") == ["TASK_STARTING", "TASK_RUNNING", "TASK_FAILED"]
        for status in master.updates("t1"):
            assert status["source"] == "SOURCE_EXECUTOR"
            assert status["executor_id"] == {"value": "t1"}
            assert status["agent_id"] == {"value": AID}
        failed = master.updates("t1")[-1]
        assert failed["message"] == "Command exited with status 3"
        running = next(s for s in master.updates("t1") if s["state"] == "TASK_RUNNING")
        pid = int(pid_file.read_text())
        # The task itself leads the container's session: no executor process in between.
        assert running["container_status"]["executor_pid"] == pid
        box = sandbox(tmp_path, "t1")
        assert (box / "stdout").read_text() == "out\n"
        assert (box / "stderr").read_text() == "err\n"
        # The task gets default signal dispositions (the launcher ignores some itself).
        await master.run_task("sig", "grep -E '^Sig(Ign|Blk)' /proc/self/status")
        await wait_for(lambda: "TASK_FINISHED" in master.states("sig"), "sig finished")
        masks = (sandbox(tmp_path, "sig") / "stdout").read_text().split()
        # Signals 1-31 (32 and up are the C library's own).
        assert masks[0::2] == ["SigBlk:", "SigIgn:"], masks
        assert all(int(mask, 16) & 0x7FFFFFFF == 0 for mask in masks[1::2]), masks
        # A program that cannot be started fails the container's launch, with the reason.
        bad = {
            "name": "bad",
            "task_id": {"value": "bad"},
            "agent_id": {"value": AID},
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}}],
            "command": {"shell": False, "value": "/nonexistent/program", "arguments": ["x"]},
        }
        await master.send({"type": "RUN_TASK", "framework": FRAMEWORK, "task": bad})
        await wait_for(lambda: "TASK_FAILED" in master.states("bad"), "bad failed")
        failed = master.updates("bad")[-1]
        assert failed["reason"] == "REASON_CONTAINER_LAUNCH_FAILED", failed
        assert "/nonexistent/program" in failed["message"], failed
        # What the task leaves behind in its process group ends with it.
        left = tmp_path / "left"
        await master.run_task("bg", f"sleep 100 & echo $! > {left}; exit 0")
        await wait_for(lambda: "TASK_FINISHED" in master.states("bg"), "bg finished")
        leftover = await pid_of(left)
        await wait_for(lambda: process_gone(leftover), "the leftover killed")
        await master.run_task("t2", "true")
        await wait_for(lambda: "TASK_FINISHED" in master.states("t2"), "TASK_FINISHED")
        finished = master.updates("t2")[-1]
        assert finished["message"] == "Command exited with status 0"

    run_scenario(tmp_path, scenario)


async def kill_task(master: FakeMaster, task_id: str, grace_ns: int | None = None) -> None:
    message: dict = {
        "type": "KILL_TASK",
        "framework_id": {"value": FID},
        "task_id": {"value": task_id},
    }
    if grace_ns is not None:
        message["kill_policy"] = {"grace_period": {"nanoseconds": grace_ns}}
    await master.send(message)


def test_kill_sends_sigterm_then_sigkill_after_the_grace_period(tmp_path):
    pid_file, term_file = tmp_path / "pid", tmp_path / "term"
    # Ignores SIGTERM (noting it): only the SIGKILL after the grace period ends it.
    stubborn = (
        f"trap 'echo term > {term_file}' TERM; echo $$ > {pid_file}; while :; do sleep 0.05; done"
    )

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await master.run_task("g1", stubborn, framework=KILLING)
        await wait_for(lambda: "TASK_RUNNING" in master.states("g1"), "TASK_RUNNING")
        pid = await pid_of(pid_file)
        started = time.monotonic()
        await kill_task(master, "g1", grace_ns=1_500_000_000)
        await wait_for(lambda: "TASK_KILLED" in master.states("g1"), "TASK_KILLED", 15)
        elapsed = time.monotonic() - started
        assert term_file.exists(), "SIGTERM first"
        assert elapsed >= 1.4, f"killed after {elapsed:.2f}s, before the grace period"
        assert master.states("g1") == [
            "TASK_STARTING",
            "TASK_RUNNING",
            "TASK_KILLING",
            "TASK_KILLED",
        ]
        killed = master.updates("g1")[-1]
        assert killed["message"] == "Command terminated with signal Killed"
        assert killed["source"] == "SOURCE_EXECUTOR"
        await wait_for(lambda: process_gone(pid), "task gone")
        # A task that ends on SIGTERM ends at once, as TASK_KILLED.
        await master.run_task("g2", "sleep 100", framework=KILLING)
        await wait_for(lambda: "TASK_RUNNING" in master.states("g2"), "g2 running")
        await kill_task(master, "g2", grace_ns=30_000_000_000)
        await wait_for(lambda: "TASK_KILLED" in master.states("g2"), "g2 killed", 10)
        assert master.updates("g2")[-1]["message"] == "Command terminated with signal Terminated"

    run_scenario(tmp_path, scenario)


def test_tasks_survive_an_agent_sigkill_and_ends_meanwhile_are_reported(tmp_path):
    long_pid, short_pid, go = tmp_path / "long", tmp_path / "short", tmp_path / "go"
    port = fixed_port()

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await master.run_task(
            "long", f"echo $$ > {long_pid}; exec sleep 60", framework=CHECKPOINTING
        )
        # Ends (status 7) once told to, while the agent is down.
        waiting = f"echo $$ > {short_pid}; while [ ! -e {go} ]; do sleep 0.05; done; exit 7"
        await master.run_task("short", waiting, framework=CHECKPOINTING)
        await wait_for(
            lambda: all("TASK_RUNNING" in master.states(t) for t in ("long", "short")), "running"
        )
        pids = {"long": await pid_of(long_pid), "short": await pid_of(short_pid)}
        work = tmp_path / "work"
        launcher = _launcher_pid(work)
        await agent.kill()
        go.touch()
        await wait_for(lambda: process_gone(pids["short"]), "short task ended")
        assert not process_gone(pids["long"]) and not process_gone(launcher)
        await agent.start()
        await wait_for(lambda: reregistrations(master), "re-registration")
        await wait_for(
            lambda: "TASK_FAILED" in master.states("short"), "the end seen after recovery"
        )
        failed = master.updates("short")[-1]
        assert failed["message"] == "Command exited with status 7"
        assert failed["source"] == "SOURCE_EXECUTOR"
        assert master.states("short") == ["TASK_STARTING", "TASK_RUNNING", "TASK_FAILED"]
        # The running one is still running, reached through the same launcher, and killable.
        assert _launcher_pid(work) == launcher
        assert not process_gone(pids["long"])
        await kill_task(master, "long")
        await wait_for(lambda: "TASK_KILLED" in master.states("long"), "long killed after recovery")
        assert master.states("long") == ["TASK_STARTING", "TASK_RUNNING", "TASK_KILLED"]
        await wait_for(lambda: process_gone(pids["long"]), "long gone")
        # New tasks run through it too.
        await master.run_task("after", "echo after", framework=CHECKPOINTING)
        await wait_for(lambda: "TASK_FINISHED" in master.states("after"), "a task after recovery")
        assert (sandbox(tmp_path, "after") / "stdout").read_text() == "after\n"

    run_scenario(tmp_path, scenario, agent_flags=port)


def test_a_kill_goes_on_while_the_agent_restarts(tmp_path):
    """A framework without TASK_KILLING_STATE kills a task that ignores SIGTERM, and the
    agent dies before the grace period ends: the SIGKILL still comes when it ends (the
    launcher times it, as the command executor that outlives its agent does), and the next
    agent reports TASK_KILLED, not an exit of the task's own."""
    pid_file, term_file = tmp_path / "pid", tmp_path / "term"
    stubborn = (
        f"trap 'echo term > {term_file}' TERM; echo $$ > {pid_file}; while :; do sleep 0.05; done"
    )
    port = fixed_port()

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await master.run_task("k", stubborn, framework=CHECKPOINTING)
        await wait_for(lambda: "TASK_RUNNING" in master.states("k"), "TASK_RUNNING")
        pid = await pid_of(pid_file)
        started = time.monotonic()
        await kill_task(master, "k", grace_ns=2_000_000_000)
        await wait_for(term_file.exists, "SIGTERM")
        await agent.kill()
        await wait_for(lambda: process_gone(pid), "SIGKILL with the agent down", 15)
        elapsed = time.monotonic() - started
        assert 1.9 <= elapsed < 10, f"killed after {elapsed:.2f}s, not at the grace's end"
        await agent.start()
        await wait_for(lambda: "TASK_KILLED" in master.states("k"), "TASK_KILLED", 15)
        assert master.states("k") == ["TASK_STARTING", "TASK_RUNNING", "TASK_KILLED"]
        assert master.updates("k")[-1]["message"] == "Command terminated with signal Killed"

    run_scenario(tmp_path, scenario, agent_flags=port)


def test_without_checkpointing_an_agent_sigkill_kills_the_tasks(tmp_path):
    pid_file = tmp_path / "pid"

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await master.run_task("nc", f"echo $$ > {pid_file}; exec sleep 60")
        pid = await pid_of(pid_file)
        launcher = _launcher_pid(tmp_path / "work")
        await agent.kill()
        # As the command executor of a framework that does not checkpoint would.
        await wait_for(lambda: process_gone(pid), "task killed with its agent gone")
        # Nothing is left for a next agent: the launcher goes too.
        await wait_for(lambda: process_gone(launcher), "the launcher exits")

    run_scenario(tmp_path, scenario)


def test_a_dead_launcher_fails_its_tasks_like_a_dead_executor(tmp_path):
    pid_file = tmp_path / "pid"

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await master.run_task("c1", f"echo $$ > {pid_file}; exec sleep 60")
        await wait_for(lambda: "TASK_RUNNING" in master.states("c1"), "TASK_RUNNING")
        pid = await pid_of(pid_file)
        os.kill(_launcher_pid(tmp_path / "work"), signal.SIGKILL)
        await wait_for(lambda: "TASK_FAILED" in master.states("c1"), "TASK_FAILED")
        failed = master.updates("c1")[-1]
        assert failed["reason"] == "REASON_EXECUTOR_TERMINATED"
        assert failed["source"] == "SOURCE_AGENT"
        await wait_for(lambda: process_gone(pid), "its process killed")
        # Later tasks get executor processes and still run.
        await master.run_task("c2", "echo fine")
        await wait_for(lambda: "TASK_FINISHED" in master.states("c2"), "c2 finished", 15)
        assert (sandbox(tmp_path, "c2") / "stdout").read_text() == "fine\n"

    run_scenario(tmp_path, scenario)


def test_tasks_with_executor_side_features_still_get_an_executor(tmp_path):
    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        check = {
            "type": "COMMAND",
            "command": {"value": "true"},
            "delay_seconds": 0,
            "interval_seconds": 0.2,
        }
        await master.run_task("h1", "sleep 1", health_check=check)
        await wait_for(lambda: "TASK_FINISHED" in master.states("h1"), "h1 finished", 15)
        healthy = [s for s in master.updates("h1") if "healthy" in s]
        assert healthy and healthy[0]["healthy"] is True

    run_scenario(tmp_path, scenario)


def test_cgroups_and_pid_namespace_hold_for_launcher_tasks(tmp_path, cgroups_root):
    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await iso.run_task(master, "ns", "echo $$ > pid.txt; exec sleep 60")
        container = await wait_for(
            lambda: "TASK_RUNNING" in master.states("ns") and iso.container_of(master, "ns"),
            "running",
        )
        box = sandbox(tmp_path, "ns")
        await wait_for(lambda: (box / "pid.txt").exists(), "pid.txt")
        assert (box / "pid.txt").read_text().strip() == "1"  # its own pid namespace
        members = [
            int(p)
            for p in (iso.group(cgroups_root, "memory", container) / "cgroup.procs")
            .read_text()
            .split()
        ]
        launcher = _launcher_pid(tmp_path / "work")
        # The holder (the launcher's child, the session leader) and the task; no executor.
        assert any(_ppid(p) == launcher for p in members)
        assert not any("butte.agent.executor.command" in _cmdline(p) for p in members)
        await iso.run_task(master, "hog", "head -c 600000000 /dev/zero | tail > /dev/null")
        status = await wait_for(lambda: iso.terminal(master, "hog"), "the hog's end", 30)
        assert status["state"] == "TASK_FAILED"
        assert status["reason"] == "REASON_CONTAINER_LIMITATION_MEMORY"
        assert "Memory limit exceeded" in status["message"]
        assert master.states("ns") == ["TASK_STARTING", "TASK_RUNNING"]

    isolation = "cgroups/cpu,cgroups/mem,cgroups/pids,namespaces/pid"
    run_scenario(tmp_path, scenario, agent_flags=iso.flags(cgroups_root, isolation))


def test_an_oom_while_the_agent_is_down_is_reported_as_the_memory_limitation(
    tmp_path, cgroups_root
):
    go, pid_file = tmp_path / "go", tmp_path / "pid"
    hog = f"echo $$ > {pid_file}; while [ ! -e {go} ]; do sleep 0.05; done; "
    hog += "head -c 600000000 /dev/zero | tail > /dev/null"

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await iso.run_task(master, "oom", hog, framework=CHECKPOINTING)
        await wait_for(lambda: "TASK_RUNNING" in master.states("oom"), "running")
        pid = await pid_of(pid_file)
        await agent.kill()
        go.touch()
        await wait_for(lambda: process_gone(pid), "the task killed by the OOM killer", 30)
        await agent.start()
        status = await wait_for(lambda: iso.terminal(master, "oom"), "its end", 30)
        assert status["state"] == "TASK_FAILED", status
        assert status["reason"] == "REASON_CONTAINER_LIMITATION_MEMORY", status
        assert "Memory limit exceeded" in status["message"]

    flags = (*iso.flags(cgroups_root, "cgroups/mem"), *fixed_port())
    run_scenario(tmp_path, scenario, agent_flags=flags)


def test_the_launcher_process_protocol(tmp_path):
    """The launcher on its own: launch, signal, exit report, a bad line, a new connection's
    snapshot, claim (the unclaimed killed), stop."""
    import json
    import socket
    import subprocess

    from butte.agent.server import launcher_argv

    path = str(tmp_path / "launcher.sock")
    proc = subprocess.Popen([*launcher_argv(), path, "60"], start_new_session=True)

    def connect() -> tuple[socket.socket, Any]:
        deadline = time.monotonic() + 10
        while True:
            sock = socket.socket(socket.AF_UNIX)
            try:
                sock.connect(path)
                break
            except OSError:
                sock.close()
                assert time.monotonic() < deadline, "the launcher never listened"
                time.sleep(0.02)
        sock.settimeout(10)
        return sock, sock.makefile("rb")

    def launch(sock: socket.socket, task_id: str, command: str) -> None:
        box = tmp_path / task_id
        request = {
            "op": "launch",
            "id": task_id,
            "sandbox": str(box),
            "program": "/bin/sh",
            "argv": ["sh", "-c", command],
            "search": False,
            "env": {"PATH": "/usr/bin:/bin"},
            "checkpoint": True,
        }
        sock.sendall(json.dumps(request).encode() + b"\n")

    try:
        sock, lines = connect()
        assert json.loads(lines.readline()) == {"snapshot": [], "kills": True}
        sock.sendall(b"not json\n")  # logged and ignored
        launch(sock, "a", "echo hi; exec sleep 60")
        launch(sock, "b", "exec sleep 60")
        started = {m["id"]: m["pid"] for m in (json.loads(lines.readline()) for _ in "ab")}
        assert (tmp_path / "a" / "stdout").exists()
        assert os.getsid(started["a"]) == started["a"]  # a session of its own
        sock.sendall(json.dumps({"op": "signal", "id": "a", "signal": 15}).encode() + b"\n")
        assert json.loads(lines.readline()) == {"id": "a", "exit": signal.SIGTERM}
        # A kill of a task that ignores SIGTERM: SIGKILL when the grace ends, agent or not.
        launch(sock, "c", "trap 'echo term' TERM; while :; do sleep 0.05; done")
        assert json.loads(lines.readline())["id"] == "c"
        time.sleep(0.2)  # its trap is set
        sock.sendall(json.dumps({"op": "kill", "id": "c", "grace": 1.5}).encode() + b"\n")
        killed_at = time.monotonic()
        sock.close()
        # A new agent: what runs and what ended (and what is being killed); it claims "a"
        # and "c".
        sock, lines = connect()
        snapshot = {t["id"]: t for t in json.loads(lines.readline())["snapshot"]}
        assert snapshot["a"]["exit"] == signal.SIGTERM and "exit" not in snapshot["b"]
        assert snapshot["c"]["killed"] is True and 0 < snapshot["c"]["kill_in"] <= 1.5
        assert "killed" not in snapshot["b"]
        sock.sendall(json.dumps({"op": "claim", "ids": ["a", "c"]}).encode() + b"\n")
        assert json.loads(lines.readline()) == {"id": "c", "exit": signal.SIGKILL}
        assert time.monotonic() - killed_at >= 1.4
        assert (tmp_path / "c" / "stdout").read_text() == "term\n"  # SIGTERM came first
        deadline = time.monotonic() + 10
        while not process_gone(started["b"]):
            assert time.monotonic() < deadline, "the unclaimed task was not killed"
            time.sleep(0.02)
        sock.sendall(json.dumps({"op": "stop"}).encode() + b"\n")
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
