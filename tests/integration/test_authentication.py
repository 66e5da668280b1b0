"""Authentication end to end: a master run with every --authenticate_* flag and a credentials
file, an agent with its --credential, and the clients people use: pymesos with
principal/secret, `butte run` and the operator CLI with BUTTE_PRINCIPAL/BUTTE_SECRET, plain
HTTP. Without credentials each realm answers 401 with its challenge; a framework acts only as
its own principal; /health and /version stay open; no secret shows up in logs or state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import requests

from butte.cli.local import AGENT_STOP_SIGNAL, HOST, ManagedProcess, free_port
from butte.core.auth import basic_header
from butte.core.codec import RecordIOReader
from butte.testing.pymesos_task import pymesos_runs_a_task
from butte.testing.require import require_module

pytestmark = pytest.mark.integration

SECRETS = {"ops": "ops-Secret-7f3", "fw": "fw-Secret-91a", "other": "other-Secret-2c4"}
AGENT_SECRET = "agent-Secret-5d0"
MASTER_FLAGS = [
    "--authenticate_frameworks",
    "--authenticate_agents",
    "--authenticate_http_readonly",
    "--authenticate_http_readwrite",
]


@pytest.fixture
def secured(cluster_factory, tmp_path):
    creds = tmp_path / "credentials.json"
    all_creds = {**SECRETS, "agent": AGENT_SECRET}
    creds.write_text(
        json.dumps({"credentials": [{"principal": p, "secret": s} for p, s in all_creds.items()]})
    )
    agent_cred = tmp_path / "agent-credential"
    agent_cred.write_text(f"agent {AGENT_SECRET}\n")
    return cluster_factory(
        master_flags=[*MASTER_FLAGS, f"--credentials={creds}"],
        agent_flags=[f"--credential={agent_cred}"],
        http_auth=("ops", SECRETS["ops"]),
    )


def auth(principal: str) -> dict[str, str]:
    return {"Authorization": basic_header(principal, SECRETS[principal])}


def test_realms_refuse_without_credentials_and_serve_with_them(secured) -> None:
    url = secured.master_url
    assert requests.get(url + "/health", timeout=10).status_code == 200
    assert requests.get(url + "/version", timeout=10).status_code == 200
    refused = requests.get(url + "/master/state", timeout=10)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == 'Basic realm="mesos-master-readonly"'
    wrong = {"Authorization": basic_header("ops", "not-the-secret")}
    assert requests.get(url + "/master/state", headers=wrong, timeout=10).status_code == 401
    state = requests.get(url + "/master/state", headers=auth("ops"), timeout=10)
    assert state.status_code == 200
    assert len(state.json()["slaves"]) == 1  # the agent registered with its credential
    call = {"type": "GET_HEALTH"}
    refused = requests.post(url + "/api/v1", json=call, timeout=10)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == 'Basic realm="mesos-master-readwrite"'
    assert requests.post(url + "/api/v1", json=call, headers=auth("ops"), timeout=10).ok
    subscribe = {"type": "SUBSCRIBE", "subscribe": {"framework_info": {"user": "u", "name": "x"}}}
    refused = requests.post(url + "/api/v1/scheduler", json=subscribe, timeout=10)
    assert refused.status_code == 401
    assert refused.headers["WWW-Authenticate"] == 'Basic realm="mesos-master-scheduler"'


def test_a_framework_acts_only_as_its_principal(secured) -> None:
    url = secured.master_url + "/api/v1/scheduler"
    info = {"user": "root", "name": "bound"}
    subscribe = {"type": "SUBSCRIBE", "subscribe": {"framework_info": info}}
    with requests.post(url, json=subscribe, headers=auth("fw"), stream=True, timeout=10) as s:
        assert s.status_code == 200
        stream_id = s.headers["Mesos-Stream-Id"]
        chunks = s.iter_content(chunk_size=None)  # kept: dropping it closes the stream
        first = next(chunks).decode()
        event = json.loads(first.split("\n", 1)[1][: int(first.split("\n", 1)[0])])
        assert event["type"] == "SUBSCRIBED", event
        framework_id = event["subscribed"]["framework_id"]
        revive = {"type": "REVIVE", "framework_id": framework_id}
        headers = {"Mesos-Stream-Id": stream_id}
        # Calls take the lean path with credentials and the full one without.
        ok = requests.post(url, json=revive, headers={**headers, **auth("fw")}, timeout=10)
        assert ok.status_code == 202, ok.text
        assert requests.post(url, json=revive, headers=headers, timeout=10).status_code == 401
        stolen = requests.post(url, json=revive, headers={**headers, **auth("other")}, timeout=10)
        assert stolen.status_code == 400  # Mesos' text (src/master/http.cpp)
        assert stolen.text == (
            "Authenticated principal 'other' does not match principal 'fw' set in `FrameworkInfo`"
        )
        state = requests.get(secured.master_url + "/state", headers=auth("ops"), timeout=10)
        [fw] = [f for f in state.json()["frameworks"] if f["id"] == framework_id["value"]]
        assert fw["principal"] == "fw"  # taken from the credentials
        # Another principal cannot take the framework over by re-subscribing with its id.
        takeover = {
            "type": "SUBSCRIBE",
            "framework_id": framework_id,
            "subscribe": {"framework_info": {**info, "id": framework_id}},
        }
        refused = requests.post(url, json=takeover, headers=auth("other"), timeout=10)
        # As Mesos: the stream opens, says why and ends (the framework keeps its own).
        assert refused.status_code == 200
        assert _events(refused) == [
            {
                "type": "ERROR",
                "error": {"message": "Changing framework's principal is not allowed."},
            }
        ]
    claimed = {"type": "SUBSCRIBE", "subscribe": {"framework_info": {**info, "principal": "fw"}}}
    refused = requests.post(url, json=claimed, headers=auth("other"), timeout=10)
    # Mesos' validation of the call (src/master/validation.cpp): 400 before any stream.
    assert refused.status_code == 400
    assert refused.text == (
        "Failed to validate scheduler::Call: Authenticated principal 'other' does not match "
        "principal 'fw' set in `FrameworkInfo`"
    )


def _events(response: requests.Response) -> list[dict]:
    """Every event of a scheduler stream the master ends by itself, heartbeats left out."""
    reader = RecordIOReader()
    events = [json.loads(r) for r in reader.feed(response.content)]
    return [e for e in events if e["type"] != "HEARTBEAT"]


def test_clients_log_in_and_secrets_stay_out_of_logs_and_state(secured) -> None:
    env = {**os.environ, "BUTTE_PRINCIPAL": "fw", "BUTTE_SECRET": SECRETS["fw"]}
    command = [sys.executable, "-m", "butte", "run", "--master", secured.master_address]
    command += ["--name", "authed", "--command", "true", "--resources", "cpus:0.1;mem:16"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    ops_env = {**os.environ, "BUTTE_PRINCIPAL": "ops", "BUTTE_SECRET": SECRETS["ops"]}
    listing = subprocess.run(
        [sys.executable, "-m", "butte", "tasks", "--all", "--json", "--master",
         secured.master_address],
        env=ops_env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert listing.returncode == 0, listing.stderr
    assert "authed" in listing.stdout
    denied = subprocess.run(
        [sys.executable, "-m", "butte", "agents", "--master", secured.master_address],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert denied.returncode != 0 and "401" in denied.stderr + denied.stdout
    texts = [secured.master.log_text(), *(a.log_text() for a in secured.agents)]
    for path in ("/master/state", "/flags", "/master/metrics/snapshot"):
        texts.append(requests.get(secured.master_url + path, headers=auth("ops"), timeout=10).text)
    texts.append(requests.get(secured.agents[0].url + "/flags", timeout=10).text)
    for text in texts:
        for secret in (*SECRETS.values(), AGENT_SECRET):
            assert secret not in text


def test_pymesos_with_principal_and_secret(secured) -> None:
    pymesos = require_module("pymesos")
    assert pymesos_runs_a_task(
        pymesos, secured.master_address, "pm-1", principal="fw", secret=SECRETS["fw"]
    ), "pymesos with credentials did not run its task"


ACLS = {
    "register_frameworks": [
        {"principals": {"values": ["fw"]}, "roles": {"values": ["*"]}},
        {"principals": {"type": "ANY"}, "roles": {"type": "NONE"}},
    ],
    "teardown_frameworks": [
        {"principals": {"values": ["ops"]}, "framework_principals": {"type": "ANY"}},
        {"principals": {"type": "ANY"}, "framework_principals": {"type": "NONE"}},
    ],
}


def test_acls_decide_who_registers_and_who_tears_down(cluster_factory, tmp_path) -> None:
    creds = tmp_path / "credentials"
    creds.write_text("".join(f"{p} {s}\n" for p, s in SECRETS.items()))
    cluster = cluster_factory(
        master_flags=[
            "--authenticate_frameworks",
            "--authenticate_http_readwrite",
            f"--credentials={creds}",
            f"--acls={json.dumps(ACLS)}",
        ]
    )
    url = cluster.master_url + "/api/v1/scheduler"

    def subscribe(principal: str, role: str) -> requests.Response:
        info = {"user": "root", "name": f"{principal}-{role}", "role": role}
        body = {"type": "SUBSCRIBE", "subscribe": {"framework_info": info}}
        return requests.post(url, json=body, headers=auth(principal), stream=True, timeout=10)

    # As Mesos (Master::_subscribe): 200, then an ERROR event, and the stream ends.
    refused = subscribe("fw", "web")
    assert refused.status_code == 200 and refused.headers["Mesos-Stream-Id"]
    assert _events(refused) == [
        {
            "type": "ERROR",
            "error": {"message": "Not authorized to register framework  with roles { web }"},
        }
    ]
    other = subscribe("other", "*")
    assert other.status_code == 200
    assert [e["type"] for e in _events(other)] == ["ERROR"]
    assert not cluster.state()["frameworks"]
    with subscribe("fw", "*") as stream:
        assert stream.status_code == 200
        chunks = stream.iter_content(chunk_size=None)  # kept: dropping it closes the stream
        first = next(chunks).decode()
        length, rest = first.split("\n", 1)
        framework_id = json.loads(rest[: int(length)])["subscribed"]["framework_id"]
        teardown = {"type": "TEARDOWN", "teardown": {"framework_id": framework_id}}
        api = cluster.master_url + "/api/v1"
        denied = requests.post(api, json=teardown, headers=auth("other"), timeout=10)
        assert denied.status_code == 403 and "teardown_frameworks" in denied.text
        assert requests.post(api, json=teardown, headers=auth("ops"), timeout=10).ok


def test_register_agents_acl_refuses_an_agent_of_another_principal(
    cluster_factory, tmp_path
) -> None:
    """As Mesos (Master::_registerSlave): an agent whose principal the ``register_agents``
    ACL refuses is not registered (nor shut down) and keeps retrying; it logs why."""
    creds = tmp_path / "credentials"
    creds.write_text("agent1 agent1-Secret\nbob bob-Secret\n")
    acls = {
        "register_agents": [
            {"principals": {"values": ["agent1"]}, "agents": {"type": "ANY"}},
            {"principals": {"type": "ANY"}, "agents": {"type": "NONE"}},
        ]
    }
    agent1 = tmp_path / "agent1-credential"
    agent1.write_text("agent1 agent1-Secret\n")
    cluster = cluster_factory(
        master_flags=[
            "--authenticate_agents",
            f"--credentials={creds}",
            f"--acls={json.dumps(acls)}",
        ],
        agent_flags=[f"--credential={agent1}"],
    )
    bob_credential = tmp_path / "bob-credential"
    bob_credential.write_text("bob bob-Secret\n")
    argv = [sys.executable, "-m", "butte", "agent", "--master", cluster.master_address]
    argv += ["--ip", HOST, "--port", str(free_port()), "--work_dir", str(tmp_path / "bob")]
    argv += [f"--credential={bob_credential}", "--resources", "cpus:1;mem:64"]
    argv += ["--registration_backoff_factor=100ms"]
    bob = ManagedProcess("bob", argv, tmp_path / "bob.log", stop_signal=AGENT_STOP_SIGNAL)
    bob.start()
    try:
        deadline = time.monotonic() + 20
        refused = "master refused this agent's registration: Not authorized to register agent "
        refused += "with principal 'bob'; retrying"
        while bob.log_tail(200).count(refused) < 2:  # refused, then refused again on retry
            assert bob.running(), bob.log_tail()
            assert time.monotonic() < deadline, bob.log_tail()
            time.sleep(0.1)
        assert "Refusing registration of agent at" in cluster.master.log_text()
        [agent] = cluster.state()["slaves"]  # agent1 only
        assert agent["port"] == cluster.agents[0].port
    finally:
        bob.stop()
