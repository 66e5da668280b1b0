"""A real ``butte chronos`` process for tests and benchmarks.

`ChronosProcess` runs ``python -m butte chronos`` with its own port and work dir (or a
``--zk`` URL), waits until its API answers (``/ping``, and ``/metrics`` once it leads), and
can SIGKILL and restart it with the same flags::

    with ChronosProcess(tmp_path / "chronos", cluster.master_address) as chronos:
        client = chronos_python.connect(chronos.address)
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from butte.cli.local import HOST, ClusterError, ManagedProcess, free_port


class ChronosProcess:
    def __init__(
        self,
        work_dir: str | Path,
        master: str,
        *,
        port: int | None = None,
        zk: str | None = None,
        flags: Sequence[str] = (),
        name: str = "chronos",
    ) -> None:
        self.work_dir = Path(work_dir)
        self.port = port or free_port()
        argv = [sys.executable, "-m", "butte", "chronos", "--master", master]
        argv += ["--http_port", str(self.port), "--http_address", HOST]
        argv += ["--zk", zk] if zk else ["--work_dir", str(self.work_dir)]
        argv += ["--failure_retry", "200"]  # retries within a test's patience (default 60 s)
        self.process = ManagedProcess(name, [*argv, *flags], self.work_dir / f"{name}.log")

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def start(self, timeout: float = 30.0, leading: bool = True) -> None:
        """Starts it and waits until it answers (and, with ``leading``, leads)."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.process.start()
        self.wait_ready(timeout, leading)

    def wait_ready(self, timeout: float = 30.0, leading: bool = True) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.process.running():
                raise ClusterError(f"chronos exited:\n{self.process.log_tail()}")
            try:
                metrics = self.get("/metrics")
                if not leading or metrics["gauges"]["leader"]["value"] == 1:
                    if not leading or self.get("/ui/info")["framework_id"]:
                        return
            except (OSError, ValueError, KeyError):
                pass
            if time.monotonic() > deadline:
                raise ClusterError(f"chronos not ready after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def get(self, path: str, timeout: float = 5.0) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=timeout) as r:
            return json.loads(r.read())

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
        """(status, parsed JSON or text) for any request, errors included."""
        req = urllib.request.Request(f"{self.url}{path}", data=body, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                status, data = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, data = e.code, e.read()
        try:
            return status, json.loads(data) if data else None
        except ValueError:
            return status, data.decode(errors="replace")

    def kill(self) -> None:
        self.process.kill()

    def stop(self) -> None:
        self.process.stop()

    def log_tail(self, lines: int = 40) -> str:
        return self.process.log_tail(lines)

    def __enter__(self) -> ChronosProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
