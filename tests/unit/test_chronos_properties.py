"""Property tests of the chronos core: over random schedules, time zones (DST, a skipped
day), clock steps, offer droughts, task failures and scheduler crashes (with and without a
launch lost in flight), every slot is launched exactly once, or skipped or dropped (as
Chronos drops it) and counted, never two of these, never twice, and a first launch is never
later than the slot plus epsilon."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from chronos_kit import FAILED, FINISHED, LOST, RUNNING, Harness, job
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from butte.frameworks.chronos.schedule import parse_schedule

ZONES = [
    "",
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe",  # half-hour DST shift
    "Pacific/Apia",  # skipped 2011-12-30 entirely
    "Asia/Kolkata",
]
PERIODS = ["PT1M", "PT7M", "PT30M", "PT1H", "PT90M", "P1D", "P1DT1H", "P1W", "P1M"]
# Starts around DST changes and Apia's skipped day.
ANCHORS = [
    datetime(2026, 3, 8, 0, 0, tzinfo=UTC).timestamp(),
    datetime(2026, 10, 25, 0, 0, tzinfo=UTC).timestamp(),
    datetime(2026, 4, 5, 14, 0, tzinfo=UTC).timestamp(),
    datetime(2011, 12, 29, 9, 0, tzinfo=UTC).timestamp(),
]

steps = st.lists(
    st.tuples(
        st.sampled_from(
            ["wake", "wake", "wake", "tick", "progress", "progress", "crash", "lost_crash"]
        ),
        st.one_of(
            st.integers(0, 600),
            st.integers(0, 4 * 3600),
            st.integers(-7200, 0),  # the clock steps back
            st.integers(0, 3 * 86400),  # or jumps ahead
        ),
        st.sampled_from([RUNNING, FINISHED, FINISHED, FAILED, LOST]),
        st.booleans(),  # offers arrive right after this step
    ),
    min_size=5,
    max_size=60,
)


SETTINGS: dict[str, Any] = {
    "max_examples": 150,
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow],
}
RUNS: dict[str, Any] = dict(
    zone=st.sampled_from(ZONES),
    period=st.sampled_from(PERIODS),
    anchor=st.sampled_from(ANCHORS),
    offset=st.integers(-3 * 3600, 3 * 3600),
    start_in=st.integers(-86400, 86400),
    repeats=st.one_of(st.none(), st.integers(0, 40)),
    epsilon=st.sampled_from([0, 30, 60, 600, 3600]),
    concurrent=st.booleans(),
    retries=st.integers(0, 2),
    actions=steps,
)


def _every_slot_runs_once_or_is_counted_skipped(
    zone: str,
    period: str,
    anchor: float,
    offset: int,
    start_in: int,
    repeats: int | None,
    epsilon: int,
    concurrent: bool,
    retries: int,
    actions: list[tuple[str, int, str, bool]],
) -> None:
    now = anchor + offset
    start = datetime.fromtimestamp(now + start_in, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    text = f"{'R' if repeats is None else f'R{repeats}'}/{start}/{period}"
    h = Harness(now)
    h.put(
        job(
            now,
            "j",
            schedule=text,
            scheduleTimeZone=zone,
            epsilon=f"PT{epsilon}S",
            concurrent=concurrent,
            retries=retries,
        )
    )
    created = now
    horizon = now
    for kind, dt, outcome, with_offers in actions:
        if kind == "wake":
            # As the shell does: wake at the next slot, a little late (within epsilon or not).
            state = h.core.jobs["j"]
            due = state.schedule.slot(state.next_index) if state.remaining != 0 else None
            h.tick(max(h.now, due if due is not None else h.now) + abs(dt) % (2 * epsilon + 2))
        elif kind == "tick":
            h.tick(h.now + dt)
        elif kind == "progress":
            active = h.active_tasks()
            if active:
                h.status(active[dt % len(active)], outcome)
        elif kind == "crash":
            h.crash_and_restart()
        else:
            # Killed right after an offer was used: the launch was saved, never sent.
            h.core.on_offers([*_one_offer(h)], h.now)
            h.apply(lose_launches=True)
            h.crash_and_restart()
        if with_offers:
            h.offers()
        horizon = max(horizon, h.now)
        _check_launches(h, epsilon)
    h.tick(horizon)  # the clock is back at its furthest point: every slot up to it is consumed
    _check_accounting(h, text, zone, created, horizon, repeats, epsilon)


def _one_offer(h: Harness) -> list:
    from chronos_kit import offer

    return [offer(h.now)]


def _check_launches(h: Harness, epsilon: int) -> None:
    global LAUNCHES
    LAUNCHES += len(h.launches)
    for (_name, due), count in h.slot_launches().items():
        assert count == 1, f"slot {due} launched {count} times"
    for tid, when in h.launches:
        _, ms, attempt, *_ = tid.split(":")
        if attempt == "0":
            assert when <= int(ms) / 1000 + epsilon + 1e-6, f"{tid} launched late at {when}"


def _check_accounting(
    h: Harness,
    text: str,
    zone: str,
    created: float,
    horizon: float,
    repeats: int | None,
    epsilon: float,
) -> None:
    schedule = parse_schedule(text, zone, created)
    # The first slot is the first one late by no more than epsilon at the job's creation.
    k = schedule.first_index_at_or_after(created - epsilon)
    expected: list[float] = []
    while k is not None and (repeats is None or len(expected) < repeats):
        t = schedule.slot(k)
        if t is None or t > horizon:
            break
        if not expected or t > expected[-1]:
            expected.append(t)
        elif repeats is not None:
            repeats += 1  # a duplicate instant uses up an index, not a run
        k += 1
    launched = {due for (_, due) in h.slot_launches()}
    queued = {r.due for r in h.core.runs.values() if r.kind == "slot" and r.attempt == 0}
    queued -= launched
    state = h.core.jobs["j"]
    assert launched <= set(expected)
    assert queued <= set(expected)
    # A slot due while the job had a run queued, or ran and is not concurrent, is dropped
    # (as Chronos drops it) and counted apart.
    counted = len(launched) + len(queued) + state.skipped_count + state.dropped_count
    assert counted == len(expected), (
        f"launched {len(launched)} queued {len(queued)} skipped {state.skipped_count} "
        f"dropped {state.dropped_count} of {len(expected)} slots"
    )


LAUNCHES = 0


test_every_slot_runs_once_or_is_counted_skipped = settings(**SETTINGS)(
    given(**RUNS)(_every_slot_runs_once_or_is_counted_skipped)
)


def test_the_property_run_launched_and_skipped() -> None:
    """Guards the generator: the property test above must really launch runs. Over the
    same examples every time (derandomized): how many a random draw launches varies several
    times over, sometimes below the bar."""
    global LAUNCHES
    LAUNCHES = 0
    settings(**SETTINGS, derandomize=True, database=None)(
        given(**RUNS)(_every_slot_runs_once_or_is_counted_skipped)
    )()
    assert LAUNCHES > 500
