"""The chronos core's launch path: where a slot's lateness comes from (the stage
histograms) and the TaskInfos built for a slot's runs (shared resource lists)."""

from __future__ import annotations

from datetime import UTC, datetime

from chronos_kit import job, offer

from butte.frameworks.chronos import core as c

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()


def test_stage_lags_of_first_attempts_only() -> None:
    core = c.ChronosCore()
    core.on_subscribed(T0)
    core.put_job(job(T0, "a", schedule="R/2026-03-01T12:01:00Z/PT1M", cpus=0.5), T0)
    core.put_job(job(T0, "b", schedule="R1/2026-03-01T12:01:00Z/PT1M", cpus=1.5, retries=1), T0)
    due = T0 + 60
    core.on_offers([offer(due - 2, 1, cpus=4)], due - 2)
    core.tick(due + 0.25)
    launches = [e for e in core.take_effects() if isinstance(e, c.Launch)]
    assert [len(e.tasks) for e in launches] == [2]  # one ACCEPT for both runs of the slot
    assert list(core.placed_lags) == [0.25, 0.25]
    tasks = {t["name"]: t for t in launches[0].tasks}
    cpus = {
        name: next(r["scalar"]["value"] for r in t["resources"] if r["name"] == "cpus")
        for name, t in tasks.items()
    }
    assert cpus == {"ChronosTask:a": 0.5, "ChronosTask:b": 1.5}
    ids = {name: t["task_id"]["value"] for name, t in tasks.items()}
    core.on_status(due + 0.5, ids["ChronosTask:a"], "TASK_STARTING", "agent1")
    core.on_status(due + 0.5, ids["ChronosTask:a"], "TASK_STARTING", "agent1")  # a resend
    core.on_status(due + 0.75, ids["ChronosTask:a"], "TASK_RUNNING", "agent1")
    assert list(core.starting_lags) == [0.5] and list(core.start_lags) == [0.75]
    # b fails and is retried: the retry's stages are not the slot's lateness
    core.on_status(due + 1, ids["ChronosTask:b"], "TASK_FAILED", "agent1")
    core.on_offers([offer(due + 61, 2, cpus=4)], due + 61)  # after --failure_retry (60 s)
    retry = [e for e in core.take_effects() if isinstance(e, c.Launch)]
    retry_id = retry[0].tasks[0]["task_id"]["value"]
    assert retry_id == f"ct:{round((due + 61) * 1000)}:1:b:"
    core.on_status(due + 2, retry_id, "TASK_STARTING", "agent2")
    core.on_status(due + 2, retry_id, "TASK_RUNNING", "agent2")
    assert len(core.placed_lags) == 2 and len(core.starting_lags) == 1
    assert len(core.start_lags) == 1


def test_leftover_offers_are_released_after_the_launch_burst() -> None:
    core = c.ChronosCore()
    core.on_subscribed(T0)
    core.put_job(job(T0, "a", schedule="R/2026-03-01T12:01:00Z/PT1M", cpus=0.5), T0)
    core.take_effects()
    due = T0 + 60
    core.on_offers([offer(due - 2, n, cpus=4) for n in range(3)], due - 2)
    assert not [e for e in core.take_effects() if isinstance(e, c.Decline)]  # held for the slot
    core.tick(due)
    effects = core.take_effects()
    assert [type(e) for e in effects if isinstance(e, c.Launch | c.Decline | c.Suppress)] == [
        c.Launch
    ]  # the two unused offers stay held while the run is launched
    core.tick(due + c.RELEASE_AFTER - 0.5)
    assert not [e for e in core.take_effects() if isinstance(e, c.Decline | c.Suppress)]
    core.tick(due + c.RELEASE_AFTER + 0.1)
    effects = core.take_effects()
    declined = [e for e in effects if isinstance(e, c.Decline)]
    assert len(declined) == 1 and len(declined[0].offer_ids) == 2 and not core.held
    assert any(isinstance(e, c.Suppress) for e in effects)
