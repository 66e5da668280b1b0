"""Where the agent's per-executor directory trees land on disk.

On ext4 without a journal (this project's development VM), allocating an inode skips, one
by one, every inode of its block group that was freed in the last minute, and files and
subdirectories are allocated in their parent's group. The agent creates about ten inodes of
checkpoint and removes them again per command task, and the executors' sandboxes add six
more, all below one ``executors`` directory each: without help every allocation walks past
the inodes of every task of the last minute (and of whatever else the machine deleted
nearby), a cost per task that grows with the task rate. `spread_subdirectories` asks for
each executor's tree to start in a block group of its own (the Orlov allocator's
top-directory hint, ``chattr +T``), which took the agent's CPU per task down by about a
third in benchmark 6.

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


def spread_subdirectories(directory: str) -> bool:
    """Asks the file system to place each new subdirectory of ``directory`` (and so each
    tree below it) in a different block group: the ext2/3/4 Orlov allocator's hint for top
    directories (``chattr +T``). Whether the flag is set now (False where there is no such
    flag).

    See the module docstring for why. Other file systems ignore or refuse the flag."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import fcntl

        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (ImportError, OSError):
        return False
    try:
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
    must exist): one mkdir a level, where os.makedirs stats every level first."""
    for path in levels:
        try:
            os.mkdir(path)
        except FileExistsError:
            pass
