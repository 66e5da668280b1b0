"""The asyncio shell of ``butte mpi``: one MPI job as a framework (docs/mpi.md).

It subscribes with `butte.client.scheduler.SchedulerClient`, feeds offers, status updates,
the launcher's exit and the clock to the pure `GangPlanner`, and carries out its effects:
ACCEPT/DECLINE/KILL/SUPPRESS/REVIVE calls, and ``mpirun`` as a child process whose remote
shell is `butte.frameworks.mpi.launcher`, talking to the node tasks through the job's
`Rendezvous` service. mpirun's output (every rank's, forwarded by the MPI daemons) goes to
this process's stdout/stderr; progress notes go to stderr prefixed ``butte mpi:``.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import random
import shlex
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from butte.client.operator import MasterUnreachable as OperatorUnreachable
from butte.client.operator import OperatorError
from butte.client.scheduler import (
    CallError,
    MasterUnreachable,
    SchedulerClient,
    SchedulerError,
    SubscriptionError,
)
from butte.core import task_states
from butte.core.resources import ResourceError, Resources, parse_resources
from butte.frameworks.mpi import gang
from butte.frameworks.mpi.rendezvous import Rendezvous
from butte.frameworks.offers import (
    AgentCapacity,
    FitWatch,
    OfferView,
    local_address_for,
    offer_role,
    plain_resources,
    read_agent_capacities,
)

TICK_SECONDS = 0.2
FAILOVER_SECONDS = 30.0
STOP_GRACE_SECONDS = 5.0


class MpiJobError(Exception):
    """The job could not be run at all (bad setup, master unreachable); exit status 2."""


@dataclass(frozen=True)
class MpiSpec:
    """One ``butte mpi`` invocation."""

    master: str
    program: tuple[str, ...]
    gang: gang.GangSpec
    name: str = "mpi"
    role: str = "*"
    impl: str = "openmpi"
    mpirun: str | None = None  # None: mpirun (openmpi) or mpiexec.hydra (mpich)
    mpirun_args: tuple[str, ...] = ()
    advertise_ip: str | None = None  # None: the address this host uses to reach the master
    python: str = sys.executable
    timeout: float | None = None
    connect_timeout: float = 10.0


def offer_view(offer: dict[str, Any]) -> gang.Offer:
    """The planner's view of an offer: its plain (unreserved-or-role, non-volume) scalars
    and its unreserved ports (a node task's ports are launched unreserved)."""
    plain = plain_resources(offer)
    scalars = [r for r in plain if r.get("type", "SCALAR") == "SCALAR"]
    ports = [r for r in plain if r.get("name") == "ports" and r.get("type") == "RANGES"]
    return gang.Offer(
        offer["id"]["value"],
        offer["agent_id"]["value"],
        offer.get("hostname", "?"),
        Resources.from_json(scalars) + Resources.from_json(ports).unreserved(),
    )


def offer_size(offer: dict[str, Any]) -> OfferView:
    """What an offer holds in cpus, memory and ports, for "largest offer so far" notes (an
    offer to the job's role holds only what the role may use, reserved or not)."""
    resources = Resources.from_json(plain_resources(offer))
    return OfferView(
        offer["id"]["value"],
        offer["agent_id"]["value"],
        offer.get("hostname", "?"),
        offer_role(offer),
        resources.scalar("cpus"),
        resources.scalar("mem"),
        tuple(resources.ranges("ports")),
    )


def capacity_offers(agents: list[AgentCapacity]) -> list[gang.Offer]:
    """The agents' capacities as the planner reads offers: what a whole idle agent offers."""
    return [gang.Offer("", a.agent_id, a.hostname, a.resources) for a in agents]


def _rankio(spec: MpiSpec) -> list[str]:
    return [spec.python, "-m", "butte.frameworks.mpi.rankio", *spec.program]


def openmpi_argv(
    spec: MpiSpec, nodes: tuple[gang.Node, ...], hostfile: str, rsh: str, loopback: bool
) -> list[str]:
    """Open MPI's ``mpirun`` command line for the gang's nodes."""
    argv = [spec.mpirun or "mpirun"]
    if os.geteuid() == 0:
        argv.append("--allow-run-as-root")
    argv += [
        # orted must stay in the foreground: its node task lives exactly as long as it.
        "--leave-session-attached",
        "--mca", "plm_rsh_agent", rsh,
        # Only this host has the launcher: daemons must not start further daemons.
        "--mca", "plm_rsh_no_tree_spawn", "1",
        "--hostfile", hostfile,
        "-np", str(spec.gang.ranks),
    ]  # fmt: skip
    if len({n.hostname for n in nodes}) < len(nodes):
        # Two "nodes" on one host would both create the same shared-memory segments.
        argv += ["--mca", "btl", "tcp,self"]
    return argv + list(spec.mpirun_args) + _rankio(spec)


def mpich_argv(
    spec: MpiSpec, nodes: tuple[gang.Node, ...], hostfile: str, rsh: str, loopback: bool
) -> list[str]:
    """MPICH's ``mpiexec.hydra`` command line: its proxies start through the launcher."""
    argv = [spec.mpirun or "mpiexec.hydra", "-launcher", "ssh", "-launcher-exec", rsh]
    argv += ["-f", hostfile, "-n", str(spec.gang.ranks)]
    if loopback:
        argv += ["-iface", "lo"]  # proxies connect back to this loopback address
    return argv + list(spec.mpirun_args) + _rankio(spec)


def hostfile_text(impl: str, nodes: tuple[gang.Node, ...]) -> str:
    if impl == "mpich":
        return "".join(f"{n.name}:{n.ranks}\n" for n in nodes)
    return "".join(f"{n.name} slots={n.ranks}\n" for n in nodes)


LAUNCHERS = {"openmpi": openmpi_argv, "mpich": mpich_argv}


@dataclass
class MpiJob:
    """One running ``butte mpi`` (see the module docstring)."""

    spec: MpiSpec
    info: Callable[[str], None]
    planner: gang.GangPlanner = field(init=False)
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    offers: dict[str, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[str, tuple[int, int]] = field(default_factory=dict)  # id -> (attempt, node)
    events: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    launcher: asyncio.subprocess.Process | None = None
    rendezvous: Rendezvous | None = None
    workdir: str = ""
    result: gang.Done | None = None
    fit: FitWatch = field(default_factory=lambda: FitWatch(started=time.monotonic()))
    capacity_read: asyncio.Task[None] | None = None

    def __post_init__(self) -> None:
        # A random run of ports per node: see gang.node_ports and butte.frameworks.mpi.ports.
        self.planner = gang.GangPlanner(self.spec.gang, port_pick=random.random)

    def framework_info(self) -> dict[str, Any]:
        return {
            "user": getpass.getuser(),
            "name": f"butte-mpi {self.spec.name}",
            "role": self.spec.role,
            # A short failover: a stream that breaks for a moment does not end the job, and
            # the tasks of a `butte mpi` that died do not outlive it by long.
            "failover_timeout": FAILOVER_SECONDS,
        }

    def task_id(self, attempt: int, index: int) -> str:
        return f"{self.spec.name}.{self.run_id}.a{attempt}.node{index}"

    # -- main loop ----------------------------------------------------------------------------

    async def run(self) -> int:
        client = SchedulerClient(
            self.spec.master,
            self.framework_info(),
            retry_timeout=self.spec.connect_timeout,
            backoff_max=1.0,
        )
        try:
            await client.subscribe()
        except (MasterUnreachable, SubscriptionError) as e:
            await client.close()
            raise MpiJobError(f"cannot subscribe to {self.spec.master}: {e}") from None
        self.info(
            f"subscribed as {client.framework_id}; gang of {self.spec.gang.ranks} rank(s), "
            f"{self.spec.gang.rank_resources.to_text()} each"
        )
        self.workdir = tempfile.mkdtemp(prefix="butte-mpi-")
        pump = asyncio.create_task(self._pump(client))
        loop = asyncio.get_running_loop()
        handled = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self.events.put_nowait, ("signal", sig))
                handled.append(sig)
        try:
            return await self._drive(client)
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            if self.capacity_read is not None:
                self.capacity_read.cancel()
            await self._stop_launcher_now()
            if self.rendezvous is not None:
                await self.rendezvous.stop()
            with contextlib.suppress(SchedulerError):
                await client.teardown()
            await client.close()
            _remove_tree(self.workdir)

    async def _pump(self, client: SchedulerClient) -> None:
        try:
            async for event in client:
                await self.events.put(("event", event))
        except SchedulerError as e:
            await self.events.put(("lost", str(e)))
        await self.events.put(("lost", "the subscription ended"))

    async def _drive(self, client: SchedulerClient) -> int:
        deadline = None if self.spec.timeout is None else time.monotonic() + self.spec.timeout
        while self.result is None:
            try:
                kind, value = await asyncio.wait_for(self.events.get(), TICK_SECONDS)
            except TimeoutError:
                kind, value = "tick", None
            now = time.monotonic()
            effects = self._dispatch(kind, value, now)
            if deadline is not None and now >= deadline:
                deadline = None
                timeout = self.spec.timeout
                effects += self.planner.abort(f"time limit of {timeout:g}s reached", 124)
            if kind == "event":
                await self._acknowledge_or_reconcile(client, value)
            self._watch_fit(client, now)
            await self._apply(client, effects + self.planner.on_tick(now, random.random()))
        self.info(
            f"job {'succeeded' if self.result.exit_status == 0 else 'failed'}: "
            f"{self.result.message}"
        )
        return self.result.exit_status

    async def _acknowledge_or_reconcile(self, client: SchedulerClient, event: dict) -> None:
        """Acknowledges updates; after a re-subscription (the event stream broke and the
        client subscribed again within the failover timeout) asks where the tasks stand."""
        with contextlib.suppress(CallError):
            if event.get("type") == "UPDATE":
                await client.acknowledge_status(event["update"]["status"])
            elif event.get("type") == "SUBSCRIBED" and self.tasks:
                agents = {i: n.agent_id for i, n in enumerate(self.planner.nodes)}
                await client.reconcile(
                    [(task_id, agents.get(node)) for task_id, (_, node) in self.tasks.items()]
                )

    def _dispatch(self, kind: str, value: Any, now: float) -> list[gang.Effect]:
        if kind == "event":
            return self._on_event(value, now)
        if kind == "launcher":
            self.info(f"mpirun exited with status {value}")
            return self.planner.on_launcher_exit(value, now)
        if kind == "rank_failed":
            return self.planner.on_rank_failed(*value)
        if kind == "signal":
            name = signal.Signals(value).name
            return self.planner.abort(f"interrupted by {name}", 128 + int(value))
        if kind == "lost":
            return self.planner.abort(f"lost the master: {value}")
        if kind == "capacity":
            return self._on_capacity(value)
        return []

    # -- a job that does not fit ----------------------------------------------------------------

    def _waiting(self) -> bool:
        """Whether the job waits for offers to gather its gang (not launched, not ending)."""
        return self.planner.phase in (gang.Phase.GATHERING, gang.Phase.BACKOFF)

    def _watch_fit(self, client: SchedulerClient, now: float) -> None:
        """While the gang waits for offers: says every little while what it waits for and
        the largest offer seen, and reads the agents' capacities (in the background) to
        give up on a job that no registered agents could ever hold."""
        if not self._waiting():
            return
        if self.fit.note_due(now):
            rank = self.spec.gang.describe()
            self.info(
                f"waiting for {self.spec.gang.ranks} rank slot(s) of {rank}; "
                f"{self.fit.largest.describe()}{self.fit.capacity_note()}"
            )
        reading = self.capacity_read is not None and not self.capacity_read.done()
        if not reading and self.fit.check_due(now):
            self.capacity_read = asyncio.create_task(self._read_capacity(client.leader))

    async def _read_capacity(self, leader: str) -> None:
        """Reads what every registered agent could offer; the answer (or why there is none)
        comes back as a "capacity" event."""
        try:
            agents = await asyncio.to_thread(
                read_agent_capacities, self.spec.master, leader, self.spec.role, reserved=True
            )
        except (OperatorUnreachable, OperatorError, ValueError) as e:  # ValueError: not JSON
            await self.events.put(("capacity", str(e)))
            return
        await self.events.put(("capacity", capacity_offers(agents)))

    def _on_capacity(self, answer: list[gang.Offer] | str) -> list[gang.Effect]:
        if not self._waiting():
            return []
        if isinstance(answer, str):
            if self.fit.unreadable is None:
                self.fit.unreadable = answer
                self.info(
                    f"cannot read the cluster's agents ({answer}); waiting for offers without "
                    "knowing whether any agent could hold the job"
                )
            return []
        agents = len({a.agent_id for a in answer})
        give_up = self.fit.judged(gang.shortfall(self.spec.gang, answer), agents)
        if give_up is None:
            return []
        return self.planner.abort(
            f"the job cannot run on this cluster: {give_up}; {self.fit.largest.describe()}", 2
        )

    def _on_event(self, event: dict[str, Any], now: float) -> list[gang.Effect]:
        kind = event.get("type")
        if kind == "OFFERS":
            offers = event["offers"].get("offers", [])
            views = []
            for offer in offers:
                try:
                    views.append(offer_view(offer))
                except (KeyError, ResourceError) as e:
                    self.info(f"warning: ignoring a malformed offer: {e}")
                    continue
                self.offers[offer["id"]["value"]] = offer
                with contextlib.suppress(ResourceError):
                    self.fit.largest.saw(offer_size(offer))
            return self.planner.on_offers(views, now)
        if kind == "RESCIND":
            offer_id = event["rescind"]["offer_id"]["value"]
            self.offers.pop(offer_id, None)
            return self.planner.on_rescind(offer_id)
        if kind == "UPDATE":
            return self._on_update(event["update"]["status"], now)
        if kind == "ERROR":
            return self.planner.abort(f"the master ended the subscription: {event}")
        return []

    def _on_update(self, status: dict[str, Any], now: float) -> list[gang.Effect]:
        where = self.tasks.get(status["task_id"]["value"])
        if where is None or where[0] != self.planner.attempt:
            return []
        index = where[1]
        state = status["state"]
        message = status.get("message") or status.get("reason") or ""
        node = self.planner.nodes[index]
        self.info(f"{node.name} on {node.hostname}: {state}{': ' + message if message else ''}")
        return self.planner.on_update(index, state, message, now)

    # -- effects ------------------------------------------------------------------------------

    async def _apply(self, client: SchedulerClient, effects: list[gang.Effect]) -> None:
        for effect in effects:
            await _EFFECTS[type(effect)](self, client, effect)

    async def _launch(self, client: SchedulerClient, effect: gang.Launch) -> None:
        for node in effect.nodes:
            task_id = self.task_id(effect.attempt, node.index)
            self.tasks[task_id] = (effect.attempt, node.index)
            offers = [self.offers.pop(o) for o in node.offer_ids if o in self.offers]
            role = offer_role(offers[0], self.spec.role)
            if node.ports:
                who = "ranks" if self.spec.impl == "mpich" else "MPI daemon and ranks"
                self.info(
                    f"{node.name} on {node.hostname}: ports {node.ports[0]}-{node.ports[-1]} "
                    f"for its {who}"
                )
            try:
                await client.accept(node.offer_ids, [self._launch_operation(task_id, node, role)])
            except CallError as e:
                # The whole gang is retried: tell the planner this node never started.
                self.events.put_nowait(
                    ("event", _synthetic_update(task_id, node, f"launch refused: {e}"))
                )

    def _launch_operation(self, task_id: str, node: gang.Node, role: str) -> dict[str, Any]:
        need = Resources()
        for _ in range(node.ranks):
            need = need + self.spec.gang.rank_resources
        env = {
            "BUTTE_MPI_RENDEZVOUS": self._rendezvous_url(),
            "BUTTE_MPI_NODE": node.name,
            "BUTTE_MPI_TOKEN": self._node_token(node.name),
        }
        if node.ports:
            ranges = ",".join(f"{p}-{p}" for p in node.ports)
            need = need + parse_resources(f"ports:[{ranges}]")
            # The proxy hands them out on the agent (butte.frameworks.mpi.ports).
            env["BUTTE_MPI_PORTS"] = ",".join(str(p) for p in node.ports)
            env["BUTTE_MPI_IMPL"] = self.spec.impl
        task = {
            "name": f"{self.spec.name} {node.name}",
            "task_id": {"value": task_id},
            "agent_id": {"value": node.agent_id},
            "resources": need.to_json("pre", allocation_role=role),
            "command": {
                "shell": False,
                "value": self.spec.python,
                "arguments": [self.spec.python, "-m", "butte.frameworks.mpi.proxy"],
                "environment": {"variables": [{"name": k, "value": v} for k, v in env.items()]},
            },
        }
        return {"type": "LAUNCH", "launch": {"task_infos": [task]}}

    def _rendezvous_url(self) -> str:
        assert self.rendezvous is not None
        return f"http://{self._advertise_ip()}:{self.rendezvous.port}"

    def _advertise_ip(self) -> str:
        return self.spec.advertise_ip or local_address_for(self.spec.master)

    def _node_token(self, name: str) -> str:
        assert self.rendezvous is not None
        return self.rendezvous.node_token(name)

    async def _decline(self, client: SchedulerClient, effect: gang.Decline) -> None:
        for offer_id in effect.offer_ids:
            self.offers.pop(offer_id, None)
        with contextlib.suppress(CallError):
            await client.decline(effect.offer_ids, refuse_seconds=effect.refuse_seconds)

    async def _kill(self, client: SchedulerClient, effect: gang.Kill) -> None:
        for index in effect.node_indexes:
            node = self.planner.nodes[index]
            with contextlib.suppress(CallError):
                await client.kill(self.task_id(self.planner.attempt, index), node.agent_id)

    async def _revive(self, client: SchedulerClient, effect: gang.Revive) -> None:
        with contextlib.suppress(CallError):
            await client.revive()

    async def _suppress(self, client: SchedulerClient, effect: gang.Suppress) -> None:
        with contextlib.suppress(CallError):
            await client.suppress()

    async def _progress(self, client: SchedulerClient, effect: gang.Progress) -> None:
        self.info(effect.message)

    async def _done(self, client: SchedulerClient, effect: gang.Done) -> None:
        self.result = effect

    async def _start_launcher(self, client: SchedulerClient, effect: gang.StartLauncher) -> None:
        assert self.rendezvous is not None
        hostfile = os.path.join(self.workdir, "hostfile")
        with open(hostfile, "w") as f:
            f.write(hostfile_text(self.spec.impl, effect.nodes))
        # The launch token is only in this 0700 script, not in mpirun's environment, which
        # the ranks may inherit.
        rsh = os.path.join(self.workdir, "rsh")
        fd = os.open(rsh, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
        with os.fdopen(fd, "w") as f:
            f.write(
                "#!/bin/sh\n"
                f"BUTTE_MPI_RENDEZVOUS={shlex.quote(self._rendezvous_url())} "
                f"BUTTE_MPI_LAUNCH_TOKEN={self.rendezvous.launch_token} "
                f"exec {shlex.quote(self.spec.python)} "
                '-m butte.frameworks.mpi.launcher "$@"\n'
            )
        env = dict(os.environ)
        loopback = self._advertise_ip().startswith("127.")
        if loopback and self.spec.impl == "openmpi":
            # Everything is on this host: keep MPI's own traffic on loopback too.
            env.setdefault("OMPI_MCA_oob_tcp_if_include", "lo")
            env.setdefault("OMPI_MCA_btl_tcp_if_include", "lo")
        argv = LAUNCHERS[self.spec.impl](self.spec, effect.nodes, hostfile, rsh, loopback)
        self.info("running " + shlex.join(argv))
        try:
            self.launcher = await asyncio.create_subprocess_exec(
                *argv, env=env, stdin=asyncio.subprocess.DEVNULL, start_new_session=True
            )
        except OSError as e:
            self.events.put_nowait(("launcher", 127))
            self.info(f"cannot start {argv[0]}: {e}")
            return
        asyncio.create_task(self._watch_launcher(self.launcher))

    async def _watch_launcher(self, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        await self.events.put(("launcher", code if code >= 0 else 128 - code))

    async def _stop_launcher(self, client: SchedulerClient, effect: gang.StopLauncher) -> None:
        process = self.launcher
        if process is None or process.returncode is not None:
            return
        self.info(f"stopping mpirun: {effect.reason}")
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        asyncio.create_task(self._kill_launcher_later(process))

    async def _kill_launcher_later(self, process: asyncio.subprocess.Process) -> None:
        await asyncio.sleep(STOP_GRACE_SECONDS)
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)

    async def _stop_launcher_now(self) -> None:
        process = self.launcher
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

    async def prepare(self) -> None:
        """Starts the rendezvous service (before any node task can ask it)."""
        names = [f"node{i}" for i in range(self.spec.gang.ranks)]
        self.rendezvous = Rendezvous(
            names,
            lambda node, rank, status: self.events.put_nowait(
                ("rank_failed", (node, rank, status))
            ),
        )
        await self.rendezvous.start(self._advertise_ip())


def _synthetic_update(task_id: str, node: gang.Node, message: str) -> dict[str, Any]:
    return {
        "type": "UPDATE",
        "update": {
            "status": {
                "task_id": {"value": task_id},
                "state": task_states.ERROR,
                "message": message,
            }
        },
    }


def _remove_tree(path: str) -> None:
    if not path:
        return
    for name in os.listdir(path):
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(path, name))
    with contextlib.suppress(OSError):
        os.rmdir(path)


_EFFECTS: dict[type, Any] = {
    gang.Launch: MpiJob._launch,
    gang.Decline: MpiJob._decline,
    gang.Kill: MpiJob._kill,
    gang.Revive: MpiJob._revive,
    gang.Suppress: MpiJob._suppress,
    gang.StartLauncher: MpiJob._start_launcher,
    gang.StopLauncher: MpiJob._stop_launcher,
    gang.Progress: MpiJob._progress,
    gang.Done: MpiJob._done,
}


async def run_job(spec: MpiSpec, info: Callable[[str], None]) -> int:
    """Runs one MPI job to its end; returns its exit status."""
    job = MpiJob(spec, info)
    await job.prepare()
    try:
        return await job.run()
    finally:
        if job.rendezvous is not None:
            await job.rendezvous.stop()
