"""The offer helpers the bundled frameworks share (`butte.frameworks.offers`), and the
frameworks' offer readers built on them: which resources count, the allocation role, the
attributes that placement constraints see."""

from __future__ import annotations

from typing import Any

from butte.frameworks.chronos.core import parse_offer
from butte.frameworks.mpi.job import offer_view as mpi_offer_view
from butte.frameworks.offers import attributes_of, offer_role, offer_view, plain_resources


def _scalar(name: str, value: float, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "SCALAR", "scalar": {"value": value}, **extra}


RESERVED = [{"type": "STATIC", "role": "analytics"}]
OFFER: dict[str, Any] = {
    "id": {"value": "o1"},
    "agent_id": {"value": "a1"},
    "framework_id": {"value": "f1"},
    "hostname": "node7",
    "allocation_info": {"role": "analytics"},
    "resources": [
        _scalar("cpus", 4),
        _scalar("mem", 1024),
        _scalar("cpus", 2, reservations=RESERVED),
        _scalar("cpus", 8, revocable={}),
        _scalar("disk", 100, disk={"persistence": {"id": "v1"}, "volume": {}}),
        _scalar("mem", 512, shared={}),
        _scalar("gpus", 1, provider_id={"value": "p1"}),
        {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": 31000, "end": 31001}]}},
    ],
    "attributes": [
        {"name": "rack", "type": "TEXT", "text": {"value": "r1"}},
        {"name": "gen", "type": "SCALAR", "scalar": {"value": 3.0}},
        {"name": "speed", "type": "SCALAR", "scalar": {"value": 2.5}},
        {"name": "slots", "type": "RANGES", "ranges": {"range": [{"begin": 1, "end": 4}]}},
        {"name": "zones", "type": "SET", "set": {"item": ["a", "b"]}},
    ],
}


def test_plain_resources_leave_out_volumes_revocable_shared_and_provider_resources() -> None:
    kept = plain_resources(OFFER)
    assert [(r["name"], r["scalar"]["value"]) for r in kept if r["type"] == "SCALAR"] == [
        ("cpus", 4),
        ("mem", 1024),
        ("cpus", 2),  # reserved: kept, callers that want unreserved filter further
    ]
    assert [r["name"] for r in kept if r["type"] == "RANGES"] == ["ports"]
    assert plain_resources({}) == []


def test_offer_role_is_the_allocation_role_else_the_default() -> None:
    assert offer_role(OFFER) == "analytics"
    assert offer_role({}, "web") == "web"
    assert offer_role({}) == "*"


def test_attributes_of_every_kind() -> None:
    assert attributes_of(OFFER) == {
        "rack": "r1",
        "gen": "3",
        "speed": "2.5",
        "slots": "[1-4]",
        "zones": "a,b",
    }
    assert attributes_of({"attributes": None}) == {}


def test_offer_view_counts_unreserved_plain_resources() -> None:
    view = offer_view(OFFER)
    assert (view.cpus, view.mem, view.ports, view.role) == (4, 1024, ((31000, 31001),), "analytics")


def test_chronos_offer_counts_unreserved_plain_scalars_and_sees_every_attribute() -> None:
    offer = parse_offer(OFFER, now=10.0)
    assert (offer.cpus, offer.mem, offer.disk, offer.role) == (4, 1024, 0, "analytics")
    assert offer.attributes["zones"] == "a,b"
    assert offer.attributes["hostname"] == "node7"


def test_mpi_offer_counts_plain_scalars_reserved_ones_too() -> None:
    resources = mpi_offer_view(OFFER).resources
    assert resources.scalar("cpus") == 6
    assert resources.scalar("mem") == 1024
    assert resources.scalar("gpus") == 0
