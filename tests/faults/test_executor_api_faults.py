"""Bad input on the agent's executor API while a real task runs: every malformed or invalid
call gets a clear 4xx, the agent keeps running, and the task is not disturbed."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import pytest
from fault_kit import AGENT_FLAGS, check_updates, command_task

from butte.core import task_states as ts

pytestmark = pytest.mark.integration


def post(url: str, body: bytes, headers: dict[str, str], method: str = "POST") -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def bad_calls(framework_id: str, executor_id: str) -> list[tuple[str, bytes, dict, str, int]]:
    """(what, body, headers, method, expected status)."""
    json_type = {"Content-Type": "application/json"}

    def call(**fields) -> bytes:
        body = {"framework_id": {"value": framework_id}, "executor_id": {"value": executor_id}}
        return json.dumps({**body, **fields}).encode()

    def update(**status) -> bytes:
        status = {"task_id": {"value": "e0"}, "state": ts.RUNNING, **status}
        status.setdefault("source", "SOURCE_EXECUTOR")
        status.setdefault("uuid", base64.b64encode(b"0123456789abcdef").decode())
        return call(type="UPDATE", update={"status": status})

    other = {"framework_id": {"value": "nope"}, "executor_id": {"value": executor_id}}
    return [
        ("GET", b"", {}, "GET", 405),
        (
            "form content type",
            b"{}",
            {"Content-Type": "application/x-www-form-urlencoded"},
            "POST",
            415,
        ),
        ("text/plain", b"{}", {"Content-Type": "text/plain"}, "POST", 415),
        ("protobuf", b"\x08\x01", {"Content-Type": "application/x-protobuf"}, "POST", 415),
        ("not JSON", b"{nope", json_type, "POST", 400),
        ("JSON array", b"[1,2]", json_type, "POST", 400),
        ("no type", call(), json_type, "POST", 400),
        ("unknown type", call(type="BOGUS"), json_type, "POST", 400),
        ("SUBSCRIBE without body", call(type="SUBSCRIBE"), json_type, "POST", 400),
        (
            "unknown framework",
            json.dumps({**other, "type": "MESSAGE", "message": {"data": "aGk="}}).encode(),
            json_type,
            "POST",
            400,
        ),
        (
            "unknown executor",
            call(type="MESSAGE", executor_id={"value": "x"}, message={"data": "aGk="}),
            json_type,
            "POST",
            400,
        ),
        (
            "Accept text/html",
            call(type="HEARTBEAT"),
            {**json_type, "Accept": "text/html"},
            "POST",
            406,
        ),
        ("UPDATE without update", call(type="UPDATE"), json_type, "POST", 400),
        ("UPDATE bad uuid", update(uuid="***"), json_type, "POST", 400),
        ("UPDATE short uuid", update(uuid=base64.b64encode(b"x").decode()), json_type, "POST", 400),
        ("UPDATE from master", update(source="SOURCE_MASTER"), json_type, "POST", 400),
        ("UPDATE TASK_STAGING", update(state=ts.STAGING), json_type, "POST", 400),
        ("UPDATE unknown state", update(state="TASK_BOGUS"), json_type, "POST", 400),
        ("UPDATE other executor", update(executor_id={"value": "x"}), json_type, "POST", 400),
        ("UPDATE backwards", update(state=ts.STARTING), json_type, "POST", 400),
        ("MESSAGE without message", call(type="MESSAGE"), json_type, "POST", 400),
    ]


def test_bad_executor_api_input(cluster_factory, scheduler, record_fault, tmp_path, fault_run):
    cluster = cluster_factory(agent_flags=AGENT_FLAGS)
    go = tmp_path / "go"
    task = command_task("e0", f"while [ ! -e {go} ]; do sleep 0.05; done")
    framework = scheduler(cluster.master_address, tasks=[task]).start()
    framework.wait_states(["e0"], ts.RUNNING)
    url = f"http://127.0.0.1:{cluster.agents[0].port}/api/v1/executor"
    answers = []
    for what, body, headers, method, expected in bad_calls(framework.framework_id(), "e0"):
        status, text = post(url, body, headers, method)
        answers.append((what, status, text))
        assert status == expected, (what, status, text)
        assert text.strip() or status == 405, f"{what}: no message"
    big = b'{"type":"HEARTBEAT","pad":"' + b"x" * (17 << 20) + b'"}'
    status, _ = post(url, big, {"Content-Type": "application/json"})
    assert status == 413
    go.touch()
    framework.wait_states(["e0"], ts.FINISHED)
    assert cluster.agents[0].running()
    check = check_updates(
        framework.statuses(), {"e0": ([ts.STARTING, ts.RUNNING, ts.FINISHED], ts.FINISHED)}
    )
    record_fault("bad executor API input", check, f"{len(answers) + 1} bad calls, all 4xx")
    check.assert_clean()
