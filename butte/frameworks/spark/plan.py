"""Which offers become the Spark standalone master and workers: the pure part of
``butte spark-submit``.

`SparkPlan` places one master (two ports: RPC and web UI) on the first offer that holds it,
then workers (two ports each) on that and later offers until the workers' cores reach the
requested total. A worker takes as many cores as the offer has and the request still needs
(a multiple of ``executor_cores`` when that is set, since standalone workers start
``cores // executor_cores`` executors of an application), and memory for its executors plus
the worker daemon. A worker lost before the job ends is dropped from the count, so later
offers replace it; a lost master, or workers failing before they ever ran ``max_failures``
times in a row, make the plan `failed` (the shell then stops the driver). Nothing here does
I/O; `butte.frameworks.spark.submit` carries the decisions out.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from butte.core import task_states
from butte.frameworks.offers import OfferView, describe_view, take_ports

_MEMORY = re.compile(r"^\s*(\d+)\s*([kmgt]?)b?\s*$", re.IGNORECASE)
_MEMORY_SCALE = {"k": 1 / 1024, "": 1, "m": 1, "g": 1024, "t": 1024 * 1024}


def memory_mib(text: str) -> int:
    """Spark's memory strings (``512m``, ``1g``, ``2048`` = MiB) in MiB; ValueError else."""
    match = _MEMORY.match(text)
    if not match:
        raise ValueError(f"bad memory size {text!r} (expected e.g. 512m or 1g)")
    mib = math.ceil(int(match.group(1)) * _MEMORY_SCALE[match.group(2).lower()])
    if mib < 1:
        raise ValueError(f"memory size {text!r} is below 1 MiB")
    return mib


def executor_overhead_mib(executor_mib: int) -> int:
    """Memory an executor JVM uses beyond its heap (Spark's own rule for YARN/Kubernetes)."""
    return max(384, executor_mib // 10)


@dataclass(frozen=True)
class SparkRequest:
    """What the application asked for, and what the daemons take."""

    total_cores: int
    executor_mib: int
    executor_cores: int | None = None  # None: one executor per worker with all its cores
    daemon_mib: int = 512  # heap of the master and of each worker daemon
    master_cpus: float = 0.5
    worker_daemon_cpus: float = 0.0
    max_failures: int = 3

    def __post_init__(self) -> None:
        if self.total_cores < 1:
            raise ValueError("total executor cores must be at least 1")
        if self.executor_cores is not None and not 1 <= self.executor_cores <= self.total_cores:
            raise ValueError(
                f"executor cores ({self.executor_cores}) must be between 1 and the total "
                f"executor cores ({self.total_cores})"
            )


@dataclass(frozen=True)
class Launch:
    """Start ``name`` (the master, or a worker with ``cores`` and ``memory_mib`` for its
    executors) on the offer's agent with these resources and ports."""

    name: str
    role: str  # "master" or "worker"
    agent_id: str
    hostname: str
    cpus: float
    mem: float
    ports: tuple[int, int]
    cores: int = 0
    memory_mib: int = 0


@dataclass
class _Worker:
    agent_id: str
    cores: int
    running: bool = False


@dataclass
class SparkPlan:
    """The Spark cluster of one ``butte spark-submit``; see the module docstring."""

    run_id: str
    request: SparkRequest
    master: Launch | None = None
    master_running: bool = False
    workers: dict[str, _Worker] = field(default_factory=dict)
    failed: str | None = None
    closed: bool = False
    failures: int = 0
    lost_workers: int = 0
    _counter: int = 0
    _master_ended: bool = False

    # -- state -----------------------------------------------------------------------------

    @property
    def master_url(self) -> str | None:
        """``spark://host:port`` once the master is placed."""
        return f"spark://{self.master.hostname}:{self.master.ports[0]}" if self.master else None

    @property
    def webui_url(self) -> str | None:
        return f"http://{self.master.hostname}:{self.master.ports[1]}" if self.master else None

    def cores(self) -> int:
        """Cores of the workers launched and not lost."""
        return sum(w.cores for w in self.workers.values())

    def wants_offers(self) -> bool:
        if self.failed or self.closed:
            return False
        return self.master is None or self.cores() < self.request.total_cores

    def live_tasks(self) -> dict[str, str]:
        """Every launched task that has not ended: name -> agent id."""
        tasks = {name: w.agent_id for name, w in self.workers.items()}
        if self.master is not None and not self._master_ended:
            tasks[self.master.name] = self.master.agent_id
        return tasks

    # -- decisions -------------------------------------------------------------------------

    def place(self, offer: OfferView) -> list[Launch]:
        """The master and/or workers this offer holds."""
        if not self.wants_offers():
            return []
        cpus, mem, ports = offer.cpus, offer.mem, list(offer.ports)
        launches: list[Launch] = []
        req = self.request
        if self.master is None:
            master_mem = req.daemon_mib + 128  # JVM beyond its heap
            if cpus + 1e-9 < req.master_cpus or mem < master_mem or offer.port_count() < 2:
                return []
            taken, ports = take_ports(ports, 2)
            self.master = Launch(
                f"spark-master-{self.run_id}",
                "master",
                offer.agent_id,
                offer.hostname,
                req.master_cpus,
                master_mem,
                (taken[0], taken[1]),
            )
            launches.append(self.master)
            cpus -= req.master_cpus
            mem -= master_mem
        while self.cores() < req.total_cores and sum(b - a + 1 for a, b in ports) >= 2:
            sized = self._size_worker(cpus, mem)
            if sized is None:
                break
            cores, task_mem, executors_mib = sized
            taken, ports = take_ports(ports, 2)
            name = f"spark-worker-{self.run_id}-{self._counter}"
            self._counter += 1
            task_cpus = cores + req.worker_daemon_cpus
            launch = Launch(
                name,
                "worker",
                offer.agent_id,
                offer.hostname,
                task_cpus,
                task_mem,
                (taken[0], taken[1]),
                cores,
                executors_mib,
            )
            self.workers[name] = _Worker(offer.agent_id, cores)
            launches.append(launch)
            cpus -= task_cpus
            mem -= task_mem
        return launches

    def _size_worker(self, cpus: float, mem: float) -> tuple[int, int, int] | None:
        """(cores, task memory, executors' memory) of a worker fitting in ``cpus``/``mem``,
        or None when not even one executor fits."""
        req = self.request
        step = req.executor_cores or 1
        per_executor = req.executor_mib + executor_overhead_mib(req.executor_mib)
        daemon = req.daemon_mib + 128
        need = req.total_cores - self.cores()
        cores = min(math.floor(cpus - req.worker_daemon_cpus + 1e-9), need)
        if req.executor_cores is not None:
            # whole executors only; memory may bound how many
            executors = min(cores // step, max(0, math.floor((mem - daemon) / per_executor)))
            cores = executors * step
            if executors < 1:
                return None
            return cores, daemon + executors * per_executor, executors * req.executor_mib
        if cores < 1 or mem < daemon + per_executor:
            return None
        return cores, daemon + per_executor, req.executor_mib

    # -- what the cluster can hold ---------------------------------------------------------

    def master_needs(self) -> tuple[float, int]:
        """(cpus, MiB) of the Spark master task (it takes two ports too)."""
        return self.request.master_cpus, self.request.daemon_mib + 128

    def smallest_worker(self) -> tuple[float, int]:
        """(cpus, MiB) of the smallest worker task that runs an executor: one executor of
        ``executor_cores`` (else one core) with its memory and overhead, and the worker
        daemon (it takes two ports too)."""
        req = self.request
        cores = req.executor_cores or 1
        executor = req.executor_mib + executor_overhead_mib(req.executor_mib)
        return cores + req.worker_daemon_cpus, req.daemon_mib + 128 + executor

    def waiting_for(self) -> str:
        """What the Spark cluster waits for, in words, for the "waiting for ..." notes."""
        if self.master is None:
            cpus, mem = self.master_needs()
            return f"an offer for the Spark master ({cpus:g} cpus, {mem} MiB mem, 2 ports)"
        cpus, mem = self.smallest_worker()
        return (
            f"an offer for a Spark worker (at least {cpus:g} cpus, {mem} MiB mem, 2 ports for "
            f"one executor of {self.request.executor_cores or 1} core(s) and "
            f"{self.request.executor_mib} MiB, with the worker daemon)"
        )

    def shortfall(self, agents: list[OfferView]) -> str | None:
        """Why the Spark cluster can never start on these agents, given as offers of whole
        idle agents (`butte.frameworks.offers.agent_capacities`): no agent holds the
        master, or none holds a worker with one executor beside it. None when they could,
        once a worker is placed, and while no agent is registered (one may still come)."""
        if not agents or self.workers or self.failed or self.closed:
            return None
        m_cpus, m_mem = self.master_needs()
        w_cpus, w_mem = self.smallest_worker()

        def fits(view: OfferView, cpus: float, mem: float, ports: int) -> bool:
            return view.cpus + 1e-9 >= cpus and view.mem >= mem and view.port_count() >= ports

        if self.master is not None:
            # The master holds its share of its agent for as long as it runs.
            masters = [a for a in agents if a.agent_id == self.master.agent_id]
            if not masters:
                return None  # its agent is gone: the master's end fails the run
        else:
            masters = [a for a in agents if fits(a, m_cpus, m_mem, 2)]
            if not masters:
                return (
                    f"the Spark master needs {m_cpus:g} cpus, {m_mem} MiB mem and 2 ports, "
                    f"more than any of the {len(agents)} registered agent(s) has (the largest: "
                    f"{_largest(agents)})"
                )
        for worker in agents:
            if not fits(worker, w_cpus, w_mem, 2):
                continue
            if any(m.agent_id != worker.agent_id for m in masters):
                return None  # the master on another agent
            if fits(worker, w_cpus + m_cpus, w_mem + m_mem, 4):
                return None  # both on this one
        what = f"{self.request.executor_cores or 1} core(s)"
        return (
            f"a Spark worker with one executor ({what}, {self.request.executor_mib} MiB plus "
            f"{executor_overhead_mib(self.request.executor_mib)} MiB overhead, and the worker "
            f"daemon's {self.request.daemon_mib + 128} MiB) needs {w_cpus:g} cpus, {w_mem} MiB "
            f"mem and 2 ports beside the Spark master's {m_cpus:g} cpus and {m_mem} MiB; none of "
            f"the {len(agents)} registered agent(s) holds it (the largest: {_largest(agents)})"
        )

    def update(self, name: str, state: str) -> bool:
        """Follows a task state; True when the task is one this plan no longer wants (a
        stray to kill)."""
        terminal = task_states.is_terminal(state)
        if self.master is not None and name == self.master.name:
            if terminal:
                self._master_ended = True
                if not self.closed and not self.failed:
                    self.failed = f"the Spark master task ended: {state}"
            elif state == task_states.RUNNING:
                self.master_running = True
            return False
        worker = self.workers.get(name)
        if worker is None:
            return not terminal
        if not terminal:
            if state == task_states.RUNNING:
                worker.running = True
                self.failures = 0
            return False
        del self.workers[name]
        if self.closed or self.failed:
            return False
        self.lost_workers += 1
        if not worker.running:
            self.failures += 1
            if self.failures >= self.request.max_failures:
                self.failed = f"{self.failures} Spark workers in a row ended before running"
        return False

    def close(self) -> dict[str, str]:
        """Wants nothing any more; returns the tasks to kill (name -> agent id)."""
        self.closed = True
        return self.live_tasks()

    def done(self) -> bool:
        return not self.live_tasks()


def _largest(agents: list[OfferView]) -> str:
    big = max(agents, key=lambda a: (a.cpus, a.mem, a.port_count()))
    return f"{describe_view(big)} on {big.hostname}"
