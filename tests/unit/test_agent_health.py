"""Health check parsing and timing policy of the built-in executor (pure, fed ``now``)."""

from __future__ import annotations

import sys

import pytest

from butte.agent.executor import checks, probe
from butte.agent.executor.health import HealthPolicy, parse_health_check, probe_command


def spec(**fields: object):
    check = {"type": "COMMAND", "command": {"value": "true"}}
    check.update(fields)
    return parse_health_check(check)


def test_defaults_are_mesos_defaults():
    s = spec()
    assert (s.delay, s.interval, s.timeout, s.grace_period, s.consecutive_failures) == (
        15.0,
        10.0,
        20.0,
        10.0,
        3,
    )


@pytest.mark.parametrize(
    ("check", "problem"),
    [
        ({"type": "DOCKER"}, "unsupported health check type"),
        ({"type": "HTTP"}, "'http' is required"),
        ({"type": "HTTP", "http": {"port": 0}}, "port"),
        ({"type": "TCP", "tcp": {"port": "80"}}, "port"),
        ({"type": "COMMAND", "command": {}}, "no 'value'"),
        ({"type": "HTTP", "http": {"port": 80, "scheme": "ftp"}}, "scheme"),
        ({"type": "TCP", "tcp": {"port": 80}, "interval_seconds": -1}, "negative"),
        ({"type": "TCP", "tcp": {"port": 80}, "timeout_seconds": "soon"}, "number"),
        ({"command": {"value": "x"}, "http": {"port": 1}}, "unsupported"),
        ("nope", "object"),
    ],
)
def test_bad_checks_are_refused_with_a_reason(check, problem):
    with pytest.raises(ValueError, match=problem):
        parse_health_check(check)


def test_old_style_check_without_type_and_http_fields():
    s = parse_health_check({"http": {"port": 8080, "path": "health", "statuses": [200, "204"]}})
    assert (s.kind, s.port, s.path, s.statuses, s.scheme) == (
        "HTTP",
        8080,
        "/health",
        [200, 204],
        "http",
    )


def test_probe_commands():
    assert probe_command(spec()) == ("/bin/sh", ["sh", "-c", "true"], False)
    argv_check = spec(command={"value": "/bin/check", "shell": False, "arguments": ["c", "-q"]})
    assert probe_command(argv_check) == ("/bin/check", ["c", "-q"], True)
    program, argv, _ = probe_command(parse_health_check({"type": "TCP", "tcp": {"port": 9}}))
    assert program == sys.executable and argv[-4:] == ["tcp", "127.0.0.1", "9", "20.0"]
    http = parse_health_check(
        {"type": "HTTP", "http": {"port": 9, "path": "/h", "statuses": [204]}}
    )
    assert probe_command(http)[1][-4:] == ["http", "http://127.0.0.1:9/h", "20.0", "204"]


def test_first_success_reported_then_only_changes():
    policy = HealthPolicy(spec(delay_seconds=2, interval_seconds=1), started=100.0)
    assert not policy.due(101.9) and policy.due(102.0)
    assert policy.result(True, 102.0) == (True, False)
    assert policy.next_check == 103.0
    assert policy.result(True, 103.0) is None
    assert policy.result(False, 200.0) == (False, False)
    assert policy.result(True, 201.0) == (True, False)  # back to healthy: reported


def test_grace_period_ignores_failures_until_first_success():
    policy = HealthPolicy(spec(grace_period_seconds=5, consecutive_failures=2), started=0.0)
    assert policy.result(False, 1.0) is None
    assert policy.result(False, 4.9) is None
    assert policy.result(False, 5.1) == (False, False)
    assert policy.result(False, 6.0) == (False, True)  # consecutive failures: kill


def test_grace_ends_with_the_first_success():
    policy = HealthPolicy(spec(grace_period_seconds=60, consecutive_failures=1), started=0.0)
    policy.result(True, 1.0)
    assert policy.result(False, 2.0) == (False, True)


def test_tcp_and_http_probes_fail_cleanly_when_nothing_listens():
    assert probe.main(["tcp", "127.0.0.1", "9", "0.5"]) == probe.UNHEALTHY
    assert probe.main(["http", "http://127.0.0.1:9/", "0.5"]) == probe.UNHEALTHY
    assert probe.main(["bogus"]) == probe.USAGE


@pytest.mark.parametrize(
    "check",
    [
        {"type": "COMMAND", "command": {"command": {"value": "sleep 9"}}},
        {"type": "HTTP", "http": {"port": 1}},
        {"type": "TCP", "tcp": {"port": 1}},
    ],
)
def test_a_check_that_timed_out_has_no_result(check):
    """Mesos leaves the kind's message empty after a timeout; a TCP probe that ran and
    could not connect says so."""
    parsed = checks.parse_check(check)
    kind = check["type"].lower()
    assert checks.result_status(parsed, None, b"") == {"type": check["type"], kind: {}}
    if kind == "tcp":
        assert checks.result_status(parsed, 1 << 8, b"") == {
            "type": "TCP",
            "tcp": {"succeeded": False},
        }


def test_a_probe_timeout_of_zero_is_no_timeout():
    """Mesos: ``timeout_seconds: 0`` is infinite; a 0 s socket timeout would make the
    connection non-blocking and fail at once."""
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert probe.main(["tcp", "127.0.0.1", str(port), "0.0"]) == probe.HEALTHY
