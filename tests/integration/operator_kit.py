"""Helpers shared by the operator API, files and CLI integration tests: one cluster per test
module with a long-running task (`ClusterWithTask`), v1 calls, event stream readers."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from butte.core.codec import RecordIOReader
from butte.testing.cluster import ClusterHandle, start_cluster

JSON = {"Content-Type": "application/json"}


def post(url: str, body: Any, path: str = "/api/v1", **kwargs: Any) -> requests.Response:
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    headers = kwargs.pop("headers", JSON)
    return requests.post(url + path, data=data, headers=headers, timeout=10, **kwargs)


def call(url: str, call_type: str, payload: dict | None = None, status: int = 200) -> Any:
    """A v1 call that must answer ``status``; the payload of a 200 with a body."""
    body: dict[str, Any] = {"type": call_type}
    if payload is not None:
        body[call_type.lower()] = payload
    response = post(url, body)
    assert response.status_code == status, (call_type, response.status_code, response.text)
    if status == 200 and response.content:
        answer = response.json()
        assert answer["type"] == call_type
        return answer[call_type.lower()]
    return response.text


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s")
        time.sleep(0.05)


class RunJob:
    """``butte run`` in the background: one framework running ``command``."""

    def __init__(self, cluster: ClusterHandle, name: str, command: str, log: Path) -> None:
        self.name = name
        self._log = open(log, "wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "butte",
                "run",
                "--master",
                cluster.master_address,
                "--name",
                name,
                "--framework_name",
                f"fw-{name}",
                "--command",
                command,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._log.close()


def tasks_named(url: str, prefix: str, state: str | None = None) -> list[dict]:
    answer = call(url, "GET_TASKS")
    every = answer["tasks"] + answer["completed_tasks"]
    return [
        t
        for t in every
        if t["task_id"]["value"].startswith(prefix + ".") and (state is None or t["state"] == state)
    ]


def wait_task(url: str, prefix: str, state: str, timeout: float = 15.0) -> dict:
    found = wait_for(lambda: tasks_named(url, prefix, state), timeout, f"{prefix} {state}")
    return found[0]


@contextmanager
def cluster_with_jobs(
    tmp: Path,
    jobs: dict[str, str],
    running: tuple[str, ...] = (),
    written: tuple[str, ...] = (),
    **options: Any,
) -> Iterator[tuple[ClusterHandle, dict[str, RunJob]]]:
    """A cluster and one ``butte run`` per job (name -> command); waits until the jobs in
    ``running`` have a TASK_RUNNING task, and those in ``written`` one that has written to
    its stdout and stderr (TASK_RUNNING comes when the shell starts, before its first
    ``echo``)."""
    with start_cluster(tmp / "cluster", **options) as cluster:
        started = {
            name: RunJob(cluster, name, cmd, tmp / f"{name}.log") for name, cmd in jobs.items()
        }
        try:
            for name in running:
                task = wait_task(cluster.master_url, name, "TASK_RUNNING")
                if name not in written:
                    continue
                sandbox = (
                    f"/slaves/{task['agent_id']['value']}/frameworks/"
                    f"{task['framework_id']['value']}/executors/{task['task_id']['value']}"
                    "/runs/latest"
                )

                def written(name: str = name, sandbox: str = sandbox) -> bool:
                    return all(
                        call(
                            cluster.master_url, "READ_FILE", {"path": f"{sandbox}/{f}", "offset": 0}
                        )["size"]
                        for f in ("stdout", "stderr")
                    )

                wait_for(written, 15, f"{name}'s first output")
            yield cluster, started
        finally:
            for job in started.values():
                job.stop()


class EventStream:
    """An operator SUBSCRIBE stream read by a background thread into ``events`` (a raw
    socket, so that `close` ends it at once). ``call`` is the SUBSCRIBE call to send;
    ``expect_ok``: fail unless it is answered 200 (else ``status`` says how it was)."""

    def __init__(
        self,
        url: str,
        path: str = "/api/v1",
        call: dict[str, Any] | None = None,
        expect_ok: bool = True,
    ) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=30)
        body = json.dumps(call or {"type": "SUBSCRIBE"}).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Accept: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.sock.sendall(head.encode() + body)
        self.events: list[dict] = []
        self.status: int | None = None
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        wait_for(lambda: self.status is not None, 10, "stream answer")
        if expect_ok:
            assert self.status == 200, self.status

    def _read(self) -> None:
        buffer = b""
        reader = RecordIOReader()
        try:
            while b"\r\n\r\n" not in buffer:
                buffer += self._recv()
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            self.status = int(head.split()[1])
            while True:  # chunked transfer encoding
                while b"\r\n" not in buffer:
                    buffer += self._recv()
                size_line, buffer = buffer.split(b"\r\n", 1)
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    return
                while len(buffer) < size + 2:
                    buffer += self._recv()
                for record in reader.feed(buffer[:size]):
                    self.events.append(json.loads(record))
                buffer = buffer[size + 2 :]
        except (OSError, ValueError):
            if self.status is None:
                self.status = -1

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise OSError("stream closed")
        return data

    def of(self, kind: str) -> list[dict]:
        return [e for e in list(self.events) if e["type"] == kind]

    def wait(self, kind: str, match: Callable[[dict], bool] = lambda e: True) -> dict:
        return wait_for(
            lambda: next((e for e in self.of(kind) if match(e)), None), 15, f"{kind} event"
        )

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
