"""``gpu/nvidia``: NVIDIA GPUs found through NVML (the ``nvidia-ml-py`` package, imported as
``pynvml``) are offered as ``gpus`` and given to containers whole: a container that asks for
``gpus: N`` gets N free devices, and only those. The v1 devices cgroup denies every NVIDIA
GPU device node (character major 195) but the container's own and the control nodes
(``/dev/nvidiactl``, ``/dev/nvidia-uvm``, ``/dev/nvidia-uvm-tools``), and
``NVIDIA_VISIBLE_DEVICES`` / ``CUDA_VISIBLE_DEVICES`` name the devices by UUID.

``--nvidia_gpu_devices`` (indices) limits the devices the agent uses; ``--resources gpus:N``
must then (or else) match their number. No NVML, a device index that does not exist, or a
cgroup v2 machine (device control there needs eBPF, which butte does not do) fails agent
start-up. A recovered container's devices are read back from its devices cgroup.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any

from butte.agent.containerizer import cgroupfs
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


def _uvm_majors(proc_devices: str = "/proc/devices") -> list[int]:
    """Character majors of nvidia-uvm (dynamic; absent until the module is loaded)."""
    majors = []
    with contextlib.suppress(OSError):
        with open(proc_devices) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[1].startswith("nvidia-uvm") and parts[0].isdigit():
                    majors.append(int(parts[0]))
    return majors


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
        if self.cgroups.version != 1:
            raise IsolatorUnavailable("gpu/nvidia needs the cgroup v1 devices controller")
        devices = discover(nvml)
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
        self._uvm = _uvm_majors()

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
        cgroupfs.write_text(os.path.join(d, "devices.deny"), f"c {NVIDIA_MAJOR}:* rwm")
        if not picked:
            return
        allow = [f"c {NVIDIA_MAJOR}:{self._by_index[i].minor} rwm" for i in picked]
        allow.append(f"c {NVIDIA_MAJOR}:{NVIDIACTL_MINOR} rwm")
        allow += [f"c {major}:* rwm" for major in self._uvm]
        for rule in allow:
            cgroupfs.write_text(os.path.join(d, "devices.allow"), rule)

    def recover_spec(self, spec: LaunchContainer, on_limit: LimitCallback) -> None:
        """Takes back the devices the container's devices cgroup allows."""
        d = self.cgroups.controller_dir("devices", spec.container_id)
        minors: set[int] = set()
        with contextlib.suppress(OSError):
            for line in cgroupfs.read_text(os.path.join(d, "devices.list")).splitlines():
                kind, _, rest = line.partition(" ")
                numbers = rest.split(" ")[0]
                major, _, minor = numbers.partition(":")
                if kind == "c" and major == str(NVIDIA_MAJOR) and minor.isdigit():
                    minors.add(int(minor))
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
