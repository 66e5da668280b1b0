"""Authorization of views end to end: with view_frameworks / view_tasks / view_executors /
access_sandboxes ACLs each principal sees only the frameworks, tasks and executors whose
user it may view, in /state, /state-summary, /frameworks, /tasks, the v1 GET_* calls, the
web UI's listings and the operator event stream (objects left out, not 403, as Mesos);
another user's sandbox answers 403, from the master and from the agent, whose /state and
GET_* calls are filtered too (its own --acls).
An operator allowed ANY sees everything."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
import requests

from butte.core.auth import basic_header
from butte.core.codec import RecordIOReader

pytestmark = pytest.mark.integration

SECRETS = {"ops": "ops-Secret-v1", "alice": "alice-Secret-v2"}


def _users_rule(key: str) -> list[dict[str, Any]]:
    return [
        {"principals": {"values": ["ops"]}, key: {"type": "ANY"}},
        {"principals": {"values": ["alice"]}, key: {"values": ["alice"]}},
        {"principals": {"type": "ANY"}, key: {"type": "NONE"}},
    ]


ACLS = {
    action: _users_rule("users")
    for action in ("view_frameworks", "view_tasks", "view_executors", "access_sandboxes")
}


def auth(principal: str) -> dict[str, str]:
    return {"Authorization": basic_header(principal, SECRETS[principal])}


class Framework:
    """A framework subscribed as ``user`` that launches one sleeping task on its first
    offer; its stream is read in the background."""

    def __init__(self, master: str, user: str) -> None:
        self.master = master
        info = {"user": user, "name": f"fw-{user}"}
        body = {"type": "SUBSCRIBE", "subscribe": {"framework_info": info}}
        self.response = requests.post(
            master + "/api/v1/scheduler", json=body, stream=True, timeout=30
        )
        assert self.response.status_code == 200
        self.stream_id = self.response.headers["Mesos-Stream-Id"]
        self.task_id = f"task-{user}"
        self.framework_id: dict | None = None
        self.launched = threading.Event()
        self._reader = RecordIOReader()
        self._chunks = self.response.iter_content(chunk_size=None)
        while self.framework_id is None:
            for event in self._events(next(self._chunks)):
                if event["type"] == "SUBSCRIBED":
                    self.framework_id = event["subscribed"]["framework_id"]
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _events(self, chunk: bytes) -> list[dict]:
        return [json.loads(record) for record in self._reader.feed(chunk)]

    def _read(self) -> None:
        try:
            for chunk in self._chunks:
                for event in self._events(chunk):
                    if event["type"] == "OFFERS" and not self.launched.is_set():
                        self._launch(event["offers"]["offers"][0])
        except (requests.RequestException, ValueError, AttributeError):
            pass  # the stream was closed (close() under the reading thread)

    def _launch(self, offer: dict) -> None:
        task = {
            "name": self.task_id,
            "task_id": {"value": self.task_id},
            "agent_id": offer["agent_id"],
            "resources": [
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                {"name": "mem", "type": "SCALAR", "scalar": {"value": 16}},
            ],
            "command": {"value": "sleep 120"},
        }
        call = {
            "type": "ACCEPT",
            "framework_id": self.framework_id,
            "accept": {
                "offer_ids": [offer["id"]],
                "operations": [{"type": "LAUNCH", "launch": {"task_infos": [task]}}],
            },
        }
        headers = {"Mesos-Stream-Id": self.stream_id}
        answer = requests.post(
            self.master + "/api/v1/scheduler", json=call, headers=headers, timeout=10
        )
        if answer.status_code == 202:
            self.launched.set()

    def teardown(self) -> None:
        call = {"type": "TEARDOWN", "framework_id": self.framework_id}
        headers = {"Mesos-Stream-Id": self.stream_id}
        requests.post(self.master + "/api/v1/scheduler", json=call, headers=headers, timeout=10)

    def close(self) -> None:
        self.response.close()


def _ids(frameworks: list[dict]) -> set[str]:
    return {f.get("id") or f["framework_info"]["id"]["value"] for f in frameworks}


def test_each_principal_sees_only_what_it_may_view(cluster_factory, tmp_path) -> None:
    creds = tmp_path / "credentials"
    creds.write_text("".join(f"{p} {s}\n" for p, s in SECRETS.items()))
    cluster = cluster_factory(
        master_flags=[
            "--authenticate_http_readonly",
            "--authenticate_http_readwrite",
            f"--credentials={creds}",
            f"--acls={json.dumps(ACLS)}",
        ],
        agent_flags=[
            "--authenticate_http_readonly",
            "--authenticate_http_readwrite",
            f"--http_credentials={creds}",
            f"--acls={json.dumps(ACLS)}",
            # The frameworks' users (alice, bob) name ACL subjects, not accounts here.
            "--switch_user=false",
        ],
        http_auth=("ops", SECRETS["ops"]),
    )
    url = cluster.master_url
    alice_fw = Framework(url, "alice")
    assert alice_fw.launched.wait(30)
    bob_fw = Framework(url, "bob")
    assert bob_fw.launched.wait(30)
    mine, theirs = alice_fw.framework_id["value"], bob_fw.framework_id["value"]

    def get(path: str, principal: str) -> Any:
        answer = requests.get(url + path, headers=auth(principal), timeout=10)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def call(kind: str, principal: str) -> Any:
        answer = requests.post(
            url + "/api/v1", json={"type": kind}, headers=auth(principal), timeout=10
        )
        assert answer.status_code == 200, answer.text
        return answer.json()[kind.lower()]

    # Both tasks are known to the master before looking.
    cluster.wait_until(lambda s: sum(len(f["tasks"]) for f in s["frameworks"]) == 2, timeout=30)
    state = get("/master/state", "ops")
    assert _ids(state["frameworks"]) == {mine, theirs}
    state = get("/master/state", "alice")
    assert _ids(state["frameworks"]) == {mine}
    assert [t["id"] for t in state["frameworks"][0]["tasks"]] == ["task-alice"]
    assert _ids(get("/master/frameworks", "alice")["frameworks"]) == {mine}
    assert _ids(get("/master/state-summary", "alice")["frameworks"]) == {mine}
    assert [t["id"] for t in get("/master/tasks", "alice")["tasks"]] == ["task-alice"]
    assert len(get("/master/tasks", "ops")["tasks"]) == 2

    assert _ids(call("GET_FRAMEWORKS", "alice")["frameworks"]) == {mine}
    tasks = call("GET_TASKS", "alice")["tasks"]
    assert [t["task_id"]["value"] for t in tasks] == ["task-alice"]
    assert len(call("GET_TASKS", "ops")["tasks"]) == 2
    got = call("GET_STATE", "alice")
    assert _ids(got["get_frameworks"]["frameworks"]) == {mine}
    assert [t["task_id"]["value"] for t in got["get_tasks"]["tasks"]] == ["task-alice"]
    executors = call("GET_EXECUTORS", "ops")["executors"]
    mine_only = call("GET_EXECUTORS", "alice")["executors"]
    assert len(mine_only) < len(executors) or not executors
    for entry in mine_only:
        assert entry["executor_info"]["framework_id"]["value"] == mine

    # The web UI's JSON.
    rows = get("/master/ui/frameworks", "alice")["rows"]
    assert {r["id"] for r in rows} == {mine}
    assert len(get("/master/ui/frameworks", "ops")["rows"]) == 2
    page = get("/master/ui/tasks", "alice")
    assert [t["id"] for t in page["tasks"]] == ["task-alice"] and page["total"] == 1
    assert get("/master/ui/tasks", "ops")["total"] == 2

    # Sandboxes: access_sandboxes by the framework's user.
    def browse(framework_id: str, task_id: str, principal: str) -> int:
        path = f"/frameworks/{framework_id}/executors/{task_id}/runs/latest"
        return requests.get(
            url + "/files/browse", params={"path": path}, headers=auth(principal), timeout=10
        ).status_code

    assert browse(mine, "task-alice", "alice") == 200
    assert browse(theirs, "task-bob", "alice") == 403
    assert browse(theirs, "task-bob", "ops") == 200
    # The agent checks access_sandboxes itself too (its own --acls).
    agent = cluster.agents[0].url

    def agent_browse(framework_id: str, task_id: str, principal: str) -> int:
        path = f"/frameworks/{framework_id}/executors/{task_id}/runs/latest"
        return requests.get(
            agent + "/files/browse", params={"path": path}, headers=auth(principal), timeout=10
        ).status_code

    assert agent_browse(mine, "task-alice", "alice") == 200
    assert agent_browse(theirs, "task-bob", "alice") == 403
    assert agent_browse(theirs, "task-bob", "ops") == 200
    # ... and filters its own state.
    agent_state = requests.get(agent + "/state", headers=auth("alice"), timeout=10).json()
    assert _ids(agent_state["frameworks"]) == {mine}
    [executor] = agent_state["frameworks"][0]["executors"]
    assert [t["id"] for t in executor["tasks"]] == ["task-alice"]
    full = requests.get(agent + "/state", headers=auth("ops"), timeout=10).json()
    assert _ids(full["frameworks"]) == {mine, theirs}
    agent_tasks = requests.post(
        agent + "/api/v1", json={"type": "GET_TASKS"}, headers=auth("alice"), timeout=10
    ).json()["get_tasks"]
    assert [t["task_id"]["value"] for t in agent_tasks["launched_tasks"]] == ["task-alice"]

    # The operator event stream: alice's snapshot and events hold only her framework.
    stream = requests.post(
        url + "/api/v1",
        json={"type": "SUBSCRIBE"},
        headers={**auth("alice"), "Accept": "application/json"},
        stream=True,
        timeout=30,
    )
    assert stream.status_code == 200
    reader = RecordIOReader()
    chunks = stream.iter_content(chunk_size=None)
    events: list[dict] = []

    def next_event(kind: str) -> dict:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for event in events:
                if event["type"] == kind:
                    events.remove(event)
                    return event
            events.extend(json.loads(r) for r in reader.feed(next(chunks)))
        raise AssertionError(f"no {kind} event")

    subscribed = next_event("SUBSCRIBED")["subscribed"]["get_state"]
    assert _ids(subscribed["get_frameworks"]["frameworks"]) == {mine}
    assert {t["task_id"]["value"] for t in subscribed["get_tasks"]["tasks"]} == {"task-alice"}
    bob_fw.teardown()
    alice_fw.teardown()
    removed = next_event("FRAMEWORK_REMOVED")["framework_removed"]
    assert removed["framework_info"]["id"]["value"] == mine  # bob's went by unseen
    updated = next_event("TASK_UPDATED")["task_updated"]  # alice's task was killed
    assert updated["framework_id"]["value"] == mine
    for event in events:
        if event["type"] == "TASK_UPDATED":
            assert event["task_updated"]["framework_id"]["value"] == mine
    stream.close()
    alice_fw.close()
    bob_fw.close()


ANY_RULE = {"principals": {"type": "ANY"}}
OPS_RULE = {"principals": {"values": ["ops"]}}
# Nothing is allowed without a rule; the cluster itself needs agents to register and the
# test's frameworks to run, and ops may do everything.
STRICT_ACLS = {
    "permissive": False,
    "register_agents": [ANY_RULE],
    "register_frameworks": [ANY_RULE],
    "run_tasks": [ANY_RULE],
    "view_frameworks": [ANY_RULE],
    "view_tasks": [ANY_RULE],
    "view_executors": [ANY_RULE],
    "view_flags": [OPS_RULE],
    "get_endpoints": [OPS_RULE],
    "view_roles": [OPS_RULE],  # and no rule for alice
    "update_weights": [OPS_RULE],
}


def test_view_flags_view_roles_get_endpoints_and_update_weights(cluster_factory, tmp_path):
    """Mesos' VIEW_FLAGS (src/master/http.cpp `_flags`, readonly_handler.cpp), VIEW_ROLE
    (/roles, GET_ROLES, /weights, GET_WEIGHTS), GET_ENDPOINT_WITH_PATH (the
    AUTHORIZABLE_ENDPOINTS of src/common/authorization.cpp) and UPDATE_WEIGHT, which also
    guards the legacy ``PUT /weights`` (src/master/weights_handler.cpp)."""
    creds = tmp_path / "credentials"
    creds.write_text("".join(f"{p} {s}\n" for p, s in SECRETS.items()))
    auth_flags = ["--authenticate_http_readonly", "--authenticate_http_readwrite"]
    cluster = cluster_factory(
        master_flags=[*auth_flags, f"--credentials={creds}", f"--acls={json.dumps(STRICT_ACLS)}"],
        agent_flags=[
            *auth_flags,
            f"--http_credentials={creds}",
            f"--acls={json.dumps(STRICT_ACLS)}",
        ],
        http_auth=("ops", SECRETS["ops"]),
    )
    url, agent = cluster.master_url, cluster.agents[0].url

    def get(base: str, path: str, principal: str) -> requests.Response:
        return requests.get(base + path, headers=auth(principal), timeout=10)

    def call(base: str, body: dict, principal: str) -> requests.Response:
        return requests.post(base + "/api/v1", json=body, headers=auth(principal), timeout=10)

    # update_weights: the legacy endpoint as well as UPDATE_WEIGHTS.
    dev = [{"role": "dev", "weight": 2.5}]
    assert (
        requests.put(url + "/weights", json=dev, headers=auth("alice"), timeout=10).status_code
        == 403
    )
    v1 = {"type": "UPDATE_WEIGHTS", "update_weights": {"weight_infos": dev}}
    assert call(url, v1, "alice").status_code == 403
    assert get(url, "/weights", "ops").json() == []  # nothing changed
    assert requests.put(url + "/weights", json=dev, headers=auth("ops"), timeout=10).ok

    # view_roles: the role dev is left out of what alice sees.
    assert "dev" in [r["name"] for r in get(url, "/roles", "ops").json()["roles"]]
    assert get(url, "/roles", "alice").json() == {"roles": []}
    assert get(url, "/master/roles.json", "alice").json() == {"roles": []}
    assert get(url, "/weights", "ops").json() == dev
    assert get(url, "/weights", "alice").json() == []
    roles = call(url, {"type": "GET_ROLES"}, "alice").json()["get_roles"]
    assert roles.get("roles", []) == []
    seen = call(url, {"type": "GET_ROLES"}, "ops").json()["get_roles"]["roles"]
    assert "dev" in [r["name"] for r in seen]
    weights = call(url, {"type": "GET_WEIGHTS"}, "alice").json()["get_weights"]
    assert weights.get("weight_infos", []) == []
    assert call(url, {"type": "GET_WEIGHTS"}, "ops").json()["get_weights"]["weight_infos"] == dev

    # view_flags: /flags and GET_FLAGS forbidden, /state without them; on the agent too.
    for base in (url, agent):
        assert get(base, "/flags", "alice").status_code == 403
        assert "work_dir" in get(base, "/flags", "ops").json()["flags"]
        assert call(base, {"type": "GET_FLAGS"}, "alice").status_code == 403
        assert call(base, {"type": "GET_FLAGS"}, "ops").status_code == 200
        assert "flags" not in get(base, "/state", "alice").json()
        assert "work_dir" in get(base, "/state", "ops").json()["flags"]
    assert "flags" not in get(url, "/master/state.json", "alice").json()

    # get_endpoints: the metrics, and the agent's /containers and /monitor/statistics.
    for base, paths in (
        (url, ("/metrics/snapshot", "/master/metrics/snapshot", "/metrics")),
        (agent, ("/metrics/snapshot", "/metrics", "/containers", "/monitor/statistics")),
    ):
        for path in paths:
            assert get(base, path, "alice").status_code == 403, (base, path)
            assert get(base, path, "ops").status_code == 200, (base, path)
    # Paths outside Mesos' AUTHORIZABLE_ENDPOINTS are not guarded by get_endpoints.
    assert get(url, "/master/slaves", "alice").status_code == 200
    assert get(agent, "/slave(1)/state", "alice").status_code == 200
