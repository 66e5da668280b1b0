"""--http_command_executor: butte has only the v1 HTTP command executor, so Mesos' false
(the driver-based executor) is refused at start instead of being accepted and ignored."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest

from butte.agent.main import add_flags


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["--http_command_executor=false"], {}),
        (["--no-http_command_executor"], {}),
        ([], {"BUTTE_HTTP_COMMAND_EXECUTOR": "false"}),
    ],
)
def test_false_is_refused_before_the_agent_starts(
    tmp_path: Path, argv: list[str], env: dict[str, str]
) -> None:
    work_dir = tmp_path / "agent"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "butte",
            "agent",
            "--master",
            "127.0.0.1:14030",
            "--work_dir",
            str(work_dir),
            *argv,
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2, proc.stderr
    assert "--http_command_executor=false is not supported" in proc.stderr
    assert not work_dir.exists()  # refused before anything was set up


def test_true_stays_the_default() -> None:
    parser = argparse.ArgumentParser()
    add_flags(parser)
    args = parser.parse_args(["--master", "127.0.0.1:14030", "--work_dir", "/tmp/w"])
    assert args.http_command_executor is True
