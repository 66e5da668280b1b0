"""Quota through a real master's HTTP APIs (docs/quota.md): UPDATE_QUOTA / GET_QUOTA,
SET_QUOTA / REMOVE_QUOTA, the legacy ``/quota`` endpoint, consumed quota in GET_ROLES and
``/roles``, validation (400 and nothing changed), limits below consumption (refused unless
forced; forcing rescinds the offer that breaks the limit), ``--roles`` and ``--weights``, and
quota surviving a standalone master restart."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
import requests
from operator_kit import JSON, call, post, wait_for

from butte.client.scheduler import SchedulerClient
from butte.core.auth import basic_header
from butte.testing.cluster import ClusterHandle, daemons_missing, start_cluster
from butte.testing.require import require, require_module

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator[ClusterHandle]:
    if daemons_missing():
        require(daemons_missing(), "a real cluster")
    tmp = tmp_path_factory.mktemp("quota")
    flags = ["--roles=dev,eng,eng/web,eng/db,prod,ops", "--weights=prod=2.5"]
    with start_cluster(tmp, resources="cpus:4;mem:4096;disk:1024", master_flags=flags) as c:
        yield c


def quota_configs(master: str) -> dict[str, dict]:
    status = call(master, "GET_QUOTA")["status"]
    return {c["role"]: c for c in status.get("configs", [])}


def update(master: str, configs: list[dict], force: bool = False, status: int = 200) -> str:
    return call(master, "UPDATE_QUOTA", {"quota_configs": configs, "force": force}, status)


def scalars(**values: float) -> dict:
    return {name: {"value": v} for name, v in values.items()}


def roles_by_name(master: str) -> dict[str, dict]:
    return {r["name"]: r for r in call(master, "GET_ROLES")["roles"]}


def test_update_and_get_quota_with_consumption_in_roles(cluster):
    master = cluster.master_url
    update(master, [{"role": "eng", "guarantees": scalars(cpus=1), "limits": scalars(cpus=3)}])
    configs = quota_configs(master)
    assert configs["eng"] == {
        "role": "eng",
        "guarantees": {"cpus": {"value": 1.0}},
        "limits": {"cpus": {"value": 3.0}},
    }
    status = call(master, "GET_QUOTA")["status"]
    info = next(i for i in status["infos"] if i["role"] == "eng")
    assert info["guarantee"] == [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 1.0}}]
    quota = roles_by_name(master)["eng"]["quota"]
    assert quota == {"role": "eng", "guarantee": {"cpus": 1.0}, "limit": {"cpus": 3.0},
                     "consumed": {}}  # fmt: skip
    legacy = {r["name"]: r for r in requests.get(master + "/roles", timeout=5).json()["roles"]}
    assert legacy["eng"]["quota"]["limit"] == {"cpus": 3.0}
    assert legacy["prod"]["weight"] == 2.5  # --weights
    env = {**os.environ, "BUTTE_MASTER": cluster.master_address, "COLUMNS": "250"}
    table = subprocess.run(
        [sys.executable, "-m", "butte", "roles"],
        capture_output=True, text=True, timeout=30, env=env, check=True,
    ).stdout  # fmt: skip
    assert "GUARANTEE" in table and "LIMIT" in table and "CONSUMED" in table
    rows = [line for line in table.splitlines() if "eng" in line.replace("│", " ").split()]
    assert rows, table
    assert "cpus 1" in rows[0] and "cpus 3" in rows[0], table
    # An update without guarantees or limits removes the quota.
    update(master, [{"role": "eng"}])
    assert "eng" not in quota_configs(master)


@pytest.mark.parametrize(
    ("config", "force", "reason"),
    [
        ({"role": "dev", "guarantees": scalars(cpus=2), "limits": scalars(cpus=1)}, False,
         "exceeds its limit"),
        ({"role": "dev", "limits": scalars(ports=10)}, False, "not a scalar"),
        ({"role": "*", "limits": scalars(cpus=1)}, False, "Invalid role"),
        ({"role": "dev", "limits": scalars(cpus=-1)}, False, ">= 0"),
        ({"role": "dev", "limits": {"cpus": {"value": "x"}}}, False, "numeric"),
        ({"role": "dev", "guarantees": scalars(cpus=100)}, False, "capacity"),
        ({"limits": scalars(cpus=1)}, False, "needs a 'role'"),
        ({"role": "sales", "limits": scalars(cpus=1)}, False, "not present in the master's"),
    ],
)  # fmt: skip
def test_bad_updates_are_refused_and_change_nothing(cluster, config, force, reason):
    master = cluster.master_url
    before = call(master, "GET_QUOTA")
    text = update(master, [config], force=force, status=400)
    assert reason in text
    assert call(master, "GET_QUOTA") == before


def test_capacity_check_can_be_forced_and_hierarchy_is_checked(cluster):
    master = cluster.master_url
    update(master, [{"role": "ops", "guarantees": scalars(cpus=100)}], force=True)
    assert quota_configs(master)["ops"]["guarantees"] == {"cpus": {"value": 100.0}}
    update(master, [{"role": "ops"}])
    parent = {"role": "eng", "guarantees": scalars(cpus=2), "limits": scalars(cpus=3)}
    web = {"role": "eng/web", "guarantees": scalars(cpus=1.5), "limits": scalars(cpus=3)}
    db = {"role": "eng/db", "guarantees": scalars(cpus=1)}
    assert "sum to 2.5" in update(master, [parent, web, db], status=400)
    too_big = {"role": "eng/web", "limits": scalars(cpus=4)}
    assert "limit of its parent" in update(master, [parent, too_big], status=400)
    assert "eng" not in quota_configs(master)  # all or nothing
    update(master, [parent, web])
    assert set(quota_configs(master)) >= {"eng", "eng/web"}
    update(master, [{"role": "eng"}, {"role": "eng/web"}])


def test_legacy_quota_endpoint_and_set_remove_calls(cluster):
    master = cluster.master_url
    request = {"role": "dev", "guarantee": [
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 1}},
        {"name": "mem", "type": "SCALAR", "scalar": {"value": 128}},
    ]}  # fmt: skip
    response = post(master, request, path="/quota")
    assert response.status_code == 200, response.text
    again = post(master, request, path="/quota")
    assert again.status_code == 400 and "already has quota" in again.text
    status = requests.get(master + "/quota", timeout=5).json()
    config = next(c for c in status["configs"] if c["role"] == "dev")
    # Mesos 1.9+: a legacy request sets limits equal to the guarantees.
    assert config["limits"] == config["guarantees"] == scalars(cpus=1.0, mem=128.0)
    assert requests.delete(master + "/quota/dev", timeout=5).status_code == 200
    missing = requests.delete(master + "/quota/dev", timeout=5)
    assert missing.status_code == 400 and "has no quota" in missing.text
    assert requests.put(master + "/quota", timeout=5).status_code == 405
    bad = post(master, b"{not json", path="/quota", headers=JSON)
    assert bad.status_code == 400
    call(master, "SET_QUOTA", {"quota_request": request})
    assert "dev" in quota_configs(master)
    call(master, "REMOVE_QUOTA", {"role": "dev"})
    assert "dev" not in quota_configs(master)
    assert "has no quota" in call(master, "REMOVE_QUOTA", {"role": "dev"}, status=400)
    call(master, "UPDATE_QUOTA", None, status=400)  # payload required


def test_roles_whitelist_refuses_other_roles(cluster):
    body = {"type": "SUBSCRIBE", "subscribe": {"framework_info": {
        "user": "nobody", "name": "outsider", "roles": ["marketing"],
        "capabilities": [{"type": "MULTI_ROLE"}]}}}  # fmt: skip
    response = post(cluster.master_url, body, path="/api/v1/scheduler")
    assert response.status_code == 400, response.text
    assert "not present in the master's --roles" in response.text


def _scalar(offer: dict, name: str) -> float:
    return sum(r["scalar"]["value"] for r in offer["resources"] if r["name"] == name)


def test_limit_below_consumption_is_refused_unless_forced(cluster):
    """Consumption is what tasks use (and reservations), not what is offered, as in Mesos:
    a limit below an outstanding offer is taken and the offer rescinded; a limit below what
    a task uses is refused unless forced."""
    master = cluster.master_url

    async def next_of(client: SchedulerClient, kind: str) -> dict:
        while True:
            event = await client.next_event(timeout=20)
            assert event is not None, f"no {kind}"
            if event["type"] == kind:
                return event

    async def scenario() -> None:
        info = {"name": "holder", "user": "nobody", "roles": ["prod"],
                "capabilities": [{"type": "MULTI_ROLE"}]}  # fmt: skip
        loop = asyncio.get_running_loop()

        def consumed() -> dict:
            return roles_by_name(master)["prod"]["quota"]["consumed"]

        async with SchedulerClient(cluster.master_address, info) as client:
            offer = (await next_of(client, "OFFERS"))["offers"]["offers"][0]
            assert "cpus" not in await loop.run_in_executor(None, consumed)
            # Only offered: the limit is taken, and the offer that breaks it rescinded.
            limit = [{"role": "prod", "limits": scalars(cpus=1)}]
            await loop.run_in_executor(None, lambda: update(master, limit))
            rescind = await next_of(client, "RESCIND")
            assert rescind["rescind"]["offer_id"] == offer["id"]
            await loop.run_in_executor(None, lambda: update(master, [{"role": "prod"}]))
            # Offers made under the limit (1 cpu) and after it: together enough for 2 cpus.
            held: list[dict] = []
            while sum(_scalar(o, "cpus") for o in held) < 2:
                held += (await next_of(client, "OFFERS"))["offers"]["offers"]
            prod = {"allocation_info": {"role": "prod"}}
            task = {
                "name": "hold",
                "task_id": {"value": "hold"},
                "agent_id": held[0]["agent_id"],
                "resources": [
                    {"name": "cpus", "type": "SCALAR", "scalar": {"value": 2}, **prod},
                    {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}, **prod},
                ],
                "command": {"value": "sleep 600"},
            }
            await client.accept(held, [{"type": "LAUNCH", "launch": {"task_infos": [task]}}])
            deadline = loop.time() + 20
            while (await loop.run_in_executor(None, consumed)).get("cpus") != 2.0:
                assert loop.time() < deadline, "the task's cpus are not consumed"
                await asyncio.sleep(0.1)
            text = await loop.run_in_executor(None, lambda: update(master, limit, status=400))
            assert "already consumes 2.0 'cpus'" in text
            await loop.run_in_executor(None, lambda: update(master, limit, force=True))
            assert roles_by_name(master)["prod"]["quota"]["limit"] == {"cpus": 1.0}
            await client.teardown()

    asyncio.run(scenario())
    update(master, [{"role": "prod"}])


def test_quota_survives_a_master_restart(cluster):
    master = cluster.master_url
    update(master, [{"role": "ops", "guarantees": scalars(cpus=1, mem=64),
                     "limits": scalars(cpus=2)}])  # fmt: skip
    cluster.master.restart()
    wait_for(lambda: _answers(master), timeout=30, what="master back")
    configs = wait_for(lambda: quota_configs(master), timeout=10, what="quota")
    assert configs["ops"]["limits"] == {"cpus": {"value": 2.0}}
    assert configs["ops"]["guarantees"] == scalars(cpus=1.0, mem=64.0)
    update(master, [{"role": "ops"}])


def _answers(master: str) -> bool:
    """The master leads and has recovered its registry (/health answers before that, and a
    v1 call then gets 503)."""
    try:
        return post(master, {"type": "GET_HEALTH"}).status_code == 200
    except requests.RequestException:
        return False


QUOTA_ACLS = {
    "permissive": False,
    # Not permissive: the agent may register, and the cluster's own reads see the flags.
    "register_agents": [{"principals": {"type": "ANY"}, "agents": {"type": "ANY"}}],
    "view_flags": [{"principals": {"type": "ANY"}, "flags": {"type": "ANY"}}],
    "update_quotas": [{"principals": {"values": ["ops"]}, "roles": {"type": "ANY"}}],
    "get_quotas": [
        {"principals": {"values": ["ops"]}, "roles": {"type": "ANY"}},
        {"principals": {"values": ["fw"]}, "roles": {"values": ["dev"]}},
    ],
}


def test_acls_guard_quota_updates_and_filter_what_get_shows(cluster_factory, tmp_path):
    secrets = {"ops": "ops-Secret-1", "fw": "fw-Secret-2"}
    creds = tmp_path / "credentials"
    creds.write_text("".join(f"{p} {s}\n" for p, s in secrets.items()))
    cluster = cluster_factory(
        master_flags=[
            "--authenticate_http_readwrite",
            f"--credentials={creds}",
            f"--acls={json.dumps(QUOTA_ACLS)}",
        ]
    )
    api = cluster.master_url + "/api/v1"

    def as_(principal: str, body: dict) -> requests.Response:
        headers = {"Authorization": basic_header(principal, secrets[principal]), **JSON}
        return requests.post(api, json=body, headers=headers, timeout=10)

    configs = [{"role": r, "limits": scalars(cpus=1)} for r in ("dev", "prod")]
    update_body = {"type": "UPDATE_QUOTA", "update_quota": {"quota_configs": configs}}
    denied = as_("fw", update_body)
    assert denied.status_code == 403 and "role 'dev'" in denied.text
    assert as_("ops", update_body).status_code == 200
    seen = as_("fw", {"type": "GET_QUOTA"}).json()["get_quota"]["status"]["configs"]
    assert [c["role"] for c in seen] == ["dev"]
    seen = as_("ops", {"type": "GET_QUOTA"}).json()["get_quota"]["status"]["configs"]
    assert [c["role"] for c in seen] == ["dev", "prod"]
    removal = {"type": "REMOVE_QUOTA", "remove_quota": {"role": "dev"}}
    assert as_("fw", removal).status_code == 403


def test_pymesos_framework_is_offered_within_its_role_limit(cluster):
    """An unmodified pymesos framework in a role limited to 1.5 cpus (of the agent's 4) is
    offered no more than that, and what its running task holds shows as consumed."""
    pymesos = require_module("pymesos")
    master = cluster.master_url
    update(master, [{"role": "eng", "limits": scalars(cpus=1.5)}])
    offered: list[float] = []
    running = threading.Event()

    class Limited(pymesos.Scheduler):
        launched = False

        def resourceOffers(self, driver, offers):  # noqa: N802 - pymesos API
            for offer in offers:
                cpus = sum(r["scalar"]["value"] for r in offer["resources"] if r["name"] == "cpus")
                offered.append(cpus)
                if self.launched:
                    driver.declineOffer(offer["id"], {"refuse_seconds": 0.5})
                    continue
                self.launched = True
                task = {
                    "task_id": {"value": "limited-1"},
                    "agent_id": offer["agent_id"],
                    "name": "limited-1",
                    "command": {"value": "sleep 60"},
                    "resources": [
                        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 1.0}},
                        {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}},
                    ],
                }
                driver.launchTasks(offer["id"], [task])

        def statusUpdate(self, driver, update):  # noqa: N802 - pymesos API
            if update["state"] == "TASK_RUNNING":
                running.set()

    framework = {"user": "root", "name": "pymesos-limited", "hostname": "localhost",
                 "roles": ["eng"], "capabilities": [{"type": "MULTI_ROLE"}]}  # fmt: skip
    driver = pymesos.MesosSchedulerDriver(
        Limited(), framework, cluster.master_address, use_addict=False
    )
    driver.start()
    try:
        assert running.wait(60), "the task did not start"
        consumed = wait_for(
            lambda: roles_by_name(master)["eng"]["quota"]["consumed"].get("cpus", 0) >= 1.0,
            timeout=10,
            what="consumption",
        )
        assert consumed
        wait_for(lambda: len(offered) >= 2, timeout=20, what="a second offer")
        assert offered[0] == 1.5 and all(c <= 0.5 + 1e-9 for c in offered[1:]), offered
    finally:
        driver.stop()
        driver.join()
        update(master, [{"role": "eng"}])
