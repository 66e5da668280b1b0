"""Fixtures of the fault-injection suite and the table it prints at the end.

* ``fault_run``: every test that takes it runs ``BUTTE_FAULT_RUNS`` times (default 1), e.g.
  ``BUTTE_FAULT_RUNS=5 pytest tests/faults`` for a soak.
* ``scheduler``: starts `fault_kit.SchedulerProcess` es in the test's directory and stops them
  afterwards.
* ``record_fault``: a test hands it the fault's name and its `fault_kit.UpdateCheck`; the
  terminal summary shows one row per fault: runs, tasks launched, tasks lost, duplicate and
  missing updates, and whether every run passed.
* After every test, processes left in its directory (executors, tasks) are killed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fault_kit import SchedulerProcess, UpdateCheck, kill_leftovers


@dataclass
class FaultRow:
    runs: int = 0
    passed: int = 0
    launched: int = 0
    lost: int = 0
    duplicates: int = 0
    missing: int = 0
    notes: list[str] = field(default_factory=list)


_ROWS: dict[str, FaultRow] = {}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "fault_run" in metafunc.fixturenames:
        runs = max(1, int(os.environ.get("BUTTE_FAULT_RUNS", "1")))
        metafunc.parametrize("fault_run", range(runs), ids=[f"run{i}" for i in range(runs)])


@pytest.fixture
def scheduler(tmp_path: Path) -> Iterator[Callable[..., SchedulerProcess]]:
    started: list[SchedulerProcess] = []

    def make(master: str, name: str = "framework", **config: Any) -> SchedulerProcess:
        process = SchedulerProcess(tmp_path, master, name, **config)
        started.append(process)
        return process

    yield make
    for process in started:
        process.stop()


@pytest.fixture(autouse=True)
def _kill_leftovers(tmp_path: Path) -> Iterator[None]:
    yield
    kill_leftovers(tmp_path)


@pytest.fixture
def record_fault(request: pytest.FixtureRequest) -> Callable[..., None]:
    def record(fault: str, check: UpdateCheck, note: str = "") -> None:
        row = _ROWS.setdefault(fault, FaultRow())
        row.runs += 1
        row.launched += check.launched
        row.lost += len(check.lost)
        row.duplicates += check.duplicates
        row.missing += len(check.missing)
        clean = not (check.lost or check.missing or check.order)
        row.passed += clean
        if note and note not in row.notes:
            row.notes.append(note)

    return record


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _ROWS:
        return
    header = ("fault", "runs", "launched", "lost", "dup. updates", "missing", "clean runs")
    rows = [
        (name, r.runs, r.launched, r.lost, r.duplicates, r.missing, f"{r.passed}/{r.runs}")
        for name, r in _ROWS.items()
    ]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]

    def line(values: tuple) -> str:
        cells = [
            str(v).ljust(w) if i == 0 else str(v).rjust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ]
        return "| " + " | ".join(cells) + " |"

    terminalreporter.section("fault injection")
    terminalreporter.write_line(line(header))
    terminalreporter.write_line("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        terminalreporter.write_line(line(row))
    for name, r in _ROWS.items():
        for note in r.notes:
            terminalreporter.write_line(f"  {name}: {note}")
