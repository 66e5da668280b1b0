"""The agent's side of reservations and persistent volumes: CHECKPOINT_RESOURCES in the
core (what it checkpoints, reports and removes), volumes handed to launches, and the
shell's volume directories, attachment into sandboxes and checkpoint on disk."""

from __future__ import annotations

import os
from typing import Any

import pytest

from butte.agent import checkpoint, paths, volumes
from butte.agent.effects import CheckpointResources
from butte.core import internal
from butte.core.codec import encode_json
from butte.core.messages import TaskInfo, decode
from butte.core.resources import Resources
from butte.testing.require import require
from tests.unit.agent_kit import AID, Harness, command_task, run


def _volume(pid: str, size: float = 10, role: str = "db", **source: Any) -> dict[str, Any]:
    disk: dict[str, Any] = {
        "persistence": {"id": pid},
        "volume": {"container_path": "data", "mode": "RW"},
    }
    if source:
        disk["source"] = source
    return {
        "name": "disk",
        "type": "SCALAR",
        "scalar": {"value": size},
        "reservations": [{"type": "DYNAMIC", "role": role}],
        "disk": disk,
    }


def _total(*extra: dict) -> list[dict]:
    return [*Resources.scalars(cpus=4, mem=1024).to_json("post"), *extra]


def test_checkpoint_resources_is_reported_and_removes_dropped_volumes():
    h = Harness(work_dir="/w")
    h.register()
    h.master(internal.CheckpointResources(resources=_total(_volume("a"), _volume("b"))))
    [first] = [c for c in h.checkpoints if isinstance(c, CheckpointResources)]
    assert first.removed == () and first.emptied == ()
    assert h.agent.register_message().agent_info.resources == _total(_volume("a"), _volume("b"))
    assert h.agent.total_resources().reserved("db").scalar("disk") == 20
    mount = {"type": "MOUNT", "mount": {"root": "/mnt/d"}}
    h.master(internal.CheckpointResources(resources=_total(_volume("c", **mount))))
    h.master(internal.CheckpointResources(resources=_total()))
    second, third = [c for c in h.checkpoints if isinstance(c, CheckpointResources)][1:]
    assert second.removed == ("/w/volumes/roles/db/a", "/w/volumes/roles/db/b")
    assert third.removed == () and third.emptied == ("/mnt/d",)


def test_a_task_holding_a_volume_launches_with_it():
    h = Harness(work_dir="/w")
    h.register()
    task = command_task("t1")
    body = {
        "name": "t1",
        "task_id": {"value": "t1"},
        "agent_id": {"value": AID},
        "command": {"value": "true"},
        "resources": [_volume("pg", role="db"), *task.resources],
    }
    run(h, decode(encode_json(body), TaskInfo))
    [launch] = h.launched.values()
    assert launch.volumes == (("/w/volumes/roles/db/pg", "data", "RW"),)


def test_volume_paths_follow_the_disk_source():
    assert volumes.mounts_for("/w", [_volume("x", **{"type": "PATH", "path": {"root": "/p"}})]) == (
        ("/p/volumes/roles/db/x", "data", "RW"),
    )
    assert volumes.mounts_for(
        "/w", [_volume("y", **{"type": "MOUNT", "mount": {"root": "/m"}})]
    ) == (("/m", "data", "RW"),)
    assert (
        volumes.mounts_for("/w", [{"name": "disk", "type": "SCALAR", "scalar": {"value": 1}}]) == ()
    )


def test_resources_without_a_persistence_are_not_parsed(monkeypatch):
    def parse(raw: Any) -> Resources:
        raise AssertionError("parsed")

    monkeypatch.setattr(volumes.Resources, "from_json", parse)
    plain = [
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 1}},
        {"name": "disk", "type": "SCALAR", "scalar": {"value": 1}},
        {"name": "disk", "type": "SCALAR", "scalar": {"value": 1}, "disk": {"volume": {}}},
    ]
    assert volumes.mounts_for("/w", plain) == ()
    assert volumes.volumes("/w", iter(plain)) == {}
    assert volumes.mount_roots("/w", plain) == set()


def test_sync_creates_keeps_and_removes_volume_directories(tmp_path):
    work = str(tmp_path)
    total = _total(_volume("a"))
    volumes.sync(work, total, ())
    host = tmp_path / "volumes" / "roles" / "db" / "a"
    (host / "f").write_text("x")
    volumes.sync(work, total, ())
    assert (host / "f").read_text() == "x"  # kept across syncs
    mount_root = tmp_path / "mnt"
    (mount_root / "sub").mkdir(parents=True)
    volumes.sync(work, _total(), [str(host)], [str(mount_root)])
    assert not host.exists()
    assert mount_root.is_dir() and os.listdir(mount_root) == []


def test_attach_links_or_binds_and_never_leaves_the_sandbox(tmp_path):
    sandbox = tmp_path / "sandbox"
    host = tmp_path / "vol"
    mounts = ((str(host), "sub/data", "RW"),)
    volumes.attach(str(sandbox), mounts)
    (sandbox / "sub" / "data" / "f").write_text("through the sandbox")
    assert (host / "f").read_text() == "through the sandbox"
    volumes.detach(str(sandbox), mounts)
    with pytest.raises(OSError):
        volumes.attach(str(sandbox), ((str(host), "../escape", "RW"),))


def test_the_checkpointed_total_is_written_and_read_back(tmp_path):
    writer = checkpoint.CheckpointWriter(str(tmp_path))
    total = _total(_volume("a"))
    writer.write_batch([CheckpointResources(total)])
    assert checkpoint.checkpointed_resources(str(tmp_path)) == total
    assert (tmp_path / "volumes" / "roles" / "db" / "a").is_dir()
    with open(paths.resources_info_path(str(tmp_path)), "w") as f:
        f.write("{}")
    with pytest.raises(ValueError):
        checkpoint.checkpointed_resources(str(tmp_path))


def test_attach_gives_the_volume_to_the_tasks_user(tmp_path):
    if os.geteuid() != 0:
        require("the test runs as root only (changing an owner)", "root")
    sandbox, host = tmp_path / "sb", tmp_path / "v"
    mounts = ((str(host), "d", "RW"),)
    volumes.attach(str(sandbox), mounts, owner=(65534, 65534))
    try:
        assert (host.stat().st_uid, host.stat().st_gid) == (65534, 65534)
    finally:
        volumes.detach(str(sandbox), mounts)
