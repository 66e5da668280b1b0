"""A private Docker daemon for tests: `dockerd` on its own unix socket, data root, exec root
and pid file, with no networking of its own (``--bridge=none``, no iptables rules, no
masquerading) and the cgroupfs driver; stopped (and its directories removed) afterwards.
Images come from `butte.testing.images` archives through ``docker load``: nothing is pulled.

A test that gives the daemon networking of its own runs it inside a network namespace of the
test's own (``netns``): its bridge, its containers' addresses and the ports it publishes then
exist only there, while the daemon's unix socket still serves the agent and the client in the
host namespace.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from butte.testing import images
from butte.testing.require import require

DOCKERD = shutil.which("dockerd", path="/usr/sbin:/usr/bin:/sbin:/bin") or "/usr/sbin/dockerd"
NSENTER = shutil.which("nsenter", path="/usr/bin:/usr/sbin:/bin:/sbin") or "/usr/bin/nsenter"
# Debian's client (another one may come first on PATH).
DOCKER = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else (shutil.which("docker") or "")
START_TIMEOUT = 30.0


def docker_missing() -> str | None:
    """Why a private daemon cannot be started here (None: it can be tried)."""
    if os.geteuid() != 0:
        return "dockerd needs root"
    if not os.path.exists(DOCKERD) or not DOCKER:
        return "docker.io (dockerd and the docker client) is not installed"
    return None


@dataclass
class Dockerd:
    """A running private daemon."""

    root: Path
    proc: subprocess.Popen
    extra: Sequence[str] = ()
    netns: str | None = None
    loaded: set[str] = field(default_factory=set)

    @property
    def socket(self) -> str:
        return str(self.root / "docker.sock")

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def docker(self, *args: str, check: bool = True, timeout: float = 60.0) -> str:
        """Runs the client against this daemon; its stdout."""
        done = subprocess.run(
            [DOCKER, "-H", self.host, *args], capture_output=True, text=True, timeout=timeout
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def load(self, archive: Path) -> None:
        """``docker load`` of a ``docker save`` archive."""
        self.docker("load", "--input", str(archive))

    def load_busybox(self, repo: str = "butte-test/busybox", tag: str = "1") -> str:
        """Loads the busybox test image (once); returns its reference."""
        ref = f"{repo}:{tag}"
        if ref not in self.loaded:
            with tempfile.TemporaryDirectory() as tmp:
                archive = Path(tmp) / "image.tar"
                images.save_archive(archive, repo, tag, config={"Cmd": ["/bin/sh"]})
                self.load(archive)
            self.loaded.add(ref)
        return ref

    def restart(self, extra: Sequence[str] | None = None) -> None:
        """Stops the daemon and starts it again on the same directories."""
        _stop(self.proc)
        self.proc = _start(self.root, self.extra if extra is None else extra, self.netns)


def _tag(root: Path) -> str:
    """A containerd namespace name of this daemon's own (letters and digits only)."""
    return hashlib.sha256(str(root).encode()).hexdigest()[:12]


def in_netns(netns: str | None) -> list[str]:
    """The argv prefix that runs a command in the named network namespace (``ip netns add``),
    nothing for None.

    ``nsenter --net`` and not ``ip netns exec``: the latter also gives the command a mount
    namespace with a fresh /sys, where the cgroup hierarchies under /sys/fs/cgroup are gone
    (dockerd then finds no cgroup controller). Both exec the command, so a Popen's pid is the
    command's own."""
    return [] if netns is None else [NSENTER, f"--net=/run/netns/{netns}", "--"]


def _argv(root: Path, extra: Sequence[str], netns: str | None = None) -> list[str]:
    return [
        *in_netns(netns),
        DOCKERD,
        f"--host=unix://{root / 'docker.sock'}",
        f"--data-root={root / 'data'}",
        f"--exec-root={root / 'exec'}",
        f"--pidfile={root / 'dockerd.pid'}",
        "--bridge=none",
        "--iptables=false",
        "--ip6tables=false",
        "--ip-masq=false",
        "--exec-opt=native.cgroupdriver=cgroupfs",
        "--shutdown-timeout=2",
        f"--containerd-namespace=butte-{_tag(root)}",
        f"--containerd-plugins-namespace=butte-{_tag(root)}-plugins",
        *extra,
    ]


def _start(root: Path, extra: Sequence[str], netns: str | None = None) -> subprocess.Popen:
    log = open(root / "dockerd.log", "ab")  # noqa: SIM115 - the daemon writes it for its life
    proc = subprocess.Popen(
        _argv(root, extra, netns),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        done = subprocess.run(
            [
                DOCKER,
                "-H",
                f"unix://{root / 'docker.sock'}",
                "version",
                "--format={{.Server.Version}}",
            ],
            capture_output=True,
            timeout=10,
        )
        if done.returncode == 0:
            return proc
        time.sleep(0.1)
    _stop(proc)
    tail = (root / "dockerd.log").read_text(errors="replace")[-2000:]
    require(f"dockerd did not start: {tail}", "a working dockerd (docker.io)")
    raise AssertionError("unreachable")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


@contextlib.contextmanager
def dockerd(extra: Sequence[str] = (), netns: str | None = None) -> Iterator[Dockerd]:
    """A private daemon for the duration of the block (requires root and docker.io); with
    ``netns``, run inside that existing network namespace (the caller creates and deletes it,
    after this block has stopped the daemon)."""
    require(docker_missing(), "docker.io")
    # Short: the socket path must fit a sockaddr_un (108 bytes).
    root = Path(tempfile.mkdtemp(prefix="bd-", dir="/tmp"))
    daemon = Dockerd(root, _start(root, extra, netns), extra, netns)
    try:
        yield daemon
    finally:
        with contextlib.suppress(Exception):
            ids = daemon.docker("ps", "--all", "--quiet", check=False, timeout=20).split()
            if ids:
                daemon.docker("rm", "--force", *ids, check=False, timeout=60)
        _stop(daemon.proc)
        # Mounts left under the data root (overlay) must go before the tree does.
        subprocess.run(["umount", "-R", "-l", str(root / "data")], capture_output=True)
        subprocess.run(["umount", "-R", "-l", str(root / "exec")], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
