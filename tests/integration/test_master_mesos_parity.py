"""A real master and agent answer as Mesos' master does where butte used to differ:
``view_roles`` hiding the reservations of roles a principal may not view in ``/slaves``,
``/state`` and GET_AGENTS, an agent's AgentInfo resources after RESERVE and CREATE,
FRAMEWORK_UPDATED on re-subscription and not on disconnection, the ``/master/tasks`` query
parameters, and the ``registrar/*`` metrics (tests/unit/test_master_parity_views.py has the
details)."""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from butte.core.auth import basic_header
from butte.core.codec import RecordIOReader
from butte.core.resources import Resources, parse_resources
from butte.testing.cluster import ClusterHandle, daemons_missing, start_cluster
from butte.testing.require import require

pytestmark = pytest.mark.integration

SECRETS = {"ops": "ops-Secret-v1", "alice": "alice-Secret-v2"}
ACLS = {
    "view_roles": [
        {"principals": {"values": ["ops"]}, "roles": {"type": "ANY"}},
        {"principals": {"values": ["alice"]}, "roles": {"values": ["a"]}},
        {"principals": {"type": "ANY"}, "roles": {"type": "NONE"}},
    ]
}
RESOURCES = "cpus:4;mem:1024;disk:1000;ports:[31000-31100];cpus(static):1;mem(static):64"


def auth(principal: str) -> dict[str, str]:
    return {"Authorization": basic_header(principal, SECRETS[principal])}


def dyn(name: str, value: float, role: str, **disk: Any) -> dict[str, Any]:
    res: dict[str, Any] = {
        "name": name,
        "type": "SCALAR",
        "scalar": {"value": value},
        "reservations": [{"type": "DYNAMIC", "role": role, "principal": "ops"}],
    }
    if disk:
        res["disk"] = disk
    return res


class Stream:
    """A RecordIO event stream read in the background into a queue."""

    def __init__(self, response: requests.Response) -> None:
        self.response = response
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = RecordIOReader()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for chunk in self.response.iter_content(chunk_size=None):
                for record in self._reader.feed(chunk):
                    self.events.put(json.loads(record))
        except (requests.RequestException, ValueError, AttributeError):
            pass  # closed under the reading thread

    def next(self, kind: str, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            event = self.events.get(timeout=max(deadline - time.monotonic(), 0.01))
            if event["type"] == kind:
                return event

    def kinds_within(self, seconds: float) -> list[str]:
        """The types of the events that arrive within ``seconds``."""
        out = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                out.append(self.events.get(timeout=left)["type"])
            except queue.Empty:
                break
        return out

    def close(self) -> None:
        # The reading thread's read holds the connection until it returns (at the next
        # heartbeat, up to 15 s away): shutting the socket down ends that read at once.
        with contextlib.suppress(AttributeError, OSError):
            self.response.raw._fp.fp.raw._sock.shutdown(socket.SHUT_RDWR)
        self.response.close()


class Framework:
    """A MULTI_ROLE framework of role 'a' speaking the scheduler API with requests."""

    def __init__(self, master: str, framework_id: str | None = None) -> None:
        self.master = master
        info: dict[str, Any] = {
            "user": "root",
            "name": "parity",
            "roles": ["a"],
            "capabilities": [{"type": "MULTI_ROLE"}, {"type": "RESERVATION_REFINEMENT"}],
            "failover_timeout": 600,
        }
        body: dict[str, Any] = {"type": "SUBSCRIBE", "subscribe": {"framework_info": info}}
        if framework_id is not None:
            info["id"] = {"value": framework_id}
            body["framework_id"] = {"value": framework_id}
        response = requests.post(f"{master}/api/v1/scheduler", json=body, stream=True, timeout=30)
        assert response.status_code == 200, response.text
        self.stream_id = response.headers["Mesos-Stream-Id"]
        self.stream = Stream(response)
        self.id = self.stream.next("SUBSCRIBED")["subscribed"]["framework_id"]["value"]

    def call(self, kind: str, payload: dict[str, Any] | None = None) -> requests.Response:
        body: dict[str, Any] = {"type": kind, "framework_id": {"value": self.id}}
        if payload is not None:
            body[kind.lower()] = payload
        headers = {"Mesos-Stream-Id": self.stream_id}
        return requests.post(
            f"{self.master}/api/v1/scheduler", json=body, headers=headers, timeout=10
        )


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator[tuple[ClusterHandle, Framework]]:
    if daemons_missing():
        require(daemons_missing(), "a real cluster")
    tmp = tmp_path_factory.mktemp("parity")
    creds = tmp / "credentials"
    creds.write_text("".join(f"{p} {s}\n" for p, s in SECRETS.items()))
    flags = [
        "--authenticate_http_readonly",
        "--authenticate_http_readwrite",
        f"--credentials={creds}",
        f"--acls={json.dumps(ACLS)}",
    ]
    with start_cluster(
        tmp, master_flags=flags, resources=RESOURCES, http_auth=("ops", SECRETS["ops"])
    ) as cluster:
        agent_id = cluster.state()["slaves"][0]["id"]
        for kind, key, items in (
            ("RESERVE_RESOURCES", "resources", [dyn("cpus", 1, "a"), dyn("disk", 100, "a")]),
            ("RESERVE_RESOURCES", "resources", [dyn("mem", 64, "b")]),
            (
                "CREATE_VOLUMES",
                "volumes",
                [
                    dyn(
                        "disk",
                        50,
                        "a",
                        persistence={"id": "v1", "principal": "ops"},
                        volume={"container_path": "data", "mode": "RW"},
                    )
                ],
            ),
        ):
            body = {"type": kind, kind.lower(): {"agent_id": {"value": agent_id}, key: items}}
            answer = requests.post(
                cluster.master_url + "/api/v1", json=body, headers=auth("ops"), timeout=10
            )
            assert answer.status_code == 202, answer.text
        framework = Framework(cluster.master_url)
        try:
            yield cluster, framework
        finally:
            framework.stream.close()


def _get(cluster: ClusterHandle, path: str, principal: str = "ops") -> Any:
    answer = requests.get(cluster.master_url + path, headers=auth(principal), timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _call(cluster: ClusterHandle, kind: str, principal: str = "ops") -> Any:
    answer = requests.post(
        cluster.master_url + "/api/v1", json={"type": kind}, headers=auth(principal), timeout=10
    )
    assert answer.status_code == 200, answer.text
    return answer.json()[kind.lower()]


def test_agent_info_shows_the_resources_the_agent_was_started_with(env):
    cluster, _ = env
    [agent] = _call(cluster, "GET_AGENTS")["agents"]
    assert agent["agent_info"]["resources"] == parse_resources(RESOURCES).to_json("post")
    total = Resources.from_json(agent["total_resources"])
    assert total.reserved("b") == Resources.from_json([dyn("mem", 64, "b")])
    [slave] = _get(cluster, "/master/slaves")["slaves"]
    assert sorted(slave["reserved_resources_full"]) == ["a", "b", "static"]
    volumes = [
        r for r in slave["reserved_resources_full"]["a"] if "persistence" in r.get("disk", {})
    ]
    assert [v["disk"]["persistence"]["id"] for v in volumes] == ["v1"]
    assert slave["resources"]["cpus"] == 5.0  # the total, as Mesos' /slaves has it


def test_view_roles_hides_the_reservations_of_roles_a_principal_may_not_view(env):
    cluster, _ = env
    [mine] = _get(cluster, "/master/slaves", "alice")["slaves"]
    assert sorted(mine["reserved_resources"]) == ["a"]
    assert sorted(mine["reserved_resources_full"]) == ["a"]
    [everything] = _get(cluster, "/master/slaves", "ops")["slaves"]
    assert sorted(everything["reserved_resources"]) == ["a", "b", "static"]
    [in_state] = _get(cluster, "/master/state", "alice")["slaves"]
    assert sorted(in_state["reserved_resources"]) == ["a"]
    [summary] = _get(cluster, "/master/state-summary", "alice")["slaves"]
    assert sorted(summary["reserved_resources"]) == ["a"]

    for agents in (
        _call(cluster, "GET_AGENTS", "alice"),
        _call(cluster, "GET_STATE", "alice")["get_agents"],
    ):
        [agent] = agents["agents"]
        roles = {r["role"] for r in agent["total_resources"]}
        assert roles == {"*", "a"}
        assert all("reservations" not in r for r in agent["agent_info"]["resources"])
    [agent] = _call(cluster, "GET_AGENTS", "ops")["agents"]
    assert {r["role"] for r in agent["total_resources"]} == {"*", "a", "b", "static"}


def test_framework_updated_on_resubscription_not_on_disconnection(cluster_factory, tmp_path):
    cluster = cluster_factory()
    url = cluster.master_url
    body = {"type": "SUBSCRIBE"}
    events = Stream(requests.post(url + "/api/v1", json=body, stream=True, timeout=30))
    try:
        events.next("SUBSCRIBED")
        first = Framework(url)
        assert events.next("FRAMEWORK_ADDED")["framework_added"]["framework"]["connected"]
        first.stream.close()  # the framework's connection drops
        assert "FRAMEWORK_UPDATED" not in events.kinds_within(2.0)
        [fw] = _call_open(url, "GET_FRAMEWORKS")["frameworks"]
        assert (fw["connected"], fw["active"]) == (False, False)
        assert "unregistered_time" not in fw
        again = Framework(url, first.id)
        updated = events.next("FRAMEWORK_UPDATED")["framework_updated"]["framework"]
        assert updated["connected"] is True
        assert (
            updated["reregistered_time"]["nanoseconds"] > updated["registered_time"]["nanoseconds"]
        )
        again.stream.close()
    finally:
        events.close()


def _call_open(url: str, kind: str) -> Any:
    answer = requests.post(url + "/api/v1", json={"type": kind}, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()[kind.lower()]


def test_tasks_query_parameters_are_read_as_mesos_reads_them(env):
    cluster, framework = env
    # The framework holds its offers (it never declines): the master lists them.
    deadline = time.monotonic() + 30
    while True:
        [listed] = _call(cluster, "GET_FRAMEWORKS")["frameworks"]
        if listed.get("offers"):
            break
        assert time.monotonic() < deadline, listed
        time.sleep(0.2)
    offer = listed["offers"][0]
    tasks = [
        {
            "name": name,
            "task_id": {"value": name},
            "agent_id": offer["agent_id"],
            "resources": [
                {
                    "name": "cpus",
                    "type": "SCALAR",
                    "scalar": {"value": 0.1},
                    "allocation_info": {"role": "a"},
                }
            ],
            "command": {"value": "true", "user": "root"},
        }
        for name in ("one", "two")
    ]
    accept = {
        "offer_ids": [offer["id"]],
        "operations": [{"type": "LAUNCH", "launch": {"task_infos": tasks}}],
    }
    assert framework.call("ACCEPT", accept).status_code == 202
    deadline = time.monotonic() + 30
    while sum(bool(t["statuses"]) for t in _get(cluster, "/master/tasks")["tasks"]) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.2)

    def ids(query: str) -> list[str]:
        return [t["id"] for t in _get(cluster, "/master/tasks?" + query)["tasks"]]

    newest_first = ids("")
    assert sorted(newest_first) == ["one", "two"]
    started = {
        t["id"]: t["statuses"][0]["timestamp"] for t in _get(cluster, "/master/tasks")["tasks"]
    }
    assert started[newest_first[0]] >= started[newest_first[1]]
    assert ids("limit=abc") == newest_first  # the default limit, not a 400
    assert ids("order=sideways") == newest_first  # anything but 'asc' is 'des'
    if started["one"] != started["two"]:
        assert ids("order=asc") == newest_first[::-1]
    assert ids("offset=-1") == []  # a size_t far past the end
    assert ids("limit=-1") == newest_first
    assert ids("limit=0x1") == newest_first[:1]
    assert _get(cluster, "/master/tasks?task_id=one")["tasks"][0]["user"] == "root"


def test_registrar_metrics(env):
    cluster, _ = env
    metrics = _get(cluster, "/metrics/snapshot")
    assert metrics["registrar/queued_operations"] == 0.0
    assert metrics["registrar/registry_size_bytes"] > 100
    assert metrics["registrar/state_fetch_ms"] >= 0.0
    # Admission, two reservations and a volume: several writes, so the timer's statistics.
    assert metrics["registrar/state_store_ms/count"] >= 4
    assert (
        metrics["registrar/state_store_ms/min"]
        <= metrics["registrar/state_store_ms/p50"]
        <= metrics["registrar/state_store_ms/max"]
    )
