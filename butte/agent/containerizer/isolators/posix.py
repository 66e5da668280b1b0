"""``posix/cpu`` and ``posix/mem``: Mesos' default isolators, which enforce nothing (cpus and
mem are accounting only) and report usage from /proc. Kept so the default flag means what it
means in Mesos."""

from __future__ import annotations

from butte.agent.containerizer.isolators.base import Isolator


class PosixCpu(Isolator):
    """No enforcement of cpus."""

    name = "posix/cpu"


class PosixMem(Isolator):
    """No enforcement of mem."""

    name = "posix/mem"
