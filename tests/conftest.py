"""Fixtures shared by every test tier.

* ``cluster``: a real master and agent(s) on 127.0.0.1 (function-scoped, torn down even when
  the test fails). Options come from ``@pytest.mark.cluster(agents=2, master_flags=[...],
  agent_flags=[...], resources="...")``. Skipped while the daemon modules do not exist.
* ``cluster_factory``: call it (same keyword arguments) to start one or more clusters.
* ``fake_master``: an in-process fake scheduler endpoint (`butte.testing.fake_master`).

When a test that used a cluster fails, the tail of every master/agent log is attached to its
failure report.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest

from butte.testing.cluster import ClusterHandle, daemons_missing, start_cluster
from butte.testing.fake_master import FakeMaster
from butte.testing.require import require


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "cluster(agents=1, master_flags=(), agent_flags=(), resources=...): "
        "options for the cluster fixture",
    )


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
