"""The chronos core where it follows Chronos' TaskManager, TaskUtils and MesosJobFramework:
manual runs of a job already queued or running, Chronos' task ids, and runs whose task was
lost to a partition and came back (driven without an event loop, as test_chronos_core)."""

from __future__ import annotations

from datetime import UTC, datetime

from chronos_kit import FAILED, FINISHED, LOST, RUNNING, Harness, job
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from butte.frameworks.chronos import core as c

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()
KILLED = "TASK_KILLED"


def ms(t: float) -> int:
    return round(t * 1000)


def runs_of(h: Harness, name: str) -> list[c.Run]:
    return [r for r in h.core.runs.values() if r.job == name]


# -- manual runs (PUT /v1/scheduler/job/NAME) --------------------------------------------------


def test_a_manual_run_of_a_queued_job_is_dropped_as_chronos_enqueue_drops_it() -> None:
    # TaskManager.enqueue keeps one queued task per job: a second trigger before an offer
    # came, or one while a slot waits for resources, queues nothing (204 all the same).
    h = Harness(T0)
    h.put(job(T0, "j", schedule="R/2030-01-01T00:00:00Z/P1D", concurrent=True))
    first = h.core.run_now("j", T0)
    assert first is not None
    assert h.core.run_now("j", T0 + 1) is None
    assert h.core.run_now("j", T0 + 2, "--day 1") is None  # ?arguments= too
    assert [r.task_id for r in runs_of(h, "j")] == [first.task_id]
    assert h.core.counters["manual_runs_dropped"] == 2
    h.offers()
    assert h.active_tasks() == [first.task_id]


def test_a_manual_run_of_a_running_job_is_dropped_unless_it_is_concurrent() -> None:
    # MesosJobFramework.generateLaunchableTasks drops the head of the queue whose job is
    # running and not concurrent; a concurrent job's run starts beside the running one.
    h = Harness(T0)
    h.put(job(T0, "one", schedule="R/2030-01-01T00:00:00Z/P1D"))
    h.put(job(T0, "many", schedule="R/2030-01-01T00:00:00Z/P1D", concurrent=True))
    for name in ("one", "many"):
        h.core.run_now(name, T0)
    h.offers()
    for tid in h.active_tasks():
        h.status(tid, RUNNING)
    h.now = T0 + 5
    assert h.core.run_now("one", h.now) is None
    assert h.core.run_now("one", h.now, "x") is None
    beside = h.core.run_now("many", h.now, "x")
    assert beside is not None
    h.offers()
    assert sorted(t.split(":")[3] for t in h.active_tasks()) == ["many", "many", "one"]
    # Once the run ended, a manual run goes again.
    (one,) = [t for t in h.active_tasks() if ":one:" in t]
    h.status(one, FINISHED)
    assert h.core.run_now("one", h.now) is not None


def test_a_retry_waiting_out_failure_retry_does_not_drop_a_manual_run() -> None:
    # Chronos' retry sits in a timer for --failure_retry, not in the queue.
    h = Harness(T0)
    h.put(job(T0, "j", schedule="R/2030-01-01T00:00:00Z/P1D", retries=1))
    h.core.run_now("j", T0)
    h.offers()
    (tid,) = h.active_tasks()
    h.status(tid, FAILED)
    assert [r.attempt for r in runs_of(h, "j")] == [1]  # the retry, waiting
    assert h.core.run_now("j", T0 + 1) is not None


# -- Chronos' task ids -------------------------------------------------------------------------


def test_task_ids_are_chronos_ids_with_the_arguments_after_the_name() -> None:
    h = Harness(T0)
    h.put(job(T0, "own", schedule="R1/2026-03-01T12:00:00Z/PT1H", arguments=["-v", "a;b"]))
    h.put(job(T0, "plain", schedule="R1/2026-03-01T12:00:00Z/PT1H"))
    h.offers()
    # TaskUtils.getTaskId: ct:<due ms>:<attempt>:<name>:<arguments joined, less ';'>
    assert sorted(h.active_tasks()) == [f"ct:{ms(T0)}:0:own:-v ab", f"ct:{ms(T0)}:0:plain:"]
    h.now = T0 + 10
    h.status(f"ct:{ms(T0)}:0:plain:", FINISHED)
    manual = h.core.run_now("plain", h.now, "--from 2026-01-01 --to 2026-02-01")
    assert manual is not None
    assert manual.task_id == f"ct:{ms(T0 + 10)}:0:plain:--from 2026-01-01 --to 2026-02-01"
    # Two runs in one millisecond would share an id: the later one moves on by 1 ms.
    h.put(job(h.now, "c", schedule="R/2030-01-01T00:00:00Z/P1D", concurrent=True))
    a = h.core.run_now("c", h.now)
    h.offers()  # launched, so the next manual run of the concurrent job is not dropped
    b = h.core.run_now("c", h.now)
    assert a is not None and b is not None
    assert (a.task_id, b.task_id) == (f"ct:{ms(h.now)}:0:c:", f"ct:{ms(h.now) + 1}:0:c:")


def test_a_task_id_is_one_mesos_accepts_whatever_the_arguments() -> None:
    from butte.core.ids import validate_id

    name = "n" * 200
    tid = c.task_id_for(name, T0, 0, "/etc/passwd \\x\t" + "y" * 300)
    assert validate_id(tid, "task id") is None and len(tid.encode()) == 255
    assert tid.startswith(f"ct:{ms(T0)}:0:{name}:etcpasswd x")
    assert len(c.task_id_for("j", T0, 3, "é" * 200).encode()) <= 255


def test_a_job_s_own_arguments_are_appended_for_the_shell_as_chronos_appends_them() -> None:
    core = c.ChronosCore()
    core.on_subscribed(T0)
    spec = job(T0, "j", schedule="R1/2026-03-01T12:00:00Z/PT1H", arguments=["--name", '"a b"'])
    core.put_job(spec, T0)
    core.on_offers([c.Offer("o1", "agent0", "host0", "*", 4, 4096, 1e5, {}, T0)], T0)
    (task,) = [t for e in core.take_effects() if isinstance(e, c.Launch) for t in e.tasks]
    assert task["command"]["value"] == 'true --name "a b"'  # the shell sees two words


# -- lost tasks (agent partition) ----------------------------------------------------------


def lost_run(retries: int, concurrent: bool = False) -> tuple[Harness, str]:
    """A running slot of job "j" (and a dependent job "child") whose task was just lost."""
    h = Harness(T0)
    h.put(
        job(T0, "j", schedule="R1/2026-03-01T12:00:00Z/PT1H", retries=retries,
            concurrent=concurrent)
    )  # fmt: skip
    h.put(job(T0, "child", parents=["j"]))
    h.offers()
    (tid,) = h.active_tasks()
    h.status(tid, RUNNING)
    h.now = T0 + 100
    h.status(tid, LOST, "REASON_AGENT_REMOVED")
    return h, tid


def counts(h: Harness) -> tuple[int, int]:
    j = h.core.jobs["j"]
    return j.success_count, j.error_count


def test_a_lost_task_without_retries_fails_then_its_success_after_the_partition_counts() -> None:
    h, tid = lost_run(retries=0)
    assert counts(h) == (0, 1) and h.core.last_status("j") == "failure"  # as Chronos: at once
    assert h.core.job_state("j") == "idle" and tid in h.core.lost
    # The agent comes back: the task had finished meanwhile.
    h.now = T0 + 200
    h.status(tid, FINISHED, "REASON_SLAVE_REREGISTERED")
    j = h.core.jobs["j"]
    assert counts(h) == (1, 0) and j.last_error is None and j.errors_since_success == 0
    assert h.core.last_status("j") == "success" and not h.core.lost
    # Its child runs once.
    h.offers()
    assert [t for t in h.active_tasks() if ":child:" in t]
    assert h.core.counters["lost_runs_succeeded"] == 1
    assert [e["state"] for e in j.history] == ["TASK_LOST", "TASK_FINISHED"]


def test_a_lost_task_whose_retry_waits_comes_back_finished_and_the_retry_is_dropped() -> None:
    h, tid = lost_run(retries=2)
    (retry,) = runs_of(h, "j")
    assert retry.attempt == 1 and retry.chain == tid and counts(h) == (0, 0)
    h.status(tid, FINISHED, "REASON_SLAVE_REREGISTERED")
    assert runs_of(h, "j") == [] and counts(h) == (1, 0)
    h.tick(T0 + 200)
    h.offers()
    assert not [t for t in h.active_tasks() if ":j:" in t]  # no second run of the slot


def test_a_lost_task_that_finished_supersedes_its_running_retry() -> None:
    h, tid = lost_run(retries=2)
    h.tick(T0 + 161)
    h.offers()
    (retry,) = [t for t in h.active_tasks() if ":j:" in t]
    assert retry == f"ct:{ms(T0 + 160)}:1:j:"
    h.status(retry, RUNNING)
    h.status(tid, FINISHED, "REASON_SLAVE_REREGISTERED")
    assert retry in h.kills and counts(h) == (1, 0)
    h.status(retry, KILLED)  # killed: neither a failure nor a second success
    h.status(retry, FINISHED)  # a late resend changes nothing either
    assert counts(h) == (1, 0) and not runs_of(h, "j")
    assert h.core.jobs["child"].success_count == 0
    assert len([r for r in h.core.runs.values() if r.job == "child"]) == 1  # one child run


def test_a_lost_task_back_after_its_retry_succeeded_counts_nothing_more() -> None:
    h, tid = lost_run(retries=2)
    h.tick(T0 + 161)
    h.offers()
    (retry,) = [t for t in h.active_tasks() if ":j:" in t]
    h.status(retry, FINISHED)
    assert counts(h) == (1, 0)
    h.status(tid, FINISHED, "REASON_SLAVE_REREGISTERED")
    assert counts(h) == (1, 0) and not h.core.lost
    assert len([r for r in h.core.runs.values() if r.job == "child"]) == 1


def test_a_lost_task_back_after_its_retries_failed_undoes_that_failure() -> None:
    h, tid = lost_run(retries=1)
    h.tick(T0 + 161)
    h.offers()
    (retry,) = [t for t in h.active_tasks() if ":j:" in t]
    h.status(retry, FAILED)
    assert counts(h) == (0, 1)
    h.status(tid, FINISHED, "REASON_SLAVE_REREGISTERED")
    assert counts(h) == (1, 0) and h.core.jobs["j"].last_error is None


def test_a_lost_task_back_running_is_killed_and_its_end_counts_nothing() -> None:
    h, tid = lost_run(retries=2)
    h.status(tid, RUNNING, "REASON_SLAVE_REREGISTERED")
    assert h.kills == [tid] and h.core.counters["lost_runs_killed"] == 1
    h.status(tid, KILLED)
    assert not h.core.lost and counts(h) == (0, 0)
    # The retry (its chain's run of record) still runs.
    h.tick(T0 + 161)
    h.offers()
    (retry,) = [t for t in h.active_tasks() if ":j:" in t]
    h.status(retry, FINISHED)
    assert counts(h) == (1, 0)


def test_a_lost_run_survives_a_restart_and_is_reconciled() -> None:
    h, tid = lost_run(retries=0)
    h.tasks[tid] = FINISHED  # the master learnt it while the scheduler was down
    h.crash_and_restart()  # reconciliation asks about the lost task too
    assert counts(h) == (1, 0) and not h.core.lost and not h.runs.get(tid)


def test_a_lost_run_is_forgotten_after_two_weeks_and_with_its_job() -> None:
    h, tid = lost_run(retries=0)
    h.tick(T0 + 100 + c.LOST_KEPT_SECONDS + 1)
    assert not h.core.lost and tid not in h.runs
    h, tid = lost_run(retries=0)
    h.core.delete_job("j", h.now)
    h.apply()
    assert not h.core.lost and tid not in h.runs


def test_the_graph_state_counts_running_tasks_as_chronos_does() -> None:
    h = Harness(T0)
    h.put(job(T0, "j", schedule="R/2030-01-01T00:00:00Z/P1D", concurrent=True))
    assert h.core.job_state("j") == "idle"
    h.core.run_now("j", T0)
    assert h.core.job_state("j") == "queued"
    h.offers()
    h.core.run_now("j", T0 + 1)
    h.offers()
    assert h.core.job_state("j") == "2 running"


# -- property: a run's chain counts once, whatever its lost attempts report ------------------

chain_steps = st.lists(
    st.tuples(
        st.sampled_from(["active", "active", "return", "wait", "crash"]),
        st.sampled_from([FINISHED, FAILED, LOST, RUNNING]),
        st.integers(0, 5),
    ),
    max_size=14,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(retries=st.integers(0, 2), plan=chain_steps)
def test_a_chain_counts_one_outcome_however_its_lost_tasks_come_back(
    retries: int, plan: list[tuple[str, str, int]]
) -> None:
    """One slot of a job with ``retries``: its running attempt finishes, fails or is lost;
    lost attempts come back finished, failed or running (then killed); the scheduler
    crashes and restarts. Whatever the order, the job counts one success if any attempt
    reported TASK_FINISHED (and then no error), else at most one error, and its child runs
    once per success counted; at no time do two attempts run but while one is lost."""
    h = Harness(T0)
    h.put(job(T0, "j", schedule="R1/2026-03-01T12:00:00Z/PT1H", retries=retries))
    h.put(job(T0, "child", parents=["j"]))
    h.offers()
    finished = False  # some attempt of the slot reported TASK_FINISHED
    lost: list[str] = []  # lost attempts that may still report

    def active() -> list[str]:
        return [t for t in h.active_tasks() if t.split(":")[3] == "j"]

    for action, state, pick in plan:
        if action == "active" and active():
            tid = active()[0]
            h.status(tid, RUNNING)
            h.status(tid, state if state != RUNNING else FAILED)
            finished |= state == FINISHED
            if state == LOST:
                lost.append(tid)
        elif action == "return" and lost:
            tid = lost.pop(pick % len(lost))
            if state == RUNNING:  # back alive: the scheduler kills it
                h.status(tid, RUNNING, "REASON_SLAVE_REREGISTERED")
                assert tid in h.kills
                h.status(tid, KILLED)
            else:
                h.status(tid, state if state != LOST else FAILED, "REASON_SLAVE_REREGISTERED")
                finished |= state == FINISHED
        elif action == "crash":
            h.crash_and_restart()
        else:
            h.tick(h.now + 61)  # past --failure_retry: a retry launches
            h.offers()
        assert len(active()) <= 1, "two attempts of one run going at once"
        h.core.check_invariants()
        success, errors = counts(h)
        assert success <= 1 and errors <= 1 and success + errors <= 1
        if finished:
            assert (success, errors) == (1, 0)
    # Drain: the attempts still going fail, the lost ones never come back.
    for _ in range(retries + 2):
        for tid in active():
            h.status(tid, RUNNING)
            h.status(tid, FAILED)
        h.tick(h.now + 61)
        h.offers()
    success, errors = counts(h)
    assert (success, errors) == ((1, 0) if finished else (0, 1))
    children = [t for t, _ in h.launches if t.split(":")[3] == "child"]
    assert len(children) == success
