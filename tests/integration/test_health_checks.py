"""Health checks run by the built-in executor, with a real agent process against the fake
master of `test_agent_process`: COMMAND, HTTP and TCP probes, the grace period, probe
timeouts, and the kill after ``consecutive_failures``."""

from __future__ import annotations

import sys
import time
from typing import Any

import pytest
from test_agent_process import AgentProcess, FakeMaster, run_scenario, wait_for

from butte.cli.local import free_port

pytestmark = pytest.mark.integration

HEALTH_REASON = "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED"


def fast(kind: str, body: dict[str, Any], **timing: float) -> dict[str, Any]:
    """A health check probing every 0.2 s from the start, no grace, killed after 2 failures."""
    check = {
        "type": kind,
        kind.lower(): body,
        "delay_seconds": 0,
        "interval_seconds": 0.2,
        "timeout_seconds": 2,
        "grace_period_seconds": 0,
        "consecutive_failures": 2,
    }
    check.update(timing)
    return check


def health_updates(master: FakeMaster, task_id: str) -> list[dict[str, Any]]:
    return [s for s in master.updates(task_id) if s.get("reason") == HEALTH_REASON]


def distinct(statuses: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Statuses with retries of the same uuid removed."""
    seen: set[str] = set()
    out = []
    for status in statuses:
        if status["uuid"] not in seen:
            seen.add(status["uuid"])
            out.append(status)
    return out


def test_command_check_healthy_then_failing_kills_the_task(tmp_path):
    flag = tmp_path / "ok"
    flag.touch()
    check = fast("COMMAND", {"value": f"test -e {flag}"})

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await master.run_task("h1", "sleep 60", health_check=check)
        await wait_for(lambda: health_updates(master, "h1"), "healthy update")
        first = health_updates(master, "h1")[0]
        assert first["state"] == "TASK_RUNNING" and first["healthy"] is True
        assert first["container_status"]["executor_pid"] > 0
        flag.unlink()
        await wait_for(lambda: "TASK_KILLED" in master.states("h1"), "killed when unhealthy")
        reports = [s["healthy"] for s in distinct(health_updates(master, "h1"))]
        assert reports == [True, False, False], reports  # one report per counted failure
        killed = master.updates("h1")[-1]
        assert killed["state"] == "TASK_KILLED" and killed["healthy"] is False

    run_scenario(tmp_path, scenario)


def test_http_check_against_the_task_and_unwanted_status(tmp_path):
    port, other = free_port(), free_port()
    server = f"exec {sys.executable} -m http.server {{port}} --bind 127.0.0.1"

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        ok = fast("HTTP", {"port": port, "path": "/"}, grace_period_seconds=10)
        await master.run_task("w1", server.format(port=port), health_check=ok)
        await wait_for(lambda: health_updates(master, "w1"), "healthy over HTTP", 15)
        assert health_updates(master, "w1")[0]["healthy"] is True
        # 200 is not among the statuses this check accepts: unhealthy, then killed.
        picky = fast("HTTP", {"port": other, "path": "/", "statuses": [204]})
        await master.run_task("w2", server.format(port=other), health_check=picky)
        await wait_for(lambda: "TASK_KILLED" in master.states("w2"), "w2 killed", 15)
        assert all(s["healthy"] is False for s in health_updates(master, "w2"))
        assert "TASK_RUNNING" in master.states("w1") and "TASK_KILLED" not in master.states("w1")

    run_scenario(tmp_path, scenario)


def test_tcp_check_grace_period_ignores_early_failures(tmp_path):
    port = free_port()
    # The task opens its port only after a second: failures before that are in the grace.
    listen = (
        f'{sys.executable} -c "import socket,time;time.sleep(1);s=socket.socket();'
        f"s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('127.0.0.1',{port}));"
        's.listen();time.sleep(60)"'
    )

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        check = fast("TCP", {"port": port}, grace_period_seconds=5)
        started = time.monotonic()
        await master.run_task("t1", listen, health_check=check)
        await wait_for(lambda: health_updates(master, "t1"), "healthy over TCP", 15)
        assert time.monotonic() - started >= 1.0
        assert [s["healthy"] for s in distinct(health_updates(master, "t1"))] == [True]
        # Nothing listens here and there is no grace: two failures and the task is killed.
        closed = fast("TCP", {"port": free_port()})
        await master.run_task("t2", "sleep 60", health_check=closed)
        await wait_for(lambda: "TASK_KILLED" in master.states("t2"), "t2 killed", 15)
        assert master.updates("t2")[-1]["healthy"] is False

    run_scenario(tmp_path, scenario)


def test_probe_timeout_counts_as_failure(tmp_path):
    check = fast("COMMAND", {"value": "sleep 30"}, timeout_seconds=0.3)

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await master.run_task("s1", "sleep 60", health_check=check)
        await wait_for(lambda: "TASK_KILLED" in master.states("s1"), "killed", 15)
        reports = [s["healthy"] for s in distinct(health_updates(master, "s1"))]
        assert reports == [False, False], reports

    run_scenario(tmp_path, scenario)


def test_timeout_zero_means_no_timeout(tmp_path):
    """Mesos: ``timeout_seconds: 0`` is an infinite timeout, not an immediate one."""
    check = fast("COMMAND", {"value": "sleep 1"}, timeout_seconds=0, consecutive_failures=1)

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await master.run_task("z1", "sleep 60", health_check=check)
        await wait_for(lambda: health_updates(master, "z1"), "a health result", 15)
        assert health_updates(master, "z1")[0]["healthy"] is True
        assert "TASK_KILLED" not in master.states("z1")

    run_scenario(tmp_path, scenario)


def test_task_group_member_killed_by_its_health_check_ends_the_group(tmp_path):
    def member(task_id: str, **extra: Any) -> dict[str, Any]:
        return {
            "name": task_id,
            "task_id": {"value": task_id},
            "agent_id": {"value": "fm-S0"},
            "command": {"value": "sleep 60"},
            **extra,
        }

    failing = fast("COMMAND", {"value": "test -e healthy-marker"})
    group = {
        "type": "RUN_TASK_GROUP",
        "framework": {"user": "root", "name": "test", "id": {"value": "fm-0000"}},
        "executor": {"executor_id": {"value": "g1"}, "type": "DEFAULT"},
        "task_group": {"tasks": [member("sick", health_check=failing), member("well")]},
    }

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await master.send(group)
        await wait_for(lambda: "TASK_KILLED" in master.states("sick"), "sick killed", 15)
        await wait_for(lambda: "TASK_KILLED" in master.states("well"), "group ended", 15)
        assert master.updates("sick")[-1]["healthy"] is False
        # Mesos' default executor: once a member was unhealthy, every member's end says so.
        assert master.updates("well")[-1]["healthy"] is False

    run_scenario(tmp_path, scenario)
