"""The cgroups isolators on a real cgroup v2 hierarchy: a real agent against the fake master
of `test_agent_process`, with tasks that go over their memory, fork past their pids limit,
leave their session, and live through an agent SIGKILL in their groups.

These run where the machine's own hierarchy (``/sys/fs/cgroup``) is v2 with the memory, cpu
and pids controllers, as root. A machine has one layout or the other: on a v1 machine (the
project's CI machines mount v1 controllers, with a v2 hierarchy without controllers beside
them) they skip, like the GPU tests, and the v1 tests (`test_isolation.py`) run instead; the
v2 logic is unit-tested on fake trees there (tests/unit/test_agent_isolation.py).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from test_agent_process import (
    AgentProcess,
    FakeMaster,
    agent_port,
    process_gone,
    run_scenario,
    wait_for,
)
from test_agent_recovery import fixed_port, reregistrations
from test_isolation import (
    CGROUPS,
    _rmdir_eventually,
    container_of,
    forks_past_the_limit_and_a_kill_reaching_an_escaped_process,
    memory_hog_beside_a_calm_task,
    orphan_destroyed,
    plant_orphan,
    run_a_late_memory_hog,
    terminal,
)

from butte.agent.containerizer.isolators.cgroups_cpu import v2_weight

pytestmark = pytest.mark.integration

HIERARCHY = Path("/sys/fs/cgroup")
MIB = 1024 * 1024


@pytest.fixture
def root() -> Iterator[str]:
    """A root group of the test's own under the v2 hierarchy, emptied and removed after."""
    controllers = HIERARCHY / "cgroup.controllers"
    if os.geteuid() != 0 or not controllers.is_file():
        pytest.skip("needs root on a machine whose cgroup hierarchy is v2")
    missing = {"memory", "cpu", "pids"} - set(controllers.read_text().split())
    if missing:
        pytest.skip(f"the v2 hierarchy lacks {sorted(missing)}")
    name = f"butte-v2-{uuid.uuid4().hex[:8]}"
    yield name
    base = HIERARCHY / name
    if base.exists():
        for child in [c for c in base.iterdir() if c.is_dir()]:
            with contextlib.suppress(OSError):
                (child / "cgroup.kill").write_text("1")
            _rmdir_eventually(child)
        _rmdir_eventually(base)


def _comm(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def group(root: str, container_id: str) -> Path:
    return HIERARCHY / root / container_id


def flags(root: str, *extra: str) -> tuple[str, ...]:
    return ("--isolation", CGROUPS, "--cgroups_root", root, *extra)


def test_v2_memory_hog_fails_with_the_memory_limitation_and_limits_are_set(tmp_path, root):
    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        status = await memory_hog_beside_a_calm_task(master)
        assert "Memory limit exceeded: Requested: 96MB" in status["message"]
        calm = group(root, container_of(master, "calm"))
        assert int((calm / "memory.max").read_text()) == 96 * MIB  # task 64 + executor 32
        assert (calm / "memory.swap.max").read_text().strip() == "0"  # --cgroups_limit_swap
        assert int((calm / "cpu.weight").read_text()) == v2_weight(int(0.2 * 1024))
        assert (calm / "cpu.max").read_text().split() == ["20000", "100000"]
        assert (calm / "pids.max").read_text().strip() == "16"
        # The container's processes are in its group, not in the agent's.
        members = (calm / "cgroup.procs").read_text().split()
        assert members and agent.proc is not None and str(agent.proc.pid) not in members
        port = agent_port(master)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/monitor/statistics") as response:
                monitor = await response.json()
        (stats,) = [e["statistics"] for e in monitor if e["executor_id"] == "calm"]
        assert stats["mem_limit_bytes"] == 96 * MIB
        assert 0 < stats["mem_total_bytes"] < 96 * MIB
        assert stats["mem_oom_events"] == 0 and stats["cpus_limit"] == pytest.approx(0.2)
        hog = group(root, container_of(master, "hog"))
        await wait_for(lambda: not hog.exists(), "the hog's group removed")

    extra = ("--cgroups_enable_cfs", "--cgroups_limit_swap", "--container_max_pids=16")
    run_scenario(tmp_path, scenario, agent_flags=flags(root, *extra))


def test_v2_pids_limit_and_a_kill_through_cgroup_kill_reaches_escaped_processes(tmp_path, root):
    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        await forks_past_the_limit_and_a_kill_reaching_an_escaped_process(
            master, tmp_path, lambda container: group(root, container)
        )

    run_scenario(tmp_path, scenario, agent_flags=flags(root, "--container_max_pids=16"))


def test_v2_agent_sigkill_recovers_groups_and_destroys_orphans(tmp_path, root):
    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        go = await run_a_late_memory_hog(master, tmp_path)
        container = await wait_for(
            lambda: "TASK_RUNNING" in master.states("later") and container_of(master, "later"),
            "running",
        )
        later = group(root, container)
        # Its shell (the loop's short sleeps come and go).
        members = [p for p in (later / "cgroup.procs").read_text().split() if _comm(p) != "sleep"]
        assert members
        orphan = group(root, "orphan-container")
        sleeper = plant_orphan(orphan)
        await agent.kill()
        await agent.start()
        await wait_for(lambda: reregistrations(master), "re-registered", 20)
        await orphan_destroyed(sleeper, orphan)
        assert int((later / "memory.max").read_text()) == 96 * MIB
        assert all(not process_gone(int(p)) for p in members)
        go.touch()
        status = await wait_for(lambda: terminal(master, "later"), "later's end", 30)
        assert status["state"] == "TASK_FAILED", status
        assert status["reason"] == "REASON_CONTAINER_LIMITATION_MEMORY"
        await wait_for(lambda: not later.exists(), "its group removed")

    run_scenario(tmp_path, scenario, agent_flags=(*flags(root), *fixed_port()))
