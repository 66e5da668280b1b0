"""Every path the agent uses on disk, in one place (Mesos ``src/slave/paths.hpp``).

The tree under ``--work_dir``::

    <work_dir>/
      slaves/<agent_id>/
        frameworks/<framework_id>/
          executors/<executor_id>/
            runs/
              <container_id>/            the sandbox (MESOS_SANDBOX, MESOS_DIRECTORY)
                stdout                   the executor's (and its command task's) stdout
                stderr                   ... and stderr
                tasks/<task_id>/         per-task sandbox of a task group (default executor)
              latest -> <container_id>   symlink to the newest run

Everything here is string work only (no file system access), so cores may call it.
"""

from __future__ import annotations

import os

STDOUT = "stdout"
STDERR = "stderr"
LATEST = "latest"


def agent_dir(work_dir: str, agent_id: str) -> str:
    """``<work_dir>/slaves/<agent_id>``."""
    return os.path.join(work_dir, "slaves", agent_id)


def framework_dir(work_dir: str, agent_id: str, framework_id: str) -> str:
    """``.../slaves/<agent_id>/frameworks/<framework_id>``."""
    return os.path.join(agent_dir(work_dir, agent_id), "frameworks", framework_id)


def executor_dir(work_dir: str, agent_id: str, framework_id: str, executor_id: str) -> str:
    """``.../frameworks/<framework_id>/executors/<executor_id>``."""
    return os.path.join(framework_dir(work_dir, agent_id, framework_id), "executors", executor_id)


def runs_dir(work_dir: str, agent_id: str, framework_id: str, executor_id: str) -> str:
    """``.../executors/<executor_id>/runs``: one sandbox per container run."""
    return os.path.join(executor_dir(work_dir, agent_id, framework_id, executor_id), "runs")


def sandbox_dir(
    work_dir: str, agent_id: str, framework_id: str, executor_id: str, container_id: str
) -> str:
    """``.../runs/<container_id>``: the executor's sandbox."""
    return os.path.join(runs_dir(work_dir, agent_id, framework_id, executor_id), container_id)


def latest_link(sandbox: str) -> str:
    """The ``runs/latest`` symlink next to a sandbox."""
    return os.path.join(os.path.dirname(sandbox), LATEST)


def stdout_path(sandbox: str) -> str:
    """Where the executor's stdout goes."""
    return os.path.join(sandbox, STDOUT)


def stderr_path(sandbox: str) -> str:
    """Where the executor's stderr goes."""
    return os.path.join(sandbox, STDERR)


def task_sandbox(sandbox: str, task_id: str) -> str:
    """A task group member's own directory inside its executor's sandbox."""
    return os.path.join(sandbox, "tasks", task_id)
