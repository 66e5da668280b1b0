"""Isolators with real processes: a real agent (``--isolation ...``) against the fake master of
`test_agent_process`, running tasks that go over their memory, fork past their pids limit,
look at their pid namespace and /tmp, run as another user, and live through an agent
SIGKILL inside their cgroups. Needs root and the cgroup v1 memory, cpu, cpuacct, pids and
freezer controllers (docs/isolation.md)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
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
from test_agent_recovery import fixed_port, reregistrations

from butte.testing.require import require

pytestmark = pytest.mark.integration

HIERARCHY = "/sys/fs/cgroup"
CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "freezer")
CGROUPS = "cgroups/cpu,cgroups/mem,cgroups/pids"
CHECKPOINTING = {**FRAMEWORK, "checkpoint": True}


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "the tests run as root only (cgroups, namespaces, users)"
    for controller in CONTROLLERS:
        if not os.path.isfile(f"{HIERARCHY}/{controller}/cgroup.procs"):
            return f"no cgroup v1 {controller} controller under {HIERARCHY}"
    return None


@pytest.fixture
def cgroups_root():
    """A root group of the test's own, checked empty and removed afterwards."""
    require(_missing(), "cgroup v1 controllers and root")
    root = f"butte-test-{uuid.uuid4().hex[:8]}"
    yield root
    for controller in CONTROLLERS:
        base = Path(HIERARCHY, controller, root)
        if base.exists():
            for child in base.iterdir():
                if child.is_dir():
                    # An agent killed between freezing and thawing leaves the group frozen.
                    if (child / "freezer.state").exists():
                        (child / "freezer.state").write_text("THAWED")
                    for pid in (child / "cgroup.procs").read_text().split():
                        os.kill(int(pid), signal.SIGKILL)
                    _rmdir_eventually(child)
            _rmdir_eventually(base)


def _rmdir_eventually(path: Path) -> None:
    for _ in range(200):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            subprocess.run(["sleep", "0.01"], check=False)
    path.rmdir()


def resources(cpus: float = 0.1, mem: float = 64.0, disk: float | None = None) -> list[dict]:
    out = [
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": cpus}},
        {"name": "mem", "type": "SCALAR", "scalar": {"value": mem}},
    ]
    if disk is not None:
        out.append({"name": "disk", "type": "SCALAR", "scalar": {"value": disk}})
    return out


async def run_task(
    master: FakeMaster,
    task_id: str,
    command: str,
    *,
    framework: dict = FRAMEWORK,
    mem: float = 64.0,
    disk: float | None = None,
    **command_extra,
) -> None:
    task = {
        "name": task_id,
        "task_id": {"value": task_id},
        "agent_id": {"value": AID},
        "resources": resources(mem=mem, disk=disk),
        "command": {"value": command, **command_extra},
    }
    await master.send({"type": "RUN_TASK", "framework": framework, "task": task})


def terminal(master: FakeMaster, task_id: str) -> dict | None:
    for status in master.updates(task_id):
        if status["state"] in ("TASK_FINISHED", "TASK_FAILED", "TASK_KILLED", "TASK_ERROR"):
            return status
    return None


def container_of(master: FakeMaster, task_id: str) -> str:
    for status in master.updates(task_id):
        if status["state"] == "TASK_RUNNING":
            return status["container_status"]["container_id"]["value"]
    raise AssertionError(f"{task_id} never ran")


def group(root: str, controller: str, container_id: str) -> Path:
    return Path(HIERARCHY, controller, root, container_id)


def flags(root: str, isolation: str = CGROUPS, *extra: str) -> tuple[str, ...]:
    return ("--isolation", isolation, "--cgroups_root", root, *extra)


async def memory_hog_beside_a_calm_task(master: FakeMaster) -> dict:
    """Runs "calm" and "hog" (64 MB of memory each, plus the executor's 32): the hog ends
    TASK_FAILED with the memory limitation, calm runs on. Returns the hog's last status."""
    await run_task(master, "calm", "sleep 60")
    # tail keeps a line without newline in memory: 600 MB against a 64+32 MB limit.
    await run_task(master, "hog", "head -c 600000000 /dev/zero | tail > /dev/null")
    status = await wait_for(lambda: terminal(master, "hog"), "the hog's end", 30)
    assert status["state"] == "TASK_FAILED", status
    assert status["reason"] == "REASON_CONTAINER_LIMITATION_MEMORY"
    assert master.states("calm") == ["TASK_STARTING", "TASK_RUNNING"]
    return status


async def run_a_late_memory_hog(master: FakeMaster, tmp_path: Path) -> Path:
    """Runs "later" (checkpointed), which goes over its memory only once the returned file
    exists: touched after an agent restart, the recovered agent must see the limit hit."""
    go = tmp_path / "go"
    await run_task(
        master,
        "later",
        f"while [ ! -e {go} ]; do sleep 0.05; done; head -c 600000000 /dev/zero | tail",
        framework=CHECKPOINTING,
    )
    return go


def plant_orphan(orphan: Path) -> subprocess.Popen:
    """A group under the agent's root that no checkpointed container owns, with a process."""
    orphan.mkdir()
    sleeper = subprocess.Popen(["sleep", "300"], start_new_session=True)
    (orphan / "cgroup.procs").write_text(str(sleeper.pid))
    return sleeper


async def orphan_destroyed(sleeper: subprocess.Popen, orphan: Path) -> None:
    """Waits until a recovering agent has killed the orphan's process and removed its group."""
    await wait_for(lambda: sleeper.poll() is not None, "the orphan killed", 20)
    await wait_for(lambda: not orphan.exists(), "the orphan group removed")


def test_memory_hog_fails_with_the_memory_limitation_and_others_run_on(tmp_path, cgroups_root):
    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        status = await memory_hog_beside_a_calm_task(master)
        assert "Memory limit exceeded: Requested: 96MB Maximum Used: 96MB" in status["message"]
        calm = container_of(master, "calm")
        limit = group(cgroups_root, "memory", calm) / "memory.limit_in_bytes"
        assert int(limit.read_text()) == 96 * 1024 * 1024
        shares = group(cgroups_root, "cpu", calm) / "cpu.shares"
        assert int(shares.read_text()) == int(0.2 * 1024)  # task 0.1 + executor 0.1
        quota = group(cgroups_root, "cpu", calm) / "cpu.cfs_quota_us"
        assert int(quota.read_text()) == 20_000  # --cgroups_enable_cfs: 0.2 of 100 ms
        memsw = group(cgroups_root, "memory", calm) / "memory.memsw.limit_in_bytes"
        assert int(memsw.read_text()) == 96 * 1024 * 1024  # --cgroups_limit_swap
        port = agent_port(master)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/monitor/statistics") as response:
                monitor = await response.json()
            call = {"type": "GET_CONTAINERS"}
            async with http.post(f"http://127.0.0.1:{port}/api/v1", json=call) as response:
                containers = (await response.json())["get_containers"]["containers"]
        (stats,) = [e["statistics"] for e in monitor if e["executor_id"] == "calm"]
        assert stats["mem_limit_bytes"] == 96 * 1024 * 1024
        assert 0 < stats["mem_total_bytes"] < 96 * 1024 * 1024
        assert stats["mem_oom_events"] == 0 and stats["processes"] >= 1
        assert stats["threads"] >= stats["processes"]  # pids.current counts threads
        assert "cpus_user_time_secs" in stats and stats["cpus_limit"] == pytest.approx(0.2)
        (entry,) = [e for e in containers if e["container_id"]["value"] == calm]
        assert entry["resource_statistics"]["mem_limit_bytes"] == 96 * 1024 * 1024
        hog = container_of(master, "hog")
        # The hog's groups are removed once it is gone.
        await wait_for(lambda: not group(cgroups_root, "memory", hog).exists(), "hog cgroup gone")
        # One warning for it, though the executor's end and the exit both see the limit.
        assert agent.logs().count("Memory limit exceeded") == 1, agent.logs()

    extra = ("--cgroups_enable_cfs", "--cgroups_limit_swap")
    run_scenario(tmp_path, scenario, agent_flags=flags(cgroups_root, CGROUPS, *extra))


def test_pids_limit_stops_forks_and_freezer_kill_reaches_escaped_processes(tmp_path, cgroups_root):
    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await forks_past_the_limit_and_a_kill_reaching_an_escaped_process(
            master, tmp_path, lambda container: group(cgroups_root, "pids", container)
        )

    run_scenario(
        tmp_path, scenario, agent_flags=flags(cgroups_root, CGROUPS, "--container_max_pids=16")
    )


async def forks_past_the_limit_and_a_kill_reaching_an_escaped_process(
    master: FakeMaster, tmp_path: Path, pids_group: Callable[[str], Path]
) -> None:
    """A task forks past ``--container_max_pids=16`` and starts a process that leaves the
    task's session and ignores SIGTERM (only the cgroup still knows it belongs to the
    container) and moves into a group below the container's; killing the task kills it too,
    and the group (``pids_group(container)``) goes with the one below it."""
    child_pid = tmp_path / "child.pid"
    await run_task(
        master,
        "forker",
        f"setsid sh -c 'trap \"\" TERM; echo $$ > {child_pid}; exec sleep 300' & "
        "(for i in $(seq 30); do sleep 300 & done) 2>/dev/null; exec sleep 300",
    )
    container = await wait_for(
        lambda: "TASK_RUNNING" in master.states("forker") and container_of(master, "forker"),
        "running",
    )
    pids = pids_group(container)
    assert (pids / "pids.max").read_text().strip() == "16"
    await wait_for(lambda: "max 0" not in (pids / "pids.events").read_text(), "a fork refused", 15)
    assert int((pids / "pids.current").read_text()) <= 16
    escaped = int(await wait_for(lambda: child_pid.exists() and child_pid.read_text(), "pid"))
    assert os.getsid(escaped) == escaped
    # It also hides in a group of its own below the container's: the container's groups are
    # destroyed with the groups under them, as Mesos' cgroups::destroy does.
    nested = pids / "escape"
    nested.mkdir()
    (nested / "cgroup.procs").write_text(str(escaped))
    await master.send(
        {"type": "KILL_TASK", "framework_id": {"value": FID}, "task_id": {"value": "forker"}}
    )
    status = await wait_for(lambda: terminal(master, "forker"), "killed", 20)
    box = sandbox(tmp_path, "forker")
    assert status["state"] == "TASK_KILLED", (status, (box / "stderr").read_text())
    await wait_for(lambda: process_gone(escaped), "the escaped process killed")
    await wait_for(lambda: not pids.exists(), "the group removed")


def test_pid_namespace_private_tmp_and_loopback_only_network(tmp_path, cgroups_root):
    marker = f"butte-marker-{uuid.uuid4().hex[:8]}"
    command = (
        "echo $$ > pid.txt; ls /proc | grep -E '^[0-9]+$' > procs.txt; "
        f"touch /tmp/{marker}; ls -a /tmp > tmp.txt; "
        "grep -o '^ *[a-z0-9]*:' /proc/net/dev | tr -d ' :' > net.txt; "
        # The work dir is under /tmp here: the sandbox must stay reachable by its path.
        'ls "$MESOS_SANDBOX" > sandbox.txt'
    )

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await run_task(master, "ns", command)
        status = await wait_for(lambda: terminal(master, "ns"), "the end", 20)
        assert status["state"] == "TASK_FINISHED", status
        box = sandbox(tmp_path, "ns")
        assert (box / "pid.txt").read_text().strip() == "1"
        # Itself (the shell) and at most the ls and grep it runs.
        assert set((box / "procs.txt").read_text().split()) <= {"1", "2", "3", "4"}
        assert marker in (box / "tmp.txt").read_text().split()
        assert (box / "tmp" / marker).exists()
        assert not Path("/tmp", marker).exists()
        assert (box / "net.txt").read_text().split() == ["lo"]
        assert str(tmp_path).startswith("/tmp/")
        assert {"stdout", "pid.txt"} <= set((box / "sandbox.txt").read_text().split())

    isolation = "cgroups/mem,namespaces/pid,filesystem/linux,network/loopback"
    run_scenario(tmp_path, scenario, agent_flags=flags(cgroups_root, isolation))


def test_share_pid_namespace_keeps_a_command_task_in_the_agents_namespace(tmp_path, cgroups_root):
    """ContainerInfo.linux_info.share_pid_namespace, as Mesos has it: under namespaces/pid
    the task stays in the agent's pid namespace, unless the agent disallows it."""
    host = os.readlink("/proc/self/ns/pid")
    shared = {"type": "MESOS", "linux_info": {"share_pid_namespace": True}}

    async def launch(master: FakeMaster, task_id: str, container: dict | None) -> dict:
        task = {
            "name": task_id,
            "task_id": {"value": task_id},
            "agent_id": {"value": AID},
            "resources": resources(),
            "command": {"value": "readlink /proc/self/ns/pid > ns.txt"},
            **({"container": container} if container else {}),
        }
        await master.send({"type": "RUN_TASK", "framework": FRAMEWORK, "task": task})
        return await wait_for(lambda: terminal(master, task_id), f"{task_id} to end", 20)

    async def allowed(master: FakeMaster, agent: AgentProcess) -> None:
        assert (await launch(master, "shared", shared))["state"] == "TASK_FINISHED"
        assert (await launch(master, "own", None))["state"] == "TASK_FINISHED"
        assert (sandbox(tmp_path, "shared") / "ns.txt").read_text().strip() == host
        assert (sandbox(tmp_path, "own") / "ns.txt").read_text().strip() != host

    async def disallowed(master: FakeMaster, agent: AgentProcess) -> None:
        status = await launch(master, "refused", shared)
        assert status["state"] == "TASK_FAILED", status
        assert "--disallow_sharing_agent_pid_namespace" in status["message"]

    isolation = "cgroups/mem,namespaces/pid"
    run_scenario(tmp_path, allowed, agent_flags=flags(cgroups_root, isolation))
    refusing = flags(cgroups_root, isolation, "--disallow_sharing_agent_pid_namespace")
    (tmp_path / "b").mkdir()
    run_scenario(tmp_path / "b", disallowed, agent_flags=refusing)


def test_switch_user_unknown_user_and_secrets(tmp_path, cgroups_root):
    secret = base64.b64encode(b"s3cret value").decode()
    nobody = {**FRAMEWORK, "user": "nobody"}
    (tmp_path / "kit").mkdir()
    (tmp_path / "kit" / "conf").write_text("c\n")
    with tarfile.open(tmp_path / "kit.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "kit", arcname="kit")

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        env = {
            "variables": [
                {"name": "PLAIN", "value": "p"},
                {
                    "name": "TOKEN",
                    "type": "SECRET",
                    "secret": {"type": "VALUE", "value": {"data": secret}},
                },
            ]
        }
        await run_task(
            master,
            "who",
            'id -un > who.txt; echo "$PLAIN $TOKEN" > env.txt; touch /tmp/mine kit/mine',
            framework=nobody,
            environment=env,
            uris=[{"value": str(tmp_path / "kit.tar.gz")}],
        )
        await run_task(master, "ghost", "true", user="no-such-user-here")
        reference = {
            "variables": [
                {
                    "name": "T",
                    "type": "SECRET",
                    "secret": {"type": "REFERENCE", "reference": {"name": "x"}},
                }
            ]
        }
        await run_task(master, "ref", "true", environment=reference)
        status = await wait_for(lambda: terminal(master, "who"), "who ends", 20)
        assert status["state"] == "TASK_FINISHED", status
        box = sandbox(tmp_path, "who")
        assert (box / "who.txt").read_text().strip() == "nobody"
        assert (box / "env.txt").read_text().strip() == "p s3cret value"
        assert box.resolve().stat().st_uid == 65534 or box.resolve().owner() == "nobody"
        assert (box / "tmp" / "mine").owner() == "nobody"
        # What was fetched (and unpacked) belongs to the task's user, who could write in it.
        for fetched in ("kit.tar.gz", "kit", "kit/conf", "kit/mine"):
            assert (box / fetched).owner() == "nobody", fetched
        ghost = await wait_for(lambda: terminal(master, "ghost"), "ghost ends", 20)
        assert ghost["state"] == "TASK_FAILED"
        assert ghost["reason"] == "REASON_CONTAINER_LAUNCH_FAILED"
        assert "user 'no-such-user-here' does not exist" in ghost["message"]
        ref = await wait_for(lambda: terminal(master, "ref"), "ref refused", 20)
        assert ref["state"] == "TASK_ERROR"
        assert "secret resolver" in ref["message"]
        # A task group of a root framework: each member runs as its own CommandInfo.user.
        members = [
            {
                "name": name,
                "task_id": {"value": name},
                "agent_id": {"value": AID},
                "command": {"value": "id -un > who.txt", **({"user": user} if user else {})},
            }
            for name, user in (("as-nobody", "nobody"), ("as-root", None))
        ]
        await master.send(
            {
                "type": "RUN_TASK_GROUP",
                "framework": FRAMEWORK,
                "executor": {"executor_id": {"value": "grp"}, "type": "DEFAULT"},
                "task_group": {"tasks": members},
            }
        )
        for name in ("as-nobody", "as-root"):
            done = await wait_for(lambda n=name: terminal(master, n), name, 20)
            assert done["state"] == "TASK_FINISHED", done
        tasks = sandbox(tmp_path, "grp") / "tasks"
        assert (tasks / "as-nobody" / "who.txt").read_text().strip() == "nobody"
        assert (tasks / "as-root" / "who.txt").read_text().strip() == "root"

    isolation = "cgroups/mem,filesystem/linux"
    run_scenario(tmp_path, scenario, agent_flags=flags(cgroups_root, isolation, "--switch_user"))


def test_custom_executor_and_spawned_executor_are_isolated_too(tmp_path, cgroups_root):
    """A custom executor is started with Popen: it joins its cgroups, gets its private /tmp
    and runs as the user before exec; with --executor_zygote=false the built-in one takes the
    same path (and its memory hog is still seen by the kernel's counters)."""
    marker = f"butte-custom-{uuid.uuid4().hex[:8]}"
    script = (
        f"id -un > who; touch /tmp/{marker}; cat /proc/self/cgroup > cgroups; "
        "echo ready > ready; exec sleep 60"
    )
    nobody = {**FRAMEWORK, "user": "nobody"}

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        task = {
            "name": "custom",
            "task_id": {"value": "custom"},
            "agent_id": {"value": AID},
            "resources": resources(),
            "executor": {
                "executor_id": {"value": "ce"},
                "command": {"value": script},
                "resources": resources(mem=32.0),
            },
        }
        await master.send({"type": "RUN_TASK", "framework": nobody, "task": task})
        box = tmp_path / f"work/slaves/{AID}/frameworks/{FID}/executors/ce/runs/latest"
        await wait_for(lambda: (box / "ready").exists(), "the custom executor ran", 20)
        assert (box / "who").read_text().strip() == "nobody"
        assert (box / "tmp" / marker).exists() and not Path("/tmp", marker).exists()
        lines = (box / "cgroups").read_text().splitlines()
        memory = [line for line in lines if ":memory:" in line]
        assert memory and memory[0].split(":")[2].startswith(f"/{cgroups_root}/")
        limit = Path(HIERARCHY, "memory", memory[0].split(":")[2].lstrip("/"))
        assert int((limit / "memory.limit_in_bytes").read_text()) == 96 * 1024 * 1024
        await run_task(master, "hog", "head -c 600000000 /dev/zero | tail > /dev/null")
        status = await wait_for(lambda: terminal(master, "hog"), "the hog's end", 30)
        assert status["reason"] == "REASON_CONTAINER_LIMITATION_MEMORY"

    isolation = "cgroups/mem,filesystem/linux"
    extra = ("--switch_user", "--executor_zygote=false")
    run_scenario(tmp_path, scenario, agent_flags=flags(cgroups_root, isolation, *extra))


def test_agent_sigkill_recovers_tasks_in_cgroups_and_destroys_orphans(tmp_path, cgroups_root):
    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await run_task(master, "keep", "sleep 300", framework=CHECKPOINTING)
        go = await run_a_late_memory_hog(master, tmp_path)
        await wait_for(lambda: "TASK_RUNNING" in master.states("later"), "later running")
        container = await wait_for(
            lambda: "TASK_RUNNING" in master.states("keep") and container_of(master, "keep"),
            "running",
        )
        memory = group(cgroups_root, "memory", container)
        members = (memory / "cgroup.procs").read_text().split()
        assert len(members) >= 2  # the executor and its task
        orphan = group(cgroups_root, "freezer", "orphan-container")
        sleeper = plant_orphan(orphan)
        # As if the agent died in the middle of a kill, between freezing and thawing.
        freezer_state = group(cgroups_root, "freezer", container) / "freezer.state"
        freezer_state.write_text("FROZEN")
        await agent.kill()
        await agent.start()
        await wait_for(lambda: freezer_state.read_text().strip() == "THAWED", "thawed", 20)
        await wait_for(lambda: reregistrations(master), "re-registered", 20)
        await orphan_destroyed(sleeper, orphan)
        assert int((memory / "memory.limit_in_bytes").read_text()) == 96 * 1024 * 1024
        assert all(not process_gone(int(p)) for p in members)
        go.touch()
        later = await wait_for(lambda: terminal(master, "later"), "later's end", 30)
        assert later["state"] == "TASK_FAILED"
        assert later["reason"] == "REASON_CONTAINER_LIMITATION_MEMORY"
        # A kill reaches the executor once it has re-subscribed: repeat it, as schedulers do.
        status = None
        for _ in range(40):
            await master.send(
                {"type": "KILL_TASK", "framework_id": {"value": FID}, "task_id": {"value": "keep"}}
            )
            with contextlib.suppress(AssertionError):
                status = await wait_for(lambda: terminal(master, "keep"), "killed", 0.5)
                break
        assert status is not None, "the task was never killed"
        assert status["state"] == "TASK_KILLED"
        await wait_for(lambda: not memory.exists(), "its group removed")

    run_scenario(tmp_path, scenario, agent_flags=(*flags(cgroups_root), *fixed_port()))


def test_task_filling_its_disk_fails_with_the_disk_limitation(tmp_path):
    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await run_task(master, "filler", "head -c 5000000 /dev/urandom > big; sleep 60", disk=2)
        await run_task(master, "small", "echo small > out; sleep 60", disk=2)
        status = await wait_for(lambda: terminal(master, "filler"), "the filler's end", 20)
        assert status["state"] == "TASK_FAILED"
        assert status["reason"] == "REASON_CONTAINER_LIMITATION_DISK"
        assert "exceeds quota (2MB)" in status["message"]
        # The agent works on: the other task runs, a new one finishes.
        assert master.states("small") == ["TASK_STARTING", "TASK_RUNNING"]
        await run_task(master, "after", "true", disk=2)
        after = await wait_for(lambda: terminal(master, "after"), "after", 20)
        assert after["state"] == "TASK_FINISHED"

    flags = ("--isolation", "disk/du", "--enforce_container_disk_quota")
    flags += ("--container_disk_watermark_interval", "100ms")
    run_scenario(tmp_path, scenario, agent_flags=flags)


def test_finished_sandboxes_are_collected_after_gc_delay(tmp_path):
    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await run_task(master, "done", "echo bye")
        await run_task(master, "running", "sleep 60")
        await wait_for(lambda: terminal(master, "done"), "done ends", 20)
        await wait_for(lambda: "TASK_RUNNING" in master.states("running"), "running")
        executors = sandbox(tmp_path, "done").parent.parent.parent
        await wait_for(lambda: not (executors / "done").exists(), "the sandbox collected", 20)
        assert sandbox(tmp_path, "running").is_dir()

    flags = ("--gc_delay", "1secs", "--disk_watermark_interval", "200ms")
    run_scenario(tmp_path, scenario, agent_flags=flags)


def test_gc_delay_counts_from_the_executors_end_not_its_last_write(tmp_path):
    """As in Mesos (the agent sets the run directory's time when it removes the executor): a
    task that wrote nothing for longer than the delay keeps its sandbox for the delay after
    it ended, when an operator wants its logs."""

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await run_task(master, "quiet", "sleep 6")
        box = sandbox(tmp_path, "quiet")
        await wait_for(lambda: terminal(master, "quiet"), "quiet ends", 20)
        await asyncio.sleep(1.0)  # five sweeps: the sandbox's files are 7 s old by now
        assert box.is_dir()
        await wait_for(lambda: not box.exists(), "the sandbox collected", 20)

    # The allowed age is 6 s x (1 - the disk's used fraction): 4.4 s at 27% used.
    flags = ("--gc_delay", "6secs", "--gc_disk_headroom", "0", "--disk_watermark_interval", "200ms")
    run_scenario(tmp_path, scenario, agent_flags=flags)


def test_stdout_is_rotated_by_size_and_served_through_files(tmp_path):
    command = (
        "for i in $(seq 1 30); do printf 'line-%04d-%0990d\\n' $i 0; sleep 0.1; done; "
        "echo done > finished; sleep 60"
    )

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await run_task(master, "chatty", command)
        box = sandbox(tmp_path, "chatty")
        await wait_for(lambda: (box / "finished").exists(), "all written", 30)
        await wait_for(lambda: (box / "stdout.1").exists(), "a rotation", 10)
        assert not (box / "stdout.3").exists()
        assert (box / "stdout").stat().st_size <= 8 * 1024 + 1000 * 12
        kept = b"".join(
            (box / name).read_bytes()
            for name in ("stdout.2", "stdout.1", "stdout")
            if (box / name).exists()
        )
        numbers = [int(line[5:9]) for line in kept.splitlines()]
        assert numbers == sorted(numbers) and numbers[-1] == 30  # the newest lines, in order
        port = agent_port(master)
        path = str(box.resolve() / "stdout.1")
        url = f"http://127.0.0.1:{port}/files/read?path={path}&offset=0"
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            assert response.status == 200
            body = await response.json()
        assert body["data"].startswith("line-")

    flags = ("--container_logger", "logrotate", "--logrotate_max_stdout_size", "8KB")
    flags += ("--logrotate_stdout_options", "rotate 2")
    run_scenario(tmp_path, scenario, agent_flags=flags)


def test_agent_refuses_to_start_with_an_unknown_or_unavailable_isolator(tmp_path):
    base = [sys.executable, "-m", "butte.agent", "--master", "127.0.0.1:1"]
    base += ["--work_dir", str(tmp_path / "w")]
    unknown = subprocess.run(
        [*base, "--isolation", "cgroups/mem,nope/nope"], capture_output=True, text=True, timeout=60
    )
    assert unknown.returncode == 2
    assert "unknown isolator(s) nope/nope" in unknown.stderr
    empty = tmp_path / "no-cgroups"
    empty.mkdir()
    missing = subprocess.run(
        [*base, "--isolation", "cgroups/mem", "--cgroups_hierarchy", str(empty)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1
    if os.geteuid() == 0:
        assert "no cgroup v1 hierarchy for memory" in missing.stderr
    else:
        assert "need the agent to run as root" in missing.stderr
    if _missing() is None and not _has_gpu():
        gpu = subprocess.run(
            [*base, "--isolation", "gpu/nvidia"], capture_output=True, text=True, timeout=60
        )
        assert gpu.returncode == 1
        assert "NVML cannot be used" in gpu.stderr or "nvidia-ml-py" in gpu.stderr
    bad = subprocess.run(
        [*base, "--nvidia_gpu_devices", "0,x"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "expected indices" in bad.stderr
    # Devices named for an isolator that is not on would be used by nothing (Mesos refuses).
    unused = subprocess.run(
        [*base, "--isolation", "posix/cpu", "--nvidia_gpu_devices", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unused.returncode == 2
    assert "--nvidia_gpu_devices can only be given with gpu/nvidia" in unused.stderr


def _has_gpu() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml.nvmlDeviceGetCount() > 0
    except Exception:  # noqa: BLE001 - no library, no driver, no device: no GPU
        return False
