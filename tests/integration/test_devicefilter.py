"""The cgroup v2 device filter (`butte.agent.containerizer.devicefilter`) in the real
kernel: processes of a group with the filter may open only the listed minors of the filtered
major and every device of other majors; a directory that is not a cgroup is refused with a
clear error."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_gpu import PROBE, hierarchies

from butte.agent.containerizer import devicefilter
from butte.testing.require import require

pytestmark = pytest.mark.integration


@pytest.fixture
def group() -> Iterator[Path]:
    hierarchy = hierarchies().get("v2")
    require(None if hierarchy and os.geteuid() == 0 else "root and cgroup v2", "cgroup v2")
    assert hierarchy is not None
    path = Path(hierarchy) / f"butte-filter-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    try:
        yield path
    finally:
        path.rmdir()


def opened_in(group: Path, *paths: str) -> list[str]:
    """What PROBE says of ``paths``, run by a process of ``group``."""

    def enter() -> None:
        (group / "cgroup.procs").write_text("0")

    result = subprocess.run(
        [sys.executable, "-c", PROBE, *paths],
        preexec_fn=enter,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout.split()


def test_only_the_listed_minors_of_the_major_open(group):
    # Major 1 is the memory devices: /dev/null is 1:3, /dev/zero 1:5, /dev/full 1:7.
    devicefilter.attach(str(group), 1, [3, 7])
    assert opened_in(group, "/dev/null", "/dev/zero", "/dev/full") == [
        "allowed",
        "denied",
        "allowed",
    ]
    # Other majors are not the filter's business (/dev/ptmx is 5:2).
    assert opened_in(group, "/dev/ptmx") == ["allowed"]
    assert opened_in(group.parent, "/dev/zero") == ["allowed"]  # only the group is filtered


def test_no_minor_and_many_minors(group):
    devicefilter.attach(str(group), 1, [])
    assert opened_in(group, "/dev/null", "/dev/zero") == ["denied", "denied"]
    child = group / "many"
    child.mkdir()
    try:
        # A child's filter runs too (BPF_F_ALLOW_MULTI): the parent's still denies all.
        devicefilter.attach(str(child), 1, list(range(1024)))
        assert opened_in(child, "/dev/null") == ["denied"]
    finally:
        child.rmdir()


def test_a_directory_that_is_no_cgroup_is_refused(tmp_path):
    require(None if os.geteuid() == 0 else "root", "bpf(2)")
    with pytest.raises(devicefilter.DeviceFilterError, match="cannot attach") as caught:
        devicefilter.attach(str(tmp_path), 1, [3])
    assert caught.value.errno in (errno.EBADF, errno.EINVAL, errno.ENOTDIR, errno.EPERM)


def test_a_program_the_verifier_refuses_names_its_reason():
    require(None if os.geteuid() == 0 else "root", "bpf(2)")
    exit_only = bytes([0x95]) + bytes(7)  # returns r0 without ever setting it
    with pytest.raises(devicefilter.DeviceFilterError, match=r"verifier: .*R0") as caught:
        devicefilter.load(exit_only)
    assert caught.value.errno == errno.EACCES
