"""How the agent core reports a container that went over a limit: TASK_FAILED from the
agent (SOURCE_AGENT), with the limitation's reason and message and ``limitation`` naming the
resource at the container's size of it, as Mesos does."""

from __future__ import annotations

import msgspec
from agent_kit import Harness, command_task, custom_task, run

from butte.core.messages import TaskStatus

MESSAGE = "Memory limit exceeded: Requested: 96MB Maximum Used: 96MB"


def scalar(name: str, value: float) -> dict:
    return {"name": name, "type": "SCALAR", "scalar": {"value": value}}


def running(h: Harness, resources: list[dict], executor: str = "") -> str:
    """Task t1 asking for ``resources`` (a command task, or one of custom executor
    ``executor``) in a started, subscribed container; it reported TASK_RUNNING, which was
    acknowledged. Returns the container."""
    h.register()
    if executor:
        run(h, msgspec.structs.replace(custom_task("t1", executor), resources=resources))
    else:
        run(h, command_task("t1", "sleep 60", resources=resources))
    executor = executor or "t1"
    (container,) = [c for c, e in h.launched.items() if e.executor_id == executor]
    h.apply(h.agent.container_started(container, 4242, h.now()))
    assert h.subscribe(executor).status == 200
    h.update(executor, "t1", "TASK_RUNNING")
    h.ack(h.updates()[-1])
    return container


def limited(status: TaskStatus, reason: str, message: str) -> None:
    assert (status.state, status.reason, status.message) == ("TASK_FAILED", reason, message)
    assert status.source == "SOURCE_AGENT"


def test_the_executors_report_of_the_kill_becomes_the_agents_limitation():
    h = Harness()
    container = running(h, [scalar("cpus", 0.5), scalar("mem", 64), scalar("mem", 32)])
    reason = "REASON_CONTAINER_LIMITATION_MEMORY"
    h.apply(h.agent.container_limited(container, reason, MESSAGE, h.now()))
    assert h.update("t1", "t1", "TASK_FAILED", message="Command terminated with signal Killed")
    failed = h.updates()[-1]
    limited(failed, reason, MESSAGE)
    # The container's limit: the task's 96 MB and the command executor's 32 MB.
    assert failed.limitation == {"resources": [scalar("mem", 128.0)]}
    h.check()


def test_a_limitation_before_the_executor_reports_fails_tasks_from_the_agent_on_exit():
    h = Harness()
    container = running(h, [scalar("cpus", 0.5), scalar("disk", 5)])
    reason = "REASON_CONTAINER_LIMITATION_DISK"
    message = "Disk usage (20MB) exceeds quota (5MB)"
    h.apply(h.agent.container_limited(container, reason, message, h.now()))
    h.apply(h.agent.container_exited(container, 9, h.now()))
    failed = h.updates()[-1]
    limited(failed, reason, message)
    assert failed.limitation == {"resources": [scalar("disk", 5.0)]}  # no executor disk
    h.check()


def test_a_memory_limitation_names_the_limit_the_kernel_had_at_least_the_minimum():
    h = Harness()
    container = running(h, [scalar("cpus", 0.5), scalar("mem", 4)], executor="ex1")
    reason = "REASON_CONTAINER_LIMITATION_MEMORY"
    h.apply(h.agent.container_limited(container, reason, MESSAGE, h.now()))
    h.apply(h.agent.container_exited(container, 9, h.now()))
    assert h.updates()[-1].limitation == {"resources": [scalar("mem", 32.0)]}
