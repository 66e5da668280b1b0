"""The chronos scheduling core and its ISO8601 arithmetic, driven without an event loop."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from chronos_kit import FAILED, FINISHED, RUNNING, Harness, job

from butte.frameworks.chronos import core as c
from butte.frameworks.chronos.jobs import JobError, parse_job
from butte.frameworks.chronos.schedule import (
    ScheduleError,
    format_instant,
    parse_duration,
    parse_schedule,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()


# -- schedules ---------------------------------------------------------------------------------


def wall(t: float, zone: str) -> str:
    return datetime.fromtimestamp(t, ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M %Z")


def test_daily_slot_keeps_its_wall_time_across_dst() -> None:
    s = parse_schedule("R/2026-03-07T09:00:00/P1D", "America/New_York", T0)
    walls = [wall(s.slot(k), "America/New_York") for k in range(3)]
    assert walls == ["2026-03-07 09:00 EST", "2026-03-08 09:00 EDT", "2026-03-09 09:00 EDT"]
    assert s.slot(1) - s.slot(0) == 23 * 3600


def test_hourly_slots_are_elapsed_time_across_dst() -> None:
    s = parse_schedule("R/2026-11-01T00:30:00-04:00/PT1H", "America/New_York", T0)
    gaps = {s.slot(k + 1) - s.slot(k) for k in range(5)}
    assert gaps == {3600}
    # 01:30 happens twice that night: both are slots.
    assert [wall(s.slot(k), "America/New_York")[11:] for k in (1, 2)] == [
        "01:30 EDT",
        "01:30 EST",
    ]


def test_nonexistent_wall_time_runs_after_the_gap_and_month_end_clamps() -> None:
    s = parse_schedule("R/2026-03-07T02:30:00/P1D", "America/New_York", T0)
    assert wall(s.slot(1), "America/New_York") == "2026-03-08 03:30 EDT"
    m = parse_schedule("R/2026-01-31T10:00:00Z/P1M", "", T0)
    assert [format_instant(m.slot(k), UTC)[:10] for k in range(3)] == [
        "2026-01-31",
        "2026-02-28",
        "2026-03-31",
    ]


def test_a_time_zone_keeps_the_start_s_wall_clock_as_chronos_does() -> None:
    # withZoneRetainFields: the zone takes precedence over the offset written in the start.
    for zone in ("America/Los_Angeles", "PST"):
        s = parse_schedule("R/2030-10-10T18:32:00Z/P1D", zone, T0)
        assert wall(s.slot(0), "America/Los_Angeles") == "2030-10-10 18:32 PDT"
    fixed = parse_schedule("R/2030-01-01T09:00:00+05:00/P1D", "GMT-08:00", T0)
    assert format_instant(fixed.slot(0), UTC) == "2030-01-01T17:00:00.000Z"
    # Without a zone the start is an instant.
    plain = parse_schedule("R/2030-01-01T09:00:00+05:00/P1D", "", T0)
    assert format_instant(plain.slot(0), UTC) == "2030-01-01T04:00:00.000Z"
    with pytest.raises(ScheduleError, match="unknown time zone"):
        parse_schedule("R//P1D", "GMT+19", T0)


def test_first_index_at_or_after_jumps_over_years() -> None:
    s = parse_schedule("R/2020-01-01T00:00:00Z/PT1M", "", T0)
    k = s.first_index_at_or_after(T0)
    assert s.slot(k) == T0 and s.slot(k - 1) < T0
    d = parse_schedule("R/2020-01-31T00:00:00/P1M", "Europe/Berlin", T0)
    k = d.first_index_at_or_after(T0)
    assert d.slot(k) >= T0 > d.slot(k - 1)


@pytest.mark.parametrize(
    "text,zone,why",
    [
        ("R/2026-01-01T00:00:00Z", "", "R[n]/<start>/<period>"),
        ("X/2026-01-01T00:00:00Z/PT1M", "", "must be R or R<n>"),
        ("R99999999999999999999/2026-01-01T00:00:00Z/PT1M", "", "over the limit"),
        ("R/not-a-date/PT1M", "", "not an ISO8601 date-time"),
        ("R/2026-01-01T00:00:00Z/1M", "", "not an ISO8601 duration"),
        ("R/2026-01-01T00:00:00Z/PT0S", "", "shorter than"),
        ("R/2026-01-01T00:00:00Z/P1000Y", "", "longer than 100 years"),
        ("R/2026-01-01T00:00:00Z/PT1M", "Mars/Olympus", "unknown time zone"),
        ("R/2026-01-01T00:00:00Z/PT1M", "../../etc/passwd", "unknown time zone"),
    ],
)
def test_bad_schedules_are_refused_with_the_reason(text: str, zone: str, why: str) -> None:
    with pytest.raises(ScheduleError, match=why.replace("[", r"\[").replace("]", r"\]")):
        parse_schedule(text, zone, T0)


def test_durations() -> None:
    assert parse_duration("P1Y2M3W4DT5H6M7S").months == 14
    assert parse_duration("PT1.5S").seconds == 1.5
    for bad in ("P", "PT", "P1DT", "1D", "PT-1S"):
        with pytest.raises(ScheduleError):
            parse_duration(bad)


# -- jobs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body,why",
    [
        ({"name": "a b", "command": "x", "schedule": "R//PT1M"}, "name must be"),
        ({"name": "a", "command": "", "schedule": "R//PT1M"}, "command must not be empty"),
        ({"name": "a", "command": "x"}, "schedule is required"),
        ({"name": "a", "command": "x", "schedule": "R//PT1M", "cpus": "one"}, "cpus must be"),
        ({"name": "a", "command": "x", "schedule": "R//PT1M", "mem": -1}, "mem must be"),
        ({"name": "a", "command": "x", "schedule": "R//PT1M", "retries": -1}, "retries"),
        ({"name": "a", "command": "x", "schedule": "R//PT1M", "frobnicate": 1}, "frobnicate"),
        ({"name": "a", "command": "x", "schedule": "R//PT1M", "async": True}, "async"),
        (
            {"name": "a", "command": "x", "schedule": "R//PT1M", "container": {"type": "DOCKER"}},
            "container is not supported",
        ),
        (
            {"name": "a", "command": "x", "schedule": "R//PT1M", "constraints": [["a", "X", "b"]]},
            "constraint",
        ),
        ({"name": "a", "command": "x", "schedule": "R//PT1M", "epsilon": "soon"}, "epsilon"),
        ({"name": "a", "command": "x", "schedule": "R/2026-01-01/PT1M/x"}, "schedule"),
    ],
)
def test_invalid_jobs_are_refused(body: dict, why: str) -> None:
    with pytest.raises(JobError, match=why):
        parse_job(body, T0, dependency=False)


def test_unknown_parents_and_cycles_are_refused_and_state_is_kept() -> None:
    h = Harness(T0)
    h.put(job(T0, "a", schedule="R//PT1H"))
    h.put(job(T0, "b", parents=["a"]))
    with pytest.raises(JobError, match="does not exist"):
        h.core.put_job(job(T0, "c", parents=["nope"]), T0)
    h.put(job(T0, "c", parents=["b"]))
    with pytest.raises(JobError, match="cycle"):
        h.core.put_job(job(T0, "b", parents=["c"]), T0)
    assert h.core.jobs["b"].spec.parents == ["a"]
    assert set(h.core.jobs) == {"a", "b", "c"}


def _launched(core: c.ChronosCore) -> list[dict]:
    return [t for e in core.take_effects() if isinstance(e, c.Launch) for t in e.tasks]


def test_task_info_is_built_as_chronos_builds_it() -> None:
    core = c.ChronosCore()
    core.on_subscribed(T0)
    spec = job(
        T0,
        "j",
        schedule="R/2026-03-02T00:00:00Z/P1D",
        maxCompletionTime=3,
        cpus="0.5",
        mem=0,
        environmentVariables=[
            {"name": "CHRONOS_JOB_NAME", "value": "override"},
            {"name": "MINE", "value": "1"},
        ],
        fetch=[{"uri": "http://127.0.0.1:1/x.tgz", "output_file": "y.tgz"}],
    )
    core.put_job(spec, T0)
    core.take_effects()
    core.run_now("j", T0 + 5, "--out /tmp/x 'a b';")
    core.on_offers([c.Offer("o1", "agent0", "host0", "*", 4, 4096, 1e5, {}, T0 + 5)], T0 + 5)
    (task,) = _launched(core)
    # TaskUtils.getTaskId: the arguments after the name, less ';' (and '/', which a Mesos id
    # may not hold); MesosTaskBuilder appends them to the command as given, less ';'.
    assert task["task_id"]["value"] == f"ct:{round((T0 + 5) * 1000)}:0:j:--out tmpx 'a b'"
    assert task["command"]["value"] == "true --out /tmp/x 'a b'"
    assert task["max_completion_time"] == {"nanoseconds": 3 * 10**9}  # seconds, as Chronos
    env = {v["name"]: v["value"] for v in task["command"]["environment"]["variables"]}
    tid = task["task_id"]["value"]
    assert env["CHRONOS_JOB_NAME"] == "j" and env["MINE"] == "1"
    assert env["MESOS_TASK_ID"] == env["mesos_task_id"] == tid
    assert env["HOST"] == "host0" and env["CHRONOS_JOB_RUN_ATTEMPT"] == "0"
    assert env["CHRONOS_JOB_RUN_TIME"] == str(round((T0 + 5) * 1000))
    assert env["CHRONOS_RESOURCE_CPU"] == "0.5" and env["CHRONOS_RESOURCE_MEM"] == "128.0"
    assert task["command"]["uris"] == [
        {"value": "http://127.0.0.1:1/x.tgz", "output_file": "y.tgz"}
    ]
    assert core.job_json("j", T0)["maxCompletionTime"] == 3


def test_a_disabled_job_is_not_run_by_hand_and_a_used_up_one_shows_disabled() -> None:
    # Chronos queues a manual run of a disabled job and drops it at the next offer
    # (TaskManager.getTaskHelper, JobExpired): dropped here at once, and counted.
    h = Harness(T0)
    h.put(job(T0, "off", schedule="R//PT1H", disabled=True))
    assert h.core.run_now("off", T0) is None
    h.offers()
    assert h.launches == [] and not h.core.runs
    assert h.core.counters["manual_runs_dropped"] == 1
    h.put(job(T0, "once", schedule="R1/2026-03-01T12:00:30Z/PT1H"))
    assert h.core.job_json("once", T0)["disabled"] is False
    h.tick(T0 + 31)
    assert h.core.job_json("once", T0 + 31)["disabled"] is True


def test_deleting_a_parent_keeps_its_children_as_chronos_does() -> None:
    h = Harness(T0)
    h.put(job(T0, "a", schedule="R/2026-03-01T12:30:00Z/PT1H"))
    h.put(job(T0, "f", schedule="R//P1D"))
    h.put(job(T0, "b", parents=["a"]))
    h.put(job(T0, "c", parents=["b"]))
    h.put(job(T0, "e", parents=["a", "f"]))
    # A dependent job's parents take its place.
    h.core.delete_job("b", T0)
    assert h.core.jobs["c"].spec.parents == ["a"]
    # A child whose only parent was scheduled takes over its schedule from the next slot; one
    # with other parents keeps those.
    h.core.delete_job("a", T0)
    assert set(h.core.jobs) == {"c", "e", "f"}
    assert h.core.jobs["e"].spec.parents == ["f"]
    c = h.core.job_json("c", T0)
    assert "parents" not in c and c["schedule"] == "R/2026-03-01T12:30:00.000Z/PT1H"
    assert c["nextRun"] == "2026-03-01T12:30:00.000Z"
    h.tick(T0 + 1800)
    assert [r.job for r in h.core.runs.values()] == ["c"]


def test_a_job_can_change_between_scheduled_and_dependent() -> None:
    h = Harness(T0)
    h.put(job(T0, "p", schedule="R//PT1H"))
    h.put(job(T0, "j", schedule="R/2026-03-01T12:10:00Z/PT1M"))
    h.put(job(T0, "j", parents=["p"]))
    listed = h.core.job_json("j", T0)
    assert listed["parents"] == ["p"] and "schedule" not in listed
    h.tick(T0 + 3000)  # no slot of the old schedule runs
    assert not [r for r in h.core.runs.values() if r.job == "j"]
    h.put(job(T0 + 3000, "j", schedule="R1/2026-03-01T13:00:00Z/PT1M"))
    assert h.core.job_json("j", T0 + 3000)["nextRun"] == "2026-03-01T13:00:00.000Z"


# -- running -------------------------------------------------------------------------------------


def test_runs_on_time_and_retries_then_counts() -> None:
    h = Harness(T0)
    # Two slots two minutes apart: the second does not come due while the retry is queued.
    h.put(job(T0, "a", schedule="R2/2026-03-01T12:01:00Z/PT2M", retries=1))
    h.offers()
    assert h.launches == [] and not h.core.held  # a minute early: declined, suppressed
    h.tick(T0 + 58)
    h.offers()
    assert h.launches == [] and h.core.held  # held for the slot due in 2 s
    h.tick(T0 + 60)
    (tid,) = h.active_tasks()
    assert tid == f"ct:{int((T0 + 60) * 1000)}:0:a:"  # Chronos' id: no arguments after ':'
    h.status(tid, RUNNING)
    h.status(tid, FAILED)
    h.offers()
    assert h.active_tasks() == []  # a retry waits --failure_retry (60 s), as in Chronos
    assert h.core.next_wakeup(h.now) == h.now + 1.0
    h.tick(T0 + 60 + 59)
    h.offers()
    assert h.active_tasks() == []
    h.tick(T0 + 60 + 60)
    h.offers()
    (retry,) = h.active_tasks()
    # Named as Chronos names a retry: due when it may go, attempt 1.
    assert retry == f"ct:{int((T0 + 120) * 1000)}:1:a:"
    h.status(retry, FINISHED)
    jobstate = h.core.jobs["a"]
    assert (jobstate.success_count, jobstate.error_count) == (1, 0)
    h.tick(T0 + 180)
    h.offers()
    (second,) = h.active_tasks()
    h.status(second, FAILED)
    h.tick(T0 + 240)
    h.offers()
    h.status(h.active_tasks()[0], FAILED)
    assert (jobstate.success_count, jobstate.error_count) == (1, 1)
    h.tick(T0 + 600)
    assert jobstate.remaining == 0 and not h.core.runs


def test_a_job_failing_since_its_last_success_is_not_retried_and_a_kill_is_no_failure() -> None:
    # Chronos' handleFailedTask retries only a job with no error since its last success;
    # handleKilledTask counts nothing.
    h = Harness(T0)
    h.put(job(T0, "a", schedule="R/2026-03-01T12:01:00Z/PT10M", retries=1, epsilon="PT5M"))
    jobstate = h.core.jobs["a"]
    h.tick(T0 + 60)
    h.offers()
    h.status(h.active_tasks()[0], FAILED)
    h.tick(T0 + 120)
    h.offers()
    (retry,) = h.active_tasks()
    assert retry.split(":")[2] == "1"
    h.status(retry, FAILED)  # out of retries: a failure
    assert (jobstate.error_count, jobstate.success_count) == (1, 0)
    h.tick(T0 + 660)
    h.offers()
    h.status(h.active_tasks()[0], FAILED)
    assert jobstate.error_count == 2 and not h.core.runs  # failed before: no retry
    h.tick(T0 + 1260)
    h.offers()
    h.status(h.active_tasks()[0], "TASK_KILLED")
    assert (jobstate.error_count, jobstate.success_count) == (2, 0) and not h.core.runs


def test_clock_step_back_never_repeats_and_jump_forward_counts_skips() -> None:
    h = Harness(T0)
    h.put(job(T0, "a", schedule="R/2026-03-01T12:00:00Z/PT1M", epsilon="PT30S"))
    h.offers()
    h.status(h.active_tasks()[0], FINISHED)
    h.tick(T0 - 3600)  # the clock steps back an hour
    h.offers()
    h.tick(T0 + 5)
    h.offers()
    assert len(h.launches) == 1
    h.tick(T0 + 86400 + 10)  # a day later: 1439 slots missed beyond epsilon, one on time
    h.offers()
    assert h.core.jobs["a"].skipped_count == 1439
    assert len(h.launches) == 2


def test_slot_waiting_for_offers_beyond_epsilon_is_skipped_once() -> None:
    h = Harness(T0)
    h.put(job(T0, "a", schedule="R/2026-03-01T12:00:00Z/PT10M", epsilon="PT60S"))
    h.tick(T0 + 61)
    h.offers()
    assert h.launches == [] and h.core.jobs["a"].skipped_count == 1


def test_non_concurrent_job_drops_a_slot_due_while_its_previous_run_goes_on() -> None:
    # MesosJobFramework drops a run taken from the queue while the job runs and is not
    # concurrent: the slot does not wait for the previous run (tests/unit/
    # test_chronos_slot_drops.py has the other cases).
    h = Harness(T0)
    h.put(job(T0, "a", schedule="R/2026-03-01T12:00:00Z/PT1M", epsilon="PT90S"))
    h.offers()
    first = h.active_tasks()[0]
    h.status(first, RUNNING)
    h.tick(T0 + 60)
    h.offers()
    assert len(h.launches) == 1
    h.status(first, FINISHED)
    h.offers()
    assert len(h.launches) == 1 and h.core.jobs["a"].dropped_count == 1
    h.tick(T0 + 120)
    h.offers()
    assert len(h.launches) == 2  # the next slot runs


def test_dependency_runs_once_after_all_parents_succeeded() -> None:
    h = Harness(T0)
    h.put(job(T0, "p1", schedule="R1/2026-03-01T12:00:00Z/PT1H"))
    h.put(job(T0, "p2", schedule="R1/2026-03-01T12:00:00Z/PT1H"))
    h.put(job(T0, "child", parents=["p1", "p2"]))
    h.offers()
    p1, p2 = sorted(h.active_tasks())
    h.status(p1, FINISHED)
    h.offers()
    assert not any("child" in t for t in h.active_tasks())
    h.status(p2, FINISHED)
    h.offers()
    (child,) = [t for t in h.active_tasks() if ":child:" in t]
    assert child == f"ct:{int(T0 * 1000)}:0:child:" and h.core.runs[child].kind == c.DEPENDENCY


def test_launch_saved_but_lost_in_a_crash_is_launched_once_after_restart() -> None:
    h = Harness(T0)
    h.put(job(T0, "a", schedule="R/2026-03-01T12:00:00Z/PT1H"))
    h.core.on_offers([c.Offer("o", "agent0", "h", "*", 8, 8192, 1e5, {}, T0)], T0)
    h.apply(lose_launches=True)  # killed after saving the launch, before the ACCEPT left
    assert h.launches == [] and len(h.runs) == 1
    h.crash_and_restart()
    h.offers()
    assert [t for t, _ in h.launches] == [f"ct:{int(T0 * 1000)}:0:a:"]


def test_a_lost_launch_found_later_than_epsilon_is_skipped_not_launched_late() -> None:
    """A master failover can outlast epsilon: the slot whose ACCEPT was lost, found unknown
    by the reconciliation after the resubscription (offers held for the next slot by
    then), is skipped and counted, as any slot that could not start in time."""
    h = Harness(T0)
    h.put(job(T0, "a", schedule="R/2026-03-01T12:00:00Z/PT10S", epsilon="PT1S"))
    h.core.on_offers([c.Offer("o", "agent0", "h", "*", 8, 8192, 1e5, {}, T0)], T0)
    h.apply(lose_launches=True)  # the ACCEPT never reached a master that kept it
    (tid,) = h.runs
    now = T0 + 8  # resubscribed to the new master 8 s later; the next slot is 2 s away
    core = c.ChronosCore()
    core.load(list(h.jobs.values()), list(h.runs.values()), now)
    core.on_subscribed(now)
    core.on_offers([c.Offer("o2", "agent0", "h", "*", 8, 8192, 1e5, {}, now)], now)
    assert core.held  # held for the slot due in 2 s
    core.take_effects()
    core.on_status(now, tid, "TASK_LOST", "agent0", "REASON_RECONCILIATION")
    assert not [e for e in core.take_effects() if isinstance(e, c.Launch)]
    assert tid not in core.runs and core.jobs["a"].skipped_count == 1


def test_launch_that_reached_the_master_is_reconciled_not_relaunched() -> None:
    h = Harness(T0)
    h.put(job(T0, "a", schedule="R/2026-03-01T12:00:00Z/PT1H"))
    h.offers()
    (tid,) = h.active_tasks()
    h.tasks[tid] = RUNNING  # it started while the scheduler was down
    h.crash_and_restart()
    h.offers()
    assert len(h.launches) == 1
    assert h.core.runs[tid].state == RUNNING
    h.status(tid, FINISHED)
    assert h.core.jobs["a"].success_count == 1


def test_deleted_job_kills_its_task_and_orphans_are_killed() -> None:
    h = Harness(T0)
    h.put(job(T0, "a", schedule="R/2026-03-01T12:00:00Z/PT1H"))
    h.offers()
    (tid,) = h.active_tasks()
    h.core.delete_job("a", T0)
    kills = [e for e in h.core.take_effects() if isinstance(e, c.Kill)]
    assert [k.task_id for k in kills] == [tid]
    h.core.on_status(T0, "ct:1:0:ghost", RUNNING, "agent9")
    assert h.core.take_effects() == [c.Kill("ct:1:0:ghost", "agent9")]


def test_listed_job_can_be_posted_back_without_doubling() -> None:
    h = Harness(T0)
    h.put(job(T0, "a", schedule="R5/2026-03-01T12:00:00Z/PT1M"))
    h.offers()
    listed = h.core.job_json("a", T0)
    assert listed["schedule"] == "R4/2026-03-01T12:01:00.000Z/PT1M"
    h.put(parse_job(listed, T0, dependency=False))
    h.tick(T0 + 60)
    h.offers()
    assert len(h.launches) == 1  # the first is still running (not concurrent)
    # The second slot is dropped (the first runs) and used up one repetition.
    assert len(h.core.runs) == 1 and h.core.jobs["a"].remaining == 3
    assert h.core.jobs["a"].dropped_count == 1


def test_sqlite_store_keeps_the_last_write_of_a_batch_and_survives_reopening(tmp_path) -> None:
    from butte.frameworks.chronos.store import SqliteStore

    core = c.ChronosCore()
    core.on_subscribed(T0)
    core.put_job(job(T0, "a", schedule="R/2026-03-01T12:00:00Z/PT1H"), T0)
    core.on_offers([c.Offer("o", "agent0", "h", "*", 8, 8192, 1e5, {}, T0)], T0)
    store = SqliteStore(tmp_path / "s.sqlite3")
    effects = core.take_effects()
    store.apply([e for e in effects if isinstance(e, c.SaveJob | c.SaveRun)], {"framework_id": "f"})
    store.close()
    meta, jobs, runs = SqliteStore(tmp_path / "s.sqlite3").load()
    assert meta == {"framework_id": "f"}
    assert [r["state"] for r in runs] == [c.LAUNCHING]
    restored = c.ChronosCore()
    restored.load(jobs, runs, T0)
    assert restored.jobs["a"].next_index == core.jobs["a"].next_index == 1
    assert restored.job_json("a", T0) == core.job_json("a", T0)


@pytest.mark.parametrize("epsilon", ["P1DT12H", "P30D", "PT0.5S", "PT1H", "PT2592000S"])
def test_a_listed_job_parses_back_to_the_same_definition(epsilon: str) -> None:
    spec = job(T0, "a", schedule="R5/2026-03-01T12:00:00Z/PT1M", epsilon=epsilon)
    again = parse_job(spec.to_json(), T0, dependency=False)
    assert again == spec


def test_a_start_now_or_within_epsilon_runs_at_once() -> None:
    # Chronos runs a slot late by no more than epsilon: `R1//PT1H` (start: now) runs at
    # once, and so does a start 10 s in the past; one an hour old waits for its next slot.
    h = Harness(T0 + 0.4)
    h.put(job(h.now, "now", schedule="R1//PT1H"))
    h.put(job(h.now, "late", schedule="R/2026-03-01T11:59:50Z/PT1H"))
    h.put(job(h.now, "old", schedule="R/2026-03-01T11:00:00Z/PT2H"))
    h.tick(T0 + 0.5)
    h.offers()
    assert sorted(t.split(":")[3] for t in h.active_tasks()) == ["late", "now"]
    assert h.core.jobs["old"].schedule.slot(h.core.jobs["old"].next_index) == T0 + 3600
