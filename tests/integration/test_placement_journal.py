"""`butte.agent.placement`: the top-directory hint that spreads executor trees is given only
on ext4 without a journal, on real file systems (two loop-mounted ext4 images, one made with
a journal and one without; needs root)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from butte.agent import placement
from butte.testing.require import require


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "mounting needs root"
    if shutil.which("mkfs.ext4") is None or shutil.which("mount") is None:
        return "no mkfs.ext4 or mount (e2fsprogs, util-linux)"
    if not os.path.exists("/dev/loop-control"):
        return "no loop devices"
    return None


@contextlib.contextmanager
def ext4(tmp_path: Path, name: str, journal: bool) -> Iterator[Path]:
    image, mount_point = tmp_path / f"{name}.img", tmp_path / name
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    features = [] if journal else ["-O", "^has_journal"]
    subprocess.run(["mkfs.ext4", "-q", "-F", *features, str(image)], check=True, timeout=60)
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-o", "loop", str(image), str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        require(f"mount -o loop failed: {mounted.stderr.strip()}", "a loop mount")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=False, timeout=60)


def _topdir(path: Path) -> bool:
    fd = os.open(path, os.O_RDONLY)
    try:
        raw = fcntl.ioctl(fd, placement._FS_IOC_GETFLAGS, bytes(placement._LONG))
    finally:
        os.close(fd)
    return bool(int.from_bytes(raw[:4], sys.byteorder) & placement._FS_TOPDIR_FL)


@pytest.mark.parametrize("journal", [True, False], ids=["journal", "no-journal"])
def test_executor_trees_are_spread_only_without_a_journal(tmp_path, journal) -> None:
    require(_missing(), "loop-mounted ext4")
    with ext4(tmp_path, "fs", journal) as root:
        assert placement.has_journal(os.stat(root).st_dev) is journal
        executors = root / "frameworks" / "f" / "executors"
        done: set[str] = set()
        placement.make_sandbox(str(executors / "e1" / "runs" / "c1"), done)
        assert (executors / "e1" / "runs" / "c1").is_dir()
        # The hint costs a scan of the groups per executor directory; only ext4 without a
        # journal, which walks recently freed inodes on allocation, is paid back for it.
        assert _topdir(executors) is not journal
        assert placement.spread_subdirectories(str(root)) is not journal
