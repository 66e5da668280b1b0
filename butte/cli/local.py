"""``butte local``: a whole cluster on this machine (one master, N agents) for trying butte.

`LocalCluster` is the reusable part: it starts the master and agents as subprocesses of
``python -m butte`` on 127.0.0.1, each with its own work dir and log file, waits until every
agent is registered and active (polling ``/master/state``), and stops them (the master with
SIGTERM, the agents with SIGUSR1, which stops their tasks too), then SIGKILL for stragglers.
The test helpers in `butte.testing.cluster` build on it.

The master's port must be free: `LocalCluster.start` refuses a port something already
listens on before starting anything (otherwise the agents would register with whatever master
answers there), and `LocalCluster.wait_ready` checks that the master answering is its own
(its ``work_dir`` flag), for the case where another one took the port in between.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from butte.cli.common import CliError
from butte.core.parent_death import die_with_parent
from butte.core.tls import client_context_for

SUMMARY = "start a master and agents on this machine"
DESCRIPTION = (
    "Starts one master and --agents agents on 127.0.0.1 as subprocesses, waits until every "
    "agent is registered, prints where the APIs, logs and work dirs are, and keeps running "
    "until Ctrl-C or SIGTERM, which stops everything."
)
HOST = "127.0.0.1"
_STOP_GRACE_SECONDS = 5.0


# free_port's range: below the ports agents offer tasks by default (31000-32000, which tests
# use too) and the ephemeral range; above Marathon's service ports (10000-20000).
_PORTS_FROM, _PORTS_BELOW = 20000, 31000
# Ports free_port handed out from that range; never handed out twice.
_handed_out: set[int] = set()


@functools.cache
def _ephemeral_floor() -> int:
    """The lowest port the kernel gives outgoing connections (ip_local_port_range)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = HOST) -> int:
    """A TCP port that was free a moment ago, for a server started afterwards.

    It is taken below the kernel's ephemeral range where there is room: a port from that
    range can become the local end of any outgoing connection before its server binds it,
    and the server then fails with EADDRINUSE for as long as that connection lives (a
    ZooKeeper server binds its quorum port only when it is elected leader, and failed the
    election again and again; a restarted daemon binds its port again). Otherwise it is one
    the kernel picks (port 0)."""
    below = min(_PORTS_BELOW, _ephemeral_floor())
    for _ in range(64 if below - _PORTS_FROM >= 1024 else 0):
        port = random.randrange(_PORTS_FROM, below)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ClusterError(Exception):
    """The local cluster could not be started (the message includes the relevant log)."""


def port_in_use(port: int, host: str = HOST) -> bool:
    """Whether something listens on ``host:port``. SO_REUSEADDR as the master's own socket
    has, so a closed connection lingering in TIME_WAIT does not count as in use."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


# What stops an agent with its tasks (Mesos' SIGUSR1: SIGTERM ends it and leaves them).
AGENT_STOP_SIGNAL = signal.SIGUSR1


def descendant_pids(pid: int) -> list[int]:
    """Pids of every live descendant of ``pid`` (Linux /proc; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*/stat"):
        fields = _stat_fields(entry)
        with contextlib.suppress(ValueError, IndexError):
            children.setdefault(int(fields[1]), []).append(int(entry.parent.name))
    out: list[int] = []
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            out.append(child)
            stack.append(child)
    return out


def _stat_fields(path: Path) -> list[str]:
    """The fields of a /proc/<pid>/stat after the command name (state first, ppid second);
    none if the process is gone."""
    try:
        text = path.read_text()
    except OSError:
        return []
    # The command name is in parentheses and may contain spaces.
    return text[text.rfind(")") + 2 :].split()


def _start_time(pid: int) -> str:
    """The start time of process ``pid`` (field 22 of /proc/<pid>/stat), "" if it is gone."""
    fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    return fields[19] if len(fields) > 19 else ""


class ManagedProcess:
    """One daemon of the cluster: its command line, log file, and process."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        env: Mapping[str, str] | None = None,
        stop_signal: int = signal.SIGTERM,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.stop_signal = stop_signal  # an agent's is AGENT_STOP_SIGNAL
        # Added to (or overriding) this process's environment (LIBPROCESS_SSL_* ...).
        self.env = dict(env or {})
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        # True once stopped or killed on purpose: its exit is then not a cluster failure.
        self.expected_down = False
        # What a SIGKILLed process left running (pid, start time), killed by `stop`.
        self._orphans: list[tuple[int, str]] = []
        self._log: BinaryIO | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self) -> None:
        """Starts (or restarts) the process, appending to its log file."""
        if self.running():
            raise ClusterError(f"{self.name} is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if self._log is not None:
            self._log.close()
        self.expected_down = False
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the child
        self._log.write(f"==== {time.strftime('%H:%M:%S')} {' '.join(self.argv)}\n".encode())
        self._log.flush()
        env = dict(os.environ, **self.env, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            # Own session: a Ctrl-C in the terminal reaches only us, and we stop the daemons in
            # order instead of all of them getting SIGINT at once.
            start_new_session=True,
            # The daemon's stop signal when we die: a killed `butte local` (or test run)
            # leaves no daemons behind.
            preexec_fn=(
                functools.partial(die_with_parent, self.stop_signal)
                if sys.platform == "linux"
                else None
            ),
        )

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, sig: int) -> None:
        """Sends ``sig`` to the process if it is running."""
        if self.running():
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(sig)

    def kill(self) -> None:
        """SIGKILLs the process (and nothing else: its tasks survive, as on a real crash).
        What it leaves running is remembered, so that `stop` ends it even if no restarted
        process takes it over (an agent's command launcher would otherwise wait out the
        recovery timeout)."""
        self.expected_down = True
        if self.process is not None and self.running():
            self._orphans += [(pid, _start_time(pid)) for pid in descendant_pids(self.process.pid)]
        self.signal(signal.SIGKILL)
        self.wait(10)

    def wait(self, timeout: float) -> int | None:
        """Waits for the process to exit; its exit status, or None if still running."""
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float = _STOP_GRACE_SECONDS) -> None:
        """The stop signal (SIGTERM; an agent's is SIGUSR1), wait up to ``grace`` seconds,
        then SIGKILL; afterwards SIGKILL whatever the process left behind (executors and
        tasks in its process tree)."""
        if self.process is None:
            return
        self.expected_down = True
        leftovers = descendant_pids(self.process.pid) if self.running() else []
        self.signal(self.stop_signal)
        if self.wait(grace) is None:
            self.signal(signal.SIGKILL)
            self.wait(grace)
        for pid in leftovers:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for pid, started in self._orphans:
            # The start time guards against a pid reused since the kill.
            if started and _start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        self._orphans = []
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the log file (for error messages)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class LocalCluster:
    """A master and ``agents`` agents as local subprocesses; see the module docstring."""

    def __init__(
        self,
        work_dir: str | os.PathLike[str],
        *,
        port: int = 5050,
        agents: int = 1,
        resources: str | Sequence[str] | None = None,
        master_flags: Sequence[str] = (),
        agent_flags: Sequence[str] = (),
        python: str = sys.executable,
        env: Mapping[str, str] | None = None,
        attach_logs: bool = False,
    ) -> None:
        """``resources`` is every agent's ``--resources``, or a list of one per agent (agents
        on one host need disjoint port ranges when their tasks listen on offered ports).
        ``env`` goes to every daemon's environment (``LIBPROCESS_SSL_*`` for TLS).
        ``attach_logs``: each daemon serves the log file this writes for it as its
        ``--external_log_file`` (``/master/log``, ``/slave/log``; given flags override it)."""
        self.work_dir = Path(work_dir).absolute()
        self.env = dict(env or {})
        # The cluster's own reads of the master speak TLS when the daemons do.
        self.ssl_context = client_context_for("", {**os.environ, **self.env})
        self.port = port
        self.python = python
        # Sent with the cluster's own reads of the master (an Authorization header when the
        # master authenticates its read-only endpoints).
        self.http_headers: dict[str, str] = {}
        self.master = ManagedProcess(
            "master",
            [python, "-m", "butte", "master", "--ip", HOST, "--port", str(port)]
            + ["--work_dir", str(self.work_dir / "master")]
            + (["--external_log_file", str(self.work_dir / "master.log")] if attach_logs else [])
            + list(master_flags),
            self.work_dir / "master.log",
            self.env,
        )
        self.agents: list[ManagedProcess] = []
        self.agent_ports: list[int] = []
        for i in range(agents):
            agent_port = free_port()
            argv = [python, "-m", "butte", "agent", "--master", self.master_address]
            argv += ["--port", str(agent_port), "--work_dir", str(self.work_dir / f"agent-{i}")]
            if _agent_accepts("--ip"):
                argv += ["--ip", HOST]
            own = resources if resources is None or isinstance(resources, str) else resources[i]
            if own is not None:
                argv += ["--resources", own]
            if attach_logs:
                argv += ["--external_log_file", str(self.work_dir / f"agent-{i}.log")]
            argv += list(agent_flags)
            if any(f.startswith("--isolation") for f in agent_flags) and not any(
                f.startswith("--cgroups_root") for f in agent_flags
            ):
                # Agents on one machine must not share a cgroups root: each one's recovery
                # destroys the groups it does not know.
                argv += ["--cgroups_root", f"butte/local-{agent_port}"]
            self.agents.append(
                ManagedProcess(
                    f"agent-{i}",
                    argv,
                    self.work_dir / f"agent-{i}.log",
                    self.env,
                    stop_signal=AGENT_STOP_SIGNAL,
                )
            )
            self.agent_ports.append(agent_port)

    # -- addresses -------------------------------------------------------------------------

    @property
    def master_address(self) -> str:
        """``127.0.0.1:<port>``: what ``--master`` flags take."""
        return f"{HOST}:{self.port}"

    @property
    def scheme(self) -> str:
        """``https`` when the daemons speak TLS, else ``http``."""
        return "http" if self.ssl_context is None else "https"

    @property
    def master_url(self) -> str:
        return f"{self.scheme}://{self.master_address}"

    @property
    def agent_urls(self) -> list[str]:
        return [f"{self.scheme}://{HOST}:{port}" for port in self.agent_ports]

    @property
    def log_paths(self) -> dict[str, Path]:
        """Log file of every process, by name (``master``, ``agent-0`` ...)."""
        return {p.name: p.log_path for p in (self.master, *self.agents)}

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Starts the master, then the agents (they retry until the master is up); raises
        ClusterError, starting nothing, if the master's port is taken."""
        if port_in_use(self.port):
            raise ClusterError(
                f"port {self.port} on {HOST} is already in use (another master?); "
                "choose a free one with --port"
            )
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.master.start()
        for agent in self.agents:
            agent.start()

    def state(self, timeout: float = 2.0) -> dict[str, Any]:
        """The master's ``/master/state`` document."""
        request = urllib.request.Request(
            f"{self.master_url}/master/state", headers=self.http_headers
        )
        with urllib.request.urlopen(request, timeout=timeout, context=self.ssl_context) as r:
            return json.loads(r.read())

    def active_agents(self) -> int | None:
        """How many agents the master lists as active; None while it does not answer.
        ClusterError if the master answering on the port is not this cluster's."""
        try:
            state = self.state()
        except (OSError, ValueError):
            return None
        self._check_own_master(state)
        return sum(1 for s in state.get("slaves", []) if s.get("active"))

    def _check_own_master(self, state: dict[str, Any]) -> None:
        """The master that answered is ours if it runs in our master work dir."""
        own = os.path.realpath(self.work_dir / "master")
        theirs = str((state.get("flags") or {}).get("work_dir", ""))
        if not theirs or os.path.realpath(theirs) != own:
            raise ClusterError(
                f"the master answering on {self.master_address} is not the one this cluster "
                f"started (its work_dir is '{theirs}', not '{own}'): port {self.port} is taken "
                "by another master; choose a free one with --port"
            )

    def wait_ready(self, timeout: float = 30.0, agents: int | None = None) -> None:
        """Waits until ``agents`` (default: all) agents are registered and active; raises
        ClusterError (with the log of a process that died) otherwise."""
        wanted = len(self.agents) if agents is None else agents
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            active = self.active_agents()
            if active is not None and active >= wanted:
                return
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"{wanted} agent(s) not active at {self.master_url} after {timeout:.0f}s;"
                    f" see the logs in {self.work_dir}\n--- master log tail ---\n"
                    + self.master.log_tail()
                )
            time.sleep(0.1)

    def check_alive(self) -> None:
        """Raises ClusterError (with its log tail) if a process of the cluster has exited."""
        for proc in (self.master, *self.agents):
            if proc.process is not None and not proc.expected_down and not proc.running():
                raise ClusterError(
                    f"{proc.name} exited with status {proc.process.returncode}; "
                    f"log {proc.log_path}:\n{proc.log_tail()}"
                )

    def stop(self) -> None:
        """Stops the agents (in parallel), then the master."""
        threads = [threading.Thread(target=a.stop) for a in self.agents]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.master.stop()

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _agent_accepts(flag: str) -> bool:
    """Whether the agent defines ``flag`` (it is asked, not assumed, so the cluster starts
    with whatever flag set the agent has)."""
    try:
        from butte.agent import main as agent_main
    except ImportError:
        return False
    parser = argparse.ArgumentParser(add_help=False)
    agent_main.add_flags(parser)
    return flag in parser._option_string_actions


# -- the `butte local` command ---------------------------------------------------------------


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Defines the ``butte local`` flags."""
    parser.add_argument("--port", type=int, default=5050, help="master port")
    parser.add_argument("--agents", type=int, default=1, help="number of agents")
    parser.add_argument(
        "--work_dir", default=None, help="directory for work dirs and logs (default: a temp dir)"
    )
    parser.add_argument(
        "--resources", default=None, help="resources of each agent (default: detected)"
    )
    parser.add_argument(
        "--ready_timeout", type=float, default=30.0, help="seconds to wait for the agents"
    )
    parser.add_argument(
        "--chronos",
        action="store_true",
        help="also run `butte chronos` (Chronos API and jobs page) on --chronos_port",
    )
    parser.add_argument("--chronos_port", type=int, default=4400, help="port of --chronos")
    parser.add_argument(
        "--marathon",
        action="store_true",
        help="also start `butte marathon` (the service scheduler) against the cluster",
    )
    parser.add_argument(
        "--marathon_port", type=int, default=8080, help="REST API port of --marathon"
    )
    parser.add_argument(
        "--isolation",
        default="auto",
        help="the agents' --isolation (auto: cgroups/cpu,cgroups/mem,cgroups/pids where "
        "this machine has them and we are root, else posix/cpu,posix/mem)",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="once up, run a demo job (3 tasks) with `butte run` and show its updates",
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _set_handlers(handler: Any) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


def run(args: argparse.Namespace) -> int:
    """``butte local`` entry point: start, report, wait for Ctrl-C/SIGTERM, stop."""
    if args.agents < 0:
        raise CliError("--agents must be >= 0", 2)
    work_dir = args.work_dir or tempfile.mkdtemp(prefix="butte-local-")
    isolation = args.isolation
    if isolation == "auto":
        from butte.agent.containerizer.isolators import preferred_isolation

        isolation = preferred_isolation()
    cluster = LocalCluster(
        work_dir,
        port=args.port,
        agents=args.agents,
        resources=args.resources,
        agent_flags=["--isolation", isolation],
        attach_logs=True,
    )
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    marathon: ManagedProcess | None = None
    # SIGTERM is handled like Ctrl-C so that both stop the daemons before we exit.
    _set_handlers(_interrupt)
    chronos = _chronos_process(cluster, args.chronos_port) if args.chronos else None
    try:
        cluster.start()
        cluster.wait_ready(args.ready_timeout)
        _print_summary(cluster)
        if chronos is not None:
            chronos.start()
            print(f"  chronos        http://{HOST}:{args.chronos_port}/", flush=True)
        if getattr(args, "marathon", False):
            marathon = _start_marathon(cluster, args.marathon_port)
        if args.demo and _run_demo(cluster) >= 128:
            return 0  # the demo was interrupted: the user wants out
        _set_handlers(_interrupt)  # the demo's event loop reset them
        print("Press Ctrl-C to stop.", flush=True)
        while True:
            time.sleep(0.5)
            cluster.check_alive()
            if chronos is not None and not chronos.running():
                raise ClusterError(f"chronos exited:\n{chronos.log_tail()}")
            if marathon is not None and not marathon.running():
                raise ClusterError(
                    f"marathon exited; log {marathon.log_path}:\n{marathon.log_tail()}"
                )
    except KeyboardInterrupt:
        return 0
    except ClusterError as e:
        raise CliError(str(e)) from None
    finally:
        _set_handlers(signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        if cluster.master.process is not None:  # nothing to stop if the port was taken
            print("Stopping the cluster ...", file=sys.stderr, flush=True)
            if chronos is not None:
                chronos.stop()
            if marathon is not None:
                marathon.stop()
            cluster.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _chronos_process(cluster: LocalCluster, port: int) -> ManagedProcess:
    """``butte chronos`` for the cluster (``--chronos``), its store under the work dir."""
    argv = [cluster.python, "-m", "butte", "chronos", "--master", cluster.master_address]
    argv += ["--http_address", HOST, "--http_port", str(port)]
    argv += ["--work_dir", str(cluster.work_dir / "chronos")]
    return ManagedProcess("chronos", argv, cluster.work_dir / "chronos.log")


def _print_summary(cluster: LocalCluster) -> None:
    lines = [
        f"butte cluster up: 1 master, {len(cluster.agents)} agent(s)",
        f"  master         {cluster.master_url}   (use --master {cluster.master_address})",
        f"  scheduler API  {cluster.master_url}/api/v1/scheduler",
        f"  operator API   {cluster.master_url}/api/v1",
        f"  state          {cluster.master_url}/master/state",
        f"  web UI         {cluster.master_url}/",
    ]
    lines += [f"  agent-{i}        {url}" for i, url in enumerate(cluster.agent_urls)]
    lines.append(f"  work dir       {cluster.work_dir}")
    lines += [f"  log            {path}" for path in cluster.log_paths.values()]
    print("\n".join(lines), flush=True)


def _start_marathon(cluster: LocalCluster, port: int) -> ManagedProcess:
    """Starts ``butte marathon`` on ``port`` against the cluster and waits for its API."""
    argv = [cluster.python, "-m", "butte", "marathon", "--master", cluster.master_address]
    argv += ["--http_port", str(port), "--http_address", HOST, "--hostname", HOST]
    argv += ["--work_dir", str(cluster.work_dir / "marathon")]
    service = ManagedProcess("marathon", argv, cluster.work_dir / "marathon.log")
    service.start()
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{port}/ping", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if not service.running() or time.monotonic() > deadline:
            raise ClusterError(
                f"marathon did not start; log {service.log_path}:\n{service.log_tail()}"
            )
        time.sleep(0.1)
    print(
        f"  marathon       http://{HOST}:{port}   (REST API v2, services page at /ui)\n"
        f"  log            {service.log_path}",
        flush=True,
    )
    return service


def _run_demo(cluster: LocalCluster) -> int:
    from butte.cli.run import JobSpec, run_job
    from butte.core.resources import parse_resources

    spec = JobSpec(
        master=cluster.master_address,
        name="demo",
        command="echo hello from butte; sleep 1",
        resources=parse_resources("cpus:0.1;mem:32"),
        instances=3,
        framework_name="butte-demo",
    )
    print("Running the demo job: 3 x `echo hello from butte; sleep 1`", flush=True)
    status = asyncio.run(run_job(spec))
    print(f"Demo job finished with exit status {status}", flush=True)
    return status
