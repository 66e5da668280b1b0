"""``cgroups/pids``: at most ``--container_max_pids`` processes and threads per container
(``pids.max``; a fork past it fails with EAGAIN inside the container). Without the flag the
isolator only counts them."""

from __future__ import annotations

import os

from butte.agent.containerizer import cgroupfs
from butte.agent.containerizer.isolators.base import ContainerSetup, Isolator
from butte.agent.effects import LaunchContainer


class CgroupsPids(Isolator):
    """See the module docstring."""

    name = "cgroups/pids"
    controllers = ("pids",)

    def prepare(self, spec: LaunchContainer, setup: ContainerSetup) -> None:
        limit = self.context.options.container_max_pids
        if limit is not None:
            d = self.cgroups.controller_dir("pids", spec.container_id)
            cgroupfs.write_text(os.path.join(d, "pids.max"), str(limit))

    def usage(self, container_id: str, statistics: dict[str, float]) -> None:
        # Mesos' ResourceStatistics: `processes` counts processes, `threads` their threads
        # (pids.current counts every thread).
        d = self.cgroups.controller_dir("pids", container_id)
        try:
            statistics["processes"] = len(
                cgroupfs.read_text(os.path.join(d, "cgroup.procs")).split()
            )
        except OSError:
            pass
        threads = cgroupfs.read_int(os.path.join(d, "pids.current"))
        if threads is not None:
            statistics["threads"] = threads
