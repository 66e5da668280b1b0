"""Fault domains (butte.core.domains): --domain parsing, remote agents in the allocator, the
registrations a master ignores, and a master configured for another region than the leader's."""

from __future__ import annotations

import json

import pytest

from butte.coord.leadership import Leadership
from butte.core import domains
from butte.core.resources import parse_resources
from butte.master.allocator.hierarchical import HierarchicalDRFAllocator
from butte.master.allocator.interface import AllocatorOptions
from butte.master.views import master_info


def dom(region: str, zone: str = "z") -> dict:
    return {"fault_domain": {"region": {"name": region}, "zone": {"name": zone}}}


def test_a_domain_is_json_inline_or_in_a_file(tmp_path):
    assert domains.parse_domain(json.dumps(dom("r1", "z1"))) == dom("r1", "z1")
    path = tmp_path / "domain.json"
    path.write_text(json.dumps(dom("r2")))
    assert domains.parse_domain(str(path)) == dom("r2")
    assert domains.parse_domain(f"file://{path}") == dom("r2")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[]", "expected a JSON object"),
        ('{"fault_domain": null}', "must define `fault_domain`"),
        ('{"fault_domain": {}, "other": 1}', "unknown field(s) other"),
        ('{"fault_domain": {"region": {"name": "r"}}}', "fault_domain.zone.name"),
        ('{"fault_domain": {"region": {"name": ""}, "zone": {"name": "z"}}}', "region.name"),
        ('{"fault_domain": {"region": {"name": 1}, "zone": {"name": "z"}}}', "region.name"),
        (
            '{"fault_domain": {"region": {"name": "r", "x": 1}, "zone": {"name": "z"}}}',
            "takes only `name`",
        ),
        ('{"fault_domain": {"region": {"name": "r"}, "zone": {"name": "z"}, "rack": {}}}', "rack"),
    ],
)
def test_bad_domains_are_refused_with_what_is_wrong(text, message):
    with pytest.raises(ValueError, match="--domain") as caught:
        domains.parse_domain(text)
    assert message in str(caught.value)


def test_remote_means_a_region_other_than_the_masters():
    assert not domains.is_remote(dom("east"), None)  # no domain: local
    assert not domains.is_remote(dom("east"), {})  # no fault domain: as none
    assert not domains.is_remote(dom("east", "a"), dom("east", "b"))  # other zone, same region
    assert domains.is_remote(dom("east"), dom("west"))


def test_which_registrations_a_master_ignores():
    assert "no configured domain" in str(domains.registration_refusal(None, False, dom("e")))
    assert domains.registration_refusal(None, False, None) is None
    assert domains.registration_refusal(dom("e"), False, None) is None
    assert "requires agent domains" in str(domains.registration_refusal(dom("e"), True, None))
    assert domains.registration_refusal(dom("e"), True, dom("w")) is None


def test_remote_agents_are_offered_only_to_region_aware_frameworks():
    alloc = HierarchicalDRFAllocator(AllocatorOptions(), seed=7)
    alloc.add_framework("plain", ["*"])
    alloc.add_agent("remote", parse_resources("cpus:4;mem:1024"), remote=True)
    alloc.add_agent("local", parse_resources("cpus:4;mem:1024"))
    assert [(a.framework_id, a.agent_id) for a in alloc.allocate(0.0)] == [("plain", "local")]
    alloc.add_framework("aware", ["*"], capabilities=["REGION_AWARE"])
    assert [(a.framework_id, a.agent_id) for a in alloc.allocate(1.0)] == [("aware", "remote")]
    alloc.check_invariants()


def leadership(domain: dict | None) -> tuple[Leadership, list[str]]:
    lost: list[str] = []
    info = master_info("me", "127.0.0.1", 5050, "m1", "1.11.0")
    if domain is not None:
        info["domain"] = domain
    gate = Leadership(None, info, on_elected=lambda: None, on_lost=lost.append)  # type: ignore[arg-type]
    return gate, lost


def test_a_master_configured_for_another_region_than_the_leaders_exits():
    leader = {**master_info("other", "127.0.0.1", 5051, "m2", "1.11.0"), "domain": dom("east")}
    same, lost = leadership(dom("east", "another-zone"))
    same.leader_changed(leader)
    assert lost == []
    other, lost = leadership(dom("west"))
    other.leader_changed(leader)
    assert lost and "region 'east'" in lost[0] and "region 'west'" in lost[0]
    without, lost = leadership(None)  # no domain of its own: nothing to compare
    without.leader_changed(leader)
    assert lost == []
