"""The asyncio shell of ``butte chronos``: store, master link, timer, REST API, election.

One `ChronosServer` per process. As leader it loads the store into the core, subscribes to
the master with the stored framework id (reconciling every unfinished run on each
(re)subscription), wakes at the next slot, and after every core call `flush`es: the batch of
saves is written to the store first (synchronously), then the master calls leave in order.
A status update is acknowledged only after the saves it caused are durable.

With ``--zk`` several instances contend under ``<zk path>/leader`` (Mesos' election layout,
`butte.coord.zookeeper`), keep state under ``<zk path>/state``, and a standby proxies every
API request to the leader (503 while none is known). An instance that loses its ZooKeeper
session (or its candidacy) exits at once (status 1), so two schedulers never act together.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import getpass
import logging
import os
import signal
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from butte.client.scheduler import CallError, SchedulerClient, SchedulerError
from butte.core.tls import TlsError, client_context_for
from butte.core.tls_listener import TlsListen, listen_runner
from butte.frameworks.chronos import core as c
from butte.frameworks.chronos.rest import MAX_BODY, ROUTES, Handler, error, refusals
from butte.frameworks.chronos.store import SqliteStore, Store, StoreError, ZooKeeperStore

log = logging.getLogger(__name__)

FAILOVER_TIMEOUT = 7 * 86400.0
_HOP_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection"})


@dataclasses.dataclass
class Settings:
    """What the command line decides (see `butte.frameworks.chronos.main`)."""

    master: str
    http_address: str = "127.0.0.1"
    http_port: int = 4400
    work_dir: str | None = None
    zk: str | None = None
    zk_session_timeout: float = 10.0
    framework_name: str = "chronos"
    role: str = "*"
    user: str = ""
    hostname: str = ""
    failover_timeout: float = FAILOVER_TIMEOUT
    failure_retry_delay: float = 60.0


class ChronosServer:
    """One scheduler process; see the module docstring."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.core = c.ChronosCore(
            role=settings.role,
            user=settings.user,
            failure_retry_delay=settings.failure_retry_delay,
        )
        self.store: Store | None = None
        self.client: SchedulerClient | None = None
        self.framework_id: str | None = None
        self.leading = False
        self.leader_info: Mapping[str, Any] | None = None
        self.contender: Any = None
        self._pending_meta: dict[str, str] = {}
        self._acks: list[dict[str, Any]] = []  # statuses to acknowledge after the next flush
        self._flush_scheduled = False
        self._calls: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stop: asyncio.Future[int] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._proxy: aiohttp.ClientSession | None = None
        # "https" when LIBPROCESS_SSL_ENABLED: the API (and the leader a standby forwards to).
        self.scheme = "http"

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._stop = loop.create_future()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._finish, 0)
        try:  # LIBPROCESS_SSL_*: the API speaks TLS, as the master does
            tls = TlsListen.from_env(os.environ)
        except TlsError as e:
            log.error("%s", e)
            return 2
        self.scheme = "https" if tls is not None else "http"
        runner = web.AppRunner(self.make_app(), access_log=None)
        await runner.setup()
        settings = self.settings
        listener = await listen_runner(runner, settings.http_address, settings.http_port, tls)
        log.info(
            "Chronos API on %s://%s:%d", self.scheme, settings.http_address, settings.http_port
        )
        try:
            if self.settings.zk:
                await self._contend()
            else:
                assert self.settings.work_dir is not None
                path = Path(self.settings.work_dir) / "chronos.sqlite3"
                await self._lead(SqliteStore(path))
            return await self._stop
        finally:
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if self.client is not None:
                await self.client.close()
            if self.contender is not None:
                await self.contender.stop()
            if self._proxy is not None:
                await self._proxy.close()
            listener.close()
            await runner.cleanup()
            if self.store is not None:
                self.store.close()

    def _finish(self, status: int) -> None:
        if self._stop is not None and not self._stop.done():
            self._stop.set_result(status)

    def _info(self) -> dict[str, Any]:
        host = self.settings.hostname or self.settings.http_address
        return {"hostname": host, "http_port": self.settings.http_port, "pid": os.getpid()}

    async def _lead(self, store: Store) -> None:
        """Becomes the acting scheduler: load state, subscribe, start the timer."""
        self.store = store
        loop = asyncio.get_running_loop()
        meta, jobs, runs = await loop.run_in_executor(None, store.load)
        self.core.load(jobs, runs, time.time())
        self.framework_id = meta.get("framework_id")
        log.info("Leading: %d jobs, %d unfinished runs restored", len(jobs), len(runs))
        self.leading = True
        self.leader_info = self._info()
        self._tasks.append(asyncio.create_task(self._master_link()))
        self._tasks.append(asyncio.create_task(self._timer()))

    # -- election (--zk) -------------------------------------------------------------------

    async def _contend(self) -> None:
        from butte.coord.url import parse_zk_url
        from butte.coord.zookeeper import ZooKeeperContender

        assert self.settings.zk is not None
        url = parse_zk_url(self.settings.zk)
        election = dataclasses.replace(url, path=url.path.rstrip("/") + "/leader")
        self.contender = ZooKeeperContender(election, self.settings.zk_session_timeout, 10.0)
        self._state_root = url.path
        await self.contender.start(self._info(), self)

    def leader_changed(self, leader: Mapping[str, Any] | None) -> None:
        self.leader_info = leader
        log.info("Leader is now %s", leader)

    def elected(self) -> None:
        store = ZooKeeperStore(self.contender.client, self._state_root)
        self._tasks.append(asyncio.create_task(self._lead(store)))

    def leadership_lost(self, reason: str) -> None:
        # A leader must stop acting at once; a standby whose candidacy is gone could never
        # be elected again. Either way the process ends and its supervisor starts it anew.
        log.error(
            "%s (%s): exiting", "Leadership lost" if self.leading else "Left the election", reason
        )
        self._finish(1)

    # -- effects ---------------------------------------------------------------------------

    def flush(self) -> None:
        """Writes the core's saves, then sends its master calls in order."""
        effects = self.core.take_effects()
        saves = [e for e in effects if isinstance(e, c.SaveJob | c.SaveRun)]
        if (saves or self._pending_meta) and self.store is not None:
            try:
                self.store.apply(saves, self._pending_meta)
            except StoreError as e:
                log.critical("Cannot write state: %s; exiting", e)
                self._finish(1)
                raise
            self._pending_meta = {}
        for effect in effects:
            if not isinstance(effect, c.SaveJob | c.SaveRun):
                self._call(effect)
        acks, self._acks = self._acks, []
        for status in acks:
            self._ack(status)

    def wake(self) -> None:
        """The timer recomputes its next wakeup (a job was added, changed or deleted)."""
        self._wake.set()

    def _flush_soon(self) -> None:
        """One flush per event-loop iteration: a burst of status updates is processed, then
        committed in one transaction, then acknowledged."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        with contextlib.suppress(StoreError):  # flush() already stopped the process
            self.flush()

    def _call(self, effect: c.Effect) -> None:
        if self.client is None or not self.core.subscribed:
            return  # reconciliation on the next subscription covers it
        task = asyncio.create_task(self._send(self.client, effect))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _send(self, client: SchedulerClient, effect: c.Effect) -> None:
        try:
            if isinstance(effect, c.Launch):
                operation = {"type": "LAUNCH", "launch": {"task_infos": effect.tasks}}
                await client.accept([effect.offer_id], [operation], refuse_seconds=0.5)
            elif isinstance(effect, c.Decline):
                offers = [{"value": o} for o in effect.offer_ids]
                await client.decline(offers, refuse_seconds=effect.refuse_seconds)
            elif isinstance(effect, c.Kill):
                await client.kill(effect.task_id, effect.agent_id or None)
            elif isinstance(effect, c.Revive):
                await client.revive()
            elif isinstance(effect, c.Suppress):
                await client.suppress()
            elif isinstance(effect, c.Reconcile):
                await client.reconcile([(t, a or None) for t, a in effect.tasks])
        except CallError as e:
            log.warning("%s", e)
            if isinstance(effect, c.Launch):
                self._launch_failed(effect, e)

    def _launch_failed(self, effect: c.Launch, e: CallError) -> None:
        now = time.time()
        for task in effect.tasks:
            tid = task["task_id"]["value"]
            if e.status is not None and 400 <= e.status < 500:
                # Refused outright: the launch did not happen; it goes back to the queue.
                self.core.on_status(now, tid, "TASK_DROPPED", "", "REASON_INVALID_OFFERS")
            else:
                # Unknown whether the master took it: ask instead of guessing.
                self.core.out.append(c.Reconcile([(tid, task["agent_id"]["value"])]))
        self.flush()

    # -- master link -----------------------------------------------------------------------

    def _framework_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "name": self.settings.framework_name,
            "user": self.settings.user or getpass.getuser(),
            "hostname": self.settings.hostname or socket.gethostname(),
            "roles": [self.settings.role],
            "capabilities": [{"type": "MULTI_ROLE"}, {"type": "TASK_KILLING_STATE"}],
            "failover_timeout": self.settings.failover_timeout,
            "checkpoint": True,
            "webui_url": f"{self.scheme}://{self._info()['hostname']}:{self.settings.http_port}/",
        }
        if self.framework_id:
            info["id"] = {"value": self.framework_id}
        return info

    async def _master_link(self) -> None:
        self.client = SchedulerClient(
            self.settings.master, self._framework_info(), retry_timeout=None, backoff_max=2.0
        )
        try:
            await self.client.subscribe()
            async for event in self.client:
                self._on_event(event)
        except SchedulerError as e:
            log.error("Master link ended: %s", e)
            self._finish(1)
        else:
            if self._stop is not None and not self._stop.done():
                log.error("Master link ended")
                self._finish(1)

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        now = time.time()
        if kind == "SUBSCRIBED":
            fid = event["subscribed"]["framework_id"]["value"]
            if fid != self.framework_id:
                self.framework_id = fid
                self._pending_meta["framework_id"] = fid
            log.info("Subscribed as framework %s", fid)
            self.core.on_disconnected()
            self.core.on_subscribed(now)
        elif kind == "OFFERS":
            offers = [c.parse_offer(o, now) for o in event["offers"].get("offers", [])]
            self.core.on_offers(offers, now)
        elif kind == "RESCIND":
            self.core.on_rescind(event["rescind"]["offer_id"]["value"])
        elif kind == "UPDATE":
            status = event["update"]["status"]
            self.core.on_status(
                now,
                status["task_id"]["value"],
                status["state"],
                status.get("agent_id", {}).get("value", ""),
                status.get("reason", ""),
                status.get("message", ""),
            )
            if status.get("uuid"):
                self._acks.append(status)
        elif kind == "ERROR":
            log.error("Master says: %s", event.get("error", {}).get("message"))
        self._flush_soon()

    def _ack(self, status: dict[str, Any]) -> None:
        client = self.client
        if client is None:
            return

        async def ack() -> None:
            with contextlib.suppress(CallError):
                await client.acknowledge_status(status)

        task = asyncio.create_task(ack())
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)

    async def _timer(self) -> None:
        """Ticks the core at each slot (and at least every second)."""
        while True:
            now = time.time()
            self.core.tick(now)
            self.flush()
            self._wake.clear()
            delay = max(0.0, self.core.next_wakeup(time.time()) - time.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay + 0.001)

    def leader_address(self) -> str:
        leader = self.leader_info
        return f"{leader['hostname']}:{leader['http_port']}" if leader else ""

    def master_url(self) -> str:
        leader = self.client.leader if self.client is not None else ""
        return f"{self.scheme}://{leader}" if leader else ""

    # -- HTTP ------------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[refusals])
        for method, path, handler, leader_only in ROUTES:
            app.router.add_route(method, path, self._wrap(handler, leader_only))
        app.on_response_prepare.append(_allow_any_origin)
        return app

    def _wrap(self, handler: Handler, leader_only: bool) -> Any:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            if leader_only and not self.leading:
                return await self._to_leader(request)
            return await handler(self, request)

        return wrapped

    async def _to_leader(self, request: web.Request) -> web.StreamResponse:
        """A standby forwards the request to the leader and relays its answer."""
        leader = self.leader_info
        if not leader or leader.get("pid") == os.getpid():
            return error(503, "no leading chronos scheduler is known yet; retry shortly")
        url = f"{self.scheme}://{leader['hostname']}:{leader['http_port']}{request.path_qs}"
        tls = client_context_for(self.scheme, os.environ) if self.scheme == "https" else None
        if self._proxy is None:
            self._proxy = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        try:
            async with self._proxy.request(
                request.method, url, data=await request.read(), headers=headers, ssl=tls or True
            ) as answer:
                body = await answer.read()
                ctype = answer.headers.get("Content-Type")
                out = web.Response(status=answer.status, body=body)
                if ctype:
                    out.headers["Content-Type"] = ctype
                return out
        except (aiohttp.ClientError, TimeoutError) as e:
            return error(503, f"leader at {leader['hostname']}:{leader['http_port']}: {e}")


async def _allow_any_origin(request: web.Request, response: web.StreamResponse) -> None:
    """Chronos' CorsFilter, which it always installs in front of everything it serves (API,
    pages, errors, answers relayed from the leader): every answer allows any origin, so
    pages served elsewhere can read the API. Like Chronos it adds no other CORS header (no
    preflight answers)."""
    response.headers["Access-Control-Allow-Origin"] = "*"
