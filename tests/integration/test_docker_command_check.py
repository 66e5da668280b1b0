"""COMMAND health checks and checks of DOCKER tasks run inside the task's container, with
``docker exec`` as in Mesos' Docker executor (docs/docker.md "Checks"): a real agent
(``--containerizers docker,mesos``) against the fake master of `test_agent_process`, and a
private Docker daemon (`butte.testing.docker`) loaded with the busybox test image. Each
command tests a path that only the task's own command created inside the container, so a
command run on the host would fail. Nothing is pulled; the agent's port is the kernel's
choice."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_agent_process import AID, FRAMEWORK, AgentProcess, FakeMaster, run_scenario, wait_for

from butte.testing.docker import DOCKER, Dockerd, dockerd

pytestmark = pytest.mark.integration

TERMINAL = ("TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR")
# The task's command makes the marker inside its container, then stays up.
MAKES_MARKER = "touch /only-in-container && exec sleep 120"


@pytest.fixture(scope="module")
def daemon() -> Iterator[tuple[Dockerd, str]]:
    with dockerd() as d:
        yield d, d.load_busybox()


def agent_flags(d: Dockerd) -> tuple[str, ...]:
    return ("--containerizers", "docker,mesos", "--docker", DOCKER, "--docker_socket", d.socket)


def docker_task(task_id: str, image: str, network: str = "HOST", **probes: Any) -> dict:
    return {
        "name": task_id,
        "task_id": {"value": task_id},
        "agent_id": {"value": AID},
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}},
        ],
        "command": {
            "value": MAKES_MARKER,
            "environment": {"variables": [{"name": "TASK_VAR", "value": "from-the-task"}]},
        },
        "container": {"type": "DOCKER", "docker": {"image": image, "network": network}},
        **probes,
    }


def command_probe(command: dict, **timing: float) -> dict:
    """A COMMAND health check (``consecutive_failures`` etc. in ``timing``), probing at once
    and every second."""
    return {
        "type": "COMMAND",
        "command": command,
        "delay_seconds": 0,
        "interval_seconds": 1,
        "timeout_seconds": 10,
        **timing,
    }


async def launch(master: FakeMaster, task: dict) -> None:
    await master.send({"type": "RUN_TASK", "framework": FRAMEWORK, "task": task})


def first(master: FakeMaster, task_id: str, **fields: Any) -> dict | None:
    """The task's first update whose top-level fields have these values."""
    for status in master.updates(task_id):
        if all(status.get(k) == v for k, v in fields.items()):
            return status
    return None


def terminal(master: FakeMaster, task_id: str) -> dict | None:
    return next((s for s in master.updates(task_id) if s["state"] in TERMINAL), None)


def exec_exit_code(master: FakeMaster, task_id: str, code: int) -> dict | None:
    for status in master.updates(task_id):
        if (status.get("check_status") or {}).get("command", {}).get("exit_code") == code:
            return status
    return None


def container_processes(d: Dockerd, master: FakeMaster, task_id: str) -> str:
    running = first(master, task_id, state="TASK_RUNNING")
    assert running is not None
    name = "mesos-" + running["container_status"]["container_id"]["value"]
    return d.docker("top", name, check=False)


def test_docker_command_checks_run_in_the_container(
    tmp_path: Path, daemon: tuple[Dockerd, str]
) -> None:
    """Healthy and unhealthy COMMAND health checks (the latter killing the task after its
    consecutive failures), a COMMAND check's exit code in ``check_status``, on the host's
    network and on none: every command runs in the container, with the container's and the
    probe's own environment."""
    d, image = daemon
    assert not Path("/only-in-container").exists()  # a probe on the host would fail

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        in_container = (
            'test -f /only-in-container && test "$TASK_VAR" = from-the-task && '
            'test "$PROBE_VAR" = from-the-probe'
        )
        probe_env = {"variables": [{"name": "PROBE_VAR", "value": "from-the-probe"}]}
        healthy = command_probe({"value": in_container, "environment": probe_env})
        await launch(master, docker_task("healthy", image, health_check=healthy))
        sick = command_probe(
            {"value": "test -f /no-such-path"}, consecutive_failures=2, grace_period_seconds=0
        )
        await launch(master, docker_task("sick", image, network="NONE", health_check=sick))
        # Not a shell: value, then arguments, as `docker run` takes them.
        argv = {"shell": False, "value": "sh", "arguments": ["-c", "test -f /only-in-container"]}
        check = {"type": "COMMAND", "command": {"command": argv}, "delay_seconds": 0}
        await launch(master, docker_task("checked", image, network="NONE", check=check))
        failing = {"value": "test -f /only-in-container && exit 7"}
        check = {"type": "COMMAND", "command": {"command": failing}, "interval_seconds": 1}
        await launch(master, docker_task("checked-7", image, check=check))

        status = await wait_for(
            lambda: first(master, "healthy", healthy=True), "healthy to be healthy", 60
        )
        assert status["state"] == "TASK_RUNNING"
        assert status["reason"] == "REASON_TASK_HEALTH_CHECK_STATUS_UPDATED"
        assert first(master, "healthy", healthy=False) is None

        status = await wait_for(lambda: first(master, "sick", healthy=False), "sick unhealthy", 60)
        assert status["state"] == "TASK_RUNNING"
        end = await wait_for(lambda: terminal(master, "sick"), "sick to be killed", 60)
        assert end["state"] == "TASK_KILLED" and end["healthy"] is False, end

        status = await wait_for(lambda: exec_exit_code(master, "checked", 0), "exit code 0", 60)
        assert status["check_status"]["type"] == "COMMAND"
        assert status["reason"] == "REASON_TASK_CHECK_STATUS_UPDATED"
        await wait_for(lambda: exec_exit_code(master, "checked-7", 7), "exit code 7", 60)
        for task_id in ("healthy", "checked", "checked-7"):
            assert terminal(master, task_id) is None, master.updates(task_id)

    run_scenario(tmp_path, scenario, agent_flags=agent_flags(d))


async def probe_killed(d: Dockerd, master: FakeMaster, task_id: str, command: str) -> None:
    """Waits for the task's probe running ``command`` to show in its container, then for it
    to be gone well before the command's own end."""
    await wait_for(lambda: first(master, task_id, state="TASK_RUNNING"), "running", 60)
    await wait_for(lambda: command in container_processes(d, master, task_id), "the probe", 30)
    seen = time.monotonic()
    await wait_for(
        lambda: command not in container_processes(d, master, task_id),
        f"the {command} of {task_id} to be killed",
        15,
    )
    assert time.monotonic() - seen < 10  # not the end of the sleep itself


def test_docker_command_check_timeout_kills_the_command_in_the_container(
    tmp_path: Path, daemon: tuple[Dockerd, str]
) -> None:
    """A COMMAND check or health check past its timeout is killed in the container too, not
    only its ``docker exec`` client: Docker itself would leave the command running."""
    d, image = daemon

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        # One probe each (a long interval), 1 s after the start, killed after 3 s.
        timing = {"delay_seconds": 1, "interval_seconds": 300, "timeout_seconds": 3}
        slow = {"value": "sleep 37; true"}
        check = {"type": "COMMAND", "command": {"command": slow}, **timing}
        health = command_probe({"value": "sleep 38; true"}, grace_period_seconds=0, **timing)
        for task_id, probe, command in (
            ("slow-check", {"check": check}, "sleep 37"),
            ("slow-health", {"health_check": health}, "sleep 38"),
        ):
            await launch(master, docker_task(task_id, image, **probe))
            await probe_killed(d, master, task_id, command)
        status = await wait_for(
            lambda: first(master, "slow-health", healthy=False), "unhealthy on timeout", 30
        )
        assert status["state"] == "TASK_RUNNING"
        # Timed out: no exit code, as in Mesos.
        assert exec_exit_code(master, "slow-check", 0) is None

    run_scenario(tmp_path, scenario, agent_flags=agent_flags(d))
