"""The floor under benchmark 6 on this machine: what a task costs before the agent, master
and framework do any work of their own, against the CPU the 0.5x target leaves per task.

(a) The raw spawn rate, measured exactly as `bench_agent.py` measures it (`common.raw_spawn`:
``posix_spawn`` of ``/bin/true``, 64 in flight), and the CPU per spawned child (from exec to
exit) and per spawn of the parent (spawning and reaping it).

(b) The file-system work the agent must do per task, timed in this process with the agent's
own code: the sandbox as the command launcher prepares it for each task
(`butte.agent.executor.zygote.prepare_sandbox`: the directories through
`butte.agent.placement.make_sandbox`, the ``runs/latest`` link, the stdout and stderr files),
and the checkpoint of a checkpointing framework's command task written by the real
`butte.agent.checkpoint.CheckpointWriter`: the effects the agent core emits for it
(`butte.agent.launch_events`: executor and task; `butte.agent.machine`: the pid, then for
each of TASK_STARTING, TASK_RUNNING and TASK_FINISHED an UPDATE record and, once the
framework acknowledges it, an ACK record; finally the task's and the run's removal). The
checkpoints of ``--batch`` tasks go in one batch per step, as the agent's group commit
gathers those of one loop iteration, so each batch pays one ``syncfs(2)`` as in the agent.
The writer's thread and the trash thread that deletes removed trees are both counted.

(c) The CPU per task the target allows on this machine, cores / (0.5 x raw rate), and what
is left of it after the task's own process and the file-system floor, without and with
checkpointing: what the agent, its helpers, the master and the framework may spend
(`bench_agent.py` prints what each of them does spend).

    .venv/bin/python bench/agent_floor.py [--tasks 2000] [--batch 32]
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# First: common puts this checkout first on sys.path, so butte below is this checkout's.
from common import exit_on_sigterm, raw_spawn, work_dir

from butte.agent import checkpoint, paths
from butte.agent.checkpoint import CheckpointWriter
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
from butte.agent.executor.zygote import prepare_sandbox
from butte.agent.records import COMMAND
from butte.core.messages import ID, ExecutorInfo, FrameworkInfo, TaskInfo, TaskStatus

AGENT, FRAMEWORK = "floor-agent", "floor-framework"
STATES = ("TASK_STARTING", "TASK_RUNNING", "TASK_FINISHED")


@dataclass
class Cost:
    """Seconds per task: wall time and CPU time of the threads doing the work."""

    wall: float
    cpu: float


def sandbox_cost(work: str, tasks: int) -> Cost:
    """Per task: the sandbox, ``runs/latest`` and stdout/stderr the launcher makes."""
    sandboxes = [
        paths.sandbox_dir(work, AGENT, FRAMEWORK, f"t{i}", f"c-t{i}") for i in range(tasks)
    ]
    cpu, wall = time.thread_time(), time.perf_counter()
    for i, sandbox in enumerate(sandboxes):
        out, err = prepare_sandbox(sandbox, f"c-t{i}")
        os.close(out)
        os.close(err)
    return Cost((time.perf_counter() - wall) / tasks, (time.thread_time() - cpu) / tasks)


def task_steps(task: str) -> list[list[Checkpoint]]:
    """The checkpoint effects of one command task of a checkpointing framework, by step (each
    step is a batch of its own; see the module docstring)."""
    container = f"c-{task}"
    executor = ExecutorInfo(executor_id=ID(task), framework_id=ID(FRAMEWORK))
    info = TaskInfo(name=task, task_id=ID(task), agent_id=ID(AGENT))
    steps: list[list[Checkpoint]] = [
        [
            CheckpointExecutor(FRAMEWORK, task, container, executor, COMMAND),
            CheckpointTask(FRAMEWORK, task, container, info),
        ],
        [CheckpointPid(FRAMEWORK, task, container, 4242)],
    ]
    for state in STATES:
        uuid = f"{task}-{state}"
        status = TaskStatus(task_id=ID(task), state=state, uuid=uuid)
        steps.append([CheckpointUpdate(FRAMEWORK, task, container, task, status=status)])
        steps.append([CheckpointUpdate(FRAMEWORK, task, container, task, ack_uuid=uuid)])
    steps.append(
        [
            RemoveCheckpoint(FRAMEWORK, task, container, task),
            RemoveCheckpoint(FRAMEWORK, task, container),
        ]
    )
    return steps


@dataclass
class CheckpointCost:
    """Per task: the writer's thread (syncs included), the trash thread, and the syncs."""

    writer: Cost
    trash_cpu: float
    sync_wall: float
    batches: int


def checkpoint_cost(work: str, tasks: int, batch: int) -> CheckpointCost:
    """Per task: the checkpoint of ``tasks`` command tasks, ``batch`` tasks per batch."""
    writer = CheckpointWriter(work)
    writer.write_batch(
        [
            CheckpointAgent(AGENT, {"hostname": "floor"}),
            CheckpointFramework(
                FRAMEWORK, FrameworkInfo(user="u", name="floor", id=ID(FRAMEWORK), checkpoint=True)
            ),
        ]
    )
    waves = []
    for start in range(0, tasks, batch):
        steps = [task_steps(f"t{i}") for i in range(start, min(tasks, start + batch))]
        waves.append([[e for task in steps for e in task[n]] for n in range(len(steps[0]))])
    synced = _timed_syncfs()
    syncs = writer.syncs
    process, cpu, wall = time.process_time(), time.thread_time(), time.perf_counter()
    try:
        for wave in waves:
            for effects in wave:
                writer.write_batch(effects)
        writer_wall = time.perf_counter() - wall
        writer_cpu = time.thread_time() - cpu
        writer.close()  # waits for the trash thread
    finally:
        checkpoint._syncfs = synced.real
    trash_cpu = (time.process_time() - process) - writer_cpu
    return CheckpointCost(
        Cost(writer_wall / tasks, writer_cpu / tasks),
        trash_cpu / tasks,
        synced.seconds / tasks,
        writer.syncs - syncs,
    )


@dataclass
class _SyncTimer:
    real: Callable[[int], int] | None
    seconds: float = 0.0


def _timed_syncfs() -> _SyncTimer:
    """Times the writer's ``syncfs`` calls (on the calling thread) until put back."""
    timer = _SyncTimer(checkpoint._syncfs)
    real = timer.real
    if real is None:
        return timer
    me = threading.get_ident()

    def syncfs(fd: int) -> int:
        started = time.perf_counter()
        try:
            return real(fd)
        finally:
            if threading.get_ident() == me:
                timer.seconds += time.perf_counter() - started

    checkpoint._syncfs = syncfs
    return timer


def measure(tasks: int = 2000, batch: int = 32) -> dict:
    """Every figure the module docstring lists (seconds, per task unless said)."""
    cores = len(os.sched_getaffinity(0))
    spawn = raw_spawn(tasks, 64)
    with work_dir("floor") as tmp:
        sandbox = sandbox_cost(str(tmp / "sandboxes"), tasks)
        checkpoints = checkpoint_cost(str(tmp / "checkpoints"), tasks, batch)
    process = spawn.child_cpu + spawn.parent_cpu
    budget = cores / (0.5 * spawn.rate)
    without = sandbox.cpu
    with_checkpoints = sandbox.cpu + checkpoints.writer.cpu + checkpoints.trash_cpu
    return {
        "cores": cores,
        "tasks": tasks,
        "batch": batch,
        "spawn": spawn,
        "sandbox": sandbox,
        "checkpoint": checkpoints,
        "process": process,
        "budget": budget,
        "floor_without": without,
        "floor_with": with_checkpoints,
        "left_without": budget - process - without,
        "left_with": budget - process - with_checkpoints,
    }


def report(m: dict) -> list[str]:
    """The labelled lines `main` prints (times in ms per task unless said)."""
    spawn, sandbox, ck = m["spawn"], m["sandbox"], m["checkpoint"]

    def ms(seconds: float) -> str:
        return f"{seconds * 1e3:.3f} ms"

    return [
        f"machine: {m['cores']} cores, {m['tasks']} tasks, {m['batch']} tasks per checkpoint batch",
        f"raw spawn rate: {spawn.rate:,.0f} /s (posix_spawn of /bin/true, 64 in flight)",
        f"CPU per spawned child: {ms(spawn.child_cpu)} (parent, spawn and reap: "
        f"{ms(spawn.parent_cpu)})",
        f"sandbox per task: {ms(sandbox.cpu)} CPU, {ms(sandbox.wall)} wall",
        f"checkpoint per task, writer thread: {ms(ck.writer.cpu)} CPU, {ms(ck.writer.wall)} wall "
        f"(of which syncfs {ms(ck.sync_wall)} wall, {ck.batches} batches)",
        f"checkpoint per task, trash thread: {ms(ck.trash_cpu)} CPU",
        f"file-system floor without checkpointing: {ms(m['floor_without'])} CPU",
        f"file-system floor with checkpointing: {ms(m['floor_with'])} CPU",
        f"budget per task at 0.5x raw: {ms(m['budget'])} CPU "
        f"({m['cores']} cores / (0.5 x {spawn.rate:,.0f} /s))",
        f"task's own process (child + spawn and reap): {ms(m['process'])} CPU",
        f"left for agent, master and framework without checkpointing: {ms(m['left_without'])}",
        f"left for agent, master and framework with checkpointing: {ms(m['left_with'])}",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32, help="tasks per checkpoint batch")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    for line in report(measure(args.tasks, args.batch)):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
