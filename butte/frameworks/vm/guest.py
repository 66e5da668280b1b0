"""What the VM executor decides about a guest, without running anything: the QEMU command
line, the KVM probe's command line, and which task state a guest's end means.

A guest is one QEMU process. Its serial console goes to ``console.log`` in the sandbox and
its QMP monitor to QEMU's stdin/stdout, so the executor needs no socket path (sandbox paths
are longer than a unix socket address may be). Guest states map to task states:

=================================  ============================================
guest                              task
=================================  ============================================
booting, running, reset/rebooted   TASK_RUNNING (a reset keeps the task)
powered itself off (QEMU exit 0)   TASK_FINISHED
kernel panic on the console        TASK_FAILED ("guest kernel panic"), QEMU stopped
QEMU exited non-zero / by signal   TASK_FAILED (crash)
stopped through the framework      TASK_KILLED
=================================  ============================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from butte.core import task_states

ACCELS = ("auto", "kvm", "tcg")
CONSOLE_FILE = "console.log"
QEMU_LOG_FILE = "qemu.log"
PANIC_MARKER = b"Kernel panic - not syncing"
# The kernel of the guest boots under KVM, to a panic-and-exit, within this (else: TCG).
KVM_PROBE_SECONDS = 5.0


class GuestConfigError(ValueError):
    """A task's guest description cannot be run."""


@dataclass(frozen=True)
class GuestSpec:
    """One guest, as a VM task describes it (``TaskInfo.data``, JSON) plus its resources."""

    name: str
    cpus: int
    mem_mb: int
    kernel: str
    initrd: str | None = None
    disk: str | None = None
    cmdline: str = ""
    accel: str = "auto"


def _text(config: dict[str, Any], key: str, required: bool = False) -> str | None:
    value = config.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or "\n" in value or "\0" in value:
        raise GuestConfigError(f"guest '{key}' must be a non-empty one-line string")
    return value


def guest_spec(name: str, config: Any, resources: dict[str, float]) -> GuestSpec:
    """The guest of a VM task: ``config`` from its data, cpus/mem from its resources."""
    if not isinstance(config, dict):
        raise GuestConfigError("task data must be a JSON object describing the guest")
    unknown = set(config) - {"kernel", "initrd", "disk", "cmdline", "accel"}
    if unknown:
        raise GuestConfigError(f"unknown guest fields: {sorted(unknown)}")
    accel = config.get("accel", "auto")
    if accel not in ACCELS:
        raise GuestConfigError(f"accel must be one of {list(ACCELS)}")
    cmdline = config.get("cmdline", "")
    if not isinstance(cmdline, str) or "\n" in cmdline or "\0" in cmdline:
        raise GuestConfigError("cmdline must be a one-line string")
    cpus = max(1, math.floor(resources.get("cpus", 0.0)))
    mem = int(resources.get("mem", 0.0))
    if mem < 32:
        raise GuestConfigError("a guest needs at least mem:32 in its task's resources")
    return GuestSpec(
        name=name,
        cpus=cpus,
        mem_mb=mem,
        kernel=str(_text(config, "kernel", required=True)),
        initrd=_text(config, "initrd"),
        disk=_text(config, "disk"),
        cmdline=cmdline,
        accel=accel,
    )


def qemu_argv(spec: GuestSpec, accel: str, qemu: str = "qemu-system-x86_64") -> list[str]:
    """QEMU's command line for ``spec`` under ``accel`` (kvm or tcg), run in the sandbox."""
    argv = [
        qemu,
        "-name", spec.name,
        "-machine", "pc",
        "-accel", accel,
        "-smp", str(spec.cpus),
        "-m", str(spec.mem_mb),
        "-nodefaults", "-no-user-config",
        "-display", "none",
        "-nic", "none",
        "-chardev", f"file,id=console,path={CONSOLE_FILE},append=on",
        "-serial", "chardev:console",
        # QMP on stdin/stdout; signal=off: a SIGINT to the group must not stop the guest.
        "-chardev", "stdio,id=qmp,signal=off",
        "-mon", "chardev=qmp,mode=control",
        "-kernel", spec.kernel,
        "-append", f"console=ttyS0 {spec.cmdline}".strip(),
    ]  # fmt: skip
    if accel == "kvm":
        argv += ["-cpu", "host"]
    if spec.initrd:
        argv += ["-initrd", spec.initrd]
    if spec.disk:
        disk_format = "qcow2" if spec.disk.endswith(".qcow2") else "raw"
        argv += ["-drive", f"file={spec.disk},if=virtio,format={disk_format}"]
    return argv


def kvm_probe_argv(kernel: str, qemu: str = "qemu-system-x86_64") -> list[str]:
    """A KVM guest that boots ``kernel`` without a root file system: it panics at once and,
    with ``panic=-1`` and ``-no-reboot``, QEMU exits 0. Where nested KVM hangs, it does not
    exit at all (the caller's timeout decides)."""
    return [
        qemu, "-accel", "kvm", "-machine", "pc", "-m", "128",
        "-nodefaults", "-no-user-config", "-display", "none", "-nic", "none",
        "-no-reboot", "-serial", "none", "-kernel", kernel, "-append", "panic=-1 quiet",
    ]  # fmt: skip


def end_of_guest(returncode: int, stopping: bool, panicked: bool) -> tuple[str, str]:
    """(task state, message) for a QEMU process that exited with ``returncode`` (negative:
    killed by that signal); ``stopping``: the framework asked for it; ``panicked``: the
    console showed a kernel panic."""
    if panicked:
        return task_states.FAILED, "guest kernel panic (see console.log)"
    if stopping:
        return task_states.KILLED, "guest stopped"
    if returncode == 0:
        return task_states.FINISHED, "guest powered off"
    if returncode < 0:
        why = f"QEMU killed by signal {-returncode}"
    else:
        why = f"QEMU exited with status {returncode}"
    return task_states.FAILED, f"guest crashed: {why} (see qemu.log)"
