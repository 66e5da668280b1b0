"""How ``butte task tail -f`` reads on while its reads fail (`butte.cli.task._Reader`):
which failures it waits out, at which offset it goes on, and when it gives up."""

from __future__ import annotations

from typing import Any

import pytest

from butte.cli import task as task_cli
from butte.cli.common import CliError
from butte.client.operator import MasterUnreachable, OperatorError

TASK = {"task_id": {"value": "t1"}, "framework_id": {"value": "f1"}}


class FakeMaster:
    """Answers READ_FILE from a script: an exception to raise or (size, data)."""

    def __init__(self, answers: list[Any], states: list[str | None]) -> None:
        self.answers = answers
        self.states = states
        self.reads: list[int] = []

    def read_file(self, path: str, offset: int, length: int | None = None) -> tuple[int, bytes]:
        self.reads.append(offset)
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def get_json(self, path: str, **params: Any) -> dict[str, Any]:
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return {"tasks": [] if state is None else [{"state": state}]}


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch) -> list[float]:
    clock = [0.0]
    monkeypatch.setattr(task_cli.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    monkeypatch.setattr(task_cli.time, "monotonic", lambda: clock[0])
    return clock


def reader(master: FakeMaster, follow: bool = True) -> task_cli._Reader:
    return task_cli._Reader(master, "/sandbox/stdout", TASK, "stdout", follow)  # type: ignore[arg-type]


DISCONNECTED = OperatorError(503, "Agent a1 is disconnected")
NOT_REGISTERED = OperatorError(404, "Agent a1 of path '/sandbox/stdout' is not registered")


def test_an_agent_restart_is_waited_out_at_the_same_offset(capsys) -> None:
    master = FakeMaster(
        [DISCONNECTED, MasterUnreachable("down"), DISCONNECTED, (10, b"rest")], ["TASK_RUNNING"]
    )
    assert reader(master).read(6, 100) == (10, b"rest")
    assert master.reads == [6, 6, 6, 6]
    notes = capsys.readouterr().err.splitlines()
    assert len(notes) == 2 and "still following" in notes[0] and "from byte 6" in notes[1]


def test_without_follow_a_failed_read_is_an_error() -> None:
    with pytest.raises(OperatorError):
        reader(FakeMaster([DISCONNECTED], ["TASK_RUNNING"]), follow=False).read(0, 0)


def test_a_missing_file_is_an_error_until_it_was_read_once() -> None:
    missing = OperatorError(404, "No file or directory found")
    with pytest.raises(OperatorError):
        reader(FakeMaster([missing], ["TASK_RUNNING"])).read(0, 0)
    # Once read, a file not found is waited for while the task lives (an agent the master
    # removed may come back) ...
    master = FakeMaster([(4, b"abcd"), missing, NOT_REGISTERED, (6, b"ef")], ["TASK_UNREACHABLE"])
    follow = reader(master)
    assert follow.read(0, 100) == (4, b"abcd")
    assert follow.read(4, 100) == (6, b"ef")


def test_a_task_that_ended_with_its_agent_gone_ends_the_follow() -> None:
    master = FakeMaster([(3, b"abc"), *[NOT_REGISTERED] * 5], ["TASK_LOST"])
    follow = reader(master)
    follow.read(0, 100)
    with pytest.raises(CliError) as error:
        follow.read(3, 100)
    assert error.value.code == 1
    assert "task t1 ended (TASK_LOST)" in str(error.value) and "up to byte 3" in str(error.value)


def test_a_disconnected_agent_is_waited_for_even_when_its_task_ended() -> None:
    # The master removes an agent that stays away (the reads then fail with 404): until
    # then it may come back with the rest of the output.
    master = FakeMaster([(3, b"abc"), *[DISCONNECTED] * 20, (5, b"de")], ["TASK_FINISHED"])
    follow = reader(master)
    follow.read(0, 100)
    assert follow.read(3, 100) == (5, b"de")


def test_a_task_the_master_does_not_know_is_waited_for_a_while(no_sleep) -> None:
    grace = task_cli.UNKNOWN_TASK_GRACE_SECONDS
    tries = int(grace / task_cli.FOLLOW_INTERVAL) + 10
    master = FakeMaster([(3, b"abc"), *[NOT_REGISTERED] * tries], [None])
    follow = reader(master)
    follow.read(0, 100)
    with pytest.raises(CliError, match="no longer known to the master"):
        follow.read(3, 100)
    assert no_sleep[0] >= grace
