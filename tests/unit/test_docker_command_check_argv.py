"""The ``docker exec`` command line of a COMMAND check or health check of a DOCKER task, as
Mesos' checker wraps the command, and the killing of what such a command left running (real
processes). The checks themselves, with a real Docker daemon:
tests/integration/test_docker_command_check.py."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from butte.agent.executor import command
from butte.agent.executor import docker as docker_executor

CLIENT = ["/usr/bin/docker", "-H", "unix:///run/d.sock"]


def test_a_shell_command_runs_under_sh_in_the_container() -> None:
    argv = docker_executor.exec_argv(CLIENT, "mesos-c1", {"value": "test -f /x && echo $A"}, [])
    assert argv == [*CLIENT, "exec", "mesos-c1", "sh", "-c", "test -f /x && echo $A"]


def test_a_plain_command_is_its_value_then_its_arguments_as_docker_run_takes_them() -> None:
    command = {"shell": False, "value": "curl", "arguments": ["-f", "http://localhost/"]}
    argv = docker_executor.exec_argv(CLIENT, "mesos-c1", command, [])
    assert argv[len(CLIENT) :] == ["exec", "mesos-c1", "curl", "-f", "http://localhost/"]
    # Without a value, the arguments alone are the command.
    command = {"shell": False, "arguments": ["ls", "/"]}
    argv = docker_executor.exec_argv(CLIENT, "mesos-c1", command, [])
    assert argv[len(CLIENT) :] == ["exec", "mesos-c1", "ls", "/"]


def test_variables_are_named_never_given_their_values_on_the_command_line() -> None:
    argv = docker_executor.exec_argv(CLIENT, "mesos-c1", {"value": "true"}, ["A", "TOKEN"])
    assert argv[len(CLIENT) :] == ["exec", "--env=A", "--env=TOKEN", "mesos-c1", "sh", "-c", "true"]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_kill_tree_kills_a_process_and_everything_under_it() -> None:
    # A shell with a child and a grandchild; each writes its pid once started.
    script = "sleep 60 & echo $!; sh -c 'sleep 60 & echo $!; wait' & wait"
    proc = subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    below = [int(proc.stdout.readline()), int(proc.stdout.readline())]
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        docker_executor.kill_tree(proc.pid)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in below) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(p) for p in below)
        assert bystander.poll() is None  # not under it: untouched
    finally:
        bystander.kill()
        bystander.wait()
        for pid in below:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


def fake_client_executor(tmp_path: Path) -> docker_executor.DockerExecutor:
    """A Docker executor whose "docker" client is a script that prints its arguments and
    ``$PROBE_VAR`` and exits 3, as a failing ``docker exec`` would."""
    client = tmp_path / "docker"
    client.write_text('#!/bin/sh\necho "$*"\necho "PROBE_VAR=$PROBE_VAR"\nexit 3\n')
    client.chmod(0o755)
    environ = {
        "MESOS_AGENT_ENDPOINT": "127.0.0.1:1",
        "MESOS_FRAMEWORK_ID": "f",
        "MESOS_EXECUTOR_ID": "e",
        "MESOS_SANDBOX": str(tmp_path),
        docker_executor.NAME_ENV: "mesos-c1",
        docker_executor.DOCKER_ENV: str(client),
        docker_executor.SOCKET_ENV: "/run/d.sock",
    }
    return docker_executor.DockerExecutor(environ)


def test_the_executor_runs_the_client_with_the_probes_variables_in_its_environment(
    tmp_path: Path,
) -> None:
    ex = fake_client_executor(tmp_path)
    container = {"type": "DOCKER", "docker": {"image": "busybox", "network": "HOST"}}
    info = {"task_id": {"value": "t1"}, "command": {"value": "true"}, "container": container}
    task = command.TaskProcess(info, False)
    variables = [{"name": "PROBE_VAR", "value": "secret value"}]
    probe = {"value": "test -f /x", "environment": {"variables": variables}}
    read_end, write_end = os.pipe()
    try:
        pid = ex._spawn_probe(task, "COMMAND", "/bin/sh", ["sh"], False, write_end, probe)
        os.close(write_end)
        _, status = os.waitpid(pid, 0)
        with os.fdopen(read_end) as out:
            lines = out.read().splitlines()
    finally:
        ex.execs.pop(pid, None)
    assert os.waitstatus_to_exitcode(status) == 3  # the client's status is the result
    # the value is only in the client's environment, never on its command line
    assert lines == [
        "-H unix:///run/d.sock exec --env=PROBE_VAR mesos-c1 sh -c test -f /x",
        "PROBE_VAR=secret value",
    ]


def test_a_variable_no_environment_can_hold_fails_the_probe_not_the_executor(
    tmp_path: Path,
) -> None:
    ex = fake_client_executor(tmp_path)
    info = {"task_id": {"value": "t1"}, "command": {"value": "true"}}
    task = command.TaskProcess(info, False)
    bad = {"value": "true", "environment": {"variables": [{"name": "A=B", "value": "x"}]}}
    with pytest.raises(OSError, match="cannot run docker exec"):
        ex._spawn_probe(task, "COMMAND", "/bin/sh", ["sh"], False, None, bad)
