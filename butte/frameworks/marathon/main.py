"""``butte marathon``: the service scheduler's asyncio shell.

It owns the I/O around the pure `Planner`: the REST API (aiohttp, `api.Api`), the
subscription to the master (`butte.client.scheduler.SchedulerClient`, the public scheduler
API only), the embedded SQLite store under ``--work_dir`` and the event stream hub. Every
input is one planner call followed by `Service.flush`: the changed records are written in
one transaction first, then the effects (launches, kills, declines, reconciliation ...) go
to the master and events to ``/v2/events`` subscribers.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import resource
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

import butte
from butte.cli.common import CliError
from butte.client.scheduler import CallError, SchedulerClient, SchedulerError
from butte.coord.url import ZkUrl, parse_zk_url
from butte.coord.zookeeper import ZooKeeperContender
from butte.core.tls import TlsError, client_context_for
from butte.core.tls_listener import TlsListen, listen_runner
from butte.frameworks.marathon.api import PROXY_HEADER, Api
from butte.frameworks.marathon.callbacks import STORE_KEY as CALLBACKS_KEY
from butte.frameworks.marathon.callbacks import HttpCallbacks, callback_url_problem
from butte.frameworks.marathon.model import (
    Decline,
    Effect,
    Kill,
    Launch,
    LaunchGroup,
    Probe,
    Publish,
    Reconcile,
    Revive,
    Suppress,
    iso,
)
from butte.frameworks.marathon.planner import GPU_BEHAVIORS, ApiError, Planner, PlannerConfig
from butte.frameworks.marathon.pods import PodManager
from butte.frameworks.marathon.store import SqliteStore, ZooKeeperStore
from butte.operator_common import quiet_bad_requests

log = logging.getLogger("butte.marathon")
SUMMARY = "run a Marathon-compatible service scheduler (REST API v2) as a framework"
MARATHON_VERSION = "1.11.0"
TICK_SECONDS = 0.2
# The full pass (every app, timers) is for time-driven changes: kill retries, unreachable
# and launch timeouts, backoff expiry; what events changed is handled at the next tick.
FULL_PASS_SECONDS = 3.0
HUB_QUEUE_LIMIT = 10_000
PROBE_BODY_LIMIT = 64 * 1024  # of a readiness check's answer kept (preserveLastResponse)
_FORWARDED = frozenset({"content-type", "accept"})


class EventHub:
    """Fans events out to the ``/v2/events`` streams; a stream too slow to keep up is
    closed rather than letting its queue grow without bound."""

    def __init__(self) -> None:
        self._queues: set[asyncio.Queue[dict[str, Any] | None]] = set()

    def subscribe(self) -> asyncio.Queue[dict[str, Any] | None]:
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(HUB_QUEUE_LIMIT)
        self._queues.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[dict[str, Any] | None]) -> None:
        self._queues.discard(queue)

    def publish(self, event: dict[str, Any]) -> None:
        for queue in list(self._queues):
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                self._queues.discard(queue)
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()
                queue.put_nowait(None)

    def close(self) -> None:
        for queue in list(self._queues):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(None)
        self._queues.clear()


class Service:
    """One running Marathon: see the module docstring."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.planner = Planner(
            PlannerConfig(
                role=args.mesos_role,
                task_launch_timeout=args.task_launch_timeout / 1000,
                maintenance_mode=args.maintenance_mode,
                draining_seconds=args.draining_seconds,
                gpu_scheduling_behavior=args.gpu_scheduling_behavior,
                reservation_timeout=args.task_reservation_timeout / 1000,
            )
        )
        # /v2/pods, beside the planner's apps
        self.pods = PodManager(
            args.mesos_role, args.task_launch_timeout / 1000, self.planner.reservations
        )
        self.hub = EventHub()
        # --event_subscriber http_callback: every event is also POSTed to the subscribers.
        self.callbacks: HttpCallbacks | None = None
        if args.event_subscriber == "http_callback":
            self.callbacks = HttpCallbacks(args.http_endpoints)
        # --zk: the store is ZooKeeper's, opened once elected; else SQLite under --work_dir.
        self.store: SqliteStore | ZooKeeperStore | None = None
        self.zk: ZkUrl | None = parse_zk_url(args.zk) if args.zk else None
        self.contender: ZooKeeperContender | None = None
        self.leading = False
        self.leader: str | None = None
        self._elected = asyncio.Event()
        self._lost: str | None = None
        self._main: asyncio.Task[Any] | None = None
        self._proxy_session: aiohttp.ClientSession | None = None
        self._probe_session: aiohttp.ClientSession | None = None
        # "https" when LIBPROCESS_SSL_ENABLED: the REST API (and the leader it proxies to).
        self.scheme = "http"
        self._offer_calls = asyncio.Lock()
        self._pending_acks: list[dict[str, Any]] = []
        # --zk: the records a standby kept current while it waited (None: read at election)
        self._preloaded: list[tuple[str, str, Any]] | None = None
        # task ids with no status from the master since the last SUBSCRIBED
        self._unreconciled: set[str] = set()
        self._flush_scheduled = False
        self.client: SchedulerClient | None = None
        self.subscribed = False
        self.started_at = time.time()
        self.counters = {
            "offers": 0,
            "offers_declined": 0,
            "tasks_launched": 0,
            "kills": 0,
            "status_updates": 0,
            "call_errors": 0,
        }
        self._tasks: set[asyncio.Task[Any]] = set()

    @staticmethod
    def now() -> float:
        return time.time()

    def own_address(self) -> str:
        return f"{self.args.hostname}:{self.args.http_port}"

    def leader_address(self) -> str | None:
        """``host:port`` of the leading instance's REST API (None: none elected)."""
        return self.own_address() if self.leading else self.leader

    # -- election (--zk) -------------------------------------------------------------------

    def leader_changed(self, leader: Any) -> None:
        if leader and "hostname" in leader and "port" in leader:
            self.leader = f"{leader['hostname']}:{leader['port']}"
        else:
            self.leader = None
        log.info("leader is now %s", self.leader)

    def elected(self) -> None:
        self._elected.set()

    def leadership_lost(self, reason: str) -> None:
        """Stops acting at once: the process exits (a supervisor restarts it as a standby)."""
        log.error("leadership lost: %s; exiting", reason)
        self._lost = reason
        self.leading = False
        if self._main is not None:
            self._main.cancel()

    def abdicate(self) -> None:
        """``DELETE /v2/leader``: leave the election (the process exits once the answer is
        out; a supervisor restarts it as a standby)."""
        asyncio.get_running_loop().call_later(0.2, self.leadership_lost, "abdicated")

    async def proxy(self, request: web.Request, leader: str) -> web.Response:
        """Forwards one API request to the leader and returns its answer as it came."""
        if self._proxy_session is None:
            self._proxy_session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
        headers = {k: v for k, v in request.headers.items() if k.lower() in _FORWARDED}
        headers[PROXY_HEADER] = self.own_address()
        body = await request.read()
        url = f"{self.scheme}://{leader}{request.path_qs}"
        ssl_context = (
            client_context_for(self.scheme, os.environ) if self.scheme == "https" else None
        )
        try:
            async with self._proxy_session.request(
                request.method,
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                ssl=ssl_context or True,
            ) as r:
                data = await r.read()
                out = {"X-Marathon-Leader": f"{self.scheme}://{leader}"}
                if "Content-Type" in r.headers:
                    out["Content-Type"] = r.headers["Content-Type"]
                return web.Response(status=r.status, body=data, headers=out)
        except (aiohttp.ClientError, TimeoutError) as e:
            # As Marathon's request forwarder (AsyncUrlConnectionRequestForwarder): 502 with
            # its message, whether the connection was refused or the leader did not answer.
            log.warning(
                "proxying %s %s to the leader %s failed: %s", request.method, url, leader, e
            )
            raise ApiError(502, {"message": "Connection to leader refused."}) from None

    async def _await_election(self) -> None:
        assert self.zk is not None
        election = dataclasses.replace(self.zk, path=self.zk.path.rstrip("/") + "/leader")
        session = self.args.zk_session_timeout / 1000
        self.contender = ZooKeeperContender(election, session, connect_timeout=30.0)
        member = {"hostname": self.args.hostname, "port": self.args.http_port}
        await self.contender.start(member, self)
        contender = self.contender
        store = ZooKeeperStore(contender.client, self.zk.path, lambda: contender.own_path)
        loop = asyncio.get_running_loop()
        following = True
        try:
            # The state is read now, while standing by, and kept current: on election only
            # what changed since is read (see ZooKeeperStore).
            await loop.run_in_executor(None, store.follow)
        except Exception as e:  # then it is read in full on election
            log.warning("cannot follow the stored state (%s); it is read on election", e)
            following = False
        log.info("standing by for leadership at %s", self.args.zk)
        await self._elected.wait()
        start = time.monotonic()
        if following:
            self._preloaded = await loop.run_in_executor(None, store.catch_up)
            log.info(
                "elected: %d records caught up in %.3f s",
                len(self._preloaded),
                time.monotonic() - start,
            )
        self.store = store

    # -- flush -----------------------------------------------------------------------------

    async def flush(self) -> None:
        """`flush_now` for coroutines (API handlers)."""
        self.flush_now()

    def flush_now(self) -> None:
        """Stores the dirty records, then carries out the effects (see the module doc).
        Calls to the master are not awaited here: the client pipelines the calls made in
        one loop iteration, and waiting for each answer would serialize the whole service
        on the master's round trips."""
        if not self.leading or self.store is None:
            raise ApiError(503, {"message": "not leading"})
        self.store.write(self.planner.take_dirty() + self.pods.take_dirty())
        for effect in self.planner.take_effects() + self.pods.take_effects():
            if isinstance(effect, Publish):
                self.publish(effect.event)
            elif isinstance(effect, Probe):  # sent by this process itself, not the master
                self._spawn(self._probe(effect))
            elif self.client is not None and self.subscribed:
                self._spawn(self._call(effect))
        acks, self._pending_acks = self._pending_acks, []
        for status in acks:  # their changes are stored now
            self._spawn(self._acknowledge(status))

    def publish(self, event: dict[str, Any]) -> None:
        """An event for the ``/v2/events`` streams and the HTTP callback subscribers."""
        self.hub.publish(event)
        if self.callbacks is not None:
            self.callbacks.publish(event)

    def event_subscription(self, url: str, subscribe: bool, client_ip: str | None) -> dict:
        """Adds (or removes) an HTTP callback subscriber, durably, and publishes Marathon's
        ``subscribe_event`` (``unsubscribe_event``), which is also the answer."""
        assert self.callbacks is not None
        if not self.leading or self.store is None:
            raise ApiError(503, {"message": "not leading"})
        changed = (self.callbacks.subscribe if subscribe else self.callbacks.unsubscribe)(url)
        if changed:
            self.store.write([("meta", CALLBACKS_KEY, list(self.callbacks.urls))])
        event = {
            "eventType": "subscribe_event" if subscribe else "unsubscribe_event",
            "callbackUrl": url,
            "clientIp": client_ip,
            "timestamp": iso(self.now()),
        }
        self.publish(event)
        return event

    def _flush_soon(self) -> None:
        """Coalesces the flushes of a burst of scheduler events into one: the events queued
        in the client are all taken in one loop iteration, then this runs once (one store
        transaction instead of one per status update)."""
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_scheduled = False
        if self.leading:
            self.flush_now()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)  # a strong reference until done
        task.add_done_callback(self._tasks.discard)

    async def _call(self, effect: Effect) -> None:
        client = self.client
        assert client is not None
        try:
            await _EFFECTS[type(effect)](self, client, effect)
        except CallError as e:
            self.counters["call_errors"] += 1
            log.warning("%s", e)
            if isinstance(effect, Launch | LaunchGroup):
                # Whether the master took them is unknown: ask (an unknown task comes back
                # as TASK_GONE/UNKNOWN and is replaced; a launched one keeps running).
                infos = effect.tasks if isinstance(effect, Launch) else _members(effect)
                tasks = [(t["task_id"]["value"], effect.agent_id) for t in infos]
                if tasks:  # (none: only operations, and an empty list asks for every task)
                    with contextlib.suppress(CallError):
                        await client.reconcile(tasks)

    async def _probe(self, e: Probe) -> None:
        """Sends one readiness check and hands the answer to the planner."""
        if self._probe_session is None:
            self._probe_session = aiohttp.ClientSession()
        status, message, content_type, body = None, "", None, None
        try:
            timeout = aiohttp.ClientTimeout(total=e.timeout)
            # An HTTPS check does not verify the task's certificate, as Marathon's does not
            # (its readiness checker's SSL context is a disabled one).
            async with self._probe_session.get(
                e.url, timeout=timeout, allow_redirects=False, ssl=False
            ) as r:
                status, content_type = r.status, r.headers.get("Content-Type")
                if e.check.get("preserveLastResponse"):
                    body = (await r.content.read(PROBE_BODY_LIMIT)).decode(errors="replace")
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            message = f"{type(err).__name__}: {err}"
        if self.leading:
            self.planner.readiness(e.task_id, status, message, self.now(), content_type, body)
            self.flush_now()

    async def _acknowledge(self, status: dict[str, Any]) -> None:
        assert self.client is not None
        try:
            await self.client.acknowledge_status(status)
        except CallError as e:
            log.warning("acknowledgement failed: %s", e)

    async def _launch(self, client: SchedulerClient, e: Launch) -> None:
        self.counters["tasks_launched"] += len(e.tasks)
        operations = list(e.operations)
        if e.tasks:
            operations.append({"type": "LAUNCH", "launch": {"task_infos": e.tasks}})
        await client.accept([e.offer_id], operations, refuse_seconds=1.0)

    async def _launch_group(self, client: SchedulerClient, e: LaunchGroup) -> None:
        self.counters["tasks_launched"] += len(_members(e))
        operations = list(e.operations)
        operations += [
            {
                "type": "LAUNCH_GROUP",
                "launch_group": {"executor": executor, "task_group": {"tasks": tasks}},
            }
            for executor, tasks in e.groups
        ]
        await client.accept([e.offer_id], operations, refuse_seconds=1.0)

    async def _decline(self, client: SchedulerClient, e: Decline) -> None:
        self.counters["offers_declined"] += len(e.offer_ids)
        await client.decline(e.offer_ids, e.refuse_seconds)

    async def _kill(self, client: SchedulerClient, e: Kill) -> None:
        self.counters["kills"] += 1
        await client.kill(e.task_id, e.agent_id, e.grace_seconds)

    async def _reconcile(self, client: SchedulerClient, e: Reconcile) -> None:
        await client.reconcile(list(e.tasks))

    async def _revive(self, client: SchedulerClient, e: Revive) -> None:
        async with self._offer_calls:  # in the order decided: a late SUPPRESS would starve
            await client.revive()

    async def _suppress(self, client: SchedulerClient, e: Suppress) -> None:
        async with self._offer_calls:
            await client.suppress()

    # -- scheduler events ------------------------------------------------------------------

    async def on_event(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        now = self.now()
        if kind == "SUBSCRIBED":
            self.subscribed = True
            framework_id = event["subscribed"]["framework_id"]["value"]
            log.info("subscribed as framework %s", framework_id)
            self.planner.subscribed(framework_id, now)
            self.pods.subscribed(framework_id)
            self._unreconciled = set(self.planner.instances)
            await self.flush()
        elif kind == "OFFERS":
            offers = event["offers"].get("offers", [])
            self.counters["offers"] += len(offers)
            self.pods.tick(now)
            self.planner.extra_demand = self.pods.demand(now)
            self.planner.tick(now)  # decide what is wanted with what just changed
            self.planner.offers(self.pods.offers(offers, now), now)  # pods first
            self._flush_soon()
        elif kind == "UPDATE":
            status = event["update"]["status"]
            self.counters["status_updates"] += 1
            self._unreconciled.discard(status["task_id"]["value"])
            if not self.pods.status(status, now):
                self.planner.status(status, now)
            self._pending_acks.append(status)  # acknowledged once stored, by the flush
            self._flush_soon()
        elif kind == "ERROR":
            raise SchedulerError(f"the master ended the subscription: {event.get('error')}")
        # HEARTBEAT, RESCIND, FAILURE, MESSAGE, INVERSE_OFFERS: nothing to decide.

    # -- lifecycle -------------------------------------------------------------------------

    def framework_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "name": self.args.framework_name,
            "role": self.args.mesos_role,
            "checkpoint": True,
            "failover_timeout": float(self.args.failover_timeout),
            "hostname": self.args.hostname,
            "webui_url": f"{self.scheme}://{self.own_address()}/ui",
            # GPU_RESOURCES: apps may ask for `gpus` (GPU agents are offered to it at all).
            "capabilities": [
                {"type": "PARTITION_AWARE"},
                {"type": "TASK_KILLING_STATE"},
                {"type": "GPU_RESOURCES"},
            ],
        }
        if self.planner.framework_id:
            info["id"] = {"value": self.planner.framework_id}
        return info

    async def _ticker(self) -> None:
        last_full = 0.0
        while True:
            await asyncio.sleep(TICK_SECONDS)
            now = self.now()
            full = now - last_full >= FULL_PASS_SECONDS
            if full:
                last_full = now
            self.pods.tick(now)
            self.planner.extra_demand = self.pods.demand(now)
            self.planner.tick(now, full=full)
            await self.flush()

    async def run(self) -> int:
        self._main = asyncio.current_task()
        try:
            return await self._run()
        except asyncio.CancelledError:
            if self._lost is not None:
                return 1
            raise
        finally:
            for session in (self._proxy_session, self._probe_session):
                if session is not None:
                    await session.close()
            if self.contender is not None:
                await self.contender.stop()

    async def _run(self) -> int:
        try:  # LIBPROCESS_SSL_*: the REST API speaks TLS, as the master does
            tls = TlsListen.from_env(os.environ)
        except TlsError as e:
            log.error("%s", e)
            return 2
        runner = web.AppRunner(Api(self).app(), access_log=None)
        await runner.setup()
        listener = await listen_runner(runner, self.args.http_address, self.args.http_port, tls)
        self.scheme = "https" if tls is not None else "http"
        log.info("REST API on %s://%s:%d", self.scheme, self.args.http_address, self.args.http_port)
        try:
            return await self._lead()
        finally:
            listener.close()
            await runner.cleanup()

    async def _lead(self) -> int:
        if self.zk is not None:
            await self._await_election()
        else:
            self.store = SqliteStore(Path(self.args.work_dir) / "marathon.sqlite")
        store = self.store
        assert store is not None
        loop = asyncio.get_running_loop()
        loading = time.monotonic()
        records, self._preloaded = self._preloaded, None
        if records is None:
            records = await loop.run_in_executor(None, lambda: list(store.load()))
        self.planner.restore(records)
        self.pods.restore(records)
        if self.callbacks is not None:
            for kind, key, value in records:
                if kind == "meta" and key == CALLBACKS_KEY and isinstance(value, list):
                    for url in value:
                        self.callbacks.subscribe(url)
        self._unreconciled = set(self.planner.instances)
        self.leading = True
        log.info(
            "loaded %d apps, %d instances, %d deployments (%.3f s)",
            len(self.planner.apps),
            len(self.planner.instances),
            len(self.planner.deployments),
            time.monotonic() - loading,
        )
        self.client = SchedulerClient(self.args.master, self.framework_info(), retry_timeout=None)
        ticker = asyncio.create_task(self._ticker())
        try:
            await self.client.subscribe()
            async for event in self.client:
                await self.on_event(event)
            return 1
        except SchedulerError as e:
            log.error("%s", e)
            return 1
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            self.leading = False
            self.hub.close()
            if self.callbacks is not None:
                await self.callbacks.close()
            await self.client.close()
            store.close()

    # -- views -----------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        args = self.args
        return {
            "name": "marathon",
            "version": MARATHON_VERSION,
            "buildref": f"butte-{butte.__version__}",
            "elected": self.leading,
            "leader": self.leader_address(),
            "frameworkId": self.planner.framework_id,
            "marathon_config": {
                "master": args.master,
                "framework_name": args.framework_name,
                "mesos_role": args.mesos_role,
                "hostname": args.hostname,
                "checkpoint": True,
                "failover_timeout": args.failover_timeout,
                "task_launch_timeout": args.task_launch_timeout,
                "task_reservation_timeout": args.task_reservation_timeout,
                "maintenance_mode": args.maintenance_mode,
                "ha": self.zk is not None,
                "webui_url": f"{self.scheme}://{self.own_address()}/ui",
            },
            "zookeeper_config": {
                "zk": args.zk,
                "zk_timeout": args.zk_session_timeout if args.zk else None,
            },
            "http_config": {"http_port": args.http_port, "https_port": None},
            "event_subscriber": None
            if self.callbacks is None
            else {"type": "http_callback", "http_endpoints": list(self.callbacks.urls)},
        }

    def metrics(self) -> dict[str, Any]:
        p = self.planner
        rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        running = sum(1 for i in p.instances.values() if i.state == "TASK_RUNNING")
        gauges = {
            "marathon.apps.active.gauge": len(p.apps),
            "marathon.deployments.active.gauge": len(p.deployments),
            "marathon.instances.running.gauge": running,
            "marathon.instances.total.gauge": len(p.instances),
            "marathon.instances.launch-queue.gauge": sum(p.wanted.values()),
            # known tasks the master has not told about since the last subscription
            "marathon.instances.unreconciled.gauge": len(self._unreconciled & p.instances.keys()),
            "marathon.uptime.gauge": round(time.time() - self.started_at, 3),
            "process.memory.max-rss.bytes": rss_kib * 1024,
        }
        counters = {f"marathon.{k.replace('_', '-')}.counter": v for k, v in self.counters.items()}
        return {
            "version": MARATHON_VERSION,
            "gauges": {k: {"value": v} for k, v in gauges.items()},
            "counters": {k: {"count": v} for k, v in counters.items()},
            "histograms": {},
            "meters": {},
            "timers": {},
        }


# Each sender takes the effect type it is listed under (hence Any for the effect).
_EFFECTS: dict[type[Effect], Callable[[Service, SchedulerClient, Any], Awaitable[None]]] = {
    Launch: Service._launch,
    LaunchGroup: Service._launch_group,
    Decline: Service._decline,
    Kill: Service._kill,
    Reconcile: Service._reconcile,
    Revive: Service._revive,
    Suppress: Service._suppress,
}


def _members(e: LaunchGroup) -> list[dict[str, Any]]:
    """The TaskInfos of every task group of a `LaunchGroup`."""
    return [t for _, tasks in e.groups for t in tasks]


def add_flags(parser: argparse.ArgumentParser) -> None:
    """The ``butte marathon`` flags (Marathon's names)."""
    parser.add_argument(
        "--master",
        required=True,
        help="HOST:PORT of the master (several comma-separated), or zk://HOSTS/PATH",
    )
    parser.add_argument("--http_port", type=int, default=8080, help="REST API port")
    parser.add_argument("--http_address", default="0.0.0.0", help="address the REST API listens on")
    parser.add_argument(
        "--work_dir",
        default=None,
        help="directory of the embedded state store (required without --zk)",
    )
    parser.add_argument(
        "--zk",
        default=None,
        help="zk://HOSTS/PATH: state in ZooKeeper and leader election among instances",
    )
    parser.add_argument(
        "--zk_session_timeout",
        type=float,
        default=10000.0,
        help="ZooKeeper session timeout in milliseconds (--zk)",
    )
    parser.add_argument("--framework_name", default="marathon", help="framework name")
    parser.add_argument("--mesos_role", default="*", help="role to subscribe with")
    parser.add_argument(
        "--hostname", default=socket.gethostname(), help="hostname advertised to the master"
    )
    parser.add_argument(
        "--failover_timeout",
        type=float,
        default=604800.0,
        help="seconds the master keeps our tasks while we are away (default: a week)",
    )
    parser.add_argument(
        "--task_launch_timeout",
        type=float,
        default=300000.0,
        help="milliseconds a task (or a pod instance's member) may stay staging before it "
        "is killed and replaced",
    )
    parser.add_argument(
        "--task_reservation_timeout",
        type=float,
        default=20000.0,
        help="milliseconds a resident app's new reservation may wait for an offer that "
        "brings it back before it is given up and made anew (default 20000)",
    )
    maintenance = parser.add_mutually_exclusive_group()
    maintenance.add_argument(
        "--maintenance_mode",
        dest="maintenance_mode",
        action="store_true",
        default=True,
        help="(default) offers of agents in a maintenance window are not used",
    )
    maintenance.add_argument(
        "--disable_maintenance_mode",
        dest="maintenance_mode",
        action="store_false",
        help="use offers of agents in a maintenance window too (not the default)",
    )
    parser.add_argument(
        "--draining_seconds",
        type=float,
        default=0.0,
        help="seconds before a maintenance window's start from which its agents' offers are "
        "not used (default 0; no effect with --disable_maintenance_mode)",
    )
    parser.add_argument(
        "--event_subscriber",
        choices=["http_callback"],
        default=None,
        help="http_callback: POST every event as JSON to the subscribed URLs "
        "(/v2/eventSubscriptions, --http_endpoints; default: none, /v2/events only)",
    )
    parser.add_argument(
        "--http_endpoints",
        type=_callback_urls,
        default=[],
        help="comma-separated URLs subscribed from the start (with --event_subscriber "
        "http_callback)",
    )
    parser.add_argument(
        "--gpu_scheduling_behavior",
        choices=GPU_BEHAVIORS,
        default="restricted",
        help="restricted (default): apps without gpus do not take offers with GPUs; "
        "unrestricted: they do (an app's GPU_SCHEDULING_BEHAVIOR label overrides it)",
    )


def _callback_urls(text: str) -> list[str]:
    """argparse type of ``--http_endpoints``: comma-separated http(s) URLs."""
    urls = [u.strip() for u in text.split(",") if u.strip()]
    for url in urls:
        problem = callback_url_problem(url)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
    return urls


def run(args: argparse.Namespace) -> int:
    """``butte marathon`` entry point."""
    if args.zk:
        try:
            parse_zk_url(args.zk)
        except ValueError as e:
            raise CliError(f"--zk: {e}", 2) from None
        if args.zk_session_timeout <= 0:
            raise CliError("--zk_session_timeout must be positive", 2)
    elif not args.work_dir:
        raise CliError("--work_dir is required without --zk (the embedded store lives there)", 2)
    if not 0 < args.http_port < 65536:
        raise CliError("--http_port must be 1..65535", 2)
    if not 0 <= args.draining_seconds <= 10**9:
        raise CliError("--draining_seconds must be 0..1e9", 2)
    if not 0 < args.task_reservation_timeout <= 10**12:
        raise CliError("--task_reservation_timeout must be positive (milliseconds)", 2)
    if args.http_endpoints and args.event_subscriber != "http_callback":
        raise CliError("--http_endpoints needs --event_subscriber http_callback", 2)
    logging.basicConfig(
        level=os.environ.get("BUTTE_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    quiet_bad_requests()  # a malformed request (a URL over 8 KB) is one line, not a traceback
    # As `butte master` does: thousands of long-lived records make every full collection
    # walk them all; collecting less often cut the CPU of a listing or a restore by half.
    gc.set_threshold(10_000, 10, 10)
    service = Service(args)

    async def main() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await service.run()
        except asyncio.CancelledError:
            return 0

    return asyncio.run(main())
