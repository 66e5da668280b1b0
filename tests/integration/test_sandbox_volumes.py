"""ContainerInfo.volumes of tasks without an image (butte/agent/volumes.py, docs/containers.md
"Volumes without an image"): a real agent under a fake master. A command task sees a
SANDBOX_PATH of its own sandbox and an allowed host path (read-only) at relative paths in
its sandbox; task group members share a SANDBOX_PATH of their PARENT (the executor's
sandbox), as Marathon's ephemeral pod volumes do; what cannot be done is refused with a
clear status, never run without its volume."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from test_agent_process import (
    AID,
    FRAMEWORK,
    AgentProcess,
    FakeMaster,
    run_scenario,
    sandbox,
    wait_for,
)

pytestmark = pytest.mark.integration

MESOS = "MESOS"


def _sandbox_volume(container_path: str, path: str, kind: str = "SELF", mode: str = "RW") -> dict:
    return {
        "container_path": container_path,
        "mode": mode,
        "source": {"type": "SANDBOX_PATH", "sandbox_path": {"type": kind, "path": path}},
    }


def _host_volume(container_path: str, path: str, mode: str = "RW") -> dict:
    return {
        "container_path": container_path,
        "mode": mode,
        "source": {"type": "HOST_PATH", "host_path": {"path": path}},
    }


def _container(*volumes: dict) -> dict[str, Any]:
    return {"type": MESOS, "volumes": list(volumes)}


def _member(task_id: str, command: str, *volumes: dict) -> dict[str, Any]:
    return {
        "name": task_id,
        "task_id": {"value": task_id},
        "agent_id": {"value": AID},
        "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}}],
        "command": {"value": command},
        "container": _container(*volumes),
    }


def _group(executor_id: str, *members: dict) -> dict[str, Any]:
    return {
        "type": "RUN_TASK_GROUP",
        "framework": FRAMEWORK,
        "executor": {"executor_id": {"value": executor_id}, "type": "DEFAULT"},
        "task_group": {"tasks": list(members)},
    }


def _last(master: FakeMaster, task_id: str) -> dict[str, Any]:
    return master.updates(task_id)[-1]


def test_volumes_of_tasks_without_an_image(tmp_path: Path) -> None:
    shared = tmp_path / "shared-host"
    shared.mkdir()
    (shared / "config").write_text("from the host\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    as_root = os.geteuid() == 0

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        # A command task: its own sandbox path at mnt/data, the host path read-only at conf.
        await master.run_task(
            "cmd",
            "echo kept > mnt/data/out; cat conf/config > copy; "
            "if echo no > conf/written 2>/dev/null; then echo writable; else echo read-only; fi"
            " > ro",
            container=_container(
                _sandbox_volume("mnt/data", "data"), _host_volume("conf", str(shared), "RO")
            ),
        )
        # Members share the executor's directory "pod-vol": the writer writes, the reader
        # (read-only) waits for it and copies it into its own directory.
        await master.send(
            _group(
                "g1",
                _member(
                    "writer",
                    "echo shared > vol/note; sleep 100",
                    _sandbox_volume("vol", "pod-vol", "PARENT"),
                ),
                _member(
                    "reader",
                    "until [ -s v/note ]; do sleep 0.05; done; cp v/note got; "
                    "if touch v/mine 2>/dev/null; then echo writable; else echo read-only; fi > ro;"
                    " sleep 100",
                    _sandbox_volume("v", "pod-vol", "PARENT", "RO"),
                ),
            )
        )
        # Refused: an absolute path without an image, PARENT outside a group (TASK_ERROR);
        # a host path outside --allowed_host_path_volumes (TASK_FAILED, nothing runs).
        await master.run_task("abs", "true", container=_container(_sandbox_volume("/data", "data")))
        await master.run_task(
            "parent", "true", container=_container(_sandbox_volume("p", "x", "PARENT"))
        )
        await master.run_task(
            "denied", "touch ran", container=_container(_host_volume("h", str(elsewhere)))
        )

        await wait_for(lambda: "TASK_FINISHED" in master.states("cmd"), "cmd finishes", 20)
        box = sandbox(tmp_path, "cmd")
        assert (box / "data" / "out").read_text() == "kept\n"  # the source, in the sandbox
        assert (box / "copy").read_text() == "from the host\n"
        assert (box / "ro").read_text() == ("read-only\n" if as_root else "writable\n")
        assert not (shared / "written").exists() or not as_root

        group = sandbox(tmp_path, "g1")
        ro_file = group / "tasks" / "reader" / "ro"
        # Not just there: written (the shell makes the file before echo writes it).
        await wait_for(lambda: ro_file.exists() and ro_file.read_text(), "reader", 20)
        assert (group / "pod-vol" / "note").read_text() == "shared\n"
        assert (group / "tasks" / "reader" / "got").read_text() == "shared\n"
        ro = ro_file.read_text()
        assert ro == ("read-only\n" if as_root else "writable\n")

        for task_id, words in (
            ("abs", "is absolute; without an image"),
            ("parent", "PARENT are for task group members only"),
        ):
            await wait_for(lambda t=task_id: master.updates(t), task_id, 10)
            status = _last(master, task_id)
            assert status["state"] == "TASK_ERROR" and words in status["message"], status
        await wait_for(lambda: "TASK_FAILED" in master.states("denied"), "denied fails", 10)
        status = _last(master, "denied")
        assert "--allowed_host_path_volumes" in status["message"], status
        assert not (sandbox(tmp_path, "denied") / "ran").exists()

        # A second group for the running executor cannot have volumes: refused, not run bare.
        await master.send(
            _group("g1", _member("late", "touch ran", _sandbox_volume("v", "pod-vol", "PARENT")))
        )
        await wait_for(lambda: "TASK_FAILED" in master.states("late"), "late fails", 10)
        assert "new executor" in _last(master, "late")["message"]

        await master.send(
            {"type": "KILL_TASK", "framework_id": FRAMEWORK["id"], "task_id": {"value": "writer"}}
        )
        await wait_for(lambda: "TASK_KILLED" in master.states("reader"), "the group ends", 20)
        if as_root:  # the bind mounts are undone once the container ends
            await wait_for(
                lambda: all(
                    str(group.resolve()) not in line for line in Path("/proc/self/mountinfo").open()
                ),
                "mounts undone",
                10,
            )

    run_scenario(tmp_path, scenario, agent_flags=("--allowed_host_path_volumes", str(shared)))
