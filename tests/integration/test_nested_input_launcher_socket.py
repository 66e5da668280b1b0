"""A nested container's launcher serves the command's input end on its socket from inside
the task's namespaces (pid and mount namespace, cgroups: the fixture of
`test_nested_containers`, root and cgroup v1): what a restarted agent does
(`butte.agent.nested.launcher_request`), done here by the test while the agent runs, on a
real launcher (`butte.agent.containerizer.nested_exec`, "Input across an agent restart")."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from test_nested_containers import Task, _shell, task  # noqa: F401 - the fixture

from butte.agent.nested import launcher_request

pytestmark = pytest.mark.integration


def test_the_launcher_hands_out_the_input_end_and_ends_it(task: Task) -> None:  # noqa: F811
    cid = task.nested()
    command = {"container_id": cid, "command": _shell("read a; echo got:$a; cat; echo end")}
    task.agent.call("LAUNCH_NESTED_CONTAINER", command)
    (checkpoint,) = Path(task.cluster.work_dir).rglob(
        f"meta/containers/{task.container}/containers/{cid['value']}"
    )
    answer, fd = launcher_request(str(checkpoint), b"F")
    assert answer == b"F" and fd is not None
    try:
        os.write(fd, b"hello\n")  # a copy of the agent's end of the command's stdin
    finally:
        os.close(fd)
    # The end of input: the agent closes its copy and tells the launcher to close its own.
    assert task.send_input(cid, [{"type": "DATA", "data": {"type": "STDIN", "data": ""}}])[0] == 200
    assert task.wait(cid) == {"exit_status": 0}
    sandbox = Path(task.cluster.work_dir).rglob(f"runs/{task.container}/containers/{cid['value']}")
    assert (next(sandbox) / "stdout").read_text() == "got:hello\nend\n"
    # The launcher is gone, and its socket with it.
    assert not (checkpoint / "io").exists()
    with pytest.raises(OSError):
        launcher_request(str(checkpoint), b"F")
