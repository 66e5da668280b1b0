"""A scriptable stand-in for a master's scheduler API, for testing framework code.

`FakeMaster` serves ``POST /api/v1/scheduler`` on 127.0.0.1 from a background thread (so both
synchronous code, like the CLI, and asyncio tests can talk to it). It records every call,
answers SUBSCRIBE with a RecordIO stream carrying ``Mesos-Stream-Id``, checks that later calls
send that stream id, and can be scripted:

* `fail_next_subscribes` / `redirect_next_subscribe`: canned answers (503, 307 ...) for the
  next SUBSCRIBE attempts;
* `respond_to`: a canned non-2xx answer for a call type;
* `push` / `push_raw` / `close_stream`: events or raw bytes down the open stream;
* `add_agent` + `task_outcome`: a tiny simulated cluster that offers each agent's resources on
  SUBSCRIBE/REVIVE and answers LAUNCH and KILL with status updates (uuid set, like an agent's).
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from butte.core.codec import record
from butte.core.resources import parse_resources

TaskOutcome = Callable[[dict[str, Any]], list[tuple[str, str | None]]]


def finished_outcome(task: dict[str, Any]) -> list[tuple[str, str | None]]:
    """Default task script: STARTING, RUNNING, then FINISHED with exit status 0."""
    return [
        ("TASK_STARTING", None),
        ("TASK_RUNNING", None),
        ("TASK_FINISHED", "Command exited with status 0"),
    ]


@dataclass
class FakeAgent:
    """An agent the fake master offers: id, hostname and resources text."""

    agent_id: str
    hostname: str
    resources: str


class FakeMaster:
    """In-process fake of the scheduler endpoint; see the module docstring."""

    def __init__(self, heartbeat_interval: float = 15.0, framework_id: str = "fake-0000") -> None:
        self.heartbeat_interval = heartbeat_interval
        self.framework_id = framework_id
        self.calls: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.agents: list[FakeAgent] = []
        self.task_outcome: TaskOutcome = finished_outcome
        self.subscriptions = 0
        self.heartbeats = True  # False: the stream goes quiet (exercises client watchdogs)
        self.stream_id: str | None = None
        self._subscribe_script: deque[tuple[int, str, dict[str, str]]] = deque()
        self._call_script: dict[str, tuple[int, str]] = {}
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stream_queue: asyncio.Queue[bytes | None] | None = None
        self._offer_seq = 0
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """``host:port`` to give a client as its master."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> FakeMaster:
        started = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(started,), daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("fake master did not start")
        return self

    def stop(self) -> None:
        if self._loop is None or self._runner is None:
            return
        self.close_stream()
        future = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        future.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(10)

    def __enter__(self) -> FakeMaster:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _serve(self, started: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        app = web.Application()
        app.router.add_post("/api/v1/scheduler", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        self.port = self._runner.addresses[0][1]
        started.set()
        loop.run_forever()
        loop.close()

    # -- scripting (thread-safe) -----------------------------------------------------------

    def fail_next_subscribes(self, status: int, message: str, times: int = 1) -> None:
        """The next ``times`` SUBSCRIBE attempts get ``status`` with ``message``."""
        for _ in range(times):
            self._subscribe_script.append((status, message, {}))

    def redirect_next_subscribe(self, leader: str) -> None:
        """The next SUBSCRIBE gets ``307`` to ``//<leader>/api/v1/scheduler``."""
        location = f"//{leader}/api/v1/scheduler"
        self._subscribe_script.append((307, "", {"Location": location}))

    def respond_to(self, call_type: str, status: int, message: str) -> None:
        """Every later call of ``call_type`` is answered with ``status`` and ``message``."""
        self._call_script[call_type] = (status, message)

    def add_agent(self, agent_id: str, hostname: str, resources: str) -> None:
        """Simulates an agent whose resources are offered on SUBSCRIBE and REVIVE."""
        self.agents.append(FakeAgent(agent_id, hostname, resources))

    def push(self, event: dict[str, Any]) -> None:
        """Sends one event record down the open subscription stream."""
        self.push_raw(record(event))

    def push_raw(self, data: bytes) -> None:
        """Sends raw bytes (one HTTP chunk) down the open subscription stream."""
        self._to_stream(data)

    def close_stream(self) -> None:
        """Ends the open subscription stream (the client sees EOF)."""
        self._to_stream(None)

    def _to_stream(self, item: bytes | None) -> None:
        queue, loop = self._stream_queue, self._loop
        if queue is None or loop is None:
            return
        if threading.current_thread() is self._thread:
            queue.put_nowait(item)
        else:
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def calls_of(self, call_type: str) -> list[dict[str, Any]]:
        """Every recorded call of one type, oldest first."""
        with self._cond:
            return [c for c in self.calls if c.get("type") == call_type]

    # -- server side -----------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            call = json.loads(await request.read())
        except ValueError as e:
            return web.Response(status=400, text=f"Failed to parse body into JSON: {e}")
        with self._cond:
            self.calls.append(call)
            self.headers.append(dict(request.headers))
            self._cond.notify_all()
        if call.get("type") == "SUBSCRIBE":
            if self._subscribe_script:
                status, text, headers = self._subscribe_script.popleft()
                return web.Response(status=status, text=text, headers=headers)
            return await self._subscribe(request, call)
        if request.headers.get("Mesos-Stream-Id") != self.stream_id:
            return web.Response(status=400, text="The stream ID included in this request ...")
        if call.get("type") in self._call_script:
            status, text = self._call_script[call["type"]]
            return web.Response(status=status, text=text)
        self._simulate(call)
        return web.Response(status=202)

    async def _subscribe(self, request: web.Request, call: dict) -> web.StreamResponse:
        if self._stream_queue is not None:
            self._stream_queue.put_nowait(None)  # one subscriber at a time, like Mesos
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._stream_queue = queue
        self.subscriptions += 1
        self.stream_id = str(uuid.uuid4())
        response = web.StreamResponse(
            headers={"Content-Type": "application/json", "Mesos-Stream-Id": self.stream_id}
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        framework_id = call.get("framework_id", {}).get("value", self.framework_id)
        subscribed = {
            "framework_id": {"value": framework_id},
            "heartbeat_interval_seconds": self.heartbeat_interval,
        }
        await response.write(record({"type": "SUBSCRIBED", "subscribed": subscribed}))
        await response.write(record({"type": "HEARTBEAT"}))
        self._send_offers()
        while True:
            try:
                timeout = self.heartbeat_interval if self.heartbeats else None
                item = await asyncio.wait_for(queue.get(), timeout)
            except TimeoutError:
                item = record({"type": "HEARTBEAT"})
            if item is None:
                break
            try:
                await response.write(item)
            except (ConnectionError, RuntimeError):
                break
        if self._stream_queue is queue:
            self._stream_queue = None
        return response

    # -- the simulated cluster -------------------------------------------------------------

    def _send_offers(self) -> None:
        offers = []
        for agent in self.agents:
            self._offer_seq += 1
            offers.append(
                {
                    "id": {"value": f"fake-O{self._offer_seq}"},
                    "framework_id": {"value": self.framework_id},
                    "agent_id": {"value": agent.agent_id},
                    "hostname": agent.hostname,
                    "allocation_info": {"role": "*"},
                    "resources": parse_resources(agent.resources).to_json(
                        "pre", allocation_role="*"
                    ),
                }
            )
        if offers:
            self.push({"type": "OFFERS", "offers": {"offers": offers}})

    def _simulate(self, call: dict[str, Any]) -> None:
        kind = call.get("type")
        if kind == "ACCEPT":
            for operation in call["accept"].get("operations", []):
                for task in operation.get("launch", {}).get("task_infos", []):
                    for state, message in self.task_outcome(task):
                        self.push_update(task["task_id"]["value"], task["agent_id"], state, message)
        elif kind == "KILL":
            task_id = call["kill"]["task_id"]["value"]
            agent_id = call["kill"].get("agent_id", {"value": "unknown"})
            self.push_update(task_id, agent_id, "TASK_KILLED", "Command terminated with signal")
        elif kind == "REVIVE":
            self._send_offers()
        elif kind == "TEARDOWN":
            self.close_stream()

    def push_update(
        self, task_id: str, agent_id: dict[str, str], state: str, message: str | None
    ) -> None:
        """Sends an UPDATE event the way an agent's status update reaches a scheduler."""
        status: dict[str, Any] = {
            "task_id": {"value": task_id},
            "state": state,
            "source": "SOURCE_EXECUTOR",
            "agent_id": agent_id,
            "executor_id": {"value": task_id},
            "timestamp": time.time(),
            "uuid": base64.b64encode(uuid.uuid4().bytes).decode(),
        }
        if message:
            status["message"] = message
        self.push({"type": "UPDATE", "update": {"status": status}})
