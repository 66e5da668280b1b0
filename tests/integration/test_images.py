"""Tasks in Docker images with real processes: a real agent (``--image_providers docker
--docker_registry DIR``) against the fake master of `test_agent_process`, with docker-save
archives of a busybox root filesystem built locally (`butte.testing.images`). Needs root
(mount namespaces, pivot_root) and Debian's busybox-static."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import test_isolation
from test_agent_process import (
    AID,
    FID,
    FRAMEWORK,
    AgentProcess,
    FakeMaster,
    agent_port,
    process_gone,
    run_scenario,
    sandbox,
    wait_for,
)
from test_agent_recovery import fixed_port
from test_isolation import container_of, group

from butte.agent.containerizer.provisioner import overlay_supported
from butte.client.scheduler import SchedulerClient
from butte.testing.cluster import start_cluster
from butte.testing.images import busybox_rootfs, save_archive
from butte.testing.require import require

pytestmark = pytest.mark.integration
cgroups_root = test_isolation.cgroups_root  # the fixture: a cgroup root of the test's own

TERMINAL = ("TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR")
CHECKPOINTING = {**FRAMEWORK, "checkpoint": True}


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    require("the tests run as root only (mount namespaces)" if os.geteuid() else None, "root")
    busybox_rootfs()
    out = tmp_path / "registry"
    out.mkdir()
    return out


def image_flags(registry: Path, backend: str = "copy", *extra: str) -> tuple[str, ...]:
    return (
        "--image_providers",
        "docker",
        "--docker_registry",
        str(registry),
        "--image_provisioner_backend",
        backend,
        *extra,
    )


def container(name: str, volumes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "MESOS",
        "mesos": {"image": {"type": "DOCKER", "docker": {"name": name}}},
    }
    if volumes:
        out["volumes"] = volumes
    return out


async def run_image_task(
    master: FakeMaster,
    task_id: str,
    image: str,
    command: dict[str, Any],
    *,
    framework: dict = FRAMEWORK,
    volumes: list[dict[str, Any]] | None = None,
    mem: float = 64.0,
    **extra: Any,
) -> None:
    task = {
        **extra,
        "name": task_id,
        "task_id": {"value": task_id},
        "agent_id": {"value": AID},
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": mem}},
        ],
        "command": command,
        "container": container(image, volumes),
    }
    await master.send({"type": "RUN_TASK", "framework": framework, "task": task})


def terminal(master: FakeMaster, task_id: str) -> dict | None:
    for status in master.updates(task_id):
        if status["state"] in TERMINAL:
            return status
    return None


async def finished(master: FakeMaster, task_id: str, timeout: float = 30) -> dict:
    return await wait_for(lambda: terminal(master, task_id), f"{task_id} to end", timeout)


def output(tmp_path: Path, task_id: str, name: str = "stdout") -> str:
    return (sandbox(tmp_path, task_id) / name).read_text()


def shell(value: str) -> dict[str, Any]:
    return {"shell": True, "value": value}


def test_task_runs_in_the_image_with_its_layers_whiteouts_config_and_sandbox(tmp_path, registry):
    save_archive(
        registry / "app:1.tar",
        "app",
        "1",
        config={
            "Entrypoint": ["/bin/sh", "-c"],
            "Cmd": ["echo cmd-ran; cat /etc/os-release; pwd; id -u; echo $GREETING"],
            "Env": ["GREETING=from-image", "PATH=/bin"],
            "WorkingDir": "/work",
            "User": "nobody",
        },
        layers=[
            {"etc/os-release": b"ID=butte-test\n", "etc/motd": b"hello\n"},
            {"etc/motd": None},  # a whiteout in the layer above deletes it
        ],
    )

    save_archive(
        registry / "sh:1.tar", "sh", "1", config={"Cmd": ["/bin/sh", "-c", "echo cmd-only"]}
    )

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        # The agent's views show the container's type and image while it runs.
        # With a COMMAND check: it runs in the image too (the file differs on the host).
        probe = {
            "shell": False,
            "value": "grep",
            "arguments": ["grep", "-q", "butte-test", "/etc/os-release"],
        }
        check = {
            "type": "COMMAND",
            "command": {"command": probe},
            "delay_seconds": 0,
            "interval_seconds": 0.2,
            "timeout_seconds": 5,
        }
        await run_image_task(master, "viewed", "app:1", shell("exec sleep 60"), check=check)
        await wait_for(lambda: "TASK_RUNNING" in master.states("viewed"), "viewed running", 30)
        checked = await wait_for(
            lambda: [
                s
                for s in master.updates("viewed")
                if "exit_code" in s.get("check_status", {}).get("command", {})
            ],
            "a check result",
            20,
        )
        assert checked[0]["check_status"]["command"]["exit_code"] == 0
        port = agent_port(master)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/containers") as response:
                (entry,) = await response.json()
            call = {"type": "GET_CONTAINERS"}
            async with http.post(f"http://127.0.0.1:{port}/api/v1", json=call) as response:
                (listed,) = (await response.json())["get_containers"]["containers"]
        for view in (entry, listed):
            assert view["container_type"] == "MESOS"
            assert view["container_info"]["mesos"]["image"]["docker"]["name"] == "app:1"
        kill = {"type": "KILL_TASK", "framework_id": {"value": FID}, "task_id": {"value": "viewed"}}
        await master.send(kill)
        assert (await finished(master, "viewed"))["state"] == "TASK_KILLED"
        # No command value, shell=false: the image's Entrypoint and Cmd run. The image's
        # User is not used (as in Mesos): the task runs as its framework's user, root.
        await run_image_task(master, "defaults", "app:1", {"shell": False})
        status = await finished(master, "defaults")
        assert status["state"] == "TASK_FINISHED", status
        assert output(tmp_path, "defaults").split("\n")[:5] == [
            "cmd-ran",
            "ID=butte-test",
            "/work",
            "0",
            "from-image",
        ]
        # CommandInfo.user wins over the image's too; it is looked up in the image.
        for task_id, user, uid in (("as-root", "root", "0"), ("as-nobody", "nobody", "65534")):
            await run_image_task(master, task_id, "app:1", {**shell("id -u"), "user": user})
            status = await finished(master, task_id)
            assert status["state"] == "TASK_FINISHED", (status, output(tmp_path, task_id, "stderr"))
            assert output(tmp_path, task_id) == f"{uid}\n"
        assert "Container user 'nobody' is not supported yet" in agent.log.read_text()
        # A shell command: /bin/sh -c value in the image; the host's files are out of sight.
        script = (
            "test ! -e /etc/motd && test ! -e /usr/lib/os-release && "
            "echo $MESOS_SANDBOX && echo inside > $MESOS_SANDBOX/written && "
            "ls /proc/self/ns >/dev/null && cat /dev/null && grep -q localhost /etc/hosts && "
            "! (echo x > /etc/hosts) 2>/dev/null && "
            "env | grep -c '^GREETING=from-image$'"
        )
        await run_image_task(master, "shell", "app:1", shell(script))
        status = await finished(master, "shell")
        assert status["state"] == "TASK_FINISHED", (status, output(tmp_path, "shell", "stderr"))
        assert output(tmp_path, "shell").split() == ["/mnt/mesos/sandbox", "1"]
        assert (sandbox(tmp_path, "shell") / "written").read_text() == "inside\n"
        # arguments replace Cmd after the Entrypoint, as `docker run IMAGE ARGS` does.
        args = {"shell": False, "arguments": ["echo args-ran $GREETING"]}
        await run_image_task(master, "args", "app:1", args)
        assert (await finished(master, "args"))["state"] == "TASK_FINISHED"
        assert output(tmp_path, "args") == "args-ran from-image\n"
        # No Entrypoint: Cmd[0] is the program, the task's arguments follow it (Mesos).
        args = {"shell": False, "arguments": ["-c", "echo cmd0-with-args"]}
        await run_image_task(master, "cmd0", "sh:1", args)
        assert (await finished(master, "cmd0"))["state"] == "TASK_FINISHED"
        assert output(tmp_path, "cmd0") == "cmd0-with-args\n"
        # A value with shell=false is the program; the image's Entrypoint does not apply.
        value = {"shell": False, "value": "/bin/echo", "arguments": ["echo", "plain"]}
        await run_image_task(master, "value", "app:1", value)
        assert (await finished(master, "value"))["state"] == "TASK_FINISHED"
        assert output(tmp_path, "value") == "plain\n"
        # Root filesystems of ended containers go away.
        provisioner = tmp_path / "work/provisioner"
        await wait_for(lambda: not any(provisioner.iterdir()), "root filesystems removed")

    run_scenario(tmp_path, scenario, agent_flags=image_flags(registry))


def test_volumes_host_paths_and_bad_input(tmp_path, registry):
    save_archive(registry / "busybox:latest.tar", "busybox")
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "data").write_text("from-host\n")
    secret = tmp_path / "secret"
    secret.mkdir()

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        volumes = [
            {"container_path": "/data", "host_path": str(shared), "mode": "RO"},
            {"container_path": "/rw", "host_path": str(shared), "mode": "RW"},
            {
                "container_path": "in-sandbox",  # relative: in the sandbox
                "mode": "RW",
                "source": {"type": "SANDBOX_PATH", "sandbox_path": {"type": "SELF", "path": "."}},
            },
        ]
        script = (
            "cat /data/data; (echo x > /data/new) 2>/dev/null && echo WROTE-RO; "
            "echo rw > /rw/new; ls $MESOS_SANDBOX/in-sandbox/ | grep -c stdout"
        )
        await run_image_task(master, "vols", "busybox", shell(script), volumes=volumes)
        status = await finished(master, "vols")
        assert status["state"] == "TASK_FINISHED", (status, output(tmp_path, "vols", "stderr"))
        assert output(tmp_path, "vols") == "from-host\n1\n"
        assert (shared / "new").read_text() == "rw\n"
        # Sandbox paths that do not exist yet are made (a relative host path is one too).
        made = [
            {"container_path": "relc", "host_path": "rel", "mode": "RW"},
            {
                "container_path": "/sp",
                "mode": "RW",
                "source": {"type": "SANDBOX_PATH", "sandbox_path": {"type": "SELF", "path": "sp"}},
            },
        ]
        script = "echo a > $MESOS_SANDBOX/relc/a && echo b > /sp/b"
        await run_image_task(master, "made", "busybox", shell(script), volumes=made)
        status = await finished(master, "made")
        assert status["state"] == "TASK_FINISHED", (status, output(tmp_path, "made", "stderr"))
        assert (sandbox(tmp_path, "made") / "rel/a").read_text() == "a\n"
        assert (sandbox(tmp_path, "made") / "sp/b").read_text() == "b\n"
        # A host path that does not exist fails the launch in the agent.
        gone = [{"container_path": "/g", "host_path": str(shared / "gone"), "mode": "RO"}]
        await run_image_task(master, "gone", "busybox", shell("true"), volumes=gone)
        status = await finished(master, "gone")
        assert status["state"] == "TASK_FAILED"
        assert (status["source"], status["reason"]) == (
            "SOURCE_AGENT",
            "REASON_CONTAINER_LAUNCH_FAILED",
        )
        assert f"volume host path {shared / 'gone'} does not exist" in status["message"]
        # A host path outside --allowed_host_path_volumes: the launch fails.
        outside = [{"container_path": "/s", "host_path": str(secret), "mode": "RO"}]
        await run_image_task(master, "outside", "busybox", shell("true"), volumes=outside)
        status = await finished(master, "outside")
        assert status["state"] == "TASK_FAILED"
        assert f"host path '{secret}' is not allowed" in status["message"]
        # Bad volumes and names are refused before anything runs.
        bad = {
            "dots": [{"container_path": "/x/../../etc", "host_path": str(shared), "mode": "RW"}],
            "mode": [{"container_path": "/x", "host_path": str(shared), "mode": "RWX"}],
        }
        for task_id, volume in bad.items():
            await run_image_task(master, task_id, "busybox", shell("true"), volumes=volume)
        for task_id, name in (("trick", "../busybox"), ("abs", "/etc/passwd"), ("nul", "a\x00b")):
            await run_image_task(master, task_id, name, shell("true"))
        for task_id in ("dots", "mode", "trick", "abs", "nul"):
            status = await finished(master, task_id)
            assert status["state"] == "TASK_ERROR", status
        assert "contains '..'" in terminal(master, "dots")["message"]
        assert "unknown volume mode 'RWX'" in terminal(master, "mode")["message"]
        assert "not a valid Docker image name" in terminal(master, "trick")["message"]
        # A missing image: TASK_FAILED naming it.
        await run_image_task(master, "missing", "nosuch:2", shell("true"))
        status = await finished(master, "missing")
        assert status["state"] == "TASK_FAILED"
        assert "Failed to find image 'nosuch:2'" in status["message"]

    flags = image_flags(registry, "copy", "--allowed_host_path_volumes", str(shared))
    run_scenario(tmp_path, scenario, agent_flags=flags)


def test_agent_without_image_providers_fails_image_tasks(tmp_path, registry):
    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await run_image_task(master, "img", "busybox", shell("touch /host-was-touched"))
        status = await finished(master, "img")
        assert status["state"] == "TASK_FAILED"
        assert (
            "Cannot run image 'busybox': this agent has no --image_providers" in (status["message"])
        )
        assert not os.path.exists("/host-was-touched")

    run_scenario(tmp_path, scenario)


def _backends() -> list[str]:
    return ["copy", "overlay"] if overlay_supported() else ["copy"]


@pytest.mark.parametrize("backend", _backends())
def test_corrupt_archive_then_concurrent_first_use_unpacks_once(tmp_path, registry, backend):
    good = save_archive(
        tmp_path / "good.tar",
        "app",
        config={"Cmd": ["cat", "/etc/motd"]},
        layers=[{"etc/motd": b"layered\n"}],
    )
    target = registry / "app:latest.tar"
    # Truncated: the archive ends in the middle of the first (big) layer.
    target.write_bytes(good.read_bytes()[: good.stat().st_size // 2])

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await run_image_task(master, "corrupt", "app", {"shell": False})
        status = await finished(master, "corrupt")
        assert status["state"] == "TASK_FAILED"
        assert "image 'app'" in status["message"], status
        store = tmp_path / "work/images"
        assert not any((store / "layers").iterdir())  # nothing half-unpacked kept
        assert not any((store / "staging").iterdir())
        os.replace(good, target)
        # Three tasks need the new image at once: each layer is unpacked once.
        for i in range(3):
            await run_image_task(master, f"t{i}", "app", {"shell": False})
        for i in range(3):
            status = await finished(master, f"t{i}")
            assert status["state"] == "TASK_FINISHED", (status, output(tmp_path, f"t{i}", "stderr"))
            assert output(tmp_path, f"t{i}") == "layered\n"
        assert agent.logs().count("image store: unpacked layer") == 2
        assert len(list((store / "layers").iterdir())) == 2

    run_scenario(tmp_path, scenario, agent_flags=image_flags(registry, backend))


def _reregistered(master: FakeMaster) -> int:
    return sum("id" in m["agent_info"] for m in master.of_type("REGISTER_AGENT"))


@pytest.mark.parametrize("backend", _backends())
def test_agent_sigkill_recovers_image_tasks_with_their_limits(
    tmp_path, registry, cgroups_root, backend
):
    save_archive(registry / "busybox:latest.tar", "busybox")

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await run_image_task(
            master, "keep", "busybox", shell("exec sleep 600"), framework=CHECKPOINTING
        )
        # Goes over its memory only after the restart: the recovered agent must see it.
        hog = (
            "while [ ! -e $MESOS_SANDBOX/go ]; do sleep 0.05; done; "
            "x=$(head -c 300000000 /dev/zero | tr '\\0' a); echo ${#x}"
        )
        await run_image_task(master, "later", "busybox", shell(hog), framework=CHECKPOINTING)
        await wait_for(lambda: "TASK_RUNNING" in master.states("later"), "later running", 30)
        keep = await wait_for(
            lambda: "TASK_RUNNING" in master.states("keep") and container_of(master, "keep"),
            "keep running",
            30,
        )
        memory = group(cgroups_root, "memory", keep)
        members = (memory / "cgroup.procs").read_text().split()
        assert len(members) >= 2  # the executor and its task
        provisioner = tmp_path / "work/provisioner"
        assert (provisioner / keep / "rootfs/bin/busybox").exists()
        orphan = provisioner / "ended-container"
        (orphan / "rootfs").mkdir(parents=True)
        if backend == "overlay":  # an ended container's overlay is still mounted
            lower = next((tmp_path / "work/images/layers").iterdir())
            (orphan / "upper").mkdir()
            (orphan / "work").mkdir()
            options = f"lowerdir={lower},upperdir={orphan / 'upper'},workdir={orphan / 'work'}"
            subprocess.run(
                ["mount", "-t", "overlay", "overlay", "-o", options, str(orphan / "rootfs")],
                check=True,
            )
        await agent.kill()
        await agent.start()
        await wait_for(lambda: _reregistered(master), "re-registered", 30)
        await wait_for(lambda: not orphan.exists(), "the orphan root filesystem removed", 20)
        assert str(orphan) not in Path("/proc/self/mountinfo").read_text()
        assert (provisioner / keep / "rootfs/bin/busybox").exists()
        assert int((memory / "memory.limit_in_bytes").read_text()) == 96 * 1024 * 1024
        assert all(not process_gone(int(p)) for p in members)
        assert master.states("keep") == ["TASK_STARTING", "TASK_RUNNING"]  # not relaunched
        (sandbox(tmp_path, "later") / "go").touch()
        later = await finished(master, "later", 60)
        assert later["state"] == "TASK_FAILED", (later, output(tmp_path, "later"))
        assert later["reason"] == "REASON_CONTAINER_LIMITATION_MEMORY"
        kill = {"type": "KILL_TASK", "framework_id": {"value": FID}, "task_id": {"value": "keep"}}
        for _ in range(40):  # a kill reaches the executor once it has re-subscribed
            await master.send(kill)
            with contextlib.suppress(AssertionError):
                await wait_for(lambda: terminal(master, "keep"), "killed", 0.5)
                break
        assert terminal(master, "keep")["state"] == "TASK_KILLED"
        await wait_for(lambda: not (provisioner / keep).exists(), "its root filesystem removed")

    flags = (
        *fixed_port(),
        *image_flags(registry, backend),
        "--isolation",
        "cgroups/cpu,cgroups/mem,namespaces/pid",
        "--cgroups_root",
        cgroups_root,
    )
    run_scenario(tmp_path, scenario, agent_flags=flags)


def test_through_a_real_master_image_tasks_run_and_bad_names_get_task_error(tmp_path, registry):
    save_archive(registry / "busybox:latest.tar", "busybox", layers=[{"etc/hi": b"hi\n"}])

    def task(task_id: str, image: str) -> dict[str, Any]:
        return {
            "name": task_id,
            "task_id": {"value": task_id},
            "resources": [
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}},
            ],
            "command": {"value": "cat /etc/hi"},
            "container": container(image),
        }

    async def run(master: str) -> dict[str, dict]:
        ended: dict[str, dict] = {}
        async with SchedulerClient(master, {"name": "images", "user": "root"}) as client:
            async for event in client:
                if event["type"] == "OFFERS" and not client_launched:
                    client_launched.append(True)
                    tasks = [task("good", "busybox"), task("evil", "../../etc")]
                    await client.launch(event["offers"]["offers"][0], tasks)
                elif event["type"] == "UPDATE":
                    status = event["update"]["status"]
                    if status.get("uuid"):
                        await client.acknowledge_status(status)
                    if status["state"] in TERMINAL:
                        ended[status["task_id"]["value"]] = status
                    if len(ended) == 2:
                        return ended
        raise AssertionError("event stream ended")

    client_launched: list[bool] = []
    with start_cluster(tmp_path, agent_flags=image_flags(registry)) as cluster:
        ended = asyncio.run(asyncio.wait_for(run(cluster.master_address), 60))
    assert ended["evil"]["state"] == "TASK_ERROR"
    assert ended["evil"]["source"] == "SOURCE_MASTER"
    assert "not a valid Docker image name" in ended["evil"]["message"]
    # /etc/hi is only in the image's top layer.
    assert ended["good"]["state"] == "TASK_FINISHED", ended["good"]
    assert not os.path.exists("/etc/hi")


def test_a_symlink_in_the_image_cannot_point_a_mount_at_the_host(tmp_path, registry):
    # The image's /mnt is a symlink to a host directory: mounting the sandbox at
    # /mnt/mesos/sandbox must follow it inside the image, never on the host.
    host_dir = tmp_path / "host-dir"
    host_dir.mkdir()
    rootfs = tmp_path / "evil-rootfs"
    shutil.copytree(busybox_rootfs(), rootfs, symlinks=True)
    (rootfs / "mnt").symlink_to(host_dir)
    (rootfs / ".complete").unlink(missing_ok=True)
    save_archive(registry / "evil:latest.tar", "evil", rootfs=rootfs)

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        script = "echo inside > $MESOS_SANDBOX/f && readlink /mnt"
        await run_image_task(master, "evil", "evil", shell(script))
        status = await finished(master, "evil")
        assert status["state"] == "TASK_FINISHED", (status, output(tmp_path, "evil", "stderr"))
        assert output(tmp_path, "evil") == f"{host_dir}\n"
        assert (sandbox(tmp_path, "evil") / "f").read_text() == "inside\n"
        assert list(host_dir.iterdir()) == []

    run_scenario(tmp_path, scenario, agent_flags=image_flags(registry))
