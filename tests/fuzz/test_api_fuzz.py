"""Generated hostile input for every HTTP API of a real master and agent (hypothesis): the
scheduler API (also from a subscribed framework, with its real stream id and offers), the
operator API of master and agent, the executor API, the files endpoints and the agents'
WebSocket. Every answer must be a 2xx/3xx/4xx (never a 5xx), both daemons must stay up, and
afterwards a normal task still runs. Each call type gets ``BUTTE_FUZZ_EXAMPLES`` inputs."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from typing import Any

import pytest
import requests
from fuzz_settings import EXAMPLES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from butte.core.codec import RecordIOReader
from butte.core.internal import AGENT_PATH

pytestmark = pytest.mark.integration

SCHEDULER_TYPES = [
    "SUBSCRIBE", "TEARDOWN", "ACCEPT", "DECLINE", "ACCEPT_INVERSE_OFFERS",
    "DECLINE_INVERSE_OFFERS", "REVIVE", "SUPPRESS", "KILL", "SHUTDOWN", "ACKNOWLEDGE",
    "ACKNOWLEDGE_OPERATION_STATUS", "RECONCILE", "RECONCILE_OPERATIONS", "MESSAGE", "REQUEST",
    "UPDATE_FRAMEWORK", "UNKNOWN",
]  # fmt: skip
OPERATOR_TYPES = [
    "GET_HEALTH", "GET_FLAGS", "GET_VERSION", "GET_METRICS", "GET_LOGGING_LEVEL",
    "SET_LOGGING_LEVEL", "LIST_FILES", "READ_FILE", "GET_STATE", "GET_AGENTS",
    "GET_FRAMEWORKS", "GET_EXECUTORS", "GET_TASKS", "GET_ROLES", "GET_WEIGHTS",
    "UPDATE_WEIGHTS", "GET_MASTER", "GET_AGENT", "RESERVE_RESOURCES", "UNRESERVE_RESOURCES",
    "CREATE_VOLUMES", "DESTROY_VOLUMES", "GET_MAINTENANCE_STATUS", "GET_MAINTENANCE_SCHEDULE",
    "UPDATE_MAINTENANCE_SCHEDULE", "START_MAINTENANCE", "STOP_MAINTENANCE", "GET_QUOTA",
    "UPDATE_QUOTA", "TEARDOWN", "MARK_AGENT_GONE", "DRAIN_AGENT", "DEACTIVATE_AGENT",
    "REACTIVATE_AGENT", "GET_OPERATIONS", "GET_CONTAINERS", "KILL_CONTAINER",
    "LAUNCH_CONTAINER", "WAIT_CONTAINER", "REMOVE_CONTAINER", "GET_RESOURCE_PROVIDERS",
    "PRUNE_IMAGES", "LAUNCH_NESTED_CONTAINER", "LAUNCH_NESTED_CONTAINER_SESSION",
    "WAIT_NESTED_CONTAINER", "KILL_NESTED_CONTAINER", "REMOVE_NESTED_CONTAINER",
    "ATTACH_CONTAINER_INPUT", "ATTACH_CONTAINER_OUTPUT", "BOGUS",
]  # fmt: skip
EXECUTOR_TYPES = ["SUBSCRIBE", "UPDATE", "MESSAGE", "HEARTBEAT", "NOPE"]
AGENT_MESSAGE_TYPES = [
    "REGISTER_AGENT", "STATUS_UPDATE", "PONG", "EXECUTOR_EXITED", "EXECUTOR_MESSAGE",
    "UNREGISTER_AGENT", "RUN_TASK", "WHAT",
]  # fmt: skip
# Keys real messages use, so generated objects reach past the first checks.
KEYS = [
    "value", "framework_id", "agent_id", "task_id", "executor_id", "offer_ids", "operations",
    "type", "launch", "task_infos", "resources", "name", "scalar", "ranges", "range", "begin",
    "end", "role", "roles", "filters", "refuse_seconds", "nanoseconds", "duration", "level",
    "path", "offset", "length", "weight", "weight_infos", "uuid", "status", "state", "command",
    "user", "framework_info", "agent_info", "hostname", "port", "tasks", "data", "id",
    "container_id", "signal", "machines", "windows", "quota_configs", "guarantees",
]  # fmt: skip
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -1, 1e308, -1e308, 2**63, 2**64, 0.5, 1e-300]),
)
TEXT = st.one_of(
    st.text(max_size=20),
    st.sampled_from(["", "..", "../../etc/passwd", "*", "a/b", "\x00", "\ud7ff", "x" * 5000]),
)
LEAVES = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
JSON = st.recursive(
    LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner, max_size=5),
    ),
    max_leaves=25,
)
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def calls(types: list[str], ids: dict[str, Any] | None = None) -> st.SearchStrategy[Any]:
    """Call-shaped bodies (``type``, a payload under its lower-cased key, sometimes the real
    ids of ``ids``), and now and then any JSON at all."""

    @st.composite
    def build(draw: st.DrawFn) -> Any:
        kind = draw(st.sampled_from(types))
        body: dict[str, Any] = {"type": kind, kind.lower(): draw(JSON)}
        if ids:
            for key, value in ids.items():
                if draw(st.booleans()):
                    body[key] = value
        body.update(draw(st.dictionaries(st.sampled_from(KEYS), JSON, max_size=2)))
        return body

    return st.one_of(build(), build(), build(), JSON)


def encode(body: Any, raw: bool) -> bytes:
    text = json.dumps(body, allow_nan=False)
    return text.encode("utf-8", "surrogatepass") if raw else text.encode()


def check(answer: requests.Response, what: str) -> None:
    if answer.status_code == 501:  # Mesos' NotImplemented, for the UNKNOWN type only
        assert "'type': 'UNKNOWN'" in what, (what, answer.text[:300])
        return
    assert answer.status_code < 500, (what, answer.status_code, answer.text[:300])


class Framework:
    """A subscribed framework whose stream is read in the background (so it never stalls),
    giving generated calls a real framework id, stream id and offers."""

    def __init__(self, master: str) -> None:
        body = {
            "type": "SUBSCRIBE",
            "subscribe": {"framework_info": {"user": "root", "name": "fuzz"}},
        }
        self.response = requests.post(
            master + "/api/v1/scheduler", json=body, stream=True, timeout=30
        )
        assert self.response.status_code == 200
        self.stream_id = self.response.headers["Mesos-Stream-Id"]
        self.offer_ids: list[dict] = []
        reader = RecordIOReader()
        self.framework_id: dict | None = None
        chunks = self.response.iter_content(chunk_size=None)
        while self.framework_id is None:
            for record in reader.feed(next(chunks)):
                event = json.loads(record)
                if event["type"] == "SUBSCRIBED":
                    self.framework_id = event["subscribed"]["framework_id"]
        self._thread = threading.Thread(target=self._read, args=(chunks, reader), daemon=True)
        self._thread.start()

    def _read(self, chunks: Any, reader: RecordIOReader) -> None:
        try:
            for chunk in chunks:
                for record in reader.feed(chunk):
                    event = json.loads(record)
                    if event["type"] == "OFFERS":
                        self.offer_ids = [o["id"] for o in event["offers"]["offers"]]
        except (requests.RequestException, ValueError):
            pass

    def close(self) -> None:
        self.response.close()


@pytest.fixture(scope="module")
def framework(target) -> Any:
    fw = Framework(target.master_url)
    yield fw
    fw.close()


@pytest.fixture(scope="module")
def session() -> Any:
    with requests.Session() as s:
        yield s


HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


@pytest.mark.parametrize("kind", SCHEDULER_TYPES)
@SETTINGS
@given(data=st.data(), raw=st.booleans())
def test_scheduler_api(target, framework, session, kind, data, raw) -> None:
    ids = {"framework_id": framework.framework_id}
    body = data.draw(calls([kind], ids))
    real_offers = data.draw(st.booleans())
    if isinstance(body, dict) and body.get("type") in ("ACCEPT", "DECLINE") and real_offers:
        body[body["type"].lower()] = {
            "offer_ids": framework.offer_ids,
            "operations": data.draw(st.lists(JSON, max_size=3)),
        }
    headers = dict(HEADERS)
    if body == {} or (isinstance(body, dict) and body.get("type") != "SUBSCRIBE"):
        headers["Mesos-Stream-Id"] = framework.stream_id
    answer = session.post(
        target.master_url + "/api/v1/scheduler",
        data=encode(body, raw),
        headers=headers,
        timeout=30,
        stream=True,
    )
    try:
        check(answer, f"scheduler {str(body)[:200]}")
    finally:
        answer.close()  # a SUBSCRIBE that was accepted streams: drop it


@pytest.mark.parametrize("on_agent", [False, True], ids=["master", "agent"])
@pytest.mark.parametrize("kind", OPERATOR_TYPES)
@SETTINGS
@given(data=st.data(), raw=st.booleans())
def test_operator_api(target, session, kind, on_agent, data, raw) -> None:
    body = data.draw(calls([kind]))
    base = target.agents[0].url if on_agent else target.master_url
    answer = session.post(base + "/api/v1", data=encode(body, raw), headers=HEADERS, timeout=30)
    check(answer, f"operator {base} {str(body)[:200]}")


@pytest.mark.parametrize("kind", EXECUTOR_TYPES)
@SETTINGS
@given(data=st.data(), raw=st.booleans())
def test_executor_api(target, session, kind, data, raw) -> None:
    body = data.draw(calls([kind]))
    answer = session.post(
        target.agents[0].url + "/api/v1/executor",
        data=encode(body, raw),
        headers=HEADERS,
        timeout=30,
        stream=True,
    )
    try:
        check(answer, f"executor {str(body)[:200]}")
    finally:
        answer.close()


@pytest.mark.parametrize("on_agent", [False, True], ids=["master", "agent"])
@pytest.mark.parametrize("endpoint", ["/files/read", "/files/browse", "/files/download"])
@SETTINGS
@given(
    path=TEXT,
    offset=st.one_of(st.none(), NUMBERS.map(str), TEXT),
    length=st.one_of(st.none(), NUMBERS.map(str), TEXT),
)
def test_files_api(target, session, endpoint, on_agent, path, offset, length) -> None:
    params = {"path": path, "offset": offset, "length": length}
    base = target.agents[0].url if on_agent else target.master_url
    answer = session.get(
        base + endpoint, params={k: v for k, v in params.items() if v is not None}, timeout=30
    )
    check(answer, f"files {endpoint} {params}")


@pytest.mark.parametrize("kind", AGENT_MESSAGE_TYPES)
@SETTINGS
@given(data=st.data())
def test_agent_socket(target, kind, data) -> None:
    import asyncio

    import aiohttp

    messages = data.draw(st.lists(calls([kind]), min_size=1, max_size=4))

    async def run() -> None:
        async with aiohttp.ClientSession() as client:
            async with client.ws_connect(target.master_url + AGENT_PATH) as ws:
                for message in messages:
                    await ws.send_str(json.dumps(message))
                await ws.close()

    asyncio.run(run())
    check(requests.get(target.master_url + "/health", timeout=10), "health after agent socket")


def test_zz_daemons_survive_and_a_normal_task_runs(target, framework) -> None:
    for process in (target.master, *target.agents):
        assert process.running(), process.log_text()[-3000:]
        assert "Traceback" not in process.log_text(), process.log_text()[-5000:]
    # The fuzzing framework may hold the agent's offer: tear every framework down first.
    frameworks = requests.post(
        target.master_url + "/api/v1", json={"type": "GET_FRAMEWORKS"}, timeout=30
    ).json()["get_frameworks"]["frameworks"]
    for fw in frameworks:
        teardown = {"type": "TEARDOWN", "teardown": {"framework_id": fw["framework_info"]["id"]}}
        assert requests.post(target.master_url + "/api/v1", json=teardown, timeout=30).ok
    done = subprocess.run(
        [sys.executable, "-m", "butte", "run", "--master", target.master_address, "--name",
         "after-fuzz", "--command", "echo still-fine", "--resources", "cpus:0.1;mem:16"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
