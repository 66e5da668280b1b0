"""The chronos core where Chronos (mesos/chronos, scheduler/jobs and scheduler/mesos) decides
otherwise than a plain queue would: a slot that comes due while its job has a run queued, or
runs and is not concurrent, is dropped (TaskManager.enqueue keeps one queued task per job;
MesosJobFramework drops a task of a running job that is not concurrent); a new ``parents``
list forgets every parent's success counted (DependentJobResource replaces all the edges);
a tie between the last success and the last error is a failure (Exporter.getLastState); a
manual run of a disabled job is dropped (TaskManager.getTaskHelper, JobExpired). Driven
without an event loop, as test_chronos_core."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from chronos_kit import FAILED, FINISHED, RUNNING, Harness, job

from butte.frameworks.chronos import core as c

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()
FAR = "R/2030-01-01T00:00:00Z/P1D"  # a schedule that never comes due in these tests
EVERY_MINUTE = "R/2026-03-01T12:01:00Z/PT1M"  # slots at T0 + 60, T0 + 120, ...


def launched(h: Harness, name: str) -> list[str]:
    return [tid for tid, _ in h.launches if tid.split(":")[3] == name]


def due_of(tid: str) -> float:
    return int(tid.split(":")[1]) / 1000


# -- 1. a slot of a job with a run queued, or running -------------------------------------------


def test_a_slot_due_while_a_manual_run_is_queued_is_dropped_not_queued_beside_it() -> None:
    # TaskManager.enqueue: a job already in the queue is not queued again; the slot's run is
    # not launched later, and not counted as a skip or a failure (Chronos counts it nowhere).
    h = Harness(T0)
    h.put(job(T0, "a", schedule=EVERY_MINUTE, epsilon="PT5M"))
    h.tick(T0 + 30)
    assert h.core.run_now("a", h.now) is not None  # queued; no offer comes
    h.tick(T0 + 60)
    h.tick(T0 + 90)
    h.offers()
    assert [due_of(t) for t in launched(h, "a")] == [T0 + 30]  # the manual run only
    state = h.core.jobs["a"]
    assert (state.dropped_count, state.skipped_count, state.error_count) == (1, 0, 0)
    assert h.core.counters["slot_runs_dropped"] == 1
    entry = state.history[-1]
    assert (entry["state"], entry["kind"], entry["due"]) == ("DROPPED", c.SLOT, T0 + 60)
    assert entry["task_id"] == f"ct:{int((T0 + 60) * 1000)}:0:a:"
    assert "queued" in entry["message"]
    # The next slot, with nothing queued, runs.
    (manual,) = h.active_tasks()
    h.status(manual, FINISHED)
    h.tick(T0 + 120)
    h.offers()
    assert due_of(launched(h, "a")[-1]) == T0 + 120


def test_a_slot_due_while_a_non_concurrent_run_goes_on_is_dropped_a_concurrent_one_runs() -> None:
    # MesosJobFramework.generateLaunchableTasks drops the task it takes from the queue while
    # the job runs and is not concurrent; a concurrent job's slot starts beside the run.
    for concurrent in (False, True):
        h = Harness(T0)
        h.put(job(T0, "a", schedule=EVERY_MINUTE, epsilon="PT5M", concurrent=concurrent))
        h.tick(T0 + 60)
        h.offers()
        (first,) = h.active_tasks()
        h.status(first, RUNNING)
        h.tick(T0 + 120)
        h.offers()
        h.status(first, FINISHED)  # the run ends well within the slot's epsilon
        h.tick(T0 + 150)
        h.offers()
        state = h.core.jobs["a"]
        dues = [due_of(t) for t in launched(h, "a")]
        if concurrent:
            assert dues == [T0 + 60, T0 + 120] and state.dropped_count == 0
        else:
            assert dues == [T0 + 60] and state.dropped_count == 1
            assert state.history[-2]["state"] == "DROPPED"  # then the first run's end
            assert "going" in state.history[-2]["message"]
        assert state.skipped_count == 0 and state.success_count == 1


def test_a_slot_due_while_a_retry_waits_out_failure_retry_is_queued_and_the_retry_dropped() -> None:
    # A retry waits in a timer, outside Chronos' queue, until --failure_retry has passed: the
    # slot is queued then, and the retry, entering the queue after it, is dropped.
    h = Harness(T0)
    h.put(job(T0, "a", schedule="R/2026-03-01T12:01:00Z/PT45S", epsilon="PT5M", retries=1))
    h.tick(T0 + 60)
    h.offers()
    (first,) = h.active_tasks()
    h.status(first, FAILED)  # the retry may go at T0 + 120
    h.tick(T0 + 105)  # the next slot: the retry still waits
    h.tick(T0 + 120)
    h.offers()
    assert [t.split(":")[1:3] for t in launched(h, "a")] == [
        [str(int((T0 + 60) * 1000)), "0"],
        [str(int((T0 + 105) * 1000)), "0"],
    ]
    assert h.core.jobs["a"].dropped_count == 0 and h.core.counters["retries_dropped"] == 1


def test_a_slot_late_past_epsilon_is_skipped_before_the_next_slot_comes_due() -> None:
    # The clock jumps past one slot's epsilon into the next slot's: the late one is skipped
    # and counted first, so it does not keep the one on time out of the queue.
    h = Harness(T0)
    h.put(job(T0, "a", schedule=EVERY_MINUTE, epsilon="PT50S"))
    h.tick(T0 + 60)  # queued; no offers
    h.tick(T0 + 130)  # 70 s late: skipped; the next slot is 10 s late
    h.offers()
    assert [due_of(t) for t in launched(h, "a")] == [T0 + 120]
    state = h.core.jobs["a"]
    assert (state.skipped_count, state.dropped_count) == (1, 0)


def test_dropped_slots_are_counted_across_a_restart_and_shown_by_job_stat_fields() -> None:
    h = Harness(T0)
    h.put(job(T0, "a", schedule=EVERY_MINUTE, epsilon="PT5M"))
    h.tick(T0 + 60)
    h.offers()
    h.status(h.active_tasks()[0], RUNNING)
    h.tick(T0 + 120)
    h.tick(T0 + 180)
    assert h.core.jobs["a"].dropped_count == 2
    h.crash_and_restart()
    assert h.core.jobs["a"].dropped_count == 2
    assert h.core.jobs["a"].remaining is None and h.core.jobs["a"].last_slot == T0 + 180


# -- 2. a new parents list ----------------------------------------------------------------------


def finish(h: Harness, name: str) -> None:
    assert h.core.run_now(name, h.now) is not None
    h.offers()
    (tid,) = [t for t in h.active_tasks() if t.split(":")[3] == name]
    h.status(tid, FINISHED)


def three_parents(h: Harness) -> None:
    for name in ("a", "b", "c"):
        h.put(job(T0, name, schedule=FAR))
    h.put(job(T0, "child", parents=["a", "b"]))
    finish(h, "a")
    finish(h, "a")
    assert h.core.jobs["child"].parents_done == {"a": 2}


def test_a_changed_parents_list_forgets_every_parents_counted_successes() -> None:
    # DependentJobResource: parents other than the job's own -> all its edges removed and
    # the new ones added with invocation count 0, those of the parents that stay included.
    h = Harness(T0)
    three_parents(h)
    h.put(job(T0, "child", parents=["a", "c"]))
    assert h.core.jobs["child"].parents_done == {}
    finish(h, "c")
    assert launched(h, "child") == []  # a's two successes were forgotten
    finish(h, "a")
    h.offers()
    assert len(launched(h, "child")) == 1


def test_the_same_parents_keep_their_counts_another_order_forgets_them() -> None:
    # Chronos compares the lists of parent names: the same list keeps the edges and their
    # counts (a changed command, say); the same names in another order are another list.
    h = Harness(T0)
    three_parents(h)
    h.put(job(T0, "child", parents=["a", "b"], command="echo changed"))
    assert h.core.jobs["child"].parents_done == {"a": 2}
    h.put(job(T0, "child", parents=["b", "a"]))
    assert h.core.jobs["child"].parents_done == {}


def test_deleting_one_parent_keeps_the_counts_of_the_others() -> None:
    # JobScheduler.deregisterJob removes the deleted job's vertex and edges only.
    h = Harness(T0)
    for name in ("a", "b", "c"):
        h.put(job(T0, name, schedule=FAR))
    h.put(job(T0, "child", parents=["a", "b", "c"]))
    finish(h, "a")
    h.core.delete_job("c", h.now)
    h.apply()
    assert h.core.jobs["child"].spec.parents == ["a", "b"]
    assert h.core.jobs["child"].parents_done == {"a": 1}


# -- 3. the last state -------------------------------------------------------------------------


def test_a_success_and_an_error_in_one_millisecond_are_a_failure_as_chronos_shows_it() -> None:
    # Exporter.getLastState: success only if lastSuccess is after lastError, compared as the
    # job's fields keep them (milliseconds); graph/csv and jobs/summary show this state.
    h = Harness(T0)
    h.put(job(T0, "a", schedule=FAR, retries=0))
    assert h.core.last_status("a") == "fresh"
    assert h.core.run_now("a", h.now) is not None
    h.offers()
    h.status(h.active_tasks()[0], FAILED)
    assert h.core.last_status("a") == "failure"
    h.core.mark_success("a", h.now + 0.0004)  # shown as the same millisecond
    listed = h.core.job_json("a", h.now)
    assert listed["lastSuccess"] == listed["lastError"] != ""
    assert h.core.last_status("a") == "failure"
    h.core.mark_success("a", h.now + 0.001)
    assert h.core.last_status("a") == "success"


# -- 4. a manual run of a disabled job ----------------------------------------------------------


def test_a_manual_run_of_a_disabled_job_is_dropped_and_counted_not_refused() -> None:
    # JobManagementResource.trigger queues it (204); TaskManager.getTaskHelper drops it at
    # the next offer (JobExpired). Enabled again, the job runs by hand.
    h = Harness(T0)
    h.put(job(T0, "a", schedule=FAR, disabled=True))
    assert h.core.run_now("a", h.now) is None
    h.offers()
    assert launched(h, "a") == [] and not h.core.runs
    assert h.core.counters["manual_runs_dropped"] == 1
    h.put(replace(h.core.jobs["a"].spec, disabled=False))
    assert h.core.run_now("a", h.now) is not None
    h.offers()
    assert len(launched(h, "a")) == 1
