"""Mesos' ACLs (`butte.master.acls`): first matching rule decides, NONE denies, ANY allows,
``permissive`` for the rest; and the core refusing a launch as a user its principal may not
run as (TASK_ERROR, REASON_TASK_UNAUTHORIZED)."""

from __future__ import annotations

import pytest
from master_kit import Harness, command_task, launch_body

from butte.master.acls import AclError, parse_acls
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
