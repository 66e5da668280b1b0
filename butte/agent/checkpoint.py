"""The agent's checkpoint on disk: writing the checkpoint effects of the core and reading the
``meta`` tree back on start-up (layout and durability rules in `butte.agent.paths`).

Writing happens in the shell, synchronously and in effect order, so a checkpoint that comes
before an ACKNOWLEDGED, a status update to the master or a container launch is on disk first.
Only frameworks with ``checkpoint: true`` are written (plus the agent's own id), as in Mesos,
so tasks of other frameworks cost no disk writes.

Reading is forgiving: a file that is missing or unreadable drops only what it describes (and
is reported in `RecoveredState.problems`); the torn last record of an update log is ignored.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator

import msgspec

from butte.agent import paths
from butte.agent.effects import (
    Checkpoint,
    CheckpointAgent,
    CheckpointExecutor,
    CheckpointFramework,
    CheckpointPid,
    CheckpointTask,
    CheckpointUpdate,
    RemoveCheckpoint,
)
from butte.agent.records import COMMAND, CUSTOM, DEFAULT
from butte.agent.recovery import RecoveredRun, RecoveredState, RecoveredTask
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


def write_atomically(path: str, data: bytes) -> None:
    """Replaces ``path`` with ``data``: temp file, fsync, rename (readers see old or new)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = f"{path}.tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)


def link_atomically(target: str, link: str) -> None:
    """Points the symlink ``link`` at ``target``, replacing it atomically."""
    os.makedirs(os.path.dirname(link), exist_ok=True)
    temporary = f"{link}.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temporary)
    os.symlink(target, temporary)
    os.replace(temporary, link)


def append_record(path: str, data: bytes) -> None:
    """Appends one RecordIO record (``<length>\\n<data>``) and fsyncs it."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, b"%d\n%s" % (len(data), data))
        os.fdatasync(fd)
    finally:
        os.close(fd)


class CheckpointWriter:
    """Carries out the core's checkpoint effects under ``<work_dir>/meta``."""

    def __init__(self, work_dir: str, agent_id: str | None = None) -> None:
        self.work_dir = work_dir
        self.agent_id = agent_id
        self.writes = 0

    def apply(self, effect: Checkpoint) -> None:
        """Writes (or removes) what ``effect`` describes."""
        if isinstance(effect, CheckpointAgent):
            self._agent(effect)
            return
        if self.agent_id is None:
            raise RuntimeError(f"checkpoint before the agent id is known: {effect!r}")
        work, agent = self.work_dir, self.agent_id
        self.writes += 1
        if isinstance(effect, CheckpointFramework):
            path = paths.framework_info_path(work, agent, effect.framework_id)
            write_atomically(path, _encoder.encode(effect.info))
        elif isinstance(effect, CheckpointExecutor):
            ex = (effect.framework_id, effect.executor_id)
            write_atomically(
                paths.executor_info_path(work, agent, *ex), _encoder.encode(effect.info)
            )
            run = paths.meta_run_dir(work, agent, *ex, effect.container_id)
            write_atomically(paths.run_info_path(run), _encoder.encode({"kind": effect.kind}))
        elif isinstance(effect, CheckpointPid):
            run = self._run(effect.framework_id, effect.executor_id, effect.container_id)
            write_atomically(paths.forked_pid_path(run), str(effect.pid).encode())
        elif isinstance(effect, CheckpointTask):
            run = self._run(effect.framework_id, effect.executor_id, effect.container_id)
            path = paths.task_info_path(run, effect.task.task_id.value)
            write_atomically(path, _encoder.encode(effect.task))
        elif isinstance(effect, CheckpointUpdate):
            run = self._run(effect.framework_id, effect.executor_id, effect.container_id)
            if effect.status is not None:
                record = {"type": "UPDATE", "status": effect.status}
            else:
                record = {"type": "ACK", "uuid": effect.ack_uuid}
            append_record(paths.task_updates_path(run, effect.task_id), _encoder.encode(record))
        elif isinstance(effect, RemoveCheckpoint):
            self._remove(effect)

    def _agent(self, effect: CheckpointAgent) -> None:
        self.agent_id = effect.agent_id
        work = self.work_dir
        write_atomically(
            paths.agent_info_path(work, effect.agent_id), _encoder.encode(effect.agent_info)
        )
        boot_id = current_boot_id()
        if boot_id is not None:
            write_atomically(paths.boot_id_path(work), boot_id.encode())
        link_atomically(effect.agent_id, paths.latest_agent_link(work))
        # Checkpoints of earlier agent ids can never be recovered again (Mesos GCs them).
        for name in _entries(paths.meta_slaves_dir(work)):
            if name != effect.agent_id:
                shutil.rmtree(paths.meta_agent_dir(work, name), ignore_errors=True)

    def _run(self, framework_id: str, executor_id: str, container_id: str) -> str:
        assert self.agent_id is not None
        return paths.meta_run_dir(
            self.work_dir, self.agent_id, framework_id, executor_id, container_id
        )

    def _remove(self, effect: RemoveCheckpoint) -> None:
        assert self.agent_id is not None
        if effect.executor_id is None:
            path = paths.meta_framework_dir(self.work_dir, self.agent_id, effect.framework_id)
            shutil.rmtree(path, ignore_errors=True)
            return
        assert effect.container_id is not None
        run = self._run(effect.framework_id, effect.executor_id, effect.container_id)
        if effect.task_id is not None:
            shutil.rmtree(paths.meta_task_dir(run, effect.task_id), ignore_errors=True)
            return
        shutil.rmtree(run, ignore_errors=True)
        runs = os.path.dirname(run)
        with contextlib.suppress(OSError):
            if not os.listdir(runs):  # the executor's last run: forget the executor too
                shutil.rmtree(os.path.dirname(runs), ignore_errors=True)


def forget_agent(work_dir: str) -> None:
    """Removes ``meta/slaves/latest``: the next start registers as a new agent (after a
    graceful shutdown, like Mesos, or when the checkpoint belongs to another boot)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(paths.latest_agent_link(work_dir))


# -- reading ----------------------------------------------------------------------------------


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
    info = _read_json(
        paths.executor_info_path(work_dir, agent_id, fid, eid), ExecutorInfo, problems
    )
    if info is None:
        return
    runs = os.path.join(paths.meta_executor_dir(work_dir, agent_id, fid, eid), "runs")
    for cid in _entries(runs):
        run_dir = os.path.join(runs, cid)
        extra = _read_json(paths.run_info_path(run_dir), dict, problems) or {}
        kind = extra.get("kind")
        if kind not in _KINDS:
            problems.append(f"{run_dir}: unknown executor kind {kind!r}")
            continue
        run = RecoveredRun(fid, eid, cid, info, kind, pid=_read_pid(run_dir))
        for tid in _entries(os.path.join(run_dir, "tasks")):
            task_info = _read_json(paths.task_info_path(run_dir, tid), TaskInfo, problems)
            if task_info is not None:
                task = RecoveredTask(task_info)
                _read_updates(paths.task_updates_path(run_dir, tid), task, problems)
                run.tasks.append(task)
        yield run


def _read_pid(run_dir: str) -> int | None:
    try:
        with open(paths.forked_pid_path(run_dir)) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return None
    return pid if pid > 0 else None


class _Record(msgspec.Struct):
    type: str
    status: TaskStatus | None = None
    uuid: str | None = None


_record_decoder = msgspec.json.Decoder(_Record)


def _read_updates(path: str, task: RecoveredTask, problems: list[str]) -> None:
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
        if record.type == "UPDATE" and record.status is not None:
            task.updates.append(record.status)
        elif record.type == "ACK" and record.uuid is not None:
            task.acks.append(record.uuid)
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
