"""DOCKER containers in the agent core (refused without the docker containerizer, refused
when invalid, routed to the Docker executor otherwise) and the `docker run` command line
(butte.core.docker_info)."""

from __future__ import annotations

import argparse
import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from butte.agent.containerizer.docker import add_docker_flags, options_from_args
from butte.agent.executor import docker as docker_executor
from butte.core import docker_info, internal
from butte.core import task_states as ts
from tests.unit.agent_kit import Harness, command_task, run

DOCKER_ARGV = ("python", "-m", "butte.agent.executor.docker")


def docker_task(task_id: str = "t1", cmd: str = "echo hi", **docker: Any) -> Any:
    info = {"image": "busybox:1", **docker}
    return command_task(task_id, cmd, container={"type": "DOCKER", "docker": info})


def docker_agent(**config: Any) -> Harness:
    config.setdefault("containerizers", ("mesos", "docker"))
    h = Harness(
        docker_executor_argv=DOCKER_ARGV,
        docker_environment={"BUTTE_DOCKER_EXECUTOR_SOCKET": "/run/d.sock"},
        **config,
    )
    h.register()
    return h


def test_docker_task_without_docker_containerizer_fails_and_never_launches():
    h = Harness()
    h.register()
    run(h, docker_task())
    assert not h.launched
    (update,) = h.updates()
    assert update.state == ts.FAILED and update.reason == "REASON_CONTAINER_LAUNCH_FAILED"
    assert "--containerizers=mesos" in (update.message or "")
    assert "DOCKER" in (update.message or "")


def test_docker_asked_for_but_daemon_unreachable_says_why():
    h = Harness(docker_unavailable="the Docker daemon at /x.sock is not reachable (refused)")
    h.register()
    run(h, docker_task())
    assert not h.launched
    (update,) = h.updates()
    assert update.state == ts.FAILED
    assert "/x.sock is not reachable" in (update.message or "")


def test_docker_task_goes_to_the_docker_executor_not_the_zygote():
    h = docker_agent()
    run(h, docker_task())
    (launch,) = h.launched.values()
    assert launch.argv == DOCKER_ARGV and not launch.builtin
    assert launch.containerizer == "docker"
    assert launch.env["BUTTE_DOCKER_EXECUTOR_NAME"] == f"mesos-{launch.container_id}"
    assert launch.env["BUTTE_DOCKER_EXECUTOR_SOCKET"] == "/run/d.sock"
    run(h, command_task("plain"))
    plain = h.launched[[c for c, e in h.launched.items() if e.executor_id == "plain"][0]]
    assert plain.containerizer == "mesos" and plain.builtin


@pytest.mark.parametrize(
    ("container", "words"),
    [
        ({"type": "DOCKER"}, "needs 'docker'"),
        ({"type": "DOCKER", "docker": {"image": ""}}, "docker.image"),
        ({"type": "DOCKER", "docker": {"image": "-v /:/x"}}, "not an image name"),
        ({"type": "DOCKER", "docker": {"image": "../../etc/passwd"}}, "not an image name"),
        ({"type": "DOCKER", "docker": {"image": "a?b=1"}}, "not an image name"),
        ({"type": "DOCKER", "docker": {"image": "a", "network": "WIFI"}}, "docker.network"),
        ({"type": "DOCKER", "docker": {"image": "a", "network": "USER"}}, "docker.network"),
        (
            {
                "type": "DOCKER",
                "docker": {"image": "a", "parameters": [{"key": "pid", "value": "host"}]},
            },
            "'pid' is not allowed",
        ),
        (
            {"type": "DOCKER", "docker": {"image": "a", "parameters": [{"key": "cap-add"}]}},
            "not allowed",
        ),
        (
            {
                "type": "DOCKER",
                "docker": {
                    "image": "a",
                    "port_mappings": [{"host_port": 31000, "container_port": 80}],
                },
            },
            "need network BRIDGE",
        ),
        (
            {
                "type": "DOCKER",
                "docker": {
                    "image": "a",
                    "network": "BRIDGE",
                    "port_mappings": [{"host_port": 8080, "container_port": 80}],
                },
            },
            "not among the task's port resources",
        ),
        (
            {
                "type": "DOCKER",
                "docker": {"image": "a"},
                "volumes": [{"container_path": "/d", "host_path": "/tmp/../etc", "mode": "RW"}],
            },
            "'..'",
        ),
        ({"type": "DOCKER", "docker": {"image": "a", "privileged": "yes"}}, "privileged"),
        ({"type": "WINDOWS"}, "Unsupported ContainerInfo type"),
    ],
)
def test_invalid_docker_container_is_task_error(container: dict, words: str):
    h = docker_agent()
    run(h, command_task("t1", container=container))
    assert not h.launched
    (update,) = h.updates()
    assert update.state == ts.ERROR and update.reason == "REASON_TASK_INVALID"
    assert words in (update.message or ""), update.message


def test_docker_only_agent_refuses_plain_tasks():
    h = docker_agent(containerizers=("docker",))
    run(h, command_task("plain"))
    assert not h.launched
    (update,) = h.updates()
    assert update.state == ts.FAILED and "only DOCKER containers" in (update.message or "")
    run(h, docker_task("d"))
    assert [e.containerizer for e in h.launched.values()] == ["docker"]


def test_command_health_checks_and_checks_of_docker_tasks_are_launched():
    """The Docker executor runs them in the container (docker exec), as Mesos'."""
    h = docker_agent()
    container = {"type": "DOCKER", "docker": {"image": "a"}}
    health = {"type": "COMMAND", "command": {"value": "true"}}
    run(h, command_task("t1", container=container, health_check=health))
    check = {"type": "COMMAND", "command": {"command": {"value": "true"}}}
    run(h, command_task("t2", container=container, check=check))
    assert not h.updates()
    assert [e.containerizer for e in h.launched.values()] == ["docker", "docker"]


def test_flags_parse_mesos_spellings():
    parser = argparse.ArgumentParser()
    add_docker_flags(parser)
    args = parser.parse_args(
        ["--containerizers", "docker,mesos", "--docker_stop_timeout", "5secs",
         "--docker_kill_orphans=false"]
    )  # fmt: skip
    options = options_from_args(args)
    assert options.containerizers == ("docker", "mesos") and options.wanted
    assert options.docker_stop_timeout == 5.0 and not options.docker_kill_orphans
    assert options_from_args(parser.parse_args([])).containerizers == ("mesos",)
    with pytest.raises(SystemExit):
        parser.parse_args(["--containerizers", "mesos,lxc"])


PORTS = {"range": [{"begin": 31000, "end": 31001}]}


def _task(**extra: Any) -> dict[str, Any]:
    return {
        "task_id": {"value": "t1"},
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": 64}},
            {"name": "ports", "type": "RANGES", "ranges": PORTS},
        ],
        "command": {"value": "echo hi"},
        "container": {"type": "DOCKER", "docker": {"image": "img:1"}},
        **extra,
    }  # fmt: skip


def test_run_argv_limits_network_sandbox_env_and_shell_command():
    argv = docker_info.run_argv(
        ["docker", "-H", "unix:///s"], "mesos-c1", _task(), "/sb", {"A": "1"}
    )
    assert argv[:4] == ["docker", "-H", "unix:///s", "run"]
    assert "--name=mesos-c1" in argv and "--pull=never" in argv
    assert "--cpu-shares=512" in argv and f"--memory={64 * 1024 * 1024}" in argv
    assert "--network=host" in argv
    assert "--volume=/sb:/mnt/mesos/sandbox:rw" in argv and "--env=A=1" in argv
    assert argv[-4:] == ["--entrypoint=/bin/sh", "img:1", "-c", "echo hi"]


def test_run_argv_bridge_ports_parameters_volumes_and_plain_command():
    container = {
        "type": "DOCKER",
        "docker": {
            "image": "img:1",
            "network": "BRIDGE",
            "port_mappings": [{"host_port": 31001, "container_port": 80, "protocol": "udp"}],
            "parameters": [{"key": "label", "value": "a=b"}],
            "privileged": True,
        },
        "volumes": [
            {"container_path": "/data", "host_path": "/srv/data", "mode": "RO"},
            {"container_path": "cache", "host_path": "cache", "mode": "RW"},
        ],
    }
    task = _task(container=container, command={"shell": False, "value": "ls", "arguments": ["-l"]})
    assert docker_info.launch_problem(task, False) is None
    argv = docker_info.run_argv(["docker"], "mesos-c1", task, "/sb", {})
    assert "--network=bridge" in argv and "--publish=31001:80/udp" in argv
    assert "--label=a=b" in argv and "--privileged" in argv
    assert "--volume=/srv/data:/data:ro" in argv
    assert "--volume=/sb/cache:/mnt/mesos/sandbox/cache:rw" in argv
    assert argv[-3:] == ["img:1", "ls", "-l"]  # the image's entrypoint stays
    assert not any(a.startswith("--entrypoint") for a in argv)


def test_a_hostname_is_set_except_on_the_hosts_network():
    """Mesos' docker containerizer: --hostname, refused with the host's network."""
    bridge = {"type": "DOCKER", "hostname": "web-1.example", "docker": {"image": "img:1"}}
    bridge["docker"]["network"] = "NONE"
    task = _task(container=bridge)
    assert docker_info.launch_problem(task, False) is None
    assert "--hostname=web-1.example" in docker_info.run_argv(["docker"], "n", task, "/sb", {})
    host = {**bridge, "docker": {"image": "img:1", "network": "HOST"}}
    assert docker_info.launch_problem(_task(container=host), False) == (
        "Unable to set hostname with host network mode"
    )
    for bad in ("-x", "a..b", "x" * 64, "a_b", 7, ""):
        problem = docker_info.launch_problem(_task(container={**bridge, "hostname": bad}), False)
        assert problem is not None and "not a valid hostname" in problem, bad


def test_a_kill_without_policy_gets_the_executor_shutdown_grace_as_in_mesos():
    environ = {
        "MESOS_AGENT_ENDPOINT": "127.0.0.1:1",
        "MESOS_FRAMEWORK_ID": "f",
        "MESOS_EXECUTOR_ID": "e",
        docker_executor.NAME_ENV: "mesos-c1",
        "MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD": "5secs",
    }
    assert docker_executor.DockerExecutor(environ).stop_timeout == 5.0
    longer = {**environ, docker_executor.STOP_TIMEOUT_ENV: "9secs"}
    assert docker_executor.DockerExecutor(longer).stop_timeout == 9.0


def test_small_resources_are_clamped_like_mesos():
    tiny = [
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.001}},
        {"name": "mem", "type": "SCALAR", "scalar": {"value": 1}},
    ]
    assert docker_info.limit_flags(tiny) == ["--cpu-shares=2", f"--memory={32 * 1024 * 1024}"]


def test_master_refuses_an_invalid_docker_container_with_task_error():
    from master_kit import command_task as master_task
    from master_kit import launch_body
    from test_master_machine import _cluster

    h, _, fid, stream, offers = _cluster()
    offer = offers[0]
    bad = master_task("bad", offer)
    bad["container"] = {"type": "DOCKER", "docker": {"image": "a", "network": "WIFI"}}
    good = master_task("good", offer)
    good["container"] = {"type": "DOCKER", "docker": {"image": "a", "network": "NONE"}}
    h.call(fid, stream, launch_body(offer, bad, good, refuse_seconds=0))
    statuses = {s["task_id"]["value"]: s for s in h.updates(stream)}
    assert set(statuses) == {"bad"} and statuses["bad"]["state"] == "TASK_ERROR"
    assert "docker.network" in statuses["bad"]["message"]
    [run] = h.agent_messages("c1", internal.RunTask)
    assert run.task.task_id.value == "good"


# -- OOM kills dockerd did not record ------------------------------------------------------


def _kernel_records_oom_kill(container_id: str) -> None:
    """Writes into the kernel's log the line the kernel writes when it OOM-kills a process of
    a container's memory cgroup (cgroupfs driver)."""
    memcg = f"/docker/{container_id}"
    line = f"oom-kill:constraint=CONSTRAINT_MEMCG,oom_memcg={memcg},task_memcg={memcg},task=dd"
    with open("/dev/kmsg", "w") as kmsg:
        kmsg.write(line + "\n")


def test_the_kernels_log_names_the_container_whose_memory_cgroup_oom_killed():
    killed, other = uuid.uuid4().hex * 2, uuid.uuid4().hex * 2
    _kernel_records_oom_kill(killed)
    assert docker_executor.kernel_oom_killed(killed)
    assert not docker_executor.kernel_oom_killed(other)
    assert not docker_executor.kernel_oom_killed(killed, kmsg="/nonexistent/kmsg")


class _Daemon(docker_executor.DockerExecutor):
    """The executor's view of one exited container, without a daemon or an agent."""

    def __init__(self, container_id: str, state: dict) -> None:
        self.name = "mesos-c1"
        self.container_id = container_id
        self.state = state
        self.inspections = 0
        self.daemon_wait = 1.0
        self.daemon_lost = False

    def api(self, path: str) -> dict:
        assert path == f"/containers/{self.name}/json"
        self.inspections += 1
        return {"Id": self.container_id, "State": self.state}


def test_a_sigkilled_container_the_kernel_oom_killed_fails_as_a_memory_limitation(monkeypatch):
    # dockerd never recorded OOMKilled (its OOM watch came too late): the kernel's record
    # decides, at once rather than after the wait for the daemon.
    monkeypatch.setattr(docker_executor, "OOM_SETTLE", 30.0)
    container_id = uuid.uuid4().hex * 2
    state = {"ExitCode": 137, "OOMKilled": False, "StartedAt": "2026-12-04T00:00:00Z"}
    daemon = _Daemon(container_id, state)
    task = SimpleNamespace(killed=False)
    _kernel_records_oom_kill(container_id)
    settled = daemon._settled(task, state)  # type: ignore[arg-type]
    assert settled is not None and settled["OOMKilled"]
    assert daemon._outcome(task, settled)[2] == "REASON_CONTAINER_LIMITATION_MEMORY"  # type: ignore[arg-type]


def test_a_sigkilled_container_without_an_oom_record_is_not_called_oom_killed(monkeypatch):
    monkeypatch.setattr(docker_executor, "OOM_SETTLE", 0.3)
    state = {"ExitCode": 137, "OOMKilled": False, "StartedAt": "2026-12-04T00:00:00Z"}
    daemon = _Daemon(uuid.uuid4().hex * 2, state)
    task = SimpleNamespace(killed=False)
    settled = daemon._settled(task, state)  # type: ignore[arg-type]
    assert settled is not None and not settled["OOMKilled"]
    assert daemon.inspections >= 2  # the daemon was asked again meanwhile
    assert daemon._outcome(task, settled) == (
        "TASK_FAILED",
        "Container exited with status 137",
        None,
    )  # type: ignore[arg-type]
