"""Fault domains with a real master and agents (docs/operating.md "Fault domains"): remote
agents offered only to REGION_AWARE frameworks, registrations the master ignores for their
domain, the domains in the state endpoints, and bad --domain values refused at start-up."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from operator_kit import EventStream, wait_for

from butte.testing.cluster import ClusterHandle, start_cluster

pytestmark = pytest.mark.integration


def domain(region: str, zone: str) -> str:
    return json.dumps({"fault_domain": {"region": {"name": region}, "zone": {"name": zone}}})


@contextlib.contextmanager
def extra_agent(cluster: ClusterHandle, work_dir: Path, *flags: str) -> Iterator[subprocess.Popen]:
    """One more agent of the cluster's master, with its own flags."""
    argv = [sys.executable, "-m", "butte", "agent", "--master", cluster.master_address]
    argv += ["--work_dir", str(work_dir), "--port", "0", "--ip", "127.0.0.1"]
    argv += ["--resources", "cpus:2;mem:512;disk:100", *flags]
    log = (work_dir.parent / f"{work_dir.name}.log").open("w")
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.terminate()
        process.wait(15)
        log.close()


def subscribe(cluster: ClusterHandle, name: str, capabilities: list[str]) -> EventStream:
    info = {
        "user": "root",
        "name": name,
        "capabilities": [{"type": c} for c in capabilities],
    }
    call = {"type": "SUBSCRIBE", "subscribe": {"framework_info": info}}
    return EventStream(cluster.master_url, "/api/v1/scheduler", call)


def offered(stream: EventStream) -> list[dict]:
    return [o for e in stream.of("OFFERS") for o in e["offers"]["offers"]]


def test_remote_agents_go_only_to_region_aware_frameworks(tmp_path):
    master_flags = ["--domain", domain("east", "e1"), "--require_agent_domain"]
    agent_flags = ["--domain", domain("east", "e2")]
    with (
        start_cluster(tmp_path, master_flags=master_flags, agent_flags=agent_flags) as cluster,
        extra_agent(cluster, tmp_path / "remote", "--domain", domain("west", "w1")),
        extra_agent(cluster, tmp_path / "no-domain") as undomained,
    ):
        cluster.wait_until(lambda s: len(s["slaves"]) == 2, 20, "the remote agent")
        state = cluster.state()
        assert state["domain"] == json.loads(domain("east", "e1"))
        assert json.loads(state["flags"]["domain"]) == state["domain"]  # as JSON, as Mesos
        regions = {a["domain"]["fault_domain"]["region"]["name"] for a in state["slaves"]}
        assert regions == {"east", "west"}
        local_id = next(
            a["id"] for a in state["slaves"] if a["domain"] == json.loads(agent_flags[1])
        )
        # The agent without a domain is ignored (not shut down: it keeps retrying).
        wait_for(
            lambda: "requires agent domains" in cluster.logs(), 15, "the domainless agent ignored"
        )
        assert undomained.poll() is None and len(cluster.state()["slaves"]) == 2
        agent_state = requests.get(f"http://{cluster.agents[0].address}/state", timeout=10).json()
        assert agent_state["domain"] == json.loads(agent_flags[1])
        assert json.loads(agent_state["flags"]["domain"]) == agent_state["domain"]

        plain = subscribe(cluster, "plain", [])
        try:
            first = wait_for(lambda: offered(plain), 15, "an offer to the plain framework")
            aware = subscribe(cluster, "aware", ["REGION_AWARE"])
            try:
                remote = wait_for(
                    lambda: [o for o in offered(aware) if o["agent_id"]["value"] != local_id],
                    15,
                    "the remote agent offered to the region-aware framework",
                )
                assert remote[0]["domain"]["fault_domain"]["region"]["name"] == "west"
                time.sleep(1.0)  # several allocation cycles (100 ms) more
                assert {o["agent_id"]["value"] for o in offered(plain)} == {local_id}, first
            finally:
                aware.close()
        finally:
            plain.close()


def test_an_agent_with_a_domain_is_ignored_by_a_master_without_one(tmp_path):
    with (
        start_cluster(tmp_path) as cluster,
        extra_agent(cluster, tmp_path / "domained", "--domain", domain("east", "e1")) as agent,
    ):
        wait_for(
            lambda: "but the master has no configured domain" in cluster.logs(),
            15,
            "the registration ignored",
        )
        assert len(cluster.state()["slaves"]) == 1 and "domain" not in cluster.state()
        assert agent.poll() is None  # not shut down: it retries, its tasks would run on


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{"fault_domain": {"region": {"name": "r"}}}', "fault_domain.zone.name"),
        ("{}", "must define `fault_domain`"),
        ("{not json", "not JSON"),
        ("/nonexistent/domain.json", "cannot read"),
    ],
)
def test_bad_domains_fail_start_up(tmp_path, value, message):
    for daemon in ("master", "agent"):
        argv = [sys.executable, "-m", "butte", daemon, "--work_dir", str(tmp_path / daemon)]
        if daemon == "agent":
            argv += ["--master", "127.0.0.1:1"]
        done = subprocess.run(
            [*argv, "--domain", value], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 2 and message in done.stderr, (daemon, done.stderr)
