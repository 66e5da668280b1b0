"""The task lifecycle as data: states, which are terminal, and which moves are legal."""

from __future__ import annotations

from typing import Any

STAGING = "TASK_STAGING"
STARTING = "TASK_STARTING"
RUNNING = "TASK_RUNNING"
KILLING = "TASK_KILLING"
FINISHED = "TASK_FINISHED"
FAILED = "TASK_FAILED"
KILLED = "TASK_KILLED"
ERROR = "TASK_ERROR"
LOST = "TASK_LOST"
DROPPED = "TASK_DROPPED"
UNREACHABLE = "TASK_UNREACHABLE"
GONE = "TASK_GONE"
GONE_BY_OPERATOR = "TASK_GONE_BY_OPERATOR"
UNKNOWN = "TASK_UNKNOWN"

ALL_STATES = frozenset(
    {
        STAGING,
        STARTING,
        RUNNING,
        KILLING,
        FINISHED,
        FAILED,
        KILLED,
        ERROR,
        LOST,
        DROPPED,
        UNREACHABLE,
        GONE,
        GONE_BY_OPERATOR,
        UNKNOWN,
    }
)
TERMINAL = frozenset({FINISHED, FAILED, KILLED, ERROR, LOST, DROPPED, GONE, GONE_BY_OPERATOR})

# States a partition-aware framework may see that others see as TASK_LOST.
PARTITION_AWARE_ONLY = frozenset({UNREACHABLE, GONE, DROPPED, UNKNOWN, GONE_BY_OPERATOR})

# Legal moves. A task may also stay in a non-terminal state (RUNNING -> RUNNING carries health
# changes). Everything not listed is illegal and raises in `transition`.
_NON_TERMINAL = (STAGING, STARTING, RUNNING, KILLING, UNREACHABLE)
TRANSITIONS: dict[str, frozenset[str]] = {
    STAGING: frozenset({STAGING, STARTING, RUNNING, KILLING} | TERMINAL | {UNREACHABLE}),
    STARTING: frozenset({STARTING, RUNNING, KILLING} | TERMINAL | {UNREACHABLE}),
    RUNNING: frozenset({RUNNING, KILLING} | TERMINAL | {UNREACHABLE}),
    KILLING: frozenset({KILLING, RUNNING} | TERMINAL | {UNREACHABLE}),
    # A task on an unreachable agent comes back with whatever state the agent reports.
    UNREACHABLE: frozenset(set(_NON_TERMINAL) | TERMINAL),
}
for _state in TERMINAL:
    TRANSITIONS[_state] = frozenset()


class IllegalTransition(ValueError):
    """A state change that the task lifecycle does not allow."""


def is_terminal(state: str) -> bool:
    return state in TERMINAL


def transition(current: str, new: str) -> str:
    """Returns ``new`` if moving from ``current`` is legal, else raises IllegalTransition."""
    if new not in TRANSITIONS.get(current, frozenset()):
        raise IllegalTransition(f"task cannot move from {current} to {new}")
    return new


def for_framework(state: str, partition_aware: bool) -> str:
    """The state a framework is told: non-partition-aware ones see TASK_LOST instead of the
    partition-aware states."""
    if not partition_aware and state in PARTITION_AWARE_ONLY:
        return LOST
    return state


def record_status(statuses: list[Any], status: Any, keep: int) -> None:
    """Adds ``status`` (anything with a ``state``) to a task's ``statuses`` as Mesos' master
    and agent keep them: it replaces the last one when that has the same state (health and
    check updates of a running task do not pile up), and only the last ``keep`` stay."""
    if statuses and statuses[-1].state == status.state:
        statuses[-1] = status
    else:
        statuses.append(status)
        if len(statuses) > keep:
            del statuses[:-keep]
