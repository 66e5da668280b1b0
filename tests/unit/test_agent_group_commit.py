"""Group commit of agent checkpoints (`butte.agent.group_commit`) and batched durable writes
(`CheckpointWriter.write_batch`).

The worker thread is replaced by `ManualWorker`, which runs a submitted batch only when the
test says so, so each test controls exactly when a batch is "on disk"."""

from __future__ import annotations

import asyncio
import concurrent.futures
import fcntl
import json
import os
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

from butte.agent import checkpoint, placement
from butte.agent.checkpoint import CheckpointWriter, read_state
from butte.agent.effects import (
    CheckpointAgent,
    CheckpointExecutor,
    CheckpointFramework,
    CheckpointPid,
    CheckpointTask,
    CheckpointUpdate,
    Effect,
    LaunchContainer,
    RemoveCheckpoint,
    SendToExecutor,
)
from butte.agent.executor_stream import ExecutorStream
from butte.agent.group_commit import GroupCommit
from butte.agent.records import COMMAND, CUSTOM
from butte.agent.server import AgentOptions, AgentServer
from butte.core.messages import ID, ExecutorInfo, FrameworkInfo, TaskInfo, TaskStatus
from butte.core.resources import parse_resources

AID, FID = "agent-1", "fw-1"


class ManualWorker(concurrent.futures.Executor):
    """An executor whose jobs run when `run_next` is called (on the calling thread)."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Callable[..., Any], tuple, concurrent.futures.Future]] = []

    def submit(self, fn, /, *args, **kwargs):  # noqa: ANN001, ANN201 - Executor's signature
        future: concurrent.futures.Future = concurrent.futures.Future()
        self.jobs.append((fn, args, future))
        return future

    def run_next(self) -> None:
        fn, args, future = self.jobs.pop(0)
        try:
            future.set_result(fn(*args))
        except BaseException as e:  # noqa: BLE001 - handed to the future, like a thread pool
            future.set_exception(e)


async def spin() -> None:
    """Lets the loop run the callbacks that are due (flushes, done callbacks)."""
    for _ in range(5):
        await asyncio.sleep(0)


def update(task: str, state: str = "TASK_RUNNING") -> CheckpointUpdate:
    status = TaskStatus(task_id=ID(task), state=state, uuid=f"u-{task}-{state}")
    return CheckpointUpdate(FID, task, f"c-{task}", task, status=status)


def message(text: str) -> SendToExecutor:
    return SendToExecutor("c", {"type": text})


class Rig:
    """A GroupCommit whose batches are recorded and whose released effects are listed."""

    def __init__(self, write: Callable[[list], None] | None = None) -> None:
        self.worker = ManualWorker()
        self.written: list[list] = []
        self.released: list[Effect] = []
        self.failures: list[BaseException] = []
        self.commit = GroupCommit(
            asyncio.get_running_loop(),
            write or self.written.append,
            self.released.extend,
            self.failures.append,
            executor=self.worker,
        )

    def feed(self, effects: list[Effect]) -> list[Effect]:
        """Effects the shell carries out at once (as `AgentServer.apply` does)."""
        return [e for e in effects if not self.commit.admit(e)]


def test_effects_after_a_checkpoint_wait_for_its_batch_and_keep_order() -> None:
    async def main() -> None:
        rig = Rig()
        assert rig.feed([message("a")]) == [message("a")]  # nothing pending: at once
        first = [update("t1"), message("b"), update("t2"), message("c")]
        second = [message("d")]
        assert rig.feed(first) == [] and rig.feed(second) == []
        await spin()
        # One batch holds both checkpoints of the loop iteration; nothing is released yet.
        assert len(rig.worker.jobs) == 1 and rig.released == []
        rig.worker.run_next()
        await spin()
        assert rig.written == [[update("t1"), update("t2")]]
        assert rig.released == [message("b"), message("c"), message("d")]
        assert rig.feed([message("e")]) == [message("e")]
        await rig.commit.wait_idle()

    asyncio.run(main())


def test_checkpoints_during_a_write_form_the_next_batch() -> None:
    async def main() -> None:
        rig = Rig()
        rig.feed([update("t1"), message("b")])
        await spin()
        assert len(rig.worker.jobs) == 1
        # While batch 1 is being written: more checkpoints and effects arrive.
        rig.feed([message("c"), update("t2"), message("d"), update("t3"), message("e")])
        await spin()
        assert len(rig.worker.jobs) == 1  # batch 2 waits for batch 1
        rig.worker.run_next()
        await spin()
        # Batch 1 durable: what followed it up to batch 2's first checkpoint goes out.
        assert rig.released == [message("b"), message("c")]
        assert len(rig.worker.jobs) == 1
        rig.worker.run_next()
        await spin()
        assert rig.written == [[update("t1")], [update("t2"), update("t3")]]
        assert rig.released == [message(x) for x in "bcde"]
        await rig.commit.wait_idle()

    asyncio.run(main())


def test_a_failed_batch_releases_nothing() -> None:
    """A crash (or an error) between writing a batch and making it durable must not let any
    effect that followed its checkpoints out."""

    def write(batch: list) -> None:
        raise OSError(5, "Input/output error")

    async def main() -> None:
        rig = Rig(write)
        launch = LaunchContainer("c", FID, "e", "/tmp/sandbox", ("true",), {})
        rig.feed([update("t1"), message("ack"), launch])
        await spin()
        rig.feed([update("t2"), message("later")])
        rig.worker.run_next()
        await spin()
        assert rig.released == [] and len(rig.failures) == 1
        assert rig.worker.jobs == []  # the next batch is never written either
        await rig.commit.wait_idle()
        assert rig.released == []

    asyncio.run(main())


def test_removals_alone_hold_nothing_back_but_keep_their_place() -> None:
    async def main() -> None:
        rig = Rig()
        remove = RemoveCheckpoint(FID, "t0", "c-t0")
        assert rig.feed([remove, message("a")]) == [message("a")]
        assert len(rig.worker.jobs) == 1
        rig.worker.run_next()
        await spin()
        # With a batch open, a removal joins it after the writes before it.
        rig.feed([update("t1"), remove, message("b")])
        await spin()
        rig.worker.run_next()
        await spin()
        assert rig.written == [[remove], [update("t1"), remove]]
        assert rig.released == [message("b")]

    asyncio.run(main())


# -- the writer --------------------------------------------------------------------------------


def task_effects(task: str, kind: str = CUSTOM) -> list:
    """A task's checkpoints, by default in a run kept as a tree (a custom executor's); a
    command executor's run is one log."""
    executor = ExecutorInfo(executor_id=ID(task), framework_id=ID(FID))
    info = TaskInfo(name=task, task_id=ID(task), agent_id=ID(AID))
    container = f"c-{task}"
    return [
        CheckpointExecutor(FID, task, container, executor, kind),
        CheckpointTask(FID, task, container, info),
        update(task, "TASK_STARTING"),
        update(task, "TASK_RUNNING"),
    ]


def first_effects() -> list:
    return [
        CheckpointAgent(AID, {"hostname": "h"}),
        CheckpointFramework(FID, FrameworkInfo(user="u", name="fw", id=ID(FID))),
    ]


@pytest.mark.parametrize("syncfs", [True, False], ids=["syncfs", "fsync-fallback"])
def test_one_sync_per_batch_and_the_batch_reads_back(tmp_path, monkeypatch, syncfs) -> None:
    calls: list[str] = []
    real_fsync = checkpoint.os.fsync
    monkeypatch.setattr(checkpoint.os, "fsync", lambda fd: calls.append("fsync") or real_fsync(fd))
    real_fdatasync = checkpoint.os.fdatasync
    monkeypatch.setattr(
        checkpoint.os, "fdatasync", lambda fd: calls.append("fdatasync") or real_fdatasync(fd)
    )
    if syncfs:
        if checkpoint._syncfs is None:
            pytest.skip("no syncfs(2) here")
        real = checkpoint._syncfs
        monkeypatch.setattr(checkpoint, "_syncfs", lambda fd: calls.append("syncfs") or real(fd))
    else:
        monkeypatch.setattr(checkpoint, "_syncfs", None)
    writer = CheckpointWriter(str(tmp_path))
    batch = first_effects() + [e for t in ("t1", "t2", "t3") for e in task_effects(t)]
    writer.write_batch(batch)
    assert writer.syncs == 1
    if syncfs:
        assert calls == ["syncfs"]  # no fsync per file or record
    else:
        assert "syncfs" not in calls and "fdatasync" not in calls
    state = read_state(str(tmp_path))
    assert state is not None and not state.problems
    assert sorted(r.container_id for r in state.runs) == ["c-t1", "c-t2", "c-t3"]
    for run in state.runs:
        (task,) = run.tasks
        assert [s.state for s in task.updates] == ["TASK_STARTING", "TASK_RUNNING"]
    # A batch may write and remove the same run (a short task): nothing left to sync.
    writer.write_batch(task_effects("t4") + [RemoveCheckpoint(FID, "t4", "c-t4")])
    assert writer.syncs == 2
    # Removals alone need no sync.
    calls.clear()
    writer.write_batch([RemoveCheckpoint(FID, "t1", "c-t1")])
    assert writer.syncs == 2 and calls == []
    state = read_state(str(tmp_path))
    assert state is not None
    assert sorted(r.container_id for r in state.runs) == ["c-t2", "c-t3"]
    assert not state.problems
    # A batch that only appends to the journal syncs the journal's data alone; the one that
    # made the journal syncs as any batch with a new file.
    calls.clear()
    writer.write_batch(task_effects("t5", COMMAND))
    assert calls == ["syncfs"] if syncfs else (calls and set(calls) == {"fsync"})
    calls.clear()
    writer.write_batch([update("t5", "TASK_FINISHED")])
    assert calls == ["fdatasync"] and writer.syncs == 4
    (journaled,) = [r for r in read_state(str(tmp_path)).runs if r.container_id == "c-t5"]
    assert [s.state for s in journaled.tasks[0].updates][-1] == "TASK_FINISHED"


def test_the_batch_that_makes_the_journal_syncs_its_directory(tmp_path, monkeypatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(checkpoint, "_syncfs", None)  # the fallback names what it syncs
    real_open = checkpoint.os.open

    def opened(path, flags, *args):  # noqa: ANN001, ANN202 - os.open's signature
        if flags == checkpoint.os.O_RDONLY | checkpoint.os.O_CLOEXEC:
            calls.append(os.path.basename(path))  # what the fallback fsyncs
        return real_open(path, flags, *args)

    monkeypatch.setattr(checkpoint.os, "open", opened)
    writer = CheckpointWriter(str(tmp_path))
    writer.write_batch([CheckpointAgent(AID, {"hostname": "h"})])
    calls.clear()
    writer.write_batch(task_effects("t1", COMMAND))
    assert "command-runs.log" in calls and AID in calls
    writer.close()


def test_rewriting_an_existing_file_replaces_it_atomically(tmp_path) -> None:
    writer = CheckpointWriter(str(tmp_path))
    writer.write_batch(first_effects())
    renamed = FrameworkInfo(user="u", name="renamed", id=ID(FID))
    writer.write_batch([CheckpointFramework(FID, renamed)])
    state = read_state(str(tmp_path))
    assert state is not None and state.frameworks[FID].name == "renamed"
    # A removed run's directories are created again when needed (the writer's cache).
    writer.write_batch(task_effects("t1"))
    writer.write_batch([RemoveCheckpoint(FID, "t1", "c-t1")])
    writer.write_batch(task_effects("t1"))
    state = read_state(str(tmp_path))
    assert state is not None and [r.container_id for r in state.runs] == ["c-t1"]


def trash_names(root) -> list[str]:
    trash = root / "meta" / "trash"
    return sorted(os.listdir(trash)) if trash.is_dir() else []


def test_removal_deletes_by_the_writers_list_and_walks_only_what_it_does_not_know(
    tmp_path,
) -> None:
    writer = CheckpointWriter(str(tmp_path))
    writer.write_batch(first_effects() + task_effects("t1") + task_effects("t2"))
    executors = tmp_path / "meta" / "slaves" / AID / "frameworks" / FID / "executors"
    writer.write_batch([RemoveCheckpoint(FID, "t1", "c-t1")])
    assert sorted(p.name for p in executors.iterdir()) == ["t2"]
    # Something it did not write is in the run: the trash walks that tree.
    (executors / "t2" / "runs" / "c-t2" / "stray").write_text("x")
    writer.write_batch([RemoveCheckpoint(FID, "t2", "c-t2")])
    assert list(executors.iterdir()) == []
    # A run from before this writer (an agent restart) is walked too.
    writer.write_batch(task_effects("t3"))
    writer.close()  # one writer per work dir at a time (an agent restart)
    later = CheckpointWriter(str(tmp_path), AID)
    later.write_batch([RemoveCheckpoint(FID, "t3", "c-t3")])
    assert list(executors.iterdir()) == []
    later.write_batch(task_effects("t3"))
    later.close()
    assert (writer.trash.deleted, writer.trash.walked) == (2, 1)  # t1 by its list, t2 walked
    assert (later.trash.deleted, later.trash.walked) == (1, 1)
    assert trash_names(tmp_path) == []
    state = read_state(str(tmp_path))
    assert state is not None and not state.problems
    assert [r.container_id for r in state.runs] == ["c-t3"]


def test_removal_is_one_rename_and_the_trash_thread_deletes(tmp_path, monkeypatch) -> None:
    """The writer's thread renames the tree into ``meta/trash`` and goes on; the trash's own
    thread unlinks and rmdirs it."""
    writer = CheckpointWriter(str(tmp_path))
    writer.write_batch(first_effects() + task_effects("t1") + task_effects("t2"))
    calls: list[tuple[str, str]] = []

    def spy(name: str) -> Callable[..., Any]:
        real = getattr(os, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            calls.append((name, threading.current_thread().name))
            return real(*args, **kwargs)

        return call

    for name in ("rename", "unlink", "rmdir", "mkdir", "scandir", "listdir"):
        monkeypatch.setattr(checkpoint.os, name, spy(name))
    gate = threading.Event()
    real_delete = checkpoint.Trash._delete
    monkeypatch.setattr(
        checkpoint.Trash, "_delete", lambda self, *job: gate.wait(10) and real_delete(self, *job)
    )
    executor = tmp_path / "meta" / "slaves" / AID / "frameworks" / FID / "executors" / "t1"
    writer.write_batch([RemoveCheckpoint(FID, "t1", "c-t1")])
    me = threading.current_thread().name
    # The trash directory is made at the first removal; then one rename, nothing else.
    assert [c for c in calls if c[1] == me] == [("mkdir", me), ("rename", me)]
    # Gone from the checkpoint at once (the executor's last run: the executor's whole tree).
    assert not executor.exists()
    (moved,) = trash_names(tmp_path)
    trashed = tmp_path / "meta" / "trash" / moved
    assert (trashed / "executor.info").is_file()
    assert (trashed / "runs" / "c-t1" / "tasks" / "t1" / "task.updates").is_file()
    state = read_state(str(tmp_path))
    assert state is not None and [r.container_id for r in state.runs] == ["c-t2"]
    gate.set()
    writer.close()  # waits for the trash
    assert trash_names(tmp_path) == []
    deleting = {thread for name, thread in calls if name in ("unlink", "rmdir")}
    assert deleting == {"checkpoint-trash"}
    assert writer.trash.deleted == 1 and writer.trash.walked == 0


@pytest.mark.parametrize("kind", [COMMAND, CUSTOM])
def test_a_run_that_is_not_the_last_goes_alone_and_the_executor_stays(tmp_path, kind) -> None:
    writer = CheckpointWriter(str(tmp_path))
    executor = ExecutorInfo(executor_id=ID("e"), framework_id=ID(FID))
    runs = [CheckpointExecutor(FID, "e", c, executor, kind) for c in ("c1", "c2")]
    writer.write_batch(first_effects() + runs)
    writer.write_batch([RemoveCheckpoint(FID, "e", "c1")])
    state = read_state(str(tmp_path))
    assert state is not None and [r.container_id for r in state.runs] == ["c2"]
    writer.write_batch([RemoveCheckpoint(FID, "e", "c2")])
    executors = tmp_path / "meta" / "slaves" / AID / "frameworks" / FID / "executors"
    if kind == COMMAND:
        assert not executors.exists()  # command runs are journaled: no tree ever
    else:
        assert list(executors.iterdir()) == []
    writer.close()
    assert trash_names(tmp_path) == [] and writer.trash.walked == 0


def test_a_new_writer_empties_what_an_earlier_process_left_in_the_trash(tmp_path) -> None:
    """A crash between the rename and the deletion leaves a tree in the trash: recovery
    does not read it, and the next writer deletes it in the background."""
    writer = CheckpointWriter(str(tmp_path))
    writer.write_batch(first_effects() + task_effects("t1") + task_effects("t2"))
    run = tmp_path / "meta" / "slaves" / AID / "frameworks" / FID / "executors" / "t1"
    left = tmp_path / "meta" / "trash" / "1234-crashed-0"
    left.parent.mkdir(parents=True, exist_ok=True)
    os.rename(run, left)  # the rename was durable; the process died before deleting
    (left / "runs" / "c-t1" / "link").symlink_to(tmp_path / "meta" / "slaves")  # not followed
    state = read_state(str(tmp_path))
    assert state is not None and not state.problems
    assert [r.container_id for r in state.runs] == ["c-t2"]  # the trash is not recovered
    later = CheckpointWriter(str(tmp_path), AID)
    later.write_batch([RemoveCheckpoint(FID, "t2", "c-t2")])  # its own, next to the leftover
    later.close()
    assert trash_names(tmp_path) == []
    assert (tmp_path / "meta" / "slaves" / AID / "slave.info").is_file()
    state = read_state(str(tmp_path))
    assert state is not None and not state.problems and not state.runs


def test_command_runs_are_journaled_read_back_and_ended(tmp_path) -> None:
    writer = CheckpointWriter(str(tmp_path))
    pid = CheckpointPid(FID, "t1", "c-t1", 4242)
    writer.write_batch([*first_effects(), *task_effects("t1", COMMAND), pid])
    framework = tmp_path / "meta" / "slaves" / AID / "frameworks" / FID
    journal = tmp_path / "meta" / "slaves" / AID / "command-runs.log"
    # No file or directory of the run's own: its records are in the agent's journal.
    assert os.listdir(framework) == ["framework.info"] and journal.is_file()
    ack = CheckpointUpdate(FID, "t1", "c-t1", "t1", ack_uuid="u-1")
    writer.write_batch([ack])
    writer.close()
    # Another writer (an agent restart) goes on with the same journal.
    later = CheckpointWriter(str(tmp_path), AID)
    later.write_batch([update("t1", "TASK_FINISHED")])
    state = read_state(str(tmp_path))
    assert state is not None and not state.problems
    (run,) = state.runs
    assert (run.executor_id, run.container_id, run.kind, run.pid) == ("t1", "c-t1", COMMAND, 4242)
    (task,) = run.tasks
    assert task.id == "t1" and task.acks == ["u-1"]
    assert [u.state for u in task.updates] == ["TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED"]
    # A task forgotten on its own (not the whole run) is a record too.
    later.write_batch([RemoveCheckpoint(FID, "t1", "c-t1", "t1")])
    state = read_state(str(tmp_path))
    assert state is not None and [r.tasks for r in state.runs] == [[]]
    later.write_batch([RemoveCheckpoint(FID, "t1", "c-t1")])
    state = read_state(str(tmp_path))
    assert state is not None and not state.runs and not state.problems
    later.close()
    assert not framework.joinpath("executors").exists() and later.trash.deleted == 0


def test_a_batchs_journal_records_leave_in_one_write(tmp_path, monkeypatch) -> None:
    writer = CheckpointWriter(str(tmp_path))
    writer.write_batch([*first_effects(), *task_effects("t0", COMMAND)])  # makes the journal
    journal = writer._journal
    assert journal is not None
    writes: list[int] = []
    real_write = checkpoint.os.write

    def write(fd: int, data: bytes) -> int:
        if fd == journal.fd:
            writes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(checkpoint.os, "write", write)
    before = os.path.getsize(journal.path)
    batch = [e for t in ("t1", "t2", "t3") for e in task_effects(t, COMMAND)]
    writer.write_batch([*batch, update("t0", "TASK_FINISHED"), RemoveCheckpoint(FID, "t0", "c-t0")])
    # Fourteen records, one write.
    assert writes == [os.path.getsize(journal.path) - before]
    writer.close()
    state = read_state(str(tmp_path))
    assert state is not None and not state.problems
    assert sorted(r.container_id for r in state.runs) == ["c-t1", "c-t2", "c-t3"]


def test_the_journal_is_cut_after_a_torn_record_and_rewritten_with_live_runs(
    tmp_path, monkeypatch
) -> None:
    writer = CheckpointWriter(str(tmp_path))
    writer.write_batch([*first_effects(), *task_effects("t1", COMMAND)])
    writer.close()
    journal = tmp_path / "meta" / "slaves" / AID / "command-runs.log"
    whole = journal.stat().st_size
    with open(journal, "ab") as f:
        f.write(b'300\n{"type":"UPDATE"')  # the agent died mid-write
    # The next writer cuts the torn record off, or its own records would never be read.
    later = CheckpointWriter(str(tmp_path), AID)
    later.write_batch([update("t1", "TASK_FINISHED")])
    assert b'300\n{"type":"UPDATE"' not in journal.read_bytes()
    state = read_state(str(tmp_path))
    assert state is not None and not state.problems
    assert [u.state for u in state.runs[0].tasks[0].updates][-1] == "TASK_FINISHED"
    assert journal.stat().st_size > whole
    # Many runs that ended: once less than half of it is live, the journal is rewritten
    # with the live runs' records only, and reads back the same.
    monkeypatch.setattr(checkpoint._Journal, "COMPACT_AT", 4096)
    for n in range(40):
        task = f"x{n}"
        later.write_batch([*task_effects(task, COMMAND), RemoveCheckpoint(FID, task, f"c-{task}")])
    assert later._journal is not None and later._journal.compactions >= 1
    assert journal.stat().st_size < 8192 and not (journal.parent / "command-runs.log.tmp").exists()
    state = read_state(str(tmp_path))
    assert state is not None and not state.problems
    assert [r.container_id for r in state.runs] == ["c-t1"]
    assert [u.state for u in state.runs[0].tasks[0].updates][-1] == "TASK_FINISHED"
    # A framework's removal drops its journaled runs with one record.
    later.write_batch([RemoveCheckpoint(FID)])
    state = read_state(str(tmp_path))
    assert state is not None and not state.runs
    later.close()
    again = CheckpointWriter(str(tmp_path), AID)
    assert again._journal is None
    again.write_batch([*first_effects(), *task_effects("t2", COMMAND)])
    assert again._journal is not None and list(again._journal.live) == [(FID, "t2", "c-t2")]
    again.close()


def test_a_run_log_of_an_earlier_agent_is_read_appended_to_and_removed(tmp_path) -> None:
    """Agents before the journal wrote each command run to ``runs/<container>.log``."""
    executor = ExecutorInfo(executor_id=ID("t1"), framework_id=ID(FID))
    info = TaskInfo(name="t1", task_id=ID("t1"), agent_id=ID(AID))
    writer = CheckpointWriter(str(tmp_path))
    writer.write_batch(first_effects())
    run = checkpoint.paths.meta_run_dir(str(tmp_path), AID, FID, "t1", "c-t1")
    log = checkpoint.paths.run_log_path(run)
    os.makedirs(os.path.dirname(log))
    for record in (
        {"type": "EXECUTOR", "kind": COMMAND, "info": executor},
        {"type": "TASK", "task": info},
        {
            "type": "UPDATE",
            "task_id": "t1",
            "status": TaskStatus(task_id=ID("t1"), state="TASK_RUNNING"),
        },
    ):
        checkpoint.append_record(log, checkpoint._encoder.encode(record))
    writer.write_batch([update("t1", "TASK_FINISHED")])
    state = read_state(str(tmp_path))
    assert state is not None and not state.problems
    (recovered,) = state.runs
    assert [u.state for u in recovered.tasks[0].updates] == ["TASK_RUNNING", "TASK_FINISHED"]
    assert os.path.getsize(checkpoint.paths.command_runs_path(str(tmp_path), AID)) == 0
    writer.write_batch([RemoveCheckpoint(FID, "t1", "c-t1")])
    executors = tmp_path / "meta" / "slaves" / AID / "frameworks" / FID / "executors"
    assert list(executors.iterdir()) == []
    writer.close()
    assert trash_names(tmp_path) == [] and writer.trash.deleted == 1


def test_removing_an_earlier_agent_ids_tree_uses_the_trash_too(tmp_path) -> None:
    writer = CheckpointWriter(str(tmp_path))
    writer.write_batch(first_effects() + task_effects("t1"))
    writer.write_batch([CheckpointAgent("agent-2", {"hostname": "h"})])
    assert sorted(os.listdir(tmp_path / "meta" / "slaves")) == ["agent-2", "latest"]
    writer.close()
    assert trash_names(tmp_path) == [] and writer.trash.walked == 0


def _inode_flags(path: str) -> int | None:
    fd = os.open(path, os.O_RDONLY)
    try:
        raw = fcntl.ioctl(fd, placement._FS_IOC_GETFLAGS, bytes(placement._LONG))
    except OSError:
        return None
    finally:
        os.close(fd)
    return int.from_bytes(raw[:4], sys.byteorder)


def test_executor_trees_are_spread_over_the_file_system(tmp_path) -> None:
    """The ``executors`` directories get the Orlov top-directory hint (where the file system
    has it), so each executor's tree lands in its own block group."""
    if _inode_flags(str(tmp_path)) is None:
        pytest.skip("no inode flags on this file system")
    writer = CheckpointWriter(str(tmp_path))
    writer.write_batch(first_effects() + task_effects("t1"))
    executors = tmp_path / "meta" / "slaves" / AID / "frameworks" / FID / "executors"
    flags = _inode_flags(str(executors))
    if flags is None or not placement.spread_subdirectories(str(tmp_path / "meta")):
        pytest.skip("the file system has no top-directory flag")
    assert flags & placement._FS_TOPDIR_FL
    assert not (_inode_flags(str(executors / "t1")) or 0) & placement._FS_TOPDIR_FL


def test_sandboxes_are_spread_over_the_file_system_too(tmp_path) -> None:
    if _inode_flags(str(tmp_path)) is None or not placement.spread_subdirectories(str(tmp_path)):
        pytest.skip("the file system has no top-directory flag")
    executors = tmp_path / "slaves" / AID / "frameworks" / FID / "executors"
    done: set[str] = set()
    placement.make_sandbox(str(executors / "e1" / "runs" / "c1"), done)
    placement.make_sandbox(str(executors / "e2" / "runs" / "c2"), done)
    assert (executors / "e2" / "runs" / "c2").is_dir() and done == {str(executors)}
    assert (_inode_flags(str(executors)) or 0) & placement._FS_TOPDIR_FL


def test_a_held_stream_event_never_reaches_the_executors_next_stream(tmp_path) -> None:
    """An ACKNOWLEDGED held behind a checkpoint for the executor's old stream is dropped if
    the executor re-subscribed meanwhile: its new stream starts with SUBSCRIBED."""

    async def main() -> None:
        server = AgentServer(
            AgentOptions("127.0.0.1:5050", str(tmp_path), parse_resources("cpus:1"))
        )
        server._arm_timer = lambda: None  # type: ignore[method-assign] - no core here
        worker = ManualWorker()
        failures: list[BaseException] = []
        server.commit = GroupCommit(
            asyncio.get_running_loop(),
            lambda batch: None,
            server._release,
            failures.append,
            executor=worker,
        )
        old = server.open_executor_stream("c-t1")
        server.apply([update("t1"), SendToExecutor("c-t1", {"type": "ACKNOWLEDGED"})])
        new = server.open_executor_stream("c-t1")  # the executor re-subscribed
        server.apply([SendToExecutor("c-t1", {"type": "SUBSCRIBED"})])
        server.apply([update("t2"), SendToExecutor("c-t1", {"type": "ACKNOWLEDGED", "n": 2})])
        await spin()
        worker.run_next()
        await spin()
        assert not failures
        sent = [decoded(item) for item in drained(new)]
        assert sent == [{"type": "SUBSCRIBED"}, {"type": "ACKNOWLEDGED", "n": 2}]
        assert drained(old) == [None]  # closed when the new one opened, nothing else

    asyncio.run(main())


def drained(stream: ExecutorStream) -> list[bytes | None]:
    out = []
    while not stream._queue.empty():
        out.append(stream._queue.get_nowait())
    return out


def decoded(record: bytes | None) -> dict | None:
    if record is None:
        return None
    _, _, body = record.partition(b"\n")
    return json.loads(body)


def test_an_io_error_fails_the_batch_and_a_bad_effect_only_itself(tmp_path) -> None:
    writer = CheckpointWriter(str(tmp_path))
    # Before the agent id is known: that effect is skipped (logged), the rest written.
    writer.write_batch([update("t0"), *first_effects()])
    state = read_state(str(tmp_path))
    assert state is not None and FID in state.frameworks
    # A file where the executors directory should be: the batch fails (the agent exits).
    (tmp_path / "meta" / "slaves" / AID / "frameworks" / FID / "executors").write_text("")
    with pytest.raises(OSError):
        writer.write_batch(task_effects("t1"))
    assert writer.syncs == 1
