"""Quota in the master core and its pure validation (butte.master.quota): the whole map is
written to the registry before the allocator uses it, recovery applies it again, offers over a
new limit are rescinded, the roles views show it, ``--roles`` and ``--weights`` work."""

from __future__ import annotations

import pytest
from master_kit import Harness, call

from butte.coord.interface import RegistryState, UpdateQuotas
from butte.master import browse, operator_views
from butte.master.allocator.quota import Quota
from butte.master.effects import RegistryWrite
from butte.master.machine import MasterOptions
from butte.master.main import roles_flag, weights_flag
from butte.master.quota import (
    QuotaError,
    apply_updates,
    from_registry,
    parse_configs,
    parse_request,
    status_json,
    to_registry,
)


def cfg(role: str, guarantees: dict | None = None, limits: dict | None = None) -> dict:
    out: dict = {"role": role}
    if guarantees:
        out["guarantees"] = {n: {"value": v} for n, v in guarantees.items()}
    if limits:
        out["limits"] = {n: {"value": v} for n, v in limits.items()}
    return out


def apply(current, configs, force=False, total=None, consumed=None):
    return apply_updates(
        current,
        parse_configs(configs),
        force=force,
        cluster_total=total or {"cpus": 8000, "mem": 8_192_000},
        consumed=lambda role: (consumed or {}).get(role, {}),
    )


def test_validation_rules():
    quotas = apply({}, [cfg("a", {"cpus": 2}, {"cpus": 4}), cfg("a/b", {"cpus": 1})])
    assert quotas["a"] == Quota({"cpus": 2000}, {"cpus": 4000})
    with pytest.raises(QuotaError, match="more than its own guarantee"):
        apply(quotas, [cfg("a/c", {"cpus": 1.5})])
    with pytest.raises(QuotaError, match="limit of its parent"):
        apply(quotas, [cfg("a/c", limits={"cpus": 5})])
    with pytest.raises(QuotaError, match="capacity"):
        apply(quotas, [cfg("z", {"cpus": 7})])  # 2 + 7 > 8 (a/b is inside a)
    assert "z" in apply(quotas, [cfg("z", {"cpus": 7})], force=True)
    with pytest.raises(QuotaError, match="already consumes"):
        apply(quotas, [cfg("a", {"cpus": 1}, {"cpus": 1})], consumed={"a": {"cpus": 3000}})
    # Removing the parent leaves a/b on its own; a zero limit is kept ("none of it").
    assert set(apply(quotas, [cfg("a")])) == {"a/b"}
    assert apply({}, [cfg("q", limits={"gpus": 0})])["q"].limits == {"gpus": 0}
    for bad, why in [
        ([cfg("a"), cfg("a")], "more than once"),
        ([{"role": "a", "limits": []}], "must be an object"),
        ([{"role": "a", "guarantees": {"cpus": {"value": True}}}], "numeric"),
        ([{"role": "a", "guarantees": {"cpus": {"value": float("inf")}}}], "finite"),
        ([{"role": "a/../b"}], "Invalid role"),
        ("nope", "must be a list"),
    ]:
        with pytest.raises(QuotaError, match=why):
            parse_configs(bad)


def test_legacy_request_and_json_shapes():
    role, quota, force = parse_request(
        {
            "role": "r",
            "force": True,
            "guarantee": [
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 1.5}},
                {"name": "mem", "type": "SCALAR", "scalar": {"value": 64}},
            ],
        }  # fmt: skip
    )
    assert (role, force) == ("r", True)
    assert quota.guarantees == quota.limits == {"cpus": 1500, "mem": 64000}
    with pytest.raises(QuotaError, match="QuotaInfo contains duplicate resource name 'cpus'"):
        parse_request({"role": "r", "guarantee": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 1}},
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}}]})  # fmt: skip
    with pytest.raises(QuotaError, match="plain resource"):
        parse_request({"role": "r", "guarantee": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 1}, "role": "x"}]})  # fmt: skip
    with pytest.raises(QuotaError, match="not a scalar"):
        parse_request({"role": "r", "guarantee": [{"name": "ports", "type": "RANGES"}]})
    status = status_json({"r": quota, "s": Quota(limits={"mem": 64_000})})
    assert [c["role"] for c in status["configs"]] == ["r", "s"]
    assert [i["role"] for i in status["infos"]] == ["r"]  # only roles with guarantees
    assert from_registry(to_registry({"r": quota})) == {"r": quota}


def test_core_writes_the_registry_first_and_recovery_applies_it():
    h = Harness()
    quotas = {"eng": Quota({"cpus": 1000}, {"cpus": 2000})}
    effects = h.pump(h.master.update_quotas(quotas, h.now()))
    assert effects[0] == RegistryWrite(UpdateQuotas(to_registry(quotas)))
    assert h.master.allocator.quotas == quotas
    other = Harness(MasterOptions(weights={"web": 3.0}))
    state = RegistryState(quotas=to_registry(quotas))
    other.pump(other.master.recover_registry(state, other.now()))
    assert other.master.allocator.quotas == quotas
    assert other.master.allocator.weights == {"web": 3.0}  # --weights: none in the registry
    third = Harness(MasterOptions(weights={"web": 3.0}))
    third.pump(third.master.recover_registry(RegistryState(weights={"web": 1.5}), third.now()))
    assert third.master.allocator.weights == {"web": 1.5}  # the registry wins


def test_a_new_limit_rescinds_offers_and_the_views_show_quota():
    h = Harness()
    h.register_agent("c1", resources="cpus:4;mem:1024")
    h.register_agent("c2", resources="cpus:4;mem:1024;cpus(eng):1")
    fid, stream = h.subscribe("fw", roles=["eng"], capabilities=[{"type": "MULTI_ROLE"}])
    h.allocate()
    assert len(h.offers(stream)) == 2
    assert h.master.allocator.consumed_quota("eng")["cpus"] == 9000
    h.pump(h.master.update_quotas({"eng": Quota(limits={"cpus": 5000})}, h.now()))
    rescinded = h.take(stream, "RESCIND")
    assert len(rescinded) == 1  # one offer back is enough to fit the limit
    assert h.master.allocator.consumed_quota("eng")["cpus"] <= 5000
    rows = {r["name"]: r for r in browse.build_roles(h.master)}
    assert rows["eng"]["quota"]["limit"] == {"cpus": 5.0}
    roles = {r["name"]: r for r in operator_views.get_roles(h.master)["roles"]}
    assert roles["eng"]["quota"]["consumed"]["cpus"] <= 5.0


def test_roles_whitelist_and_weights_flag():
    h = Harness(MasterOptions(roles=frozenset({"eng"})))
    fid, stream = h.subscribe("ok", roles=["eng", "*"], capabilities=[{"type": "MULTI_ROLE"}])
    assert fid
    result, _ = h.master.subscribe(
        call(
            {
                "type": "SUBSCRIBE",
                "subscribe": {
                    "framework_info": {
                        "user": "u",
                        "name": "no",
                        "roles": ["sales"],
                        "capabilities": [{"type": "MULTI_ROLE"}],
                    }
                },
            }  # fmt: skip
        ),
        "s2",
        h.now(),
    )
    assert result.status == 400 and "not present in the master's --roles" in str(result)
    assert roles_flag("a, b/c") == frozenset({"a", "b/c"}) and roles_flag(None) is None
    assert weights_flag("a=2,b=0.5") == {"a": 2.0, "b": 0.5}
    for bad in ("a", "a=0", "a=x", "=2", "a=inf"):
        with pytest.raises(ValueError, match="--weights"):
            weights_flag(bad)
    with pytest.raises(ValueError, match="--roles"):
        roles_flag("ok,bad role")
