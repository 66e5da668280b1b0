"""The pure parts of nested containers (`butte.agent.nested`, `butte.agent.nested_api`): what
a launch call's command and container become, and what is refused with which status."""

from __future__ import annotations

import json

import pytest

from butte.agent.nested import NestedError, check_id, parse_command, window_size
from butte.agent.nested_api import accepts, process_io_record, stream_types
from butte.core.messages import CommandInfo, decode
from butte.core.recordio import RecordIOReader


def command(**fields: object) -> CommandInfo:
    return decode(json.dumps(fields).encode(), CommandInfo)


def test_shell_and_argv_commands() -> None:
    shell = parse_command(command(value="echo $HOME"), None)
    assert (shell.program, shell.argv, shell.tty) == ("/bin/sh", ["sh", "-c", "echo $HOME"], False)
    plain = parse_command(command(shell=False, value="ls", arguments=["ls", "-l"]), None)
    assert (plain.program, plain.argv) == ("ls", ["ls", "-l"])
    bare = parse_command(command(shell=False, value="/bin/true"), None)
    assert bare.argv == ["/bin/true"]


def test_environment_user_and_tty() -> None:
    env = {"variables": [{"name": "A", "value": "1"}]}
    parsed = parse_command(
        command(value="env", environment=env, user="nobody"),
        {"type": "MESOS", "tty_info": {"window_size": {"rows": 30, "columns": 100}}},
    )
    assert parsed.env == {"A": "1"} and parsed.user == "nobody"
    assert parsed.tty and parsed.window == (30, 100)
    assert parse_command(command(value="sh"), {"tty_info": {}}).window is None


@pytest.mark.parametrize(
    "cmd, container, words",
    [
        ({}, None, "value"),
        ({"shell": True, "arguments": ["x"]}, None, "value"),
        ({"value": "x", "uris": [{"value": "http://h/f"}]}, None, "URIs"),
        (
            {"value": "x", "environment": {"variables": [{"name": "S", "type": "SECRET"}]}},
            None,
            "VALUE",
        ),
        ({"value": "x"}, {"type": "DOCKER"}, "DOCKER"),
        ({"value": "x"}, {"type": "MESOS", "volumes": []}, "volumes"),
        ({"value": "x"}, {"mesos": {"image": {"type": "DOCKER"}}}, "image"),
        ({"value": "x"}, {"tty_info": {"window_size": {"rows": -1, "columns": 80}}}, "range"),
        ({"value": "x"}, {"tty_info": {"window_size": {"rows": "a", "columns": 80}}}, "integer"),
        ({"value": "x"}, {"tty_info": "big"}, "object"),
    ],
)
def test_refused_launches(cmd: dict, container: dict | None, words: str) -> None:
    with pytest.raises(NestedError) as e:
        parse_command(command(**cmd) if cmd else None, container)
    assert e.value.status == 400 and words in e.value.message


@pytest.mark.parametrize("value", ["", ".", "..", "a/b", "../x", "a\x00", "x" * 129, "é"])
def test_bad_container_ids(value: str) -> None:
    with pytest.raises(NestedError):
        check_id(value)


def test_good_ids_and_window_sizes() -> None:
    check_id("debug-1.2_x")
    assert window_size({"rows": 24, "columns": 80}) == (24, 80)
    assert window_size({"rows": 0, "columns": 0}) == (0, 0)
    with pytest.raises(NestedError):
        window_size({"rows": 70000, "columns": 80})


def test_output_records_are_recordio_of_processio() -> None:
    data = process_io_record("STDERR", b"\x00\xffhi") + process_io_record("STDOUT", b"")
    first, second = RecordIOReader().feed(data)
    assert json.loads(first) == {"type": "DATA", "data": {"type": "STDERR", "data": "AP9oaQ=="}}
    assert json.loads(second)["data"] == {"type": "STDOUT", "data": ""}


def test_streaming_answers_follow_accept_as_mesos_agent() -> None:
    """Mesos' agent answers a streaming call in JSON (still RecordIO framed) where Accept
    allows JSON, also with no Accept; RecordIO of JSON messages where only it is allowed."""
    from aiohttp.test_utils import make_mocked_request

    def chosen(**headers: str) -> object:
        request = make_mocked_request("POST", "/api/v1", headers=headers)
        answer = stream_types(request)
        return answer if isinstance(answer, tuple) else answer.status

    assert chosen(Accept="application/json") == ("application/json", None)
    assert chosen() == ("application/json", None)
    assert chosen(Accept="*/*") == ("application/json", None)
    recordio = ("application/recordio", "application/json")
    assert chosen(Accept="application/recordio") == recordio
    assert chosen(Accept="application/recordio", **{"Message-Accept": "*/*"}) == recordio
    assert chosen(Accept="application/json;q=0, application/recordio") == recordio
    assert chosen(Accept="text/html") == 406
    assert chosen(Accept="application/recordio", **{"Message-Accept": "text/x"}) == 406
    # Message-Accept belongs to a streamed content type only.
    assert chosen(Accept="application/json", **{"Message-Accept": "application/json"}) == 406
    assert accepts(None, "application/json") and not accepts("", "application/json")
    assert accepts("application/*;q=0.5", "application/json")
