"""Pure parts of the built-in executor and its fast-import helpers."""

from __future__ import annotations

import json
import os
import signal

import pytest

from butte.agent.executor import command, lite
from butte.core.recordio import RecordIOReader


def test_lite_json_round_trip_is_compact_ascii():
    value = {"a": [1, 2.5, "é", None, True], "b": {"c": "x"}}
    data = lite.dumps(value)
    assert data == json.dumps(value, separators=(",", ":")).encode()
    assert lite.loads(data) == value
    assert lite.loads(b' {"x": 1} ') == {"x": 1}
    for bad in (b"{", b"[1] 2", b""):
        with pytest.raises(ValueError):
            lite.loads(bad)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5secs", 5.0),
        ("200ms", 0.2),
        ("3", 3.0),
        ("1.5mins", 90.0),
        ("2hrs", 7200.0),
        ("bogus", 7.0),
        ("5parsecs", 7.0),
    ],
)
def test_lite_parse_duration(text, seconds):
    assert lite.parse_duration(text, 7.0) == pytest.approx(seconds)


def test_chunked_records_split_anywhere():
    body = b"".join(b"%x\r\n%s\r\n" % (len(r), r) for r in (b"3\nabc", b"2\nxy4\nwxyz"))
    body += b"0\r\n\r\n"
    for cut in range(len(body)):
        decoder, reader, records = lite.ChunkedDecoder(), RecordIOReader(), []
        for part in (body[:cut], body[cut:]):
            records += reader.feed(decoder.feed(part))
        assert records == [b"abc", b"xy", b"wxyz"] and decoder.finished


def test_bad_chunk_size_raises():
    with pytest.raises(lite.HttpError):
        lite.ChunkedDecoder().feed(b"zz\r\n")


def test_new_uuid_is_16_bytes_base64():
    import base64

    assert len(base64.b64decode(lite.new_uuid())) == 16
    assert lite.new_uuid() != lite.new_uuid()


def test_describe_exit_uses_mesos_words():
    assert command.describe_exit(3 << 8) == "Command exited with status 3"
    assert command.describe_exit(signal.SIGKILL) == "Command terminated with signal Killed"


def test_kill_grace_precedence():
    policy = {"grace_period": {"nanoseconds": 2_000_000_000}}
    task_policy = {"kill_policy": {"grace_period": {"nanoseconds": 7_000_000_000}}}
    assert command.kill_grace({"kill_policy": policy}, task_policy) == 2.0
    assert command.kill_grace({}, task_policy) == 7.0
    assert command.kill_grace(None, {}) == command.DEFAULT_KILL_GRACE


def test_task_argv_shell_and_exec_forms():
    assert command.task_argv({"value": "echo hi"}) == ("/bin/sh", ["sh", "-c", "echo hi"], False)
    argv = command.task_argv({"shell": False, "value": "ls", "arguments": ["ls", "-l"]})
    assert argv == ("ls", ["ls", "-l"], True)
    assert command.task_argv({"shell": False, "value": "true"}) == ("true", ["true"], True)


def test_task_environment_adds_command_variables():
    cmd = {
        "environment": {
            "variables": [
                {"name": "A", "value": "1"},
                {"name": "S", "type": "SECRET", "secret": {}},
            ]
        }
    }
    env = command.task_environment({"PATH": os.environ.get("PATH", "")}, cmd)
    assert env["A"] == "1" and "S" not in env and "PATH" in env
