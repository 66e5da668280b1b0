"""``gpu/nvidia``: NVIDIA GPUs found through NVML (the ``nvidia-ml-py`` package, imported as
``pynvml``) are offered as ``gpus`` and given to containers whole: a container that asks for
``gpus: N`` gets N free devices, and only those: it may open no other GPU's device node
(character major 195). ``NVIDIA_VISIBLE_DEVICES`` / ``CUDA_VISIBLE_DEVICES`` name its devices
by UUID.

With cgroup v1, the container's devices cgroup denies each GPU of the machine that is not the
container's. With v2, which has no devices controller, a device filter program on the
container's group (`butte.agent.containerizer.devicefilter`) allows of major 195 only the
container's GPUs and ``/dev/nvidiactl`` (none of them to a container without GPUs). The
unified-memory nodes (``/dev/nvidia-uvm``, ``/dev/nvidia-uvm-tools``) stay open with both.
The container's group records its GPUs in an extended attribute, where an agent recovering
the container reads them back.

``--nvidia_gpu_devices`` (indices) limits the devices the agent uses; ``--resources gpus:N``
must then (or else) match their number. No NVML or a device index that does not exist fails
agent start-up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from butte.agent.containerizer import cgroupfs, devicefilter
from butte.agent.containerizer.isolators.base import (
    ContainerSetup,
    Isolator,
    IsolatorContext,
    IsolatorUnavailable,
    LaunchRefused,
    LimitCallback,
    scalar,
)
from butte.agent.effects import LaunchContainer

NVIDIA_MAJOR = 195
NVIDIACTL_MINOR = 255
# Where a container's group records the minors of its GPUs, for recovery.
RECORD_XATTR = "trusted.butte.gpus"
MAX_GPUS = 1024


@dataclass(frozen=True, slots=True)
class Gpu:
    """One device NVML reported."""

    index: int
    minor: int
    uuid: str
    name: str


def discover(nvml: Any) -> list[Gpu]:
    """Every device NVML sees; IsolatorUnavailable when NVML cannot be used."""
    try:
        nvml.nvmlInit()
        count = nvml.nvmlDeviceGetCount()
        found = []
        for index in range(count):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            uuid = nvml.nvmlDeviceGetUUID(handle)
            name = nvml.nvmlDeviceGetName(handle)
            found.append(
                Gpu(
                    index,
                    int(nvml.nvmlDeviceGetMinorNumber(handle)),
                    uuid.decode() if isinstance(uuid, bytes) else str(uuid),
                    name.decode() if isinstance(name, bytes) else str(name),
                )
            )
        return found
    except Exception as e:  # noqa: BLE001 - every NVMLError subclass means the same here
        raise IsolatorUnavailable(f"gpu/nvidia: NVML cannot be used: {e}") from None


class NvidiaGpu(Isolator):
    """See the module docstring."""

    name = "gpu/nvidia"
    controllers = ("devices",)

    def __init__(self, context: IsolatorContext, nvml: Any = None) -> None:
        super().__init__(context)
        if nvml is None:
            try:
                # No stubs; absent where nvidia-ml-py is not installed.
                import pynvml as nvml  # type: ignore[import-untyped,import-not-found,no-redef,unused-ignore]
            except ImportError:
                raise IsolatorUnavailable(
                    "gpu/nvidia needs the nvidia-ml-py package (pip install nvidia-ml-py)"
                ) from None
        devices = discover(nvml)
        # Every GPU of the machine, also those --nvidia_gpu_devices keeps from containers.
        self._minors = {g.minor for g in devices}
        wanted = context.options.nvidia_gpu_devices
        if wanted is not None:
            known = {g.index for g in devices}
            missing = [i for i in wanted if i not in known]
            if missing:
                raise IsolatorUnavailable(
                    f"--nvidia_gpu_devices names device(s) {missing} that NVML does not "
                    f"report (it reports {sorted(known) or 'none'})"
                )
            devices = [g for g in devices if g.index in set(wanted)]
        self.gpus = devices
        self._free = [g.index for g in devices]
        self._by_index = {g.index: g for g in devices}
        self.assigned: dict[str, list[int]] = {}

    def prepare(self, spec: LaunchContainer, setup: ContainerSetup) -> None:
        wanted = scalar(spec, "gpus") or 0.0
        if wanted != int(wanted) or wanted > MAX_GPUS:
            raise LaunchRefused(f"invalid gpus resource: {wanted} (whole GPUs only)")
        count = int(wanted)
        if count > len(self._free):
            raise LaunchRefused(f"asked for {count} GPU(s), {len(self._free)} free here")
        picked = sorted(self._free)[:count]
        self._free = [i for i in self._free if i not in picked]
        self.assigned[spec.container_id] = picked
        try:
            self._write_devices(spec.container_id, picked)
        except OSError:
            self._release(spec.container_id)
            raise
        uuids = ",".join(self._by_index[i].uuid for i in picked) or "void"
        setup.env["NVIDIA_VISIBLE_DEVICES"] = uuids
        setup.env["CUDA_VISIBLE_DEVICES"] = "" if not picked else uuids

    def _write_devices(self, container_id: str, picked: list[int]) -> None:
        d = self.cgroups.controller_dir("devices", container_id)
        minors = [self._by_index[i].minor for i in picked]
        if self.cgroups.version == 2:
            devicefilter.attach(d, NVIDIA_MAJOR, [*minors, NVIDIACTL_MINOR] if minors else [])
        else:
            # A v1 group allows every device until told otherwise, and a rule allowing one
            # minor cannot make an exception in a rule denying the major: each other GPU is
            # denied by its own rule.
            for minor in sorted(self._minors - set(minors)):
                cgroupfs.write_text(
                    os.path.join(d, "devices.deny"), f"c {NVIDIA_MAJOR}:{minor} rwm"
                )
        # Neither version can say simply what it allows: the group itself keeps the record.
        os.setxattr(d, RECORD_XATTR, ",".join(map(str, minors)).encode())

    def recover_spec(self, spec: LaunchContainer, on_limit: LimitCallback) -> None:
        """Takes back the devices the container's group records (`_write_devices`)."""
        d = self.cgroups.controller_dir("devices", spec.container_id)
        try:
            record = os.getxattr(d, RECORD_XATTR).decode()
        except OSError:
            return  # no group, or none of ours: no GPU to take back
        minors = {int(m) for m in record.split(",") if m.isdigit()}
        picked = [g.index for g in self.gpus if g.minor in minors]
        if picked:
            self.assigned[spec.container_id] = picked
            self._free = [i for i in self._free if i not in picked]

    def usage(self, container_id: str, statistics: dict[str, float]) -> None:
        pass  # NVML utilisation is not reported (yet)

    def cleanup(self, container_id: str) -> None:
        self._release(container_id)

    def _release(self, container_id: str) -> None:
        self._free += self.assigned.pop(container_id, [])
