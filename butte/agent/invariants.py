"""Consistency rules of the agent core's bookkeeping, checked after every step in tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

from butte.agent.records import FRAMEWORK_RUNNING, RUNNING, TERMINATED, TERMINATING, Executor
from butte.core import task_states as ts

if TYPE_CHECKING:
    from butte.agent.core import AgentCore


def check_agent_invariants(agent: AgentCore) -> None:
    """Raises AssertionError if the bookkeeping is inconsistent (tests call this)."""
    per_framework: dict[str, int] = {}
    for key, stream in agent.streams.items():
        stream.check_invariants()
        assert key == (stream.framework_id, stream.task_id)
        fw = agent.frameworks.get(key[0])
        assert fw is not None and fw.state == FRAMEWORK_RUNNING, f"stream of gone fw {key}"
        per_framework[key[0]] = per_framework.get(key[0], 0) + 1
    assert per_framework == agent._streams_per_framework
    seen_containers = set()
    for fid, fw in agent.frameworks.items():
        assert fw.id == fid
        assert fw.executors or per_framework.get(fid), f"empty framework {fid} kept"
        for eid, ex in fw.executors.items():
            _check_executor(agent, fid, eid, ex)
            seen_containers.add(ex.container_id)
    assert seen_containers == set(agent.containers), "container index out of date"
    for key, ex in agent.task_executor.items():
        assert key[1] in ex.tasks and agent.containers.get(ex.container_id) is ex


def _check_executor(agent: AgentCore, fid: str, eid: str, ex: Executor) -> None:
    assert ex.id == eid and ex.framework_id == fid
    assert agent.containers.get(ex.container_id) is ex
    if ex.subscribed:
        assert ex.state in (RUNNING, TERMINATING)
    if ex.state == TERMINATED:
        assert ex.tasks, "terminated executor without tasks should be removed"
        assert not ex.queued and not ex.subscribed
        assert not ex.live_tasks(), "task left running on a terminated executor"
    if ex.state == RUNNING:
        assert not ex.queued, "running executor with undelivered tasks"
    queued = [tid for entry in ex.queued for tid in entry]
    assert len(queued) == len(set(queued))
    for tid, task in ex.tasks.items():
        assert task.id == tid and task.executor_id == eid
        assert agent.task_executor.get((fid, tid)) is ex
        if not task.launched and not ts.is_terminal(task.state):
            assert tid in queued or ex.state == TERMINATING, f"task {tid} lost in queue"
        if ts.is_terminal(task.state):
            assert (fid, tid) in agent.streams, f"terminal task {tid} without pending update"
    for tid in queued:
        assert tid in ex.tasks and not ex.tasks[tid].launched
