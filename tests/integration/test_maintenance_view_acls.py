"""Maintenance read calls under ``--acls`` over real HTTP (docs/maintenance.md): with
``get_maintenance_schedules`` / ``get_maintenance_statuses`` rules, GET_MAINTENANCE_SCHEDULE,
GET_MAINTENANCE_STATUS, ``GET /maintenance/schedule`` and ``/maintenance/status`` answer 200
to every principal, with only the machines it is authorized for (some, none, all)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
from operator_kit import JSON

from butte.core.auth import basic_header

pytestmark = pytest.mark.integration

HOUR_NS = 3600 * 10**9
A = {"hostname": "maint-a.example", "ip": "10.9.0.1"}
B = {"hostname": "maint-b.example", "ip": "10.9.0.2"}
C = {"hostname": "maint-c.example", "ip": "10.9.0.3"}
SECRETS = {"ops": "s0", "some": "s1", "nobody": "s2"}


def _window(start_ns: int, *machines: dict[str, str]) -> dict[str, Any]:
    return {
        "machine_ids": list(machines),
        "unavailability": {
            "start": {"nanoseconds": start_ns},
            "duration": {"nanoseconds": HOUR_NS},
        },
    }


def _rules(some: list[str]) -> list[dict[str, Any]]:
    return [
        {"principals": {"values": ["ops"]}, "machines": {"type": "ANY"}},
        {"principals": {"values": ["some"]}, "machines": {"values": some}},
        {"principals": {"type": "ANY"}, "machines": {"type": "NONE"}},
    ]


def _headers(principal: str) -> dict[str, str]:
    return {"Authorization": basic_header(principal, SECRETS[principal]), **JSON}


def _v1(url: str, principal: str, call_type: str, payload: dict | None = None) -> Any:
    body: dict[str, Any] = {"type": call_type}
    if payload is not None:
        body[call_type.lower()] = payload
    answer = requests.post(url + "/api/v1", json=body, headers=_headers(principal), timeout=10)
    assert answer.status_code == 200 if payload is None else answer.status_code in (200, 202), (
        answer.status_code,
        answer.text,
    )
    return answer.json()[call_type.lower()] if payload is None else None


def _legacy(url: str, principal: str, path: str) -> Any:
    answer = requests.get(url + path, headers=_headers(principal), timeout=10)
    assert answer.status_code == 200, (answer.status_code, answer.text)
    return answer.json()


def _hosts(machines: list[dict[str, Any]]) -> list[str]:
    return [m["hostname"] for m in machines]


@pytest.mark.timeout(90)
def test_maintenance_reads_show_each_principal_only_its_machines(cluster_factory, tmp_path):
    creds = tmp_path / "credentials"
    creds.write_text("".join(f"{p} {s}\n" for p, s in SECRETS.items()))
    acls = {
        # ACL objects are hostnames (else IPs); "some" sees A's window, not B's, in the
        # schedule, and B's draining and C's down state in the status.
        "get_maintenance_schedules": _rules(["maint-a.example", "maint-c.example"]),
        "get_maintenance_statuses": _rules(["maint-b.example", "maint-c.example"]),
    }
    cluster = cluster_factory(
        agents=1,
        http_auth=("ops", SECRETS["ops"]),
        master_flags=[
            "--authenticate_http_readwrite",
            "--authenticate_http_readonly",
            f"--credentials={creds}",
            f"--acls={json.dumps(acls)}",
        ],
    )
    url = cluster.master_url
    start = 1_900_000_000 * 10**9
    schedule = {"windows": [_window(start, A, B), _window(start + HOUR_NS, C)]}
    _v1(url, "ops", "UPDATE_MAINTENANCE_SCHEDULE", {"schedule": schedule})
    _v1(url, "ops", "START_MAINTENANCE", {"machines": [C]})

    # All: the whole schedule and status.
    full = _v1(url, "ops", "GET_MAINTENANCE_SCHEDULE")["schedule"]
    assert [_hosts(w["machine_ids"]) for w in full["windows"]] == [
        ["maint-a.example", "maint-b.example"],
        ["maint-c.example"],
    ]
    status = _v1(url, "ops", "GET_MAINTENANCE_STATUS")["status"]
    assert _hosts([d["id"] for d in status["draining_machines"]]) == [
        "maint-a.example",
        "maint-b.example",
    ]
    assert _hosts(status["down_machines"]) == ["maint-c.example"]

    # Some: A and C of the schedule (B dropped from its window), B and C of the status.
    for got in (
        _v1(url, "some", "GET_MAINTENANCE_SCHEDULE")["schedule"],
        _legacy(url, "some", "/maintenance/schedule"),
        _legacy(url, "some", "/master/maintenance/schedule"),
    ):
        assert [_hosts(w["machine_ids"]) for w in got["windows"]] == [
            ["maint-a.example"],
            ["maint-c.example"],
        ]
        assert got["windows"][0]["unavailability"] == schedule["windows"][0]["unavailability"]
    for got in (
        _v1(url, "some", "GET_MAINTENANCE_STATUS")["status"],
        _legacy(url, "some", "/maintenance/status"),
    ):
        assert _hosts([d["id"] for d in got["draining_machines"]]) == ["maint-b.example"]
        assert _hosts(got["down_machines"]) == ["maint-c.example"]

    # None: empty answers, not 403.
    assert _v1(url, "nobody", "GET_MAINTENANCE_SCHEDULE") == {"schedule": {"windows": []}}
    assert _legacy(url, "nobody", "/maintenance/schedule") == {"windows": []}
    empty = {"draining_machines": [], "down_machines": []}
    assert _v1(url, "nobody", "GET_MAINTENANCE_STATUS") == {"status": empty}
    assert _legacy(url, "nobody", "/maintenance/status") == empty
