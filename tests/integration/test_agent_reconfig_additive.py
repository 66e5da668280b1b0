"""Mesos' agent --reconfiguration_policy=additive against a real master and agent: a
checkpointing framework's task runs; the agent is SIGKILLed and restarted with an added
resource and attribute. Under `equal` that start is refused and the task is left running;
under `additive` the agent recovers under its old id, the task is still RUNNING, and the
master takes the new AgentInfo: /master/state, GET_AGENTS, offers (a task that needs the
added resources launches) and the registry (a restarted master lists it so)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from operator_kit import call, wait_for, wait_task

from butte.testing.cluster import start_cluster

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

# Every resource given (the agent would detect disk from the machine); AFTER has more cpus and
# disk, a resource of its own (foo) and an attribute of its own (zone).
BEFORE = ["--resources", "cpus:1;mem:256;disk:64;ports:[31000-31099]", "--attributes", "rack:r1"]
AFTER = [
    "--resources",
    "cpus:2;mem:256;disk:128;ports:[31000-31099];foo:4",
    "--attributes",
    "rack:r1;zone:a",
]


def run(cluster: Any, name: str, resources: str, log: Path) -> subprocess.Popen[bytes]:
    """``butte run --checkpoint`` in the background: its task outlives an agent restart."""
    argv = [sys.executable, "-m", "butte", "run", "--master", cluster.master_address]
    argv += ["--name", name, "--framework_name", f"fw-{name}", "--checkpoint"]
    argv += ["--resources", resources, "--command", "sleep 600"]
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)


def attributes(agent: dict[str, Any]) -> dict[str, Any]:
    return agent.get("attributes") or {}


def test_additive_restart_keeps_the_task_and_the_master_takes_the_new_agent_info(tmp_path):
    with start_cluster(tmp_path, resources=None, agent_flags=BEFORE) as cluster:
        jobs = [run(cluster, "keep", "cpus:1;mem:64", tmp_path / "keep.log")]
        try:
            task = wait_task(cluster.master_url, "keep", "TASK_RUNNING", timeout=30)
            [before] = cluster.state()["slaves"]
            assert before["resources"]["cpus"] == 1 and attributes(before) == {"rack": "r1"}
            agent = cluster.agents[0]
            process = agent._process  # the flags of its next start are ours to change
            base = list(process.argv)
            agent.kill()

            # Mesos' default, equal: the added resource and attribute refuse the start.
            process.argv = [*base, *AFTER]
            process.start()
            assert process.wait(30) == 1
            log = agent.log_text()
            assert "incompatible agent info" in log
            assert "(--reconfiguration_policy=equal)" in log and "rm -f " in log

            process.argv = [*base, *AFTER, "--reconfiguration_policy=additive"]
            process.start()

            def grown(state: dict[str, Any]) -> dict[str, Any] | None:
                agents = [a for a in state["slaves"] if a["active"]]
                if agents and agents[0]["resources"].get("foo") == 4:
                    return agents[0]
                return None

            after = cluster.wait_until(grown, timeout=30, what="the agent's new total")
            assert after["id"] == before["id"]  # recovered under its old id
            assert after["resources"]["cpus"] == 2 and after["resources"]["disk"] == 128
            assert attributes(after) == {"rack": "r1", "zone": "a"}
            [same] = call(cluster.master_url, "GET_TASKS")["tasks"]
            assert same["task_id"] == task["task_id"] and same["state"] == "TASK_RUNNING"
            [shown] = call(cluster.master_url, "GET_AGENTS")["agents"]
            names = {a["name"] for a in shown["agent_info"]["attributes"]}
            assert names == {"rack", "zone"}
            assert "foo" in {r["name"] for r in shown["total_resources"]}

            # The added resources are offered: a task needing each of them launches.
            more_resources = "cpus:1;mem:64;disk:100;foo:1"
            jobs.append(run(cluster, "more", more_resources, tmp_path / "more.log"))
            more = wait_task(cluster.master_url, "more", "TASK_RUNNING", timeout=30)
            assert more["agent_id"]["value"] == before["id"]

            # The registry has the new AgentInfo: a restarted master lists it so before the
            # agent is back (the agent is down, so what it shows is the registry's).
            agent.kill()
            cluster.master.kill()
            cluster.master.restart()
            recovered = wait_for(
                lambda: _recovered_agents(cluster), timeout=30, what="registry's agents"
            )
            [info] = recovered
            assert {a["name"] for a in info["attributes"]} == {"rack", "zone"}
            assert "foo" in {r["name"] for r in info["resources"]}
            # The agent checkpointed the AgentInfo it recovered with: with those flags it
            # recovers even under `equal` now.
            process.argv = [*base, *AFTER]
            process.start()
            cluster.wait_until(grown, timeout=30, what="the agent back after the failover")
        finally:
            for job in jobs:
                job.kill()  # the cluster's stop ends the tasks
                job.wait(10)


def _recovered_agents(cluster: Any) -> list[dict[str, Any]] | None:
    try:
        return call(cluster.master_url, "GET_AGENTS").get("recovered_agents") or None
    except (OSError, AssertionError, ValueError):
        return None


def test_additive_restart_keeps_the_reservations_and_adds_to_them(tmp_path):
    """Resources added under `additive` join the dynamic reservations the agent checkpointed
    (Mesos applies its checkpointed resources to the new --resources); under `equal` the
    checkpointed resources refuse the changed --resources."""
    with start_cluster(tmp_path, resources=None, agent_flags=BEFORE) as cluster:
        [before] = cluster.state()["slaves"]
        reserved = {
            "name": "cpus",
            "type": "SCALAR",
            "scalar": {"value": 1},
            "reservations": [{"type": "DYNAMIC", "role": "web"}],
        }
        payload = {"agent_id": {"value": before["id"]}, "resources": [reserved]}
        call(cluster.master_url, "RESERVE_RESOURCES", payload, status=202)
        agent = cluster.agents[0]
        meta = agent.work_dir / "meta" / "resources" / "resources.info"
        wait_for(meta.exists, timeout=10, what="the agent's checkpointed resources")
        process = agent._process
        base = list(process.argv)
        agent.kill()
        process.argv = [*base, *AFTER]
        process.start()
        assert process.wait(30) == 1
        assert "(--reconfiguration_policy=equal)" in agent.log_text()
        process.argv = [*base, *AFTER, "--reconfiguration_policy=additive"]
        process.start()

        def grown(state: dict[str, Any]) -> dict[str, Any] | None:
            agents = [a for a in state["slaves"] if a["active"]]
            return agents[0] if agents and agents[0]["resources"].get("foo") == 4 else None

        after = cluster.wait_until(grown, timeout=30, what="the agent's new total")
        assert after["id"] == before["id"]
        assert after["resources"]["cpus"] == 2
        assert after["reserved_resources"]["web"]["cpus"] == 1
        assert after["unreserved_resources"]["cpus"] == 1
