"""The Docker executor: runs one DOCKER task through the Docker daemon (like Mesos'
``mesos-docker-executor``), speaking the executor HTTP API v1 like the command executor it
extends (`butte.agent.executor.command`: subscription, status updates, acknowledgements,
re-subscription after an agent restart are the same).

Flow::

    LAUNCH -> image present? (else `docker pull`; force_pull_image pulls always)
           -> TASK_STARTING -> `docker run --name mesos-<container id> ...` (attached: the
              client's stdout/stderr are the sandbox's) -> TASK_RUNNING
    client exits -> `docker inspect` the container's state -> TASK_FINISHED (exit 0),
              TASK_FAILED (other status; OOMKilled: REASON_CONTAINER_LIMITATION_MEMORY),
              TASK_KILLED (after a KILL)
    KILL -> `docker stop --time=<grace>` (the task's kill policy, else the longer of the agent's
            --executor_shutdown_grace_period and --docker_stop_timeout, as Mesos');
            `docker kill` once the grace period is over

HTTP and TCP health checks and checks of a BRIDGE or NONE container are probed from inside
the container's network namespace, as Mesos' Docker executor probes them (`_spawn_probe`);
COMMAND ones run inside the container with ``docker exec``, on every network, and past their
timeout are killed there too (`_spawn_exec`, `_end_exec`).

The client runs with ``--sig-proxy=false``: only the executor stops the container. The
agent removes the container (`docker rm -f`) once this executor has exited
(`butte.agent.containerizer.docker`).

The Docker daemon restarting while the task runs: the client loses its connection and exits;
the executor then waits (up to BUTTE_DOCKER_EXECUTOR_DAEMON_WAIT, default 60 s) for the daemon to
answer again. If the container still runs (a daemon with ``live-restore``), the executor
attaches to it again and goes on; otherwise (Docker stopped it with the daemon) the task
fails with its exit status and a message saying the daemon went away; a daemon that does
not come back fails the task too (docs/docker.md).
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal's C module: no stub in typeshed
import errno
import os
import select
import sys
import time

from butte.agent.executor import command, lite
from butte.core import docker_info

# What the agent tells the executor (its environment; see butte.agent.containerizer.docker).
DOCKER_ENV = "BUTTE_DOCKER_EXECUTOR_CLIENT"  # the client program
SOCKET_ENV = "BUTTE_DOCKER_EXECUTOR_SOCKET"  # the daemon's unix socket
NAME_ENV = "BUTTE_DOCKER_EXECUTOR_NAME"  # the container's name, mesos-<container id>
STOP_TIMEOUT_ENV = "BUTTE_DOCKER_EXECUTOR_STOP_TIMEOUT"  # --docker_stop_timeout
WORK_DIR_ENV = "BUTTE_DOCKER_EXECUTOR_AGENT"  # the agent's work dir (a label on the container)
DAEMON_WAIT_ENV = "BUTTE_DOCKER_EXECUTOR_DAEMON_WAIT"
PULL_TIMEOUT = 600.0
INSPECT_TIMEOUT = 20.0
# How often a lost connection to the daemon is followed by attaching again.
MAX_ATTACHES = 5
OOM_SETTLE = 2.0  # seconds to wait for dockerd to record an OOM kill (see _settled)


class DockerError(Exception):
    """A docker command failed (its message names what and why)."""


class NotFound(DockerError):
    """The daemon answered: no such object."""


class DockerExecutor(command.Executor):
    """The command executor with the task run by the Docker daemon; see the module doc."""

    def __init__(self, environ: dict[str, str]) -> None:
        super().__init__(environ)
        self.client = [environ.get(DOCKER_ENV) or "docker"]
        self.socket = environ.get(SOCKET_ENV) or "/var/run/docker.sock"
        self.client += ["-H", f"unix://{self.socket}"]
        self.name = environ[NAME_ENV]
        stop_timeout = lite.parse_duration(environ.get(STOP_TIMEOUT_ENV, "0secs"), 0.0)
        # Mesos' docker executor: a kill without a kill policy gets the executor shutdown
        # grace period (MESOS_EXECUTOR_SHUTDOWN_GRACE_PERIOD), or --docker_stop_timeout if
        # that is longer.
        self.stop_timeout = max(self.shutdown_grace, stop_timeout)
        self.daemon_wait = lite.parse_duration(environ.get(DAEMON_WAIT_ENV, "60secs"), 60.0)
        self.helpers: list[int] = []  # docker stop/kill clients, reaped as they end
        self.attaches = 0
        self.daemon_lost = False
        self.stop_grace = self.stop_timeout
        self.inspected: dict | None = None  # `docker inspect` of the started container
        # The ``docker exec`` clients of running COMMAND probes: pid -> the command's argv
        # in the container (what `_end_exec` looks for).
        self.execs: dict[int, list[str]] = {}

    # -- docker commands -----------------------------------------------------------------

    def docker(self, *args: str, timeout: float = INSPECT_TIMEOUT) -> str:
        """Runs a docker command to its end; its stdout, or DockerError with its stderr."""
        import subprocess

        try:
            done = subprocess.run(
                [*self.client, *args], capture_output=True, text=True, timeout=timeout
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise DockerError(f"docker {args[0]}: {e}") from None
        if done.returncode != 0:
            words = (done.stderr or done.stdout).strip().splitlines()
            raise DockerError(words[-1] if words else f"docker {args[0]} failed")
        return done.stdout

    def api(self, path: str) -> dict:
        """GET of the Engine API over the daemon's socket (the reads: cheaper than a client
        process each); the JSON answer, NotFound on 404, DockerError if no answer."""
        import _socket

        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        sock.settimeout(INSPECT_TIMEOUT)
        try:
            sock.connect(self.socket)
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n".encode())
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except OSError as e:
            raise DockerError(f"cannot reach the Docker daemon at {self.socket}: {e}") from None
        finally:
            sock.close()
        head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
        status = head.split(b" ", 2)[1:2]
        code = int(status[0]) if status and status[0].isdigit() else 0
        try:
            answer = lite.loads(body) if body else {}
        except ValueError:
            answer = {"message": body[:200].decode(errors="replace")}
        if code == 404:
            raise NotFound(str(answer.get("message") or "no such object"))
        if code != 200:
            raise DockerError(f"the Docker daemon answered {code}: {answer.get('message')}")
        return answer

    def _background(self, *args: str) -> None:
        """Starts a docker command without waiting for it (stop, kill)."""
        try:
            pid = os.posix_spawnp(
                self.client[0],
                [*self.client, *args],
                self._client_env(),
                file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)],
                setsigdef=[_signal.SIGPIPE, _signal.SIGTERM, _signal.SIGINT],
            )
        except OSError as e:
            sys.stderr.write(f"executor: cannot run docker {args[0]}: {e}\n")
            return
        self.helpers.append(pid)

    def _reap_helpers(self) -> None:
        for pid in list(self.helpers):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self.helpers.remove(pid)

    def _client_env(self) -> dict[str, str]:
        env = {k: v for k, v in self.environ.items() if not k.startswith("DOCKER_")}
        env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
        return env

    # -- launch --------------------------------------------------------------------------

    def launch(self, info: dict, group: bool) -> None:
        """Makes sure the image is there (pulling it if asked or missing), then starts the
        container as the command executor starts a process."""
        task_id = info["task_id"]["value"]
        if task_id in self.tasks or self.shutting_down:
            return
        problem = docker_info.launch_problem(info, group)
        if problem is None:
            problem = self._network_problem(info)
        if problem is None:
            problem = self._pull(info)
        if problem is None:
            super().launch(info, group)
            return
        task = command.TaskProcess(info, group)
        self.tasks[task_id] = task
        self.send_update(task, "TASK_FAILED", problem, "REASON_CONTAINER_LAUNCH_FAILED")

    def _network_problem(self, info: dict) -> str | None:
        """Why a BRIDGE task cannot get its network: a daemon without a ``bridge`` network
        (``--bridge=none``) would run it with loopback only and ignore its port mappings."""
        docker = (info.get("container") or {}).get("docker") or {}
        if docker.get("network") != "BRIDGE":
            return None
        try:
            self.api("/networks/bridge")
        except DockerError as e:
            return f"Failed to launch container: the Docker daemon has no bridge network ({e})"
        return None

    def _pull(self, info: dict) -> str | None:
        """Why the task's image cannot be had (None: it is here now)."""
        docker = (info.get("container") or {}).get("docker") or {}
        image = str(docker.get("image"))
        if not docker.get("force_pull_image"):
            try:
                self.api(f"/images/{image}/json")  # checked: [A-Za-z0-9._:/@-] only
                return None
            except DockerError:
                pass  # not here (or no daemon: the pull says which)
        try:
            self.docker("pull", image, timeout=PULL_TIMEOUT)
        except DockerError as e:
            return f"Failed to pull image '{image}': {e}"
        return None

    def _spawn(self, info: dict, group: bool) -> int:
        """Starts the attached ``docker run`` client in a process group of its own."""
        command_info = info.get("command") or {}
        env = command.task_environment({}, command_info)
        env.update(
            {
                "MESOS_SANDBOX": docker_info.SANDBOX_MOUNT,
                "MESOS_CONTAINER_NAME": self.name,
                "MESOS_TASK_ID": info["task_id"]["value"],
                "MESOS_FRAMEWORK_ID": self.framework_id,
                "MESOS_EXECUTOR_ID": self.executor_id,
            }
        )
        labels = {docker_info.AGENT_LABEL: self.environ.get(WORK_DIR_ENV, "")}
        argv = docker_info.run_argv(self.client, self.name, info, self.sandbox, env, labels)
        pid = self._spawn_process(argv[0], argv, True, self._client_env(), None, [])
        self._wait_started(pid)
        return pid

    def _wait_started(self, pid: int) -> None:
        """Returns once the container runs (TASK_RUNNING must not come before it), or has
        ended, or its client has exited (its end is then reported as the task's)."""
        deadline = time.monotonic() + PULL_TIMEOUT
        delay = 0.02
        while time.monotonic() < deadline:
            try:
                # WNOWAIT: the client stays a zombie for the pidfd that watches it.
                if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                    return
            except ChildProcessError:
                return
            try:
                inspected = self.api(f"/containers/{self.name}/json")
                started = str(inspected["State"]["StartedAt"])
            except (DockerError, KeyError, TypeError):
                started = ""  # not created yet
            if started.strip() and not started.startswith("0001-"):
                self.inspected = inspected
                return
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def _running_extras(self) -> dict:
        """Mesos' docker executor puts the container's ``docker inspect`` (a JSON array of
        one) in TASK_RUNNING's ``data``: frameworks read the container's details there."""
        if self.inspected is None:
            return {}
        import binascii

        encoded = binascii.b2a_base64(lite.dumps([self.inspected]), newline=False)
        return {"data": encoded.decode()}

    # -- checks and health checks ----------------------------------------------------------

    def _spawn_probe(
        self,
        task: command.TaskProcess,
        kind: str,
        program: str,
        argv: list[str],
        search: bool,
        stdout: int | None,
        command_info: dict | None = None,
    ) -> int:
        """Starts a probe of the task's container, as Mesos' Docker executor does. A COMMAND
        probe runs inside the container on every network: ``docker exec`` of the command
        (`_spawn_exec`). An HTTP or TCP probe of a BRIDGE or NONE container runs in the
        container's network namespace: its 127.0.0.1 is the container's, and the probe's
        port is the container's port (docs/docker.md "Checks"); only the forked probe joins
        the namespace, the executor stays where it is. A HOST container's network is the
        host's: its HTTP and TCP probes start as the command executor starts them."""
        if kind == "COMMAND":
            return self._spawn_exec(command_info or {}, stdout)
        docker = (task.info.get("container") or {}).get("docker") or {}
        if docker.get("network", "HOST") == "HOST":
            return super()._spawn_probe(task, kind, program, argv, search, stdout)
        from butte.agent.containerizer import linux

        pid = self._container_pid()
        env = command.task_environment(self.environ, task.info.get("command") or {})
        return linux.spawn_in_namespaces_of(
            pid, ["net"], program, argv, env, search=search, cwd=self.sandbox, stdout_fd=stdout
        )

    def _spawn_exec(self, command_info: dict, stdout: int | None) -> int:
        """Starts ``docker exec`` of a COMMAND probe's CommandInfo in the container (Mesos'
        checker wraps the command the same way), in a process group of its own. The
        variables of the probe's own environment are set on the client, as Mesos sets them,
        and named with ``--env`` so that the command in the container gets them too. The
        command's exit status is the client's."""
        variables = command.task_environment({}, command_info)
        names = list(variables)
        argv = exec_argv(self.client, self.name, command_info, names)
        env = {**self._client_env(), **variables}
        out: tuple = (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)
        if stdout is not None:
            out = (os.POSIX_SPAWN_DUP2, stdout, 1)
        try:
            pid = self._spawn_process(argv[0], argv, True, env, self.sandbox, [out])
        except ValueError as e:  # a variable no environment can hold ("=" in a name, NUL)
            raise OSError(f"cannot run docker exec: {e}") from None
        self.execs[pid] = argv[len(self.client) + len(names) + 2 :]  # after exec, --env=s, name
        return pid

    def _stop_probe(self, task: command.TaskProcess, kill: bool) -> None:
        """The command executor's, and a COMMAND probe that is killed (its timeout is over,
        the task ended) is ended in the container as well (`_end_exec`)."""
        pid = task.probe_pid
        super()._stop_probe(task, kill)
        self._end_exec(pid, kill)

    def _stop_check(self, task: command.TaskProcess, kill: bool) -> None:
        """The command executor's, and a COMMAND check that is killed is ended in the
        container as well (`_end_exec`)."""
        pid = task.check.pid if task.check is not None else None
        super()._stop_check(task, kill)
        self._end_exec(pid, kill)

    def _end_exec(self, client: int | None, kill: bool) -> None:
        """Forgets the ``docker exec`` client ``client``; when ``kill``, also SIGKILLs the
        command it started in the container, with every process under it. Killing the
        client does not end the command: Docker has no call that stops an exec'd process
        (Mesos' checker leaves it running). So the container's running execs are looked up
        (``ExecIDs`` of ``docker inspect``, then ``/exec/<id>/json``), and the one running
        this probe's command is killed by its pid (``Pid``, in the daemon's pid namespace,
        which is the executor's). Two probes of one task running the same command at the
        same time cannot be told apart: both are killed."""
        argv = self.execs.pop(client, None) if client is not None else None
        if not kill or argv is None:
            return
        try:
            exec_ids = self.api(f"/containers/{self.name}/json").get("ExecIDs") or []
        except DockerError:
            return  # no container (it ended, and its execs with it) or no daemon
        for exec_id in exec_ids:
            try:
                found = self.api(f"/exec/{exec_id}/json")  # ids are hex: safe in a path
            except DockerError:
                continue  # ended meanwhile
            config = found.get("ProcessConfig") or {}
            running = [config.get("entrypoint"), *(config.get("arguments") or [])]
            pid = found.get("Pid")
            if found.get("Running") and running == argv and isinstance(pid, int) and pid > 0:
                kill_tree(pid)

    def _container_pid(self) -> int:
        """The pid (in the host's pid namespace) of the container's first process, from
        ``docker inspect`` (``State.Pid``): the one seen at start while it lives, else asked
        again (the daemon may have restarted the client). OSError when there is none: the
        probe then fails, as one that got no answer."""
        state = (self.inspected or {}).get("State") or {}
        pid = state.get("Pid")
        if isinstance(pid, int) and pid > 0 and os.path.exists(f"/proc/{pid}/ns/net"):
            return pid
        try:
            self.inspected = self.api(f"/containers/{self.name}/json")
        except DockerError as e:
            raise OSError(f"cannot find the container's process: {e}") from None
        pid = (self.inspected.get("State") or {}).get("Pid")
        if not isinstance(pid, int) or pid <= 0:
            raise OSError(f"the container {self.name} has no running process")
        return pid

    # -- kill ----------------------------------------------------------------------------

    def kill(self, task_id: str, kill: dict | None, grace: float | None = None) -> None:
        """Like the command executor's, with ``stop_timeout`` as the default grace."""
        task = self.tasks.get(task_id)
        if task is None:
            return
        if grace is None:
            grace = self._grace(kill, task.info)
        if not task.killed:
            self.stop_grace = grace  # what the `docker stop` that follows is given
        super().kill(task_id, kill, grace)

    def _grace(self, kill: dict | None, info: dict) -> float:
        for policy in ((kill or {}).get("kill_policy"), info.get("kill_policy")):
            if isinstance(policy, dict) and isinstance(policy.get("grace_period"), dict):
                return command.kill_grace({"kill_policy": policy}, {})
        return self.stop_timeout

    def _signal_task(self, task: command.TaskProcess, number: int) -> None:
        """SIGTERM: `docker stop` with the grace period left; SIGKILL: `docker kill`."""
        if task.pid is None or task.terminal_uuid is not None:
            return
        if number == _signal.SIGTERM:
            self._background("stop", f"--time={int(self.stop_grace + 0.999)}", self.name)
        else:
            self._background("kill", self.name)

    # -- the end -------------------------------------------------------------------------

    def task_exited(self, task: command.TaskProcess) -> None:
        """The client ended: the container's own state says how the task ended."""
        assert task.pid is not None
        os.waitpid(task.pid, 0)
        if task.pidfd is not None:
            self.poller.unregister(task.pidfd)
            self.by_pidfd.pop(task.pidfd, None)
            os.close(task.pidfd)
            task.pidfd = None
        self._stop_probe(task, kill=True)
        self._stop_check(task, kill=True)
        self._reap_helpers()
        state = self._container_state()
        if state is not None and state.get("Running") and self.attaches < MAX_ATTACHES:
            self._attach(task)
            return
        state = self._settled(task, state)
        # As Mesos' Docker executor: a task killed by its health check ends healthy=false.
        unhealthy = False if task.killed_by_health else None
        self.send_update(task, *self._outcome(task, state), healthy=unhealthy)

    def _settled(self, task: command.TaskProcess, state: dict | None) -> dict | None:
        """The state once the daemon has recorded an OOM kill. dockerd learns of an OOM kill
        from an event of its own that can come after the exit it has already recorded, or
        not at all when the kill came before its watch on the container's memory cgroup was
        set up. So a container SIGKILLed (137) that nobody here killed is asked about again
        for a short while, and the kernel's own record of the kill is looked for too
        (`kernel_oom_killed`), before its end is reported without ``OOMKilled``."""
        deadline = time.monotonic() + OOM_SETTLE
        container_id: str | None = None
        while (
            state is not None
            and state.get("ExitCode") == 137
            and not state.get("OOMKilled")
            and not task.killed
        ):
            if container_id is None:
                container_id = self._container_id()
            if container_id and kernel_oom_killed(container_id):
                return {**state, "OOMKilled": True}
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
            state = self._container_state()
        return state

    def _container_id(self) -> str:
        """The container's full id ("" if the daemon does not say)."""
        try:
            answer = self.api(f"/containers/{self.name}/json")
        except DockerError:
            return ""
        found = answer.get("Id")
        return found if isinstance(found, str) else ""

    def _container_state(self) -> dict | None:
        """The container's ``State`` from the daemon, waiting for a daemon that went away to
        come back (None: no such container, or no daemon within the wait)."""
        deadline = time.monotonic() + self.daemon_wait
        while True:
            try:
                state = self.api(f"/containers/{self.name}/json").get("State")
                return state if isinstance(state, dict) else None
            except NotFound:
                return None
            except DockerError as e:
                self.daemon_lost = True
                if time.monotonic() >= deadline:
                    return {"Unreachable": str(e)}
            time.sleep(0.5)

    def _attach(self, task: command.TaskProcess) -> None:
        """Follows a container that outlived its client (the daemon restarted with
        live-restore): a new attached client takes the old one's place."""
        self.attaches += 1
        argv = [*self.client, "attach", "--no-stdin", "--sig-proxy=false", self.name]
        task.pid = self._spawn_process(argv[0], argv, True, self._client_env(), None, [])
        task.pidfd = os.pidfd_open(task.pid)
        self.by_pidfd[task.pidfd] = task
        self.poller.register(task.pidfd, select.EPOLLIN)

    def _outcome(
        self, task: command.TaskProcess, state: dict | None
    ) -> tuple[str, str, str | None]:
        """(state, message, reason) of the task's terminal update."""
        if state is None:
            return "TASK_FAILED", self._launch_error(), "REASON_CONTAINER_LAUNCH_FAILED"
        if "Unreachable" in state:
            why = state["Unreachable"]
            return "TASK_FAILED", f"The Docker daemon did not come back: {why}", None
        code = state.get("ExitCode")
        started = not str(state.get("StartedAt", "")).startswith("0001-")
        if not started:
            error = state.get("Error")
            message = f"Failed to launch container: {error}" if error else self._launch_error()
            return "TASK_FAILED", message, "REASON_CONTAINER_LAUNCH_FAILED"
        message = f"Container exited with status {code}"
        if self.daemon_lost:
            message += " (the Docker daemon went away while it ran)"
        if state.get("OOMKilled"):
            return (
                "TASK_FAILED",
                f"Memory limit exceeded: {message}",
                "REASON_CONTAINER_LIMITATION_MEMORY",
            )
        if task.killed:
            return "TASK_KILLED", message, None
        if code == 0 and not self.daemon_lost:
            return "TASK_FINISHED", message, None
        return "TASK_FAILED", message, None

    def _launch_error(self) -> str:
        """The docker client's last words in the sandbox's stderr (why ``run`` failed)."""
        try:
            with open(os.path.join(self.sandbox, "stderr"), "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - 2048))
                lines = f.read().decode(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        last = lines[-1] if lines else "the docker client failed"
        return f"Failed to launch container: {last}"

    def run(self) -> int:
        code = super().run()
        self._reap_helpers()
        return code


def exec_argv(client: list[str], name: str, command_info: dict, env_names: list[str]) -> list[str]:
    """The ``docker exec`` command of a COMMAND check or health check in container ``name``
    (``client``: the client with its global options), as Mesos' checker makes it: a shell
    command (CommandInfo.shell, the default) runs as ``sh -c <value>``; otherwise ``value``
    (if any) then ``arguments`` are the command, as ``docker run`` takes the task's own
    (`butte.core.docker_info.command_args`). Each of ``env_names`` is passed as
    ``--env=<name>``: the client gives the command the value from its own environment, so a
    secret's value is never on a command line."""
    argv = [*client, "exec", *(f"--env={n}" for n in env_names), name]
    if command_info.get("shell", True):
        return [*argv, "sh", "-c", str(command_info.get("value") or "")]
    return [*argv, *docker_info.command_args(command_info)[1]]


def kill_tree(root: int) -> None:
    """SIGKILLs process ``root`` and every process under it (found by their parent pids in
    ``/proc``), the whole tree listed before any is killed."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # ended meanwhile
        # The name in parentheses may hold spaces; the parent pid is the 2nd field after it.
        fields = stat.rpartition(b")")[2].split()
        if len(fields) > 1 and fields[1].isdigit():
            children.setdefault(int(fields[1]), []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    for pid in tree:
        try:
            os.kill(pid, _signal.SIGKILL)
        except ProcessLookupError:
            pass  # ended meanwhile
        except PermissionError as e:  # not ours to signal: it runs on to its own end
            sys.stderr.write(f"executor: cannot kill process {pid} of a timed-out probe: {e}\n")


def kernel_oom_killed(container_id: str, kmsg: str = "/dev/kmsg") -> bool:
    """Whether the kernel's log records an OOM kill whose memory cgroup is the container's
    (``oom-kill:...,oom_memcg=/docker/<id>,...``; the cgroup is named after the container's
    id with either cgroup driver). The log is read as root from ``/dev/kmsg``, without
    waiting; False where it cannot be read (``dmesg_restrict``, no such device)."""
    try:
        fd = os.open(kmsg, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        while True:
            try:
                record = os.read(fd, 8192)
            except BlockingIOError:
                return False  # the end of the log
            except OSError as e:
                if e.errno == errno.EPIPE:
                    continue  # records overwritten while reading: go on with the next
                return False
            if not record:
                return False
            start = record.find(b"oom_memcg=")
            if start < 0:
                continue
            memcg = record[start + len(b"oom_memcg=") :].split(b",", 1)[0]
            if container_id.encode() in memcg:
                return True
    finally:
        os.close(fd)


def run_executor(environ: dict[str, str]) -> int:
    """Runs the Docker executor with ``environ`` until it is done; its exit status."""
    return command.run_executor(environ, DockerExecutor)


def main() -> int:
    """Entry point (``python -m butte.agent.executor.docker``)."""
    return command.main(run_executor, (*command.REQUIRED_ENV, NAME_ENV))


if __name__ == "__main__":
    sys.exit(main())
