"""Fixtures of the fault-injection suite and the table it prints at the end.

* ``fault_run``: every test that takes it runs ``BUTTE_FAULT_RUNS`` times (default 1), e.g.
  ``BUTTE_FAULT_RUNS=5 pytest tests/faults`` for a soak.
* ``scheduler``: starts `fault_kit.SchedulerProcess` es in the test's directory and stops them
  afterwards.
* ``record_fault``: a test hands it the fault's name and its `fault_kit.UpdateCheck`; the
  terminal summary (tests/conftest.py) shows one row per fault: runs, tasks launched, tasks
  lost, duplicate and missing updates, and whether every run passed.
* After every test, processes left in its directory (executors, tasks) are killed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fault_kit import SchedulerProcess, UpdateCheck, kill_leftovers


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
        # A user property travels with the test's report, from a pytest-xdist worker too, to
        # the process that prints the table (tests/conftest.py).
        row = {
            "fault": fault,
            "launched": check.launched,
            "lost": len(check.lost),
            "duplicates": check.duplicates,
            "missing": len(check.missing),
            "clean": not (check.lost or check.missing or check.order),
            "note": note,
        }
        request.node.user_properties.append(("fault_row", row))

    return record
