"""`butte.testing.turns`: how the suite's two workers share the machine (tests/conftest.py).
Each holder is a `Turns` of its own (its own open files), as each worker process has."""

from __future__ import annotations

import threading
from pathlib import Path

from butte.testing.turns import Turns


class Holder:
    """Takes a turn on a thread when started; holds it until released."""

    def __init__(self, directory: Path, alone: bool) -> None:
        self.turns = Turns(directory)
        self.alone = alone
        self.has_turn = threading.Event()
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.turns.held(self.alone):
            self.has_turn.set()
            self.release.wait(10)

    def start(self) -> Holder:
        self.thread.start()
        return self

    def finish(self) -> None:
        self.release.set()
        self.thread.join(10)
        self.turns.close()


def waits(holder: Holder) -> bool:
    return not holder.has_turn.wait(0.3)


def test_shared_turns_go_together_and_a_turn_alone_waits_for_them(tmp_path: Path) -> None:
    one, two = Holder(tmp_path, False).start(), Holder(tmp_path, False).start()
    assert one.has_turn.wait(5) and two.has_turn.wait(5)
    alone = Holder(tmp_path, True).start()
    assert waits(alone)
    one.finish()
    assert waits(alone)
    two.finish()
    assert alone.has_turn.wait(5)
    alone.finish()


def test_a_later_shared_taker_does_not_overtake_one_waiting_to_be_alone(tmp_path: Path) -> None:
    first = Holder(tmp_path, False).start()
    assert first.has_turn.wait(5)
    alone = Holder(tmp_path, True).start()
    assert waits(alone)
    later = Holder(tmp_path, False).start()
    assert waits(later)  # the gate: it would otherwise share with `first` at once
    first.finish()
    assert alone.has_turn.wait(5)
    assert waits(later)
    alone.finish()
    assert later.has_turn.wait(5)
    later.finish()


def test_turns_alone_follow_one_another(tmp_path: Path) -> None:
    first = Holder(tmp_path, True).start()
    assert first.has_turn.wait(5)
    second = Holder(tmp_path, True).start()
    assert waits(second)
    first.finish()
    assert second.has_turn.wait(5)
    second.finish()
