"""Shared plumbing of the operator subcommands: the master client from ``--master``, error
translation (one line, meaningful exit status), rich consoles, tables that fit the terminal,
and formatting helpers.

Exit statuses: 0 ok; 1 not found or refused by the master; 2 master unreachable or bad usage.

Tables never cut an ID (it must stay copyable into ``task cat`` or ``teardown``): a column
that does not fit is dropped whole, least important first, and ``--wide`` (``-o wide``)
keeps every column, letting long lines wrap in the terminal (as ``kubectl -o wide`` does).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from butte.cli.common import CliError, check_master
from butte.client.operator import DEFAULT_MASTER, MasterUnreachable, OperatorClient, OperatorError

Handler = Callable[[argparse.Namespace], int]

NOT_FOUND = 1
UNREACHABLE = 2


def add_common(parser: argparse.ArgumentParser, json_flag: bool = True) -> None:
    """``--master`` (env BUTTE_MASTER) and ``--json`` on an operator subcommand."""
    parser.add_argument(
        "--master",
        default=DEFAULT_MASTER,
        help="master to talk to: HOST:PORT, https://HOST:PORT (TLS) or zk://HOSTS/PATH",
    )
    add_credentials(parser)
    if json_flag:
        parser.add_argument(
            "--json", action="store_true", help="print JSON (for scripts) instead of a table"
        )


def add_credentials(parser: argparse.ArgumentParser) -> None:
    """``--principal`` and ``--secret`` for a master that authenticates (better given as
    BUTTE_PRINCIPAL and BUTTE_SECRET: a secret on a command line shows in ``ps``)."""
    parser.add_argument("--principal", default=None, help="principal to authenticate as")
    parser.add_argument(
        "--secret", default=None, help="the principal's secret (prefer the environment)"
    )


def add_wide(parser: argparse.ArgumentParser, json_flag: bool = True) -> None:
    """``--wide`` and ``-o wide`` (``-o json`` too where ``--json`` exists) on a command that
    prints a table (see the module docstring)."""
    parser.add_argument(
        "--wide",
        action="store_true",
        help="show every column even where the terminal is too narrow (lines then wrap)",
    )
    parser.add_argument(
        "-o",
        "--output",
        choices=("table", "wide", "json") if json_flag else ("table", "wide"),
        default="table",
        help="output format: table (columns that fit), wide (every column)"
        + (", json" if json_flag else ""),
    )


def client(args: argparse.Namespace) -> OperatorClient:
    check_master(args.master)
    try:
        timeout = float(os.environ.get("BUTTE_TIMEOUT", "30"))
    except ValueError:
        timeout = -1.0
    if not 0 < timeout < 86400:
        raise CliError("BUTTE_TIMEOUT must be a number of seconds (0-86400)", 2)
    return OperatorClient(
        args.master,
        timeout=timeout,
        principal=getattr(args, "principal", None),
        secret=getattr(args, "secret", None),
    )


def guarded(handler: Handler) -> Handler:
    """Turns client failures into CliError: unreachable -> 2, 404 -> 1, other answers -> 1."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        output = getattr(args, "output", None)
        if output == "wide":
            args.wide = True
        elif output == "json":
            args.json = True
        try:
            return handler(args)
        except MasterUnreachable as e:
            raise CliError(str(e), UNREACHABLE) from None
        except OperatorError as e:
            raise CliError(f"master refused: {e}", NOT_FOUND) from None

    return run


def stdout() -> Console:
    """Tables go to stdout; off a terminal they get a wide fixed width (no wrapping)."""
    if sys.stdout.isatty():
        return Console()
    return Console(width=int(os.environ.get("COLUMNS", "200")), soft_wrap=True)


def stderr() -> Console:
    return Console(stderr=True)


@contextlib.contextmanager
def progress(message: str) -> Iterator[None]:
    """A spinner on stderr while something slow runs (only on a terminal)."""
    console = stderr()
    if not console.is_terminal:
        yield
        return
    with console.status(message):
        yield


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False))


def scalars(resources: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Totals of the scalar resources of a v1 Resource list."""
    out: dict[str, float] = {}
    for r in resources or ():
        if r.get("type") == "SCALAR" or "scalar" in r:
            name = r.get("name", "?")
            out[name] = out.get(name, 0.0) + float(r.get("scalar", {}).get("value", 0.0))
    return out


def number(value: float) -> str:
    """A resource amount without needless decimals (``2``, ``0.5``, ``1.25``)."""
    return f"{value:.2f}".rstrip("0").rstrip(".") if value % 1 else str(int(value))


def mem(mb: float) -> str:
    """Megabytes, human-sized (``512M``, ``4G``)."""
    if mb >= 1024:
        return f"{number(round(mb / 1024, 1))}G"
    return f"{number(round(mb, 1))}M"


def used_of(used: float, total: float, fmt: Callable[[float], str] = number) -> str:
    return f"{fmt(used)}/{fmt(total)}"


def age(seconds: float | None, now: float | None = None) -> str:
    """How long ago an epoch time was, compactly (``45s``, ``12m``, ``3h``, ``2d``)."""
    if not seconds:
        return "-"
    delta = max(0.0, (now or time.time()) - seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            return f"{int(delta // size)}{unit}"
    return f"{int(delta)}s"


def ns_seconds(time_info: dict[str, Any] | None) -> float | None:
    """A v1 TimeInfo as epoch seconds."""
    if not time_info:
        return None
    return int(time_info.get("nanoseconds", 0)) / 1e9


def short_state(state: str) -> str:
    return state[5:] if state.startswith("TASK_") else state


# -- tables that fit -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """A table column. ``drop`` orders what goes first when the terminal is too narrow: 0 is
    never dropped (IDs and the row's key); among the others the highest goes first."""

    header: str
    drop: int = 0
    is_id: bool = False
    justify: str = "left"


def table_width(widths: Sequence[int]) -> int:
    """Width of a rich table with the default box and padding for these column widths: one
    space each side of every cell and one rule between and around the columns."""
    return sum(w + 2 for w in widths) + len(widths) + 1


def fit_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    width: int,
    wide: bool = False,
    title: str | None = None,
) -> Table:
    """A table of the columns that fit in ``width`` (all of them if ``wide``), dropping the
    least important first; ID columns never wrap nor shrink."""
    natural = [max([len(c.header), *(len(row[i]) for row in rows)]) for i, c in enumerate(columns)]
    kept = list(range(len(columns)))
    if not wide:
        by_drop = sorted((i for i in kept if columns[i].drop), key=lambda i: -columns[i].drop)
        for i in by_drop:
            if table_width([natural[k] for k in kept]) <= width:
                break
            kept.remove(i)
    table = Table(title=title)
    for i in kept:
        column = columns[i]
        if column.is_id:
            # Never cut or folded: a wrapped ID cannot be copied from the terminal.
            table.add_column(column.header, no_wrap=True, min_width=natural[i], overflow="ignore")
        else:
            table.add_column(column.header, justify=column.justify)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*(row[i] for i in kept))
    return table


def print_table(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    wide: bool = False,
    title: str | None = None,
) -> None:
    """Prints `fit_table` for stdout's width (see `uncut_console`)."""
    console = stdout()
    table = fit_table(columns, rows, console.width, wide, title)
    uncut_console(console, table, wide).print(table)


def uncut_console(console: Console, renderable: Any, wide: bool) -> Console:
    """``console``, or a wider one where ``renderable`` would be cut: a wide table, or one
    whose kept columns cannot shrink to the terminal, is printed at its own width so nothing
    is cut (the terminal wraps its lines)."""
    size = Console(width=100_000).measure(renderable)
    needed = size.maximum if wide else size.minimum
    if needed <= console.width:
        return console
    return Console(width=needed, soft_wrap=True, force_terminal=console.is_terminal)
