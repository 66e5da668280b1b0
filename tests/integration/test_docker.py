"""The Docker containerizer with real processes: a real agent (``--containerizers
docker,mesos``) against the fake master of `test_agent_process`, and a private Docker daemon
(`butte.testing.docker`: its own socket, data root and exec root, no networking of its own)
loaded with a busybox image built here (`butte.testing.images`). Nothing is pulled."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from test_agent_process import (
    AID,
    FID,
    FRAMEWORK,
    AgentProcess,
    FakeMaster,
    agent_port,
    run_scenario,
    sandbox,
    wait_for,
)
from test_agent_recovery import fixed_port
from test_isolation import cgroups_root  # noqa: F401 - a fixture

from butte.core.docker_info import AGENT_LABEL
from butte.testing import images
from butte.testing.docker import DOCKER, Dockerd, dockerd

pytestmark = pytest.mark.integration

IMAGE = "butte-test/marked:1"
# Pulls go to a registry on a closed loopback port: they fail at once and never leave the
# machine (a name without a registry would be looked up on Docker Hub).
NOWHERE = "127.0.0.1:9"
CHECKPOINTING = {**FRAMEWORK, "checkpoint": True}
PORTS = {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 31010}]}}
TERMINAL = ("TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR")


@pytest.fixture(scope="module")
def daemon():
    with dockerd() as d:
        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(tmp) / "marked.tar"
            layer = {"/etc/image-marker": b"from-the-image\n"}
            repo, tag = IMAGE.split(":")
            images.save_archive(archive, repo, tag, config={"Cmd": ["/bin/sh"]}, layers=[layer])
            d.load(archive)
        d.docker("tag", IMAGE, f"{NOWHERE}/{IMAGE}")
        yield d


def agent_flags(d: Dockerd, *extra: str) -> tuple[str, ...]:
    return (
        "--containerizers",
        "docker,mesos",
        "--docker",
        DOCKER,
        "--docker_socket",
        d.socket,
        *extra,
    )


def docker_task(
    task_id: str,
    command: str | None,
    *,
    image: str = IMAGE,
    mem: float = 64.0,
    env: dict[str, str] | None = None,
    **docker: Any,
) -> dict[str, Any]:
    cmd: dict[str, Any] = {"value": command} if command is not None else {"shell": False}
    if env:
        cmd["environment"] = {"variables": [{"name": k, "value": v} for k, v in env.items()]}
    return {
        "name": task_id,
        "task_id": {"value": task_id},
        "agent_id": {"value": AID},
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.25}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": mem}},
        ],
        "command": cmd,
        "container": {"type": "DOCKER", "docker": {"image": image, **docker}},
    }


async def launch(master: FakeMaster, task: dict, framework: dict = FRAMEWORK) -> None:
    await master.send({"type": "RUN_TASK", "framework": framework, "task": task})


def terminal(master: FakeMaster, task_id: str) -> dict | None:
    return next((s for s in master.updates(task_id) if s["state"] in TERMINAL), None)


async def ended(master: FakeMaster, task_id: str, timeout: float = 60.0) -> dict:
    return await wait_for(lambda: terminal(master, task_id), f"{task_id} to end", timeout)


def running(master: FakeMaster, task_id: str) -> dict | None:
    return next((s for s in master.updates(task_id) if s["state"] == "TASK_RUNNING"), None)


def container_name(master: FakeMaster, task_id: str) -> str:
    status = running(master, task_id)
    assert status is not None
    return "mesos-" + status["container_status"]["container_id"]["value"]


def inspect(d: Dockerd, name: str) -> dict | None:
    out = d.docker("inspect", "--type=container", name, check=False)
    found = json.loads(out or "[]")
    return found[0] if found else None


async def kill(master: FakeMaster, task_id: str) -> None:
    await master.send(
        {"type": "KILL_TASK", "framework_id": {"value": FID}, "task_id": {"value": task_id}}
    )


async def operator(port: int, body: dict) -> dict:
    async with aiohttp.ClientSession() as s:
        async with s.post(f"http://127.0.0.1:{port}/api/v1", json=body) as r:
            assert r.status == 200, await r.text()
            return await r.json()


def test_docker_tasks_run_in_the_image_with_limits_and_report_their_end(tmp_path, daemon):
    """Image, environment and sandbox; exit codes; kill; the memory limit; pulls that cannot
    succeed; GET_CONTAINERS; the container removed after its executor."""

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        script = (
            "cat /etc/image-marker; echo FOO=$FOO; echo SANDBOX=$MESOS_SANDBOX; "
            "echo written > $MESOS_SANDBOX/out.txt; cat /proc/net/dev | grep -c :"
        )
        await launch(master, docker_task("ok", script, env={"FOO": "bar"}, network="NONE"))
        await launch(master, docker_task("fails", "echo oops >&2; exit 3"))
        await launch(master, docker_task("sleeper", "sleep 60"))
        await launch(master, docker_task("hog", "dd if=/dev/zero of=/dev/null bs=300M", mem=40))
        await launch(master, docker_task("missing", "true", image=f"{NOWHERE}/butte-test/none:1"))
        forced = docker_task("forced", "true", image=f"{NOWHERE}/{IMAGE}", force_pull_image=True)
        await launch(master, forced)
        await launch(master, docker_task("plain-cmd", None))  # the image's Cmd: /bin/sh
        nothing = docker_task("no-such-program", None)
        nothing["command"] = {"shell": False, "value": "/no/such/program"}
        await launch(master, nothing)
        await launch(master, docker_task("wifi", "true", network="WIFI"))
        shared = tmp_path / "shared"
        shared.mkdir()
        (shared / "hello").write_text("from-the-host\n")
        volumes = [{"container_path": "/data", "host_path": str(shared), "mode": "RO"}]
        vol = docker_task(
            "vol",
            "cat /data/hello; touch /data/x || echo read-only; sleep 30",
            parameters=[
                {"key": "label", "value": "team=blue"},
                {"key": "pids-limit", "value": "64"},
            ],
        )
        vol["container"]["volumes"] = volumes
        await launch(master, vol)
        mapping = {"host_port": 31005, "container_port": 80}
        bridged = docker_task("bridged", "true", network="BRIDGE", port_mappings=[mapping])
        bridged["resources"].append(PORTS)
        await launch(master, bridged)

        ok = await ended(master, "ok")
        assert ok["state"] == "TASK_FINISHED", ok
        out = (sandbox(tmp_path, "ok") / "stdout").read_text()
        assert "from-the-image" in out and "FOO=bar" in out
        assert "SANDBOX=/mnt/mesos/sandbox" in out
        assert out.strip().endswith("1"), out  # network NONE: only lo
        assert (sandbox(tmp_path, "ok") / "out.txt").read_text() == "written\n"

        fails = await ended(master, "fails")
        assert fails["state"] == "TASK_FAILED"
        assert fails["message"] == "Container exited with status 3"
        assert "oops" in (sandbox(tmp_path, "fails") / "stderr").read_text()

        await wait_for(lambda: running(master, "sleeper"), "sleeper running", 60)
        name = container_name(master, "sleeper")
        info = inspect(daemon, name)
        assert info is not None and info["State"]["Running"]
        assert info["HostConfig"]["CpuShares"] == 256
        assert info["HostConfig"]["Memory"] == 64 * 1024 * 1024
        assert info["HostConfig"]["NetworkMode"] == "host"
        assert info["Config"]["Labels"][AGENT_LABEL] == str(tmp_path / "work")
        # Mesos' docker executor: TASK_RUNNING's data is the container's `docker inspect`.
        status = running(master, "sleeper")
        assert status is not None
        [inspected] = json.loads(base64.b64decode(status["data"]))
        assert inspected["Name"] == "/" + name and inspected["State"]["Running"]

        reply = await operator(agent_port(master), {"type": "GET_CONTAINERS"})
        containers = reply["get_containers"]["containers"]
        infos = [c.get("container_info") for c in containers]
        assert {"type": "DOCKER", "docker": {"image": IMAGE}} in infos
        [stats] = [
            c["resource_statistics"]
            for c in containers
            if "mesos-" + c["container_id"]["value"] == name
        ]
        assert stats["mem_limit_bytes"] == 64 * 1024 * 1024  # the daemon's counters
        assert stats["processes"] >= 1 and stats["mem_total_bytes"] > 0

        started = time.monotonic()
        await kill(master, "sleeper")
        killed = await ended(master, "sleeper")
        assert killed["state"] == "TASK_KILLED" and time.monotonic() - started < 20

        hog = await ended(master, "hog")
        assert hog["state"] == "TASK_FAILED", hog
        assert hog.get("reason") == "REASON_CONTAINER_LIMITATION_MEMORY", hog

        missing = await ended(master, "missing")
        assert missing["state"] == "TASK_FAILED"
        assert missing["reason"] == "REASON_CONTAINER_LAUNCH_FAILED"
        assert f"Failed to pull image '{NOWHERE}/butte-test/none:1'" in missing["message"]
        forced = await ended(master, "forced")
        assert forced["state"] == "TASK_FAILED" and "Failed to pull image" in forced["message"]

        plain = await ended(master, "plain-cmd")
        assert plain["state"] == "TASK_FINISHED"  # /bin/sh with no input ends at once

        # The test daemon has no bridge network (--bridge=none), where Docker would run the
        # container with loopback only and ignore its port mappings: a clear launch failure.
        bridged = await ended(master, "bridged")
        assert bridged["state"] == "TASK_FAILED", bridged
        assert bridged["reason"] == "REASON_CONTAINER_LAUNCH_FAILED"
        assert "the Docker daemon has no bridge network" in bridged["message"], bridged

        await wait_for(lambda: running(master, "vol"), "vol running", 60)
        vol_info = inspect(daemon, container_name(master, "vol"))
        assert vol_info is not None
        assert vol_info["Config"]["Labels"]["team"] == "blue"
        assert vol_info["HostConfig"]["PidsLimit"] == 64
        vol_out = sandbox(tmp_path, "vol") / "stdout"
        await wait_for(lambda: "read-only" in vol_out.read_text(), "the volume read", 30)
        assert "from-the-host" in vol_out.read_text()
        assert not (shared / "x").exists()
        await kill(master, "vol")
        assert (await ended(master, "vol"))["state"] == "TASK_KILLED"

        nothing = await ended(master, "no-such-program")
        assert nothing["state"] == "TASK_FAILED"
        assert nothing["reason"] == "REASON_CONTAINER_LAUNCH_FAILED", nothing
        assert "/no/such/program" in nothing["message"], nothing

        wifi = await ended(master, "wifi")
        assert wifi["state"] == "TASK_ERROR" and "docker.network" in wifi["message"]

        # Each container goes with its executor.
        await wait_for(lambda: inspect(daemon, name) is None, "the container removed", 30)

    run_scenario(tmp_path, scenario, agent_flags=agent_flags(daemon))


def test_agent_restart_recovers_the_running_container_and_removes_orphans(tmp_path, daemon):
    work = str(tmp_path / "work")
    image = daemon.load_busybox()

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await launch(master, docker_task("svc", "sleep 600"), CHECKPOINTING)
        await wait_for(lambda: running(master, "svc"), "svc running", 60)
        name = container_name(master, "svc")
        before = inspect(daemon, name)
        assert before is not None, name
        # Left by an earlier run of this agent, and another agent's on the same daemon.
        for orphan, label in (("mesos-orphan-1", work), ("mesos-other-agent", "/elsewhere")):
            daemon.docker(
                "run", "--detach", f"--name={orphan}", f"--label={AGENT_LABEL}={label}",
                image, "sleep", "600",
            )  # fmt: skip
        await agent.kill()
        await agent.start()
        await wait_for(
            lambda: any("id" in m["agent_info"] for m in master.of_type("REGISTER_AGENT")),
            "re-registration",
            30,
        )
        await wait_for(lambda: inspect(daemon, "mesos-orphan-1") is None, "orphan removed", 30)
        assert inspect(daemon, "mesos-other-agent") is not None  # another agent's
        after = inspect(daemon, name)
        assert after is not None and after["State"]["Running"], (name, after)
        assert after["Id"] == before["Id"]
        assert after["HostConfig"]["Memory"] == 64 * 1024 * 1024  # its limits go on
        assert after["State"]["StartedAt"] == before["State"]["StartedAt"]
        assert [s["state"] for s in master.updates("svc")].count("TASK_RUNNING") >= 1
        assert terminal(master, "svc") is None
        # A kill that reaches the agent before the executor re-subscribed is dropped (as in
        # Mesos): frameworks retry kills, so does this one.
        for _ in range(30):
            await kill(master, "svc")
            with contextlib.suppress(AssertionError):
                await ended(master, "svc", 2.0)
                break
        assert (await ended(master, "svc"))["state"] == "TASK_KILLED"
        # Only the recovered task's one launch: never relaunched.
        runs = list((tmp_path / f"work/slaves/{AID}/frameworks/{FID}/executors/svc/runs").iterdir())
        assert len([r for r in runs if r.name != "latest"]) == 1

    try:
        run_scenario(tmp_path, scenario, agent_flags=(*agent_flags(daemon), *fixed_port()))
    finally:
        daemon.docker("rm", "--force", "mesos-other-agent", check=False)


# A task that ends on SIGTERM, as a daemon stopping its containers sends it first.
TERMINABLE = "trap 'exit 143' TERM; sleep 600 & wait"


def test_docker_daemon_restart_fails_the_running_task_clearly(tmp_path):
    """Without live-restore the daemon stops its containers when it stops: the task fails,
    saying the daemon went away; the agent and its next Docker task are fine."""
    with dockerd() as d:
        image = d.load_busybox()

        async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
            await launch(master, docker_task("victim", TERMINABLE, image=image))
            await wait_for(lambda: running(master, "victim"), "victim running", 60)
            d.restart()
            victim = await ended(master, "victim")
            assert victim["state"] == "TASK_FAILED", victim
            assert "Docker daemon went away" in victim["message"]
            await launch(master, docker_task("after", "echo fine", image=image))
            assert (await ended(master, "after"))["state"] == "TASK_FINISHED"

        run_scenario(tmp_path, scenario, agent_flags=agent_flags(d))


def test_docker_daemon_restart_with_live_restore_keeps_the_task(tmp_path):
    """With live-restore the container outlives the daemon's restart: the executor attaches
    to it again, the task stays running, its output still reaches the sandbox, and a kill
    still stops it."""
    with dockerd(extra=["--live-restore"]) as d:
        image = d.load_busybox()
        script = "trap 'exit 143' TERM; while true; do echo tick; sleep 0.2 & wait; done"

        async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
            await launch(master, docker_task("survivor", script, image=image))
            await wait_for(lambda: running(master, "survivor"), "survivor running", 60)
            name = container_name(master, "survivor")
            before = inspect(d, name)
            assert before is not None
            d.restart()
            after = inspect(d, name)
            assert after is not None and after["State"]["Running"]
            assert after["State"]["StartedAt"] == before["State"]["StartedAt"]
            out = sandbox(tmp_path, "survivor") / "stdout"
            ticks = out.read_text().count("tick")
            await wait_for(lambda: out.read_text().count("tick") > ticks + 3, "output", 30)
            assert terminal(master, "survivor") is None
            await kill(master, "survivor")
            assert (await ended(master, "survivor"))["state"] == "TASK_KILLED"

        run_scenario(tmp_path, scenario, agent_flags=agent_flags(d))


def test_no_daemon_means_no_docker_containerizer_and_docker_tasks_fail(tmp_path):
    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await launch(master, docker_task("d", "true"))
        status = await ended(master, "d", 30)
        assert status["state"] == "TASK_FAILED"
        assert status["reason"] == "REASON_CONTAINER_LAUNCH_FAILED"
        assert "not reachable" in status["message"] and "/nonexistent.sock" in status["message"]
        assert "not offering the docker containerizer" in agent.logs()
        await master.run_task("host", "echo on-the-host")  # the mesos containerizer still runs
        assert (await ended(master, "host"))["state"] == "TASK_FINISHED"

    flags = ("--containerizers", "docker,mesos", "--docker", DOCKER)
    run_scenario(tmp_path, scenario, agent_flags=(*flags, "--docker_socket", "/nonexistent.sock"))


def test_real_master_runs_a_docker_task_and_shows_it(tmp_path, daemon):
    """End to end: a framework on a real master launches a DOCKER task on a real agent;
    the master's state keeps its ContainerInfo, the agent's /containers shows it."""
    from butte.client.scheduler import SchedulerClient
    from butte.testing.cluster import start_cluster

    async def run_one(master: str, cluster: Any) -> list[dict]:
        statuses: list[dict] = []
        async with SchedulerClient(master, {"name": "docker-e2e", "user": "root"}) as client:
            async for event in client:
                if event["type"] == "OFFERS":
                    offer = event["offers"]["offers"][0]
                    task = docker_task("e2e", "cat /etc/image-marker; sleep 2")
                    task.pop("agent_id")
                    await client.launch(offer, [task])
                elif event["type"] == "UPDATE":
                    status = event["update"]["status"]
                    statuses.append(status)
                    await client.acknowledge_status(status)
                    if status["state"] == "TASK_RUNNING":
                        agent = cluster.state()["slaves"][0]
                        url = f"http://{agent['pid'].split('@')[1]}/containers"
                        async with aiohttp.ClientSession() as s, s.get(url) as r:
                            shown = [c.get("container_info") for c in await r.json()]
                        assert {"type": "DOCKER", "docker": {"image": IMAGE}} in shown
                    if status["state"] in TERMINAL:
                        return statuses
        raise AssertionError("event stream ended")

    flags = agent_flags(daemon)
    with start_cluster(tmp_path, agent_flags=flags) as cluster:
        statuses = asyncio.run(run_one(cluster.master_address, cluster))
        assert [s["state"] for s in statuses][-1] == "TASK_FINISHED", statuses
        tasks = cluster.state()["completed_frameworks"] + cluster.state()["frameworks"]
        infos = [t.get("container") for f in tasks for t in f.get("completed_tasks", [])]
        assert {"type": "DOCKER", "docker": {"image": IMAGE}} in infos, infos


def test_docker_tasks_next_to_isolated_ones(tmp_path, daemon, cgroups_root):  # noqa: F811
    """With cgroup isolators on, a Docker task's executor is left out of them (Docker limits
    its container) and command tasks are isolated as before."""

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await launch(master, docker_task("in-docker", "cat /etc/image-marker"))
        await master.run_task("on-host", "cat /proc/self/cgroup")
        assert (await ended(master, "in-docker"))["state"] == "TASK_FINISHED"
        assert (await ended(master, "on-host"))["state"] == "TASK_FINISHED"
        assert "from-the-image" in (sandbox(tmp_path, "in-docker") / "stdout").read_text()
        assert cgroups_root in (sandbox(tmp_path, "on-host") / "stdout").read_text()

    isolation = ("--isolation", "cgroups/cpu,cgroups/mem", "--cgroups_root", cgroups_root)
    run_scenario(tmp_path, scenario, agent_flags=(*agent_flags(daemon), *isolation))
