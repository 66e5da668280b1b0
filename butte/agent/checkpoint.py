"""The agent's checkpoint on disk: writing the checkpoint effects of the core and reading the
``meta`` tree back on start-up (layout and durability rules in `butte.agent.paths`).

Writing happens in the shell, off the event loop and in effect order, in batches made durable
together (`CheckpointWriter`, `butte.agent.group_commit`), so a checkpoint that comes before
an ACKNOWLEDGED, a status update to the master or a container launch is on disk first.
Only frameworks with ``checkpoint: true`` are written (plus the agent's own id), as in Mesos,
so tasks of other frameworks cost no disk writes. A command executor's run is records in one
journal per agent id. A removal is one rename of the tree into ``meta/trash``, where
`Trash` deletes it on a thread of its own, or a record in the journal.

A full disk does not end the agent: a write that fails with ENOSPC (EDQUOT, EIO) is undone
and its batch waits until it can be written (`CheckpointWriter.write_batch`), while the shell
holds what depends on it, apart from what may overtake it (`Overtaking`).

Reading is forgiving: a file that is missing or unreadable drops only what it describes (and
is reported in `RecoveredState.problems`); the torn last record of an update log is ignored.
Reading needs no free space, so an agent restarted on a full disk recovers.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import itertools
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Protocol

import msgspec

from butte.agent import paths, volumes
from butte.agent.effects import (
    Checkpoint,
    CheckpointAgent,
    CheckpointExecutor,
    CheckpointFramework,
    CheckpointOperations,
    CheckpointPid,
    CheckpointResources,
    CheckpointTask,
    CheckpointUpdate,
    DestroyContainer,
    RemoveCheckpoint,
    SendToExecutor,
    SendToMaster,
)
from butte.agent.placement import spread_subdirectories
from butte.agent.records import COMMAND, CUSTOM, DEFAULT
from butte.agent.recovery import RecoveredRun, RecoveredState, RecoveredTask
from butte.core import internal
from butte.core.messages import ExecutorInfo, FrameworkInfo, TaskInfo, TaskStatus

log = logging.getLogger("butte.agent")

BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"
_KINDS = (COMMAND, DEFAULT, CUSTOM)
# How a run is checkpointed (see `CheckpointWriter`).
_JOURNAL, _LOG, _TREE = "journal", "log", "tree"
# Journal records that remove (need no sync of their own, see `CheckpointWriter`).
_REMOVALS = frozenset({"END", "DROP", "FORGET"})
# The checkpoint effects about one run.
_OfRun = CheckpointPid | CheckpointTask | CheckpointUpdate | RemoveCheckpoint
_encoder = msgspec.json.Encoder()


def current_boot_id() -> str | None:
    """This boot's id (Linux), or None where it cannot be read."""
    try:
        with open(BOOT_ID_FILE) as f:
            return f.read().strip() or None
    except OSError:
        return None


# -- writing ----------------------------------------------------------------------------------


# What writes bytes to a file descriptor (``os.write`` where None is given; tests inject one
# that fails).
WriteFd = Callable[[int, memoryview], int]

# Write errors the writer waits out (`CheckpointWriter.write_batch`): the file system is full
# or the user over quota, which space freed later cures, and I/O errors, which the writer
# treats alike (the failed write is undone either way, and the sync that has to succeed
# afterwards would report a disk that stays bad).
WAITABLE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO})


class CheckpointBroken(OSError):
    """A checkpoint write failed in a way that leaves what is on disk unknown (a failed sync,
    whose data the kernel may have dropped, or a partial record that could not be cut off
    again): the agent cannot go on promising durability and exits."""


class CheckpointAbandoned(OSError):
    """The writer stopped waiting for space because the agent is exiting (`give_up`): the
    batch, and everything held behind it, was never carried out."""


def waitable(error: OSError) -> bool:
    """Whether a failed checkpoint write is waited out and retried (see `WAITABLE_ERRNOS`)
    rather than fatal."""
    return error.errno in WAITABLE_ERRNOS and not isinstance(
        error, CheckpointBroken | CheckpointAbandoned
    )


def _replace(path: str, data: bytes, write: WriteFd | None = None, sync: bool = True) -> None:
    """Replaces (or creates) ``path`` with ``data``: temp file, fsync (unless ``sync`` is
    false: a new file, with no old content to keep, is made durable by its batch's sync),
    rename. Readers see the old content or the new, never part of it; a failed write leaves
    no temp file behind (on a full disk it would hold space the retry needs)."""
    temporary = f"{path}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        try:
            _write_all(fd, data, write)
            if sync:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _write_all(fd: int, data: bytes | bytearray, write: WriteFd | None = None) -> None:
    """Writes all of ``data`` with ``write`` (None: ``os.write``, looked up now)."""
    write = write or os.write
    view = memoryview(data)
    try:
        while view:
            view = view[write(fd, view) :]
    finally:
        # A failed write's traceback keeps this frame: the view must not keep ``data``
        # exported (a bytearray that is exported cannot be cleared or grown).
        view.release()


def link_atomically(target: str, link: str) -> None:
    """Points the symlink ``link`` at ``target``, replacing it atomically."""
    os.makedirs(os.path.dirname(link), exist_ok=True)
    temporary = f"{link}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    os.symlink(target, temporary)
    try:
        os.replace(temporary, link)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def append_record(path: str, data: bytes, write: WriteFd | None = None) -> None:
    """Appends one RecordIO record (``<length>\n<data>``) to ``path``, creating the file;
    no sync of its own (its batch is synced, see `CheckpointWriter`). A write that fails
    (a full disk) is undone: the file is cut back to its old length, so no torn record is
    left for later records to follow (the reader would stop at it and miss them)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            _write_all(fd, b"%d\n%s" % (len(data), data), write)
        except OSError:
            _cut_back(fd, size, path)
            if not size:
                with contextlib.suppress(OSError):
                    os.unlink(path)  # made by this call: as if it had never been
            raise
    finally:
        os.close(fd)


def _cut_back(fd: int, size: int, path: str) -> None:
    """Truncates the log ``path`` (open as ``fd``) to ``size``, its length before a write that
    failed; raises `CheckpointBroken` if even that fails (needs no space: it frees some)."""
    try:
        os.ftruncate(fd, size)
    except OSError as e:
        raise CheckpointBroken(
            e.errno, f"cannot cut a partly written record off {path}: {e.strerror}"
        ) from e


def _load_syncfs() -> Callable[[int], int] | None:
    """libc's ``syncfs(2)`` (Linux), or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int]
    function.restype = ctypes.c_int

    def syncfs(fd: int) -> int:
        if function(fd) != 0:
            number = ctypes.get_errno()
            raise OSError(number, f"syncfs: {os.strerror(number)}")
        return 0

    return syncfs


_syncfs = _load_syncfs()


def _free_space(path: str) -> str:
    """The free space of the file system holding ``path``, for a log line: bytes and inodes
    (a file system out of inodes fails with ENOSPC too)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return "unknown"
    return f"{st.f_bavail * st.f_frsize // 1024} KiB and {st.f_favail} inodes"


# The run directory every checkpoint effect of a run needs (several os.path.joins, which
# showed in profiles of the writer), cached: it is built again for the run's executor, pid,
# task and every update record. Bounded, so ended runs age out.
@functools.lru_cache(maxsize=4096)
def _meta_run_dir(
    work_dir: str, agent_id: str, framework_id: str, executor_id: str, container_id: str
) -> str:
    return paths.meta_run_dir(work_dir, agent_id, framework_id, executor_id, container_id)


# What the trash thread is given: a tree to delete (see `Trash.put`), or one of these.
_LEFTOVERS, _STOP = "leftovers", "stop"
_TrashJob = tuple[str, str, dict[str, set[str]] | None] | str


class Trash:
    """Deletes the checkpoint trees `CheckpointWriter` renamed into ``meta/trash``, on a
    daemon thread of its own, so that the writer's thread, which every checkpoint waits for,
    spends one rename per removal instead of an unlink or rmdir per file and directory.

    The thread starts when there is work and ends after `IDLE_SECONDS` without any (or at
    `close`). What is put here is gone from the checkpoint already, so nothing waits for its
    deletion and nothing about it is synced: a crash leaves it in the trash, and the next
    writer empties the trash at start-up (`empty_leftovers`)."""

    IDLE_SECONDS = 5.0

    def __init__(self, directory: str) -> None:
        self.directory = directory
        # Names unique to this trash: a new agent process may put its own trees next to the
        # leftovers of the previous one before those are deleted.
        self._prefix = f"{os.getpid()}-{time.time_ns():x}-"
        self._numbers = itertools.count()
        self._jobs: queue.SimpleQueue[_TrashJob] = queue.SimpleQueue()
        self._lock = threading.Lock()  # guards _thread and _closed against put/idle exit
        self._thread: threading.Thread | None = None
        self._closed = False
        self.deleted = 0  # trees deleted (statistics; tests wait for them)
        self.walked = 0  # ... of which needed a directory walk

    def new_name(self) -> str:
        """A path in the trash nothing else uses."""
        return os.path.join(self.directory, f"{self._prefix}{next(self._numbers)}")

    def put(self, old: str, path: str, made: dict[str, set[str]] | None) -> None:
        """Deletes ``path``, a tree just moved into the trash from ``old``, in the background.
        ``made`` is, by directory (named under ``old``), the names created in it, if known
        to be all it holds (see `CheckpointWriter._forget`); None: walk it."""
        self._submit((old, path, made))

    def empty_leftovers(self) -> None:
        """Deletes, in the background, whatever the trash holds that this one did not put
        there (an earlier agent process died before deleting it)."""
        self._submit(_LEFTOVERS)

    def close(self) -> None:
        """Waits until everything put so far is deleted and stops the thread; later puts are
        deleted on the caller's thread."""
        with self._lock:
            self._closed = True
            thread = self._thread
            if thread is not None:
                self._jobs.put(_STOP)
        if thread is not None:
            thread.join()

    def _submit(self, job: _TrashJob) -> None:
        with self._lock:
            if not self._closed:
                self._jobs.put(job)
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="checkpoint-trash", daemon=True
                    )
                    self._thread.start()
                return
        self._do(job)

    def _run(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=self.IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._jobs.empty():
                        self._thread = None
                        return
                continue
            if job == _STOP:
                with self._lock:
                    self._thread = None
                return
            self._do(job)

    def _do(self, job: _TrashJob) -> None:
        try:
            if job == _LEFTOVERS:
                self._delete_leftovers()
            elif not isinstance(job, str):
                self._delete(*job)
        except Exception:  # noqa: BLE001 - the trash thread must go on (a bug, not a state)
            log.exception("cannot delete %r from the checkpoint trash", job)

    def _delete(self, old: str, path: str, made: dict[str, set[str]] | None) -> None:
        try:
            if made is not None:
                _unlink_made(old, path, made)
            else:
                os.unlink(path)  # a run log (see `CheckpointWriter`); a directory: EISDIR
        except OSError:
            # Something not in the list is in there, or a tree nobody listed: walk it.
            self.walked += 1
            _delete_tree(path)
        self.deleted += 1

    def _delete_leftovers(self) -> None:
        try:
            with os.scandir(self.directory) as entries:
                names = [e.name for e in entries if not e.name.startswith(self._prefix)]
        except OSError:
            return
        for name in names:
            self.walked += 1
            _delete_tree(os.path.join(self.directory, name))


def _unlink_made(old: str, path: str, made: dict[str, set[str]]) -> None:
    """Deletes the tree ``path`` (moved there from ``old``) by the list of what was created in
    it (see `Trash.put`), children first; raises OSError if a directory is not empty then."""
    cut = len(old)
    # Directories first to last (parents before children): deleted in reverse.
    order = [old]
    for directory in order:
        names = made[directory]
        for name in names:
            child = os.path.join(directory, name)
            if child in made:
                order.append(child)
    for directory in reversed(order):
        here = path + directory[cut:]
        for name in made[directory]:
            if os.path.join(directory, name) not in made:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(here, name))
        os.rmdir(here)


def _delete_tree(path: str) -> None:
    """Deletes ``path`` and everything below it, never following a symbolic link; errors
    are ignored (a later start finds what is left in the trash again)."""
    try:
        with os.scandir(path) as entries:
            children = [(e.path, e.is_dir(follow_symlinks=False)) for e in entries]
    except NotADirectoryError:
        with contextlib.suppress(OSError):
            os.unlink(path)
        return
    except OSError:
        return
    for child, is_dir in children:
        if is_dir:
            _delete_tree(child)
        else:
            with contextlib.suppress(OSError):
                os.unlink(child)
    with contextlib.suppress(OSError):
        os.rmdir(path)


# A run in the journal: framework id, executor id, container id.
_RunId = tuple[str, str, str]


class _NamesRun(Protocol):
    """A journal record, or a checkpoint effect about a run."""

    @property
    def framework_id(self) -> str | None: ...
    @property
    def executor_id(self) -> str | None: ...
    @property
    def container_id(self) -> str | None: ...


def _run_id(of: _NamesRun) -> _RunId:
    return (of.framework_id or "", of.executor_id or "", of.container_id or "")


class _RunIdOf(msgspec.Struct):
    """What `_Journal` reads of a record: its type and its run."""

    type: str
    framework_id: str | None = None
    executor_id: str | None = None
    container_id: str | None = None


_run_id_decoder = msgspec.json.Decoder(_RunIdOf, strict=False)


class _Journal:
    """The journal of command runs (`paths.command_runs_path`) as its writer keeps it: open
    for appending, with the bytes of each live run's records, which say when it is due to
    be rewritten with the live runs only (`compact_if_due`)."""

    # Rewritten from this size on, once less than half of it is live runs' records.
    COMPACT_AT = 4 << 20

    def __init__(self, path: str, write: WriteFd | None = None) -> None:
        self.path = path
        self.live: dict[_RunId, int] = {}
        self.live_bytes = 0
        self.size = 0  # with the records not written yet
        self.compactions = 0  # statistics; tests count them
        self.created = False  # whether opening made the file (its entry is not durable yet)
        # Records appended since the last `flush`: a batch's records leave in one write.
        self._unwritten = bytearray()
        self._write = write
        # Not compacted again below this size after a compaction found no space for its copy.
        self._compact_from = 0
        self.fd = self._open()
        self._written = self.size  # the file's length: what `flush` cuts back to if it fails

    def _open(self) -> int:
        """Opens the journal for appending, cut after its last whole record: a torn record
        (a crash mid-write), or a bad one, would hide every later record from the reader."""
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            data = b""
            self.created = True
        problems: list[str] = []
        for start, body, end in _frames(data, self.path, problems):
            try:
                record = _run_id_decoder.decode(data[body:end])
            except msgspec.DecodeError as e:
                problems.append(f"{self.path}: bad record at byte {start}: {e}")
                break
            self._count(record.type, _run_id(record), end - start)
            self.size = end
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        if self.size < len(data):
            reason = "; ".join(problems) or "a torn last record"
            log.warning("%s: cut after byte %d (%s)", self.path, self.size, reason)
            os.ftruncate(fd, self.size)
        return fd

    def append(self, run: _RunId, record: Mapping[str, object]) -> None:
        """Appends ``record`` of ``run`` (DROP: of its framework) to what the next `flush`
        writes; no sync of its own."""
        data = _encoder.encode(
            {**record, "framework_id": run[0], "executor_id": run[1], "container_id": run[2]}
        )
        frame = b"%d\n%s" % (len(data), data)
        self._unwritten += frame
        self.size += len(frame)
        self._count(str(record["type"]), run, len(frame))

    def flush(self) -> None:
        """Writes the records appended since the last flush, in one write (no sync). If that
        fails (a full disk), what it wrote is cut off again and the records stay to be
        written by the next flush: each record is in the file once, whole, or not at all."""
        if not self._unwritten:
            return
        try:
            _write_all(self.fd, self._unwritten, self._write)
        except OSError:
            _cut_back(self.fd, self._written, self.path)
            raise
        self._written += len(self._unwritten)
        self._unwritten.clear()

    def _count(self, kind: str, run: _RunId, size: int) -> None:
        """Keeps `live` up to date with one record of ``size`` bytes."""
        if kind == "DROP":
            for ended in [r for r in self.live if r[0] == run[0]]:
                self.live_bytes -= self.live.pop(ended)
        elif kind == "END":
            self.live_bytes -= self.live.pop(run, 0)
        elif kind == "EXECUTOR" or run in self.live:
            self.live[run] = self.live.get(run, 0) + size
            self.live_bytes += size

    def compact_if_due(self) -> bool:
        """Rewrites the journal with the live runs' records only, if it is due: temp file,
        fsync, rename (a crash leaves the old journal or the new one, which hold the same live
        runs). The rename is made durable by the batch's sync, like any other change.
        Where there is no space for the copy, the journal stays as it is (nothing is lost:
        compacting only saves space) and is tried again once it has grown by a quarter of
        `COMPACT_AT`."""
        if self.size < max(self.COMPACT_AT, self._compact_from) or 2 * self.live_bytes > self.size:
            return False
        self.flush()
        with open(self.path, "rb") as f:
            data = f.read()
        kept = bytearray()
        for start, body, end in _frames(data, self.path, []):
            if _run_id(_run_id_decoder.decode(data[body:end])) in self.live:
                kept += data[start:end]
        try:
            _replace(self.path, bytes(kept), self._write)
        except OSError as e:
            if not waitable(e):
                raise
            self._compact_from = self.size + self.COMPACT_AT // 4
            return False
        os.close(self.fd)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self.size = self._written = len(kept)
        self._compact_from = 0
        self.compactions += 1
        return True

    def close(self) -> None:
        try:
            self.flush()
        finally:
            os.close(self.fd)


class CheckpointWriter:
    """Carries out the core's checkpoint effects under ``<work_dir>/meta``.

    `write_batch` writes many effects and then makes them durable together (group commit);
    `apply` is a batch of one. Both block, so the agent calls them from one worker thread
    (`butte.agent.group_commit`); the writer is not meant for two threads at once.

    A command executor's run (kind ``command``: one task) is checkpointed as records in the
    agent id's journal, ``command-runs.log`` (`_Journal`): its ExecutorInfo and kind, pid,
    TaskInfo, updates and acknowledgements, each record naming its run, instead of the tree
    of Mesos' layout that other runs get (``executor.info``, ``run.info``,
    ``pids/forked.pid``, ``tasks/<task_id>/task.info`` and ``task.updates``, and the five
    directories holding them: `butte.agent.paths`). Every command task of a checkpointing
    framework would create and then delete that many inodes (or three for a log of its own,
    ``runs/<container_id>.log``, which agents before the journal wrote and which is still
    read and appended to), and on a file system where each costs tens of microseconds both
    ways (ext4 without a journal skips the inodes freed in the last minute) they were most
    of the agent's work per task. The journal holds exactly what the files did and is read
    back the same way; an END record ends a run, a DROP record a framework's runs.

    Durability of a batch (what the agent may rely on once `write_batch` returns):

    * A file is written to a temp file and renamed into place: a new one without a sync of
      its own; one that existed after an fsync of the temp file, so a crash leaves the old or
      the new content, never a mix (``framework.info`` and ``executor.info`` are rewritten).
      A write that fails (a full disk) never leaves part of a file under its name.
    * Update records, run log records and journal records are appended without a sync of
      their own. The journal is rewritten with the live runs only when `_Journal` says so
      (temp file, fsync, rename: the old journal or the new one holds the same live runs).
    * At the end of the batch one ``syncfs(2)`` of the work dir's file system writes back
      every file's data and every directory entry the batch created, renamed or appended to
      (and commits the journal); it reports a failed writeback as an error (Linux >= 5.8).
      Where there is no syncfs, every touched file and every directory whose entries changed
      is fsynced instead. A batch that only appended to the journal is made durable by an
      ``fdatasync`` of the journal alone.
    * Until that sync returns, a crash may lose any part of the batch, or leave a new file
      empty or cut short, or a torn record at the end of a log. The reader drops such a file
      (reported as a problem) or ignores the torn record, which is the state of a crash just
      before the batch. That is safe because the agent carries out nothing that was emitted
      after a checkpoint (an ACKNOWLEDGED, an update to the master, a launch) before the
      batch holding it is durable.
    * A removal is one rename of the tree (a task's, a run's, or an executor's when it was
      its last run, a framework's) into ``meta/trash``, under a new name; the `Trash` thread
      deletes it from there later. The rename needs no sync of its own: it becomes durable
      with the sync of this batch, or of a later one, like any other change of the file
      system. A crash that undoes it leaves the checkpoint of something that had ended,
      which recovery finishes off again; one after it leaves the tree in the trash, which
      recovery never reads and the next writer empties (in the background). In the journal a
      removal is a record (END, DROP, FORGET), which a crash may lose in the same way. A
      batch of removals alone is not synced.
    """

    # How long a batch that found no space waits before it is tried again: doubling from the
    # first to the second (`write_batch`).
    RETRY_INTERVALS = (0.5, 2.0)

    def __init__(
        self, work_dir: str, agent_id: str | None = None, write: WriteFd | None = None
    ) -> None:
        self.work_dir = work_dir
        self.agent_id = agent_id
        self._write_fd = write  # every byte of the checkpoint goes through it (None: os.write)
        self.writes = 0
        # The error a batch is waiting out, while it waits (see `write_batch`); the shell
        # reads it from the event loop.
        self.stalled: OSError | None = None
        self.stalls = 0  # batches that had to wait (statistics; tests count them)
        self._stalled_since = 0.0
        self._give_up = threading.Event()
        self.syncs = 0  # syncs of whole batches (statistics; tests count them)
        # Directories known to exist (saves a mkdir per write), and for each directory this
        # writer created, the names it created in it: a removed tree's list goes with it to
        # the trash, which then unlinks exactly those (no directory scans, no stats) and
        # walks only what is older or was added by someone else.
        self._dirs: set[str] = set()
        self._made: dict[str, set[str]] = {}
        self._new_dirs: list[str] = []  # made for the effect being written (`_write_one`)
        # For each run this writer has seen, how it is checkpointed: in the journal, as a
        # log of its own or as a tree; a run checkpointed before this writer is looked at once.
        self._layouts: dict[str, str] = {}
        self._journal: _Journal | None = None  # of self.agent_id, opened when first needed
        self.trash = Trash(paths.meta_trash_dir(work_dir))
        self._trash_ready = False  # whether the trash directory is known to exist
        if os.path.isdir(self.trash.directory):
            self._trash_ready = True
            self.trash.empty_leftovers()  # of an earlier agent process, in the background

    def apply(self, effect: Checkpoint) -> None:
        """Writes (or removes) what ``effect`` describes, durably."""
        self.write_batch([effect])

    def write_batch(self, effects: Iterable[Checkpoint]) -> None:
        """Writes (or removes) what ``effects`` describe, in order, then makes the writes
        durable with one sync (see the class docstring). Any error other than an OSError (a
        checkpoint before the agent id is known) is logged and skips only its effect, as it
        did when each was written on its own.

        A write that fails with a full disk (or quota, or an I/O error: `WAITABLE_ERRNOS`)
        is undone (no temp file, no partial record is left; `_replace`, `append_record`,
        `_Journal.flush`) and the batch waits: it is tried again from the effect that
        failed, every `RETRY_INTERVALS` (doubling), until it can be written, so nothing of
        it is lost and nothing the agent holds behind it (an ACKNOWLEDGED, an update to the
        master, a launch) is carried out before it is durable. It logs one error when it
        starts waiting and one line when it is written; `stalled` says meanwhile. It raises
        `CheckpointAbandoned` if the agent gives up (`give_up`), `CheckpointBroken` if the
        sync fails (the kernel may have dropped the data it could not write back: writing
        it again is not known to be possible) or a partial write could not be undone, and
        the OSError of any other failed write: the agent cannot go on."""
        effects = list(effects)
        touched: set[str] = set()
        done = 0  # effects written; the rest are written (again) after a wait
        attempts = 0
        while True:
            try:
                while done < len(effects):
                    self._write_one(effects[done], touched)
                    done += 1
                self._flush_journal(touched)
                break
            except OSError as e:
                if not waitable(e):
                    raise
                attempts += 1
                self._wait_for_space(e, attempts)
        if touched:
            try:
                self._make_durable(touched)
            except OSError as e:
                raise CheckpointBroken(
                    e.errno, f"cannot make the checkpoint durable: {e.strerror or e}"
                ) from e
        if attempts:
            self._space_back(attempts)

    def _write_one(self, effect: Checkpoint, touched: set[str]) -> None:
        self._new_dirs.clear()
        try:
            self._write(effect, touched)
        except OSError:
            self._remove_new_dirs(touched)
            raise
        except Exception:  # noqa: BLE001 - a bad effect (a bug) must not stop the others
            log.exception("cannot carry out checkpoint %r", effect)

    def _remove_new_dirs(self, touched: set[str]) -> None:
        """Removes the directories the effect that just failed created, where nothing of it
        was written into them: the reader would take a task's or a run's directory without
        its file for a checkpoint problem (and ``--strict`` refuses to start on one)."""
        for directory in reversed(self._new_dirs):
            try:
                os.rmdir(directory)
            except OSError:
                continue  # something of the effect is in it: it stays, and its parents
            self._dirs.discard(directory)
            self._made.pop(directory, None)
            parent = self._made.get(os.path.dirname(directory))
            if parent is not None:
                parent.discard(os.path.basename(directory))
            touched.discard(directory)
        self._new_dirs.clear()

    def _flush_journal(self, touched: set[str]) -> None:
        journal = self._journal
        if journal is not None:
            journal.flush()
            if journal.compact_if_due():
                # The rename needs its directory synced too (never just the journal's data).
                touched.update((journal.path, os.path.dirname(journal.path)))

    def give_up(self) -> None:
        """Makes a batch that waits for space (now or later) raise `CheckpointAbandoned`
        instead: the agent is exiting, and whatever waits behind it was never carried out,
        so the checkpoint on disk stays consistent without it (thread-safe)."""
        self._give_up.set()

    def _wait_for_space(self, error: OSError, attempts: int) -> None:
        """Waits before the next attempt of a batch that failed with ``error``; logs once per
        stall, since the agent's own log may be on the full file system too."""
        if attempts == 1:
            # A copy: the error's traceback would keep what the failed write was given.
            self.stalled = OSError(error.errno, error.strerror)
            self.stalls += 1
            self._stalled_since = time.monotonic()
            if not self._give_up.is_set():
                log.error(
                    "cannot write the checkpoint under %s: %s (%s free). Status updates, "
                    "acknowledgements and launches of checkpointing frameworks wait until it "
                    "can be written; retrying (every %g s at most)",
                    self.work_dir,
                    error.strerror or error,
                    _free_space(self.work_dir),
                    self.RETRY_INTERVALS[1],
                )
        first, most = self.RETRY_INTERVALS
        if self._give_up.wait(min(most, first * 2 ** min(attempts - 1, 30))):
            self.stalled = None
            raise CheckpointAbandoned(
                error.errno, f"the checkpoint was not written: {error.strerror or error}"
            ) from error

    def _space_back(self, attempts: int) -> None:
        waited = time.monotonic() - self._stalled_since
        self.stalled = None
        log.warning(
            "the checkpoint could be written again after %.1f s (%d attempts); what waited for "
            "it goes on",
            waited,
            attempts + 1,
        )

    def _make_durable(self, touched: set[str]) -> None:
        self.syncs += 1
        journal = self._journal
        if journal is not None and touched == {journal.path}:
            # Only records appended to the journal (most batches of command tasks): its data
            # and size are all there is to sync, and a syncfs would also write back
            # everything else on the file system (the sandboxes' files among it).
            os.fdatasync(journal.fd)
            return
        if _syncfs is not None:
            fd = os.open(self.work_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                _syncfs(fd)
            finally:
                os.close(fd)
            return
        # Files and created directories, then the directories holding them.
        directories: set[str] = set()
        for path in touched:
            directories.add(os.path.dirname(path))
        for path in sorted(touched) + sorted(directories, key=len, reverse=True):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # removed later in the batch: nothing to make durable
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _write(self, effect: Checkpoint, touched: set[str]) -> None:
        if isinstance(effect, CheckpointAgent):
            self._agent(effect, touched)
            return
        if isinstance(effect, CheckpointOperations):
            path = paths.operations_info_path(self.work_dir)
            self._put(path, _encoder.encode(effect.operations), touched)
            return
        if isinstance(effect, CheckpointResources):
            path = paths.resources_info_path(self.work_dir)
            self._ensure_dir(os.path.dirname(path), touched)
            self._put(path, _encoder.encode(effect.resources), touched)
            volumes.sync(self.work_dir, effect.resources, effect.removed, effect.emptied)
            return
        if self.agent_id is None:
            raise RuntimeError(f"checkpoint before the agent id is known: {effect!r}")
        work, agent = self.work_dir, self.agent_id
        self.writes += 1
        if isinstance(effect, CheckpointFramework):
            path = paths.framework_info_path(work, agent, effect.framework_id)
            self._put(path, _encoder.encode(effect.info), touched)
        elif isinstance(effect, CheckpointExecutor):
            ex = (effect.framework_id, effect.executor_id)
            run = _meta_run_dir(work, agent, *ex, effect.container_id)
            if effect.kind == COMMAND:
                self._layouts[run] = _JOURNAL
                record = {"type": "EXECUTOR", "kind": effect.kind, "info": effect.info}
                self._journal_append((*ex, effect.container_id), record, touched)
                return
            self._layouts[run] = _TREE
            path = paths.executor_info_path(work, agent, *ex)
            self._put(path, _encoder.encode(effect.info), touched)
            self._put(paths.run_info_path(run), _encoder.encode({"kind": effect.kind}), touched)
        elif isinstance(effect, CheckpointPid):
            ids, run, layout = self._run(effect, touched)
            if layout == _TREE:
                self._put(paths.forked_pid_path(run), str(effect.pid).encode(), touched)
            else:
                self._log(ids, run, layout, {"type": "PID", "pid": effect.pid}, touched)
        elif isinstance(effect, CheckpointTask):
            ids, run, layout = self._run(effect, touched)
            if layout == _TREE:
                path = paths.task_info_path(run, effect.task.task_id.value)
                self._put(path, _encoder.encode(effect.task), touched)
            else:
                self._log(ids, run, layout, {"type": "TASK", "task": effect.task}, touched)
        elif isinstance(effect, CheckpointUpdate):
            ids, run, layout = self._run(effect, touched)
            if effect.status is not None:
                record = {"type": "UPDATE", "status": effect.status}
            else:
                record = {"type": "ACK", "uuid": effect.ack_uuid}
            if layout == _TREE:
                self._append(paths.task_updates_path(run, effect.task_id), record, touched)
            else:
                record["task_id"] = effect.task_id
                self._log(ids, run, layout, record, touched)
        elif isinstance(effect, RemoveCheckpoint):
            self._remove(effect, touched)

    def _journal_of_agent(self, touched: set[str]) -> _Journal:
        if self._journal is None:
            assert self.agent_id is not None
            path = paths.command_runs_path(self.work_dir, self.agent_id)
            self._ensure_dir(os.path.dirname(path), touched)
            self._journal = _Journal(path, self._write_fd)
            if self._journal.created:  # its directory entry too must be made durable
                touched.update((path, os.path.dirname(path)))
        return self._journal

    def _journal_append(self, run: _RunId, record: Mapping[str, object], touched: set[str]) -> None:
        journal = self._journal_of_agent(touched)
        journal.append(run, record)
        if record["type"] not in _REMOVALS:
            touched.add(journal.path)

    def _run(self, effect: _OfRun, touched: set[str]) -> tuple[_RunId, str, str]:
        """The run ``effect`` is about, its run directory, and how the run is checkpointed
        (see the class docstring)."""
        assert self.agent_id is not None
        ids = _run_id(effect)
        run = _meta_run_dir(self.work_dir, self.agent_id, *ids)
        layout = self._layouts.get(run)
        if layout is None:
            if ids in self._journal_of_agent(touched).live:
                layout = _JOURNAL
            elif os.path.exists(paths.run_log_path(run)):
                layout = _LOG
            else:
                layout = _TREE
            self._layouts[run] = layout
        return ids, run, layout

    def _log(
        self,
        ids: _RunId,
        run: str,
        layout: str,
        record: Mapping[str, object],
        touched: set[str],
    ) -> None:
        """Appends ``record`` to the run's journal or run log."""
        if layout == _JOURNAL:
            self._journal_append(ids, record, touched)
        else:
            self._append(paths.run_log_path(run), record, touched)

    def _append(self, path: str, record: Mapping[str, object], touched: set[str]) -> None:
        """Appends one record to the log ``path``, creating it (and its directory)."""
        self._ensure_dir(os.path.dirname(path), touched)
        append_record(path, _encoder.encode(record), self._write_fd)
        self._note(path)
        touched.add(path)

    def _put(self, path: str, data: bytes, touched: set[str]) -> None:
        """Writes ``path`` through a temp file and a rename, so that a write that fails (a
        full disk) leaves no part of a file under its name: a new file unsynced (its batch's
        sync makes it durable), an existing one replaced atomically (synced first)."""
        directory = os.path.dirname(path)
        self._ensure_dir(directory, touched)
        made = self._made.get(directory)
        # In a directory this writer made, its list says what exists (no stat needed).
        existed = os.path.basename(path) in made if made is not None else os.path.lexists(path)
        _replace(path, data, self._write_fd, sync=existed)
        if not existed:
            self._note(path)
        touched.add(path)

    def _ensure_dir(self, directory: str, touched: set[str]) -> None:
        if directory in self._dirs:
            return
        if not directory.startswith(os.path.join(self.work_dir, "")):
            os.makedirs(directory, exist_ok=True)  # the work dir itself, or outside it
            self._dirs.add(directory)
            return
        self._ensure_dir(os.path.dirname(directory), touched)
        try:
            os.mkdir(directory)
        except FileExistsError:
            pass  # made before this writer: what is in it is not known
        else:
            self._note(directory)
            self._made[directory] = set()
            self._new_dirs.append(directory)
            touched.add(directory)  # the fsync fallback syncs it and the entry in its parent
        if os.path.basename(directory) == "executors":
            spread_subdirectories(directory)  # one tree per executor: see there
        self._dirs.add(directory)

    def _note(self, path: str) -> None:
        """Records ``path`` as created by this writer (if its directory was too)."""
        names = self._made.get(os.path.dirname(path))
        if names is not None:
            names.add(os.path.basename(path))

    def _discard(self, path: str) -> None:
        """Takes the directory or run log ``path`` out of the checkpoint with one rename into
        the trash, which deletes it on its own thread; errors are ignored (a tree that stays
        is the checkpoint of something that ended, which recovery finishes off)."""
        parent = self._made.get(os.path.dirname(path))
        if parent is not None:
            parent.discard(os.path.basename(path))
        try:
            if not self._trash_ready:
                os.makedirs(self.trash.directory, exist_ok=True)
                self._trash_ready = True
            target = self.trash.new_name()
            os.rename(path, target)
        except OSError as e:
            if isinstance(e, FileNotFoundError) and not os.path.lexists(path):
                self._forget(path)  # nothing there (removed before): only the bookkeeping left
                return
            self._trash_ready = False  # the trash may have gone: made again next time
            log.warning("cannot move %s to the checkpoint trash (%s): deleting it here", path, e)
            _delete_tree(path)
            self._forget(path)
            return
        self.trash.put(path, target, self._forget(path))

    def _forget(self, path: str) -> dict[str, set[str]] | None:
        """Drops what this writer knows of the tree ``path`` (it is gone from there) and
        returns what it had created in it, by directory, if it created ``path`` itself:
        then that is all the tree holds, unless someone else added to it."""
        if path not in self._made:
            # Made before this writer (an earlier agent process): nothing to hand on, but
            # this writer may have added directories below since.
            prefix = path + os.sep
            self._dirs = {d for d in self._dirs if d != path and not d.startswith(prefix)}
            self._made = {
                d: n for d, n in self._made.items() if d != path and not d.startswith(prefix)
            }
            return None
        made: dict[str, set[str]] = {}
        pending = [path]
        while pending:
            directory = pending.pop()
            names = self._made.pop(directory)
            self._dirs.discard(directory)
            made[directory] = names
            children = (os.path.join(directory, name) for name in names)
            pending.extend(child for child in children if child in self._made)
        return made

    def _only_entry(self, directory: str, name: str) -> bool:
        """Whether ``directory`` holds nothing but ``name`` (if anything)."""
        names = self._made.get(directory)
        if names is None:
            try:
                names = set(os.listdir(directory))
            except OSError:
                return False
        return names <= {name}

    def _agent(self, effect: CheckpointAgent, touched: set[str]) -> None:
        if effect.agent_id != self.agent_id and self._journal is not None:
            # The new agent id gets a journal of its own. The old one's records are never
            # recovered again: one that cannot be written (a full disk) is dropped, not
            # retried on a closed journal.
            journal, self._journal = self._journal, None
            with contextlib.suppress(OSError):
                journal.close()
        self.agent_id = effect.agent_id
        work = self.work_dir
        path = paths.agent_info_path(work, effect.agent_id)
        self._put(path, _encoder.encode(effect.agent_info), touched)
        boot_id = current_boot_id()
        if boot_id is not None:
            self._put(paths.boot_id_path(work), boot_id.encode(), touched)
        link = paths.latest_agent_link(work)
        link_atomically(effect.agent_id, link)
        touched.add(os.path.dirname(link))
        # Checkpoints of earlier agent ids can never be recovered again (Mesos GCs them).
        for name in _entries(paths.meta_slaves_dir(work)):
            if name != effect.agent_id:
                self._discard_runs_of(paths.meta_agent_dir(work, name))

    def _discard_runs_of(self, directory: str) -> None:
        """`_discard` of a framework's or an agent id's tree, with what is known of its runs."""
        prefix = directory + os.sep
        self._layouts = {r: v for r, v in self._layouts.items() if not r.startswith(prefix)}
        self._discard(directory)

    def _remove(self, effect: RemoveCheckpoint, touched: set[str]) -> None:
        assert self.agent_id is not None
        if effect.executor_id is None:
            framework = effect.framework_id
            self._discard_runs_of(paths.meta_framework_dir(self.work_dir, self.agent_id, framework))
            if any(run[0] == framework for run in self._journal_of_agent(touched).live):
                self._journal_append((framework, "", ""), {"type": "DROP"}, touched)
            return
        ids, run, layout = self._run(effect, touched)
        if effect.task_id is not None:
            if layout == _TREE:
                self._discard(paths.meta_task_dir(run, effect.task_id))
            else:
                forget = {"type": "FORGET", "task_id": effect.task_id}
                self._log(ids, run, layout, forget, touched)
            return
        del self._layouts[run]
        if layout == _JOURNAL:
            self._log(ids, run, layout, {"type": "END"}, touched)
            return
        entry = paths.run_log_path(run) if layout == _LOG else run
        runs = os.path.dirname(run)
        if self._only_entry(runs, os.path.basename(entry)):
            self._discard(os.path.dirname(runs))  # the executor's last run: the executor too
        else:
            self._discard(entry)

    def close(self) -> None:
        """Waits until the trash is empty and stops its thread (the writer is not used after
        this)."""
        if self._journal is not None:
            journal, self._journal = self._journal, None
            # Only records of a batch given up on can be left (each batch flushes its own):
            # nothing depends on them, and on a full disk they cannot be written.
            with contextlib.suppress(OSError):
                journal.close()
        self.trash.close()


# Events to an executor that only end things (a task, the executor).
_ENDING_EVENTS = frozenset({"KILL", "SHUTDOWN"})


class Overtaking:
    """Which effects the shell may carry out ahead of those held behind a checkpoint batch
    that waits for space (`CheckpointWriter.stalled`), so that a full disk does not also stop
    what frees it or keeps the agent known to the master.

    Every effect that follows a checkpoint waits until the checkpoint is durable
    (`butte.agent.group_commit`). While the disk is full that can be minutes, and three
    kinds of effect must not wait so long, none of which promises anything the checkpoint
    is needed for:

    * PONG to the master: a master whose pings go unanswered marks the agent unreachable and
      its tasks lost.
    * REGISTER_AGENT: an agent that restarts on a full disk (its recovery waiting for a
      checkpoint) re-registers with the tasks it has, as Mesos' agent reports task states
      it has not checkpointed yet; the updates themselves still wait. UNREGISTER_AGENT: an
      agent shut down for good says so (it sends nothing after it anyway).
    * Destroying a container, and KILL or SHUTDOWN to its executor, when nothing of that
      container is held (a launch held behind the checkpoint must not be overtaken by its
      own kill): a task over its disk quota must end (`disk/du`), and a kill can free
      space. A kill only ends things; what it causes is checkpointed in turn.

    The shell calls `held` for each effect it holds (not the checkpoints), `released` when
    it carries one out, and asks `may_overtake` for each new effect while a batch waits.
    Pure bookkeeping, no I/O."""

    def __init__(self) -> None:
        self._held: dict[str, int] = {}  # container id -> its effects held

    def held(self, effect: object) -> None:
        """``effect`` waits behind a checkpoint."""
        container_id = getattr(effect, "container_id", None)
        if container_id is not None and not isinstance(effect, Checkpoint):
            self._held[container_id] = self._held.get(container_id, 0) + 1

    def released(self, effect: object) -> None:
        """A held ``effect`` is carried out (or dropped)."""
        container_id = getattr(effect, "container_id", None)
        if container_id is None or isinstance(effect, Checkpoint):
            return
        left = self._held.get(container_id, 0) - 1
        if left > 0:
            self._held[container_id] = left
        else:
            self._held.pop(container_id, None)

    def may_overtake(self, effect: object) -> bool:
        """Whether ``effect`` may be carried out now although a batch waits for space."""
        if isinstance(effect, SendToMaster):
            messages = internal.Pong | internal.RegisterAgent | internal.UnregisterAgent
            return isinstance(effect.message, messages)
        if isinstance(effect, DestroyContainer):
            return effect.container_id not in self._held
        if isinstance(effect, SendToExecutor):
            return (
                effect.event.get("type") in _ENDING_EVENTS and effect.container_id not in self._held
            )
        return False


def forget_agent(work_dir: str) -> None:
    """Removes ``meta/slaves/latest``: the next start registers as a new agent (after a
    graceful shutdown, like Mesos, or when the checkpoint belongs to another boot)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(paths.latest_agent_link(work_dir))


# -- reading ----------------------------------------------------------------------------------


def checkpointed_resources(work_dir: str) -> list[dict] | None:
    """The total the last CHECKPOINT_RESOURCES gave (None: never any); raises ValueError for
    a file that is not a JSON list."""
    try:
        with open(paths.resources_info_path(work_dir), "rb") as f:
            data = msgspec.json.decode(f.read())
    except FileNotFoundError:
        return None
    except msgspec.DecodeError as e:
        raise ValueError(f"{paths.resources_info_path(work_dir)}: {e}") from None
    if not isinstance(data, list):
        raise ValueError(f"{paths.resources_info_path(work_dir)} is not a JSON list")
    return data


def checkpointed_operations(work_dir: str) -> list[internal.OperationReport]:
    """The operations awaiting acknowledgement that the agent checkpointed (none if the file
    is missing). Raises ValueError if it cannot be read as such."""
    path = paths.operations_info_path(work_dir)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        return []
    try:
        return msgspec.json.decode(raw, type=list[internal.OperationReport], strict=False)
    except msgspec.ValidationError as e:
        raise ValueError(f"{path}: {e}") from None
    except msgspec.DecodeError as e:
        raise ValueError(f"{path}: {e}") from None


def checkpointed_agent_id(work_dir: str) -> str | None:
    """The agent id ``meta/slaves/latest`` names, if any."""
    try:
        target = os.readlink(paths.latest_agent_link(work_dir))
    except OSError:
        return None
    return os.path.basename(target.rstrip(os.sep)) or None


def checkpointed_boot_id(work_dir: str) -> str | None:
    """The boot id recorded with the checkpoint, if any."""
    try:
        with open(paths.boot_id_path(work_dir)) as f:
            return f.read().strip() or None
    except OSError:
        return None


def read_state(work_dir: str) -> RecoveredState | None:
    """Everything checkpointed for the agent id ``meta/slaves/latest`` names; None if there
    is no such id. Process liveness is not checked here (``RecoveredRun.pid`` is the
    checkpointed pid, if any)."""
    agent_id = checkpointed_agent_id(work_dir)
    if agent_id is None:
        return None
    state = RecoveredState(agent_id=agent_id)
    info_path = paths.agent_info_path(work_dir, agent_id)
    state.agent_info = _read_json(info_path, dict, state.problems)
    frameworks_dir = os.path.join(paths.meta_agent_dir(work_dir, agent_id), "frameworks")
    for fid in _entries(frameworks_dir):
        path = paths.framework_info_path(work_dir, agent_id, fid)
        info = _read_json(path, FrameworkInfo, state.problems)
        if info is None:
            continue
        state.frameworks[fid] = info
        executors_dir = os.path.join(paths.meta_framework_dir(work_dir, agent_id, fid), "executors")
        for eid in _entries(executors_dir):
            state.runs.extend(_read_runs(work_dir, agent_id, fid, eid, state.problems))
    journal = paths.command_runs_path(work_dir, agent_id)
    for run in _read_journal(journal, state.problems):
        if run.framework_id in state.frameworks:
            state.runs.append(run)
    return state


def _read_runs(
    work_dir: str, agent_id: str, fid: str, eid: str, problems: list[str]
) -> Iterator[RecoveredRun]:
    runs = os.path.join(paths.meta_executor_dir(work_dir, agent_id, fid, eid), "runs")
    info: ExecutorInfo | None = None
    for name, is_dir in _run_entries(runs):
        if not is_dir:
            cid = name[: -len(paths.RUN_LOG_SUFFIX)]
            run = _read_run_log(os.path.join(runs, name), fid, eid, cid, problems)
            if run is not None:
                yield run
            continue
        if info is None:
            info = _read_json(
                paths.executor_info_path(work_dir, agent_id, fid, eid), ExecutorInfo, problems
            )
            if info is None:
                return
        run_dir = os.path.join(runs, name)
        extra = _read_json(paths.run_info_path(run_dir), dict, problems) or {}
        kind = extra.get("kind")
        if kind not in _KINDS:
            problems.append(f"{run_dir}: unknown executor kind {kind!r}")
            continue
        run = RecoveredRun(fid, eid, name, info, kind, pid=_read_pid(run_dir))
        for tid in _entries(os.path.join(run_dir, "tasks")):
            task_info = _read_json(paths.task_info_path(run_dir, tid), TaskInfo, problems)
            if task_info is not None:
                task = RecoveredTask(task_info)
                for record in _read_log(paths.task_updates_path(run_dir, tid), problems):
                    _add_update(task, record)
                run.tasks.append(task)
        yield run


def _run_entries(runs: str) -> list[tuple[str, bool]]:
    """The runs in an executor's ``runs`` directory, sorted: (name, True) for a run kept as a
    tree, (``<container_id>.log``, False) for a run log."""
    try:
        entries = list(os.scandir(runs))
    except OSError:
        return []
    out = []
    for entry in entries:
        name = entry.name
        if name == paths.LATEST or name.endswith(".tmp"):
            continue
        if entry.is_dir(follow_symlinks=False):
            out.append((name, True))
        elif name.endswith(paths.RUN_LOG_SUFFIX) and entry.is_file(follow_symlinks=False):
            out.append((name, False))
    return sorted(out)


def _read_pid(run_dir: str) -> int | None:
    try:
        with open(paths.forked_pid_path(run_dir)) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 0 else None


class _Record(msgspec.Struct):
    """A record of a task's update log, of a run log or of the journal (see
    `CheckpointWriter`)."""

    type: str
    status: TaskStatus | None = None
    uuid: str | None = None
    task_id: str | None = None  # run logs: whose update, acknowledgement or end
    framework_id: str | None = None  # the journal: whose record (DROP: only this)
    executor_id: str | None = None
    container_id: str | None = None
    info: ExecutorInfo | None = None  # EXECUTOR
    kind: str | None = None  # EXECUTOR
    pid: int | None = None  # PID
    task: TaskInfo | None = None  # TASK


_record_decoder = msgspec.json.Decoder(_Record, strict=False)


def _read_run_log(
    path: str, fid: str, eid: str, cid: str, problems: list[str]
) -> RecoveredRun | None:
    """The run a run log describes; None if it does not say which executor it was (a crash
    before its first record was durable: nothing of the run had been carried out)."""
    run: _RunBeingRead | None = None
    for record in _read_log(path, problems):
        if record.type == "EXECUTOR":
            run = _RunBeingRead.start(path, record, fid, eid, cid, problems)
            if run is None:
                return None
        elif run is None:
            problems.append(f"{path}: a {record.type} record before the executor's")
            return None
        else:
            run.add(record)
    if run is None:
        problems.append(f"{path}: no executor record")
        return None
    return run.done()


def _read_journal(path: str, problems: list[str]) -> Iterator[RecoveredRun]:
    """The runs the journal of command runs (`paths.command_runs_path`) holds that have not
    ended, in the order they started."""
    runs: dict[_RunId, _RunBeingRead] = {}
    for record in _read_log(path, problems):
        if record.type == "DROP":
            for run_id in [r for r in runs if r[0] == record.framework_id]:
                del runs[run_id]
            continue
        run_id = _run_id(record)
        if record.type == "EXECUTOR":
            run = _RunBeingRead.start(path, record, *run_id, problems)
            if run is not None:
                runs[run_id] = run
        elif record.type == "END":
            runs.pop(run_id, None)
        elif run_id in runs:
            runs[run_id].add(record)
        else:
            problems.append(f"{path}: a {record.type} record of run {run_id[2]} before its start")
    for run in runs.values():
        yield run.done()


class _RunBeingRead:
    """A run and its tasks while their records are read (run logs and the journal)."""

    def __init__(self, run: RecoveredRun) -> None:
        self.run = run
        self.tasks: dict[str, RecoveredTask] = {}

    @classmethod
    def start(
        cls, path: str, record: _Record, fid: str, eid: str, cid: str, problems: list[str]
    ) -> _RunBeingRead | None:
        """The run an EXECUTOR record starts; None (reported) if it is not one."""
        if record.info is None or record.kind not in _KINDS:
            problems.append(f"{path}: unknown executor kind {record.kind!r} of run {cid}")
            return None
        return cls(RecoveredRun(fid, eid, cid, record.info, record.kind))

    def add(self, record: _Record) -> None:
        if record.type == "PID" and record.pid is not None and record.pid > 0:
            self.run.pid = record.pid
        elif record.type == "TASK" and record.task is not None:
            self.tasks[record.task.task_id.value] = RecoveredTask(record.task)
        elif record.type == "FORGET" and record.task_id is not None:
            self.tasks.pop(record.task_id, None)
        elif record.task_id in self.tasks:
            _add_update(self.tasks[record.task_id], record)

    def done(self) -> RecoveredRun:
        self.run.tasks = list(self.tasks.values())
        return self.run


def _add_update(task: RecoveredTask, record: _Record) -> None:
    if record.type == "UPDATE" and record.status is not None:
        task.updates.append(record.status)
    elif record.type == "ACK" and record.uuid is not None:
        task.acks.append(record.uuid)


def _read_log(path: str, problems: list[str]) -> Iterator[_Record]:
    """The records of a RecordIO log (``<length>\\n<JSON>``), up to a torn last one (a crash
    mid-write: never acted upon) or a bad one (reported)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return
    except OSError as e:
        problems.append(f"{path}: {e}")
        return
    for start, body, end in _frames(data, path, problems):
        try:
            record = _record_decoder.decode(data[body:end])
        except msgspec.DecodeError as e:
            problems.append(f"{path}: bad record at byte {start}: {e}")
            return
        yield record


def _frames(data: bytes, path: str, problems: list[str]) -> Iterator[tuple[int, int, int]]:
    """Where each whole record of the RecordIO log ``data`` (read from ``path``) is: (start,
    start of the JSON, end); up to a torn last record or a bad length (reported)."""
    position = 0
    while position < len(data):
        newline = data.find(b"\n", position)
        if newline < 0:
            return
        length = data[position:newline]
        if not length.isdigit():
            problems.append(f"{path}: bad record length at byte {position}")
            return
        end = newline + 1 + int(length)
        if end > len(data):
            return  # torn by a crash mid-write: never acted upon
        yield position, newline + 1, end
        position = end


def _read_json(path: str, kind: type, problems: list[str]):  # noqa: ANN202 - generic reader
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        problems.append(f"{path}: {e.strerror or e}")
        return None
    try:
        return msgspec.json.decode(data, type=kind, strict=False)
    except (msgspec.DecodeError, msgspec.ValidationError) as e:
        problems.append(f"{path}: {e}")
        return None


def _entries(directory: str) -> list[str]:
    """Sub-directory names (no temp files, no ``latest`` links), sorted."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    out = []
    for name in names:
        full = os.path.join(directory, name)
        if name != paths.LATEST and not name.endswith(".tmp") and os.path.isdir(full):
            out.append(name)
    return sorted(out)
