"""TaskInfo.check (COMMAND, HTTP, TCP) with a real agent and executor against the fake master
of `test_agent_process`: results arrive as ``check_status`` in status updates when they
change; an invalid check is refused at launch."""

from __future__ import annotations

import os
import sys

import pytest
from test_agent_process import AID, FRAMEWORK, AgentProcess, FakeMaster, run_scenario, wait_for

from butte.testing.cluster import free_port
from butte.testing.require import require

pytestmark = pytest.mark.integration
PYTHON = os.path.realpath(sys.executable)


async def run_checked(
    master: FakeMaster, task_id: str, command: str, check: dict, framework: dict = FRAMEWORK
) -> None:
    task = {
        "name": task_id,
        "task_id": {"value": task_id},
        "agent_id": {"value": AID},
        "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}}],
        "command": {"value": command},
        "check": {"delay_seconds": 0, "interval_seconds": 0.2, "timeout_seconds": 5, **check},
    }
    await master.send({"type": "RUN_TASK", "framework": framework, "task": task})


def check_updates(master: FakeMaster, task_id: str) -> list[dict]:
    return [
        s for s in master.updates(task_id) if s.get("reason") == "REASON_TASK_CHECK_STATUS_UPDATED"
    ]


def first(master: FakeMaster, task_id: str, state: str) -> dict:
    return next(s for s in master.updates(task_id) if s["state"] == state)


def test_command_http_and_tcp_checks_report_check_status(tmp_path):
    port = free_port()
    server = f"exec {PYTHON} -m http.server {port} --bind 127.0.0.1"

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        command_check = {"type": "COMMAND", "command": {"command": {"value": "exit 3"}}}
        ok = {"command": {"value": "exit 0"}}
        await run_checked(master, "cmd", "sleep 60", command_check)
        await run_checked(master, "web", server, {"type": "HTTP", "http": {"port": port}})
        await run_checked(master, "tcp", "sleep 60", {"type": "TCP", "tcp": {"port": port}})
        await run_checked(master, "short", "sleep 2", {**command_check, "command": ok})
        await wait_for(lambda: all(check_updates(master, t) for t in ("cmd", "tcp")), "checks")
        # Every update of a task with a check carries its last check_status (Mesos'
        # TaskStatus): empty, of the check's type, before the first result.
        starting, running = (first(master, "cmd", s) for s in ("TASK_STARTING", "TASK_RUNNING"))
        assert (
            starting["check_status"]
            == running["check_status"]
            == {
                "type": "COMMAND",
                "command": {},
            }
        )
        cmd = check_updates(master, "cmd")[0]
        assert cmd["state"] == "TASK_RUNNING"
        assert cmd["check_status"] == {"type": "COMMAND", "command": {"exit_code": 3}}
        # Nothing changed afterwards: no more updates for the same result.
        assert len(check_updates(master, "cmd")) == 1
        # The server may not listen yet at the first probe; it does soon after.
        await wait_for(
            lambda: any(
                u["check_status"]["http"].get("status_code") == 200
                for u in check_updates(master, "web")
            ),
            "HTTP 200",
            20,
        )
        await wait_for(
            lambda: any(
                u["check_status"]["tcp"]["succeeded"] for u in check_updates(master, "tcp")
            ),
            "TCP connect",
            20,
        )
        # The terminal update is made from scratch, as Mesos' executors make it: its
        # check_status is empty again.
        await wait_for(
            lambda: any(u["state"] == "TASK_FINISHED" for u in master.updates("short")),
            "short's end",
            20,
        )
        assert check_updates(master, "short")[0]["check_status"]["command"] == {"exit_code": 0}
        finished = first(master, "short", "TASK_FINISHED")
        assert finished["check_status"] == {"type": "COMMAND", "command": {}}

    run_scenario(tmp_path, scenario)


def test_check_with_timeout_zero_and_a_health_check(tmp_path):
    """``timeout_seconds: 0`` means no timeout (Mesos); a check update repeats the
    ``healthy`` of the task's last update, and a health update carries the last check
    result, as both are made from the task's last status in Mesos' executors."""
    slow = {"type": "COMMAND", "command": {"command": {"value": "sleep 1; exit 4"}}}
    health = {
        "type": "COMMAND",
        "command": {"value": "true"},
        "delay_seconds": 0,
        "interval_seconds": 60,
        "grace_period_seconds": 0,
    }

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        task = {
            "name": "z",
            "task_id": {"value": "z"},
            "agent_id": {"value": AID},
            "command": {"value": "sleep 60"},
            "check": {**slow, "delay_seconds": 0.5, "interval_seconds": 0.2, "timeout_seconds": 0},
            "health_check": health,
        }
        await master.send({"type": "RUN_TASK", "framework": FRAMEWORK, "task": task})
        await wait_for(lambda: check_updates(master, "z"), "the check's result", 15)
        (result,) = check_updates(master, "z")
        assert result["check_status"] == {"type": "COMMAND", "command": {"exit_code": 4}}
        # The health result (probed at once) came first: the check update repeats it.
        assert result["healthy"] is True

    run_scenario(tmp_path, scenario)


def test_an_invalid_check_is_refused_with_task_error(tmp_path):
    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await run_checked(master, "bad", "sleep 1", {"type": "HTTP", "http": {"port": 0}})
        await wait_for(lambda: master.updates("bad"), "an update")
        (status,) = master.updates("bad")
        assert status["state"] == "TASK_ERROR"
        assert status["message"].startswith("Task uses invalid check: ")

    run_scenario(tmp_path, scenario)


def test_a_task_being_killed_gets_no_more_check_updates(tmp_path):
    """As Mesos' executors do, a kill stops the task's checks: while the task takes its time
    to end after SIGTERM, its check (whose result flips every 0.2 s) reports nothing more."""
    framework = {**FRAMEWORK, "capabilities": [{"type": "TASK_KILLING_STATE"}]}
    flipping = "test $(( $(date +%s%N) / 200000000 % 2 )) -eq 0"
    command = "trap 'sleep 2; exit 0' TERM; while :; do sleep 0.1; done"

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        check = {"type": "COMMAND", "command": {"command": {"value": flipping}}}
        await run_checked(master, "k", command, check, framework)
        await wait_for(lambda: len(check_updates(master, "k")) >= 3, "changing check results")
        kill = {"type": "KILL_TASK", "framework_id": FRAMEWORK["id"], "task_id": {"value": "k"}}
        await master.send(kill)
        await wait_for(lambda: "TASK_KILLED" in master.states("k"), "TASK_KILLED", 15)
        states = [(s["state"], s.get("reason")) for s in master.updates("k")]
        after_kill = states[states.index(("TASK_KILLING", None)) :]
        assert after_kill[-1][0] == "TASK_KILLED", states
        assert [s for s in after_kill if s[1] == "REASON_TASK_CHECK_STATUS_UPDATED"] == []

    run_scenario(tmp_path, scenario)


def test_checks_reach_a_task_in_its_own_network_namespace(tmp_path):
    """With network/loopback the task's 127.0.0.1 is its own: probes join its namespaces."""
    if os.geteuid() != 0:
        require("the test runs as root only (namespaces)", "root")
    port = free_port()
    server = f"exec {PYTHON} -m http.server {port} --bind 127.0.0.1"

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await run_checked(master, "web", server, {"type": "HTTP", "http": {"port": port}})
        # A COMMAND probe joins the task's mount namespace, whose root it starts in unless
        # it is moved to the sandbox, where Mesos runs it (and where the task's stdout is).
        in_sandbox = {"command": {"value": "test -e stdout"}}
        await run_checked(master, "where", "sleep 60", {"type": "COMMAND", "command": in_sandbox})
        await wait_for(
            lambda: any(
                u["check_status"]["http"].get("status_code") == 200
                for u in check_updates(master, "web")
            ),
            "HTTP 200 from inside the task's namespace",
            60,
        )
        await wait_for(lambda: check_updates(master, "where"), "the COMMAND check's result", 30)
        where = check_updates(master, "where")[0]["check_status"]
        assert where == {"type": "COMMAND", "command": {"exit_code": 0}}

    flags = ("--isolation", "network/loopback,namespaces/pid,filesystem/linux")
    run_scenario(tmp_path, scenario, agent_flags=flags)


@pytest.mark.parametrize("isolation", ["posix/cpu,posix/mem", "namespaces/pid,filesystem/linux"])
def test_command_probes_run_as_the_tasks_user(tmp_path, isolation):
    """Mesos' executor runs as the task's user and so do its probes: a COMMAND check and a
    COMMAND health check of a task switched to ``nobody`` are ``nobody`` too."""
    if os.geteuid() != 0:
        require("the test runs as root only (switching users)", "root")
    as_nobody = {"command": {"value": 'test "$(id -un)" = nobody && test -e stdout'}}
    nobody = {**FRAMEWORK, "user": "nobody"}

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        check = {"type": "COMMAND", "command": as_nobody}
        await run_checked(master, "who", "sleep 60", check, framework=nobody)
        await wait_for(lambda: check_updates(master, "who"), "the check's result", 30)
        assert check_updates(master, "who")[0]["check_status"]["command"] == {"exit_code": 0}
        health = {
            "type": "COMMAND",
            "command": as_nobody["command"],
            "delay_seconds": 0,
            "interval_seconds": 0.2,
            "consecutive_failures": 1,
        }
        task = {
            "name": "healthy",
            "task_id": {"value": "healthy"},
            "agent_id": {"value": AID},
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}}],
            "command": {"value": "sleep 60"},
            "health_check": health,
        }
        await master.send({"type": "RUN_TASK", "framework": nobody, "task": task})
        await wait_for(
            lambda: any("healthy" in u for u in master.updates("healthy")), "a health result", 30
        )
        assert [u["healthy"] for u in master.updates("healthy") if "healthy" in u][0] is True

    run_scenario(tmp_path, scenario, agent_flags=("--isolation", isolation, "--switch_user"))
