"""``cgroups/cpu``: a container's CPU weight from its ``cpus`` (``cpu.shares`` = 1024 per CPU,
v2 ``cpu.weight``), and a hard ceiling (CFS quota x the 100 ms period): its tasks' cpu limit
(TaskInfo.limits; an infinite one is no quota), else with ``--cgroups_enable_cfs`` its
``cpus`` (a kernel without ``cpu.cfs_quota_us``, v2 ``cpu.max``, then stops agent start-up).
Usage: user/system time (cpuacct) and throttling (cpu.stat)."""

from __future__ import annotations

import math
import os

from butte.agent.containerizer import cgroupfs
from butte.agent.containerizer.isolators.base import (
    ContainerSetup,
    Isolator,
    IsolatorContext,
    LaunchRefused,
    LimitCallback,
    limit,
    require_cgroup_file,
    scalar,
)
from butte.agent.effects import LaunchContainer, UpdateContainer
from butte.core.task_limits import CFS_PERIOD_US, MIN_CFS_QUOTA_US

CPU_SHARES_PER_CPU = 1024
MIN_CPU_SHARES = 2
# Mesos charges a container at least this many CPUs (MIN_CPUS in slave/constants.hpp).
MIN_CPUS = 0.01
MAX_CPUS = 1 << 20


def v2_weight(shares: int) -> int:
    """cpu.shares (2..262144) mapped onto cpu.weight (1..10000), as the kernel docs do."""
    shares = min(max(shares, 2), 262144)
    return 1 + ((shares - 2) * 9999) // 262142


class CgroupsCpu(Isolator):
    """See the module docstring."""

    name = "cgroups/cpu"
    controllers = ("cpu", "cpuacct")

    def __init__(self, context: IsolatorContext) -> None:
        super().__init__(context)
        # Containers with a CFS quota from a finite cpu limit (TaskInfo.limits).
        self._quota: set[str] = set()
        if context.options.cgroups_enable_cfs:
            require_cgroup_file(
                self.cgroups,
                "cpu",
                ("cpu.cfs_quota_us", "cpu.max"),
                "--cgroups_enable_cfs",
                "CFS bandwidth control (CONFIG_CFS_BANDWIDTH)",
                "leave the flag out for CPU shares alone",
            )

    def prepare(self, spec: LaunchContainer, setup: ContainerSetup) -> None:
        self._set(spec)

    def update(self, change: UpdateContainer) -> None:
        self._set(change)

    def _set(self, spec: LaunchContainer | UpdateContainer) -> None:
        """Shares from the request; a CFS quota from the cpu limit (none for an infinite
        one), else from the request with --cgroups_enable_cfs, as Mesos' cpu subsystem."""
        cpus = scalar(spec, "cpus")
        if cpus is None:
            return
        ceiling = limit(spec, "cpus")
        for value in (cpus, ceiling):
            if value is not None and not math.isinf(value) and value > MAX_CPUS:
                raise LaunchRefused(f"invalid cpus resource: {value}")
        cpus = max(cpus, MIN_CPUS)
        cg = self.cgroups
        shares = max(MIN_CPU_SHARES, int(cpus * CPU_SHARES_PER_CPU))
        quota: int | None = None  # None: no ceiling
        if ceiling is not None:
            if not math.isinf(ceiling):
                quota = max(MIN_CFS_QUOTA_US, int(ceiling * CFS_PERIOD_US))
                self._quota.add(spec.container_id)
        elif self.context.options.cgroups_enable_cfs:
            quota = max(MIN_CFS_QUOTA_US, int(cpus * CFS_PERIOD_US))
        ceiled = ceiling is not None or self.context.options.cgroups_enable_cfs
        d = cg.controller_dir("cpu", spec.container_id)
        if cg.version == 1:
            cgroupfs.write_text(os.path.join(d, "cpu.shares"), str(shares))
            if ceiled:
                cgroupfs.write_text(os.path.join(d, "cpu.cfs_period_us"), str(CFS_PERIOD_US))
                cgroupfs.write_text(os.path.join(d, "cpu.cfs_quota_us"), str(quota or -1))
        else:
            cgroupfs.write_text(os.path.join(d, "cpu.weight"), str(v2_weight(shares)))
            if ceiled:
                cgroupfs.write_text(os.path.join(d, "cpu.max"), f"{quota or 'max'} {CFS_PERIOD_US}")

    def recover_spec(self, spec: LaunchContainer, on_limit: LimitCallback) -> None:
        super().recover_spec(spec, on_limit)
        ceiling = dict(spec.limits).get("cpus")
        if ceiling is not None and not math.isinf(ceiling):
            self._quota.add(spec.container_id)

    def cleanup(self, container_id: str) -> None:
        self._quota.discard(container_id)

    def usage(self, container_id: str, statistics: dict[str, float]) -> None:
        cg = self.cgroups
        cpu_stat = cgroupfs.read_keyed(
            os.path.join(cg.controller_dir("cpu", container_id), "cpu.stat")
        )
        if cg.version == 1:
            ticks = os.sysconf("SC_CLK_TCK")
            acct = cgroupfs.read_keyed(
                os.path.join(cg.controller_dir("cpuacct", container_id), "cpuacct.stat")
            )
            if acct:
                statistics["cpus_user_time_secs"] = acct.get("user", 0) / ticks
                statistics["cpus_system_time_secs"] = acct.get("system", 0) / ticks
            throttled_secs = cpu_stat.get("throttled_time", 0) / 1e9
        else:
            if "user_usec" in cpu_stat:
                statistics["cpus_user_time_secs"] = cpu_stat["user_usec"] / 1e6
                statistics["cpus_system_time_secs"] = cpu_stat.get("system_usec", 0) / 1e6
            throttled_secs = cpu_stat.get("throttled_usec", 0) / 1e6
        # Throttling exists only under a CFS quota; without one Mesos leaves it out too.
        quota = self.context.options.cgroups_enable_cfs or container_id in self._quota
        if "nr_periods" in cpu_stat and quota:
            statistics["cpus_nr_periods"] = cpu_stat["nr_periods"]
            statistics["cpus_nr_throttled"] = cpu_stat.get("nr_throttled", 0)
            statistics["cpus_throttled_time_secs"] = throttled_secs
