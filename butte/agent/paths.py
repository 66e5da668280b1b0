"""Every path the agent uses on disk, in one place (Mesos ``src/slave/paths.hpp``).

The tree under ``--work_dir``::

    <work_dir>/
      slaves/<agent_id>/                         sandboxes (kept after the agent id changes)
        frameworks/<framework_id>/
          executors/<executor_id>/
            runs/
              <container_id>/            the sandbox (MESOS_SANDBOX, MESOS_DIRECTORY)
                stdout                   the executor's (and its command task's) stdout
                stderr                   ... and stderr
                tasks/<task_id>/         per-task sandbox of a task group (default executor)
                containers/<id>/         a nested container's sandbox: its stdout, stderr
              latest -> <container_id>   symlink to the newest run
      meta/                                      checkpointed state (recovery reads only this)
        boot_id                                  /proc/sys/kernel/random/boot_id at checkpoint
        slaves/
          latest -> <agent_id>                   the agent id to recover (rm it: new agent id)
          <agent_id>/
            slave.info                           AgentInfo JSON
            command-runs.log                     butte's own: the journal of every command
                                                 executor run (one task each) of frameworks
                                                 with checkpoint: true, a RecordIO log of
                                                 EXECUTOR (ExecutorInfo, kind), PID, TASK,
                                                 UPDATE, ACK and FORGET records of a run,
                                                 END of a run and DROP of a framework's
                                                 runs, each naming its run; rewritten with
                                                 the live runs only (temp file, fsync,
                                                 rename) once mostly ended runs
            frameworks/<framework_id>/           only frameworks with checkpoint: true
              framework.info                     FrameworkInfo JSON
              executors/<executor_id>/
                executor.info                    ExecutorInfo JSON (of the runs kept as trees)
                runs/<container_id>/             a run of a default or custom executor
                  run.info                       butte's own: {"kind": default|custom}
                  pids/forked.pid                the executor's pid (a session leader)
                  tasks/<task_id>/
                    task.info                    TaskInfo JSON
                    task.updates                 RecordIO log of {"type":"UPDATE","status":...}
                                                 and {"type":"ACK","uuid":...} records
                runs/<container_id>.log          a command executor's run as agents before
                                                 the journal wrote it: its records (as in
                                                 command-runs.log) in a log of its own
        trash/<writer>-<n>                       a removed checkpoint tree (a run, an executor,
                                                 ...) or run log, renamed here in one step and
                                                 deleted in the background; never read by
                                                 recovery
        containers/<container_id>/               nested containers of a top-level container
                                                 (Mesos' --runtime_dir layout; any framework's,
                                                 so that a restarted agent finds the orphans too)
          containers/<nested_container_id>/
            nested.info                          butte's own: parent, sandbox, session or not,
                                                 the launcher's pid, start time and boot id;
                                                 written before the command may start
            status                               the command's wait status, written by its
                                                 launcher when it ended (agent up or down)
            termination                          {exit_status, message}: the end as the agent
                                                 reported it to WAIT_NESTED_CONTAINER
        standalone/<container_id>/               a standalone container (LAUNCH_CONTAINER
                                                 without a parent; butte.agent.nested):
          nested.info, status, termination       as a nested container's (no parent)
      containers/<container_id>/                 a standalone container's sandbox (Mesos'
                                                 <work_dir>/containers/<id>): stdout, stderr
      fetcher-cache/<sha256 of uri>/<name>       downloads of CommandInfo.URIs with cache: true

With cgroup isolators, each container also has a group outside the work dir::

    <cgroups_hierarchy>/<controller>/<cgroups_root>/<container_id>/   cgroups v1
    <cgroups_hierarchy>/<cgroups_root>/<container_id>/                cgroups v2

Every ``*.info``, ``forked.pid``, ``boot_id``, ``latest`` and a nested container's
``status`` and ``termination`` is written once when new, or replaced atomically (temp file,
fsync, rename); ``task.updates``, run logs and the journal
are append-only (the journal is also rewritten whole, atomically). Checkpoints are written
in batches, each made durable by one sync before the agent acts on anything that followed
them (`butte.agent.checkpoint.CheckpointWriter`); a torn last record or a cut-short new file
is what a crash before that sync leaves, and recovery ignores it: nothing that depended on
it had happened.

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


def slaves_root(work_dir: str) -> str:
    """``<work_dir>/slaves``: every sandbox of every agent id lies below it."""
    return os.path.join(work_dir, "slaves")


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


def parse_sandbox(work_dir: str, path: str) -> tuple[str, str, str, str] | None:
    """(agent id, framework id, executor id, container id) of a sandbox path (or a path
    inside one), or None if ``path`` is not inside a sandbox of ``work_dir``."""
    root = slaves_root(work_dir) + os.sep
    if not path.startswith(root):
        return None
    parts = path[len(root) :].split(os.sep)
    if len(parts) < 7 or parts[1] != "frameworks" or parts[3] != "executors":
        return None
    if parts[5] != "runs" or parts[6] in ("", LATEST):
        return None
    return parts[0], parts[2], parts[4], parts[6]


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


# -- checkpointed state (meta) ----------------------------------------------------------------


def meta_dir(work_dir: str) -> str:
    """``<work_dir>/meta``: everything recovery reads."""
    return os.path.join(work_dir, "meta")


def operations_info_path(work_dir: str) -> str:
    """``meta/operations/operations.info``: offer operations with an id whose status the
    framework has not acknowledged (`butte.agent.operation_updates`)."""
    return os.path.join(meta_dir(work_dir), "operations", "operations.info")


def resources_info_path(work_dir: str) -> str:
    """``meta/resources/resources.info``: the total after RESERVE, CREATE, ... (it outlives
    the agent id, as Mesos' checkpointed resources do)."""
    return os.path.join(meta_dir(work_dir), "resources", "resources.info")


def boot_id_path(work_dir: str) -> str:
    """``meta/boot_id``: the boot the checkpoint was written in."""
    return os.path.join(meta_dir(work_dir), "boot_id")


def meta_trash_dir(work_dir: str) -> str:
    """``meta/trash``: checkpoint trees being deleted (`butte.agent.checkpoint.Trash`)."""
    return os.path.join(meta_dir(work_dir), "trash")


def meta_slaves_dir(work_dir: str) -> str:
    """``meta/slaves``."""
    return os.path.join(meta_dir(work_dir), "slaves")


def latest_agent_link(work_dir: str) -> str:
    """``meta/slaves/latest``: symlink naming the agent id to recover."""
    return os.path.join(meta_slaves_dir(work_dir), LATEST)


def meta_agent_dir(work_dir: str, agent_id: str) -> str:
    """``meta/slaves/<agent_id>``."""
    return os.path.join(meta_slaves_dir(work_dir), agent_id)


def agent_info_path(work_dir: str, agent_id: str) -> str:
    """``meta/slaves/<agent_id>/slave.info``."""
    return os.path.join(meta_agent_dir(work_dir, agent_id), "slave.info")


def command_runs_path(work_dir: str, agent_id: str) -> str:
    """``meta/slaves/<agent_id>/command-runs.log`` (butte's own): the journal of this agent
    id's command executor runs, one log for all of them, in place of a tree (or a log) per
    run (`butte.agent.checkpoint.CheckpointWriter`)."""
    return os.path.join(meta_agent_dir(work_dir, agent_id), "command-runs.log")


def meta_framework_dir(work_dir: str, agent_id: str, framework_id: str) -> str:
    """``meta/slaves/<agent_id>/frameworks/<framework_id>``."""
    return os.path.join(meta_agent_dir(work_dir, agent_id), "frameworks", framework_id)


def framework_info_path(work_dir: str, agent_id: str, framework_id: str) -> str:
    """``.../frameworks/<framework_id>/framework.info``."""
    return os.path.join(meta_framework_dir(work_dir, agent_id, framework_id), "framework.info")


def meta_executor_dir(work_dir: str, agent_id: str, framework_id: str, executor_id: str) -> str:
    """``.../frameworks/<framework_id>/executors/<executor_id>``."""
    fw = meta_framework_dir(work_dir, agent_id, framework_id)
    return os.path.join(fw, "executors", executor_id)


def executor_info_path(work_dir: str, agent_id: str, framework_id: str, executor_id: str) -> str:
    """``.../executors/<executor_id>/executor.info``."""
    ex = meta_executor_dir(work_dir, agent_id, framework_id, executor_id)
    return os.path.join(ex, "executor.info")


def meta_run_dir(
    work_dir: str, agent_id: str, framework_id: str, executor_id: str, container_id: str
) -> str:
    """``.../executors/<executor_id>/runs/<container_id>``."""
    ex = meta_executor_dir(work_dir, agent_id, framework_id, executor_id)
    return os.path.join(ex, "runs", container_id)


RUN_LOG_SUFFIX = ".log"


def run_log_path(run_dir: str) -> str:
    """``runs/<container_id>.log``: a command executor run's whole checkpoint in one log, as
    agents before the journal (`command_runs_path`) wrote it; still read and appended to."""
    return run_dir + RUN_LOG_SUFFIX


def run_info_path(run_dir: str) -> str:
    """``runs/<container_id>/run.info`` (butte's own: the kind of executor)."""
    return os.path.join(run_dir, "run.info")


def forked_pid_path(run_dir: str) -> str:
    """``runs/<container_id>/pids/forked.pid``."""
    return os.path.join(run_dir, "pids", "forked.pid")


def meta_task_dir(run_dir: str, task_id: str) -> str:
    """``runs/<container_id>/tasks/<task_id>``."""
    return os.path.join(run_dir, "tasks", task_id)


def task_info_path(run_dir: str, task_id: str) -> str:
    """``tasks/<task_id>/task.info``."""
    return os.path.join(meta_task_dir(run_dir, task_id), "task.info")


def task_updates_path(run_dir: str, task_id: str) -> str:
    """``tasks/<task_id>/task.updates``."""
    return os.path.join(meta_task_dir(run_dir, task_id), "task.updates")


def fetcher_cache_dir(work_dir: str) -> str:
    """``<work_dir>/fetcher-cache``: the default ``--fetcher_cache_dir``."""
    return os.path.join(work_dir, "fetcher-cache")


def cgroup_dir(mount: str, cgroups_root: str, container_id: str | None = None) -> str:
    """``<mount>/<cgroups_root>[/<container_id>]``: butte's groups in one cgroup hierarchy
    (``mount`` is a v1 controller's mount point or the v2 hierarchy)."""
    base = os.path.join(mount, cgroups_root.strip("/"))
    return base if container_id is None else os.path.join(base, container_id)


# -- nested containers (butte.agent.nested) ----------------------------------------------------


def nested_sandbox(sandbox: str, container_id: str) -> str:
    """``<parent sandbox>/containers/<id>``: a nested container's sandbox (its stdout and
    stderr), as Mesos' ``containerizer::paths::getSandboxPath``."""
    return os.path.join(sandbox, "containers", container_id)


def meta_containers_dir(work_dir: str) -> str:
    """``meta/containers``: the checkpoints of nested containers, by top-level container."""
    return os.path.join(meta_dir(work_dir), "containers")


def nested_parent_dir(work_dir: str, parent_id: str) -> str:
    """``meta/containers/<parent_id>``: everything checkpointed of one top-level container's
    nested containers (removed in one go once that container has ended)."""
    return os.path.join(meta_containers_dir(work_dir), parent_id)


def nested_dir(work_dir: str, parent_id: str, container_id: str) -> str:
    """``meta/containers/<parent_id>/containers/<container_id>``: one nested container's."""
    return os.path.join(nested_parent_dir(work_dir, parent_id), "containers", container_id)


def nested_info_path(nested: str) -> str:
    """``<nested_dir>/nested.info``."""
    return os.path.join(nested, "nested.info")


def nested_status_path(nested: str) -> str:
    """``<nested_dir>/status``: the command's wait status, as its launcher saw it."""
    return os.path.join(nested, "status")


def nested_termination_path(nested: str) -> str:
    """``<nested_dir>/termination``: the WAIT_NESTED_CONTAINER answer, once it ended."""
    return os.path.join(nested, "termination")


# -- standalone containers (butte.agent.nested) ------------------------------------------------


def standalone_sandbox(work_dir: str, container_id: str) -> str:
    """``<work_dir>/containers/<id>``: a standalone container's sandbox, where Mesos' agent
    puts it (its stdout and stderr)."""
    return os.path.join(work_dir, "containers", container_id)


def meta_standalone_dir(work_dir: str) -> str:
    """``meta/standalone``: the checkpoints of standalone containers."""
    return os.path.join(meta_dir(work_dir), "standalone")


def standalone_dir(work_dir: str, container_id: str) -> str:
    """``meta/standalone/<container_id>``: one standalone container's checkpoint (the
    files of a nested container's: `nested_info_path`, `nested_status_path`, ...)."""
    return os.path.join(meta_standalone_dir(work_dir), container_id)
