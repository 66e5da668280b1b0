"""A real ``butte marathon`` process for tests, next to a `ClusterHandle`'s master.

with start_marathon(cluster, tmp_path) as m:
    client = marathon.MarathonClient(m.url)   # the unmodified PyPI client
    m.kill(); m.restart()                     # SIGKILL, then start again (same store)
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from butte.cli.local import HOST, ManagedProcess, free_port


class MarathonHandle:
    """One ``butte marathon`` process: its REST API address, store and control over it."""

    def __init__(self, process: ManagedProcess, port: int, work_dir: Path) -> None:
        self.process = process
        self.port = port
        self.work_dir = work_dir

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def request(self, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
        """(status, parsed JSON body or text) of one REST call; never raises for 4xx/5xx."""
        data = (
            None
            if body is None
            else (body if isinstance(body, bytes) else json.dumps(body).encode())
        )
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw) if raw else None
        except ValueError:
            return status, raw.decode(errors="replace")

    def get(self, path: str) -> Any:
        status, body = self.request("GET", path)
        if status != 200:
            raise AssertionError(f"GET {path}: {status} {body}")
        return body

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if not self.process.running():
                raise RuntimeError(f"marathon exited:\n{self.process.log_tail(60)}")
            with contextlib.suppress(OSError, AssertionError):
                if self.get("/v2/info").get("frameworkId"):
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"marathon not ready:\n{self.process.log_tail(60)}")
            time.sleep(0.1)

    def wait_until(
        self, predicate: Callable[[], Any], timeout: float = 30.0, what: str = ""
    ) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                last = predicate()
            except (OSError, AssertionError, KeyError) as e:
                last = e
            else:
                if last:
                    return last
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{what or 'condition'} not reached in {timeout}s (last: {last!r})\n"
                    + self.process.log_tail(40)
                )
            time.sleep(0.1)

    def kill(self) -> None:
        self.process.kill()

    def restart(self) -> None:
        if self.process.running():
            self.process.stop()
        self.process.start()
        self.wait_ready()

    def log_text(self) -> str:
        return self.process.log_tail(400)


@contextlib.contextmanager
def start_marathon(
    master_address: str, work_dir: Path, flags: Sequence[str] = ()
) -> Iterator[MarathonHandle]:
    """Starts ``butte marathon`` against a master, waits until it has subscribed, and always
    stops it afterwards."""
    port = free_port()
    argv = [sys.executable, "-m", "butte", "marathon", "--master", master_address]
    argv += ["--http_port", str(port), "--http_address", HOST, "--hostname", HOST]
    argv += ["--work_dir", str(work_dir / "marathon"), *flags]
    process = ManagedProcess("marathon", argv, work_dir / "marathon.log")
    handle = MarathonHandle(process, port, work_dir / "marathon")
    try:
        process.start()
        handle.wait_ready()
        yield handle
    finally:
        process.stop()
