"""`ButteCluster`: a Dask cluster whose workers are butte tasks.

The Dask scheduler runs in this process (on the cluster's event loop, as `LocalCluster` and
dask-jobqueue run theirs); every worker is a butte task running ``dask worker`` against it,
launched on offers through the public scheduler API (`butte.client.scheduler`). The decisions
(how many workers, which to stop, what to do when one is lost) live in `butte.dask.plan`;
this module subscribes, turns offers into launches, follows task updates and carries out the
plan's effects. See docs/dask.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import math
import sys
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from dask.utils import parse_bytes
from distributed.core import Status, rpc
from distributed.deploy.cluster import Cluster
from distributed.objects import SchedulerInfo
from distributed.scheduler import Scheduler
from distributed.utils import sync

from butte.client.scheduler import CallError, SchedulerClient, SchedulerError
from butte.core import task_states
from butte.core.resources import ResourceError
from butte.dask.plan import (
    Launch,
    SchedulerLaunch,
    Stop,
    WorkerPlan,
    WorkerShape,
    place_scheduler,
    shortfall,
)
from butte.frameworks.offers import (
    FitWatch,
    OfferView,
    describe_view,
    local_address_for,
    offer_view,
    task_resources,
)

log = logging.getLogger(__name__)

# How long close() waits for killed workers to report before tearing the framework down
# (the teardown makes the master kill whatever is left).
_CLOSE_WAIT_SECONDS = 20.0
# Retiring a worker moves its data to others; after this long it is killed anyway.
_RETIRE_TIMEOUT_SECONDS = 30.0
# A worker whose scheduler is gone this long exits by itself (a crashed client process).
_DEATH_TIMEOUT = "60s"
# How long a scheduler task may take, once TASK_RUNNING, to accept connections.
_SCHEDULER_CONNECT_SECONDS = 60.0
# A scheduler task lost after it ran is replaced at most this often over the cluster's life:
# one that keeps dying (a scheduler plugin that crashes it) would otherwise loop forever.
_MAX_SCHEDULER_REPLACEMENTS = 3


def _memory_mib(value: str | int | float, what: str = "worker_memory") -> float:
    """A task's memory as given (``"1 GiB"``, bytes as a number) in MiB."""
    amount = parse_bytes(value) if isinstance(value, str) else int(value)
    if amount < 32 * 2**20:
        raise ValueError(f"{what} {value!r} is below 32 MiB")
    return math.floor(amount / 2**20)


def scheduler_task_info(
    launch: SchedulerLaunch,
    task_id: str,
    shape: WorkerShape,
    role: str,
    python: str,
    env: Mapping[str, str],
) -> dict[str, Any]:
    """The TaskInfo of a Dask scheduler run as a butte task (``scheduler_on_agent``): it
    listens on the agent's address, on the port its offer gave it, and serves its dashboard
    on the other offered port (``--no-dashboard`` when the launch has none)."""
    argv = [
        python,
        "-m",
        "distributed.cli.dask_scheduler",
        "--host",
        launch.hostname,
        "--port",
        str(launch.port),
    ]
    if launch.dashboard_port is None:
        argv.append("--no-dashboard")
    else:
        argv += ["--dashboard-address", f"{launch.hostname}:{launch.dashboard_port}"]
    command: dict[str, Any] = {"shell": False, "value": argv[0], "arguments": argv}
    if env:
        variables = [{"name": k, "value": v} for k, v in env.items()]
        command["environment"] = {"variables": variables}
    return {
        "name": f"dask scheduler {task_id}",
        "task_id": {"value": task_id},
        "agent_id": {"value": launch.agent_id},
        "resources": task_resources(shape.cpus, shape.mem, launch.ports, role),
        "command": command,
        "labels": {"labels": [{"key": "dask-scheduler", "value": launch.address}]},
    }


class ButteCluster(Cluster):
    """A Dask cluster on a butte (or Mesos) master: ``ButteCluster(master="HOST:PORT")``.

    Each worker is a butte task of ``worker_cpus`` cpus and ``worker_memory`` running
    ``dask worker`` with as many threads as it has (whole) cpus and that memory limit,
    listening on a port taken from the offer. The Dask scheduler runs in this process on
    ``scheduler_host`` (default: the address this host reaches the master from), with its
    dashboard, which is also the framework's web UI on butte's pages.

    With ``scheduler_on_agent=True`` the scheduler is a butte task too (of
    ``scheduler_cpus`` and ``scheduler_memory``), listening on a port of its offer (its
    dashboard on a second one); the cluster waits up to ``scheduler_timeout`` seconds for it.
    A scheduler task lost after it ran is replaced (on its old ports where they are offered
    again) and the workers are restarted against the new one (docs/dask.md).

    ``python`` is the interpreter the agents run workers with (default: this one, which
    suits agents that share this machine's or image's environment); it needs
    ``dask[distributed]``. ``nanny=True`` runs workers under a nanny (``Client.restart``
    needs it); by default butte itself supervises them. Use it like any Dask cluster::

        with ButteCluster("127.0.0.1:5050") as cluster, Client(cluster) as client:
            cluster.scale(4)            # or cluster.adapt(minimum=0, maximum=8)
            ...
    """

    def __init__(
        self,
        master: str,
        worker_cpus: float = 1,
        worker_memory: str | int = "1 GiB",
        role: str = "*",
        env: Mapping[str, str] | None = None,
        *,
        n_workers: int = 0,
        name: str | None = None,
        framework_name: str = "dask",
        scheduler_host: str | None = None,
        dashboard_address: str | None = ":0",
        python: str | None = None,
        nanny: bool = False,
        worker_args: Sequence[str] = (),
        connect_timeout: float = 30.0,
        scheduler_on_agent: bool = False,
        scheduler_cpus: float = 1,
        scheduler_memory: str | int = "1 GiB",
        scheduler_timeout: float = 120.0,
        asynchronous: bool = False,
        loop: Any = None,
        quiet: bool = False,
    ) -> None:
        if worker_cpus <= 0:
            raise ValueError(f"worker_cpus must be positive, got {worker_cpus!r}")
        if n_workers < 0:
            raise ValueError(f"n_workers must be at least 0, got {n_workers!r}")
        if scheduler_on_agent:
            # A scheduler task listens where its offer says: an address given here could not
            # be honoured, and is refused rather than ignored.
            if scheduler_host is not None:
                raise ValueError("scheduler_host cannot be given with scheduler_on_agent=True")
            if dashboard_address not in (":0", None):
                raise ValueError(
                    "with scheduler_on_agent=True the dashboard listens on a port of the "
                    "scheduler task's offer: dashboard_address may only be ':0' or None"
                )
            if scheduler_cpus <= 0:
                raise ValueError(f"scheduler_cpus must be positive, got {scheduler_cpus!r}")
            if scheduler_timeout <= 0:
                raise ValueError(f"scheduler_timeout must be positive, got {scheduler_timeout!r}")
        self.master = master
        self.role = role
        self.env = dict(env or {})
        self.worker_cpus = float(worker_cpus)
        self.worker_memory_mib = _memory_mib(worker_memory)
        self.nthreads = max(1, math.floor(self.worker_cpus))
        self.framework_name = framework_name
        self.scheduler_on_agent = scheduler_on_agent
        # With a scheduler task, its agent's hostname once it is placed.
        self.scheduler_host = (
            "" if scheduler_on_agent else scheduler_host or local_address_for(master)
        )
        self.dashboard_address = dashboard_address
        self.python = python or sys.executable
        self.nanny = nanny
        self.worker_args = list(worker_args)
        self.connect_timeout = connect_timeout
        self.scheduler: Scheduler | None = None
        self._client: SchedulerClient | None = None
        self._driver: asyncio.Task[None] | None = None
        self._effects: set[asyncio.Task[None]] = set()
        self._suppressed = False
        # An offer was declined for 30 s while nothing was pending: the master then offers
        # that agent to us no more until a REVIVE clears the filter.
        self._filtered = False
        self._hostnames: dict[str, str] = {}
        # Every port a worker task listens on comes from its offer (a port it picked itself
        # could be one the agent offers to another task): the worker's, its HTTP server's
        # (/health, /metrics; Dask starts one even without a dashboard) and the nanny's.
        shape = WorkerShape(self.worker_cpus, self.worker_memory_mib, 3 if nanny else 2)
        cluster_id = uuid.uuid4().hex[:8]
        # The scheduler task (scheduler_on_agent): its port and its dashboard's come from
        # its offer, as the workers' do.
        self.scheduler_shape = WorkerShape(
            float(scheduler_cpus),
            _memory_mib(scheduler_memory, "scheduler_memory"),
            1 if dashboard_address is None else 2,
        )
        self.scheduler_timeout = scheduler_timeout
        self._cluster_id = cluster_id
        self.scheduler_task_id = f"dask-{cluster_id}-scheduler"
        # How often a lost scheduler task was replaced; the one replaced last (its agent and
        # ports are preferred for the next, so that the address stays the same).
        self.scheduler_replacements = 0
        self._scheduler_replaced: SchedulerLaunch | None = None
        self._replacing = False
        self._scheduler_launch: SchedulerLaunch | None = None
        self._scheduler_running: asyncio.Future[None] | None = None
        self._scheduler_fit: FitWatch | None = None
        # The address workers are given: known once the scheduler listens.
        self._scheduler_ready: str | None = None
        self._scheduler_ended: str | None = None  # how the scheduler task ended
        self._scheduler_lacks: str | None = None  # what the last offer lacked for it
        self._plan = WorkerPlan(prefix=f"dask-{cluster_id}", shape=shape)
        self._initial_workers = n_workers
        super().__init__(asynchronous=asynchronous, loop=loop, quiet=quiet, name=name or cluster_id)
        if not self.called_from_running_loop:
            self._loop_runner.start()
            try:
                self.sync(self._start)
            except BaseException:
                self._loop_runner.stop()
                raise

    # -- what Dask's Adaptive and widgets read ---------------------------------------------

    @property
    def workers(self) -> dict[str, str]:
        """Planned workers by name -> ``"pending"`` or the agent id running it."""
        return {**{w: "pending" for w in self._plan.pending}, **self._plan.live}

    @property
    def plan(self) -> set[str]:
        return set(self._plan.planned())

    @property
    def requested(self) -> set[str]:
        return set(self._plan.live)

    @property
    def framework_id(self) -> str | None:
        return self._client.framework_id if self._client else None

    @property
    def replaced_workers(self) -> int:
        """How many workers were replaced after being lost."""
        return self._plan.replaced

    # -- life cycle ------------------------------------------------------------------------

    def __await__(self):  # noqa: ANN204 - a generator, as Cluster's own
        async def start() -> ButteCluster:
            if self.status == Status.created:
                await self._start()
            return self

        return start().__await__()

    async def _start(self) -> None:
        if self.status != Status.created:
            return
        self.status = Status.starting
        try:
            if not self.scheduler_on_agent:
                self.scheduler = await Scheduler(
                    host=self.scheduler_host,
                    port=0,
                    dashboard_address=self.dashboard_address,
                    dashboard=self.dashboard_address is not None,
                )
                self.scheduler_comm = rpc(self.scheduler.address)
            self._client = SchedulerClient(
                self.master, self._framework_info(), retry_timeout=self.connect_timeout
            )
            await self._client.subscribe()
            self._log(f"Subscribed to {self._client.leader} as {self._client.framework_id}")
            self._driver = asyncio.create_task(self._drive())
            if self.scheduler_on_agent:
                address = await self._start_scheduler_task()
                self.scheduler_comm = rpc(address)
            else:
                assert self.scheduler is not None
                address = self.scheduler.address
            self._scheduler_ready = address
            await super()._start()
            if self.scheduler_on_agent and self._scheduler_launch is not None:
                await self._announce_dashboard(self._scheduler_launch)
        except BaseException:
            self.status = Status.failed
            await self._shutdown()
            raise
        if self._initial_workers:
            self._apply_scale(self._initial_workers)

    def _framework_info(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "user": getpass.getuser(),
            "name": self.framework_name,
            "role": self.role,
            "failover_timeout": 0.0,  # our tasks go when this process does
            "capabilities": [{"type": "TASK_KILLING_STATE"}],
        }
        if self.scheduler is not None:
            port = self.scheduler.services.get("dashboard")
            if port is not None:
                info["webui_url"] = f"http://{self.scheduler_host}:{port.port}/status"
        return info

    # -- the scheduler as a task (scheduler_on_agent) --------------------------------------

    async def _start_scheduler_task(self) -> str:
        """Waits for an offer that holds the scheduler task, launches it there and waits
        until it accepts connections; returns its address. Says every little while what it
        waits for (as `FitWatch` paces it); raises TimeoutError after ``scheduler_timeout``
        and RuntimeError when the task ends before it listens."""
        loop = asyncio.get_running_loop()
        self._scheduler_running = loop.create_future()
        self._scheduler_fit = FitWatch(started=time.monotonic())
        await self._sync_offers()
        deadline = time.monotonic() + self.scheduler_timeout
        while not self._scheduler_running.done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(
                    f"the Dask scheduler task was not running within {self.scheduler_timeout:g}s:"
                    f" {self._scheduler_waiting_note()}"
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._scheduler_running), min(left, 1.0))
            if self._scheduler_launch is None and self._scheduler_fit.note_due(time.monotonic()):
                self._log(self._scheduler_waiting_note())
        self._scheduler_running.result()  # raises when the task ended before running
        assert self._scheduler_launch is not None
        address = self._scheduler_launch.address
        # TASK_RUNNING means the process started, not that it listens yet.
        connect_deadline = time.monotonic() + _SCHEDULER_CONNECT_SECONDS
        while True:
            try:
                async with rpc(address) as probe:
                    await asyncio.wait_for(probe.identity(), 5.0)
                break
            except (OSError, TimeoutError) as e:
                if self._scheduler_ended is not None:
                    raise RuntimeError(self._scheduler_ended) from None
                if time.monotonic() > connect_deadline:
                    raise TimeoutError(
                        f"the Dask scheduler task runs but {address} did not answer within "
                        f"{_SCHEDULER_CONNECT_SECONDS:g}s: {e}"
                    ) from None
                await asyncio.sleep(0.2)
        self._log(f"The Dask scheduler task listens on {address}")
        return address

    def _scheduler_waiting_note(self) -> str:
        """Why the scheduler task is not placed yet: what it needs, the largest offer."""
        shape = self.scheduler_shape
        fit = self._scheduler_fit
        largest = fit.largest.describe() if fit is not None else "no offer received yet"
        lacked = f"; the last offer lacked {self._scheduler_lacks}" if self._scheduler_lacks else ""
        return (
            f"waiting for an offer of {shape.cpus:g} cpus, {shape.mem:g} MiB mem and "
            f"{shape.ports} port(s) for the Dask scheduler task; {largest}{lacked}"
        )

    def _scheduler_wanted(self) -> bool:
        """Whether offers are wanted for the scheduler task (not placed yet, still wanted)."""
        return (
            self._scheduler_running is not None
            and self._scheduler_launch is None
            and not self._scheduler_running.done()
        )

    async def _use_offer_for_scheduler(self, offer: dict[str, Any], view: OfferView) -> bool:
        """Launches the scheduler task on this offer if it holds it; whether it did."""
        assert self._client is not None and self._scheduler_running is not None
        if self._scheduler_fit is not None:
            self._scheduler_fit.largest.saw(view)
        launch = place_scheduler(view, self.scheduler_shape, self._scheduler_replaced)
        if launch is None:
            self._scheduler_lacks = shortfall(view, self.scheduler_shape)
            log.debug(
                "offer %s (%s) lacks %s", view.offer_id, describe_view(view), self._scheduler_lacks
            )
            return False
        task = scheduler_task_info(
            launch, self.scheduler_task_id, self.scheduler_shape, view.role, self.python, self.env
        )
        self._scheduler_launch = launch
        self.scheduler_host = launch.hostname
        try:
            await self._client.launch(offer, [task], refuse_seconds=1.0)
        except CallError as e:
            self._scheduler_running.set_exception(
                RuntimeError(f"the master refused the Dask scheduler task: {e}")
            )
            return True
        self._log(f"Launching the Dask scheduler task on {launch.hostname} at {launch.address}")
        return True

    async def _on_scheduler_update(self, status: dict[str, Any]) -> None:
        state = status["state"]
        detail = status.get("message") or status.get("reason") or ""
        running = self._scheduler_running
        if state == "TASK_RUNNING":
            if running is not None and not running.done():
                running.set_result(None)
            return
        if not task_states.is_terminal(state):
            return
        self._scheduler_ended = f"the Dask scheduler task ended {state}: {detail}".rstrip(": ")
        self._log(self._scheduler_ended)
        if running is not None and not running.done():
            running.set_exception(
                RuntimeError(f"the Dask scheduler task ended {state} before running: {detail}")
            )
        elif self.status == Status.running and not self._replacing:
            self._replacing = True
            self._spawn(self._replace_scheduler())
        elif self.status not in (Status.closing, Status.closed) and not self._replacing:
            # Still starting: the start fails with this task's end (`_start_scheduler_task`).
            self._log("The Dask scheduler is gone: stopping the workers")
            self._carry_out(self._plan.close(), retire=False)

    async def _replace_scheduler(self) -> None:
        """Replaces a scheduler task lost after it ran: a new one on offered ports (its
        predecessor's agent and ports where offered again: the address stays the same and
        clients reconnect by themselves), every worker restarted against it, and the
        cluster's ``scheduler_address``, ``scheduler_info`` and dashboard pointed at it. When
        that cannot be done (too many replacements, no offer in ``scheduler_timeout``, the
        new task fails), the workers are stopped instead."""
        try:
            if self.scheduler_replacements >= _MAX_SCHEDULER_REPLACEMENTS:
                self._log(
                    f"The Dask scheduler was replaced {self.scheduler_replacements} time(s) "
                    "already: stopping the workers"
                )
                self._carry_out(self._plan.close(), retire=False)
                return
            self.scheduler_replacements += 1
            self._log("Replacing the Dask scheduler task; its workers restart against the new one")
            # Workers are launched only once the new scheduler listens (`_use_offer`).
            self._scheduler_ready = None
            self._carry_out(self._plan.restart(), retire=False)
            self._scheduler_replaced = self._scheduler_launch
            self._scheduler_launch = None
            self._scheduler_ended = None
            self._scheduler_lacks = None
            # A new task id: updates still coming for the old task cannot be mistaken.
            self.scheduler_task_id = (
                f"dask-{self._cluster_id}-scheduler-{self.scheduler_replacements}"
            )
            try:
                address = await self._start_scheduler_task()
            except (TimeoutError, RuntimeError) as e:
                self._log(f"Cannot replace the Dask scheduler ({e}): stopping the workers")
                self._carry_out(self._plan.close(), retire=False)
                return
            previous = self.scheduler_address
            old = self.scheduler_comm
            self.scheduler_comm = rpc(address)
            if old is not None:
                await old.close_rpc()
            try:
                await self._watch_scheduler()
            except OSError as e:  # the new scheduler went away at once
                self._log(f"Cannot reach the new Dask scheduler ({e}): stopping the workers")
                self._carry_out(self._plan.close(), retire=False)
                return
            self._scheduler_ready = address
            if self._scheduler_launch is not None:
                await self._announce_dashboard(self._scheduler_launch)
            same = (
                "the same address: clients reconnect"
                if address == previous
                else (f"a new address (was {previous}): connect clients again, Client(cluster)")
            )
            self._log(f"The Dask scheduler was replaced at {address}, {same}")
            await self._sync_offers()
        finally:
            self._replacing = False

    async def _watch_scheduler(self) -> None:
        """Subscribes to the (new) scheduler's worker status as `Cluster._start` does, so that
        ``scheduler_info`` (workers, dashboard link) follows it."""
        comm = await self.scheduler_comm.live_comm()
        comm.name = "Cluster worker status"
        await comm.write({"op": "subscribe_worker_status"})
        self.scheduler_info = SchedulerInfo(await comm.read())
        old = self._watch_worker_status_comm
        self._watch_worker_status_comm = comm
        self._watch_worker_status_task = asyncio.ensure_future(self._watch_worker_status(comm))
        if old is not None:
            with contextlib.suppress(Exception):
                await old.close()

    async def _announce_dashboard(self, launch: SchedulerLaunch) -> None:
        """Links the scheduler task's dashboard as the framework's web UI."""
        if launch.dashboard_port is None or self._client is None:
            return
        info = dict(self._client.framework_info)
        info["webui_url"] = f"http://{launch.hostname}:{launch.dashboard_port}/status"
        try:
            await self._client.update_framework(info)
        except CallError as e:
            self._log(f"Warning: cannot set the framework's web UI: {e}")

    def _update_worker_status(self, op: str, msg: Any) -> None:
        # distributed's status watcher can hear of a worker's removal before its addition
        # reached scheduler_info; its base method then raises KeyError and the watcher dies,
        # failing close(). A worker we never listed has nothing to remove.
        if op == "remove" and msg not in self.scheduler_info.get("workers", {}):
            return
        super()._update_worker_status(op, msg)

    async def _close(self) -> None:
        if self.status in (Status.closing, Status.closed):
            return
        self.status = Status.closing
        with contextlib.suppress(AttributeError):
            self._adaptive.stop()
        stops = self._plan.close()
        self._carry_out(stops, retire=False)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_CLOSE_WAIT_SECONDS):
                while not self._plan.done() and self._driver and not self._driver.done():
                    await asyncio.sleep(0.05)
        await super()._close()
        await self._shutdown()

    async def _shutdown(self) -> None:
        """Tears the framework down (the master kills any task left) and stops the
        scheduler."""
        if self._client is not None:
            with contextlib.suppress(SchedulerError):
                await self._client.teardown()
            await self._client.close()
        for task in [self._driver, *self._effects]:
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self.scheduler_comm is not None:
            await self.scheduler_comm.close_rpc()
        if self.scheduler is not None:
            await self.scheduler.close()
        self.status = Status.closed

    def close(self, timeout: float | None = None) -> Any:
        result = super().close(timeout)
        if not self.asynchronous:
            self._loop_runner.stop()
        return result

    # -- scaling ---------------------------------------------------------------------------

    def scale(self, n: int = 0, memory: str | None = None, cores: float | None = None) -> None:
        """Wants ``n`` workers (or enough for ``cores`` threads / ``memory``, whichever
        needs more). Shrinking retires the newest workers at the scheduler first."""
        if cores is not None:
            n = max(n, math.ceil(cores / self.nthreads))
        if memory is not None:
            n = max(n, math.ceil(parse_bytes(memory) / (self.worker_memory_mib * 2**20)))
        self._on_loop(self._apply_scale, n)

    def scale_down(self, workers: Iterable[str]) -> None:
        """Stops these workers (by name; Dask's Adaptive calls this after retiring them)."""
        self._on_loop(self._apply_scale_down, list(workers))

    def _on_loop(self, fn: Any, *args: Any) -> None:
        """Runs ``fn`` on the cluster's event loop, where the plan lives, and returns when it
        has run."""
        if self.called_from_running_loop:
            fn(*args)
            return

        async def call() -> None:
            fn(*args)

        assert self.loop is not None
        sync(self.loop, call)

    def _connected(self) -> set[str]:
        return {w.get("name") for w in self.scheduler_info.get("workers", {}).values()}

    def _apply_scale(self, n: int) -> None:
        self._carry_out(self._plan.scale(n, self._connected()))

    def _apply_scale_down(self, names: list[str]) -> None:
        # Adaptive has retired them already.
        self._carry_out(self._plan.scale_down(names, self._connected()), retire=False)

    def _carry_out(self, stops: list[Stop], retire: bool = True) -> None:
        if stops:
            self._spawn(self._stop_workers(stops, retire))
        self._spawn(self._sync_offers())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._effects.add(task)
        task.add_done_callback(self._effects.discard)

    async def _stop_workers(self, stops: list[Stop], retire: bool) -> None:
        names = [s.name for s in stops if s.retire]
        if retire and names and self.scheduler_comm is not None:
            self._log(f"Retiring workers {names}")
            with contextlib.suppress(Exception):
                async with asyncio.timeout(_RETIRE_TIMEOUT_SECONDS):
                    await self.scheduler_comm.retire_workers(
                        names=names, remove=True, close_workers=True
                    )
        for stop in stops:
            if stop.agent_id is not None:
                await self._kill(stop.name, stop.agent_id)

    async def _kill(self, name: str, agent_id: str | None) -> None:
        if self._client is None:
            return
        try:
            await self._client.kill(name, agent_id)
        except SchedulerError as e:
            self._log(f"Killing {name} failed: {e}")

    async def _sync_offers(self) -> None:
        """Revives offers while workers are pending (also after a long decline, whose filter
        only a REVIVE clears), suppresses them otherwise."""
        if self._client is None:
            return
        # Workers wait for their scheduler: offers for them only once it listens.
        wanted = self._scheduler_wanted() or (
            self._plan.wants_offers() and self._scheduler_ready is not None
        )
        try:
            if wanted and (self._suppressed or self._filtered):
                self._suppressed = self._filtered = False
                await self._client.revive()
            elif not wanted and not self._suppressed:
                self._suppressed = True
                await self._client.suppress()
        except CallError as e:
            self._log(f"Warning: {e}")

    # -- events ----------------------------------------------------------------------------

    async def _drive(self) -> None:
        """Handles the master's events until the subscription ends."""
        assert self._client is not None
        try:
            async for event in self._client:
                await self._handle(event)
        except SchedulerError as e:
            self._log(f"Lost the master: {e}")
        if self.status not in (Status.closing, Status.closed):
            self._log("The master ended the subscription; workers are no longer managed")

    async def _handle(self, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "OFFERS":
            offers = event["offers"].get("offers", [])
            if self._scheduler_replaced is not None and self._scheduler_wanted():
                # A replacement scheduler tries its predecessor's agent first (same address).
                agent = self._scheduler_replaced.agent_id
                offers = sorted(offers, key=lambda o: o.get("agent_id", {}).get("value") != agent)
            for offer in offers:
                await self._use_offer(offer)
            await self._sync_offers()
        elif kind == "UPDATE":
            await self._on_update(event["update"]["status"])
        elif kind == "SUBSCRIBED" and (
            self._plan.live or self._plan.stopping or self._scheduler_launch is not None
        ):
            assert self._client is not None
            tasks = [*self._plan.live.items(), *self._plan.stopping.items()]
            if self._scheduler_launch is not None and self._scheduler_ended is None:
                tasks.append((self.scheduler_task_id, self._scheduler_launch.agent_id))
            await self._client.reconcile(tasks)
        elif kind == "FAILURE" and "executor_id" not in event.get("failure", {}):
            agent = event["failure"].get("agent_id", {}).get("value", "?")
            self._log(f"Agent {self._hostnames.get(agent, agent)} was lost")
        elif kind == "ERROR":
            self._log(f"Master error: {event.get('error', {}).get('message')}")

    async def _use_offer(self, offer: dict[str, Any]) -> None:
        assert self._client is not None
        try:
            view = offer_view(offer, self.role)
        except ResourceError as e:
            self._log(f"Ignoring offer {offer['id']['value']}: {e}")
            launches: list[Launch] = []
        else:
            self._hostnames[view.agent_id] = view.hostname
            if self._scheduler_wanted() and await self._use_offer_for_scheduler(offer, view):
                return
            # Workers are placed once their scheduler listens (its address is in their
            # command line).
            launches = self._plan.place(view) if self._scheduler_ready is not None else []
        try:
            if launches:
                tasks = [self._task_info(launch, view.role) for launch in launches]
                await self._client.launch(offer, tasks, refuse_seconds=1.0)
                for launch in launches:
                    self._log(f"Launching {launch.name} on {launch.hostname}")
            else:
                wanted = self._plan.wants_offers() or self._scheduler_wanted()
                refuse = 1.0 if wanted else 30.0
                await self._client.decline([offer], refuse_seconds=refuse)
                # Set once the master has the filter, so that a REVIVE (the OFFERS handler
                # syncs after this) cannot overtake the decline it must undo.
                self._filtered = self._filtered or refuse > 1.0
        except CallError as e:
            self._log(f"Warning: {e}")
            self._plan.launch_failed(launch.name for launch in launches)

    def _task_info(self, launch: Launch, role: str) -> dict[str, Any]:
        scheduler = self._scheduler_ready
        assert scheduler is not None
        argv = [
            self.python,
            "-m",
            "distributed.cli.dask_worker",
            scheduler,
            "--name",
            launch.name,
            "--nthreads",
            str(self.nthreads),
            "--memory-limit",
            str(int(self.worker_memory_mib * 2**20)),
            "--host",
            launch.hostname,
            "--worker-port",
            str(launch.ports[0]),
            "--dashboard-address",
            f"{launch.hostname}:{launch.ports[1]}",
            "--no-dashboard",
            "--local-directory",
            ".",  # the task's sandbox
            "--death-timeout",
            _DEATH_TIMEOUT,
        ]
        if self.nanny:
            argv += ["--nanny", "--nanny-port", str(launch.ports[2])]
        else:
            argv.append("--no-nanny")
        argv += self.worker_args
        command: dict[str, Any] = {"shell": False, "value": argv[0], "arguments": argv}
        if self.env:
            variables = [{"name": k, "value": v} for k, v in self.env.items()]
            command["environment"] = {"variables": variables}
        shape = self._plan.shape
        return {
            "name": f"dask worker {launch.name}",
            "task_id": {"value": launch.name},
            "agent_id": {"value": launch.agent_id},
            "resources": task_resources(shape.cpus, shape.mem, launch.ports, role),
            "command": command,
            "labels": {"labels": [{"key": "dask-scheduler", "value": scheduler}]},
        }

    async def _on_update(self, status: dict[str, Any]) -> None:
        assert self._client is not None
        name = status["task_id"]["value"]
        if name == self.scheduler_task_id:
            await self._on_scheduler_update(status)
            with contextlib.suppress(CallError):
                await self._client.acknowledge_status(status)
            await self._sync_offers()
            return
        state = status["state"]
        before, gave_up = len(self._plan.pending), self._plan.gave_up
        strays = self._plan.update(name, state)
        if state not in ("TASK_RUNNING", "TASK_STAGING", "TASK_STARTING"):
            detail = status.get("message") or status.get("reason") or ""
            self._log(f"{name} {state} {detail}".rstrip())
        if len(self._plan.pending) > before:
            self._log(f"Replacing lost worker {name}")
        if self._plan.gave_up and not gave_up:
            self._log("Workers keep failing before they ever run; not replacing them")
        for stray in strays:
            await self._kill(stray.name, status.get("agent_id", {}).get("value"))
        with contextlib.suppress(CallError):
            await self._client.acknowledge_status(status)
        await self._sync_offers()

    def _log(self, message: str) -> None:
        log.info("%s", message)
        super()._log(message)

    def __repr__(self) -> str:
        return (
            f"ButteCluster({self.master!r}, {self.scheduler_address!r}, workers={len(self.plan)})"
        )
