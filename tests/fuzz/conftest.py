"""The hostile-input suite: generated requests against a real master and agent.

How many inputs are generated is set in ``fuzz_settings.py``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from butte.testing.cluster import ClusterHandle, daemons_missing, start_cluster
from butte.testing.require import require


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHandle]:
    """One master and agent for a whole module of generated input."""
    require(daemons_missing(), "a real cluster")
    with start_cluster(tmp_path_factory.mktemp("fuzz")) as cluster:
        yield cluster
