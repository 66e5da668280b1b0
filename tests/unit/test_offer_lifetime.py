"""Offer lifetime in the master core: --offer_timeout, offer_constraints, registry pruning
(butte.master.offer_lifetime, butte.master.offer_constraints)."""

from __future__ import annotations

from typing import Any

import pytest
from master_kit import AGENT_RESOURCES, Harness, call

from butte.coord.interface import PruneAgents, RegistryState
from butte.core import internal
from butte.core.resources import Attribute, parse_resources
from butte.master import operator_views
from butte.master.core import MasterOptions
from butte.master.effects import RegistryWrite


def register(h: Harness, hostname: str, conn: str, attributes: str = "", **info: Any) -> str:
    attrs = []
    for item in filter(None, attributes.split(";")):
        name, value = item.split(":")
        attrs.append({"name": name, "type": "TEXT", "text": {"value": value}})
    agent_info = internal.AgentInfo(
        hostname=hostname,
        port=5051,
        resources=parse_resources(AGENT_RESOURCES).to_json(),
        attributes=attrs,
        **info,
    )
    h.pump(
        h.master.agent_message(
            conn, internal.RegisterAgent(agent_info=agent_info, version="0.1.0"), "1.2.3.4", 0.0
        )
    )
    reply = h.agent_inbox[conn][-1]
    assert isinstance(reply, internal.AgentRegistered), reply
    return reply.agent_id.value


def subscribe(h: Harness, constraints: Any, roles: tuple[str, ...] = ("*",)) -> Any:
    info = {"user": "root", "name": "fw", "roles": list(roles)}
    info["capabilities"] = [{"type": "MULTI_ROLE"}]
    body = {
        "type": "SUBSCRIBE",
        "subscribe": {"framework_info": info, "offer_constraints": constraints},
    }
    result, effects = h.master.subscribe(call(body), "s1", h.now())
    h.pump(effects)
    return result


def only(role: str, *constraints: dict[str, Any]) -> dict[str, Any]:
    return {"role_constraints": {role: {"groups": [{"attribute_constraints": list(constraints)}]}}}


def attr(name: str, **predicate: Any) -> dict[str, Any]:
    return {"selector": {"attribute_name": name}, "predicate": predicate}


def pseudo(kind: str, **predicate: Any) -> dict[str, Any]:
    return {"selector": {"pseudoattribute_type": kind}, "predicate": predicate}


# -- offer timeout -------------------------------------------------------------------------------


def test_offers_held_past_offer_timeout_are_rescinded() -> None:
    h = Harness(MasterOptions(offer_timeout=30.0))
    register(h, "a", "ca")
    fid, stream = h.subscribe()
    h.allocate()
    (offer,) = h.offers(stream)
    h.clock.advance(29)
    h.pump(h.master.tick(h.now()))
    assert h.take(stream, "RESCIND") == []
    h.clock.advance(1)
    h.pump(h.master.tick(h.now()))
    (rescind,) = h.take(stream, "RESCIND")
    assert rescind["rescind"]["offer_id"] == offer["id"]
    assert not h.master.offers
    assert h.master.counters["offers_timed_out"] == 1
    # The resources went back without a filter: offered again at once.
    h.allocate()
    assert len(h.offers(stream)) == 1


def test_without_offer_timeout_offers_stay() -> None:
    h = Harness()
    register(h, "a", "ca")
    _, stream = h.subscribe()
    h.allocate()
    assert h.offers(stream)
    h.clock.advance(10**6)
    h.pump(h.master.tick(h.now()))
    assert h.take(stream, "RESCIND") == [] and h.master.offers


# -- offer constraints ---------------------------------------------------------------------------


def test_offer_constraints_select_agents_by_attribute_and_hostname() -> None:
    h = Harness()
    register(h, "a", "ca", "rack:r1")
    register(h, "b", "cb", "rack:r2")
    register(h, "c", "cc")
    result = subscribe(h, only("*", attr("rack", text_matches={"regex": "r[1-9]"})))
    assert result.status == 200
    fid = h.streams["s1"][0]["subscribed"]["framework_id"]["value"]
    (view,) = operator_views.get_frameworks(h.master)["frameworks"]
    assert view["offer_constraints"]["role_constraints"]["*"]["groups"]
    h.allocate()
    assert sorted(o["hostname"] for o in h.offers("s1")) == ["a", "b"]
    # UPDATE_FRAMEWORK with new constraints: offers they exclude are rescinded, the rest of
    # the cluster is considered again.
    info = {"id": {"value": fid}, "user": "root", "name": "fw", "roles": ["*"]}
    info["capabilities"] = [{"type": "MULTI_ROLE"}]
    upd = {
        "type": "UPDATE_FRAMEWORK",
        "update_framework": {
            "framework_info": info,
            "offer_constraints": only("*", pseudo("HOSTNAME", text_not_equals={"value": "a"})),
        },
    }
    assert h.call(fid, "s1", upd).status == 200
    assert len(h.take("s1", "RESCIND")) == 1
    h.allocate()
    assert sorted(o["hostname"] for o in h.offers("s1")) == ["c"]


@pytest.mark.parametrize(
    ("constraint", "offered"),
    [
        (attr("rack", exists={}), ["a", "b"]),
        (attr("rack", not_exists={}), ["c"]),
        (attr("rack", text_equals={"value": "r1"}), ["a"]),
        (attr("rack", text_not_equals={"value": "r1"}), ["b", "c"]),
        (attr("rack", text_matches={"regex": "r"}), []),  # the whole value must match
        (pseudo("ZONE", text_equals={"value": "z1"}), ["b"]),
        (pseudo("REGION", exists={}), ["b"]),
        (attr("size", text_equals={"value": "anything"}), ["a"]),  # SCALAR: satisfies
    ],
)
def test_predicates(constraint: dict[str, Any], offered: list[str]) -> None:
    domain = {"fault_domain": {"region": {"name": "eu"}, "zone": {"name": "z1"}}}
    h = Harness(MasterOptions(domain=domain))  # b is in the master's region: not remote
    register(h, "a", "ca", "rack:r1")
    register(h, "b", "cb", "rack:r2", domain=domain)
    register(h, "c", "cc")
    # "size" is a SCALAR attribute of agent a.
    a = next(x for x in h.master.agents.values() if x.hostname == "a")
    a.attributes = (*a.attributes, Attribute("size", "SCALAR", 3.0))
    assert subscribe(h, only("*", constraint)).status == 200
    h.allocate()
    assert sorted(o["hostname"] for o in h.offers("s1")) == offered


def test_groups_are_alternatives_and_other_roles_are_unconstrained() -> None:
    h = Harness()
    register(h, "a", "ca", "rack:r1")
    register(h, "b", "cb", "rack:r2")
    constraints = {
        "role_constraints": {
            "web": {
                "groups": [
                    {"attribute_constraints": [attr("rack", text_equals={"value": "r1"})]},
                    {"attribute_constraints": [pseudo("HOSTNAME", text_equals={"value": "b"})]},
                ]
            },
            "db": {
                "groups": [{"attribute_constraints": [attr("rack", text_equals={"value": "r9"})]}]
            },
        }
    }
    assert subscribe(h, constraints, roles=("web", "db")).status == 200
    # An allocation the constraints exclude goes back with a filter and the master asks for
    # another run at once (allocation_wanted), which may give the agent to another role.
    h.allocate()
    assert h.master.allocation_wanted
    h.allocate()
    offers = h.offers("s1")
    assert sorted(o["hostname"] for o in offers) == ["a", "b"]
    assert {o["allocation_info"]["role"] for o in offers} == {"web"}


@pytest.mark.parametrize(
    ("constraints", "reason"),
    [
        ({"role_constraints": {"other": {"groups": []}}}, "not a role of the framework"),
        ({"role_constraints": {"*": {"groups": []}}}, "no 'groups'"),
        ({"role_constraints": {"*": {"groups": [{}]}}}, "no 'attribute_constraints'"),
        (only("*", {"selector": {}, "predicate": {"exists": {}}}), "exactly one"),
        (only("*", pseudo("RACK", exists={})), "unknown 'pseudoattribute_type'"),
        (only("*", attr("x", bigger={})), "unknown predicate"),
        (only("*", attr("x", text_equals={})), "needs a string 'value'"),
        (only("*", attr("x", text_matches={"regex": "("})), "invalid RE2 regex"),
        (only("*", attr("x", text_matches={"regex": r"(a)\1"})), "RE2"),
        (only("*", attr("x", text_matches={"regex": "(?=a)"})), "RE2"),
        ({"bogus": 1}, "unknown field"),
    ],
)
def test_invalid_constraints_are_refused_at_subscribe(constraints: Any, reason: str) -> None:
    h = Harness()
    result = subscribe(h, constraints)
    assert result.status == 400 and reason in result.message, result
    assert "Invalid 'offer_constraints'" in result.message
    assert not h.master.frameworks


def test_text_matches_takes_linear_time() -> None:
    """A pattern that makes a backtracking matcher take exponential time does not stall the
    allocation loop: RE2 matches in linear time."""
    import time

    h = Harness()
    register(h, "a", "ca", "rack:" + "a" * 5000 + "c")
    register(h, "b", "cb", "rack:aaab")
    assert subscribe(h, only("*", attr("rack", text_matches={"regex": "(a+)+b"}))).status == 200
    started = time.perf_counter()
    h.allocate()
    h.allocate()
    assert time.perf_counter() - started < 2.0
    assert [o["hostname"] for o in h.offers("s1")] == ["b"]


# -- registry garbage collection -----------------------------------------------------------------


def test_registry_gc_prunes_by_age_then_count() -> None:
    options = MasterOptions(
        registry_gc_interval=60.0, registry_max_agent_age=1000.0, registry_max_agent_count=2
    )
    h = Harness(options)
    t0 = h.now()
    registry = RegistryState(
        unreachable={"u-old": t0, "u1": t0 + 500, "u2": t0 + 600, "u3": t0 + 700},
        gone={"g-old": t0 + 10, "g1": t0 + 900},
    )
    h.clock.advance(1005)
    h.pump(h.master.recover_registry(registry, h.now()))
    h.pump(h.master.tick(h.now()))  # the first tick only schedules the first run
    assert "u-old" in h.master.unreachable_agents
    h.clock.advance(60)
    effects = h.pump(h.master.tick(h.now()))
    (prune,) = [e.operation for e in effects if isinstance(e, RegistryWrite)]
    assert isinstance(prune, PruneAgents)
    # u-old and g-old are older than 1000s; then u1 is the oldest beyond a count of 2.
    assert sorted(prune.unreachable) == ["u-old", "u1"] and prune.gone == ("g-old",)
    assert sorted(h.master.unreachable_agents) == ["u2", "u3"]
    assert sorted(h.master.gone_agents) == ["g1"]
    registry.apply(prune)
    assert sorted(registry.unreachable) == ["u2", "u3"] and sorted(registry.gone) == ["g1"]
    # Nothing more to prune: no write.
    h.clock.advance(60)
    assert not [e for e in h.pump(h.master.tick(h.now())) if isinstance(e, RegistryWrite)]
