"""Fixtures the compatibility tests share."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from butte.testing.chronos import ChronosProcess


@pytest.fixture
def scheduler(cluster, tmp_path) -> Iterator[ChronosProcess]:
    """butte's Chronos on the test's cluster, stopped afterwards."""
    proc = ChronosProcess(tmp_path / "chronos", cluster.master_address)
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()
