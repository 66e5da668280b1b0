"""The agent's own authentication, end to end on one real cluster: executors get a signed
token in MESOS_EXECUTOR_AUTHENTICATION_TOKEN and the executor API accepts a call only with
the caller's own token (401 without or with a forged one, 403 for another executor); the
agent's read-only and read-write endpoints want HTTP Basic credentials (401 with the
agent's realm) while /health stays open; the master's files forwarding and the CLI's
`task kill` keep working with the operator's credentials; no secret appears in logs or
state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from butte.cli.top import container_usage
from butte.core import jwt
from butte.core.auth import basic_header

pytestmark = pytest.mark.integration

OPS = ("ops", "ops-Secret-a81")
EXECUTOR_KEY = b"executor-Key-d52e9"


def auth() -> dict[str, str]:
    return {"Authorization": basic_header(*OPS)}


def _wait_for(predicate, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_executor_tokens_and_agent_http_authentication(cluster_factory, tmp_path) -> None:
    creds = tmp_path / "http-credentials"
    creds.write_text(json.dumps({"credentials": [{"principal": OPS[0], "secret": OPS[1]}]}))
    key = tmp_path / "executor.key"
    key.write_bytes(EXECUTOR_KEY)
    cluster = cluster_factory(
        agent_flags=[
            "--authenticate_http_executors",
            f"--executor_secret_key={key}",
            "--authenticate_http_readonly",
            "--authenticate_http_readwrite",
            f"--http_credentials={creds}",
        ],
    )
    agent = cluster.agents[0]
    work_dir = Path(agent.work_dir)
    # A task through the built-in command executor: it must present its token to run at all.
    command = [sys.executable, "-m", "butte", "run", "--master", cluster.master_address]
    command += ["--name", "tok", "--resources", "cpus:0.1;mem:16", "--command"]
    command += ["printenv MESOS_EXECUTOR_AUTHENTICATION_TOKEN > token; sleep 120"]
    output = open(tmp_path / "run.out", "w")  # noqa: SIM115 - closed in finally
    runner = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        token_file = _wait_for(
            lambda: next(
                (p for p in work_dir.glob("**/runs/*/token") if p.parent.name != "latest"), None
            )
        )
        token = _wait_for(lambda: token_file.read_text().strip())
        run_dir = token_file.parent
        container_id = run_dir.name
        executor_id = run_dir.parent.parent.name
        framework_id = run_dir.parent.parent.parent.parent.name
        claims = jwt.decode(token, EXECUTOR_KEY)
        assert claims == {"fid": framework_id, "eid": executor_id, "cid": container_id}

        url = agent.url + "/api/v1/executor"
        heartbeat = {
            "type": "HEARTBEAT",
            "framework_id": {"value": framework_id},
            "executor_id": {"value": executor_id},
        }

        def post(body: dict, token_value: str | None) -> requests.Response:
            headers = {"Authorization": f"Bearer {token_value}"} if token_value else {}
            return requests.post(url, json=body, headers=headers, timeout=10)

        missing = post(heartbeat, None)
        assert missing.status_code == 401
        assert missing.headers["WWW-Authenticate"] == 'Bearer realm="mesos-agent-executor"'
        forged = jwt.encode(jwt.executor_claims(framework_id, executor_id, container_id), b"x")
        assert post(heartbeat, forged).status_code == 401
        assert post(heartbeat, token[:-2]).status_code == 401
        other = {**heartbeat, "executor_id": {"value": "someone-else"}}
        assert post(other, token).status_code == 403
        stale = jwt.encode(jwt.executor_claims(framework_id, executor_id, "old"), EXECUTOR_KEY)
        assert post(heartbeat, stale).status_code == 403
        assert post(heartbeat, token).status_code == 202

        # The agent's HTTP endpoints: Basic credentials per realm; /health open.
        assert requests.get(agent.url + "/health", timeout=10).status_code == 200
        refused = requests.get(agent.url + "/state", timeout=10)
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"] == 'Basic realm="mesos-agent-readonly"'
        state = requests.get(agent.url + "/state", headers=auth(), timeout=10)
        assert state.status_code == 200
        operator = {"type": "GET_HEALTH"}
        refused = requests.post(agent.url + "/api/v1", json=operator, timeout=10)
        assert refused.status_code == 401
        assert refused.headers["WWW-Authenticate"] == 'Basic realm="mesos-agent-readwrite"'
        assert requests.post(agent.url + "/api/v1", json=operator, headers=auth(), timeout=10).ok
        # The master forwards the operator's credentials to the agent.
        path = f"/frameworks/{framework_id}/executors/{executor_id}/runs/latest"
        browse = requests.get(
            cluster.master_url + "/files/browse", params={"path": path}, headers=auth(), timeout=10
        )
        assert browse.status_code == 200, browse.text
        assert any(e["path"].endswith("/token") for e in browse.json())
        listing = requests.post(
            cluster.master_url + "/api/v1",
            json={"type": "LIST_FILES", "list_files": {"path": path}},
            headers=auth(),
            timeout=10,
        )
        assert listing.status_code == 200, listing.text
        no_creds = requests.get(
            cluster.master_url + "/files/browse", params={"path": path}, timeout=10
        )
        assert no_creds.status_code == 401

        # `butte top` reads the agents' /monitor/statistics with the operator's credentials.
        agents = requests.post(
            cluster.master_url + "/api/v1", json={"type": "GET_AGENTS"}, timeout=10
        ).json()["get_agents"]["agents"]
        assert container_usage(agents) == []  # 401: left out
        usage = _wait_for(lambda: container_usage(agents, credentials=OPS))
        assert any(entry.get("executor_id") == executor_id for entry in usage), usage

        # The CLI kills the task through the agent's operator API with the same credentials.
        env = {**os.environ, "BUTTE_PRINCIPAL": OPS[0], "BUTTE_SECRET": OPS[1]}
        tasks = cluster.state()["frameworks"][0]["tasks"]
        kill = subprocess.run(
            [sys.executable, "-m", "butte", "task", "kill", tasks[0]["id"], "--master",
             cluster.master_address],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert kill.returncode == 0, kill.stdout + kill.stderr

        texts = [agent.log_text(), cluster.master.log_text(), state.text]
        texts.append(requests.get(agent.url + "/flags", headers=auth(), timeout=10).text)
        for text in texts:
            assert OPS[1] not in text
            assert EXECUTOR_KEY.decode() not in text
            assert token not in text
    finally:
        runner.kill()
        runner.wait()
        output.close()
        print((tmp_path / "run.out").read_text())
