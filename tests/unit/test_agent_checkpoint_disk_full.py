"""The agent's checkpoint on a full disk (`butte.agent.checkpoint`): a write that fails with
ENOSPC (or EDQUOT, EIO) is undone and its batch waits until space is back, leaving the
checkpoint on disk exactly as the batch before left it (recovery reads it with no problem);
a failed sync, or any other error, is fatal; what the shell holds behind a waiting batch (an
ACKNOWLEDGED to the executor) is not carried out, except what may overtake it
(`Overtaking`); and the sandbox collector lets go of ended containers' sandboxes meanwhile
(`butte.agent.gc.live`).

The full disk is a write function injected into `CheckpointWriter` that writes at most a
budget of bytes (the last write cut short, as a real one is) and then raises ENOSPC."""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from agent_kit import FID as HARNESS_FID
from agent_kit import Harness, command_task, custom_task, framework, run
from test_agent_group_commit import decoded, drained

from butte.agent import checkpoint, gc
from butte.agent.checkpoint import (
    CheckpointAbandoned,
    CheckpointBroken,
    CheckpointWriter,
    Overtaking,
    append_record,
    read_state,
)
from butte.agent.effects import (
    Checkpoint,
    CheckpointAgent,
    CheckpointExecutor,
    CheckpointFramework,
    CheckpointTask,
    CheckpointUpdate,
    DestroyContainer,
    LaunchContainer,
    RemoveCheckpoint,
    SendToExecutor,
    SendToMaster,
)
from butte.agent.group_commit import GroupCommit
from butte.agent.records import COMMAND, CUSTOM
from butte.agent.recovery import RecoveredState
from butte.agent.server import AgentOptions, AgentServer
from butte.core import internal
from butte.core import task_states as ts
from butte.core.messages import ID, ExecutorInfo, FrameworkInfo, TaskInfo, TaskStatus
from butte.core.resources import parse_resources

AID, FID = "agent-1", "fw-1"
CHECKPOINTING = framework(checkpoint=True)


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch) -> None:
    """Batches that wait for space try again within milliseconds."""
    monkeypatch.setattr(CheckpointWriter, "RETRY_INTERVALS", (0.002, 0.02))


class FullDisk:
    """A write function for `CheckpointWriter`: writes while ``budget`` bytes are left (None:
    no limit), the write that reaches the limit cut short, then raises ENOSPC."""

    def __init__(self, budget: int | None = None, error: int = errno.ENOSPC) -> None:
        self.budget = budget
        self.error = error
        self.failures = 0
        self._lock = threading.Lock()

    def __call__(self, fd: int, data: memoryview) -> int:
        with self._lock:
            if self.budget is None:
                return os.write(fd, data)
            if self.budget <= 0:
                self.failures += 1
                raise OSError(self.error, os.strerror(self.error))
            written = os.write(fd, data[: self.budget])
            self.budget -= written
            return written

    def space_back(self) -> None:
        with self._lock:
            self.budget = None


class Batch:
    """``writer.write_batch(effects)`` on a thread of its own, as the agent's worker runs it."""

    def __init__(self, writer: CheckpointWriter, effects: list[Checkpoint]) -> None:
        self.writer = writer
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(effects,), daemon=True)
        self.thread.start()

    def _run(self, effects: list[Checkpoint]) -> None:
        try:
            self.writer.write_batch(effects)
        except BaseException as e:  # noqa: BLE001 - the test looks at it
            self.error = e

    def wait_stalled(self) -> None:
        deadline = time.monotonic() + 10
        while self.writer.stalled is None:
            assert self.thread.is_alive(), f"the batch ended instead of waiting: {self.error!r}"
            assert time.monotonic() < deadline, "the batch never waited for space"
            time.sleep(0.001)

    def join(self) -> None:
        self.thread.join(10)
        assert not self.thread.is_alive(), "the batch still waits"


class Pauses:
    """Stands in for the writer's give-up event (`CheckpointWriter._give_up`), whose wait is
    the writer's pause between two attempts of a batch: each pause lets the test look at the
    disk (between attempts, never during one) and lasts until the test lets the writer go on."""

    def __init__(self, writer: CheckpointWriter) -> None:
        self._paused = threading.Semaphore(0)
        self._go = threading.Semaphore(0)
        writer._give_up = self  # type: ignore[assignment] - the two methods it uses

    def is_set(self) -> bool:
        return False

    def wait(self, timeout: float) -> bool:
        self._paused.release()
        self._go.acquire()
        return False  # not given up

    def paused(self, batch: Batch) -> bool:
        """Waits until the writer pauses (True) or the batch is written (False)."""
        deadline = time.monotonic() + 10
        while not self._paused.acquire(timeout=0.001):
            if not batch.thread.is_alive():
                return False
            assert time.monotonic() < deadline, "the batch neither ended nor waited"
        return True

    def go_on(self) -> None:
        self._go.release()


def update(task: str, state: str = "TASK_RUNNING") -> CheckpointUpdate:
    status = TaskStatus(task_id=ID(task), state=state, uuid=f"u-{task}-{state}")
    return CheckpointUpdate(FID, task, f"c-{task}", task, status=status)


def task_effects(task: str, kind: str = CUSTOM) -> list[Checkpoint]:
    """A task's checkpoints: a run kept as a tree (custom executor) or journaled (command)."""
    executor = ExecutorInfo(executor_id=ID(task), framework_id=ID(FID))
    info = TaskInfo(name=task, task_id=ID(task), agent_id=ID(AID))
    container = f"c-{task}"
    return [
        CheckpointExecutor(FID, task, container, executor, kind),
        CheckpointTask(FID, task, container, info),
        update(task, "TASK_STARTING"),
        update(task, "TASK_RUNNING"),
    ]


def first_effects() -> list[Checkpoint]:
    return [
        CheckpointAgent(AID, {"hostname": "h"}),
        CheckpointFramework(FID, FrameworkInfo(user="u", name="fw", id=ID(FID))),
    ]


def summary(state: RecoveredState | None) -> Any:
    """What recovery would rebuild from a checkpoint, comparable."""
    assert state is not None
    runs = sorted(
        (
            r.framework_id,
            r.executor_id,
            r.container_id,
            r.kind,
            r.pid,
            sorted(
                (
                    t.info.task_id.value,
                    [(s.state, s.uuid) for s in t.updates],
                    list(t.acks),
                )
                for t in r.tasks
            ),
        )
        for r in state.runs
    )
    return state.agent_id, sorted(state.frameworks), runs


def recovered(root: Path) -> Any:
    """The checkpoint under ``root`` as recovery reads it; it must read with no problem."""
    state = read_state(str(root))
    assert state is not None and not state.problems, state and state.problems
    return summary(state)


def checkpoint_files(root: Path, pattern: str) -> list[Path]:
    """Files under ``root`` named like ``pattern``, outside the trash (whose thread deletes
    what it holds meanwhile, and which recovery never reads)."""
    found = []
    for directory, _, names in os.walk(root):
        if "trash" in Path(directory).relative_to(root).parts:
            continue
        found += [Path(directory, n) for n in names if Path(n).match(pattern)]
    return found


def temp_files(root: Path) -> list[str]:
    return [str(p) for p in checkpoint_files(root, "*.tmp")]


def torn_logs(root: Path) -> list[str]:
    """The logs under ``root`` that do not end with a whole record (the reader would stop
    there, and miss every record appended later)."""
    torn = []
    for path in [*checkpoint_files(root, "*.log"), *checkpoint_files(root, "task.updates")]:
        data = path.read_bytes()
        problems: list[str] = []
        ends = [end for _, _, end in checkpoint._frames(data, str(path), problems)]
        if problems or (ends[-1] if ends else 0) != len(data):
            torn.append(str(path))
    return torn


# -- the writer -------------------------------------------------------------------------------


def test_a_batch_that_finds_the_disk_full_waits_and_leaves_a_readable_checkpoint(
    tmp_path, caplog
) -> None:
    disk = FullDisk()
    writer = CheckpointWriter(str(tmp_path / "agent"), write=disk)
    reference = CheckpointWriter(str(tmp_path / "reference"))
    first = [*first_effects(), *task_effects("t1"), *task_effects("t2", COMMAND)]
    writer.write_batch(first)
    reference.write_batch(first)
    journal = tmp_path / "agent" / "meta" / "slaves" / AID / "command-runs.log"
    journal_size = journal.stat().st_size
    # New tree files and an append to a tree's update log, then the journal's records (one
    # write at the end of the batch): an update of a journaled run and a new journaled run.
    tree = [*task_effects("t3"), update("t1", "TASK_FINISHED")]
    journaled = [update("t2", "TASK_FAILED"), *task_effects("t4", COMMAND)]
    # What a crash at any moment of the batch could leave: the tree effects written so far
    # (the journal's records not yet). The waiting batch leaves one of these, nothing torn.
    crash_states = [recovered(tmp_path / "reference")]
    for effect in tree:
        reference.apply(effect)
        crash_states.append(recovered(tmp_path / "reference"))
    disk.budget = 0
    pauses = Pauses(writer)
    with caplog.at_level(logging.INFO, logger="butte.agent"):
        batch = Batch(writer, [*tree, *journaled])
        # Each attempt finds a little space, and fails further on (the last write cut short).
        for budget in (0, 1, 37, 100, 200, 200, 200, 200, 200, None):
            assert pauses.paused(batch), budget
            # Reading needs no space: recovery reads what the batch has written so far, with
            # no half-written file, temp file or torn record.
            assert recovered(tmp_path / "agent") in crash_states, budget
            assert temp_files(tmp_path / "agent") == [] and torn_logs(tmp_path / "agent") == []
            assert journal.stat().st_size == journal_size
            assert writer.stalled is not None and writer.stalled.errno == errno.ENOSPC
            disk.budget = budget  # None: space is back
            pauses.go_on()
        batch.join()
    assert disk.failures == 10
    assert batch.error is None
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "No space left on device" in errors[0].getMessage()
    assert any("written again" in r.getMessage() for r in caplog.records)
    reference.write_batch(journaled)
    assert writer.stalled is None and writer.stalls == 1
    assert recovered(tmp_path / "agent") == recovered(tmp_path / "reference")


def test_random_full_disks_never_lose_or_corrupt_what_the_agent_checkpointed(tmp_path) -> None:
    """The agent core's own checkpoints, batch by batch; each batch may find the disk full at
    any byte. While it waits, the disk holds what the batches before it left; once space is
    back it holds what a disk that was never full holds."""
    stalled = kinds = 0
    for seed in range(12):
        rng = random.Random(seed)
        h = Harness(work_dir=str(tmp_path / str(seed)), status_update_retry_interval_min=1.0)
        disk = FullDisk()
        writer = CheckpointWriter(str(tmp_path / str(seed) / "agent"), write=disk)
        pauses = Pauses(writer)
        reference = CheckpointWriter(str(tmp_path / str(seed) / "reference"))
        h.register()
        written = 0
        for step in range(80):
            action = rng.randrange(8)
            tid = f"t{rng.randrange(4)}"
            if action == 0:
                task = command_task(tid) if rng.random() < 0.5 else custom_task(tid, f"e-{tid}")
                run(h, task, CHECKPOINTING)
            elif action == 1:
                h.master(internal.KillTask(ID(HARNESS_FID), ID(tid)))
            elif action in (2, 3):
                executor = next(
                    (e for e in h.launched.values() if tid in (e.executor_id, f"e-{tid}")), None
                )
                if executor is not None:
                    h.subscribe(executor.executor_id)
                    h.update(executor.executor_id, tid, rng.choice([ts.RUNNING, ts.FINISHED]))
            elif action == 4 and h.updates():
                h.ack(rng.choice(h.updates()))
            elif action == 5 and h.launched:
                cid = rng.choice(list(h.launched))
                h.apply(h.agent.container_started(cid, 1000 + step, h.now()))
            elif action == 6 and h.launched:
                cid = rng.choice(list(h.launched))
                h.apply(h.agent.container_exited(cid, rng.choice([0, 9]), h.now()))
            else:
                h.advance(rng.random() * 3)
            batch_effects = h.checkpoints[written:]
            written = len(h.checkpoints)
            if not batch_effects:
                continue
            if rng.random() < 0.5:
                disk.budget = rng.randrange(0, 400)
                batch = Batch(writer, batch_effects)
                if pauses.paused(batch):
                    state = read_state(str(tmp_path / str(seed) / "agent"))
                    # Readable with no problem (None: the agent's id is not written yet).
                    assert state is None or not state.problems, state.problems
                    assert temp_files(tmp_path / str(seed) / "agent") == []
                    assert torn_logs(tmp_path / str(seed) / "agent") == []
                    disk.space_back()
                    pauses.go_on()
                batch.join()
                disk.space_back()  # the budget was enough, or space came back
                assert batch.error is None, batch.error
            else:
                writer.write_batch(batch_effects)
            reference.write_batch(batch_effects)
            assert recovered(tmp_path / str(seed) / "agent") == recovered(
                tmp_path / str(seed) / "reference"
            ), (seed, step)
        stalled += writer.stalls
        kinds += len({r[3] for r in recovered(tmp_path / str(seed) / "reference")[2]}) == 2
        writer.close()
        reference.close()
    assert stalled > 40 and kinds  # many batches waited; runs kept as trees and journaled


def test_a_failed_append_leaves_the_log_as_it_was(tmp_path) -> None:
    log = tmp_path / "task.updates"
    append_record(str(log), b'{"a":1}')
    whole = log.read_bytes()
    with pytest.raises(OSError) as caught:
        append_record(str(log), b'{"b":' + b"2" * 100 + b"}", FullDisk(budget=10))
    assert caught.value.errno == errno.ENOSPC
    assert log.read_bytes() == whole  # no torn record for the next one to follow
    new = tmp_path / "new.updates"
    with pytest.raises(OSError):
        append_record(str(new), b"{}", FullDisk(budget=0))
    assert not new.exists()  # made by the failed append: gone again


def test_waiting_is_given_up_when_the_agent_exits(tmp_path) -> None:
    disk = FullDisk()
    writer = CheckpointWriter(str(tmp_path), write=disk)
    writer.write_batch(first_effects())
    before = recovered(tmp_path)
    disk.budget = 0
    batch = Batch(writer, task_effects("t1"))
    batch.wait_stalled()
    writer.give_up()
    batch.join()
    assert isinstance(batch.error, CheckpointAbandoned)
    assert writer.stalled is None
    assert recovered(tmp_path) == before
    # After that, a batch that finds no space gives up at once.
    with pytest.raises(CheckpointAbandoned):
        writer.write_batch(task_effects("t2"))
    writer.close()  # nothing to flush that could be written: no error


@pytest.mark.parametrize("number", [errno.EDQUOT, errno.EIO])
def test_quota_and_io_errors_are_waited_out_too(tmp_path, number) -> None:
    disk = FullDisk(budget=0, error=number)
    writer = CheckpointWriter(str(tmp_path), write=disk)
    batch = Batch(writer, first_effects())
    batch.wait_stalled()
    assert writer.stalled is not None and writer.stalled.errno == number
    disk.space_back()
    batch.join()
    assert batch.error is None and FID in recovered(tmp_path)[1]


def test_other_write_errors_and_failed_syncs_are_fatal(tmp_path, monkeypatch) -> None:
    writer = CheckpointWriter(str(tmp_path), write=FullDisk(budget=0, error=errno.EROFS))
    with pytest.raises(OSError) as caught:
        writer.write_batch(first_effects())
    assert caught.value.errno == errno.EROFS and writer.stalls == 0
    assert temp_files(tmp_path) == []

    def failed_sync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(checkpoint, "_syncfs", failed_sync)
    monkeypatch.setattr(checkpoint.os, "fsync", failed_sync)
    monkeypatch.setattr(checkpoint.os, "fdatasync", failed_sync)
    writer = CheckpointWriter(str(tmp_path / "sync"))
    # The kernel may have dropped what it could not write back: no retry can tell.
    with pytest.raises(CheckpointBroken):
        writer.write_batch(first_effects())


def test_a_journal_compaction_without_space_is_put_off(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(checkpoint._Journal, "COMPACT_AT", 16384)
    refused: list[int] = []  # writes of the journal's compacted copy that found no space

    def no_space_for_copies(fd: int, data: memoryview) -> int:
        if full and os.readlink(f"/proc/self/fd/{fd}").endswith("command-runs.log.tmp"):
            refused.append(len(data))
            raise OSError(errno.ENOSPC, "No space left on device")
        return os.write(fd, data)

    def short_runs(first: int, last: int) -> None:
        for n in range(first, last):
            task = f"x{n}"
            ended = RemoveCheckpoint(FID, task, f"c-{task}")
            writer.write_batch([*task_effects(task, COMMAND), ended])

    full = True
    writer = CheckpointWriter(str(tmp_path), write=no_space_for_copies)
    writer.write_batch([*first_effects(), *task_effects("t0", COMMAND)])
    journal = writer._journal
    assert journal is not None
    short_runs(0, 20)
    assert journal.size >= journal.COMPACT_AT  # due from here on
    short_runs(20, 44)
    # Put off after each try until the journal grew by a quarter of COMPACT_AT, not tried
    # again at each of the 24 batches it was due at; nothing waited, nothing was left over.
    tries = len(refused)
    assert 0 < tries <= 10 and journal.compactions == 0 and writer.stalls == 0
    assert temp_files(tmp_path) == []
    assert [r[2] for r in recovered(tmp_path)[2]] == ["c-t0"]
    full = False  # space is back: the first batch past the put-off size compacts
    short_runs(44, 60)
    assert journal.compactions >= 1 and len(refused) == tries
    assert [r[2] for r in recovered(tmp_path)[2]] == ["c-t0"]
    writer.close()


# -- what the shell holds behind a waiting batch ----------------------------------------------


class FakeLink:
    """The master link: what the agent sends."""

    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, message: Any) -> None:
        self.sent.append(message)


def test_an_update_that_cannot_be_checkpointed_is_not_acknowledged_until_it_is(tmp_path) -> None:
    """The ACKNOWLEDGED that follows an update's checkpoint waits while the disk is full
    (the executor keeps the update and sends it again if the agent dies meanwhile); a pong
    to the master and a kill of another container go ahead; the held effects follow in order
    once space is back."""

    async def main() -> None:
        disk = FullDisk()
        server = AgentServer(
            AgentOptions("127.0.0.1:5050", str(tmp_path), parse_resources("cpus:1"))
        )
        server._arm_timer = lambda: None  # type: ignore[method-assign] - no core here
        link = FakeLink()
        server.master_link = link  # type: ignore[assignment] - what apply uses of it
        writer = CheckpointWriter(str(tmp_path), write=disk)
        writer.write_batch([*first_effects(), *task_effects("t1"), *task_effects("t2")])
        server.checkpoints = writer
        failures: list[BaseException] = []
        worker = concurrent.futures.ThreadPoolExecutor(1)
        server.commit = GroupCommit(
            asyncio.get_running_loop(),
            writer.write_batch,
            server._release,
            failures.append,
            executor=worker,
        )
        try:
            one, two = server.open_executor_stream("c-t1"), server.open_executor_stream("c-t2")
            disk.budget = 0
            acknowledged = SendToExecutor("c-t1", {"type": "ACKNOWLEDGED", "n": 1})
            status = internal.StatusUpdate(ID(FID), update("t1", "TASK_FINISHED").status)
            server.apply([update("t1", "TASK_FINISHED"), acknowledged, SendToMaster(status)])
            deadline = time.monotonic() + 10
            while writer.stalled is None:
                assert not failures and time.monotonic() < deadline, failures
                await asyncio.sleep(0.001)
            server.apply(
                [
                    SendToMaster(internal.Pong()),
                    SendToExecutor("c-t2", {"type": "KILL"}),  # nothing of c-t2 is held
                    SendToExecutor("c-t1", {"type": "KILL"}),  # behind its own ACKNOWLEDGED
                ]
            )
            await asyncio.sleep(0.05)
            assert link.sent == [internal.Pong()]
            assert [decoded(r) for r in drained(two)] == [{"type": "KILL"}]
            assert drained(one) == []  # not acknowledged: not kept yet
            disk.space_back()
            await server.commit.wait_idle()
            assert not failures
            assert [decoded(r) for r in drained(one)] == [
                {"type": "ACKNOWLEDGED", "n": 1},
                {"type": "KILL"},
            ]
            assert link.sent == [internal.Pong(), status]
            assert server.overtaking._held == {}
        finally:
            writer.give_up()  # a failed assertion must not leave the worker waiting
            worker.shutdown()
            writer.close()

    asyncio.run(main())


def test_a_batch_given_up_on_does_not_end_the_agent(tmp_path) -> None:
    server = AgentServer(AgentOptions("127.0.0.1:5050", str(tmp_path), parse_resources("cpus:1")))
    # No os._exit: the agent is exiting already (leave, shutdown) and just stops waiting.
    server._checkpoint_failed(CheckpointAbandoned(errno.ENOSPC, "the checkpoint was not written"))


def test_what_may_overtake_a_batch_that_waits_for_space() -> None:
    overtaking = Overtaking()
    launch = LaunchContainer("c1", FID, "e1", "/sandbox", (), {})
    overtaking.held(launch)
    overtaking.held(update("t1"))  # checkpoints are not counted: they are the batch
    assert overtaking.may_overtake(SendToMaster(internal.Pong()))
    assert overtaking.may_overtake(SendToMaster(internal.UnregisterAgent()))
    status = internal.StatusUpdate(ID(FID), update("t1").status)
    assert not overtaking.may_overtake(SendToMaster(status))  # not checkpointed yet
    assert not overtaking.may_overtake(DestroyContainer("c1", 0.0))  # its launch is held
    assert not overtaking.may_overtake(SendToExecutor("c1", {"type": "KILL"}))
    assert overtaking.may_overtake(DestroyContainer("c2", 0.0))
    assert overtaking.may_overtake(SendToExecutor("c2", {"type": "SHUTDOWN"}))
    assert not overtaking.may_overtake(SendToExecutor("c2", {"type": "ACKNOWLEDGED"}))
    assert not overtaking.may_overtake(SendToExecutor("c2", {"type": "LAUNCH"}))
    assert not overtaking.may_overtake(RemoveCheckpoint(FID, "e2", "c2"))
    overtaking.released(launch)
    assert overtaking.may_overtake(DestroyContainer("c1", 0.0))


def test_ended_containers_lose_their_sandboxes_while_a_checkpoint_waits_for_space() -> None:
    executors, running = ["c1", "c2", "c3"], ["c1", "c4"]
    assert gc.live(executors, running, checkpoint_stalled=False) == {"c1", "c2", "c3", "c4"}
    # c2 and c3 ended (their last updates wait for the checkpoint): their sandboxes go.
    assert gc.live(executors, running, checkpoint_stalled=True) == {"c1", "c4"}
