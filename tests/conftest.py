"""Fixtures shared by every test tier.

* ``cluster``: a real master and agent(s) on 127.0.0.1 (function-scoped, torn down even when
  the test fails). Options come from ``@pytest.mark.cluster(agents=2, master_flags=[...],
  agent_flags=[...], resources="...")``. Skipped while the daemon modules do not exist.
* ``cluster_factory``: call it (same keyword arguments) to start one or more clusters.
* ``fake_master``: an in-process fake scheduler endpoint (`butte.testing.fake_master`).

When a test that used a cluster fails, the tail of every master/agent log is attached to its
failure report.

scripts/test.sh runs the suite in two pytest-xdist workers. Most tests wait far more than
they compute, so two at a time fit the machine; a test marked ``serial`` (those whose
timeouts are short enough that a busy neighbour could fail them: ZooKeeper sessions, agent
pings) runs alone, the other worker pausing at its next test (`butte.testing.turns`).

The fault suite's table (rows recorded by ``record_fault`` in tests/faults/conftest.py) is
printed here, where the reports of every worker arrive.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from butte.testing.cluster import ClusterHandle, daemons_missing, start_cluster
from butte.testing.fake_master import FakeMaster
from butte.testing.require import require
from butte.testing.turns import Turns


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "cluster(agents=1, master_flags=(), agent_flags=(), resources=...): "
        "options for the cluster fixture",
    )
    config.addinivalue_line(
        "markers", "serial: runs alone, never beside another test (see tests/conftest.py)"
    )


# Folders whose every test is serial: ZooKeeper sessions of 2 s and agent pings of 0.5 s.
SERIAL_FOLDERS = ("ha", "faults")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    tests = Path(__file__).parent
    for item in items:
        if tests in item.path.parents and item.path.relative_to(tests).parts[0] in SERIAL_FOLDERS:
            item.add_marker(pytest.mark.serial)


_turns: Turns | None = None


# tryfirst: outside pytest-timeout's wrapper, so the wait for a turn is not the test's time.
@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    global _turns
    if not hasattr(item.config, "workerinput"):  # not a pytest-xdist worker: nothing beside
        yield
        return
    if _turns is None:
        # Each worker's basetemp is <the run's basetemp>/popen-gwN: the parent is shared.
        _turns = Turns(Path(item.config.option.basetemp).parent)
    with _turns.held(alone=item.get_closest_marker("serial") is not None):
        yield


@dataclass
class _FaultRow:
    runs: int = 0
    clean: int = 0
    launched: int = 0
    lost: int = 0
    duplicates: int = 0
    missing: int = 0
    notes: list[str] = field(default_factory=list)


_fault_rows: dict[str, _FaultRow] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call":
        return
    for name, value in report.user_properties:
        if name != "fault_row":
            continue
        row = _fault_rows.setdefault(value["fault"], _FaultRow())
        row.runs += 1
        row.clean += bool(value["clean"])
        for key in ("launched", "lost", "duplicates", "missing"):
            setattr(row, key, getattr(row, key) + value[key])
        if value["note"] and value["note"] not in row.notes:
            row.notes.append(value["note"])


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _fault_rows:
        return
    header = ("fault", "runs", "launched", "lost", "dup. updates", "missing", "clean runs")
    rows = [
        (name, r.runs, r.launched, r.lost, r.duplicates, r.missing, f"{r.clean}/{r.runs}")
        for name, r in _fault_rows.items()
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
    for name, r in _fault_rows.items():
        for note in r.notes:
            terminalreporter.write_line(f"  {name}: {note}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):
        for handle in getattr(item, "_butte_clusters", []):
            report.sections.append((f"butte cluster logs ({handle.work_dir})", handle.logs()))


@pytest.fixture
def cluster_factory(request, tmp_path) -> Iterator[Callable[..., ClusterHandle]]:
    reason = daemons_missing()
    if reason:
        require(reason, "a real cluster")
    handles: list[ClusterHandle] = []
    request.node._butte_clusters = handles
    with contextlib.ExitStack() as stack:

        def make(**options) -> ClusterHandle:
            path = tmp_path / f"cluster-{len(handles)}"
            handle = stack.enter_context(start_cluster(path, **options))
            handles.append(handle)
            return handle

        yield make


@pytest.fixture
def cluster(request, cluster_factory) -> ClusterHandle:
    marker = request.node.get_closest_marker("cluster")
    return cluster_factory(**(marker.kwargs if marker else {}))


@pytest.fixture
def fake_master() -> Iterator[FakeMaster]:
    with FakeMaster() as master:
        yield master
