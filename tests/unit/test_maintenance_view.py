"""Maintenance read calls under ``--acls`` (butte/master/maintenance_view.py): a principal
sees only the machines it is authorized for, as in Mesos, and nobody is refused."""

from __future__ import annotations

import json
from typing import Any

from butte.master.acls import Acls, parse_acls
from butte.master.maintenance_view import (
    machine_filter,
    machine_object,
    schedule_for,
    status_for,
)

A = {"hostname": "Host-A", "ip": "10.0.0.1"}
B = {"hostname": "host-b"}
C = {"ip": "10.0.0.3"}
UNAVAILABLE = {"start": {"nanoseconds": 1}, "duration": {"nanoseconds": 2}}
SCHEDULE = {
    "windows": [
        {"machine_ids": [A, B], "unavailability": UNAVAILABLE},
        {"machine_ids": [C], "unavailability": UNAVAILABLE},
    ]
}
STATUS = {
    "draining_machines": [
        {"id": A, "statuses": [{"status": "ACCEPT", "framework_id": {"value": "f"}}]},
        {"id": B},
    ],
    "down_machines": [C],
}


def _acls(action: str, rules: list[dict[str, Any]]) -> Acls:
    return parse_acls(json.dumps({action: rules}))


def _schedule_acls() -> Acls:
    return _acls(
        "get_maintenance_schedules",
        [
            {"principals": {"values": ["some"]}, "machines": {"values": ["host-a", "10.0.0.3"]}},
            {"principals": {"values": ["all"]}, "machines": {"type": "ANY"}},
            {"principals": {"type": "ANY"}, "machines": {"type": "NONE"}},
        ],
    )


def _status_acls() -> Acls:
    return _acls(
        "get_maintenance_statuses",
        [
            {"principals": {"values": ["some"]}, "machines": {"values": ["host-b", "10.0.0.3"]}},
            {"principals": {"values": ["all"]}, "machines": {"type": "ANY"}},
            {"principals": {"type": "ANY"}, "machines": {"type": "NONE"}},
        ],
    )


def test_the_acl_object_is_the_hostname_else_the_ip_lowercase():
    assert machine_object(A) == "host-a"
    assert machine_object(C) == "10.0.0.3"
    assert machine_object({}) is None and machine_object("x") is None


def test_permissive_acls_serve_the_documents_untouched():
    assert machine_filter(Acls(), "get_maintenance_schedules", "anyone") is None
    assert schedule_for(Acls(), None, SCHEDULE) is SCHEDULE
    assert status_for(Acls(), "x", STATUS) is STATUS


def test_schedule_keeps_only_allowed_machines_and_drops_emptied_windows():
    acls = _schedule_acls()
    some = schedule_for(acls, "some", SCHEDULE)
    assert some == {
        "windows": [
            {"machine_ids": [A], "unavailability": UNAVAILABLE},
            {"machine_ids": [C], "unavailability": UNAVAILABLE},
        ]
    }
    assert schedule_for(acls, "all", SCHEDULE) == SCHEDULE
    assert schedule_for(acls, "nobody", SCHEDULE) == {"windows": []}
    assert schedule_for(acls, None, SCHEDULE) == {"windows": []}
    assert SCHEDULE["windows"][0]["machine_ids"] == [A, B]  # the input is not changed


def test_status_keeps_only_allowed_draining_and_down_machines():
    acls = _status_acls()
    assert status_for(acls, "some", STATUS) == {
        "draining_machines": [{"id": B}],
        "down_machines": [C],
    }
    assert status_for(acls, "all", STATUS) == STATUS
    assert status_for(acls, "nobody", STATUS) == {"draining_machines": [], "down_machines": []}


def test_read_calls_are_no_longer_refused_but_changes_still_are():
    from butte.master.maintenance_http import maintenance_acl_checks

    class Call:
        update_maintenance_schedule = {"schedule": SCHEDULE}

    assert maintenance_acl_checks("GET_MAINTENANCE_SCHEDULE", Call()) == []
    assert maintenance_acl_checks("GET_MAINTENANCE_STATUS", Call()) == []
    checks = maintenance_acl_checks("UPDATE_MAINTENANCE_SCHEDULE", Call())
    assert checks == [
        ("update_maintenance_schedules", "host-a"),
        ("update_maintenance_schedules", "host-b"),
        ("update_maintenance_schedules", "10.0.0.3"),
    ]
