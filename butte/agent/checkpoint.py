"""The agent's checkpoint on disk: writing the checkpoint effects of the core and reading the
``meta`` tree back on start-up (layout and durability rules in `butte.agent.paths`).

Writing happens in the shell, off the event loop and in effect order, in batches made durable
together (`CheckpointWriter`, `butte.agent.group_commit`), so a checkpoint that comes before
an ACKNOWLEDGED, a status update to the master or a container launch is on disk first.
Only frameworks with ``checkpoint: true`` are written (plus the agent's own id), as in Mesos,
so tasks of other frameworks cost no disk writes. A removal is one rename of the tree into
``meta/trash``; `Trash` deletes it from there on a thread of its own.

Reading is forgiving: a file that is missing or unreadable drops only what it describes (and
is reported in `RecoveredState.problems`); the torn last record of an update log is ignored.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

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
    RemoveCheckpoint,
)
from butte.agent.placement import spread_subdirectories
from butte.agent.records import COMMAND, CUSTOM, DEFAULT
from butte.agent.recovery import RecoveredRun, RecoveredState, RecoveredTask
from butte.core import internal
from butte.core.messages import ExecutorInfo, FrameworkInfo, TaskInfo, TaskStatus

log = logging.getLogger("butte.agent")

BOOT_ID_FILE = "/proc/sys/kernel/random/boot_id"
_KINDS = (COMMAND, DEFAULT, CUSTOM)
_encoder = msgspec.json.Encoder()


def current_boot_id() -> str | None:
    """This boot's id (Linux), or None where it cannot be read."""
    try:
        with open(BOOT_ID_FILE) as f:
            return f.read().strip() or None
    except OSError:
        return None


# -- writing ----------------------------------------------------------------------------------


def _replace(path: str, data: bytes) -> None:
    """Replaces ``path`` with ``data``: temp file, fsync, rename (readers see old or new)."""
    temporary = f"{path}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        _write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def link_atomically(target: str, link: str) -> None:
    """Points the symlink ``link`` at ``target``, replacing it atomically."""
    os.makedirs(os.path.dirname(link), exist_ok=True)
    temporary = f"{link}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    os.symlink(target, temporary)
    os.replace(temporary, link)


def append_record(path: str, data: bytes) -> None:
    """Appends one RecordIO record (``<length>\n<data>``) to ``path``, creating the file;
    no sync of its own (its batch is synced, see `CheckpointWriter`)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        _write_all(fd, b"%d\n%s" % (len(data), data))
    finally:
        os.close(fd)


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


class CheckpointWriter:
    """Carries out the core's checkpoint effects under ``<work_dir>/meta``.

    `write_batch` writes many effects and then makes them durable together (group commit);
    `apply` is a batch of one. Both block, so the agent calls them from one worker thread
    (`butte.agent.group_commit`); the writer is not meant for two threads at once.

    A command executor's run (kind ``command``: one task) is checkpointed as one log,
    ``runs/<container_id>.log``, of records for its ExecutorInfo and kind, pid, TaskInfo,
    updates and acknowledgements, instead of the tree of Mesos' layout that other runs get
    (``executor.info``, ``run.info``, ``pids/forked.pid``, ``tasks/<task_id>/task.info`` and
    ``task.updates``, and the five directories holding them: `butte.agent.paths`). Every
    command task of a checkpointing framework creates and then deletes that many inodes,
    and on a file system where each costs tens of microseconds both ways (ext4 without a
    journal skips the inodes freed in the last minute) they were most of the agent's work
    per task. The log holds exactly what the files did and is read back the same way.

    Durability of a batch (what the agent may rely on once `write_batch` returns):

    * A file that did not exist is written in place, without a sync of its own; a file that
      existed is replaced by temp file -> fsync -> rename, so a crash leaves the old or the
      new content, never a mix (``framework.info`` and ``executor.info`` are rewritten).
    * Update records and run log records are appended without a sync of their own.
    * At the end of the batch one ``syncfs(2)`` of the work dir's file system writes back
      every file's data and every directory entry the batch created, renamed or appended to
      (and commits the journal); it reports a failed writeback as an error (Linux >= 5.8).
      Where there is no syncfs, every touched file and every directory whose entries changed
      is fsynced instead.
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
      recovery never reads and the next writer empties (in the background). A batch of
      removals alone is not synced.
    """

    def __init__(self, work_dir: str, agent_id: str | None = None) -> None:
        self.work_dir = work_dir
        self.agent_id = agent_id
        self.writes = 0
        self.syncs = 0  # syncs of whole batches (statistics; tests count them)
        # Directories known to exist (saves a mkdir per write), and for each directory this
        # writer created, the names it created in it: a removed tree's list goes with it to
        # the trash, which then unlinks exactly those (no directory scans, no stats) and
        # walks only what is older or was added by someone else.
        self._dirs: set[str] = set()
        self._made: dict[str, set[str]] = {}
        # For each run this writer has seen: whether it is checkpointed as a log (True) or
        # as a tree (False); a run checkpointed before this writer is looked at once.
        self._logged: dict[str, bool] = {}
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
        durable with one sync (see the class docstring). Raises OSError if a write or the sync
        fails; any other error (a checkpoint before the agent id is known) is logged and
        skips only its effect, as it did when each was written on its own."""
        touched: set[str] = set()
        for effect in effects:
            try:
                self._write(effect, touched)
            except OSError:
                raise
            except Exception:  # noqa: BLE001 - a bad effect (a bug) must not stop the others
                log.exception("cannot carry out checkpoint %r", effect)
        if touched:
            self._make_durable(touched)

    def _make_durable(self, touched: set[str]) -> None:
        self.syncs += 1
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
            self._logged[run] = effect.kind == COMMAND
            if self._logged[run]:
                first = {"type": "EXECUTOR", "kind": effect.kind, "info": effect.info}
                self._append(paths.run_log_path(run), first, touched)
                return
            path = paths.executor_info_path(work, agent, *ex)
            self._put(path, _encoder.encode(effect.info), touched)
            self._put(paths.run_info_path(run), _encoder.encode({"kind": effect.kind}), touched)
        elif isinstance(effect, CheckpointPid):
            run = self._run(effect.framework_id, effect.executor_id, effect.container_id)
            if self._is_logged(run):
                self._append(paths.run_log_path(run), {"type": "PID", "pid": effect.pid}, touched)
            else:
                self._put(paths.forked_pid_path(run), str(effect.pid).encode(), touched)
        elif isinstance(effect, CheckpointTask):
            run = self._run(effect.framework_id, effect.executor_id, effect.container_id)
            if self._is_logged(run):
                self._append(
                    paths.run_log_path(run), {"type": "TASK", "task": effect.task}, touched
                )
            else:
                path = paths.task_info_path(run, effect.task.task_id.value)
                self._put(path, _encoder.encode(effect.task), touched)
        elif isinstance(effect, CheckpointUpdate):
            run = self._run(effect.framework_id, effect.executor_id, effect.container_id)
            if effect.status is not None:
                record: dict[str, object] = {"type": "UPDATE", "status": effect.status}
            else:
                record = {"type": "ACK", "uuid": effect.ack_uuid}
            if self._is_logged(run):
                record["task_id"] = effect.task_id
                self._append(paths.run_log_path(run), record, touched)
            else:
                self._append(paths.task_updates_path(run, effect.task_id), record, touched)
        elif isinstance(effect, RemoveCheckpoint):
            self._remove(effect, touched)

    def _is_logged(self, run: str) -> bool:
        """Whether the run is checkpointed as a log (see the class docstring)."""
        logged = self._logged.get(run)
        if logged is None:
            logged = self._logged[run] = os.path.exists(paths.run_log_path(run))
        return logged

    def _append(self, path: str, record: Mapping[str, object], touched: set[str]) -> None:
        """Appends one record to the log ``path``, creating it (and its directory)."""
        self._ensure_dir(os.path.dirname(path), touched)
        append_record(path, _encoder.encode(record))
        self._note(path)
        touched.add(path)

    def _put(self, path: str, data: bytes, touched: set[str]) -> None:
        """Writes a new file in place; replaces an existing one atomically."""
        self._ensure_dir(os.path.dirname(path), touched)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            _replace(path, data)
        else:
            self._note(path)
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)
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
        self._logged = {r: v for r, v in self._logged.items() if not r.startswith(prefix)}
        self._discard(directory)

    def _run(self, framework_id: str, executor_id: str, container_id: str) -> str:
        assert self.agent_id is not None
        return _meta_run_dir(self.work_dir, self.agent_id, framework_id, executor_id, container_id)

    def _remove(self, effect: RemoveCheckpoint, touched: set[str]) -> None:
        assert self.agent_id is not None
        if effect.executor_id is None:
            framework = effect.framework_id
            self._discard_runs_of(paths.meta_framework_dir(self.work_dir, self.agent_id, framework))
            return
        assert effect.container_id is not None
        run = self._run(effect.framework_id, effect.executor_id, effect.container_id)
        logged = self._is_logged(run)
        if effect.task_id is not None:
            if logged:
                record = {"type": "FORGET", "task_id": effect.task_id}
                self._append(paths.run_log_path(run), record, touched)
            else:
                self._discard(paths.meta_task_dir(run, effect.task_id))
            return
        del self._logged[run]
        entry = paths.run_log_path(run) if logged else run
        runs = os.path.dirname(run)
        if self._only_entry(runs, os.path.basename(entry)):
            self._discard(os.path.dirname(runs))  # the executor's last run: the executor too
        else:
            self._discard(entry)

    def close(self) -> None:
        """Waits until the trash is empty and stops its thread (the writer is not used after
        this)."""
        self.trash.close()


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
    """A record of a task's update log or of a run log (see `CheckpointWriter`)."""

    type: str
    status: TaskStatus | None = None
    uuid: str | None = None
    task_id: str | None = None  # run logs: whose update, acknowledgement or end
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
    run: RecoveredRun | None = None
    tasks: dict[str, RecoveredTask] = {}
    for record in _read_log(path, problems):
        if record.type == "EXECUTOR" and record.info is not None:
            if record.kind not in _KINDS:
                problems.append(f"{path}: unknown executor kind {record.kind!r}")
                return None
            run = RecoveredRun(fid, eid, cid, record.info, record.kind)
        elif run is None:
            problems.append(f"{path}: a {record.type} record before the executor's")
            return None
        elif record.type == "PID" and record.pid is not None and record.pid > 0:
            run.pid = record.pid
        elif record.type == "TASK" and record.task is not None:
            tasks[record.task.task_id.value] = RecoveredTask(record.task)
        elif record.type == "FORGET" and record.task_id is not None:
            tasks.pop(record.task_id, None)
        elif record.task_id in tasks:
            _add_update(tasks[record.task_id], record)
    if run is None:
        problems.append(f"{path}: no executor record")
        return None
    run.tasks = list(tasks.values())
    return run


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
    position = 0
    while position < len(data):
        newline = data.find(b"\n", position)
        if newline < 0:
            break
        try:
            size = int(data[position:newline])
        except ValueError:
            problems.append(f"{path}: bad record length at byte {position}")
            return
        end = newline + 1 + size
        if end > len(data):
            break  # torn by a crash mid-write: never acted upon
        try:
            record = _record_decoder.decode(data[newline + 1 : end])
        except msgspec.DecodeError as e:
            problems.append(f"{path}: bad record at byte {position}: {e}")
            return
        yield record
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
