"""Launching tasks in the agent core: RUN_TASK and RUN_TASK_GROUP from the master become
executor records, checkpoints (for checkpointing frameworks), a container launch and the
LAUNCH / LAUNCH_GROUP delivered once the executor subscribes. Part of `AgentMachine` (a mixin
only to keep modules small); pure like the rest of the core."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import msgspec

from butte.agent import paths, volumes
from butte.agent.effects import (
    CheckpointExecutor,
    CheckpointFramework,
    CheckpointTask,
    Effect,
    LaunchContainer,
    SendToExecutor,
    UpdateContainer,
)
from butte.agent.launching import (
    allocation_role,
    builtin_executor_info,
    command_executor_info,
    executor_environment,
    logger_environment,
    member_logger_environments,
    process_argv,
    shutdown_grace_period,
)
from butte.agent.records import (
    COMMAND,
    CUSTOM,
    DEFAULT,
    FRAMEWORK_TERMINATING,
    RUNNING,
    TERMINATED,
    TERMINATING,
    Executor,
    Framework,
    Task,
)
from butte.core import docker_info, internal, jwt, task_limits
from butte.core import task_states as ts
from butte.core.container_info import container_problem, image_of, pid_sharing_problem
from butte.core.ids import validate_id
from butte.core.jwt import EXECUTOR_TOKEN_ENV
from butte.core.messages import URI, CommandInfo, ExecutorInfo, FrameworkInfo, TaskInfo
from butte.core.task_validation import GROUP_LIMITS, task_fields_problem

if TYPE_CHECKING:
    # Typed against the interface of the whole core, which never imports this module.
    from butte.agent.core import AgentCore as _Base
else:
    _Base = object

REGISTRATION_TIMER = "registration"
# The Docker executor's container name (Mesos' mesos-<container id>).
DOCKER_NAME_ENV = "BUTTE_DOCKER_EXECUTOR_NAME"


class LaunchEvents(_Base):
    """RUN_TASK / RUN_TASK_GROUP handling; mixed into `AgentMachine`."""

    def _run_task(self, msg: internal.RunTask, now: float) -> list[Effect]:
        return self._launch(msg.framework, [msg.task], None, now)

    def _run_task_group(self, msg: internal.RunTaskGroup, now: float) -> list[Effect]:
        return self._launch(msg.framework, list(msg.task_group.tasks), msg.executor, now)

    def _launch(
        self,
        fw_info: FrameworkInfo,
        tasks: list[TaskInfo],
        group_executor: ExecutorInfo | None,
        now: float,
    ) -> list[Effect]:
        if fw_info.id is None or self.agent_id is None or self.stopping or not tasks:
            return []
        fw, effects = self._framework_for(fw_info)
        if fw.state == FRAMEWORK_TERMINATING:
            return effects
        tasks = [t for t in tasks if not self._task_known(fw.id, t.task_id.value)]
        if not tasks:
            return effects
        if self.disk_problem is not None:
            for t in tasks:
                effects += self._orphan_update(
                    fw,
                    t.task_id.value,
                    ts.FAILED,
                    "REASON_CONTAINER_LAUNCH_FAILED",
                    f"Launch refused: {self.disk_problem}",
                    now,
                )
            self._count("launches_refused_disk_low", len(tasks))
            return effects
        refusal = self._container_refusal(tasks, group_executor)
        if refusal is not None:
            state, reason, message = refusal
            for t in tasks:
                effects += self._orphan_update(fw, t.task_id.value, state, reason, message, now)
            self._count("launches_refused_container", len(tasks))
            return effects
        problem = self._launch_problem(tasks, group_executor)
        if problem is not None:
            reason = "REASON_TASK_GROUP_INVALID" if group_executor else "REASON_TASK_INVALID"
            for t in tasks:
                effects += self._orphan_update(fw, t.task_id.value, ts.ERROR, reason, problem, now)
            return effects
        problem = self._limits_problem(tasks)
        if problem is not None:
            # Mesos' agent drops such tasks (validateResourceLimitsAndIsolators), with its
            # message and reason.
            lost = ts.DROPPED if fw.info.has_capability("PARTITION_AWARE") else ts.LOST
            for t in tasks:
                effects += self._orphan_update(
                    fw, t.task_id.value, lost, "REASON_GC_ERROR", problem, now
                )
            self._count("launches_refused_limits", len(tasks))
            return effects
        problem = self._logger_problem(tasks, group_executor)
        if problem is not None:
            # Mesos' logger refuses to prepare the container: its launch fails.
            reason = "REASON_CONTAINER_LAUNCH_FAILED"
            for t in tasks:
                effects += self._orphan_update(fw, t.task_id.value, ts.FAILED, reason, problem, now)
            return effects
        resources = [r for t in tasks for r in t.resources]
        declared_executor = group_executor or tasks[0].executor
        if declared_executor is not None:
            resources += declared_executor.resources
        role = allocation_role(resources, fw.info)
        info, kind = self._executor_for(fw, tasks[0], group_executor, role)
        ex = fw.executors.get(info.executor_id.value)
        if ex is not None and ex.state in (TERMINATING, TERMINATED):
            lost = ts.DROPPED if fw.info.has_capability("PARTITION_AWARE") else ts.LOST
            for t in tasks:
                effects += self._orphan_update(
                    fw,
                    t.task_id.value,
                    lost,
                    "REASON_EXECUTOR_TERMINATED",
                    "Executor is terminating",
                    now,
                )
            return effects
        if ex is not None and group_executor is not None and any(_volumes(t) for t in tasks):
            # Volumes are mounted when the executor's container starts.
            message = (
                "Volumes of task group members are mounted when their executor starts: "
                "launch a group with volumes under a new executor"
            )
            reason = "REASON_CONTAINER_LAUNCH_FAILED"
            for t in tasks:
                effects += self._orphan_update(fw, t.task_id.value, ts.FAILED, reason, message, now)
            return effects
        launch: LaunchContainer | None = None
        if ex is None:
            ex, launch = self._new_executor(fw, info, kind, role, tasks, now)
            if fw.info.checkpoint:
                effects.append(CheckpointExecutor(fw.id, ex.id, ex.container_id, info, kind))
        records = [Task(t, fw.id, ex.id, group=group_executor is not None) for t in tasks]
        for record in records:
            ex.tasks[record.id] = record
            self.task_executor[(fw.id, record.id)] = ex
            if fw.info.checkpoint:
                effects.append(CheckpointTask(fw.id, ex.id, ex.container_id, record.info))
        self._count("tasks_launched", len(records))
        if launch is not None:
            effects.append(launch)  # after the checkpoints: recovery must know what it runs
        else:
            effects.append(self._resized(ex))
        if ex.state == RUNNING:
            effects.append(self._delivery(ex, [r.id for r in records]))
        else:
            ex.queued.append([r.id for r in records])
        return effects

    def _task_known(self, framework_id: str, task_id: str) -> bool:
        key = (framework_id, task_id)
        return key in self.task_executor or key in self.streams

    @staticmethod
    def _launch_problem(tasks: list[TaskInfo], group_executor: ExecutorInfo | None) -> str | None:
        ids = [t.task_id.value for t in tasks]
        if len(set(ids)) != len(ids):
            return "Duplicate task ids in the task group"
        for t in tasks:
            problem = validate_id(t.task_id.value, "task id")
            if problem:
                return problem
            problem = task_fields_problem(t)
            if problem is not None:
                return problem
            if group_executor is not None and t.limits:
                return GROUP_LIMITS
            if group_executor is not None:
                if t.executor is not None or t.command is None:
                    return "Every task of a task group must have a CommandInfo and no executor"
            elif (t.command is None) == (t.executor is None):
                return "Task should have at least one (but not both) of CommandInfo or ExecutorInfo"
            elif t.executor is not None and t.executor.command is None:
                return "ExecutorInfo of a custom executor must have a CommandInfo"
        executor = group_executor or tasks[0].executor
        problem = image_problem(tasks, executor, in_group=group_executor is not None)
        if problem is not None:
            return problem
        commands = [t.command for t in tasks] + [executor.command if executor else None]
        problem = secret_problem(commands)
        if problem is not None:
            return problem
        if executor is not None:
            return validate_id(executor.executor_id.value, "executor id")
        return None

    def _limits_problem(self, tasks: list[TaskInfo]) -> str | None:
        """Why this agent cannot enforce the tasks' limits (Mesos' messages), or None: a
        cpu limit needs the cgroups/cpu isolator, a memory limit cgroups/mem, except in a
        DOCKER container, whose limits the Docker daemon sets."""
        enforced = self.config.limited_resources
        for t in tasks:
            if not t.limits or docker_info.is_docker(t.container):
                continue
            if "cpus" in t.limits and "cpus" not in enforced:
                return (
                    "CPU limits can only be set on tasks launched in Mesos containers"
                    " when the agent has loaded the 'cgroups/cpu' isolator"
                )
            if "mem" in t.limits and "mem" not in enforced:
                return (
                    "Memory limits can only be set on tasks launched in Mesos"
                    " containers when the agent has loaded the 'cgroups/mem' isolator"
                )
        return None

    def _logger_problem(
        self, tasks: list[TaskInfo], group_executor: ExecutorInfo | None
    ) -> str | None:
        """Why the container's own log rotation settings (its ``CONTAINER_LOGGER_*``
        variables, `butte.agent.containerizer.logrotate`) are invalid, or None."""
        rotation = self.config.log_rotation
        if rotation is None:
            return None
        try:
            rotation.for_environment(logger_environment(group_executor or tasks[0].executor, tasks))
        except ValueError as e:
            return f"Failed to prepare the container's logger: {e}"
        if group_executor is None:
            return None
        for task_id, environment in member_logger_environments(tasks).items():
            try:
                rotation.for_environment(environment)
            except ValueError as e:
                return f"Failed to prepare the logger of task {task_id}: {e}"
        return None

    def _container_refusal(
        self, tasks: list[TaskInfo], group_executor: ExecutorInfo | None
    ) -> tuple[str, str, str] | None:
        """(state, reason, message) of the updates refusing a launch for its ContainerInfo,
        or None. A DOCKER container never runs on the host: an invalid one is TASK_ERROR,
        one this agent cannot run (no docker containerizer) TASK_FAILED."""
        infos = [t.container for t in tasks]
        infos += [e.container for e in (group_executor, *(t.executor for t in tasks)) if e]
        kinds: set[str] = set()
        for info in infos:
            kind = docker_info.container_type(info)
            if kind is not None and kind != "MESOS":
                kinds.add(kind)
        if not kinds:
            if "mesos" in self.config.containerizers:
                return None
            return (
                ts.FAILED,
                "REASON_CONTAINER_LAUNCH_FAILED",
                "This agent runs only DOCKER containers "
                f"(--containerizers={','.join(self.config.containerizers) or 'docker'})",
            )
        invalid = "REASON_TASK_GROUP_INVALID" if group_executor else "REASON_TASK_INVALID"
        unknown = kinds - {"DOCKER"}
        if unknown:
            return ts.ERROR, invalid, f"Unsupported ContainerInfo type {sorted(unknown)[0]}"
        for t in tasks:
            raw = msgspec.to_builtins(t)
            problem = docker_info.launch_problem(raw, group_executor is not None)
            if problem is None and not docker_info.is_docker(t.container):
                problem = "Only a task's own ContainerInfo may be of type DOCKER"
            if problem is not None:
                return ts.ERROR, invalid, problem
        if "docker" not in self.config.containerizers:
            why = self.config.docker_unavailable or (
                "this agent runs without the docker containerizer "
                f"(--containerizers={','.join(self.config.containerizers)})"
            )
            return (
                ts.FAILED,
                "REASON_CONTAINER_LAUNCH_FAILED",
                f"Cannot run a DOCKER container: {why}",
            )
        return None

    def _executor_for(
        self, fw: Framework, task: TaskInfo, group_executor: ExecutorInfo | None, role: str
    ) -> tuple[ExecutorInfo, str]:
        argv = self.config.command_executor_argv
        if group_executor is not None:
            info = builtin_executor_info(group_executor, fw.id)
            return info, (DEFAULT if info.command is None else CUSTOM)
        if task.command is not None:
            return command_executor_info(task, fw.id, role, argv), COMMAND
        assert task.executor is not None
        return builtin_executor_info(task.executor, fw.id), CUSTOM

    def _new_executor(
        self,
        fw: Framework,
        info: ExecutorInfo,
        kind: str,
        role: str,
        tasks: list[TaskInfo],
        now: float,
    ) -> tuple[Executor, LaunchContainer]:
        assert self.agent_id is not None
        config = self.config
        container_id = self._new_container_id()
        sandbox = paths.sandbox_dir(
            config.work_dir, self.agent_id, fw.id, info.executor_id.value, container_id
        )
        ex = Executor(info, fw.id, container_id, sandbox, kind)
        launch = self._register_launch(fw, ex, role, tasks, now)
        self._count("executors_launched")
        return ex, launch

    def _register_launch(
        self, fw: Framework, ex: Executor, role: str, tasks: list[TaskInfo], now: float
    ) -> LaunchContainer:
        """Files ``ex`` as a container about to start (registration deadline armed) and
        returns the effect that starts it."""
        assert self.agent_id is not None
        config, info, kind = self.config, ex.info, ex.kind
        container_id, sandbox = ex.container_id, ex.sandbox
        env = executor_environment(
            base=config.base_environment,
            framework=fw.info,
            executor=info,
            agent_id=self.agent_id,
            agent_ip=config.ip,
            agent_port=config.port,
            sandbox=sandbox,
            shutdown_grace=shutdown_grace_period(info, config.executor_shutdown_grace_period),
            role=role,
            recovery_timeout=config.recovery_timeout,
            subscription_backoff_max=config.executor_reregistration_timeout,
        )
        if config.executor_secret_key is not None:
            # Set last: a framework's own variables never replace the agent's token.
            claims = jwt.executor_claims(fw.id, ex.id, container_id)
            env[EXECUTOR_TOKEN_ENV] = jwt.encode(claims, config.executor_secret_key)
        docker = kind == COMMAND and any(docker_info.is_docker(t.container) for t in tasks)
        if docker:
            env.update(config.docker_environment)
            env[DOCKER_NAME_ENV] = docker_info.container_name(container_id)
            argv, executable = tuple(config.docker_executor_argv), None
        elif kind == CUSTOM:
            assert info.command is not None
            argv, executable = process_argv(info.command)
        else:
            argv, executable = tuple(config.command_executor_argv), None
        ex.registration_deadline = now + config.executor_registration_timeout
        fw.executors[ex.id] = ex
        self.containers[container_id] = ex
        self._push_timer(ex.registration_deadline, REGISTRATION_TIMER, container_id)
        persistent, in_sandbox, host_paths = executor_mounts(
            config.work_dir, kind, info, tasks, sandbox, docker
        )
        in_image = [t for t in tasks if kind == DEFAULT and image_of(t.container) is not None]
        return LaunchContainer(
            container_id,
            fw.id,
            ex.id,
            sandbox,
            argv,
            env,
            executable,
            builtin=kind != CUSTOM and not docker,
            fetch=fetch_list(kind, info, tasks, sandbox),
            resources=scalar_totals([*info.resources, *(r for t in tasks for r in t.resources)]),
            limits=limits_of(info, tasks, config.cgroups_enable_cfs),
            user=container_user(kind, info, tasks, fw.info),
            volumes=persistent,
            sandbox_volumes=in_sandbox,
            host_volumes=host_paths,
            container=tasks[0].container if kind == COMMAND else None,
            command=tasks[0].command if kind == COMMAND else None,
            member_images=tuple(
                (t.task_id.value, t.container or {}, t.command)
                for t in in_image
                if t.command is not None  # a member has one (checked at launch)
            ),
            containerizer="docker" if docker else "mesos",
        )

    def _resized(self, ex: Executor, ending: str | None = None) -> UpdateContainer:
        """The running container of ``ex`` sized for its live tasks (new ones just added,
        or all but ``ending``, the one that just ended)."""
        infos = [t.info for t in ex.live_tasks() if t.id != ending]
        return UpdateContainer(
            ex.container_id,
            scalar_totals([*ex.info.resources, *(r for t in infos for r in t.resources)]),
            limits_of(ex.info, infos, self.config.cgroups_enable_cfs),
        )

    def _delivery(self, ex: Executor, task_ids: list[str]) -> SendToExecutor:
        """LAUNCH (one plain task) or LAUNCH_GROUP for tasks the executor has not seen."""
        tasks = [ex.tasks[tid] for tid in task_ids]
        for task in tasks:
            task.launched = True
        if len(tasks) == 1 and not tasks[0].group:
            event = {"type": "LAUNCH", "launch": {"task": tasks[0].info}}
        else:
            event = {
                "type": "LAUNCH_GROUP",
                "launch_group": {"task_group": {"tasks": [t.info for t in tasks]}},
            }
        return SendToExecutor(ex.container_id, event)

    def _framework_for(self, info: FrameworkInfo) -> tuple[Framework, list[Effect]]:
        """The framework's record (created or refreshed from ``info``), and the checkpoint of
        its FrameworkInfo if it checkpoints and the info is new."""
        assert info.id is not None
        fw = self.frameworks.get(info.id.value)
        changed = True
        if fw is None:
            fw = Framework(info)
            self.frameworks[fw.id] = fw
        else:
            changed = fw.info != info
            fw.info = info
        if changed and info.checkpoint:
            return fw, [CheckpointFramework(fw.id, info)]
        return fw, []


Mounts = tuple[tuple[str, str, str], ...]


def executor_mounts(
    work_dir: str,
    kind: str,
    info: ExecutorInfo,
    tasks: list[TaskInfo],
    sandbox: str,
    docker: bool,
) -> tuple[Mounts, Mounts, Mounts]:
    """What the shell mounts in the sandbox of the executor ``info`` running ``tasks`` (at
    its launch, and again for a recovered one, so that its end undoes them): the persistent
    volumes of their resources, and the ContainerInfo.volumes of containers without an image
    (sandbox paths, host paths: `volumes.container_volumes`); a task in an image gets its
    own in its root filesystem (image_runtime), a Docker task from the Docker daemon."""
    persistent = volumes.mounts_for(
        work_dir, [*info.resources, *(r for t in tasks for r in t.resources)]
    )
    own = info.container if kind != COMMAND else None
    if kind == COMMAND and image_of(tasks[0].container) is None and not docker:
        own = tasks[0].container  # the command task's
    members = [
        (t.task_id.value, t.container)
        for t in tasks
        if kind == DEFAULT and image_of(t.container) is None
    ]
    in_sandbox, on_host = volumes.container_volumes(own, members, sandbox)
    return persistent, in_sandbox, on_host


def _volumes(task: TaskInfo) -> bool:
    """Whether a task's (MESOS) ContainerInfo asks for volumes."""
    return bool((task.container or {}).get("volumes"))


def fetch_list(
    kind: str, info: ExecutorInfo, tasks: list[TaskInfo], sandbox: str
) -> tuple[tuple[URI, str], ...]:
    """What the fetcher gets before the executor starts: a custom executor's URIs, a command
    task's URIs (Mesos hands them to the command executor's container), and each task group
    member's URIs into its own directory."""
    if kind == CUSTOM:
        uris = info.command.uris if info.command is not None else []
        return tuple((uri, sandbox) for uri in uris)
    out: list[tuple[URI, str]] = []
    for task in tasks:
        if task.command is None:
            continue
        target = sandbox if kind == COMMAND else paths.task_sandbox(sandbox, task.task_id.value)
        out.extend((uri, target) for uri in task.command.uris)
    return tuple(out)


def scalar_totals(resources: list[Any]) -> tuple[tuple[str, float], ...]:
    """Sum per name of the SCALAR resources (what isolators enforce). Values are passed on
    as given (a NaN or negative one is refused by the isolator that reads it)."""
    totals: dict[str, float] = {}
    for resource in resources:
        if not isinstance(resource, dict) or resource.get("type", "SCALAR") != "SCALAR":
            continue
        value = (resource.get("scalar") or {}).get("value")
        name = resource.get("name")
        if isinstance(name, str) and isinstance(value, int | float):
            totals[name] = totals.get(name, 0.0) + float(value)
    return tuple(sorted(totals.items()))


def limits_of(
    info: ExecutorInfo, tasks: Iterable[TaskInfo], cgroups_enable_cfs: bool
) -> tuple[tuple[str, float], ...]:
    """The limits of the container of executor ``info`` holding ``tasks``
    (`butte.core.task_limits.container_limits`), as `LaunchContainer.limits` has them."""
    limits = task_limits.container_limits(info.resources, tasks, cgroups_enable_cfs)
    return tuple(sorted(limits.items()))


def container_user(
    kind: str, info: ExecutorInfo, tasks: list[TaskInfo], framework: FrameworkInfo
) -> str | None:
    """The user a container runs as: the command's ``user`` (the task's for the command
    executor, the executor's for a custom one), else the framework's."""
    command = tasks[0].command if kind == COMMAND else info.command
    if command is not None and command.user:
        return command.user
    return framework.user or None


def secret_problem(commands: list[CommandInfo | None]) -> str | None:
    """Why the environment's secrets cannot be given (a REFERENCE needs a secret resolver,
    which this agent does not have; a VALUE needs data), or None."""
    for command in commands:
        if command is None or command.environment is None:
            continue
        for var in command.environment.variables:
            if var.type != "SECRET":
                continue
            secret = var.secret or {}
            kind = secret.get("type")
            if kind == "REFERENCE":
                return (
                    f"Environment variable '{var.name}' is a REFERENCE secret, but this agent "
                    "has no secret resolver (only VALUE secrets are supported)"
                )
            value = secret.get("value")
            if kind != "VALUE" or not isinstance(value, dict) or "data" not in value:
                return f"Environment variable '{var.name}' is a SECRET without a VALUE"
    return None


def image_problem(
    tasks: list[TaskInfo], executor: ExecutorInfo | None, *, in_group: bool
) -> str | None:
    """Why the tasks' ContainerInfos cannot run here: a bad image name or volume, a field
    butte does not implement, or an image where butte runs none (custom executors and
    executors themselves)."""
    members = [(t.container, in_group) for t in tasks]
    # An executor has no parent: only members may take SANDBOX_PATH volumes of type PARENT.
    for info, member in (*members, (executor.container if executor else None, False)):
        problem = container_problem(info, in_group=member)
        if problem is not None:
            return problem
        problem = pid_sharing_problem(info, with_executor=executor is not None)
        if problem is not None:
            return problem
    for t in tasks:
        if image_of(t.container) is not None and executor is not None and not in_group:
            return "Images run only for command tasks and task group members (not custom executors)"
    if executor is not None and image_of(executor.container) is not None:
        return "Images run only for command tasks and task group members (not for executors)"
    return None
