"""`butte.agent.placement.make_sandbox`: the sandbox tree below an executors directory, made
with one mkdir a level and no stats once that directory is known."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from butte.agent import placement


def _sandbox(executors: Path, executor: str, container: str) -> str:
    return str(executors / executor / "runs" / container)


def test_a_sandbox_and_every_missing_level_above_it_are_made(tmp_path: Path) -> None:
    executors = tmp_path / "frameworks" / "f1" / "executors"
    done: set[str] = set()
    placement.make_sandbox(_sandbox(executors, "e1", "c1"), done)
    placement.make_sandbox(_sandbox(executors, "e1", "c2"), done)  # the executor's next run
    placement.make_sandbox(_sandbox(executors, "e1", "c2"), done)  # again: no error
    assert sorted(os.listdir(executors / "e1" / "runs")) == ["c1", "c2"]
    assert done == {str(executors)}


def test_the_sandbox_is_not_open_to_others(tmp_path: Path) -> None:
    """Mesos' agent makes a sandbox 0750: it holds private task data."""
    sandbox = _sandbox(tmp_path / "executors", "e1", "c1")
    mask = os.umask(0o022)
    try:
        placement.make_sandbox(sandbox, set())
    finally:
        os.umask(mask)
    assert os.stat(sandbox).st_mode & 0o777 == 0o750
    assert os.stat(os.path.dirname(sandbox)).st_mode & 0o777 == 0o755


def test_below_a_known_executors_directory_only_mkdir_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    executors = tmp_path / "executors"
    done: set[str] = set()
    placement.make_sandbox(_sandbox(executors, "e1", "c1"), done)
    calls: list[tuple[str, str]] = []
    real_stat, real_mkdir = os.stat, os.mkdir

    def stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        calls.append(("stat", str(path)))
        return real_stat(path, *args, **kwargs)

    def mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        calls.append(("mkdir", str(path)))
        real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat)
    monkeypatch.setattr(os, "mkdir", mkdir)
    sandbox = _sandbox(executors, "e2", "c2")
    placement.make_sandbox(sandbox, done)
    monkeypatch.undo()
    assert os.path.isdir(sandbox)
    runs = os.path.dirname(sandbox)
    assert calls == [
        ("mkdir", os.path.dirname(runs)),
        ("mkdir", runs),
        ("mkdir", sandbox),
    ]


def test_a_framework_directory_removed_meanwhile_is_made_again(tmp_path: Path) -> None:
    framework = tmp_path / "frameworks" / "f1"
    executors = framework / "executors"
    done: set[str] = set()
    placement.make_sandbox(_sandbox(executors, "e1", "c1"), done)
    shutil.rmtree(framework)  # its garbage collection
    placement.make_sandbox(_sandbox(executors, "e2", "c2"), done)
    assert os.path.isdir(_sandbox(executors, "e2", "c2"))
