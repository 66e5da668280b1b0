"""Fixtures of the HA tests: real ZooKeeper servers (Debian's ``zookeeper`` package, which
``scripts/setup.sh`` installs) on free loopback ports.

* ``zookeeper``: one standalone server (function scope).
* ``zk_ensemble``: a 3-node ensemble (function scope).
* ``ha_cluster_factory``: builds an `HaCluster` (ensemble + masters + agents), always stopped.

Tests that need ZooKeeper carry ``@pytest.mark.ha`` and skip, with the reason, only when the
ZooKeeper jar is not installed. On failure the tail of every log is attached to the report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from ha_kit import HaCluster

from butte.testing.require import require
from butte.testing.zookeeper import ZooKeeperEnsemble, zookeeper_missing


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "ha: needs a real ZooKeeper (tests/ha; skipped when it is not installed)"
    )


def _require_zookeeper() -> None:
    reason = zookeeper_missing()
    if reason:
        require(reason, "ZooKeeper")


@pytest.fixture
def zookeeper(tmp_path) -> Iterator[ZooKeeperEnsemble]:
    _require_zookeeper()
    with ZooKeeperEnsemble(tmp_path / "zk", size=1) as zk:
        yield zk


@pytest.fixture
def zk_ensemble(tmp_path) -> Iterator[ZooKeeperEnsemble]:
    _require_zookeeper()
    with ZooKeeperEnsemble(tmp_path / "zk", size=3) as zk:
        yield zk


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when in ("setup", "call"):
        for cluster in getattr(item, "_ha_clusters", []):
            report.sections.append((f"HA cluster logs ({cluster.directory})", cluster.logs()))


@pytest.fixture
def ha_cluster_factory(request, tmp_path) -> Iterator[Callable[..., HaCluster]]:
    _require_zookeeper()
    clusters: list[HaCluster] = []
    request.node._ha_clusters = clusters

    def make(**options) -> HaCluster:
        cluster = HaCluster(tmp_path / f"ha-{len(clusters)}", **options)
        clusters.append(cluster)
        cluster.start()
        return cluster

    try:
        yield make
    finally:
        for cluster in clusters:
            cluster.stop()
