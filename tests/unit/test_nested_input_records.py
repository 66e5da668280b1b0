"""The records of an ATTACH_CONTAINER_INPUT stream as the agent reads them
(`butte.agent.nested_api.input_action`): stdin data, terminal window sizes (CONTROL
TTY_INFO, Mesos' ProcessIO), heartbeats, and the bad ones, refused with 400 and a reason;
and the window sizes of a launch's ``container.tty_info`` (`butte.agent.nested.window_size`).
Each record goes through the same JSON decoding as on the wire."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from butte.agent.nested import NestedError, parse_command, window_size
from butte.agent.nested_api import HEARTBEAT, RESIZE, STDIN, input_action
from butte.core.messages import CommandInfo, DecodeError, decode
from butte.core.operator import ProcessIO, decode_call


def record(process_io: dict[str, Any]) -> ProcessIO:
    """``process_io`` decoded as one record of an input stream is."""
    call = {
        "type": "ATTACH_CONTAINER_INPUT",
        "attach_container_input": {"type": "PROCESS_IO", "process_io": process_io},
    }
    payload = decode_call(json.dumps(call).encode()).attach_container_input
    assert payload is not None and payload.process_io is not None
    return payload.process_io


def control(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": "CONTROL", "control": {"type": kind, **fields}}


def size(rows: Any, columns: Any) -> dict[str, Any]:
    return control("TTY_INFO", tty_info={"window_size": {"rows": rows, "columns": columns}})


def test_stdin_resize_and_heartbeat_records() -> None:
    data = {"type": "DATA", "data": {"type": "STDIN", "data": base64.b64encode(b"hi\n").decode()}}
    assert input_action(record(data)) == (STDIN, b"hi\n")
    end = {"type": "DATA", "data": {"type": "STDIN", "data": ""}}
    assert input_action(record(end)) == (STDIN, b"")  # the end of input
    assert input_action(record(size(40, 120))) == (RESIZE, (40, 120))
    assert input_action(record(size(0, 0))) == (RESIZE, (0, 0))  # Mesos' CLI: redraw
    assert input_action(record(size(65535, 65535))) == (RESIZE, (65535, 65535))
    assert input_action(record(size("24", 80))) == (RESIZE, (24, 80))  # protobuf's JSON
    beat = control("HEARTBEAT", heartbeat={"interval": {"nanoseconds": 30_000_000_000}})
    assert input_action(record(beat)) == (HEARTBEAT, None)


@pytest.mark.parametrize(
    "process_io, words",
    [
        ({"type": "CONTROL"}, "needs 'control'"),
        (control("TTY_INFO"), "needs 'tty_info'"),
        (control("TTY_INFO", tty_info={}), "needs 'tty_info.window_size'"),
        (size(-1, 80), "out of range"),
        (size(24, -80), "out of range"),
        (size(65536, 80), "out of range"),
        (size(24, 2_000_000_000), "out of range"),
        (control("RESIZE"), "Unknown control record"),
        ({"type": "DATA"}, "needs 'data'"),
        ({"type": "DATA", "data": {"type": "STDOUT", "data": ""}}, "must be STDIN"),
        ({"type": "DATA", "data": {"type": "STDIN", "data": "***"}}, "base64"),
        ({"type": "SIGNAL"}, "Unknown ProcessIO record"),
    ],
)
def test_bad_records_are_refused_with_400(process_io: dict[str, Any], words: str) -> None:
    with pytest.raises(NestedError) as e:
        input_action(record(process_io))
    assert e.value.status == 400 and words in e.value.message, e.value.message


@pytest.mark.parametrize("rows", [2**40, "x", 24.5, True, None, [24]])
def test_sizes_of_the_wrong_type_do_not_decode(rows: Any) -> None:
    """The wire decoding refuses them (the stream is then answered 400)."""
    with pytest.raises(DecodeError):
        record(size(rows, 80))


@pytest.mark.parametrize(
    "window",
    [
        {"rows": True, "columns": 80},
        {"rows": "x", "columns": 80},
        {"rows": 24.5, "columns": 80},
        {"rows": float("nan"), "columns": 80},
        {"rows": 24},
    ],
)
def test_launch_window_sizes_must_be_integers(window: dict[str, Any]) -> None:
    with pytest.raises(NestedError) as e:
        window_size(window)
    assert e.value.status == 400 and "integer" in e.value.message


def test_launch_window_size_is_the_terminals_first_size() -> None:
    command = decode(json.dumps({"value": "sh"}).encode(), CommandInfo)
    tty = {"tty_info": {"window_size": {"rows": "50", "columns": 132.0}}}
    parsed = parse_command(command, {"type": "MESOS", **tty})
    assert parsed.tty and parsed.window == (50, 132)
