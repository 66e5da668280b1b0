"""The pure parts of nested containers (`butte.agent.nested`, `butte.agent.nested_api`): what
a launch call's command and container become, and what is refused with which status."""

from __future__ import annotations

import json

import pytest

from butte.agent.nested import NestedError, check_id, parse_command, window_size
from butte.agent.nested_api import process_io_record
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
