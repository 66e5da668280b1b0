"""Real ZooKeeper servers and groups of contending masters on 127.0.0.1, for HA tests and the
failover benchmark.

`ZooKeeperEnsemble` starts one standalone server or an N-node ensemble from Debian's
``zookeeper`` package (``scripts/setup.sh`` installs it) on free loopback ports, each with a
fresh data dir and log file under the given directory, waits until every server answers the
four-letter word ``srvr`` with a ``Mode:`` line, and stops them with SIGKILL (instant; a
SIGTERM takes seconds). ``tickTime`` is short by default so sessions expire in about 2 s::

    with ZooKeeperEnsemble(tmp_path / "zk", size=3) as zk:
        url = zk.url("/mesos")                # zk://127.0.0.1:p1,127.0.0.1:p2,.../mesos
        zk.kill(zk.leader_index())            # the ensemble elects another leader

`MasterGroup` runs N ``butte master --zk`` processes on one election path and knows which
one leads (by asking each master's ``/state``); it can kill, pause, restart them and act as
their supervisor (restart those that exited, as systemd would).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from butte.cli.local import HOST, ManagedProcess, free_port
from butte.core.parent_death import die_with_parent

JAVA_DIR = Path("/usr/share/java")
ZOOKEEPER_JAR = JAVA_DIR / "zookeeper.jar"
SLF4J_SIMPLE_JAR = JAVA_DIR / "slf4j-simple.jar"
JAVA_OPTIONS = (
    "-Xmx256m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    # An election whose notifications go unanswered (a peer just killed, a JVM starved of CPU)
    # doubles its wait up to 60 s by default; capped at 2 s, one lost round cannot outlast
    # a test's wait for the ensemble.
    "-Dzookeeper.fastleader.maxNotificationInterval=2000",
)
MAIN_CLASS = "org.apache.zookeeper.server.quorum.QuorumPeerMain"


def zookeeper_missing() -> str | None:
    """Why no ZooKeeper server can be started here, or None."""
    if not ZOOKEEPER_JAR.exists():
        return f"{ZOOKEEPER_JAR} is not installed (apt-get install zookeeper; scripts/setup.sh)"
    if not _java():
        return "no java executable"
    return None


def _java() -> str | None:
    from shutil import which

    return which("java")


def four_letter_word(port: int, word: str = "srvr", timeout: float = 1.0) -> str:
    """Sends a ZooKeeper four-letter word to 127.0.0.1:port; the answer ('' on failure)."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(word.encode())
            chunks = []
            while True:
                data = sock.recv(4096)
                if not data:
                    break
                chunks.append(data)
    except OSError:
        return ""
    return b"".join(chunks).decode(errors="replace")


# Log lines that tell how an election went: state changes, rounds, timeouts and failures.
_ELECTION_LINE = re.compile(
    r"Peer state changed|New election|LEADER ELECTION TOOK|Notification time out|"
    r"Shutting down|shutdown called|[Tt]imeout while|timed out|GOODBYE|ERROR|"
    r"^(?!\[main\]).*WARN (?!.*Cannot open channel)|"
    r"^(?!java\.net\.ConnectException)\S*Exception"
)


class ZooKeeperServer:
    """One server of an ensemble: its ports, data dir, log and process."""

    def __init__(self, index: int, directory: Path, client_port: int) -> None:
        self.index = index  # myid is index + 1
        self.directory = directory
        self.client_port = client_port
        self.quorum_port = free_port()
        self.election_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.client_port}"

    @property
    def log_path(self) -> Path:
        return self.directory / "zookeeper.log"

    def write_config(self, peers: Sequence[ZooKeeperServer], tick_ms: int) -> Path:
        data = self.directory / "data"
        data.mkdir(parents=True, exist_ok=True)
        lines = [
            f"tickTime={tick_ms}",
            "initLimit=10",
            "syncLimit=5",
            f"dataDir={data}",
            f"clientPort={self.client_port}",
            f"clientPortAddress={HOST}",
            "admin.enableServer=false",
            "4lw.commands.whitelist=ruok,srvr,stat,mntr,cons",
            "maxClientCnxns=0",
        ]
        if len(peers) > 1:
            (data / "myid").write_text(f"{self.index + 1}\n")
            for peer in peers:
                lines.append(
                    f"server.{peer.index + 1}={HOST}:{peer.quorum_port}:{peer.election_port}"
                )
        config = self.directory / "zoo.cfg"
        config.write_text("\n".join(lines) + "\n")
        return config

    def start(self) -> None:
        """Starts (or restarts) the server with its existing config and data."""
        if self.running():
            raise RuntimeError(f"zookeeper {self.index} is already running")
        classpath = f"{ZOOKEEPER_JAR}:{SLF4J_SIMPLE_JAR}"
        argv = [_java() or "java", *JAVA_OPTIONS, "-cp", classpath, MAIN_CLASS]
        argv.append(str(self.directory / "zoo.cfg"))
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # SIGKILL when the test process dies: no stray servers.
                preexec_fn=die_with_parent if sys.platform == "linux" else None,
            )
        finally:
            log.close()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL and wait (instant; the port is free again right away)."""
        if self.process is not None and self.running():
            self.process.send_signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(10)

    def mode(self) -> str | None:
        """``standalone``, ``leader`` or ``follower`` while serving; None otherwise."""
        for line in four_letter_word(self.client_port).splitlines():
            if line.startswith("Mode:"):
                return line.split(":", 1)[1].strip()
        return None

    def log_tail(self, lines: int = 40) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def election_history(self, lines: int = 40) -> str:
        """The last state changes, elections and warnings of the log, without the stack
        traces, notifications and four-letter-word lines that bury them in its tail."""
        with contextlib.suppress(OSError):
            text = self.log_path.read_text(errors="replace")
            kept = [line for line in text.splitlines() if _ELECTION_LINE.search(line)]
            return "\n".join(kept[-lines:])
        return ""


class ZooKeeperEnsemble:
    """``size`` ZooKeeper servers (1: standalone) under ``directory``; see module docstring."""

    def __init__(self, directory: str | os.PathLike[str], size: int = 1, tick_ms: int = 500):
        reason = zookeeper_missing()
        if reason:
            raise RuntimeError(reason)
        self.directory = Path(directory).absolute()
        self.tick_ms = tick_ms
        self.servers = [
            ZooKeeperServer(i, self.directory / f"zk-{i}", free_port()) for i in range(size)
        ]

    @property
    def hosts(self) -> str:
        """``127.0.0.1:p1,127.0.0.1:p2,...``"""
        return ",".join(s.address for s in self.servers)

    def url(self, path: str = "/mesos") -> str:
        return f"zk://{self.hosts}{path}"

    def start(self, timeout: float = 30.0) -> None:
        for server in self.servers:
            server.write_config(self.servers, self.tick_ms)
        for server in self.servers:
            server.start()
        self.wait_serving(timeout)

    def wait_serving(self, timeout: float = 30.0, servers: Sequence[int] | None = None) -> None:
        """Waits until the given (default: all running) servers report a Mode."""
        wanted = [self.servers[i] for i in servers] if servers is not None else self.servers
        wanted = [s for s in wanted if s.running() or servers is not None]
        deadline = time.monotonic() + timeout
        while True:
            missing = [s for s in wanted if s.mode() is None]
            if not missing:
                return
            for server in missing:
                if not server.running():
                    raise RuntimeError(f"zookeeper {server.index} exited:\n{server.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"zookeeper {', '.join(str(s.index) for s in missing)} not serving after "
                    f"{timeout}s; what each server of the ensemble went through:\n"
                    + "\n".join(
                        f"----- zookeeper {s.index} -----\n{s.election_history()}"
                        for s in self.servers
                    )
                )
            time.sleep(0.05)

    def leader_index(self) -> int | None:
        """Index of the ensemble's leader (or the standalone server), None if none serves."""
        for server in self.servers:
            if server.mode() in ("leader", "standalone"):
                return server.index
        return None

    def kill(self, index: int) -> None:
        self.servers[index].kill()

    def restart(self, index: int, timeout: float = 30.0) -> None:
        server = self.servers[index]
        server.kill()
        server.start()
        self.wait_serving(timeout, servers=[index])

    def stop(self) -> None:
        for server in self.servers:
            server.kill()

    def __enter__(self) -> ZooKeeperEnsemble:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def get_json(url: str, timeout: float = 2.0) -> Any:
    """GETs a JSON document (following no redirects)."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


class MasterGroup:
    """``count`` masters contending under ``zk_url``; see the module docstring."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        zk_url: str,
        count: int = 3,
        flags: Sequence[str] = (),
        python: str = sys.executable,
    ) -> None:
        self.directory = Path(directory).absolute()
        self.zk_url = zk_url
        self.ports = [free_port() for _ in range(count)]
        self.masters: list[ManagedProcess] = []
        for i, port in enumerate(self.ports):
            argv = [python, "-m", "butte", "master", "--ip", HOST, "--port", str(port)]
            argv += ["--work_dir", str(self.directory / f"master-{i}"), "--zk", zk_url]
            argv += list(flags)
            self.masters.append(
                ManagedProcess(f"master-{i}", argv, self.directory / f"master-{i}.log")
            )
        self.restarts = 0
        # Masters stopped with SIGSTOP: not asked (a frozen process answers nothing).
        self.paused: set[int] = set()

    @property
    def addresses(self) -> list[str]:
        return [f"{HOST}:{port}" for port in self.ports]

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for master in self.masters:
            master.start()

    def state(self, index: int, timeout: float = 2.0) -> dict[str, Any] | None:
        """Master ``index``'s ``/state``, None if it does not answer."""
        try:
            return get_json(f"http://{self.addresses[index]}/state", timeout)
        except (OSError, ValueError):
            return None

    def leader(self) -> int | None:
        """Index of the master that serves as the elected leader: it answers the operator
        API itself (standbys answer 307/503, a leader still recovering 503). Cheap: no
        /state is built, so polling it does not slow a big master down."""
        for i, master in enumerate(self.masters):
            if master.running() and i not in self.paused and self._serves_api(i):
                return i
        return None

    def wait_state(self, index: int, predicate: Any = bool, timeout: float = 30.0) -> Any:
        """Polls master ``index``'s /state until ``predicate(state)`` holds; the state."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.state(index, timeout=1.0)
            if state is not None and predicate(state):
                return state
            if time.monotonic() > deadline:
                raise TimeoutError(f"master-{index}: condition not met in {timeout}s: {state}")
            time.sleep(0.05)

    def _serves_api(self, index: int) -> bool:
        """Whether the master answers the operator API as leader (not 307/503)."""
        request = urllib.request.Request(
            f"http://{self.addresses[index]}/api/v1",
            data=b'{"type":"GET_HEALTH"}',
            headers={"Content-Type": "application/json"},
        )
        try:
            with _NO_REDIRECTS.open(request, timeout=1.0) as response:
                return response.status == 200
        except (OSError, ValueError):
            return False

    def wait_leader(self, timeout: float = 30.0, exclude: int | None = None) -> int:
        """Waits until some master (not ``exclude``) serves as leader; returns its index."""
        deadline = time.monotonic() + timeout
        while True:
            self.supervise()
            leader = self.leader()
            if leader is not None and leader != exclude:
                return leader
            if time.monotonic() > deadline:
                raise TimeoutError(f"no leading master after {timeout}s\n{self.logs(30)}")
            time.sleep(0.02)

    def supervise(self) -> list[int]:
        """Restarts masters that exited without being stopped on purpose (a supervisor's job:
        a master exits when it loses leadership). Returns the indexes restarted."""
        restarted = []
        for i, master in enumerate(self.masters):
            if master.process is not None and not master.expected_down and not master.running():
                master.start()
                self.restarts += 1
                restarted.append(i)
        return restarted

    def kill(self, index: int) -> None:
        self.masters[index].kill()

    def pause(self, index: int) -> None:
        self.paused.add(index)
        self.masters[index].signal(signal.SIGSTOP)

    def resume(self, index: int) -> None:
        self.masters[index].signal(signal.SIGCONT)
        self.paused.discard(index)

    def restart(self, index: int) -> None:
        master = self.masters[index]
        if master.running():
            master.kill()
        master.start()

    def stop(self) -> None:
        for master in self.masters:
            master.signal(signal.SIGCONT)
            master.stop(grace=3.0)

    def logs(self, max_lines: int = 100) -> str:
        parts = []
        for master in self.masters:
            parts.append(f"----- {master.name} -----\n{master.log_tail(max_lines)}")
        return "\n".join(parts)

    def __enter__(self) -> MasterGroup:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_NO_REDIRECTS = urllib.request.build_opener(_NoRedirect)
