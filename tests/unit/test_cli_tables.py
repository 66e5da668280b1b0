"""Pure parts of the operator CLI: tables that fit a width without cutting IDs, task state
names, signal names, and the one-line reason of a failed connection."""

from __future__ import annotations

import argparse
import errno
import socket

import pytest
from rich.console import Console

from butte.cli.main import CliError
from butte.cli.ops import TASK_COLUMNS, normalise_state
from butte.cli.output import Column, fit_table, table_width
from butte.cli.task import _signal_number
from butte.client.scheduler import connection_failure

FRAMEWORK = "66d7e16c-0a80-472b-8c6b-79f890446cf8-0000"
AGENT = "66d7e16c-0a80-472b-8c6b-79f890446cf8-S0"
TASK_ROW = ("web.1f504b4d.0", "web", "RUNNING", FRAMEWORK, AGENT, "0.1", "32M", "4m")


def rendered(table, width: int) -> str:
    console = Console(width=width, soft_wrap=True)
    with console.capture() as capture:
        console.print(table)
    return capture.get()


def headers(table) -> list[str]:
    return [str(c.header) for c in table.columns]


def test_narrow_terminal_drops_whole_columns_least_important_first():
    table = fit_table(TASK_COLUMNS, [TASK_ROW], 80)
    assert headers(table) == ["ID", "NAME", "STATE", "CPUS", "MEM", "STARTED"]
    text = rendered(table, 80)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "web.1f504b4d.0" in text and "…" not in text


def test_wide_and_roomy_terminals_keep_every_column():
    for table in (
        fit_table(TASK_COLUMNS, [TASK_ROW], 80, wide=True),
        fit_table(TASK_COLUMNS, [TASK_ROW], 200),
    ):
        assert headers(table) == [c.header for c in TASK_COLUMNS]
    text = rendered(fit_table(TASK_COLUMNS, [TASK_ROW], 200), 200)
    assert FRAMEWORK in text and AGENT in text


def test_columns_that_are_never_dropped_stay_even_when_too_wide():
    columns = (Column("ID", is_id=True), Column("NOTE", 1))
    table = fit_table(columns, [(AGENT, "x")], 20)
    assert headers(table) == ["ID"]
    assert table.columns[0].min_width == len(AGENT)


def test_table_width_matches_rich():
    columns = (Column("A", is_id=True), Column("BB"))
    rows = [("abcdef", "x")]
    text = rendered(fit_table(columns, rows, 100), 100)
    assert max(len(line) for line in text.splitlines()) == table_width([6, 2])


@pytest.mark.parametrize(
    ("text", "state"),
    [
        ("running", "TASK_RUNNING"),
        ("TASK_FAILED", "TASK_FAILED"),
        ("Gone-By-Operator", "TASK_GONE_BY_OPERATOR"),
    ],
)
def test_state_names(text, state):
    assert normalise_state(text) == state


def test_unknown_state_lists_the_valid_ones():
    with pytest.raises(CliError) as caught:
        normalise_state("bogus")
    assert caught.value.code == 2
    assert "finished" in str(caught.value) and "running" in str(caught.value)


def test_signal_names():
    assert _signal_number("KILL") == 9
    assert _signal_number("sigterm") == 15
    assert _signal_number("2") == 2
    for bad in ("nope", "0", "999"):
        with pytest.raises(argparse.ArgumentTypeError):
            _signal_number(bad)


def test_connection_failure_reasons():
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed")
    assert connection_failure(refused) == "connection refused"
    assert connection_failure(TimeoutError()) == "timed out"
    unresolved = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert connection_failure(unresolved).startswith("host not found")
