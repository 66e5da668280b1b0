"""The chronos core where Chronos drops a run instead of launching it: a dependent run, a
retry or a manual run of a job disabled (or deleted) since it was queued, a dependent run of
a job that has a run queued or running already, and the successes of a parent that ran again
before the other parents did (Chronos' edge invocation counts). Driven without an event loop,
as test_chronos_core."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from chronos_kit import FAILED, FINISHED, RUNNING, Harness, job

from butte.frameworks.chronos import core as c

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()
FAR = "R/2030-01-01T00:00:00Z/P1D"  # a schedule that never comes due in these tests


def runs_of(h: Harness, name: str) -> list[c.Run]:
    return [r for r in h.core.runs.values() if r.job == name]


def launched(h: Harness, name: str) -> list[str]:
    return [tid for tid, _ in h.launches if tid.split(":")[3] == name]


def finish_manual_run(h: Harness, name: str) -> None:
    """A manual run of ``name`` launched and finished (its success counts for its children)."""
    assert h.core.run_now(name, h.now) is not None
    h.offers()
    (tid,) = [t for t in h.active_tasks() if t.split(":")[3] == name]
    h.status(tid, FINISHED)


def disable(h: Harness, name: str, disabled: bool = True) -> None:
    h.put(replace(h.core.jobs[name].spec, disabled=disabled))


# -- a job disabled while a run of it waits ----------------------------------------------------


def test_a_queued_dependent_run_of_a_job_disabled_since_is_dropped_at_the_next_offer() -> None:
    # TaskManager.getTaskHelper: a task whose job is disabled when it is taken from the queue
    # is dropped (JobExpired), not launched; no failure, no skip is counted.
    h = Harness(T0)
    h.put(job(T0, "parent", schedule=FAR))
    h.put(job(T0, "child", parents=["parent"]))
    finish_manual_run(h, "parent")
    assert [r.kind for r in runs_of(h, "child")] == [c.DEPENDENCY]  # queued, no offer yet
    disable(h, "child")
    h.offers()
    assert launched(h, "child") == [] and runs_of(h, "child") == []
    assert h.core.counters["disabled_runs_dropped"] == 1
    stats = h.core.jobs["child"]
    assert (stats.error_count, stats.skipped_count, stats.success_count) == (0, 0, 0)
    assert stats.history[-1]["state"] == "DROPPED"
    assert h.core.job_state("child") == "idle"


def test_a_retry_of_a_job_disabled_while_it_waits_is_dropped_when_it_would_go() -> None:
    h = Harness(T0)
    h.put(job(T0, "j", schedule=FAR, retries=2))
    assert h.core.run_now("j", T0) is not None
    h.offers()
    (tid,) = h.active_tasks()
    h.status(tid, FAILED)
    assert [r.attempt for r in runs_of(h, "j")] == [1]  # the retry waits out --failure_retry
    disable(h, "j")
    h.tick(T0 + h.core.failure_retry_delay + 1)
    h.offers()
    assert launched(h, "j") == [tid]  # the first attempt only
    assert runs_of(h, "j") == [] and h.core.counters["disabled_runs_dropped"] == 1
    assert h.core.jobs["j"].error_count == 0  # dropped, not a failure


def test_a_job_enabled_again_before_the_offer_keeps_its_queued_run() -> None:
    # Chronos looks at the job when it takes the run from the queue, not when it is disabled.
    h = Harness(T0)
    h.put(job(T0, "parent", schedule=FAR))
    h.put(job(T0, "child", parents=["parent"]))
    finish_manual_run(h, "parent")
    disable(h, "child")
    disable(h, "child", disabled=False)
    h.offers()
    assert len(launched(h, "child")) == 1
    assert h.core.counters["disabled_runs_dropped"] == 0


def test_queued_runs_and_waiting_retries_of_a_deleted_job_never_launch() -> None:
    # Chronos drops them when they come out of the queue (the job is gone); here they go with
    # the job. A regression guard: this was so before the disabled case above was handled.
    h = Harness(T0)
    h.put(job(T0, "parent", schedule=FAR))
    h.put(job(T0, "child", parents=["parent"], retries=1))
    h.put(job(T0, "flaky", schedule=FAR, retries=1))
    h.core.run_now("flaky", T0)
    h.offers()
    (flaky,) = h.active_tasks()
    h.status(flaky, FAILED)
    finish_manual_run(h, "parent")
    assert len(runs_of(h, "child")) == len(runs_of(h, "flaky")) == 1
    for name in ("child", "flaky"):
        h.core.delete_job(name, h.now)
        h.apply()
    h.tick(T0 + h.core.failure_retry_delay + 1)
    h.offers()
    assert launched(h, "child") == [] and launched(h, "flaky") == [flaky]
    assert h.core.runs == {}


# -- a parent that runs again ------------------------------------------------------------------


def test_a_dependent_run_is_dropped_while_the_child_has_one_queued() -> None:
    # TaskManager.enqueue keeps one queued task per job: the parent's second success while
    # the child's first dependent run still waits for an offer queues nothing more.
    h = Harness(T0)
    h.put(job(T0, "parent", schedule=FAR, concurrent=True))
    h.put(job(T0, "child", parents=["parent"], concurrent=True))
    assert h.core.run_now("parent", T0) is not None
    h.offers()
    assert h.core.run_now("parent", T0) is not None  # beside the first: it is concurrent
    h.offers()
    first, second = h.active_tasks()
    h.status(first, FINISHED)
    h.status(second, FINISHED)
    assert len(runs_of(h, "child")) == 1
    assert h.core.counters["dependent_runs_dropped"] == 1
    h.offers()
    h.offers()
    assert len(launched(h, "child")) == 1


def test_a_dependent_run_of_a_running_child_is_dropped_unless_it_is_concurrent() -> None:
    # MesosJobFramework drops a queued task whose job runs and is not concurrent; decided
    # when the parent succeeds, as for manual runs.
    h = Harness(T0)
    h.put(job(T0, "parent", schedule=FAR))
    h.put(job(T0, "one", parents=["parent"]))
    h.put(job(T0, "many", parents=["parent"], concurrent=True))
    finish_manual_run(h, "parent")
    h.offers()
    for tid in h.active_tasks():
        h.status(tid, RUNNING)
    finish_manual_run(h, "parent")
    assert [r.state for r in runs_of(h, "one")] == [RUNNING]
    assert sorted(r.state for r in runs_of(h, "many")) == [c.QUEUED, RUNNING]
    assert h.core.counters["dependent_runs_dropped"] == 1


def test_a_parent_that_succeeds_twice_counts_twice_as_chronos_edge_counts_do() -> None:
    # JobGraph.getExecutableChildren: the child runs when the count of the edge from the
    # parent that just succeeded becomes the least of its parents' edges. a, a, b, b: the
    # child runs at each b.
    h = Harness(T0)
    for name in ("a", "b"):
        h.put(job(T0, name, schedule=FAR))
    h.put(job(T0, "child", parents=["a", "b"]))
    for parent, runs_after in (("a", 0), ("a", 0), ("b", 1), ("b", 2), ("a", 2), ("b", 3)):
        h.core.mark_success(parent, h.now)
        h.apply()
        h.offers()  # the child's run launches and ends before the next parent success
        for tid in [t for t in h.active_tasks() if ":child:" in t]:
            h.status(tid, FINISHED)
        assert len(launched(h, "child")) == runs_after, (parent, runs_after)
        h.now += 1
    assert h.core.jobs["child"].parents_done == {}


def test_marking_a_job_successful_forgets_the_successes_of_its_parents() -> None:
    # markJobSuccessAndFireOffDependencies resets the job's own edge counts.
    h = Harness(T0)
    for name in ("a", "b"):
        h.put(job(T0, name, schedule=FAR))
    h.put(job(T0, "child", parents=["a", "b"]))
    h.core.mark_success("a", T0)
    h.core.mark_success("child", T0)
    h.core.mark_success("b", T0)
    h.apply()
    h.offers()
    assert launched(h, "child") == [] and h.core.jobs["child"].parents_done == {"b": 1}


def test_parents_done_written_by_an_older_butte_still_counts() -> None:
    h = Harness(T0)
    for name in ("a", "b"):
        h.put(job(T0, name, schedule=FAR))
    h.put(job(T0, "child", parents=["a", "b"]))
    record = dict(h.jobs["child"], parents_done=["a"])  # the older form: parents done
    core = c.ChronosCore()
    core.load([h.jobs["a"], h.jobs["b"], record], [], T0)
    assert core.jobs["child"].parents_done == {"a": 1}
    core.mark_success("b", T0)
    assert [r.kind for r in core.runs.values()] == [c.DEPENDENCY]


# -- a retry waiting while a parent runs again --------------------------------------------------


def failed_child_with_retry(h: Harness, concurrent: bool = False) -> str:
    """parent -> child (1 retry): the child's dependent run failed, its retry waits out
    --failure_retry; returns the failed task's id."""
    h.put(job(T0, "parent", schedule=FAR))
    h.put(job(T0, "child", parents=["parent"], retries=1, concurrent=concurrent))
    finish_manual_run(h, "parent")
    h.offers()
    (tid,) = [t for t in h.active_tasks() if ":child:" in t]
    h.status(tid, FAILED)
    assert [r.attempt for r in runs_of(h, "child")] == [1]
    return tid


def test_a_retry_is_dropped_when_a_new_dependent_run_was_queued_before_it() -> None:
    # The parent ran again while the retry waited: its dependent run entered Chronos' queue
    # first (the waiting retry is in a timer, not in the queue), and the retry, entering
    # later, is dropped by TaskManager.enqueue.
    h = Harness(T0)
    failed_child_with_retry(h)
    h.now = T0 + 10
    finish_manual_run(h, "parent")
    assert sorted(r.attempt for r in runs_of(h, "child")) == [0, 1]
    h.tick(T0 + h.core.failure_retry_delay + 1)
    h.offers()
    h.offers()
    assert [tid.split(":")[2] for tid in launched(h, "child")] == ["0", "0"]
    assert runs_of(h, "child")[0].kind == c.DEPENDENCY and runs_of(h, "child")[0].attempt == 0
    assert h.core.counters["retries_dropped"] == 1


def test_a_retry_of_a_running_child_is_dropped_unless_it_is_concurrent() -> None:
    # The new dependent run launched and runs when the retry is due: MesosJobFramework drops
    # the retry of a job that runs and is not concurrent; a concurrent one runs beside.
    for concurrent, attempts in ((False, ["0", "0"]), (True, ["0", "0", "1"])):
        h = Harness(T0)
        failed_child_with_retry(h, concurrent)
        h.now = T0 + 10
        finish_manual_run(h, "parent")
        h.offers()
        (running,) = [t for t in h.active_tasks() if ":child:" in t]
        h.status(running, RUNNING)
        h.tick(T0 + h.core.failure_retry_delay + 1)
        h.offers()
        h.status(running, FINISHED)
        h.offers()  # dropped, the retry does not wait for the running run to end
        assert [t.split(":")[2] for t in launched(h, "child")] == attempts, concurrent
        assert h.core.counters["retries_dropped"] == (0 if concurrent else 1)
