"""The hostile-input suite: generated requests against a real master and agent.

``BUTTE_FUZZ_EXAMPLES`` sets the generated inputs per call type: a short run (5) in the
normal suite, ``BUTTE_FUZZ_EXAMPLES=1000`` for the long run whose figures are in
docs/reliability.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from butte.testing.cluster import ClusterHandle, daemons_missing, start_cluster
from butte.testing.require import require

EXAMPLES = int(os.environ.get("BUTTE_FUZZ_EXAMPLES", "5"))


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHandle]:
    """One master and agent for a whole module of generated input."""
    require(daemons_missing(), "a real cluster")
    with start_cluster(tmp_path_factory.mktemp("fuzz")) as cluster:
        yield cluster
