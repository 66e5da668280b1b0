"""Which resources an offer operation consumes, as Mesos' ``getConsumedResources`` tells them,
and so which GET_OPERATIONS entries a principal restricted by ``view_roles`` sees
(`butte.master.view_acls`; tests/integration/test_gaps_operations_view.py runs it over HTTP)."""

from __future__ import annotations

import json
from typing import Any

from butte.master.acls import parse_acls
from butte.master.view_acls import Viewer, consumed_resources

ACLS = parse_acls(
    json.dumps(
        {
            "view_roles": [
                {"principals": {"values": ["alice"]}, "roles": {"values": ["a", "a/x"]}},
                {"principals": {"type": "ANY"}, "roles": {"type": "NONE"}},
            ]
        }
    )
)


def _cpus(*roles: str, allocated: str | None = None) -> dict[str, Any]:
    res: dict[str, Any] = {"name": "cpus", "type": "SCALAR", "scalar": {"value": 1}}
    if roles:
        res["reservations"] = [{"type": "DYNAMIC", "role": r} for r in roles]
    if allocated is not None:
        res["allocation_info"] = {"role": allocated}
    return res


def _op(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {"info": {"type": kind, kind.lower(): payload}}


def test_a_reserve_consumes_its_resources_without_the_reservation_it_adds():
    [refined] = consumed_resources(_op("RESERVE", {"resources": [_cpus("a", "a/x")]})["info"])
    assert refined["reservations"] == [{"type": "DYNAMIC", "role": "a"}]
    [plain] = consumed_resources({"type": "RESERVE", "reserve": {"resources": [_cpus("b")]}})
    assert plain["reservations"] == []
    # The pre-refinement form names its one reservation by ``role``.
    old = {"name": "mem", "role": "b", "reservation": {"principal": "p"}}
    [unreserved] = consumed_resources({"type": "RESERVE", "reserve": {"resources": [old]}})
    assert unreserved == {"name": "mem", "role": "*"}


def test_the_other_operations_consume_what_they_name_and_unknown_ones_nothing_known():
    volume, addition = _cpus("a"), _cpus("b")
    grow = {"type": "GROW_VOLUME", "grow_volume": {"volume": volume, "addition": addition}}
    assert consumed_resources(grow) == [volume, addition]
    assert consumed_resources({"type": "DESTROY", "destroy": {"volumes": [volume]}}) == [volume]
    for unknown in (
        {"type": "LAUNCH", "launch": {"task_infos": []}},
        {"type": "RESERVE"},
        {"type": "RESERVE", "reserve": {"resources": "cpus:1"}},
        {"type": "SHRINK_VOLUME", "shrink_volume": {"subtract": {"value": 1}}},
        None,
    ):
        assert consumed_resources(unknown) is None


def test_a_principal_sees_the_operations_on_roles_it_may_view_only():
    alice = Viewer(ACLS, "alice", lambda _fid: None, roles=True)
    nobody = Viewer(ACLS, None, lambda _fid: None, roles=True)
    mine = _op("RESERVE", {"resources": [_cpus("a", allocated="a")]})
    refined = _op("RESERVE", {"resources": [_cpus("a", "a/x", allocated="a/x")]})
    theirs = _op("RESERVE", {"resources": [_cpus("b", allocated="b")]})
    unreserve = _op("UNRESERVE", {"resources": [_cpus("b")]})
    # An operator's RESERVE of unreserved resources consumes them unreserved: anyone sees it.
    operator = _op("RESERVE", {"resources": [_cpus("b")]})
    broken = {"info": {"type": "CREATE", "create": {}}}
    doc = {"operations": [mine, refined, theirs, unreserve, operator, broken]}
    assert alice.get_operations(doc) == {"operations": [mine, refined, operator]}
    assert alice.answer("GET_OPERATIONS", doc) == {"operations": [mine, refined, operator]}
    assert nobody.get_operations(doc) == {"operations": [operator]}
    assert len(doc["operations"]) == 6  # the original is unchanged
