"""Device access control for cgroup v2, where there is no devices controller: the kernel
asks a ``BPF_PROG_TYPE_CGROUP_DEVICE`` program attached to the group (and every one attached
to its ancestors) whether a process in it may open or create a device node.

`compile_filter` writes the program that keeps one character-device major to a list of
minors and lets every other device through (an allow-list within the major, which v1's
devices cgroup cannot express inside its default of allowing everything). `attach` loads it
through the ``bpf(2)`` system call and attaches it with ``BPF_F_ALLOW_MULTI``, so a program
that the init system attached above stays in force too (the kernel allows an access only if
every program allows it). The program lives as long as the group does; removing the group
releases it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import struct

from butte.agent.containerizer import linux

# bpf(2) commands, program and attach types, flags (include/uapi/linux/bpf.h).
_BPF_PROG_LOAD = 5
_BPF_PROG_ATTACH = 8
_BPF_PROG_TYPE_CGROUP_DEVICE = 15
_BPF_CGROUP_DEVICE = 6
_BPF_F_ALLOW_MULTI = 2
_SYSCALL_NUMBERS = {"x86_64": 321, "aarch64": 280}
# bpf_cgroup_dev_ctx: access_type (access << 16 | type), major, minor: three u32s.
_DEV_CHAR = 2
_ATTR_SIZE = 128
_LOG_SIZE = 1 << 16
PROGRAM_NAME = b"butte_devices"

# Instruction opcodes, named as in the kernel's filter.h macros.
_LDX_MEM_W = 0x61  # dst = *(u32 *)(src + off)
_ALU64_AND_K = 0x57  # dst &= imm
_JNE_K = 0x55  # if dst != imm goto +off
_JEQ_K = 0x15  # if dst == imm goto +off
_MOV64_K = 0xB7  # dst = imm
_EXIT = 0x95
_R0, _R1, _R2 = 0, 1, 2


class DeviceFilterError(OSError):
    """The kernel refused to load or attach the program (an OSError, as a refused write to
    a v1 devices cgroup is)."""


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    return struct.pack("<BBhi", code, dst | (src << 4), off, imm)


def compile_filter(major: int, minors: list[int]) -> bytes:
    """The program: a character device of ``major`` is allowed only with one of ``minors``
    (any access); every other device is allowed."""
    allow = 8 + len(minors)  # the index of the last two instructions, "allow"

    def to_allow(index: int, code: int, imm: int) -> bytes:
        return _insn(code, _R2, off=allow - index - 1, imm=imm)

    return b"".join(
        [
            _insn(_LDX_MEM_W, _R2, _R1, 0),  # access_type
            _insn(_ALU64_AND_K, _R2, imm=0xFFFF),  # its device type
            to_allow(2, _JNE_K, _DEV_CHAR),
            _insn(_LDX_MEM_W, _R2, _R1, 4),  # major
            to_allow(4, _JNE_K, major),
            _insn(_LDX_MEM_W, _R2, _R1, 8),  # minor
            *(to_allow(6 + k, _JEQ_K, minor) for k, minor in enumerate(minors)),
            _insn(_MOV64_K, _R0, imm=0),
            _insn(_EXIT),
            _insn(_MOV64_K, _R0, imm=1),
            _insn(_EXIT),
        ]
    )


def _bpf(command: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    machine = os.uname().machine
    number = _SYSCALL_NUMBERS.get(machine)
    if number is None:
        raise DeviceFilterError(f"bpf(2): unknown system call number on {machine}")
    result = linux.libc().syscall(number, command, attr, _ATTR_SIZE)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(result)


def load(program: bytes) -> int:
    """Loads ``program``; returns its file descriptor. The verifier's log is in the error."""
    insns = ctypes.create_string_buffer(program, len(program))
    license_ = ctypes.create_string_buffer(b"GPL")
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into(
        "<IIQQ",
        attr,
        0,
        _BPF_PROG_TYPE_CGROUP_DEVICE,
        len(program) // 8,
        ctypes.addressof(insns),
        ctypes.addressof(license_),
    )
    struct.pack_into("16s", attr, 48, PROGRAM_NAME)
    try:
        return _bpf(_BPF_PROG_LOAD, attr)
    except OSError as first:
        # Again with the verifier's log, for the message only.
        log = ctypes.create_string_buffer(_LOG_SIZE)
        struct.pack_into("<IIQ", attr, 24, 1, _LOG_SIZE, ctypes.addressof(log))
        with contextlib.suppress(OSError):
            os.close(_bpf(_BPF_PROG_LOAD, attr))
        detail = "; ".join(log.value.decode(errors="replace").split("\n")).strip("; ")
        raise DeviceFilterError(
            first.errno,
            f"cannot load the device filter: {first.strerror}"
            + (f" (verifier: {detail})" if detail else ""),
        ) from None


def attach(group: str, major: int, minors: list[int]) -> None:
    """Keeps the processes of the cgroup v2 group ``group`` to ``minors`` of character
    ``major`` (see `compile_filter`)."""
    program = load(compile_filter(major, minors))
    try:
        target = os.open(group, os.O_RDONLY | os.O_DIRECTORY)
        try:
            attr = ctypes.create_string_buffer(_ATTR_SIZE)
            struct.pack_into(
                "<IIII", attr, 0, target, program, _BPF_CGROUP_DEVICE, _BPF_F_ALLOW_MULTI
            )
            try:
                _bpf(_BPF_PROG_ATTACH, attr)
            except OSError as e:
                raise DeviceFilterError(
                    e.errno, f"cannot attach the device filter to {group}: {e.strerror}"
                ) from None
        finally:
            os.close(target)
    finally:
        os.close(program)
