"""TaskInfo.limits (burstable cpus and mem): the checks and messages of Mesos' master and
agent, a container's limits from its tasks', the cgroup files the isolators write for them,
the Docker flags, and how the state endpoints render them (docs/isolation.md "Burstable
tasks")."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import msgspec
import pytest
from agent_kit import AID, Harness, custom_task, framework, run, started
from test_agent_isolation import MB, context, fake_v2, kernel_dir, spec

from butte.agent.containerizer import cgroupfs
from butte.agent.containerizer.isolators import ContainerSetup
from butte.agent.containerizer.isolators.cgroups_cpu import CgroupsCpu
from butte.agent.containerizer.isolators.cgroups_mem import CgroupsMem
from butte.agent.effects import LaunchContainer, UpdateContainer
from butte.core import docker_info, task_limits
from butte.core.codec import encode_json
from butte.core.messages import CommandInfo, TaskInfo, decode
from butte.core.task_validation import task_fields_problem

INF = {"value": "Infinity"}


def scalar(name: str, value: float) -> dict[str, Any]:
    return {"name": name, "type": "SCALAR", "scalar": {"value": value}}


def task(
    task_id: str = "t1", cpus: float | None = 0.5, mem: float | None = 64, **extra
) -> TaskInfo:
    resources = [scalar(n, v) for n, v in (("cpus", cpus), ("mem", mem)) if v is not None]
    body = {
        "name": task_id,
        "task_id": {"value": task_id},
        "agent_id": {"value": AID},
        "resources": resources,
        "command": {"value": "true"},
        **extra,
    }
    return decode(encode_json(body), TaskInfo)


def test_limits_parse_numbers_infinity_and_nothing_else():
    assert task_limits.parse({"cpus": {"value": 2}, "mem": INF}) == {"cpus": 2.0, "mem": math.inf}
    assert task_limits.parse({"mem": {"value": "512"}, "cpus": 1.5}) == {"mem": 512.0, "cpus": 1.5}
    assert task_limits.parse(None) == {}
    for bad, words in (
        ({"gpus": {"value": 1}}, "Only cpus and mem"),
        ({"cpus": {"value": "NaN"}}, "must be a number"),
        ({"cpus": {"value": True}}, "must be a number"),
        ({"mem": {"value": "lots"}}, "must be a number"),
        ({"mem": {}}, "must be a number"),
        ([1, 2], "must be a map"),
    ):
        with pytest.raises(ValueError, match=words):
            task_limits.parse(bad)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"cpus": None, "limits": {"cpus": {"value": 1}}},
            "When a CPU limit is specified, a CPU request must also be specified",
        ),
        (
            {"limits": {"cpus": {"value": 0.25}}},
            "The cpu limit must be greater than or equal to the cpu request",
        ),
        (
            {"limits": {"mem": {"value": 63}}},
            "The memory limit must be greater than or equal to the memory request",
        ),
        ({"limits": {"disk": {"value": 1}}}, "Only cpus and mem may be included"),
        ({"limits": {"mem": {"value": -1}}}, "greater than or equal to the memory request"),
    ],
)
def test_invalid_limits_get_the_mesos_masters_message(fields: dict, message: str) -> None:
    fields = dict(fields)
    cpus = fields.pop("cpus", 0.5)
    problem = task_fields_problem(task(cpus=cpus, **fields))
    assert problem is not None and message in problem


def test_valid_limits_pass():
    for limits in ({"cpus": {"value": 0.5}, "mem": {"value": 64}}, {"cpus": INF, "mem": INF}):
        assert task_fields_problem(task(limits=limits)) is None


def test_a_containers_limits_add_the_executors_and_the_unlimited_tasks_requests():
    executor = [scalar("cpus", 0.1), scalar("mem", 32)]
    burst = task("b", limits={"cpus": {"value": 2}, "mem": {"value": 256}})
    plain = task("p", cpus=1, mem=100)
    assert task_limits.container_limits(executor, [plain], False) == {}
    assert task_limits.container_limits(executor, [burst], False) == {"cpus": 2.1, "mem": 288}
    # A task without a cpu limit is not throttled by its neighbour's ceiling unless CFS
    # quotas are on for every container anyway.
    assert task_limits.container_limits(executor, [burst, plain], False) == {"mem": 388}
    both = task_limits.container_limits(executor, [burst, plain], True)
    assert both == {"cpus": pytest.approx(3.1), "mem": 388}
    unbounded = task("u", limits={"cpus": INF, "mem": INF})
    assert task_limits.container_limits(executor, [unbounded, plain], True) == {
        "cpus": math.inf,
        "mem": math.inf,
    }


def test_limits_render_as_the_v1_api_and_the_legacy_state_do():
    raw = {"mem": INF, "cpus": {"value": 2}}
    assert task_limits.v1_json(raw) == {"cpus": {"value": 2.0}, "mem": {"value": "Infinity"}}
    assert task_limits.flat_json(raw) == {"cpus": 2.0, "mem": "Infinity"}


# -- the agent core ------------------------------------------------------------------------


def test_the_agent_gives_the_container_its_tasks_limits():
    h = Harness(limited_resources=frozenset({"cpus", "mem"}))
    h.register()
    run(h, task(limits={"cpus": {"value": 2}, "mem": INF}))
    (launch,) = h.launched.values()
    assert dict(launch.resources) == {"cpus": 0.6, "mem": 96.0}
    assert dict(launch.limits) == {"cpus": 2.1, "mem": math.inf}
    run(h, task("t2"))
    assert h.launched["c1"].limits == ()


@pytest.mark.parametrize(
    ("enforced", "limits", "message"),
    [
        (
            {"mem"},
            {"cpus": {"value": 1}},
            "CPU limits can only be set on tasks launched in Mesos containers when the agent "
            "has loaded the 'cgroups/cpu' isolator",
        ),
        (
            {"cpus"},
            {"mem": {"value": 128}},
            "Memory limits can only be set on tasks launched in Mesos containers when the "
            "agent has loaded the 'cgroups/mem' isolator",
        ),
    ],
)
def test_an_agent_without_the_isolator_drops_the_task_as_mesos_does(enforced, limits, message):
    h = Harness(limited_resources=frozenset(enforced))
    h.register()
    run(h, task(limits=limits))
    [status] = h.updates()
    assert (status.state, status.reason, status.message) == (
        "TASK_LOST",
        "REASON_GC_ERROR",
        message,
    )
    run(h, task("t2", limits=limits), framework(capabilities=[{"type": "PARTITION_AWARE"}]))
    assert h.updates()[-1].state == "TASK_DROPPED"
    assert h.launched == {}


def test_a_docker_tasks_limits_need_no_cgroup_isolator():
    h = Harness(limited_resources=frozenset())
    assert h.agent._limits_problem([task(limits={"cpus": INF})]) is not None
    docker = {"type": "DOCKER", "docker": {"image": "alpine"}}
    assert h.agent._limits_problem([task(limits={"cpus": INF}, container=docker)]) is None


def test_a_task_joining_a_running_executor_grows_its_container():
    h = Harness(limited_resources=frozenset({"cpus", "mem"}))
    h.register()
    first = custom_task("a")
    run(h, first)
    (container_id,) = h.launched
    assert h.updated == []
    second = decode(
        encode_json(
            {
                **msgspec.to_builtins(custom_task("b")),
                "resources": [scalar("cpus", 1), scalar("mem", 128)],
                "limits": {"mem": {"value": 512}},
            }
        ),
        TaskInfo,
    )
    run(h, second)
    assert h.updated == [
        UpdateContainer(container_id, (("cpus", 1.0), ("mem", 128.0)), (("mem", 512.0),))
    ]


def test_a_task_ending_shrinks_its_executors_container_to_the_tasks_left():
    # Mesos' agent resizes the container on every terminal update (the isolators then lower
    # shares, quota and the soft limit; the hard memory limit stays where it was).
    h = Harness(limited_resources=frozenset({"cpus", "mem"}))
    h.register()
    run(h, custom_task("a"))
    (container_id,) = h.launched
    h.apply(h.agent.container_started(container_id, 4242, h.now()))
    h.subscribe("exec1")
    second = decode(
        encode_json(
            {
                **msgspec.to_builtins(custom_task("b")),
                "resources": [scalar("cpus", 1), scalar("mem", 128)],
                "limits": {"mem": {"value": 512}},
            }
        ),
        TaskInfo,
    )
    run(h, second)
    h.updated.clear()
    h.update("exec1", "b", "TASK_RUNNING")
    assert h.updated == []
    h.update("exec1", "b", "TASK_FINISHED")
    assert h.updated == [UpdateContainer(container_id, (), ())]
    h.update("exec1", "b", "TASK_FINISHED")  # a second terminal update resizes nothing
    assert len(h.updated) == 1


def test_a_command_tasks_end_leaves_its_container_alone():
    h = Harness(limited_resources=frozenset({"cpus", "mem"}))
    container_id = started(h)
    h.subscribe("t1")
    h.update("t1", "t1", "TASK_FINISHED")
    assert h.updated == [] and container_id in h.launched


# -- the isolators ---------------------------------------------------------------------------


def limited(
    container_id: str = "c1", limits: dict[str, float] | None = None, **resources: float
) -> LaunchContainer:
    base = spec(container_id, **resources)
    return LaunchContainer(
        base.container_id,
        base.framework_id,
        base.executor_id,
        base.sandbox,
        base.argv,
        base.env,
        builtin=True,
        resources=base.resources,
        limits=tuple(sorted((limits or {}).items())),
        command=CommandInfo(value="true"),
    )


@pytest.fixture(autouse=True)
def kernel_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """A write to a fake cgroup file replaces its value, as the kernel's files do (a plain
    file would keep the tail of a longer old value); a missing file still fails."""

    def write(path: str, value: str) -> None:
        with open(path, "r+") as f:
            f.write(value)
            f.truncate()

    monkeypatch.setattr(cgroupfs, "write_text", write)


def v1_groups(tmp_path: Path) -> tuple[cgroupfs.Cgroups, Path, Path]:
    """Fake v1 cpu, cpuacct and memory hierarchies with a group c1 and the files the kernel
    makes in it (its memory unlimited, as a new group's is)."""
    files = {
        "cpu": ("cpu.shares", "cpu.cfs_period_us", "cpu.cfs_quota_us", "cpu.stat"),
        "cpuacct": ("cpuacct.usage", "cpuacct.stat"),
        "memory": (
            "memory.limit_in_bytes",
            "memory.soft_limit_in_bytes",
            "memory.memsw.limit_in_bytes",
        ),
        "freezer": ("cgroup.procs",),
    }
    for controller, names in files.items():
        (tmp_path / controller).mkdir()
        for name in names:
            (tmp_path / controller / name).write_text("")
    cg = cgroupfs.detect(str(tmp_path), "butte", ["cpu", "cpuacct", "memory"])
    cg.create(["cpu", "cpuacct", "memory"], "c1")
    for controller, names in files.items():
        for name in names:
            (tmp_path / controller / "butte/c1" / name).write_text("")
    cpu, mem = tmp_path / "cpu/butte/c1", tmp_path / "memory/butte/c1"
    (mem / "memory.limit_in_bytes").write_text("9223372036854771712")
    return cg, cpu, mem


def test_v1_a_cpu_limit_is_the_cfs_quota_and_an_infinite_one_none(tmp_path):
    cg, cpu, _ = v1_groups(tmp_path)
    CgroupsCpu(context(cg)).prepare(limited(limits={"cpus": 2.5}, cpus=0.5), ContainerSetup())
    assert (cpu / "cpu.shares").read_text() == "512"
    assert (cpu / "cpu.cfs_quota_us").read_text() == "250000"
    assert (cpu / "cpu.cfs_period_us").read_text() == "100000"
    # Even with --cgroups_enable_cfs an infinite limit takes the quota away.
    isolator = CgroupsCpu(context(cg, cgroups_enable_cfs=True))
    isolator.prepare(limited(limits={"cpus": math.inf}, cpus=0.5), ContainerSetup())
    assert (cpu / "cpu.cfs_quota_us").read_text() == "-1"
    # Without a limit and without CFS quotas no quota file is written.
    (cpu / "cpu.cfs_quota_us").unlink()
    CgroupsCpu(context(cg)).prepare(limited(cpus=0.5), ContainerSetup())
    assert not (cpu / "cpu.cfs_quota_us").exists()


def test_v1_a_memory_limit_is_the_hard_limit_and_the_request_the_soft_one(tmp_path):
    cg, _, mem = v1_groups(tmp_path)
    setup = ContainerSetup()
    CgroupsMem(context(cg)).prepare(limited(limits={"mem": 512}, mem=64), setup)
    assert (mem / "memory.limit_in_bytes").read_text() == str(512 * MB)
    assert (mem / "memory.soft_limit_in_bytes").read_text() == str(64 * MB)
    assert setup.oom_score_adj == task_limits.oom_score_adj(64 * MB)
    assert 900 < setup.oom_score_adj <= 1000
    setup = ContainerSetup()
    CgroupsMem(context(cg, cgroups_limit_swap=True)).prepare(
        limited(limits={"mem": math.inf}, mem=64), setup
    )
    assert (mem / "memory.limit_in_bytes").read_text() == "-1"
    assert (mem / "memory.memsw.limit_in_bytes").read_text() == "-1"
    # No limit: the request is the hard limit, no soft one, no OOM score.
    (mem / "memory.soft_limit_in_bytes").unlink()
    setup = ContainerSetup()
    CgroupsMem(context(cg)).prepare(limited(mem=64), setup)
    assert (mem / "memory.limit_in_bytes").read_text() == str(64 * MB)
    assert not (mem / "memory.soft_limit_in_bytes").exists() and setup.oom_score_adj is None


def test_an_update_raises_the_hard_limit_but_never_lowers_it(tmp_path):
    cg, cpu, mem = v1_groups(tmp_path)
    isolator = CgroupsMem(context(cg))
    isolator.prepare(limited(limits={"mem": 512}, mem=64), ContainerSetup())
    isolator.update(UpdateContainer("c1", (("mem", 128.0),), (("mem", 1024.0),)))
    assert (mem / "memory.limit_in_bytes").read_text() == str(1024 * MB)
    assert (mem / "memory.soft_limit_in_bytes").read_text() == str(128 * MB)
    isolator.update(UpdateContainer("c1", (("mem", 200.0),), ()))
    assert (mem / "memory.limit_in_bytes").read_text() == str(1024 * MB)
    assert (mem / "memory.soft_limit_in_bytes").read_text() == str(200 * MB)
    CgroupsCpu(context(cg)).update(UpdateContainer("c1", (("cpus", 3.0),), (("cpus", 4.0),)))
    assert (cpu / "cpu.shares").read_text() == "3072"
    assert (cpu / "cpu.cfs_quota_us").read_text() == "400000"


def test_v2_limits_are_cpu_max_memory_max_and_memory_low(tmp_path):
    hierarchy = fake_v2(tmp_path / "cg")
    cg = cgroupfs.detect(str(hierarchy), "butte", ["cpu", "memory"])
    kernel_dir(hierarchy, "butte/c1")
    (hierarchy / "butte/c1/memory.low").write_text("")
    cg.create(["cpu", "memory"], "c1")
    d = hierarchy / "butte/c1"
    CgroupsCpu(context(cg)).prepare(limited(limits={"cpus": 1.5}, cpus=0.5), ContainerSetup())
    assert (d / "cpu.max").read_text() == "150000 100000"
    CgroupsCpu(context(cg)).prepare(limited(limits={"cpus": math.inf}, cpus=0.5), ContainerSetup())
    assert (d / "cpu.max").read_text() == "max 100000"
    CgroupsMem(context(cg)).prepare(limited(limits={"mem": math.inf}, mem=64), ContainerSetup())
    assert (d / "memory.max").read_text() == "max"
    assert (d / "memory.low").read_text() == str(64 * MB)


def test_throttling_is_reported_for_a_container_with_a_cpu_limit(tmp_path):
    cg, cpu, _ = v1_groups(tmp_path)
    (cpu / "cpu.stat").write_text("nr_periods 10\nnr_throttled 3\nthrottled_time 2000000000\n")
    isolator = CgroupsCpu(context(cg))
    stats: dict[str, float] = {}
    isolator.usage("c1", stats)
    assert "cpus_nr_throttled" not in stats
    isolator.prepare(limited(limits={"cpus": 1.0}, cpus=0.5), ContainerSetup())
    isolator.usage("c1", stats)
    assert stats["cpus_nr_throttled"] == 3 and stats["cpus_throttled_time_secs"] == 2.0
    isolator.cleanup("c1")
    stats = {}
    isolator.usage("c1", stats)
    assert "cpus_nr_throttled" not in stats


# -- Docker ----------------------------------------------------------------------------------


def test_docker_flags_follow_the_limits_as_mesos_docker_containerizer_sets_them():
    resources = [scalar("cpus", 0.5), scalar("mem", 64)]
    assert docker_info.limit_flags(resources) == ["--cpu-shares=512", f"--memory={64 * MB}"]
    flags = docker_info.limit_flags(resources, {"cpus": {"value": 2}, "mem": {"value": 256}})
    assert flags == [
        "--cpu-shares=512",
        "--cpu-quota=200000",
        f"--memory={256 * MB}",
        f"--memory-reservation={64 * MB}",
        f"--oom-score-adj={task_limits.oom_score_adj(64 * MB)}",
    ]
    unbounded = docker_info.limit_flags(resources, {"cpus": INF, "mem": INF})
    assert unbounded == [
        "--cpu-shares=512",
        f"--memory-reservation={64 * MB}",
        f"--oom-score-adj={task_limits.oom_score_adj(64 * MB)}",
    ]
    # A limit equal to the request is not burstable: no OOM score.
    assert docker_info.limit_flags(resources, {"mem": {"value": 64}})[-1] == (
        f"--memory-reservation={64 * MB}"
    )
