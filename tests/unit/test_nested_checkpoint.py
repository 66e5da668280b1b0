"""The pure parts of nested containers across an agent restart (`butte.agent.nested`,
"Checkpoint and recovery"; `butte.agent.containerizer.nested_exec`): the checkpoint's
layout and records, what a restarted agent does with each container it finds, which wait
status it reports for one that ended meanwhile, and the launcher's ``status`` file."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from butte.agent import paths
from butte.agent.containerizer import nested_exec
from butte.agent.nested import (
    ADOPT,
    DESTROY,
    ENDED,
    FORGET,
    NOT_RECORDED,
    ORPHAN,
    NestedContainer,
    NestedRecord,
    read_checkpoints,
    recovered_end,
    recovery_action,
    termination_json,
)

RECORD = NestedRecord(
    container_id="debug-1",
    parent_id="c0ffee",
    sandbox="/w/slaves/S/frameworks/F/executors/E/runs/c0ffee/containers/debug-1",
    session=True,
    tty=False,
    launcher_pid=4242,
    launcher_start=123456,
    boot_id="b00t",
)


def test_the_checkpoint_is_kept_by_parent_as_mesos_runtime_directory() -> None:
    nested = paths.nested_dir("/w", "c0ffee", "debug-1")
    assert nested == "/w/meta/containers/c0ffee/containers/debug-1"
    assert paths.nested_parent_dir("/w", "c0ffee") == "/w/meta/containers/c0ffee"
    assert paths.nested_info_path(nested).endswith("/debug-1/nested.info")
    assert paths.nested_status_path(nested).endswith("/debug-1/status")
    assert paths.nested_termination_path(nested).endswith("/debug-1/termination")
    assert paths.nested_sandbox("/s/runs/c0ffee", "debug-1") == "/s/runs/c0ffee/containers/debug-1"


def test_a_record_reads_back_and_a_torn_or_foreign_one_does_not() -> None:
    data = RECORD.to_json()
    assert NestedRecord.from_json(data) == RECORD
    assert NestedRecord.from_json(data[: len(data) // 2]) is None  # a write cut short
    assert NestedRecord.from_json(b"") is None
    raw = json.loads(data)
    for broken in (
        {**raw, "launcher_pid": "x"},
        {**raw, "launcher_pid": 0},
        {**raw, "container_id": "../../etc"},
        {k: v for k, v in raw.items() if k != "launcher_start"},
    ):
        assert NestedRecord.from_json(json.dumps(broken).encode()) is None
    assert NestedRecord.from_json(json.dumps({**raw, "boot_id": None}).encode()) is not None


@pytest.mark.parametrize(
    "readable, alive, session, parent, action",
    [
        (True, True, False, True, ADOPT),
        (True, True, True, True, DESTROY),  # Mesos: a DEBUG container is destroyed
        (True, True, False, False, ORPHAN),
        (True, True, True, False, ORPHAN),
        (True, False, False, True, ENDED),
        (True, False, True, True, ENDED),
        (True, False, False, False, FORGET),
        (False, False, False, True, FORGET),  # its launcher never got to start it
    ],
)
def test_recovery_action(readable: bool, alive: bool, session: bool, parent: bool, action: str):
    assert (
        recovery_action(
            readable=readable, launcher_alive=alive, session=session, parent_recovered=parent
        )
        == action
    )


def test_the_end_of_a_container_that_ended_without_the_agent() -> None:
    container = NestedContainer("n", "p", "/s", False, False, wait_status=9, message="gone")
    termination = termination_json(container)
    # The agent's own answer first, then its launcher's status, else SIGKILL (Mesos reads a
    # missing status file so).
    assert recovered_end(termination, b"768\n") == (9, "gone")
    assert recovered_end(None, b"768\n") == (3 << 8, None)
    assert recovered_end(b"{broken", b"15\n") == (signal.SIGTERM, None)
    assert recovered_end(None, b"") == (signal.SIGKILL, NOT_RECORDED)
    assert recovered_end(None, None) == (signal.SIGKILL, NOT_RECORDED)
    plain = NestedContainer("n", "p", "/s", False, False, wait_status=0)
    assert recovered_end(termination_json(plain), None) == (0, None)


def test_the_launchers_wait_status_is_the_agents() -> None:
    assert nested_exec.wait_status(0) == 0
    assert nested_exec.wait_status(3 << 8) == 3 << 8
    assert nested_exec.wait_status(signal.SIGKILL) == signal.SIGKILL
    assert nested_exec.wait_status(0x80 | signal.SIGSEGV) == signal.SIGSEGV  # core dumped


def test_the_status_file_is_written_whole(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        nested_exec.write_status(fd, 3 << 8)
        nested_exec.write_status(fd, signal.SIGKILL)  # replaced, never appended to
    finally:
        os.close(fd)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["status"]
    assert (tmp_path / "status").read_text() == "9\n"
    assert recovered_end(None, (tmp_path / "status").read_bytes()) == (signal.SIGKILL, None)


def test_read_checkpoints(tmp_path: Path) -> None:
    work = str(tmp_path)
    good = Path(paths.nested_dir(work, "c0ffee", "debug-1"))
    good.mkdir(parents=True)
    (good / "nested.info").write_bytes(RECORD.to_json())
    (good / "status").write_text("0\n")
    torn = Path(paths.nested_dir(work, "c0ffee", "torn"))
    torn.mkdir(parents=True)
    (torn / "nested.info").write_bytes(RECORD.to_json()[:10])
    # A record in another container's place is not taken for that container.
    moved = Path(paths.nested_dir(work, "c0ffee", "moved"))
    moved.mkdir(parents=True)
    (moved / "nested.info").write_bytes(RECORD.to_json())
    Path(paths.nested_dir(work, "c0ffee", "x.tmp")).mkdir(parents=True)
    Path(paths.nested_parent_dir(work, "empty"), "containers").mkdir(parents=True)
    found, empty = read_checkpoints(work)
    assert empty == [paths.nested_parent_dir(work, "empty")]
    by_name = {item.container_id: item for item in found}
    assert set(by_name) == {"debug-1", "torn", "moved"}
    assert by_name["debug-1"].record == RECORD
    assert by_name["debug-1"].status == b"0\n" and by_name["debug-1"].termination is None
    assert by_name["torn"].record is None and by_name["moved"].record is None
    assert read_checkpoints(str(tmp_path / "nothing")) == ([], [])
