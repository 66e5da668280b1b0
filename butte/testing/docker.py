"""A private Docker daemon for tests: `dockerd` on its own unix socket, data root, exec root
and pid file, with no networking of its own (``--bridge=none``, no iptables rules, no
masquerading) and the cgroupfs driver; stopped (and its directories removed) afterwards.
Images come from `butte.testing.images` archives through ``docker load``: nothing is pulled.
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
        self.proc = _start(self.root, self.extra if extra is None else extra)


def _tag(root: Path) -> str:
    """A containerd namespace name of this daemon's own (letters and digits only)."""
    return hashlib.sha256(str(root).encode()).hexdigest()[:12]


def _argv(root: Path, extra: Sequence[str]) -> list[str]:
    return [
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


def _start(root: Path, extra: Sequence[str]) -> subprocess.Popen:
    log = open(root / "dockerd.log", "ab")  # noqa: SIM115 - the daemon writes it for its life
    proc = subprocess.Popen(
        _argv(root, extra),
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
def dockerd(extra: Sequence[str] = ()) -> Iterator[Dockerd]:
    """A private daemon for the duration of the block (requires root and docker.io)."""
    require(docker_missing(), "docker.io")
    # Short: the socket path must fit a sockaddr_un (108 bytes).
    root = Path(tempfile.mkdtemp(prefix="bd-", dir="/tmp"))
    daemon = Dockerd(root, _start(root, extra), extra)
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
