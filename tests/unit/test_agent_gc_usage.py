"""How full the agent's work dir counts for sandbox collection under disk pressure."""

from __future__ import annotations

import os

from butte.agent import gc


def test_used_fraction_counts_root_reserved_blocks_as_free_as_mesos_does(monkeypatch):
    # 1,000 blocks, 100 in use, 400 more reserved for root: Mesos' fs::usage says 0.1.
    stat = os.statvfs_result((4096, 4096, 1000, 900, 500, 0, 0, 0, 0, 255))
    monkeypatch.setattr(gc.os, "statvfs", lambda path: stat)
    assert gc.used_fraction("/work") == 0.1
    # gc_delay x (1 - headroom 0.1 - 0.1): 80% of the delay, not 40% as with f_bavail.
    assert gc.max_age(100.0, 0.1, gc.used_fraction("/work")) == 80.0


def test_used_fraction_of_an_unreadable_or_empty_file_system_is_zero(monkeypatch, tmp_path):
    assert gc.used_fraction(str(tmp_path / "missing")) == 0.0
    empty = os.statvfs_result((4096, 4096, 0, 0, 0, 0, 0, 0, 0, 255))
    monkeypatch.setattr(gc.os, "statvfs", lambda path: empty)
    assert gc.used_fraction("/work") == 0.0
