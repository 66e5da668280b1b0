"""Mesos' ACLs (`butte.master.acls`): first matching rule decides, NONE denies, ANY allows,
``permissive`` for the rest; and the core refusing a launch as a user its principal may not
run as (TASK_ERROR, REASON_TASK_UNAUTHORIZED)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from master_kit import Harness, command_task, launch_body

from butte.master.acls import (
    AUTHORIZABLE_ENDPOINTS,
    AclError,
    Acls,
    endpoint_forbidden,
    forbidden,
    parse_acls,
    without_flags,
)
from butte.master.core import MasterOptions


def test_first_matching_rule_decides_and_permissive_covers_the_rest() -> None:
    acls = parse_acls(
        """{"permissive": false,
            "run_tasks": [
              {"principals": {"values": ["ops"]}, "users": {"type": "ANY"}},
              {"principals": {"type": "ANY"}, "users": {"values": ["root"]}},
              {"principals": {"values": ["web"]}, "users": {"values": ["nobody"]}}
            ],
            "register_frameworks": [
              {"principals": {"values": ["web"]}, "roles": {"type": "NONE"}}
            ]}"""
    )
    assert acls.allowed("run_tasks", "ops", "root")
    assert acls.allowed("run_tasks", "web", "root")  # second rule: anyone may run as root
    assert acls.allowed("run_tasks", "web", "nobody")
    assert not acls.allowed("run_tasks", "web", "daemon")  # no rule: not permissive
    assert not acls.allowed("run_tasks", None, "daemon")
    # NONE matches every role and allows none.
    assert not acls.allowed("register_frameworks", "web", "anything")
    assert not acls.allowed("register_frameworks", "ops", "x")  # no rule: not permissive
    assert parse_acls("{}").allowed("teardown_frameworks", None, None)  # permissive default


def test_a_none_subject_denies_what_it_matches() -> None:
    acls = parse_acls(
        '{"teardown_frameworks": [{"principals": {"type": "NONE"},'
        ' "framework_principals": {"values": ["critical"]}}]}'
    )
    assert not acls.allowed("teardown_frameworks", "ops", "critical")
    assert acls.allowed("teardown_frameworks", "ops", "batch")


@pytest.mark.parametrize(
    "text",
    [
        "[]",
        "{not json",
        '{"permissive": "no"}',
        '{"run_tasks": {}}',
        '{"fly": []}',
        '{"run_tasks": [{"principals": {"values": "ops"}}]}',
        '{"run_tasks": [{"principals": {"type": "SOME"}}]}',
        '{"run_tasks": [{"principals": {"type": "ANY"}, "roles": {"type": "ANY"}}]}',
    ],
)
def test_bad_acls_are_refused(text: str) -> None:
    with pytest.raises(AclError):
        parse_acls(text)


def test_the_core_refuses_a_launch_as_a_user_the_principal_may_not_use() -> None:
    acls = parse_acls(
        '{"permissive": false, "run_tasks": [{"principals": {"values": ["web"]},'
        ' "users": {"values": ["nobody"]}}]}'
    )
    h = Harness(MasterOptions(acls=acls))
    h.register_agent("c1")
    fid, stream = h.subscribe(principal="web", user="root")
    h.allocate()
    [offer] = h.offers(stream)
    as_root = command_task("as-root", offer, resources="cpus:1;mem:32")
    as_nobody = command_task("as-nobody", offer, resources="cpus:1;mem:32")
    as_nobody["command"] = {"value": "true", "user": "nobody"}
    h.call(fid, stream, launch_body(offer, as_root, as_nobody))
    [status] = h.updates(stream)
    assert status["task_id"] == {"value": "as-root"} and status["state"] == "TASK_ERROR"
    assert status["reason"] == "REASON_TASK_UNAUTHORIZED" and "'root'" in status["message"]


def test_every_mesos_action_in_the_issue_parses_in_mesos_json_form() -> None:
    from butte.master.acls import OBJECTS, authorized

    actions = [
        "reserve_resources", "unreserve_resources", "create_volumes", "destroy_volumes",
        "get_quotas", "update_quotas", "get_maintenance_schedules",
        "update_maintenance_schedules", "start_maintenances", "stop_maintenances",
        "get_maintenance_statuses", "launch_nested_containers", "attach_containers_input",
        "attach_containers_output", "view_frameworks", "view_tasks", "view_executors",
        "access_sandboxes", "access_mesos_logs", "view_containers", "kill_nested_containers",
    ]  # fmt: skip
    doc = {"permissive": False}
    for action in actions:
        doc[action] = [
            {"principals": {"values": ["ops"]}, OBJECTS[action]: {"type": "ANY"}},
            {"principals": {"type": "ANY"}, OBJECTS[action]: {"type": "NONE"}},
        ]
    acls = parse_acls(json.dumps(doc))
    for action in actions:
        assert authorized(acls, action, "ops", "anything")
        assert acls.authorized(action, "ops")
        assert not authorized(acls, action, "dev", "anything")
        assert not acls.unrestricted(action)
    with pytest.raises(KeyError):
        authorized(acls, "no_such_action", "ops")


def test_unrestricted_only_when_no_rule_can_refuse() -> None:
    assert Acls().unrestricted("view_tasks")
    assert not Acls(permissive=False).unrestricted("view_tasks")
    anyone = parse_acls(
        '{"permissive": false, "view_tasks": [{"principals": {"type": "ANY"},'
        ' "users": {"type": "ANY"}}]}'
    )
    assert anyone.unrestricted("view_tasks")
    some = parse_acls(
        '{"permissive": false, "view_tasks": [{"principals": {"values": ["a"]},'
        ' "users": {"type": "SOME", "values": ["x"]}}]}'
    )
    assert not some.unrestricted("view_tasks")
    assert some.allowed("view_tasks", "a", "x") and not some.allowed("view_tasks", "a", "y")


def test_views_cost_nothing_without_view_acls() -> None:
    from butte.master.view_acls import viewer

    machine: Any = None  # never looked at when no view can be restricted
    assert viewer(Acls(), "anyone", machine) is None
    others = parse_acls(
        '{"run_tasks": [{"principals": {"type": "ANY"}, "users": {"type": "NONE"}}]}'
    )
    assert viewer(others, None, machine) is None
    views = parse_acls(
        '{"view_tasks": [{"principals": {"values": ["a"]}, "users": {"values": ["a"]}}]}'
    )
    assert viewer(views, "a", machine) is not None


def test_flags_roles_and_endpoints_acls_allow_everything_without_rules() -> None:
    """Without ACLs, or permissive ones with no rule for the action, ``view_flags``,
    ``view_roles`` and ``get_endpoints`` refuse nobody (clusters without ACLs see no
    change); with restrictive ones they answer Mesos' way."""
    for acls in (Acls(), parse_acls('{"run_tasks": []}')):
        assert forbidden(acls, "view_flags", None) is None
        assert forbidden(acls, "view_roles", "bob", "dev") is None
        assert endpoint_forbidden(acls, None, "/metrics/snapshot") is None
    strict = parse_acls(
        json.dumps(
            {
                "permissive": False,
                "view_flags": [{"principals": {"values": ["ops"]}, "flags": {"type": "ANY"}}],
                "get_endpoints": [
                    {"principals": {"values": ["ops"]}, "paths": {"values": ["/metrics/snapshot"]}}
                ],
            }
        )
    )
    assert forbidden(strict, "view_flags", "ops") is None
    assert forbidden(strict, "view_flags", "bob") == (
        "Forbidden: 'bob' may not view flags (view_flags)"
    )
    assert forbidden(strict, "view_flags", None) is not None  # no principal: ANY subject
    assert endpoint_forbidden(strict, "ops", "/metrics/snapshot") is None
    assert endpoint_forbidden(strict, "ops", "/containers") is not None
    assert endpoint_forbidden(strict, "bob", "/metrics/snapshot") is not None
    assert "/monitor/statistics" in AUTHORIZABLE_ENDPOINTS


def test_without_flags_leaves_the_rest_of_a_state_document() -> None:
    doc = {"id": "m", "flags": {"work_dir": "/w"}, "cluster": "c", "log_dir": "/l"}
    assert without_flags(doc) == {"id": "m"}
    assert doc["flags"] == {"work_dir": "/w"}  # a copy
