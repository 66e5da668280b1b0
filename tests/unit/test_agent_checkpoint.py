"""Agent checkpointing and recovery, pure core plus the real checkpoint files: the core's
checkpoint effects are written with `CheckpointWriter` into a temporary work dir, read back
with `read_state`, and a fresh core is rebuilt from them with `AgentMachine.recover`, as the
shell does after a restart. Every test ends with an invariant check."""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import msgspec
from agent_kit import (
    AID,
    FID,
    Harness,
    command_task,
    custom_task,
    framework,
    run,
)

from butte.agent import paths
from butte.agent.checkpoint import CheckpointWriter, append_record, read_state
from butte.agent.effects import (
    CheckpointAgent,
    CheckpointTask,
    CheckpointUpdate,
    LaunchContainer,
    RemoveCheckpoint,
    SendToExecutor,
    SendToMaster,
)
from butte.core import internal
from butte.core import task_states as ts
from butte.core.messages import ID

CHECKPOINTING = framework(checkpoint=True)
PARTITION_AWARE = framework(checkpoint=True, capabilities=[{"type": "PARTITION_AWARE"}])


class Disk:
    """A harness whose checkpoint effects are written to ``root`` as they happen."""

    def __init__(self, root: Path, **config: Any) -> None:
        self.root = root
        self.config = {"work_dir": str(root), **config}
        self.h = Harness(**self.config)
        self.writer = CheckpointWriter(str(root))
        self.written = 0

    def sync(self) -> None:
        for effect in self.h.checkpoints[self.written :]:
            self.writer.apply(effect)
        self.written = len(self.h.checkpoints)

    def restart(
        self,
        pids: dict[str, int | None] | None = None,
        default: int | None = 99,
        never_started: frozenset[str] = frozenset(),
    ) -> None:
        """Crash and restart: a new core recovered from disk. Runs get ``pids`` (by
        container id; ``default`` for the rest: alive); those in ``never_started`` are runs
        whose launch the shell found never carried out."""
        self.sync()
        state = read_state(str(self.root))
        assert state is not None and not state.problems, state and state.problems
        for recovered in state.runs:
            recovered.pid = (pids or {}).get(recovered.container_id, default)
            recovered.never_started = recovered.container_id in never_started
        old, self.h = self.h, Harness(**self.config)
        # Real uuids are random; the harness counts, so the new one must count on.
        self.h.executor_uuids = old.executor_uuids
        self.h.agent._new_status_uuid = old.agent._new_status_uuid
        self.h.agent._new_container_id = old.agent._new_container_id
        self.h.apply(self.h.agent.recover(state, self.h.now()))
        self.writer = CheckpointWriter(str(self.root), state.agent_id)
        self.written = 0
        self.sync()


def launch_command(disk: Disk, task_id: str = "t1", fw=CHECKPOINTING) -> str:
    h = disk.h
    run(h, command_task(task_id), fw)
    (container_id,) = [c for c, e in h.launched.items() if e.executor_id == task_id]
    h.apply(h.agent.container_started(container_id, 4242, h.now()))
    disk.sync()
    return container_id


def test_running_task_recovers_with_its_id_stream_and_executor(tmp_path):
    disk = Disk(tmp_path)
    disk.h.register()
    launch_command(disk)
    assert disk.h.subscribe("t1").status == 200
    disk.h.update("t1", "t1", ts.STARTING)
    disk.h.ack(disk.h.updates()[-1])
    running = disk.h.update("t1", "t1", ts.RUNNING)
    assert running.status == 202
    unacked = disk.h.updates()[-1]
    disk.restart()
    h = disk.h
    assert h.agent.agent_id == AID
    ex = h.agent.frameworks[FID].executors["t1"]
    assert ex.recovered and ex.state == "REGISTERING" and ex.pid == 99
    h.apply(h.agent.master_connected(h.now()))
    (register,) = h.sent(internal.RegisterAgent)
    assert register.agent_info.id == ID(AID)
    (task,) = register.tasks
    assert task.state == ts.RUNNING and task.status_update_uuid == unacked.uuid
    h.master(internal.AgentReregistered(agent_id=ID(AID), master_id="M2"))
    assert [u.uuid for u in h.updates()] == [unacked.uuid]  # resent as it was
    # The executor re-subscribes, resending the update: a duplicate, acknowledged only.
    resend = {"status": {**_builtins(unacked), "source": "SOURCE_EXECUTOR"}}
    reply = h.subscribe("t1", unacknowledged_updates=[resend])
    assert reply.status == 200 and h.events(ex.container_id) == ["SUBSCRIBED", "ACKNOWLEDGED"]
    assert len(h.updates()) == 1 and h.agent.counters["executors_reregistered"] == 1
    h.ack(unacked)
    h.update("t1", "t1", ts.FINISHED)
    h.ack(h.updates()[-1])
    h.apply(h.agent.container_exited(ex.container_id, 0, h.now()))
    disk.sync()
    assert list((tmp_path / "meta" / "slaves" / AID / "frameworks").iterdir()) == []
    h.check()


def _builtins(status: Any) -> dict[str, Any]:
    return msgspec.to_builtins(status)


def test_staging_task_is_delivered_unless_the_executor_already_has_it(tmp_path):
    disk = Disk(tmp_path)
    disk.h.register()
    first = launch_command(disk, "t1")
    second = launch_command(disk, "t2")
    disk.restart()
    h = disk.h
    assert h.subscribe("t1").status == 200
    assert h.events(first) == ["SUBSCRIBED", "LAUNCH"]  # never seen by the executor
    info = {"task_id": {"value": "t2"}, "name": "t2", "agent_id": {"value": AID}}
    assert h.subscribe("t2", unacknowledged_tasks=[info]).status == 200
    assert h.events(second) == ["SUBSCRIBED"]  # it has it: not launched twice
    assert h.agent.frameworks[FID].executors["t2"].tasks["t2"].launched
    h.check()


def test_executor_gone_while_down_fails_its_tasks_and_is_reported(tmp_path):
    disk = Disk(tmp_path)
    disk.h.register()
    run(disk.h, custom_task("c1"), CHECKPOINTING)
    disk.h.apply(disk.h.agent.container_started("c0", 4242, disk.h.now()))
    disk.h.subscribe("exec1")
    disk.h.update("exec1", "c1", ts.RUNNING)
    disk.h.ack(disk.h.updates()[-1])
    disk.restart(default=None)
    h = disk.h
    # Terminated, kept only until the TASK_FAILED is acknowledged.
    assert [ex.state for ex in h.agent.containers.values()] == ["TERMINATED"]
    h.register()
    (failed,) = h.updates()
    assert failed.state == ts.FAILED and failed.reason == "REASON_EXECUTOR_TERMINATED"
    assert failed.message == "Executor terminated while the agent was down"
    (exited,) = h.sent(internal.ExecutorExited)  # held until registered
    assert exited.executor_id == ID("exec1")
    h.check()


def test_a_launch_the_agent_died_before_carrying_out_is_carried_out_after_restart(tmp_path):
    """The agent checkpointed a launch and died before carrying it out (group commit holds
    the launch until the batch is durable): the run is launched anew, with the same
    container id, and its task is delivered as if nothing happened."""
    disk = Disk(tmp_path)
    disk.h.register()
    run(disk.h, command_task("t1"), CHECKPOINTING)
    (container,) = disk.h.launched
    disk.restart(default=None, never_started=frozenset({container}))
    h = disk.h
    (launch,) = h.launched.values()
    assert launch.container_id == container and launch.executor_id == "t1"
    ex = h.agent.containers[container]
    assert ex.state == "REGISTERING" and not ex.recovered
    assert h.agent.counters["executors_relaunched"] == 1
    h.register()
    assert h.updates() == []  # nothing failed
    h.apply(h.agent.container_started(container, 4343, h.now()))
    assert h.subscribe("t1").status == 200
    assert h.events(container) == ["SUBSCRIBED", "LAUNCH"]
    h.check()


def test_a_run_that_did_start_is_not_launched_again(tmp_path):
    """Only runs whose tasks are all still queued in TASK_STAGING are launched anew; one
    with updates failed while the agent was down, as before."""
    disk = Disk(tmp_path)
    disk.h.register()
    container = launch_command(disk)
    disk.h.subscribe("t1")
    disk.h.update("t1", "t1", ts.RUNNING)
    disk.restart(default=None, never_started=frozenset({container}))
    h = disk.h
    assert not h.launched
    h.register()
    assert [u.state for u in h.updates()][-1] == ts.RUNNING  # resent, then the failure
    h.ack(h.updates()[-1])
    assert h.updates()[-1].state == ts.FAILED
    h.check()


def test_recovered_executor_must_reregister_in_time(tmp_path):
    for fw, lost in ((CHECKPOINTING, ts.LOST), (PARTITION_AWARE, ts.GONE)):
        disk = Disk(tmp_path / lost, executor_reregistration_timeout=2.0)
        disk.h.register()
        container = launch_command(disk, fw=fw)
        disk.h.subscribe("t1")
        disk.h.update("t1", "t1", ts.RUNNING)
        disk.restart()
        h = disk.h
        h.advance(1.9)
        assert not h.destroyed
        h.advance(0.2)
        assert [d.container_id for d in h.destroyed] == [container]
        h.apply(h.agent.container_exited(container, 9, h.now()))
        h.register()
        h.ack(h.updates()[-1])  # the RUNNING resent first; the end is next in line
        final = h.updates()[-1]
        assert final.state == lost and final.reason == "REASON_EXECUTOR_REREGISTRATION_TIMEOUT"
        h.check()


def test_a_kill_that_comes_before_the_recovered_executor_resubscribes_waits_for_it(tmp_path):
    """The master reaches a restarted agent before its executors re-subscribe: a KILL of a
    running task then is delivered once its executor is back, never dropped (a framework
    would wait for an end that does not come until it kills again)."""
    disk = Disk(tmp_path)
    disk.h.register()
    launch_command(disk)
    disk.h.subscribe("t1")
    disk.h.update("t1", "t1", ts.RUNNING)
    disk.h.ack(disk.h.updates()[-1])
    disk.restart()
    h = disk.h
    ex = h.agent.frameworks[FID].executors["t1"]
    h.register()
    h.master(internal.KillTask(ID(FID), ID("t1")))
    assert h.events(ex.container_id) == []  # no stream yet: nothing sent, nothing lost
    assert ex.pending_kills
    assert h.subscribe("t1").status == 200
    assert h.events(ex.container_id) == ["SUBSCRIBED", "KILL"]
    assert not ex.pending_kills
    h.update("t1", "t1", ts.KILLED)
    assert h.updates()[-1].state == ts.KILLED
    h.check()


def test_frameworks_without_checkpointing_write_nothing(tmp_path):
    disk = Disk(tmp_path)
    disk.h.register()
    launch_command(disk, fw=framework())
    disk.h.subscribe("t1")
    disk.h.update("t1", "t1", ts.RUNNING)
    kinds = {type(c).__name__ for c in disk.h.checkpoints}
    assert kinds == {"CheckpointAgent"}
    disk.restart()
    assert not disk.h.agent.frameworks and disk.h.agent.agent_id == AID
    disk.h.check()


def test_checkpoints_come_before_what_depends_on_them(tmp_path):
    disk = Disk(tmp_path)
    h = disk.h
    h.register()
    effects = h.agent.handle_master(
        internal.RunTask(framework=CHECKPOINTING, task=command_task("t1")), h.now()
    )
    kinds = [type(e) for e in effects]
    assert kinds.index(CheckpointTask) < kinds.index(LaunchContainer)
    h.apply(effects)
    h.subscribe("t1")
    reply = h.update("t1", "t1", ts.RUNNING)
    kinds = [type(e) for e in reply.effects]
    assert kinds == [CheckpointUpdate, SendToMaster, SendToExecutor]  # then ACKNOWLEDGED
    effects = h.agent.handle_master(
        internal.StatusUpdateAck(ID(FID), ID("t1"), h.updates()[-1].uuid), h.now()
    )
    assert isinstance(effects[0], CheckpointUpdate) and effects[0].ack_uuid is not None
    h.check()


def test_task_removed_from_checkpoint_once_acknowledged_terminal(tmp_path):
    disk = Disk(tmp_path)
    disk.h.register()
    run(disk.h, custom_task("c1"), CHECKPOINTING)
    run(disk.h, custom_task("c2"), CHECKPOINTING)
    disk.h.subscribe("exec1")
    disk.h.update("exec1", "c1", ts.FINISHED)
    disk.h.ack(disk.h.updates()[-1])
    assert any(isinstance(c, RemoveCheckpoint) and c.task_id == "c1" for c in disk.h.checkpoints)
    disk.restart()
    ex = disk.h.agent.frameworks[FID].executors["exec1"]
    assert set(ex.tasks) == {"c2"}
    disk.h.check()


def test_command_runs_are_in_the_journal_and_its_torn_or_bad_records_are_handled(tmp_path):
    disk = Disk(tmp_path)
    disk.h.register()
    container = launch_command(disk)
    disk.h.subscribe("t1")
    disk.h.update("t1", "t1", ts.RUNNING)
    disk.sync()
    journal = Path(paths.command_runs_path(str(tmp_path), AID))
    # The whole run is in the agent's journal: no executor tree at all.
    framework = Path(paths.meta_framework_dir(str(tmp_path), AID, FID))
    assert os.listdir(framework) == ["framework.info"]
    good = journal.read_bytes()
    with open(journal, "ab") as f:
        f.write(b'250\n{"type":"UPD')  # the agent died mid-write
    state = read_state(str(tmp_path))
    assert state is not None and not state.problems
    (recovered,) = state.runs
    assert (recovered.container_id, recovered.kind, recovered.pid) == (container, "command", 4242)
    assert recovered.info.executor_id.value == "t1"
    assert [u.state for u in recovered.tasks[0].updates] == [ts.RUNNING]
    # A record that is not JSON ends the journal there (reported); records of a run before
    # its start leave no run.
    journal.write_bytes(good + b"9\n{not json")
    state = read_state(str(tmp_path))
    assert state is not None and [u.state for u in state.runs[0].tasks[0].updates] == [ts.RUNNING]
    assert any("bad record" in p for p in state.problems)
    pid = b'{"type":"PID","pid":1,"framework_id":"x","executor_id":"e","container_id":"c"}'
    journal.write_bytes(b"%d\n%s" % (len(pid), pid) + good)
    state = read_state(str(tmp_path))
    assert state is not None and len(state.runs) == 1
    assert any("record of run c before its start" in p for p in state.problems)


def test_torn_and_unreadable_records_of_a_run_kept_as_a_tree(tmp_path):
    disk = Disk(tmp_path)
    disk.h.register()
    run(disk.h, custom_task("c1"), CHECKPOINTING)
    disk.h.subscribe("exec1")
    disk.h.update("exec1", "c1", ts.RUNNING)
    disk.sync()
    (run_dir,) = Path(paths.meta_executor_dir(str(tmp_path), AID, FID, "exec1")).glob("runs/*")
    assert run_dir.is_dir()
    with open(paths.task_updates_path(str(run_dir), "c1"), "ab") as f:
        f.write(b'250\n{"type":"UPD')  # the agent died mid-write
    state = read_state(str(tmp_path))
    assert state is not None and not state.problems
    assert [u.state for u in state.runs[0].tasks[0].updates] == [ts.RUNNING]
    with open(paths.executor_info_path(str(tmp_path), AID, FID, "exec1"), "w") as f:
        f.write("{not json")
    state = read_state(str(tmp_path))
    assert state is not None and not state.runs
    assert any("executor.info" in p for p in state.problems)


def test_append_record_and_latest_link(tmp_path):
    path = tmp_path / "a" / "log"
    path.parent.mkdir()
    append_record(str(path), b'{"x":1}')
    append_record(str(path), b"{}")
    assert path.read_bytes() == b'7\n{"x":1}2\n{}'
    writer = CheckpointWriter(str(tmp_path))
    writer.apply(CheckpointAgent("old", {}))
    writer.apply(CheckpointAgent("new", {}))
    assert os.readlink(paths.latest_agent_link(str(tmp_path))) == "new"
    assert sorted(os.listdir(paths.meta_slaves_dir(str(tmp_path)))) == ["latest", "new"]


def snapshot(h: Harness) -> dict[str, Any]:
    """What must survive a restart: per checkpointed task, its state, the uuids still
    unacknowledged and those already seen. (Whether a TASK_STAGING task was given to its
    executor is decided again when the executor re-subscribes.)"""
    out = {}
    for (fid, tid), ex in h.agent.task_executor.items():
        task = ex.tasks[tid]
        stream = h.agent.streams.get((fid, tid))
        pending = [s.uuid for s in stream.pending] if stream else []
        received = sorted(stream.received) if stream else []
        out[tid] = (task.state, pending, received)
    return out


def test_random_crashes_recover_exactly_what_was_there(tmp_path):
    states = [ts.STARTING, ts.RUNNING, ts.KILLING, ts.FINISHED, ts.FAILED, ts.KILLED]
    for seed in range(25):
        rng = random.Random(seed)
        disk = Disk(tmp_path / str(seed), status_update_retry_interval_min=1.0)
        disk.h.register()
        for _step in range(120):
            h = disk.h
            action = rng.randrange(10)
            tid = f"t{rng.randrange(5)}"
            if action == 0:
                run(h, command_task(tid), CHECKPOINTING)
            elif action == 1:
                h.master(internal.KillTask(ID(FID), ID(tid)))
            elif action == 2:
                h.subscribe(tid)
            elif action in (3, 4):
                h.update(tid, tid, rng.choice(states))
            elif action == 5 and h.updates():
                h.ack(rng.choice(h.updates()))
            elif action == 6 and h.launched:
                cid = rng.choice(list(h.launched))
                h.apply(h.agent.container_exited(cid, rng.choice([0, 9]), h.now()))
            elif action == 7:
                h.advance(rng.random() * 3)
            elif action == 8:
                cid = rng.choice(list(h.launched)) if h.launched else None
                if cid is not None:
                    h.apply(h.agent.container_started(cid, 1000 + len(cid), h.now()))
            elif action == 9:
                before = snapshot(h)
                dead = {c: None for c, ex in h.agent.containers.items() if ex.state == "TERMINATED"}
                disk.restart(dead)
                assert snapshot(disk.h) == before, seed
                disk.h.register()
            disk.h.check()
