"""The agent's ``/files/debug`` map (`SandboxFiles.attached`) on a real work dir: each path
it lists is one `SandboxFiles.resolve` serves, and nothing it refuses is listed
(tests/integration/test_gaps_files_debug.py serves it over HTTP)."""

from __future__ import annotations

import os
from pathlib import Path

from butte.agent import paths
from butte.agent.files import SandboxFiles


def _run(work_dir: Path, agent: str, fw: str, ex: str, run: str) -> str:
    sandbox = paths.sandbox_dir(str(work_dir), agent, fw, ex, run)
    os.makedirs(sandbox)
    Path(sandbox, "stdout").write_text("hi\n")
    return sandbox


def test_attached_lists_every_served_form_and_nothing_else(tmp_path: Path) -> None:
    work = tmp_path / "work"
    old = _run(work, "S1", "f1", "e1", "c1")
    new = _run(work, "S1", "f1", "e1", "c2")
    os.symlink("c2", paths.latest_link(new))
    elsewhere = _run(work, "S0", "f0", "e0", "c0")  # an earlier agent id: real paths only
    os.symlink("c0", paths.latest_link(elsewhere))
    # Refused by resolve, so not listed: a run that is a link out of its runs dir, and a
    # 'latest' naming no run.
    outside = tmp_path / "outside"
    outside.mkdir()
    runs_f2 = paths.runs_dir(str(work), "S1", "f2", "e2")
    os.makedirs(runs_f2)
    os.symlink(outside, os.path.join(runs_f2, "c9"))
    os.symlink("gone", os.path.join(runs_f2, paths.LATEST))

    files = SandboxFiles(str(work), lambda: "S1")
    attached = files.attached()
    real = os.path.realpath
    assert attached == {
        old: real(old),
        new: real(new),
        os.path.join(os.path.dirname(new), "latest"): real(new),
        "/frameworks/f1/executors/e1/runs/latest": real(new),
        elsewhere: real(elsewhere),
        os.path.join(os.path.dirname(elsewhere), "latest"): real(elsewhere),
    }
    for path, target in attached.items():
        assert files.resolve(path).real == target
    assert SandboxFiles(str(tmp_path / "none"), lambda: None).attached() == {}
