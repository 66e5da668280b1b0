"""Generated hostile input for the REST APIs of ``butte marathon`` and ``butte chronos``
(hypothesis), each running against a real master and agent: definitions that look valid
but carry wrong, huge or odd field values, garbage bodies (malformed JSON, NaN, deep
nesting, invalid UTF-8), path tricks in ids (``//``, ``..``, ``%2F``, bad escapes, very long
ids), bad query parameters, wrong methods and content types, and huge bodies, against every
route each serves. Every answer must be below 500, a 4xx must have the service's error
shape (Marathon's ``{"message": ...}``, Chronos' ``{"status": ..., "message": ...}``), both
processes must stay up, and afterwards a valid app and a valid job still run. Requests go
over a raw socket, so paths reach the server exactly as generated (no client normalizes
them). Each test gets ``BUTTE_FUZZ_EXAMPLES`` inputs: 5 in the default suite (about 15 s), the
long run (``BUTTE_FUZZ_EXAMPLES=1000 ... --basetemp=/tmp/fuzz-frameworks``, about 8 min) is in
docs/reliability.md.

Commands, URIs and containers come from fixed harmless lists: a generated definition that
happens to be valid really runs on the agent.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fuzz_settings import EXAMPLES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from butte.testing.chronos import ChronosProcess
from butte.testing.cluster import ClusterHandle, daemons_missing, start_cluster
from butte.testing.marathon import MarathonHandle, start_marathon
from butte.testing.require import require

pytestmark = pytest.mark.integration

# The agent's ports lie in this helper's range; a small agent keeps accepted definitions
# from running many tasks at once on a small machine.
AGENT_RESOURCES = "cpus:1;mem:512;disk:1024;ports:[12100-12199]"

NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0, -1, 1, 0.5, 1e308, -1e308, 2**31, 2**63, 2**64, 1e-300, 0.01]),
)
TEXT = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        # "\ud800" and "\udfff": lone surrogates, which JSON escapes allow (json.dumps
        # writes them so)
        [
            "",
            " ",
            "..",
            "../../etc/passwd",
            "*",
            "a/b",
            "\x00",
            "\ud7ff",
            "\ud800",
            "\udfff",
            "\u202e",
            "x" * 5000,
        ]
    ),
)
LEAVES = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
JSON = st.recursive(
    LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
# Harmless things to run and fetch: whatever else a generated definition holds, these are
# what a valid one starts.
COMMANDS = st.sampled_from(
    ["sleep 30", "true", "false", "", " ", "exit 3", "echo x" * 2000, "\x00", "sleep\u00a01"]
)
URIS = st.sampled_from(
    ["", "file:///nonexistent", "../../etc/passwd", "http://127.0.0.1:12499/x", "\x00", "a" * 3000]
)
ODD = st.one_of(LEAVES, st.lists(LEAVES, max_size=3), st.dictionaries(TEXT, LEAVES, max_size=3))
CONTAINERS = st.one_of(
    ODD,
    st.sampled_from(
        [
            {"type": "DOCKER"},
            {"type": "MESOS"},
            {"type": "WEIRD", "docker": None},
            {"type": "DOCKER", "docker": {"image": ""}},
            {"type": "DOCKER", "docker": {"image": 5, "network": "BRIDGE"}},
            {"type": "MESOS", "volumes": [{"containerPath": 7, "hostPath": None, "mode": "X"}]},
            {"type": "DOCKER", "portMappings": [{"containerPort": -1, "hostPort": 2**40}]},
        ]
    ),
)
ID_SEGMENTS = st.one_of(
    st.text(alphabet="abcxyz019-.", min_size=1, max_size=12),
    st.sampled_from(
        [
            "..",
            ".",
            "%2F",
            "a%2Fb",
            "%ZZ",
            "%00",
            "%",
            "x" * 3000,
            "restart",
            "tasks",
            "versions",
            "delay",
            "apps",
            "UPPER",
            "-a",
            "a-",
            "%E2%80%AE",
            "%FF",
            "fuzz",
        ]
    ),
)
IDS = st.one_of(
    st.lists(ID_SEGMENTS, min_size=0, max_size=4).map(lambda s: "/".join(s)),
    st.sampled_from(["", "/", "//a/../b", "a//b", "/a/./b", "../..", "a/b/", "a" * 10000]),
)


def _few(value: Any) -> Any:
    """An instance count that would be valid is at most 3 (with generated cpus and mem near
    0, a valid 50,000 would start that many processes on the machine); what is refused
    (below 0, past Marathon's limit, no integer) stays as generated."""
    if isinstance(value, int) and not isinstance(value, bool) and 3 < value <= 100_000:
        return 3
    return value


INSTANCES = st.one_of(st.sampled_from([0, 1]), NUMBERS.map(_few), ODD.map(_few))


def _field_values(field: str) -> st.SearchStrategy[Any]:
    """Odd values for a definition's field; the fields that choose what runs take theirs
    from the harmless lists."""
    if field == "instances":
        return INSTANCES
    if field in ("cmd", "command"):
        return st.one_of(COMMANDS, ODD)
    if field in ("args", "arguments"):
        return st.one_of(st.lists(COMMANDS, max_size=3), ODD)
    if field in ("uris",):
        return st.one_of(st.lists(URIS, max_size=2), ODD)
    if field == "fetch":
        return st.one_of(
            st.lists(st.fixed_dictionaries({"uri": URIS}, optional={"extract": ODD}), max_size=2),
            ODD,
        )
    if field in ("container", "executor"):
        return CONTAINERS
    return st.one_of(ODD, JSON)


def definitions(fields: list[str], required: dict[str, st.SearchStrategy[Any]]) -> Any:
    """Valid-looking definitions: the ``required`` fields (sane values, mostly), then a few
    of ``fields`` with odd values."""

    @st.composite
    def build(draw: st.DrawFn) -> dict[str, Any]:
        body = {k: draw(v) for k, v in required.items()}
        for name in draw(st.lists(st.sampled_from(fields), max_size=4, unique=True)):
            body[name] = draw(_field_values(name))
        return body

    return build()


MARATHON_FIELDS = [
    "id", "cmd", "args", "user", "cpus", "mem", "disk", "gpus", "instances", "env", "labels",
    "uris", "fetch", "ports", "portDefinitions", "requirePorts", "constraints",
    "acceptedResourceRoles", "role", "healthChecks", "readinessChecks", "upgradeStrategy",
    "backoffSeconds", "backoffFactor", "maxLaunchDelaySeconds", "killSelection",
    "taskKillGracePeriodSeconds", "unreachableStrategy", "dependencies", "container",
    "executor", "networks", "resourceLimits", "version", "versionInfo", "tasks", "secrets",
    "residency", "ipAddress", "storeUrls", "bogus",
]  # fmt: skip
APPS = definitions(
    MARATHON_FIELDS,
    {
        "id": st.one_of(st.sampled_from(["/fuzz/a", "fuzz/b", "/fuzz/c/d"]), IDS),
        "cmd": COMMANDS,
        "cpus": st.one_of(st.just(0.01), NUMBERS),
        "mem": st.one_of(st.just(8), NUMBERS),
        "instances": INSTANCES,
    },
)
GROUPS = st.recursive(
    definitions(
        ["id", "apps", "groups", "dependencies", "version", "pods", "enforceRole", "bogus"],
        {"id": st.one_of(st.sampled_from(["/fuzzg", "fuzzg/x"]), IDS)},
    ),
    lambda inner: st.fixed_dictionaries(
        {"id": IDS},
        optional={"apps": st.lists(APPS, max_size=2), "groups": st.lists(inner, max_size=2)},
    ),
    max_leaves=4,
)
CHRONOS_FIELDS = [
    "name", "command", "shell", "arguments", "owner", "ownerName", "description", "schedule",
    "scheduleTimeZone", "parents", "epsilon", "retries", "disabled", "concurrent", "cpus",
    "mem", "disk", "uris", "fetch", "environmentVariables", "constraints", "runAsUser",
    "highPriority", "container", "maxCompletionTime", "taskInfoData", "successCount",
    "errorCount", "lastSuccess", "lastError", "errorsSinceLastSuccess", "skippedCount",
    "nextRun", "async", "softError", "dataProcessingJobType", "executor", "executorFlags",
    "dataJob", "bogus",
]  # fmt: skip
SCHEDULES = st.one_of(
    TEXT,
    st.sampled_from(
        [
            "R/2030-01-01T00:00:00Z/PT1M",
            "R1//PT1S",
            "R-1/2020-01-01T00:00:00Z/PT1S",
            "R99999999999999999999/2020-01-01T00:00:00Z/PT1S",
            "R/9999-12-31T23:59:59Z/P1Y",
            "R/0001-01-01T00:00:00Z/PT0S",
            "R/2020-02-30T25:61:61Z/PT1S",
            "R/2020-01-01T00:00:00+99:99/P99999999999Y",
            "R/2020-01-01T00:00:00Z/PT0.0000001S",
            "R//",
            "R5/2030-01-01T00:00:00.999999999999Z/P1DT1H1M1.5S",
        ]
    ),
)
JOBS = definitions(
    CHRONOS_FIELDS,
    {
        "name": st.one_of(st.sampled_from(["fuzz-a", "fuzz.b", "fuzz_c"]), TEXT),
        "command": COMMANDS,
        "schedule": SCHEDULES,
    },
)
DEPENDENT_JOBS = definitions(
    CHRONOS_FIELDS,
    {
        "name": st.one_of(st.sampled_from(["fuzz-d", "fuzz-e"]), TEXT),
        "command": COMMANDS,
        "parents": st.one_of(st.lists(st.sampled_from(["fuzz-a", "fuzz-d", "nope"])), ODD),
    },
)

GARBAGE = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(
        [
            b"",
            b"{",
            b"null",
            b"[]",
            b"\xff\xfe\x00",
            b'{"id": NaN, "cpus": Infinity, "mem": -Infinity}',
            b'{"cpus": 1e999, "instances": 1e999}',
            b'{"instances": 99999999999999999999999999999999}',
            b'{"name": "fuzz-n", "command": "true", "schedule": "R/2030-01-01T00:00:00Z/PT1M",'
            b' "retries": NaN, "epsilon": Infinity, "cpus": NaN}',
            b"[" * 100_000 + b"]" * 100_000,
            b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
            b'{"id": "/fuzz/x", "cmd": "true", "env": ' + b'{"a":' * 900 + b"1" + b"}" * 900 + b"}",
            b'{"id": "\\ud800", "cmd": "true"}',
            b'{"name": "\\udfff", "command": "true", "schedule": "R//PT1S"}',
            b'"' + b"x" * 100_000 + b'"',
            b'{"id": "/fuzz/dup", "id": 5}',
        ]
    ),
)
QUERY_KEYS = [
    "embed", "force", "partialUpdate", "scale", "wipe", "host", "cmd", "id", "label", "status",
    "status[]", "event_type", "limit", "offset", "arguments", "name", "command", "any", "x",
]  # fmt: skip
QUERY_VALUES = st.one_of(
    TEXT,
    st.sampled_from(
        [
            "",
            "maybe",
            "true",
            "TRUE",
            "1",
            "-1",
            "1e999",
            "NaN",
            "app.tasks",
            "apps.counts",
            "apps.lastTaskFailure",
            "group.apps",
            "lastUnusedOffers",
            "a==b,c!=d,e",
            "running",
        ]
    ),
)
QUERIES = st.lists(st.tuples(st.sampled_from(QUERY_KEYS), QUERY_VALUES), max_size=3)
METHODS = st.sampled_from(
    ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "PROPFIND", "BREW"]
)
CONTENT_TYPES = st.sampled_from(
    [
        None,
        "application/json",
        "application/json; charset=latin-1",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/xml",
        "*/*",
    ]
)
ACCEPTS = st.sampled_from([None, "application/json", "text/plain", "text/plain;q=2", "*/*;q=x"])

SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


# aiohttp's HTTP parser refuses a request line longer than this (a 400 in its own words,
# before any route sees the request).
MAX_REQUEST_LINE = 8190


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes
    # Refused by the HTTP parser (an unknown method, a request line past its limit), which
    # answers in its own words: no route, so no service's error shape.
    by_parser: bool = False


def send(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    content_type: str | None = "application/json",
    accept: str | None = None,
    timeout: float = 30.0,
) -> Answer:
    """One request over a raw socket (the path exactly as given); an event stream's answer
    is its status and type only (its body never ends)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
        if content_type is not None:
            head.append(f"Content-Type: {content_type}")
        if accept is not None:
            head.append(f"Accept: {accept}")
        if body is not None:
            head.append(f"Content-Length: {len(body)}")
        try:
            sock.sendall("\r\n".join(head).encode("utf-8", "surrogatepass") + b"\r\n\r\n")
            if body:
                sock.sendall(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered (413) before it read the whole body
        response = http.client.HTTPResponse(sock, method=method)
        response.begin()
        ctype = response.getheader("Content-Type", "")
        by_parser = method == "BREW" or len(head[0]) > MAX_REQUEST_LINE
        if ctype.startswith("text/event-stream"):
            return Answer(response.status, ctype, b"", by_parser)
        return Answer(response.status, ctype, response.read(), by_parser)


def quote_path(raw: str) -> str:
    """An id as a client would put it into a path: escaped where HTTP needs it, with ``%``
    left alone so that generated escapes (``%2F``, ``%ZZ``) arrive as written, and a lone
    surrogate sent as its UTF-8 bytes (``%ED%A0%80``)."""
    return urllib.parse.quote(raw, safe="/%.-_~:", encoding="utf-8", errors="surrogatepass")


def with_query(path: str, query: list[tuple[str, str]]) -> str:
    """The path with the query, percent-encoded (a lone surrogate as its UTF-8 bytes)."""
    if not query:
        return path
    return path + "?" + urllib.parse.urlencode(query, encoding="utf-8", errors="surrogatepass")


def check(answer: Answer, what: str, shape: tuple[str, ...]) -> None:
    """Below 500, and a 4xx in the service's error shape: all but a HEAD's (no body) and the
    HTTP parser's (`Answer.by_parser`)."""
    assert answer.status < 500, (what, answer.status, answer.body[:300])
    if 400 <= answer.status < 500 and not what.startswith("HEAD ") and not answer.by_parser:
        assert answer.content_type.startswith("application/json"), (what, answer)
        error = json.loads(answer.body)
        assert isinstance(error, dict) and all(isinstance(error.get(k), str) for k in shape), (
            what,
            error,
        )


MARATHON_SHAPE = ("message",)
CHRONOS_SHAPE = ("status", "message")


def encode(body: Any) -> bytes:
    return json.dumps(body).encode("utf-8", "surrogatepass")


@dataclass
class Services:
    cluster: ClusterHandle
    marathon: MarathonHandle
    chronos: ChronosProcess


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    require(daemons_missing(), "a real cluster")
    path = tmp_path_factory.mktemp("framework-fuzz")
    with start_cluster(path / "cluster", resources=AGENT_RESOURCES) as cluster:
        with start_marathon(cluster.master_address, path) as marathon:
            chronos = ChronosProcess(path / "chronos", cluster.master_address)
            chronos.start()
            try:
                yield Services(cluster, marathon, chronos)
            finally:
                chronos.stop()


# -- Marathon -------------------------------------------------------------------------------

MARATHON_ROUTES = [
    "/", "/ui", "/ping", "/metrics", "/v2/info", "/v2/leader", "/v2/apps", "/v2/apps/{id}",
    "/v2/apps/{id}/restart", "/v2/apps/{id}/tasks", "/v2/apps/{id}/tasks/{tid}",
    "/v2/apps/{id}/versions", "/v2/apps/{id}/versions/{v}", "/v2/groups", "/v2/groups/{id}",
    "/v2/groups/{id}/apps", "/v2/groups/{id}/versions", "/v2/groups/{id}/versions/{v}",
    "/v2/tasks", "/v2/tasks/delete", "/v2/deployments", "/v2/deployments/{did}", "/v2/queue",
    "/v2/queue/{id}/delay", "/v2/events", "/v2/eventSubscriptions", "/v2/nope", "/v3/apps",
    "/v2/pods", "/v2/pods/{id}", "/v2/pods/::status", "/v2/pods/{id}::status",
    "/v2/pods/{id}::versions", "/v2/pods/{id}::versions/{v}", "/v2/pods/{id}::instances/{tid}",
    "/v2/pods/{id}::instances",
]  # fmt: skip


def fill(route: str, draw: st.DrawFn) -> str:
    """A route with generated ids in its ``{...}`` places."""
    out = route
    for place in ("{id}", "{tid}", "{v}", "{did}"):
        if place in out:
            value = draw(
                st.one_of(IDS, st.sampled_from(["fuzz/a", "fuzz_a.1234", "2030-01-01T00:00:00Z"]))
            )
            out = out.replace(place, quote_path(value).strip("/") if place != "{id}" else value)
    return quote_path(out)


@st.composite
def marathon_bodies(draw: st.DrawFn) -> bytes | None:
    kind = draw(st.sampled_from(["none", "app", "apps", "group", "json", "garbage", "ids"]))
    if kind == "none":
        return None
    if kind == "app":
        return encode(draw(APPS))
    if kind == "apps":
        return encode(draw(st.lists(APPS, max_size=3)))
    if kind == "group":
        return encode(draw(GROUPS))
    if kind == "ids":
        ids = st.lists(st.one_of(TEXT, st.sampled_from(["fuzz_a.x", "a.b.c"])), max_size=3)
        return encode({"ids": draw(st.one_of(ids, ODD))})
    if kind == "json":
        return encode(draw(JSON))
    return draw(GARBAGE)


@pytest.mark.parametrize("route", MARATHON_ROUTES)
@SETTINGS
@given(data=st.data())
def test_marathon_routes(services: Services, route: str, data: st.DataObject) -> None:
    method = data.draw(METHODS)
    path = with_query(fill(route, data.draw), data.draw(QUERIES))
    body = data.draw(marathon_bodies())
    answer = send(
        services.marathon.port,
        method,
        path,
        body,
        data.draw(CONTENT_TYPES),
        data.draw(ACCEPTS),
    )
    check(answer, f"{method} {path} {(body or b'')[:200]!r}", MARATHON_SHAPE)


@pytest.mark.parametrize("method", ["POST", "PUT"])
@SETTINGS
@given(app=APPS, force=st.sampled_from(["", "true", "maybe"]))
def test_marathon_app_definitions(services: Services, method: str, app: Any, force: str) -> None:
    """Definitions that look like apps, to /v2/apps (POST) and /v2/apps/ID (PUT, PATCH)."""
    query = f"?force={force}" if force else ""
    if method == "POST":
        path = "/v2/apps" + query
    else:
        path = "/v2/apps/" + quote_path(str(app.get("id", "x"))).lstrip("/") + query
    answer = send(services.marathon.port, method, path, encode(app))
    check(answer, f"{method} {path} {str(app)[:300]}", MARATHON_SHAPE)
    if method == "PUT":  # PATCH merges into an existing app (and creates none)
        answer = send(services.marathon.port, "PATCH", path, encode(app))
        check(answer, f"PATCH {path} {str(app)[:300]}", MARATHON_SHAPE)


@SETTINGS
@given(group=GROUPS, put=st.booleans())
def test_marathon_group_definitions(services: Services, group: Any, put: bool) -> None:
    if put:
        path = "/v2/groups/" + quote_path(str(group.get("id", "g"))).lstrip("/")
        answer = send(services.marathon.port, "PUT", path + "?force=true", encode(group))
    else:
        path = "/v2/groups"
        answer = send(services.marathon.port, "POST", path, encode(group))
    check(answer, f"{'PUT' if put else 'POST'} {path} {str(group)[:300]}", MARATHON_SHAPE)


# -- Chronos --------------------------------------------------------------------------------

CHRONOS_ROUTES = [
    "/v1/scheduler/iso8601", "/v1/scheduler/dependency", "/v1/scheduler/jobs",
    "/v1/scheduler/jobs/search", "/v1/scheduler/jobs/summary", "/v1/scheduler/job/{id}",
    "/v1/scheduler/job/success/{id}", "/v1/scheduler/leader", "/v1/scheduler/task/kill/{id}",
    "/v1/scheduler/job/stat/{id}", "/v1/scheduler/graph/csv", "/v1/scheduler/graph/dot",
    "/v1/scheduler/job/{id}/task/{tid}/progress", "/v1/scheduler/stats/99thPercentile",
    "/v1/scheduler/stats/median", "/v1/scheduler/stats/mean", "/v1/scheduler/stats/{v}",
    "/metrics", "/ping", "/", "/ui/info", "/scheduler/iso8601", "/scheduler/dependency",
    "/scheduler/jobs", "/scheduler/job/{id}", "/scheduler/jobs/search",
    "/scheduler/task/kill/{id}", "/scheduler/graph/dot", "/v1/scheduler/nope",
]  # fmt: skip


@st.composite
def chronos_bodies(draw: st.DrawFn) -> bytes | None:
    kind = draw(st.sampled_from(["none", "job", "dependent", "progress", "json", "garbage"]))
    if kind == "none":
        return None
    if kind == "job":
        return encode(draw(JOBS))
    if kind == "dependent":
        return encode(draw(DEPENDENT_JOBS))
    if kind == "progress":
        return encode({"numAdditionalElementsProcessed": draw(ODD)})
    if kind == "json":
        return encode(draw(JSON))
    return draw(GARBAGE)


@pytest.mark.parametrize("route", CHRONOS_ROUTES)
@SETTINGS
@given(data=st.data())
def test_chronos_routes(services: Services, route: str, data: st.DataObject) -> None:
    method = data.draw(METHODS)
    path = with_query(fill(route, data.draw), data.draw(QUERIES))
    body = data.draw(chronos_bodies())
    answer = send(
        services.chronos.port, method, path, body, data.draw(CONTENT_TYPES), data.draw(ACCEPTS)
    )
    check(answer, f"{method} {path} {(body or b'')[:200]!r}", CHRONOS_SHAPE)


@pytest.mark.parametrize("endpoint", ["iso8601", "dependency"])
@pytest.mark.parametrize("method", ["POST", "PUT"])
@SETTINGS
@given(job=st.one_of(JOBS, DEPENDENT_JOBS))
def test_chronos_job_definitions(services: Services, endpoint: str, method: str, job: Any) -> None:
    path = f"/v1/scheduler/{endpoint}"
    answer = send(services.chronos.port, method, path, encode(job))
    check(answer, f"{method} {path} {str(job)[:300]}", CHRONOS_SHAPE)


# -- both -----------------------------------------------------------------------------------

BODY_ROUTES = [
    ("marathon", "POST", "/v2/apps"), ("marathon", "PUT", "/v2/apps"),
    ("marathon", "PATCH", "/v2/apps"), ("marathon", "PUT", "/v2/apps/fuzz/a"),
    ("marathon", "PATCH", "/v2/apps/fuzz/a"), ("marathon", "POST", "/v2/groups"),
    ("marathon", "PUT", "/v2/groups/fuzzg"), ("marathon", "PUT", "/v2/groups/"),
    ("marathon", "POST", "/v2/tasks/delete"), ("chronos", "POST", "/v1/scheduler/iso8601"),
    ("chronos", "PUT", "/v1/scheduler/dependency"),
    ("chronos", "POST", "/v1/scheduler/job/fuzz-a/task/ct:1:0:fuzz-a:/progress"),
]  # fmt: skip


@pytest.mark.parametrize(("service", "method", "path"), BODY_ROUTES)
@SETTINGS
@given(body=GARBAGE, content_type=CONTENT_TYPES)
def test_garbage_bodies(
    services: Services, service: str, method: str, path: str, body: bytes, content_type: Any
) -> None:
    """Every route that reads a body, with bytes that are no definition at all."""
    port = services.marathon.port if service == "marathon" else services.chronos.port
    shape = MARATHON_SHAPE if service == "marathon" else CHRONOS_SHAPE
    check(send(port, method, path, body, content_type), f"{method} {path} {body[:200]!r}", shape)


@pytest.mark.parametrize("service", ["marathon", "chronos"])
def test_huge_bodies_and_huge_paths(services: Services, service: str) -> None:
    """Bodies past each service's limit (Marathon 8 MiB, Chronos 1 MiB) and an id of 60 kB
    in the path get a 4xx."""
    port = services.marathon.port if service == "marathon" else services.chronos.port
    shape = MARATHON_SHAPE if service == "marathon" else CHRONOS_SHAPE
    post = "/v2/apps" if service == "marathon" else "/v1/scheduler/iso8601"
    huge = b'{"id": "/fuzz/huge", "cmd": "' + b"x" * (9 * 1024 * 1024) + b'"}'
    check(send(port, "POST", post, huge), f"POST {post} (9 MiB)", shape)
    get = "/v2/apps/" if service == "marathon" else "/v1/scheduler/job/"
    answer = send(port, "GET", get + "a" * 60_000)
    assert answer.status < 500, answer


def _wait(what: str, predicate: Any, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (OSError, ValueError, KeyError) as e:
            last = e
        else:
            if last:
                return last
        time.sleep(0.25)
    raise AssertionError(f"{what}: not reached in {timeout}s (last: {last!r})")


def test_zz_services_survive_and_a_valid_app_and_job_run(services: Services) -> None:
    m, chronos = services.marathon, services.chronos
    for name, process in (("marathon", m.process), ("chronos", chronos.process)):
        assert process.running(), f"{name} exited:\n{process.log_tail(80)}"
        # Even a request the HTTP parser refused is one line (no traceback) in the log.
        log = process.log_tail(200_000)
        assert "Traceback" not in log, log[log.index("Traceback") - 300 :][:4000]
    # Clear what the fuzzing left (apps, groups, jobs), so the valid ones get the agent.
    assert m.request("DELETE", "/v2/groups?force=true")[0] == 200
    _wait("no deployments", lambda: m.get("/v2/deployments") == [])
    for job in chronos.get("/v1/scheduler/jobs"):
        status, _ = chronos.request("DELETE", f"/v1/scheduler/job/{job['name']}")
        assert status == 204, job["name"]

    app = {"id": "/after-fuzz/web", "cmd": "sleep 300", "cpus": 0.1, "mem": 16, "instances": 1}
    status, created = m.request("POST", "/v2/apps", app)
    assert status == 201, created
    _wait(
        "the app's task running",
        lambda: m.get("/v2/apps/after-fuzz/web")["app"]["tasksRunning"] == 1,
    )
    job = {
        "name": "after-fuzz",
        "command": "echo job-ran",
        "schedule": "R1//PT1M",
        "cpus": 0.1,
        "mem": 16,
    }
    status, answer = chronos.request("POST", "/v1/scheduler/iso8601", json.dumps(job).encode())
    assert status == 204, answer
    _wait(
        "the job's run finished",
        lambda: chronos.get("/v1/scheduler/job/after-fuzz")["successCount"] == 1,
    )
    for name, process in (("marathon", m.process), ("chronos", chronos.process)):
        assert process.running(), f"{name} exited:\n{process.log_tail(80)}"
    for process in (services.cluster.master, *services.cluster.agents):
        assert process.running(), process.log_text()[-3000:]
