"""Mesos' --reconfiguration_policy=equal, as `butte.agent.compatibility` checks it."""

from __future__ import annotations

from butte.agent.compatibility import agent_info_change
from butte.core.resources import parse_attributes, parse_resources

RESERVED = [
    {"name": "cpus", "type": "SCALAR", "scalar": {"value": 1.0}},
    {
        "name": "cpus",
        "type": "SCALAR",
        "scalar": {"value": 1.0},
        "reservations": [{"type": "DYNAMIC", "role": "web", "principal": "ops"}],
    },
]


def info(resources: str = "cpus:2;mem:512", attributes: str = "rack:r1;zone:a", **extra):
    return {
        "hostname": "h1",
        "port": 5051,
        "resources": parse_resources(resources).to_json("endpoint"),
        "attributes": [a.to_json() for a in parse_attributes(attributes)],
        **extra,
    }


def test_the_same_agent_info_in_any_order_is_compatible():
    assert agent_info_change(info(), info(attributes="zone:a;rack:r1")) is None
    assert agent_info_change(info(), info(resources="mem:512;cpus:2")) is None


def test_reservations_made_of_the_declared_resources_do_not_count():
    assert agent_info_change(info(resources="cpus:2"), {**info(), "resources": RESERVED}) is None


def test_each_kind_of_change_is_named():
    assert "hostname changed" in agent_info_change(info(), info(hostname="h2"))
    assert "port changed" in agent_info_change(info(), info(port=5052))
    assert agent_info_change(info(), info(port=5052), check_port=False) is None
    change = agent_info_change(info(), info(resources="cpus:4;mem:512"))
    assert change is not None and change.startswith("resources changed from")
    change = agent_info_change(info(), info(attributes="rack:r9;zone:a"))
    assert change is not None and "rack:r1" in change and "rack:r9" in change
    assert "attributes changed" in agent_info_change(info(), info(attributes="rack:r1"))


def test_an_unreadable_checkpoint_is_a_change():
    broken = {**info(), "resources": [{"name": "cpus", "type": "SCALAR"}]}
    assert "cannot be read" in agent_info_change(broken, info())
