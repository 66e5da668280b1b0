"""Isolation logic without real cgroups: the cgroup v2 code on a fake cgroupfs tree (plain
files), v1 detection, isolator flag parsing and bad limits, and the agent core's handling of
limitations, container resources and users, and secrets."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import types
from pathlib import Path

import pytest
from test_agent_machine import FID, Harness, command_task, framework, run, started

from butte.agent.containerizer import cgroupfs
from butte.agent.containerizer.isolators import (
    ContainerSetup,
    IsolationOptions,
    IsolatorContext,
    IsolatorUnavailable,
    LaunchRefused,
    Limitation,
    parse_isolation,
)
from butte.agent.containerizer.isolators.cgroups_cpu import CgroupsCpu, v2_weight
from butte.agent.containerizer.isolators.cgroups_mem import CgroupsMem
from butte.agent.containerizer.isolators.cgroups_pids import CgroupsPids
from butte.agent.effects import DestroyContainer, LaunchContainer
from butte.core.codec import encode_json
from butte.core.messages import TaskInfo, decode

MB = 1024 * 1024


def fake_v2(root: Path, controllers: str = "cpuset cpu io memory pids") -> Path:
    """A directory that looks like a cgroup v2 hierarchy (files only; no kernel behind)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text(controllers + "\n")
    (root / "cgroup.subtree_control").write_text("")
    return root


V2_FILES = (
    "cgroup.procs cgroup.subtree_control cgroup.kill memory.max memory.swap.max memory.events "
    "memory.peak memory.current memory.stat cpu.weight cpu.max cpu.stat pids.max pids.current"
).split()


def kernel_dir(hierarchy: Path, relative: str) -> None:
    """Group directories down to ``relative``, each with the files the kernel would make."""
    path = hierarchy
    for part in relative.split("/"):
        path = path / part
        path.mkdir(exist_ok=True)
        for name in V2_FILES:
            if not (path / name).exists():
                (path / name).write_text("")


def spec(container_id: str = "c1", **resources: float) -> LaunchContainer:
    return LaunchContainer(
        container_id,
        FID,
        "e1",
        "/nonexistent/sandbox",
        ("true",),
        {},
        builtin=True,
        resources=tuple(sorted(resources.items())),
    )


def context(cg: cgroupfs.Cgroups, **options) -> IsolatorContext:
    return IsolatorContext(IsolationOptions(**options), None, cg)


def test_v2_is_detected_and_controllers_enabled_down_to_the_container(tmp_path):
    hierarchy = fake_v2(tmp_path / "cg")
    cg = cgroupfs.detect(str(hierarchy), "butte/agents", ["memory", "cpu", "cpuacct", "pids"])
    assert cg.version == 2
    for d in ("butte", "butte/agents", "butte/agents/c1", "butte/agents/c2"):
        kernel_dir(hierarchy, d)
    procs = cg.create(["memory", "cpu", "cpuacct", "pids"], "c1")
    container = hierarchy / "butte/agents/c1"
    assert procs == [str(container / "cgroup.procs")]
    # Enabled in every ancestor's subtree_control (the fake files just record the write).
    assert (hierarchy / "cgroup.subtree_control").read_text() == "+cpu +memory +pids"
    (hierarchy / "butte" / "cgroup.subtree_control").write_text("cpu memory pids")
    (hierarchy / "butte/agents" / "cgroup.subtree_control").write_text("")
    cg.create(["memory"], "c2")
    assert (hierarchy / "butte/agents/cgroup.subtree_control").read_text() == "+memory"
    assert cg.containers() == {"c1", "c2"}


def test_v2_missing_controller_and_bad_root_are_refused(tmp_path):
    hierarchy = fake_v2(tmp_path / "cg", controllers="cpu")
    with pytest.raises(cgroupfs.CgroupError, match="lacks controller"):
        cgroupfs.detect(str(hierarchy), "butte", ["memory"])
    with pytest.raises(cgroupfs.CgroupError, match="relative path"):
        cgroupfs.detect(str(hierarchy), "../escape", ["cpu"])
    with pytest.raises(cgroupfs.CgroupError, match="no cgroup v1 hierarchy for memory"):
        cgroupfs.detect(str(tmp_path / "empty"), "butte", ["memory"])


def test_v1_layout_is_found_per_controller(tmp_path):
    for controller, marker in (("memory", "memory.limit_in_bytes"), ("freezer", "cgroup.procs")):
        (tmp_path / controller).mkdir()
        (tmp_path / controller / marker).write_text("")
    cg = cgroupfs.detect(str(tmp_path), "butte", ["memory"])
    assert cg.version == 1 and set(cg.mounts) == {"memory", "freezer"}
    # The freezer is always used in v1: it is what makes kills atomic.
    assert cg.container_dirs(["memory"], "c1") == [
        str(tmp_path / "memory/butte/c1"),
        str(tmp_path / "freezer/butte/c1"),
    ]


def test_v2_memory_limit_oom_and_statistics(tmp_path):
    hierarchy = fake_v2(tmp_path / "cg")
    cg = cgroupfs.detect(str(hierarchy), "butte", ["memory"])
    kernel_dir(hierarchy, "butte/c1")
    cg.create(["memory"], "c1")
    mem = CgroupsMem(context(cg, cgroups_limit_swap=True))
    mem.prepare(spec(mem=64.0), ContainerSetup())
    d = hierarchy / "butte/c1"
    assert (d / "memory.max").read_text() == str(64 * MB)
    assert (d / "memory.swap.max").read_text() == "0"
    # Under Mesos' floor of 32 MB the floor applies.
    mem.prepare(spec(mem=1.0), ContainerSetup())
    assert (d / "memory.max").read_text() == str(32 * MB)
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n")
    assert mem.limitation("c1") is None
    (d / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    (d / "memory.peak").write_text(str(70 * MB + 4096))
    (d / "memory.stat").write_text("anon 5000\nfile 7000\n")
    limitation = mem.limitation("c1")
    assert limitation is not None
    assert limitation.reason == "REASON_CONTAINER_LIMITATION_MEMORY"
    # Sizes as Mesos prints them (no precision lost), then the group's statistics.
    assert limitation.message == (
        "Memory limit exceeded: Requested: 32MB Maximum Used: 71684KB\n"
        "\nMEMORY STATISTICS: \nanon 5000\nfile 7000\n"
    )
    (d / "memory.current").write_text(str(10 * MB))
    (d / "memory.swap.current").write_text(str(MB))
    (d / "memory.stat").write_text("anon 5000\nfile 7000\nfile_mapped 300\nunevictable 9\n")
    stats: dict[str, float] = {}
    mem.usage("c1", stats)
    assert stats == {
        "mem_limit_bytes": 32 * MB,
        "mem_total_bytes": 10 * MB,
        "mem_total_memsw_bytes": 11 * MB,  # --cgroups_limit_swap
        "mem_rss_bytes": 5000,
        "mem_anon_bytes": 5000,
        "mem_cache_bytes": 7000,
        "mem_file_bytes": 7000,
        "mem_mapped_file_bytes": 300,
        "mem_unevictable_bytes": 9,
        "mem_oom_events": 1,
    }


@pytest.mark.parametrize("bad", [float("nan"), -1.0, float("inf"), 1e20])
def test_bad_limits_refuse_the_launch(tmp_path, bad):
    hierarchy = fake_v2(tmp_path / "cg")
    cg = cgroupfs.detect(str(hierarchy), "butte", ["memory", "cpu"])
    kernel_dir(hierarchy, "butte/c1")
    cg.create(["memory", "cpu"], "c1")
    with pytest.raises(LaunchRefused, match="invalid mem"):
        CgroupsMem(context(cg)).prepare(spec(mem=bad), ContainerSetup())
    with pytest.raises(LaunchRefused, match="invalid cpus"):
        CgroupsCpu(context(cg)).prepare(spec(cpus=bad), ContainerSetup())


def test_v2_cpu_weight_quota_pids_and_kill(tmp_path):
    hierarchy = fake_v2(tmp_path / "cg")
    cg = cgroupfs.detect(str(hierarchy), "butte", ["cpu", "pids"])
    kernel_dir(hierarchy, "butte/c1")
    cg.create(["cpu", "pids"], "c1")
    d = hierarchy / "butte/c1"
    CgroupsCpu(context(cg, cgroups_enable_cfs=True)).prepare(spec(cpus=1.5), ContainerSetup())
    assert (d / "cpu.weight").read_text() == str(v2_weight(1536))
    assert (d / "cpu.max").read_text() == "150000 100000"
    assert v2_weight(2) == 1 and v2_weight(262144) == 10000
    CgroupsPids(context(cg, container_max_pids=7)).prepare(spec(), ContainerSetup())
    assert (d / "pids.max").read_text() == "7"
    cg.kill(["cpu", "pids"], "c1")
    assert (d / "cgroup.kill").read_text() == "1"  # v2 kills through cgroup.kill
    (d / "cpu.stat").write_text(
        "usage_usec 3000000\nuser_usec 2000000\nsystem_usec 1000000\n"
        "nr_periods 10\nnr_throttled 4\nthrottled_usec 500000\n"
    )
    stats: dict[str, float] = {}
    CgroupsCpu(context(cg)).usage("c1", stats)
    # No CFS quota, no throttling figures (as Mesos).
    assert stats == {"cpus_user_time_secs": 2.0, "cpus_system_time_secs": 1.0}
    stats = {}
    CgroupsCpu(context(cg, cgroups_enable_cfs=True)).usage("c1", stats)
    assert stats == {
        "cpus_user_time_secs": 2.0,
        "cpus_system_time_secs": 1.0,
        "cpus_nr_periods": 10,
        "cpus_nr_throttled": 4,
        "cpus_throttled_time_secs": 0.5,
    }
    # Processes as Mesos counts them (the group's processes), threads apart.
    (d / "cgroup.procs").write_text("101\n102\n")
    (d / "pids.current").write_text("12")
    stats = {}
    CgroupsPids(context(cg)).usage("c1", stats)
    assert stats == {"processes": 2, "threads": 12}


def test_isolation_flag_parsing():
    assert parse_isolation("cgroups/mem, namespaces/pid") == ["cgroups/mem", "namespaces/pid"]
    with pytest.raises(IsolatorUnavailable, match="unknown isolator"):
        parse_isolation("cgroups/mem,gpu/amd")
    with pytest.raises(IsolatorUnavailable, match="twice"):
        parse_isolation("cgroups/mem,cgroups/mem")


@pytest.mark.parametrize("counted_first", [True, False])
def test_v1_oom_eventfd_reports_the_limitation_on_the_loop(tmp_path, counted_first):
    """The v1 watch registers ``<eventfd> <oom_control fd>`` in cgroup.event_control; here
    the test plays the kernel by signalling the eventfd itself. The kernel may signal before
    its OOM killer has killed and counted (``counted_first`` False): the first read finds
    ``oom_kill 0``, and the count that follows is still reported."""
    cg, d = _v1_memory_group(tmp_path)
    counted = "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n"

    async def main() -> list:
        seen: list = []
        mem = CgroupsMem(IsolatorContext(IsolationOptions(), asyncio.get_running_loop(), cg))
        mem.started("c1", lambda cid, limitation: seen.append((cid, limitation)))
        event_fd, _ = (d / "cgroup.event_control").read_text().split()
        if counted_first:
            (d / "memory.oom_control").write_text(counted)
        os.eventfd_write(int(event_fd), 1)
        if not counted_first:
            await asyncio.sleep(0.03)
            (d / "memory.oom_control").write_text(counted)
        for _ in range(500):
            if seen:
                break
            await asyncio.sleep(0.01)
        mem.cleanup("c1")
        return seen

    ((cid, limitation),) = asyncio.run(main())
    assert cid == "c1" and limitation.reason == "REASON_CONTAINER_LIMITATION_MEMORY"
    assert limitation.message == "Memory limit exceeded: Requested: 96MB Maximum Used: 96MB"


def _v2_memory_groups(tmp_path: Path, *container_ids: str) -> tuple[cgroupfs.Cgroups, Path]:
    hierarchy = fake_v2(tmp_path / "cg")
    cg = cgroupfs.detect(str(hierarchy), "butte", ["memory"])
    for cid in container_ids:
        kernel_dir(hierarchy, f"butte/{cid}")
        cg.create(["memory"], cid)
        d = hierarchy / "butte" / cid
        (d / "memory.max").write_text(str(64 * MB))
        (d / "memory.peak").write_text(str(70 * MB))
        (d / "memory.events").write_text("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n")
    return cg, hierarchy / "butte"


async def _until(predicate, seconds: float = 2.0) -> float:
    """Waits on the loop for ``predicate``; the seconds it took (fails after ``seconds``)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not predicate():
        assert loop.time() - start < seconds, "not seen in time"
        await asyncio.sleep(0.002)
    return loop.time() - start


def test_v2_oom_kill_in_memory_events_reports_the_limitation_at_once(tmp_path):
    """v2 watches memory.events (inotify: the kernel tells of a change as a modification,
    as a write to the fake tree's plain file does): a rise of ``oom_kill`` is reported at
    once, as v1's eventfd is, and only a rise; other counters changing report nothing."""
    cg, root = _v2_memory_groups(tmp_path, "c1")
    events = root / "c1/memory.events"

    async def main() -> tuple[list, float]:
        seen: list = []
        mem = CgroupsMem(IsolatorContext(IsolationOptions(), asyncio.get_running_loop(), cg))
        mem.started("c1", lambda cid, limitation: seen.append((cid, limitation)))
        events.write_text("low 0\nhigh 0\nmax 7\noom 0\noom_kill 0\n")  # reclaim at max
        await asyncio.sleep(0.05)
        assert seen == []
        events.write_text("low 0\nhigh 0\nmax 8\noom 1\noom_kill 1\n")
        took = await _until(lambda: seen)
        events.write_text("low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\n")  # no new kill
        await asyncio.sleep(0.05)
        assert len(seen) == 1
        events.write_text("low 0\nhigh 0\nmax 9\noom 2\noom_kill 2\n")
        await _until(lambda: len(seen) == 2)
        # Destroyed: the watch goes with it, and later writes tell nothing.
        mem.cleanup("c1")
        assert mem._events == {} and mem._by_wd == {}
        events.write_text("low 0\nhigh 0\nmax 9\noom 3\noom_kill 3\n")
        await asyncio.sleep(0.05)
        return seen, took

    seen, took = asyncio.run(main())
    assert took < 0.5
    assert [cid for cid, _ in seen] == ["c1", "c1"]
    limitation = seen[0][1]
    assert limitation.reason == "REASON_CONTAINER_LIMITATION_MEMORY"
    assert limitation.message.startswith(
        "Memory limit exceeded: Requested: 64MB Maximum Used: 70MB\n\nMEMORY STATISTICS: \n"
    )


def test_v2_oom_watch_before_the_watch_after_recovery_and_a_removed_group(tmp_path):
    """An OOM between a container's start and its watch is reported; a recovered container
    that still runs is re-watched for OOMs from then on, and one from before its recovery is
    not its limitation, even at its end (Mesos' memory isolator only listens from recovery
    on), while one that ended while the agent was down ended by its OOM; a group removed
    under a watch leaves nothing behind. Without memory.peak (before Linux
    5.19) the peak is the usage now."""
    cg, root = _v2_memory_groups(tmp_path, "early", "old", "gone", "ended")
    killed = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n"
    (root / "early/memory.events").write_text(killed)
    (root / "old/memory.events").write_text(killed)
    (root / "old/cgroup.procs").write_text("4242\n")  # still running at recovery
    (root / "ended/memory.events").write_text(killed)  # ended while the agent was down
    (root / "early/memory.peak").unlink()
    (root / "early/memory.current").write_text(str(60 * MB))

    async def main() -> tuple[list, CgroupsMem]:
        seen: list = []
        mem = CgroupsMem(IsolatorContext(IsolationOptions(), asyncio.get_running_loop(), cg))

        def on_limit(cid: str, limitation: Limitation) -> None:
            seen.append((cid, limitation.message))

        mem.started("early", on_limit)
        assert seen == []  # told on the loop, after the caller's own report of the start
        mem.recover_spec(spec("old"), on_limit)
        assert mem.limitation("old") is None
        mem.recover_spec(spec("ended"), on_limit)
        assert mem.limitation("ended") is not None  # its OOM ended it
        mem.cleanup("ended")
        mem.started("gone", on_limit)
        await _until(lambda: seen)
        await asyncio.sleep(0.05)
        assert [cid for cid, _ in seen] == ["early"]
        (root / "old/memory.events").write_text("low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n")
        await _until(lambda: len(seen) == 2)
        (root / "gone/memory.events").unlink()  # the kernel drops the watch: IN_IGNORED
        await _until(lambda: mem._events["gone"].wd is None)
        mem.cleanup("gone")
        return seen, mem

    seen, mem = asyncio.run(main())
    assert [(cid, message.split("\n")[0]) for cid, message in seen] == [
        ("early", "Memory limit exceeded: Requested: 64MB Maximum Used: 60MB"),
        ("old", "Memory limit exceeded: Requested: 64MB Maximum Used: 70MB"),
    ]
    assert set(mem._by_wd.values()) == {"early", "old"}


# -- the agent core --------------------------------------------------------------------------


def test_limitation_fails_tasks_with_its_reason_and_destroys_the_container():
    h = Harness()
    container = started(h)
    h.update("t1", "t1", "TASK_RUNNING")
    h.ack(h.updates()[-1])
    message = "Memory limit exceeded: Requested: 96MB Maximum Used: 96MB"
    h.apply(h.agent.container_limited(container, "REASON_CONTAINER_LIMITATION_MEMORY", message, 0))
    assert h.destroyed == [DestroyContainer(container, 0.0)]
    # The executor's own report of the OOM kill is turned into the limitation.
    assert h.update("t1", "t1", "TASK_FAILED", message="Command terminated with signal Killed")
    failed = h.updates()[-1]
    assert failed.state == "TASK_FAILED"
    assert failed.reason == "REASON_CONTAINER_LIMITATION_MEMORY"
    assert failed.message == message
    h.check()


def test_limitation_before_the_executor_reports_fails_tasks_on_exit():
    h = Harness()
    container = started(h)
    h.update("t1", "t1", "TASK_RUNNING")
    h.ack(h.updates()[-1])
    h.apply(h.agent.container_limited(container, "REASON_CONTAINER_LIMITATION_DISK", "Disk", 0))
    h.apply(h.agent.container_exited(container, 9, h.now()))
    failed = h.updates()[-1]
    assert (failed.state, failed.reason, failed.message) == (
        "TASK_FAILED",
        "REASON_CONTAINER_LIMITATION_DISK",
        "Disk",
    )
    h.check()


def test_launch_carries_resource_totals_and_the_user():
    h = Harness()
    h.register()
    task = command_task("t1", command={"value": "true", "user": "alice"})
    run(h, task)
    (launch,) = h.launched.values()
    # The task's cpus plus the command executor's 0.1 cpus and 32 MB.
    assert dict(launch.resources) == {"cpus": 1.1, "mem": 32.0}
    assert launch.user == "alice"
    run(h, command_task("t2"), framework(user="bob"))
    assert h.launched["c1"].user == "bob"


def secret_task(task_id: str, secret: dict) -> TaskInfo:
    body = {
        "name": task_id,
        "task_id": {"value": task_id},
        "agent_id": {"value": "a"},
        "command": {
            "value": "true",
            "environment": {"variables": [{"name": "S", "type": "SECRET", "secret": secret}]},
        },
    }
    return decode(encode_json(body), TaskInfo)


def test_reference_secrets_are_refused_with_task_error():
    h = Harness()
    h.register()
    run(h, secret_task("ref", {"type": "REFERENCE", "reference": {"name": "db"}}))
    run(h, secret_task("empty", {"type": "VALUE"}))
    run(h, secret_task("ok", {"type": "VALUE", "value": {"data": base64.b64encode(b"x").decode()}}))
    by_task = {s.task_id.value: s for s in h.updates()}
    assert by_task["ref"].state == "TASK_ERROR"
    assert "no secret resolver" in (by_task["ref"].message or "")
    assert by_task["empty"].state == "TASK_ERROR"
    assert "ok" not in by_task and len(h.launched) == 1


def test_disk_quota_from_the_disk_resource_and_its_message(tmp_path):
    from butte.agent.containerizer.isolators.disk_du import DiskDu

    disk = DiskDu(IsolatorContext(IsolationOptions(enforce_container_disk_quota=True), None, None))
    # disk 0 is no disk resource at all in Mesos: no quota, whatever the sandbox holds.
    disk.prepare(spec("none", disk=0.0), ContainerSetup())
    disk.prepare(spec("one", disk=1.0), ContainerSetup())
    for cid in ("none", "one"):
        disk._watched[cid].used = 1500 * 1024
    assert disk.limitation("none") is None
    limitation = disk.limitation("one")
    assert limitation is not None and limitation.reason == "REASON_CONTAINER_LIMITATION_DISK"
    assert limitation.message == "Disk usage (1500KB) exceeds quota (1MB)"


def test_disk_usage_counts_blocks_once_per_file_and_skips_symlinks(tmp_path):
    from butte.agent.containerizer.isolators.disk_du import disk_usage

    (tmp_path / "d").mkdir()
    data = tmp_path / "d" / "data"
    data.write_bytes(os.urandom(1 << 20))
    base = disk_usage(str(tmp_path))
    assert base >= 1 << 20
    os.link(data, tmp_path / "hard")
    (tmp_path / "soft").symlink_to("/usr")
    # The hard link adds no blocks; the symbolic link is not followed.
    assert disk_usage(str(tmp_path)) - base < 16 * 1024


def test_gc_age_shrinks_as_the_disk_fills_and_only_finished_sandboxes_go(tmp_path):
    from butte.agent import gc

    week = 7 * 86400.0
    assert gc.max_age(week, 0.1, 0.0) == pytest.approx(0.9 * week)
    assert gc.max_age(week, 0.1, 0.5) == pytest.approx(0.4 * week)
    assert gc.max_age(week, 0.1, 0.95) == 0.0
    runs = tmp_path / "slaves/A/frameworks/F/executors/E/runs"
    for cid in ("old", "live", "new"):
        (runs / cid).mkdir(parents=True)
        (runs / cid / "stdout").write_text("x")
    (runs / "latest").symlink_to("old")
    os.utime(runs / "old", (1000, 1000))
    os.utime(runs / "old" / "stdout", (1000, 1000))
    os.utime(runs / "live", (1000, 1000))
    os.utime(runs / "live" / "stdout", (1000, 1000))
    found = {s.container_id: s for s in gc.scan(str(tmp_path))}
    assert set(found) == {"old", "live", "new"}
    doomed = gc.select(list(found.values()), {"live"}, now=5000.0 + 1e9, age=1e9)
    assert [s.container_id for s in doomed] == ["old"]
    gc.remove(doomed[0], "A")
    assert not (runs / "old").exists() and not (runs / "latest").is_symlink()
    for cid in ("live", "new"):
        gc.remove(found[cid], "A")
    assert not (tmp_path / "slaves/A/frameworks/F").exists()
    assert (tmp_path / "slaves/A/frameworks").is_dir()  # this agent's own stays


def test_an_earlier_agents_directory_goes_with_its_last_sandbox(tmp_path):
    """As Mesos collects an old agent's directory: nothing empty is left of it."""
    from butte.agent import gc

    old = tmp_path / "slaves" / "OLD" / "frameworks" / "F" / "executors" / "e" / "runs" / "c"
    old.mkdir(parents=True)
    (sandbox,) = gc.scan(str(tmp_path))
    gc.remove(sandbox, "NEW")
    assert os.listdir(tmp_path / "slaves") == []


def test_log_sizes_and_options_are_parsed_or_refused():
    from butte.agent.containerizer.logrotate import parse_options, parse_size

    assert parse_size("10MB") == 10 << 20 and parse_size("512kb") == 512 << 10
    assert parse_size("4096") == 4096
    for bad in ("ten", "-1MB", "0B", "1PB"):
        with pytest.raises(ValueError):
            parse_size(bad)
    assert parse_options("rotate 3") == 3
    for bad in ("rotate 0", "compress", "rotate 3 compress", ""):
        with pytest.raises(ValueError):
            parse_options(bad)


def test_copytruncate_rotation_keeps_n_copies_and_writers_go_on(tmp_path):
    from butte.agent.containerizer.logrotate import RotationPolicy

    policy = RotationPolicy(max_stdout=10, max_stderr=1 << 20, keep_stdout=2, keep_stderr=2)
    stdout = tmp_path / "stdout"
    writer = os.open(stdout, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        for round_ in range(4):
            os.write(writer, f"round {round_} bytes\n".encode())
            assert policy.check(str(tmp_path)) == 1
            assert stdout.stat().st_size == 0
        os.write(writer, b"after\n")  # lands at the start of the truncated file
    finally:
        os.close(writer)
    assert stdout.read_text() == "after\n"
    assert (tmp_path / "stdout.1").read_text() == "round 3 bytes\n"
    assert (tmp_path / "stdout.2").read_text() == "round 2 bytes\n"
    assert not (tmp_path / "stdout.3").exists()
    assert oct((tmp_path / "stdout.1").stat().st_mode & 0o777) == oct(0o640)
    assert policy.check(str(tmp_path)) == 0  # under the limit: nothing to do


def test_a_rotation_that_finds_the_disk_full_keeps_the_older_copies(tmp_path, monkeypatch):
    """A copy that fails (ENOSPC) leaves the copies and the file as they were, however often
    it is tried; before, each try shifted the copies first and pushed a good one out."""
    import errno

    from butte.agent.containerizer import logrotate

    (tmp_path / "stdout").write_text("current\n")
    (tmp_path / "stdout.1").write_text("older\n")
    (tmp_path / "stdout.2").write_text("oldest\n")

    def full(*args: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(logrotate.os, "copy_file_range", full)
    for _ in range(3):
        with pytest.raises(OSError):
            logrotate.rotate(str(tmp_path / "stdout"), 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stdout", "stdout.1", "stdout.2"]
    assert (tmp_path / "stdout").read_text() == "current\n"
    assert (tmp_path / "stdout.1").read_text() == "older\n"
    assert (tmp_path / "stdout.2").read_text() == "oldest\n"
    monkeypatch.undo()
    logrotate.rotate(str(tmp_path / "stdout"), 3)  # space again: an ordinary rotation
    assert (tmp_path / "stdout").read_text() == ""
    copies = [(tmp_path / f"stdout.{n}").read_text() for n in (1, 2, 3)]
    assert copies == ["current\n", "older\n", "oldest\n"]


def test_tail_follow_reads_the_rest_of_a_rotated_file(monkeypatch, capsysbinary):
    from butte.cli import task as task_cli

    files = {"box/stdout": b"abc"}
    reads = {"n": 0}

    class FakeMaster:
        def read_file(self, path: str, offset: int, length: int) -> tuple[int, bytes]:
            reads["n"] += 1
            if reads["n"] == 2:  # rotated between two reads
                files["box/stdout.1"] = b"abcdef"
                files["box/stdout"] = b"gh"
            data = files.get(path, b"")
            return len(data), data[offset : offset + length]

    monkeypatch.setattr(task_cli, "_state_of", lambda *a: "TASK_FINISHED")
    clock = iter(range(0, 10_000, 3))  # every look at the clock: 3 s later
    fake_time = types.SimpleNamespace(monotonic=lambda: next(clock), sleep=lambda s: None)
    monkeypatch.setattr(task_cli, "time", fake_time)
    task = {"task_id": {"value": "t"}, "framework_id": {"value": "f"}}
    assert task_cli._follow(FakeMaster(), "box/stdout", 3, task) == -1  # type: ignore[arg-type]
    assert capsysbinary.readouterr().out == b"defgh"


class FakeNvml:
    """Stands in for pynvml: ``count`` devices with minors 0.. and fixed UUIDs."""

    def __init__(self, count: int = 3, fail: bool = False) -> None:
        self.count = count
        self.fail = fail

    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's names
        if self.fail:
            raise RuntimeError("NVML Shared Library Not Found")

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return self.count

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        return index

    def nvmlDeviceGetUUID(self, handle: int) -> str:  # noqa: N802
        return f"GPU-{handle:04d}"

    def nvmlDeviceGetName(self, handle: int) -> bytes:  # noqa: N802
        return b"Fake H200"

    def nvmlDeviceGetMinorNumber(self, handle: int) -> int:  # noqa: N802
        return handle


def fake_v1(root: Path, *controllers: str) -> cgroupfs.Cgroups:
    markers = {"devices": "devices.allow", "freezer": "cgroup.procs"}
    for controller in (*controllers, "freezer"):
        (root / controller).mkdir(parents=True, exist_ok=True)
        (root / controller / markers[controller]).write_text("")
    return cgroupfs.detect(str(root), "butte", list(controllers))


def test_gpus_are_found_given_whole_and_only_theirs(tmp_path, monkeypatch):
    from butte.agent.containerizer.isolators.gpu_nvidia import RECORD_XATTR, NvidiaGpu

    cg = fake_v1(tmp_path, "devices")
    writes: list[tuple[str, str]] = []
    monkeypatch.setattr(cgroupfs, "write_text", lambda path, value: writes.append((path, value)))
    gpu = NvidiaGpu(context(cg), nvml=FakeNvml(3))
    assert [g.uuid for g in gpu.gpus] == ["GPU-0000", "GPU-0001", "GPU-0002"]
    setup = ContainerSetup()
    for cid in ("c1", "c4", "c5"):
        (tmp_path / "devices/butte" / cid).mkdir(parents=True)
    gpu.prepare(spec("c1", gpus=2.0), setup)
    assert setup.env["NVIDIA_VISIBLE_DEVICES"] == "GPU-0000,GPU-0001"
    assert setup.env["CUDA_VISIBLE_DEVICES"] == "GPU-0000,GPU-0001"
    d = str(tmp_path / "devices/butte/c1")
    # A v1 group allows everything: each GPU that is not the container's is denied alone.
    assert [(os.path.relpath(p, d), v) for p, v in writes] == [("devices.deny", "c 195:2 rwm")]
    assert os.getxattr(d, RECORD_XATTR) == b"0,1"
    with pytest.raises(LaunchRefused, match="asked for 2 GPU"):
        gpu.prepare(spec("c2", gpus=2.0), ContainerSetup())
    with pytest.raises(LaunchRefused, match="whole GPUs"):
        gpu.prepare(spec("c3", gpus=0.5), ContainerSetup())
    none = ContainerSetup()
    writes.clear()
    gpu.prepare(spec("c4"), none)  # no gpus: every GPU node denied
    assert [v for _, v in writes] == [f"c 195:{minor} rwm" for minor in (0, 1, 2)]
    assert none.env["NVIDIA_VISIBLE_DEVICES"] == "void"
    gpu.cleanup("c1")
    gpu.prepare(spec("c5", gpus=3.0), ContainerSetup())
    assert gpu.assigned["c5"] == [0, 1, 2]


def test_gpus_on_cgroup_v2_get_a_device_filter(tmp_path, monkeypatch):
    from butte.agent.containerizer import devicefilter
    from butte.agent.containerizer.isolators.gpu_nvidia import NvidiaGpu

    # v2 has no devices controller: gpu/nvidia does not need one in cgroup.controllers.
    cg = cgroupfs.detect(str(fake_v2(tmp_path / "v2", "memory")), "butte", ["devices"])
    attached: list[tuple[str, int, list[int]]] = []
    monkeypatch.setattr(devicefilter, "attach", lambda *args: attached.append(args))
    gpu = NvidiaGpu(context(cg), nvml=FakeNvml(2))
    for cid in ("c1", "c2"):
        (tmp_path / "v2/butte" / cid).mkdir(parents=True)
    gpu.prepare(spec("c1", gpus=1.0), ContainerSetup())
    gpu.prepare(spec("c2"), ContainerSetup())
    assert attached == [
        (str(tmp_path / "v2/butte/c1"), 195, [0, 255]),  # its GPU and nvidiactl
        (str(tmp_path / "v2/butte/c2"), 195, []),
    ]
    # A filter the kernel refuses refuses the launch and gives the GPU back.
    refusal = devicefilter.DeviceFilterError(1, "cannot attach the device filter: nope")

    def refuse(*args: object) -> None:
        raise refusal

    monkeypatch.setattr(devicefilter, "attach", refuse)
    (tmp_path / "v2/butte/c3").mkdir()
    with pytest.raises(OSError, match="nope"):
        gpu.prepare(spec("c3", gpus=1.0), ContainerSetup())
    assert gpu.assigned == {"c1": [0], "c2": []}


def test_gpu_start_up_refusals_and_recovery(tmp_path):
    from butte.agent.containerizer.isolators.gpu_nvidia import RECORD_XATTR, NvidiaGpu

    cg = fake_v1(tmp_path, "devices")
    with pytest.raises(IsolatorUnavailable, match="NVML cannot be used"):
        NvidiaGpu(context(cg), nvml=FakeNvml(fail=True))
    with pytest.raises(IsolatorUnavailable, match=r"names device\(s\) \[5\]"):
        NvidiaGpu(context(cg, nvidia_gpu_devices=(0, 5)), nvml=FakeNvml(2))
    gpu = NvidiaGpu(context(cg, nvidia_gpu_devices=(1,)), nvml=FakeNvml(2))
    assert [g.index for g in gpu.gpus] == [1]
    # Recovery reads the GPUs the container's group records; no record, no GPU.
    gpu = NvidiaGpu(context(cg), nvml=FakeNvml(3))
    for cid, record in (("old", b"2"), ("bare", None)):
        d = tmp_path / "devices/butte" / cid
        d.mkdir(parents=True)
        if record is not None:
            os.setxattr(d, RECORD_XATTR, record)
    for cid in ("old", "bare", "gone"):
        gpu.recover_spec(spec(cid, gpus=1.0), lambda cid, limitation: None)
    assert gpu.assigned == {"old": [2]}
    with pytest.raises(LaunchRefused):
        gpu.prepare(spec("new", gpus=3.0), ContainerSetup())


def _v1_memory_group(tmp_path: Path) -> tuple[cgroupfs.Cgroups, Path]:
    for controller, marker in (("memory", "memory.limit_in_bytes"), ("freezer", "cgroup.procs")):
        (tmp_path / controller).mkdir()
        (tmp_path / controller / marker).write_text("")
    cg = cgroupfs.detect(str(tmp_path), "butte", ["memory"])
    cg.create(["memory"], "c1")
    d = tmp_path / "memory/butte/c1"
    for name, text in (
        ("memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"),
        ("cgroup.event_control", ""),
        ("memory.limit_in_bytes", str(96 * MB)),
        ("memory.max_usage_in_bytes", str(96 * MB)),
    ):
        (d / name).write_text(text)
    return cg, d


class _CountingIsolation:
    """An `Isolation` stand-in whose OOM counter shows the OOM only once ``counted``."""

    switch_user = False

    def __init__(self, possible: bool) -> None:
        self.possible = possible
        self.counted = False
        self.calls: list = []

    def limitation(self, container_id: str) -> Limitation | None:
        if not self.counted:
            return None
        return Limitation("REASON_CONTAINER_LIMITATION_MEMORY", "Memory limit exceeded")

    def limitation_possible(self, container_id: str) -> bool:
        return self.possible

    def started(self, container_id: str, on_limit: object) -> None:
        pass

    def kill(self, container_id: str) -> None:
        self.calls.append("kill")

    def cleanup(self, container_id: str) -> None:
        self.calls.append("cleanup")

    def release(self, container_id: str) -> None:
        self.calls.append("release")


def _sigkill_end(possible: bool, agent_kills: bool) -> tuple[list, _CountingIsolation]:
    """A launcher task that ends by SIGKILL while its OOM counter lags 30 ms behind: the
    containerizer's callbacks in order, and the isolation's calls."""
    import subprocess

    from butte.agent.containerizer.posix import PosixContainerizer

    isolation = _CountingIsolation(possible)
    events: list = []
    # A real session for the container's pid: the containerizer sweeps it at the end.
    task = subprocess.Popen(["sleep", "60"], start_new_session=True)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        containerizer = PosixContainerizer(
            loop,
            lambda *_: None,
            lambda *_: None,
            lambda cid, status: events.append(("exited", status)),
            isolation=isolation,  # type: ignore[arg-type]
            on_limited=lambda cid, limitation: events.append(("limited", limitation.reason)),
        )
        containerizer.adopt_launched("c1", task.pid)
        if agent_kills:
            await containerizer.destroy("c1", 0.0)
        loop.call_later(0.03, setattr, isolation, "counted", True)
        containerizer.launcher_exited("c1", signal.SIGKILL)  # the raw wait status
        events.append("reported")
        for _ in range(1000):
            if ("exited", signal.SIGKILL) in events:
                break
            await asyncio.sleep(0.01)
        await containerizer.close()

    try:
        asyncio.run(main())
    finally:
        task.kill()
        task.wait()
    return events, isolation


def test_an_unexplained_sigkill_end_waits_for_the_oom_counter():
    events, isolation = _sigkill_end(possible=True, agent_kills=False)
    assert events == [
        "reported",
        ("limited", "REASON_CONTAINER_LIMITATION_MEMORY"),
        ("exited", signal.SIGKILL),
    ]
    assert isolation.calls == ["cleanup", "release"]  # the counters were read first


def test_a_sigkill_the_agent_sent_or_without_a_possible_oom_is_told_at_once():
    for possible, agent_kills in ((True, True), (False, False)):
        events, _ = _sigkill_end(possible, agent_kills)
        assert events == [("exited", signal.SIGKILL), "reported"], (possible, agent_kills)


def test_gpus_offered_without_gpu_nvidia_are_offered_with_a_warning(tmp_path, caplog):
    from butte.agent.server import AgentOptions, AgentServer
    from butte.core.resources import parse_resources

    server = AgentServer(AgentOptions("127.0.0.1:5050", str(tmp_path), parse_resources("gpus:2")))
    with caplog.at_level("WARNING", logger="butte.agent"):
        server._offer_gpus([])
    assert server.options.resources.scalar("gpus") == 2  # as Mesos offers them
    assert "gpus:2 without gpu/nvidia" in caplog.text and "no GPU devices" in caplog.text
    caplog.clear()
    AgentServer(
        AgentOptions("127.0.0.1:5050", str(tmp_path), parse_resources("cpus:1"))
    )._offer_gpus([])
    assert caplog.text == ""
