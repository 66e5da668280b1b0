"""Isolation faults through a real master and a scheduler process: a task going over its
memory among others (only it fails, with the memory limitation, as the framework sees it),
and an agent SIGKILL with tasks in their cgroups (recovered, limits still in force). Needs
root and the cgroup v1 controllers (docs/isolation.md)."""

from __future__ import annotations

import contextlib
import os
import signal
import uuid
from pathlib import Path

import pytest
from fault_kit import AGENT_FLAGS, check_updates, command_task, pid_alive, resources, wait_until

from butte.core import task_states as ts
from butte.testing.require import require

pytestmark = pytest.mark.integration

HIERARCHY = Path("/sys/fs/cgroup")
CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "freezer")
LIFECYCLE = [ts.STARTING, ts.RUNNING, ts.FINISHED]


@pytest.fixture
def isolated_flags():
    """Agent flags with the cgroup isolators under a root of the test's own (removed after)."""
    missing = None
    if os.geteuid() != 0:
        missing = "the agent must run as root"
    elif not all((HIERARCHY / c / "cgroup.procs").is_file() for c in CONTROLLERS):
        missing = "no cgroup v1 memory/cpu/cpuacct/pids/freezer controllers"
    require(missing, "cgroup v1 controllers and root")
    root = f"butte-faults-{uuid.uuid4().hex[:8]}"
    yield (
        *AGENT_FLAGS,
        "--isolation=cgroups/cpu,cgroups/mem,cgroups/pids",
        f"--cgroups_root={root}",
    )
    # The cluster may still be stopping (and removing groups itself) meanwhile.
    for controller in CONTROLLERS:
        base = HIERARCHY / controller / root
        with contextlib.suppress(FileNotFoundError):
            for child in [c for c in base.iterdir() if c.is_dir()]:
                with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                    if (child / "freezer.state").exists():
                        (child / "freezer.state").write_text("THAWED")
                    for pid in (child / "cgroup.procs").read_text().split():
                        os.kill(int(pid), signal.SIGKILL)
                wait_until(lambda c=child: _rmdir(c), f"{child} removed")
        wait_until(lambda b=base: _rmdir(b), f"{base} removed")


def _rmdir(path: Path) -> bool:
    try:
        path.rmdir()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True


def test_oom_under_load(cluster_factory, scheduler, record_fault, fault_run, isolated_flags):
    cluster = cluster_factory(agent_flags=isolated_flags)
    calm = [f"c{i}" for i in range(4)]
    tasks = [command_task(t, "sleep 1.5") for t in calm]
    # 600 MB against 32 MB + the executor's 32 MB.
    tasks.append(command_task("hog", "head -c 600000000 /dev/zero | tail > /dev/null"))
    framework = scheduler(cluster.master_address, tasks=tasks, checkpoint=True).start()
    framework.wait_states(calm, ts.FINISHED, timeout=30)
    framework.wait_states(["hog"], ts.FAILED, timeout=30)
    expected = {t: (LIFECYCLE, ts.FINISHED) for t in calm}
    expected["hog"] = ([ts.STARTING, ts.RUNNING], ts.FAILED)
    check = check_updates(framework.statuses(), expected)
    hog = [s for s in framework.statuses("hog") if s["state"] == ts.FAILED][-1]
    record_fault("OOM under load, cgroups (1 of 5 over its memory)", check, hog["message"])
    check.assert_clean()
    assert hog["reason"] == "REASON_CONTAINER_LIMITATION_MEMORY"
    assert hog["message"].startswith("Memory limit exceeded: Requested: 64MB")


def test_agent_sigkill_with_tasks_in_cgroups(
    cluster_factory, scheduler, record_fault, tmp_path, fault_run, isolated_flags
):
    cluster = cluster_factory(agent_flags=isolated_flags)
    agent = cluster.agents[0]
    pids = tmp_path / "pids"
    pids.mkdir()
    ids = ["g0", "g1"]
    tasks = [
        {**command_task(t, f"echo $$ > {pids}/{t}; sleep 3"), "resources": resources(mem=40)}
        for t in ids
    ]
    framework = scheduler(cluster.master_address, tasks=tasks, checkpoint=True).start()
    framework.wait_states(ids, ts.RUNNING)
    before = {t: int(wait_until(lambda t=t: (pids / t).read_text().strip(), t)) for t in ids}
    agent.kill()
    assert all(pid_alive(pid) for pid in before.values()), "tasks must outlive the agent"
    agent.restart()
    for pid in before.values():
        # Still in a memory group with the container's limit (task 40 + executor 32 MB).
        line = next(
            x for x in Path(f"/proc/{pid}/cgroup").read_text().splitlines() if ":memory:" in x
        )
        group = HIERARCHY / "memory" / line.split(":", 2)[2].lstrip("/")
        assert int((group / "memory.limit_in_bytes").read_text()) == 72 * 1024 * 1024
    framework.wait_states(ids, ts.FINISHED, timeout=20)
    check = check_updates(framework.statuses(), {t: (LIFECYCLE, ts.FINISHED) for t in ids})
    record_fault("agent SIGKILL mid-run, tasks in cgroups", check)
    check.assert_clean()
