"""``cgroups/cpu``: a container's CPU weight from its ``cpus`` (``cpu.shares`` = 1024 per CPU,
v2 ``cpu.weight``), and with ``--cgroups_enable_cfs`` a hard ceiling (CFS quota of ``cpus`` x
the 100 ms period; a kernel without ``cpu.cfs_quota_us``, v2 ``cpu.max``, stops agent
start-up). Usage: user/system time (cpuacct) and throttling (cpu.stat)."""

from __future__ import annotations

import os

from butte.agent.containerizer import cgroupfs
from butte.agent.containerizer.isolators.base import (
    ContainerSetup,
    Isolator,
    IsolatorContext,
    LaunchRefused,
    require_cgroup_file,
    scalar,
)
from butte.agent.effects import LaunchContainer

CPU_SHARES_PER_CPU = 1024
MIN_CPU_SHARES = 2
CFS_PERIOD_US = 100_000
MIN_CFS_QUOTA_US = 1_000
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
        cpus = scalar(spec, "cpus")
        if cpus is None:
            return
        if cpus > MAX_CPUS:
            raise LaunchRefused(f"invalid cpus resource: {cpus}")
        cpus = max(cpus, MIN_CPUS)
        cg = self.cgroups
        shares = max(MIN_CPU_SHARES, int(cpus * CPU_SHARES_PER_CPU))
        quota = max(MIN_CFS_QUOTA_US, int(cpus * CFS_PERIOD_US))
        d = cg.controller_dir("cpu", spec.container_id)
        if cg.version == 1:
            cgroupfs.write_text(os.path.join(d, "cpu.shares"), str(shares))
            if self.context.options.cgroups_enable_cfs:
                cgroupfs.write_text(os.path.join(d, "cpu.cfs_period_us"), str(CFS_PERIOD_US))
                cgroupfs.write_text(os.path.join(d, "cpu.cfs_quota_us"), str(quota))
        else:
            cgroupfs.write_text(os.path.join(d, "cpu.weight"), str(v2_weight(shares)))
            if self.context.options.cgroups_enable_cfs:
                cgroupfs.write_text(os.path.join(d, "cpu.max"), f"{quota} {CFS_PERIOD_US}")

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
        if "nr_periods" in cpu_stat and self.context.options.cgroups_enable_cfs:
            statistics["cpus_nr_periods"] = cpu_stat["nr_periods"]
            statistics["cpus_nr_throttled"] = cpu_stat.get("nr_throttled", 0)
            statistics["cpus_throttled_time_secs"] = throttled_secs
