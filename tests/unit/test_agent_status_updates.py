"""The per-task status update stream: one update in flight, backoff, acks, duplicates."""

from __future__ import annotations

from butte.agent.status_updates import StatusUpdateStream
from butte.core.clock import FakeClock
from butte.core.messages import ID, TaskStatus


def status(state: str, uuid: str) -> TaskStatus:
    return TaskStatus(task_id=ID("t1"), state=state, uuid=uuid, source="SOURCE_EXECUTOR")


def make_stream(min_interval: float = 10.0, max_interval: float = 600.0) -> StatusUpdateStream:
    return StatusUpdateStream("f1", "t1", min_interval, max_interval)


def test_only_the_oldest_update_is_in_flight_until_acked():
    clock = FakeClock()
    stream = make_stream()
    assert stream.add(status("TASK_STARTING", "u1"))
    assert stream.add(status("TASK_RUNNING", "u2"))
    sent = stream.due(clock.now())
    assert sent is not None and sent.uuid == "u1"
    assert stream.due(clock.now()) is None  # u2 waits for the ack of u1
    assert stream.ack("u2") is None  # acks of anything but the head are ignored
    assert stream.ack("u1") is not None
    sent = stream.due(clock.now())
    assert sent is not None and sent.uuid == "u2"
    stream.check_invariants()


def test_retries_double_from_min_up_to_max():
    clock = FakeClock()
    stream = make_stream(10.0, 40.0)
    stream.add(status("TASK_RUNNING", "u1"))
    start = clock.now()
    assert stream.due(start) is not None
    sends = []
    for _ in range(1000):
        clock.advance(1.0)
        if stream.due(clock.now()) is not None:
            sends.append(clock.now() - start)
        if len(sends) == 5:
            break
    # First retry 10 s after the send, then 20, 40, 40, 40 (capped).
    assert sends == [10.0, 30.0, 70.0, 110.0, 150.0]
    stream.check_invariants()


def test_duplicates_and_updates_after_terminal_are_dropped():
    stream = make_stream()
    assert stream.add(status("TASK_RUNNING", "u1"))
    assert not stream.add(status("TASK_RUNNING", "u1"))
    assert stream.add(status("TASK_FINISHED", "u2"))
    assert not stream.add(status("TASK_FAILED", "u3"))
    assert stream.is_duplicate("u1") and not stream.is_duplicate("u3")
    stream.check_invariants()


def test_done_after_terminal_update_acked():
    clock = FakeClock()
    stream = make_stream()
    stream.add(status("TASK_FINISHED", "u1"))
    stream.due(clock.now())
    assert not stream.done
    stream.ack("u1")
    assert stream.done
    assert stream.due(clock.now()) is None
    stream.check_invariants()


def test_rewind_resends_at_once_with_backoff_reset():
    clock = FakeClock()
    stream = make_stream(10.0, 600.0)
    stream.add(status("TASK_RUNNING", "u1"))
    stream.due(clock.now())
    clock.advance(10)
    stream.due(clock.now())  # a retry: interval now 20
    assert stream.interval == 20.0
    stream.rewind()
    sent = stream.due(clock.now())
    assert sent is not None and stream.interval == 10.0
    assert stream.next_retry == clock.now() + 10.0
    stream.check_invariants()
