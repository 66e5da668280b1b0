"""Where the agent's per-executor directory trees land on disk.

On ext4 without a journal (this project's development VM), allocating an inode skips, one
by one, every inode of its block group that was freed in the last minute (its allocator's
``recently_deleted``), and files and subdirectories are allocated in their parent's group.
An executor's sandbox is six inodes (and a checkpointed run of a custom executor ten more)
below one ``executors`` directory, and as many are freed again when old sandboxes are
removed: without help every allocation walks past the inodes freed nearby in the last
minute, a cost per task that grows with the task rate. `spread_subdirectories` asks for
each executor's tree to start in a block group of its own (the Orlov allocator's
top-directory hint, ``chattr +T``), which took the agent's CPU per task down by about a
third in benchmark 6 when each command task still had a checkpoint tree of its own.

The hint has a price: every new executor directory then scans the file system's groups for
the emptiest (0.12 ms a task on the development VM's 2,000 groups). An ext4 with a journal
does not walk freed inodes, so there the hint is not given (`has_journal`).

Stdlib only (``fcntl``, imported when used): the executor zygote imports this.
"""

from __future__ import annotations

import os
import sys

# ext2/3/4 inode flag "top of a directory hierarchy" (chattr +T) and the ioctls reading and
# setting inode flags (_IOR/_IOW('f', 1/2, long)).
_FS_TOPDIR_FL = 0x00020000
_LONG = 8 if sys.maxsize > 2**32 else 4
_FS_IOC_GETFLAGS = 0x80006601 | (_LONG << 16)
_FS_IOC_SETFLAGS = 0x40006602 | (_LONG << 16)


def has_journal(st_dev: int) -> bool | None:
    """Whether the ext4 file system on device ``st_dev`` has a journal; None where that
    cannot be told (not ext4, no sysfs)."""
    try:
        device = os.readlink(f"/sys/dev/block/{os.major(st_dev)}:{os.minor(st_dev)}")
        name = os.path.basename(device)
        with open(f"/sys/fs/ext4/{name}/journal_task", encoding="ascii") as f:
            # The journal thread's pid, or "<none>".
            return f.read().strip() != "<none>"
    except OSError:
        return None


def spread_subdirectories(directory: str) -> bool:
    """Asks the file system to place each new subdirectory of ``directory`` (and so each
    tree below it) in a different block group: the ext2/3/4 Orlov allocator's hint for top
    directories (``chattr +T``), unless the file system has a journal. Whether the flag is
    set now (False where there is no such flag or no need for it).

    See the module docstring for why. Other file systems ignore or refuse the flag."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import fcntl

        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (ImportError, OSError):
        return False
    try:
        if has_journal(os.fstat(fd).st_dev):
            return False
        flags = int.from_bytes(fcntl.ioctl(fd, _FS_IOC_GETFLAGS, bytes(_LONG))[:4], sys.byteorder)
        if not flags & _FS_TOPDIR_FL:
            value = (flags | _FS_TOPDIR_FL).to_bytes(4, sys.byteorder) + bytes(_LONG - 4)
            fcntl.ioctl(fd, _FS_IOC_SETFLAGS, value)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def make_sandbox(sandbox: str, spread: set[str]) -> None:
    """Creates the sandbox ``.../executors/<executor>/runs/<container>`` and what lies above
    it, after giving its ``executors`` directory the hint (once per directory: ``spread``
    holds the directories above the executors' that this process has made sure of)."""
    runs = os.path.dirname(sandbox)
    executor = os.path.dirname(runs)
    executors = os.path.dirname(executor)
    if executors not in spread:
        _make_top(executors, spread)
    try:
        _make_below(executor, runs, sandbox)
    except FileNotFoundError:
        # The framework's directory went (garbage collection) after we made it: again.
        spread.discard(executors)
        _make_top(executors, spread)
        _make_below(executor, runs, sandbox)


def _make_top(executors: str, spread: set[str]) -> None:
    os.makedirs(executors, exist_ok=True)
    if os.path.basename(executors) == "executors":
        spread_subdirectories(executors)
    spread.add(executors)


def _make_below(*levels: str) -> None:
    """Makes each directory, top-down, each one's parent being the one before (the first's
    must exist): one mkdir a level, where os.makedirs stats every level first. The last,
    the sandbox, holds private task data: like Mesos' agent, it is not open to others
    (0750)."""
    last = len(levels) - 1
    for i, path in enumerate(levels):
        try:
            os.mkdir(path, 0o750 if i == last else 0o777)
        except FileExistsError:
            pass
