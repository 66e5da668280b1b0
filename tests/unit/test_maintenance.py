"""Maintenance in the master core: schedule validation, machine modes, inverse offers and
their answers, DOWN machines, persistence through the registry (docs/maintenance.md)."""

from __future__ import annotations

from typing import Any

import pytest
from master_kit import AGENT_RESOURCES, Harness, command_task, launch_body

from butte.coord.interface import RegistryState, RemoveAgent, UpdateMaintenance
from butte.core import internal
from butte.core.resources import parse_resources
from butte.master.effects import RegistryWrite
from butte.master.maintenance import parse_schedule

START = 1_900_000_000 * 10**9
HOUR = 3600 * 10**9


def window(*hosts: str, start: int = START, duration: int | None = HOUR) -> dict[str, Any]:
    unavailability: dict[str, Any] = {"start": {"nanoseconds": start}}
    if duration is not None:
        unavailability["duration"] = {"nanoseconds": duration}
    return {"machine_ids": [{"hostname": h} for h in hosts], "unavailability": unavailability}


def register(h: Harness, hostname: str, conn: str, **info: Any) -> str | None:
    """Registers an agent at ``hostname``; its id, or None if the master refused it."""
    agent_info = internal.AgentInfo(
        hostname=hostname,
        port=5051,
        resources=parse_resources(AGENT_RESOURCES).to_json(),
        **info,
    )
    msg = internal.RegisterAgent(agent_info=agent_info, version="0.1.0")
    h.pump(h.master.agent_message(conn, msg, "127.0.0.1", h.now()))
    reply = h.agent_inbox[conn][-1]
    if isinstance(reply, internal.ShutdownAgent):
        return None
    assert isinstance(reply, internal.AgentRegistered), reply
    return reply.agent_id.value


def change(h: Harness, action: str, payload: Any) -> tuple[str | None, list[Any]]:
    error, effects = h.master.maintenance_call(action, payload, h.now())
    h.pump(effects)
    return error, effects


def machines(*hosts: str) -> list[dict[str, str]]:
    return [{"hostname": host} for host in hosts]


def run_task(h: Harness, fid: str, stream: str, task_id: str, hostname: str) -> None:
    h.allocate()
    offers = h.offers(stream)
    offer = next(o for o in offers if o["hostname"] == hostname)
    for other in offers:
        if other is not offer:
            h.call(fid, stream, {"type": "DECLINE", "decline": {"offer_ids": [other["id"]]}})
    assert h.call(fid, stream, launch_body(offer, command_task(task_id, offer))).status == 202


@pytest.fixture
def h() -> Harness:
    return Harness()


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "reason"),
    [
        ([], "must be a JSON object"),
        ({"windows": {}}, "'windows' must be a JSON array"),
        ({"windows": [{"machine_ids": [], "unavailability": {}}]}, "is empty"),
        ({"windows": [window("a"), window("b", "A")]}, "appears more than once"),
        ({"windows": [{"machine_ids": [{}], "unavailability": {}}]}, "are empty"),
        ({"windows": [{"machine_ids": [{"ip": "300.1.1.1"}]}]}, "Invalid IP"),
        ({"windows": [{"machine_ids": machines("a")}]}, "needs an 'unavailability'"),
        ({"windows": [window("a", duration=-1)]}, "negative"),
        ({"windows": [window("a", start=2**64)]}, "out of range"),
        (
            {"windows": [{"machine_ids": machines("a"), "unavailability": {"start": 1}}]},
            "'start' must be an object",
        ),
        (
            {
                "windows": [
                    {
                        "machine_ids": machines("a"),
                        "unavailability": {"start": {"nanoseconds": 1.5}},
                    }
                ]
            },
            "must be an integer",
        ),
        ({"windows": [], "extra": 1}, "Unknown schedule field"),
    ],
)
def test_malformed_schedules_are_refused_and_change_nothing(
    h: Harness, schedule: Any, reason: str
) -> None:
    error, effects = change(h, "schedule", {"windows": [window("keep")]})
    assert error is None
    assert effects == [RegistryWrite(UpdateMaintenance(h.master.maintenance.to_registry()))]
    before = h.master.maintenance.to_registry()
    error, effects = change(h, "schedule", schedule)
    assert error is not None and reason in error, error
    assert effects == []
    assert h.master.maintenance.to_registry() == before


def test_modes_follow_schedule_down_and_up(h: Harness) -> None:
    assert change(h, "schedule", {"windows": [window("a", "b")]})[0] is None
    m = h.master.maintenance
    assert m.mode(("a", "")) == "DRAINING" and m.mode(("c", "")) == "UP"
    # Only DRAINING machines can go down; only DOWN machines can come up.
    assert "not in DRAINING" in (change(h, "down", machines("c"))[0] or "")
    assert "not in DOWN" in (change(h, "up", machines("a"))[0] or "")
    assert "is empty" in (change(h, "down", [])[0] or "")
    assert change(h, "down", machines("a"))[0] is None
    assert m.mode(("a", "")) == "DOWN"
    # A DOWN machine cannot leave the schedule.
    assert "cannot be removed" in (change(h, "schedule", {"windows": [window("b")]})[0] or "")
    assert change(h, "up", machines("a"))[0] is None
    assert m.mode(("a", "")) == "UP" and m.mode(("b", "")) == "DRAINING"
    assert [w.machines for w in m.windows] == [(("b", ""),)]
    # An empty schedule clears it.
    assert change(h, "schedule", {})[0] is None
    assert m.empty


# -- offers and inverse offers -------------------------------------------------------------------


def test_draining_agent_offers_carry_unavailability_and_users_get_inverse_offers(
    h: Harness,
) -> None:
    register(h, "a", "ca")
    register(h, "b", "cb")
    fid, stream = h.subscribe()
    run_task(h, fid, stream, "t1", "a")
    assert change(h, "schedule", {"windows": [window("a")]})[0] is None
    h.clock.advance(10)
    h.allocate()
    offers = h.offers(stream)
    by_host = {o["hostname"]: o for o in offers}
    assert by_host["a"]["unavailability"] == {
        "start": {"nanoseconds": START},
        "duration": {"nanoseconds": HOUR},
    }
    assert "unavailability" not in by_host["b"]
    inverse = h.take(stream, "INVERSE_OFFERS")
    assert len(inverse) == 1
    (io,) = inverse[0]["inverse_offers"]["inverse_offers"]
    assert io["agent_id"] == by_host["a"]["agent_id"]
    assert io["unavailability"]["start"] == {"nanoseconds": START}
    # No second inverse offer while one is outstanding.
    h.allocate()
    assert h.take(stream, "INVERSE_OFFERS") == []
    status = h.master.maintenance_status(h.now())
    assert status["draining_machines"][0]["statuses"][0]["status"] == "UNKNOWN"

    # DECLINE with a filter: recorded, and no new inverse offer until it expires.
    body = {
        "type": "DECLINE_INVERSE_OFFERS",
        "decline_inverse_offers": {
            "inverse_offer_ids": [io["id"]],
            "filters": {"refuse_seconds": 30},
        },
    }
    assert h.call(fid, stream, body).status == 202
    status = h.master.maintenance_status(h.now())
    (draining,) = status["draining_machines"]
    assert draining["id"] == {"hostname": "a"}
    assert [(s["status"], s["framework_id"]["value"]) for s in draining["statuses"]] == [
        ("DECLINE", fid)
    ]
    h.clock.advance(10)
    h.allocate()
    assert h.take(stream, "INVERSE_OFFERS") == []
    h.clock.advance(25)
    h.allocate()
    (again,) = h.take(stream, "INVERSE_OFFERS")
    io2 = again["inverse_offers"]["inverse_offers"][0]
    body = {
        "type": "ACCEPT_INVERSE_OFFERS",
        "accept_inverse_offers": {"inverse_offer_ids": [io2["id"]]},
    }
    assert h.call(fid, stream, body).status == 202
    statuses = h.master.maintenance_status(h.now())["draining_machines"][0]["statuses"]
    assert statuses[0]["status"] == "ACCEPT"


def test_malformed_inverse_offer_answers_are_refused(h: Harness) -> None:
    fid, stream = h.subscribe()
    for body in (
        {"type": "ACCEPT_INVERSE_OFFERS", "accept_inverse_offers": {"inverse_offer_ids": "x"}},
        {"type": "DECLINE_INVERSE_OFFERS", "decline_inverse_offers": {"inverse_offer_ids": [1]}},
        {
            "type": "DECLINE_INVERSE_OFFERS",
            "decline_inverse_offers": {"inverse_offer_ids": [], "filters": {"refuse_seconds": "x"}},
        },
    ):
        result = h.call(fid, stream, body)
        assert result.status == 400, (body, result)


def test_schedule_change_rescinds_inverse_offers_and_stale_offers(h: Harness) -> None:
    register(h, "a", "ca")
    fid, stream = h.subscribe()
    run_task(h, fid, stream, "t1", "a")
    change(h, "schedule", {"windows": [window("a")]})
    h.clock.advance(10)  # past the launch's refusal filter
    h.allocate()
    (io,) = h.take(stream, "INVERSE_OFFERS")[0]["inverse_offers"]["inverse_offers"]
    offers_before = h.offers(stream)
    assert offers_before and "unavailability" in offers_before[0]
    # A new unavailability: the inverse offer and the offer with the old one are withdrawn.
    change(h, "schedule", {"windows": [window("a", start=START + HOUR)]})
    rescinds = h.take(stream, "RESCIND_INVERSE_OFFER")
    assert [r["rescind_inverse_offer"]["inverse_offer_id"] for r in rescinds] == [io["id"]]
    assert [r["rescind"]["offer_id"] for r in h.take(stream, "RESCIND")] == [offers_before[0]["id"]]
    h.allocate()
    (io2,) = h.take(stream, "INVERSE_OFFERS")[0]["inverse_offers"]["inverse_offers"]
    assert io2["unavailability"]["start"] == {"nanoseconds": START + HOUR}
    (offer,) = h.offers(stream)
    assert offer["unavailability"]["start"] == {"nanoseconds": START + HOUR}
    # Leaving the schedule withdraws it too, and offers no longer carry an unavailability.
    change(h, "schedule", {"windows": []})
    assert len(h.take(stream, "RESCIND_INVERSE_OFFER")) == 1
    assert len(h.take(stream, "RESCIND")) == 1
    h.allocate()
    (offer,) = h.offers(stream)
    assert "unavailability" not in offer
    assert h.take(stream, "INVERSE_OFFERS") == []


def test_machine_down_removes_its_agents_and_refuses_them_until_up(h: Harness) -> None:
    aid = register(h, "a", "ca")
    register(h, "b", "cb")
    fid, stream = h.subscribe()
    run_task(h, fid, stream, "t1", "a")
    change(h, "schedule", {"windows": [window("a")]})
    h.allocate()
    assert h.take(stream, "INVERSE_OFFERS")
    h.take(stream)
    error, effects = change(h, "down", machines("a"))
    assert error is None
    writes = [e.operation for e in effects if isinstance(e, RegistryWrite)]
    assert isinstance(writes[0], UpdateMaintenance) and RemoveAgent(str(aid)) in writes
    assert aid not in h.master.agents
    assert h.agent_messages("ca", internal.ShutdownAgent)
    assert "ca" in h.closed_connections
    (update,) = h.updates(stream)
    assert update["state"] == "TASK_LOST"  # the framework is not partition-aware
    assert update["reason"] == "REASON_AGENT_REMOVED"  # Mesos' reason with TASK_LOST
    assert h.take(stream, "RESCIND_INVERSE_OFFER")
    # An agent from a DOWN machine is refused; others are not.
    assert register(h, "A", "ca2") is None
    assert "DOWN" in h.agent_messages("ca2", internal.ShutdownAgent)[0].message
    assert register(h, "c", "cc") is not None
    status = h.master.maintenance_status(h.now())
    assert status == {"draining_machines": [], "down_machines": [{"hostname": "a"}]}
    # Nothing is offered from it meanwhile; once UP it registers again.
    h.allocate()
    assert all(o["hostname"] != "a" for o in h.offers(stream))
    assert change(h, "up", machines("a"))[0] is None
    assert register(h, "a", "ca3") is not None


def test_tasks_of_a_machine_taken_down_are_lost(h: Harness) -> None:
    """Mesos removes the agents of a DOWN machine with removeSlave: TASK_LOST,
    REASON_AGENT_REMOVED, for partition-aware frameworks too."""
    register(h, "a", "ca")
    fid, stream = h.subscribe(capabilities=[{"type": "PARTITION_AWARE"}])
    run_task(h, fid, stream, "t1", "a")
    change(h, "schedule", {"windows": [window("a")]})
    change(h, "down", machines("a"))
    (update,) = h.updates(stream)
    assert (update["state"], update["reason"]) == ("TASK_LOST", "REASON_AGENT_REMOVED")
    assert update["message"] == "Agent a removed: Operator initiated 'Machine DOWN'"


def test_machine_ids_match_hostname_and_ip(h: Harness) -> None:
    register(h, "host-x", "cx")  # its ip is the peer's, 127.0.0.1
    by_ip = {"machine_ids": [{"ip": "127.0.0.1"}], "unavailability": {"start": {"nanoseconds": 1}}}
    change(h, "schedule", {"windows": [by_ip]})
    assert h.master.machine_modes() == {next(iter(h.master.agents)): "DRAINING"}
    both_wrong_ip = {
        "machine_ids": [{"hostname": "HOST-X", "ip": "10.0.0.1"}],
        "unavailability": {"start": {"nanoseconds": 1}},
    }
    change(h, "schedule", {"windows": [both_wrong_ip]})
    assert h.master.machine_modes() == {}


def test_maintenance_survives_registry_recovery(h: Harness) -> None:
    registry = RegistryState()
    change(h, "schedule", {"windows": [window("a", "b"), window("c", duration=None)]})
    change(h, "down", machines("b"))
    # What the shell made durable, replayed into a new leader's registry.
    registry.apply(UpdateMaintenance(h.master.maintenance.to_registry()))
    fresh = Harness()
    fresh.pump(fresh.master.recover_registry(registry, fresh.now()))
    m = fresh.master.maintenance
    assert m.schedule_json() == h.master.maintenance.schedule_json()
    assert m.mode(("b", "")) == "DOWN" and m.mode(("a", "")) == "DRAINING"
    assert register(fresh, "b", "cb") is None
    assert parse_schedule(m.schedule_json()) == m.windows


def test_framework_disconnect_drops_its_inverse_offers(h: Harness) -> None:
    aid = register(h, "a", "ca")
    fid, stream = h.subscribe(failover_timeout=100)
    run_task(h, fid, stream, "t1", "a")
    change(h, "schedule", {"windows": [window("a")]})
    h.allocate()
    assert h.master.maintenance.inverse_offers
    h.pump(h.master.framework_disconnected(stream, h.now()))
    h.allocate()
    assert not h.master.maintenance.inverse_offers
    assert aid in h.master.agents


def test_sqlite_registry_keeps_maintenance_and_prunes(tmp_path) -> None:
    from butte.coord.interface import MarkGone, MarkUnreachable, PruneAgents
    from butte.coord.standalone import MemoryRegistry, SqliteRegistry

    state = {"schedule": {"windows": [window("a")]}, "down_machines": [{"hostname": "a"}]}
    ops = [
        MarkUnreachable("u1", 1.0),
        MarkUnreachable("u2", 2.0),
        MarkGone("g1", 3.0),
        UpdateMaintenance(state),
        PruneAgents(unreachable=("u1",), gone=("g1",)),
    ]
    registry = SqliteRegistry(str(tmp_path))
    registry.open()
    registry.apply(ops)
    registry.close()
    again = SqliteRegistry(str(tmp_path))
    again.open()
    try:
        loaded = again.load()
    finally:
        again.close()
    assert loaded.maintenance == state
    assert loaded.unreachable == {"u2": 2.0} and loaded.gone == {}
    memory = MemoryRegistry()
    memory.apply(ops)
    assert memory.load().maintenance == state and memory.load().unreachable == {"u2": 2.0}


HOSTS = ["a", "b", "c", "A", "d"]


def _op():
    from hypothesis import strategies as st

    machines_st = st.lists(
        st.one_of(
            st.sampled_from(HOSTS).map(lambda host: {"hostname": host}),
            st.just({"ip": "127.0.0.1"}),
            st.just({}),
        ),
        max_size=3,
    )
    window_st = st.builds(
        lambda ms, start, duration: {
            "machine_ids": ms,
            "unavailability": {
                "start": {"nanoseconds": start},
                "duration": {"nanoseconds": duration},
            },
        },
        machines_st,
        st.integers(min_value=0, max_value=3),
        st.integers(min_value=-1, max_value=2),
    )
    return st.one_of(
        st.tuples(
            st.just("schedule"),
            st.builds(lambda ws: {"windows": ws}, st.lists(window_st, max_size=3)),
        ),
        st.tuples(st.sampled_from(["down", "up"]), machines_st),
        st.tuples(st.just("allocate"), st.none()),
    )


def test_random_maintenance_changes_keep_state_consistent() -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=60, deadline=None)
    @given(st.lists(_op(), max_size=12))
    def run(ops) -> None:
        h = Harness()
        register(h, "a", "ca")
        fid, stream = h.subscribe()
        run_task(h, fid, stream, "t1", "a")
        for action, payload in ops:
            if action == "allocate":
                h.clock.advance(6)
                h.allocate()
                continue
            before = h.master.maintenance.to_registry()
            error, effects = change(h, action, payload)
            m = h.master.maintenance
            if error is not None:
                assert effects == [] and m.to_registry() == before
                continue
            writes = [e.operation for e in effects if isinstance(e, RegistryWrite)]
            assert writes[0] == UpdateMaintenance(m.to_registry())
            scheduled = {k for w in m.windows for k in w.machines}
            assert m.down <= scheduled  # DOWN machines stay in the schedule
            # No agent runs on a DOWN machine.
            assert all(h.master.machine_modes().get(a) != "DOWN" for a in h.master.agents)

    run()
