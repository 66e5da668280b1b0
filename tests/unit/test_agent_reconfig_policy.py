"""Mesos' --reconfiguration_policy=additive (and equal beside it), as
`butte.agent.compatibility` checks them: every case of Mesos' SlaveCompatibilityTest, in
butte's JSON AgentInfo."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from butte.agent.compatibility import agent_info_change
from butte.agent.flags import reconfiguration_policy
from butte.core.resources import parse_attributes, parse_resources


def info(resources: str = "", attributes: str = "", **extra: Any) -> dict[str, Any]:
    """An AgentInfo as the agent checkpoints it (Mesos' createSlaveInfo)."""
    return {
        "hostname": "agent",
        "port": 5051,
        "resources": parse_resources(resources).to_json("endpoint"),
        "attributes": [a.to_json() for a in parse_attributes(attributes)],
        **extra,
    }


def additive(previous: dict[str, Any], current: dict[str, Any]) -> str | None:
    return agent_info_change(previous, current, policy="additive")


def equal(previous: dict[str, Any], current: dict[str, Any]) -> str | None:
    return agent_info_change(previous, current, policy="equal")


def test_the_flag_takes_both_of_mesos_policies_and_nothing_else():
    assert reconfiguration_policy("equal") == "equal"
    assert reconfiguration_policy("additive") == "additive"
    with pytest.raises(argparse.ArgumentTypeError, match="not a policy"):
        reconfiguration_policy("anything")
    with pytest.raises(ValueError, match="unknown reconfiguration policy"):
        agent_info_change(info(), info(), policy="anything")


def test_equal():
    original = info("cpus:500", "foo:bar")
    assert equal(original, dict(original)) is None
    assert "attributes changed" in equal(original, info("cpus:500", "foo:baz"))
    assert "resources changed" in equal(original, info("cpus:600", "foo:bar"))
    assert equal(original, info("cpus:250;cpus:250", "foo:bar")) is None
    # What additive allows, equal does not.
    assert "resources changed" in equal(info("cpus:50"), info("cpus:50;mem:100"))
    assert "attributes changed" in equal(info("", "os:lucid"), info("", "os:lucid;dc:ams"))


def test_additive_hostname_and_port_cannot_change():
    assert additive(info(), info()) is None
    assert "hostname changed from 'agent' to 'another_host'" in additive(
        info(), info(hostname="another_host")
    )
    assert "port changed from 1234 to 4321" in additive(info(port=1234), info(port=4321))
    # --port 0: the port is whatever the kernel gave this start.
    assert agent_info_change(info(port=1), info(port=2), False, "additive") is None


def test_additive_fault_domain_may_be_added_but_not_changed():
    domain = {"fault_domain": {"region": {"name": "r1"}, "zone": {"name": "z1"}}}
    other = {"fault_domain": {"region": {"name": "r1"}, "zone": {"name": "z2"}}}
    assert additive(info(), info(domain=domain)) is None
    assert additive(info(domain=domain), info(domain=domain)) is None
    assert "domain changed" in additive(info(domain=domain), info(domain=other))
    assert "domain changed" in additive(info(domain=domain), info())
    assert "domain changed" in equal(info(), info(domain=domain))


def test_additive_resources():
    original, extended = info("cpus:50"), info("cpus:50;mem:100")
    assert additive(original, extended) is None  # new resources are permitted
    assert "resource mem:100 was removed" in additive(extended, original)
    # Another type under the same name (Mesos' cpus:50 -> cpus:[100-200]; butte only
    # allows cpus as a scalar, so a custom resource shows it).
    assert "resource foo:50 was removed" in additive(info("foo:50"), info("foo:[100-200]"))
    # Scalars may grow, not shrink; 50 -> 30+30 is growth.
    assert additive(info("cpus:50"), info("cpus:100")) is None
    assert "scalar resource cpus:100 decreased to cpus:50" in additive(
        info("cpus:100"), info("cpus:50")
    )
    assert additive(info("cpus:50"), info("cpus:30;cpus:30")) is None
    # Ranges and sets may be extended, not shrunk.
    assert additive(info("range:[100-200]"), info("range:[100-300]")) is None
    change = additive(info("range:[100-300]"), info("range:[100-200]"))
    assert change is not None and "[100-300] are not all in [100-200]" in change
    assert additive(info("set:{}"), info("set:{a,b}")) is None
    assert additive(info("set:{a}"), info("set:{a,b}")) is None
    assert "set:{a,b}" in additive(info("set:{a,b}"), info("set:{a}"))
    assert "removed" in additive(info("set:{a,b}"), info("set:{}"))


def test_additive_with_reservations_compares_each_role():
    original = info("foo(A):10;foo(B):20")
    assert additive(original, info("foo(A):20;foo(B):30")) is None
    # The total grows, but role A's share shrinks.
    change = additive(original, info("foo(A):5;foo(B):50"))
    assert change is not None and "foo(A):10 decreased to foo(A):5" in change


def test_additive_ignores_what_offer_operations_made_of_the_declared_resources():
    reserved = [
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 1.0}},
        {
            "name": "cpus",
            "type": "SCALAR",
            "scalar": {"value": 1.0},
            "reservations": [{"type": "DYNAMIC", "role": "web", "principal": "ops"}],
        },
    ]
    assert additive({**info(), "resources": reserved}, info("cpus:3")) is None
    assert "decreased" in additive({**info(), "resources": reserved}, info("cpus:1"))


def test_additive_disks():
    """Mesos' Disks case (MESOS-8410): a MOUNT disk beside the root disk."""
    root = {"name": "disk", "type": "SCALAR", "scalar": {"value": 868000}}
    mount = {
        "name": "disk",
        "type": "SCALAR",
        "scalar": {"value": 1830000},
        "disk": {"source": {"type": "MOUNT", "mount": {"root": "/srv/mesos/volumes/a"}}},
    }
    disk, disk_and_mount = info(resources=""), info(resources="")
    disk["resources"], disk_and_mount["resources"] = [root], [root, mount]
    assert additive(disk, disk_and_mount) is None
    assert additive(disk_and_mount, disk_and_mount) is None
    assert "removed" in additive(disk_and_mount, disk)


def test_additive_attributes():
    original, extended = info("", "os:lucid"), info("", "os:lucid;dc:amsterdam")
    assert additive(original, extended) is None  # new attributes are permitted
    assert "attribute dc:amsterdam was removed" in additive(extended, original)
    assert "type of attribute 'os' changed from TEXT to SCALAR" in additive(
        original, info("", "os:4")
    )
    assert "value of text attribute 'os' changed from lucid to trusty" in additive(
        original, info("", "os:trusty")
    )
    assert "value of scalar attribute 'rack' changed from 1.0 to 2.0" in additive(
        info("", "rack:1"), info("", "rack:2")
    )
    assert additive(info("", "range:[100-200]"), info("", "range:[100-300]")) is None
    assert "ranges attribute 'range'" in additive(
        info("", "range:[100-300]"), info("", "range:[100-200]")
    )
    # SET attributes (butte has them, Mesos' parser does not): they may grow like ranges.
    assert additive(info("", "s:{a}"), info("", "s:{a,b}")) is None
    assert "set attribute 's'" in additive(info("", "s:{a,b}"), info("", "s:{a}"))
    # Order does not matter.
    assert additive(info("", "a:1;b:x"), info("", "b:x;c:y;a:1")) is None


def test_an_unreadable_checkpoint_refuses_under_both_policies():
    broken = {**info("cpus:1"), "resources": [{"name": "cpus", "type": "SCALAR"}]}
    assert "cannot be read" in additive(broken, info("cpus:1"))
    bad_attribute = {**info(), "attributes": [{"name": "x", "type": "WHAT"}]}
    assert "cannot be read" in additive(bad_attribute, info())
