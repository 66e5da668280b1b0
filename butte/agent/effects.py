"""What the agent core asks its shell to do. Each effect is an immutable instruction; the shell
carries them out in order and feeds the results back as events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from butte.core.internal import AgentMessage
from butte.core.messages import URI, CommandInfo, ExecutorInfo, FrameworkInfo, TaskInfo, TaskStatus


@dataclass(frozen=True, slots=True)
class SendToMaster:
    """Send one message on the master WebSocket (dropped by the shell if it is down)."""

    message: AgentMessage


@dataclass(frozen=True, slots=True)
class SendToExecutor:
    """Write one event (a JSON-able dict) as a RecordIO record on the executor's stream."""

    container_id: str
    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CloseExecutorStream:
    """End the executor's SUBSCRIBE stream (it exited or is being replaced)."""

    container_id: str


@dataclass(frozen=True, slots=True)
class LaunchContainer:
    """Create the sandbox (and ``runs/latest``) and start the executor process in it, in a new
    session, with stdout/stderr going to the sandbox files. The shell answers with
    ``container_started`` or ``container_failed``, and later ``container_exited``."""

    container_id: str
    framework_id: str
    executor_id: str
    sandbox: str
    argv: tuple[str, ...]
    env: dict[str, str]
    # Program to execute instead of argv[0] (searched in PATH), for non-shell commands.
    executable: str | None = None
    # The built-in executor (argv is then `command_executor_argv`): may be forked from the
    # zygote instead of started as a fresh interpreter.
    builtin: bool = False
    # CommandInfo.URIs to fetch before the executor starts, each with the directory (the
    # sandbox, or a task group member's directory in it) it goes to.
    fetch: tuple[tuple[URI, str], ...] = ()
    # Scalar totals of the executor's and its tasks' resources (cpus, mem, disk, gpus): what
    # the isolators enforce.
    resources: tuple[tuple[str, float], ...] = ()
    # TaskInfo.limits of its tasks made the container's (butte.core.task_limits): a ceiling
    # above ``resources`` for cpus and mem, math.inf for none.
    limits: tuple[tuple[str, float], ...] = ()
    # The user the container's tasks ask to run as (CommandInfo.user, else FrameworkInfo.user);
    # the shell switches to it with --switch_user (a non-root agent refuses other users).
    user: str | None = None
    # Persistent volumes the container holds: (host path, path in the sandbox, RW | RO),
    # attached before it starts (`butte.agent.volumes`).
    volumes: tuple[tuple[str, str, str], ...] = ()
    # ContainerInfo.volumes of a container without an image (`volumes.container_volumes`),
    # in the same form: sandbox paths (made when missing) and host paths (which must exist).
    sandbox_volumes: tuple[tuple[str, str, str], ...] = ()
    host_volumes: tuple[tuple[str, str, str], ...] = ()
    # A command task's ContainerInfo and CommandInfo: a MESOS container with an image runs
    # its task in the image (butte.agent.containerizer.image_runtime).
    container: dict[str, Any] | None = None
    command: CommandInfo | None = None
    # The task group members that run in an image: (task id, ContainerInfo, CommandInfo),
    # each given a root filesystem of its own before the executor starts.
    member_images: tuple[tuple[str, dict[str, Any], CommandInfo], ...] = ()
    # Which containerizer runs it: "mesos" (processes in sandboxes) or "docker" (the Docker
    # executor, which runs the task through the Docker daemon; docs/docker.md).
    containerizer: str = "mesos"


@dataclass(frozen=True, slots=True)
class UpdateContainer:
    """Tasks joined or left a running executor's container: its isolators set its limits
    again from its executor's and live tasks' resources and limits (Mesos' containerizer
    ``update``)."""

    container_id: str
    resources: tuple[tuple[str, float], ...]
    limits: tuple[tuple[str, float], ...]


@dataclass(frozen=True, slots=True)
class DestroyContainer:
    """Kill every process of the container: SIGTERM, then SIGKILL after ``grace`` seconds."""

    container_id: str
    grace: float


@dataclass(frozen=True, slots=True)
class ExecutorRemoved:
    """An executor is done here (ended, its tasks' updates acknowledged): its sandbox's
    ``--gc_delay`` starts now, so the sandbox's modification time is set to now, as Mesos'
    agent sets it (`butte.agent.gc`)."""

    sandbox: str


@dataclass(frozen=True, slots=True)
class StopAgent:
    """The master told the agent to stop for good (after its containers are destroyed)."""

    message: str


# -- checkpoints (butte.agent.checkpoint writes them; butte.agent.paths says where) ----------
# The shell writes each one before it carries out the effects after it, so a checkpoint
# placed before an ACKNOWLEDGED or a launch is durable by the time those happen.


@dataclass(frozen=True, slots=True)
class CheckpointAgent:
    """The agent id (``meta/slaves/latest``), its AgentInfo and the boot id."""

    agent_id: str
    agent_info: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CheckpointFramework:
    """A checkpointing framework's FrameworkInfo."""

    framework_id: str
    info: FrameworkInfo


@dataclass(frozen=True, slots=True)
class CheckpointExecutor:
    """A new executor run: its ExecutorInfo and kind (before its container is launched)."""

    framework_id: str
    executor_id: str
    container_id: str
    info: ExecutorInfo
    kind: str


@dataclass(frozen=True, slots=True)
class CheckpointPid:
    """The pid of an executor run's process."""

    framework_id: str
    executor_id: str
    container_id: str
    pid: int


@dataclass(frozen=True, slots=True)
class CheckpointTask:
    """A task given to an executor run (before it is delivered)."""

    framework_id: str
    executor_id: str
    container_id: str
    task: TaskInfo


@dataclass(frozen=True, slots=True)
class CheckpointUpdate:
    """One record of a task's update log: an accepted update (``status``) or the
    acknowledgement of one (``ack_uuid``)."""

    framework_id: str
    executor_id: str
    container_id: str
    task_id: str
    status: TaskStatus | None = None
    ack_uuid: str | None = None


@dataclass(frozen=True, slots=True)
class RemoveCheckpoint:
    """Forget a framework (executor_id None), an executor run (task_id None) or a task."""

    framework_id: str
    executor_id: str | None = None
    container_id: str | None = None
    task_id: str | None = None


@dataclass(frozen=True, slots=True)
class CheckpointResources:
    """The agent's total after offer operations (``meta/resources/resources.info``, kept
    across agent ids); the volume directories are made to match it, and those of volumes
    destroyed (``removed``, host paths) are deleted."""

    resources: list[dict[str, Any]]
    removed: tuple[str, ...] = ()
    # Volumes that were whole MOUNT disks: emptied, their root kept.
    emptied: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CheckpointOperations:
    """The operations awaiting acknowledgement, the whole list
    (``meta/operations/operations.info``, replaced atomically)."""

    operations: list[dict[str, Any]]


Checkpoint = (
    CheckpointAgent
    | CheckpointResources
    | CheckpointOperations
    | CheckpointFramework
    | CheckpointExecutor
    | CheckpointPid
    | CheckpointTask
    | CheckpointUpdate
    | RemoveCheckpoint
)

Effect = (
    SendToMaster
    | SendToExecutor
    | CloseExecutorStream
    | LaunchContainer
    | UpdateContainer
    | DestroyContainer
    | ExecutorRemoved
    | StopAgent
    | Checkpoint
)
