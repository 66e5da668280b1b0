"""``butte marathon`` under faults, with real processes: SIGKILL of marathon in the middle
of a deployment (it restarts from its SQLite store, re-subscribes with its framework id,
reconciles, and converges without launching anything twice), and the loss of an agent
(instances are replaced elsewhere, or kept while ``unreachableStrategy`` says so; a pod's
instance too)."""

from __future__ import annotations

import pytest

from butte.testing.marathon import MarathonHandle, start_marathon

pytestmark = [pytest.mark.integration]

# A killed agent (its socket closed) is marked unreachable once it has not come back.
FAST_LOSS = ("--agent_reregister_timeout=2secs", "--agent_ping_timeout=500ms")
ACTIVE = ("TASK_STAGING", "TASK_STARTING", "TASK_RUNNING", "TASK_KILLING")


def framework_tasks(cluster, prefix: str) -> tuple[list[dict], list[dict]]:
    """(active, finished) tasks of marathon in the master's state whose ids start so."""
    active, done = [], []
    for fw in cluster.state()["frameworks"]:
        if fw["name"] != "marathon":
            continue
        for t in fw["tasks"]:
            if t["id"].startswith(prefix):
                (active if t["state"] in ACTIVE else done).append(t)
        done += [t for t in fw.get("completed_tasks", []) if t["id"].startswith(prefix)]
    return active, done


def settled(m: MarathonHandle, app_id: str, running: int, healthy: int | None = None) -> bool:
    app = m.get(f"/v2/apps{app_id}")["app"]
    ok = not app["deployments"] and app["tasksRunning"] == running == app["instances"]
    return ok and (healthy is None or app["tasksHealthy"] == healthy)


@pytest.mark.cluster(agents=2)
def test_sigkill_mid_deployment_converges_without_duplicates(cluster, tmp_path):
    app = {
        "id": "/svc/api",
        "cmd": "sleep 600",
        "cpus": 0.05,
        "mem": 16,
        "instances": 8,
        # Healthy only a few seconds after start: the deployment is still open when killed.
        "healthChecks": [
            {
                "protocol": "COMMAND",
                "command": {"value": "true"},
                "delaySeconds": 3,
                "intervalSeconds": 1,
                "gracePeriodSeconds": 60,
                "timeoutSeconds": 1,
            }
        ],
    }
    with start_marathon(cluster.master_address, tmp_path) as m:
        framework_id = m.get("/v2/info")["frameworkId"]
        status, _ = m.request("POST", "/v2/apps", app)
        assert status == 201
        m.wait_until(lambda: framework_tasks(cluster, "svc_api.")[0], what="first launches")
        assert m.get("/v2/deployments"), "the deployment should still be running"
        m.kill()
        m.restart()
        assert m.get("/v2/info")["frameworkId"] == framework_id
        m.wait_until(lambda: settled(m, "/svc/api", 8, healthy=8), timeout=60, what="converged")
        active, done = framework_tasks(cluster, "svc_api.")
        ids = {t["id"] for t in m.get("/v2/apps/svc/api/tasks")["tasks"]}
        assert {t["id"] for t in active} == ids and len(ids) == 8
        assert done == [], f"tasks launched twice or lost: {done}"

        # A restart in steady state changes nothing: same tasks, none killed, none added.
        m.kill()
        m.restart()
        m.wait_until(lambda: settled(m, "/svc/api", 8, healthy=8), what="steady after restart")
        active, done = framework_tasks(cluster, "svc_api.")
        assert {t["id"] for t in active} == ids and done == []


@pytest.mark.cluster(agents=2, master_flags=FAST_LOSS)
def test_agent_loss_replaces_instances_per_unreachable_strategy(cluster, tmp_path):
    with start_marathon(cluster.master_address, tmp_path) as m:
        base = {"cmd": "sleep 600", "cpus": 0.05, "mem": 16, "instances": 4}
        assert m.request("POST", "/v2/apps", {**base, "id": "/replace"})[0] == 201
        keep = {"inactiveAfterSeconds": 300, "expungeAfterSeconds": 600}
        body = {**base, "id": "/keep", "unreachableStrategy": keep}
        assert m.request("POST", "/v2/apps", body)[0] == 201
        m.wait_until(lambda: settled(m, "/replace", 4) and settled(m, "/keep", 4), what="up")
        tasks = m.get("/v2/tasks")["tasks"]
        # Lose the agent that runs most of them.
        by_agent: dict[str, int] = {}
        for t in tasks:
            by_agent[t["slaveId"]] = by_agent.get(t["slaveId"], 0) + 1
        lost = max(by_agent, key=by_agent.__getitem__)
        agents = {a["id"]: a for a in cluster.state()["slaves"]}
        victim = next(
            p for p in cluster.agents if int(agents[lost]["pid"].rsplit(":", 1)[1]) == p.port
        )
        lost_replace = sum(1 for t in tasks if t["slaveId"] == lost and t["appId"] == "/replace")
        lost_keep = sum(1 for t in tasks if t["slaveId"] == lost and t["appId"] == "/keep")
        victim.kill()

        def replaced():
            app = m.get("/v2/apps/replace")["app"]
            on_lost = [t for t in app["tasks"] if t["slaveId"] == lost]
            return not on_lost and app["tasksRunning"] == 4 and not app["deployments"]

        m.wait_until(replaced, timeout=60, what="/replace instances replaced elsewhere")

        def kept():
            keep_tasks = m.get("/v2/apps/keep/tasks")["tasks"]
            unreachable = [t for t in keep_tasks if t["state"] == "TASK_UNREACHABLE"]
            return len(unreachable) == lost_keep and len(keep_tasks) == 4

        m.wait_until(kept, timeout=30, what="/keep instances kept while unreachable")
        assert lost_replace + lost_keep > 0


@pytest.mark.cluster(agents=2, master_flags=FAST_LOSS)
def test_agent_loss_replaces_a_pod_instance_elsewhere(cluster, tmp_path):
    # A pod's default unreachableStrategy (0 and 0): replaced as soon as it is unreachable.
    pod = {
        "id": "/shelf",
        "containers": [
            {
                "name": "main",
                "exec": {"command": {"shell": "exec sleep 600"}},
                "resources": {"cpus": 0.05, "mem": 16},
            }
        ],
    }
    with start_marathon(cluster.master_address, tmp_path) as m:
        assert m.request("POST", "/v2/pods", pod)[0] == 201

        def stable() -> dict | None:
            status = m.get("/v2/pods/shelf::status")
            instances = status["instances"]
            if status["status"] != "STABLE" or len(instances) != 1:
                return None
            return dict(instances[0])

        first = m.wait_until(stable, 60, "the pod up")
        agents = {a["id"]: a for a in cluster.state()["slaves"]}
        port = int(agents[first["agentId"]]["pid"].rsplit(":", 1)[1])
        next(p for p in cluster.agents if p.port == port).kill()

        def elsewhere() -> dict | None:
            now = stable()
            return now if now and now["agentId"] != first["agentId"] else None

        second = m.wait_until(elsewhere, 60, "the instance replaced on the other agent")
        assert second["id"] != first["id"]
        m.wait_until(lambda: not m.get("/v2/deployments"), 30, "no deployment left")
        active, _ = framework_tasks(cluster, "shelf.")
        assert [t["id"] for t in active] == [f"{second['id']}.main"]
