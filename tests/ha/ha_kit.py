"""Kit of the HA tests: a whole HA cluster on loopback and a pymesos framework to watch it.

`HaCluster` = a ZooKeeper ensemble + N masters contending under ``/mesos`` (`MasterGroup`,
which also restarts masters that exit, like a supervisor) + agents started with
``--master zk://.../mesos``. `LongTasks` is an unmodified pymesos scheduler (it detects the
leader through ZooKeeper itself) that launches long ``sleep`` tasks with checkpointing and a
long failover timeout, and records every status it gets. `Failover` measures, from the
moment a leader is killed: (a) a new leader serving, (b) every agent re-registered with it,
(c) the framework re-subscribed.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from butte.cli.local import AGENT_STOP_SIGNAL, HOST, ManagedProcess, free_port
from butte.core import task_states as ts
from butte.testing.zookeeper import MasterGroup, ZooKeeperEnsemble

SESSION_TIMEOUT = "2secs"
MASTER_FLAGS = (
    f"--zk_session_timeout={SESSION_TIMEOUT}",
    "--allocation_interval=100ms",
    "--agent_ping_timeout=1secs",
)
AGENT_FLAGS = (
    "--registration_backoff_factor=100ms",
    "--status_update_retry_interval_min=200ms",
    "--status_update_retry_interval_max=1secs",
    "--executor_shutdown_grace_period=1secs",
)
AGENT_RESOURCES = "cpus:2;mem:2048;disk:4096;ports:[31000-31100]"


class HaCluster:
    """Ensemble + masters + agents under ``directory``; see the module docstring."""

    def __init__(
        self,
        directory: Path,
        zk_size: int = 3,
        masters: int = 3,
        agents: int = 2,
        master_flags: Sequence[str] = (),
        agent_flags: Sequence[str] = (),
    ) -> None:
        self.directory = directory
        self.zk = ZooKeeperEnsemble(directory / "zk", size=zk_size)
        self.zk_url = self.zk.url("/mesos")
        self.masters = MasterGroup(
            directory, self.zk_url, masters, flags=[*MASTER_FLAGS, *master_flags]
        )
        self.agents: list[ManagedProcess] = []
        for i in range(agents):
            argv = [_python(), "-m", "butte", "agent", "--master", self.zk_url, "--ip", HOST]
            argv += ["--port", str(free_port()), "--work_dir", str(directory / f"agent-{i}")]
            argv += ["--resources", AGENT_RESOURCES, *AGENT_FLAGS, *agent_flags]
            log = directory / f"agent-{i}.log"
            self.agents.append(
                ManagedProcess(f"agent-{i}", argv, log, stop_signal=AGENT_STOP_SIGNAL)
            )

    def start(self) -> None:
        self.zk.start()
        self.masters.start()
        self.masters.wait_leader(30)
        for agent in self.agents:
            agent.start()
        self.wait_agents(30)

    def stop(self) -> None:
        for agent in self.agents:
            agent.stop(grace=3.0)
        self.masters.stop()
        self.zk.stop()

    # -- views of the leader --------------------------------------------------------------------

    def leader_state(self) -> dict[str, Any] | None:
        leader = self.masters.leader()
        return None if leader is None else self.masters.state(leader)

    def wait_state(
        self, predicate: Callable[[dict[str, Any]], Any], timeout: float = 30.0, what: str = ""
    ) -> Any:
        """Polls the leader's /state until ``predicate`` holds (supervising the masters)."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            self.masters.supervise()
            state = self.leader_state()
            if state is not None:
                last = state
                result = predicate(state)
                if result:
                    return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what or 'condition'} not reached in {timeout}s; {last}")
            time.sleep(0.02)

    def wait_agents(self, timeout: float = 30.0) -> None:
        """Waits until every agent is registered and active with the leader."""
        count = len(self.agents)
        self.wait_state(lambda s: active_agents(s) >= count, timeout, f"{count} agents active")

    def logs(self, max_lines: int = 60) -> str:
        parts = [self.masters.logs(max_lines)]
        for agent in self.agents:
            parts.append(f"----- {agent.name} -----\n{agent.log_tail(max_lines)}")
        for server in self.zk.servers:
            parts.append(f"----- zookeeper {server.index} -----\n{server.election_history(15)}")
        return "\n".join(parts)


def _python() -> str:
    import sys

    return sys.executable


def active_agents(state: dict[str, Any]) -> int:
    return sum(1 for a in state.get("slaves", []) if a.get("active"))


def framework_of(state: dict[str, Any], framework_id: str) -> dict[str, Any] | None:
    for fw in state.get("frameworks", []):
        if fw.get("id") == framework_id:
            return fw
    return None


def running_tasks(state: dict[str, Any], framework_id: str) -> set[str]:
    fw = framework_of(state, framework_id)
    if fw is None:
        return set()
    return {t["id"] for t in fw.get("tasks", []) if t.get("state") == ts.RUNNING}


# -- the framework -------------------------------------------------------------------------------

try:
    import pymesos

    _SchedulerBase: type = pymesos.Scheduler
except ImportError:  # pragma: no cover - scripts/setup.sh installs it
    pymesos = None
    _SchedulerBase = object


class LongTasks(_SchedulerBase):
    """Launches ``count`` ``sleep 300`` tasks once, spread over the offers, and records every
    status, every (re)registration and the answers to explicit reconciliation."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.pending = [f"long-{i}" for i in range(count)]
        self.states: dict[str, list[str]] = defaultdict(list)
        self.reconciled: dict[str, str] = {}
        self.framework_id: str | None = None
        self.registrations = 0
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)

    def registered(self, driver, framework_id, master_info) -> None:
        with self.lock:
            self.framework_id = framework_id["value"]
            self.registrations += 1
            self.changed.notify_all()

    def reregistered(self, driver, master_info) -> None:
        with self.lock:
            self.registrations += 1
            self.changed.notify_all()

    def resourceOffers(self, driver, offers) -> None:  # noqa: N802 - pymesos API
        for offer in offers:
            with self.lock:
                task_id = self.pending.pop() if self.pending else None
            if task_id is None:
                driver.declineOffer(offer["id"], {"refuse_seconds": 3600})
                continue
            task = {
                "task_id": {"value": task_id},
                "agent_id": {"value": offer["agent_id"]["value"]},
                "name": task_id,
                "command": {"value": "sleep 300"},
                "resources": [
                    {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                    {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}},
                ],
            }
            driver.launchTasks(offer["id"], [task], {"refuse_seconds": 0.1})

    def statusUpdate(self, driver, update) -> None:  # noqa: N802 - pymesos API
        task_id = update["task_id"]["value"]
        with self.lock:
            if update.get("reason") == "REASON_RECONCILIATION":
                self.reconciled[task_id] = update["state"]
            else:
                self.states[task_id].append(update["state"])
            self.changed.notify_all()
        if update.get("uuid"):
            driver.acknowledgeStatusUpdate(update)

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self.lock:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{what} not reached in {timeout}s: {dict(self.states)}")
                self.changed.wait(min(remaining, 0.1))

    def running(self) -> set[str]:
        return {t for t, states in self.states.items() if states and states[-1] == ts.RUNNING}

    def lost(self) -> dict[str, list[str]]:
        """Tasks that ever got a terminal (or unreachable) state."""
        bad = ts.TERMINAL | {ts.UNREACHABLE}
        return {t: s for t, s in self.states.items() if any(x in bad for x in s)}


def start_framework(zk_url: str, count: int) -> tuple[LongTasks, Any]:
    """Starts `LongTasks` with an unmodified pymesos driver pointed at ``zk_url``."""
    scheduler = LongTasks(count)
    framework = {
        "user": "root",
        "name": "ha-long-tasks",
        "hostname": "localhost",
        "checkpoint": True,
        "failover_timeout": 7 * 24 * 3600.0,
    }
    driver = pymesos.MesosSchedulerDriver(
        scheduler, framework, zk_url, use_addict=False, implicit_acknowledgements=False
    )
    driver.start()
    return scheduler, driver


@dataclass
class FailoverTimes:
    """Seconds from the leader's death to each milestone."""

    leader: float
    agents: float
    framework: float


def measure_failover(
    cluster: HaCluster,
    scheduler: LongTasks,
    kill: Callable[[int], None],
    timeout: float = 40.0,
    same_may_lead: bool = False,
) -> FailoverTimes:
    """Kills the leader with ``kill(index)`` and times the recovery (module docstring).
    Milestone (b) is every agent active with the new leader; (c) the framework connected
    there with all its tasks running. ``same_may_lead``: the killed master's slot may lead
    again (it was restarted by ``kill``)."""
    old = cluster.masters.wait_leader(30)
    registrations = scheduler.registrations
    started = time.monotonic()
    kill(old)
    cluster.masters.wait_leader(timeout, exclude=None if same_may_lead else old)
    leader_seconds = time.monotonic() - started
    cluster.wait_agents(timeout)
    agents_seconds = time.monotonic() - started
    wait_framework(cluster, scheduler, registrations, timeout)
    framework_seconds = time.monotonic() - started
    return FailoverTimes(leader_seconds, agents_seconds, framework_seconds)


def wait_framework(
    cluster: HaCluster, scheduler: LongTasks, registrations: int, timeout: float = 40.0
) -> None:
    """Waits until the framework re-subscribed (more than ``registrations`` times) and the
    leader lists it connected with all its tasks running."""
    fid = scheduler.framework_id
    assert fid is not None

    def framework_back(state: dict[str, Any]) -> bool:
        fw = framework_of(state, fid)
        running = len(running_tasks(state, fid))
        return bool(fw and fw.get("connected") and running == scheduler.count)

    scheduler.wait(lambda: scheduler.registrations > registrations, timeout, "reregistered")
    cluster.wait_state(framework_back, timeout, "framework re-subscribed with all tasks running")


def reconcile_all(scheduler: LongTasks, driver: Any, timeout: float = 20.0) -> dict[str, str]:
    """Explicit reconciliation of every task; returns task id -> state answered."""
    with scheduler.lock:
        scheduler.reconciled.clear()
        tasks = list(scheduler.states)
    driver.reconcileTasks([{"task_id": {"value": t}} for t in tasks])
    scheduler.wait(lambda: len(scheduler.reconciled) >= len(tasks), timeout, "reconciliation")
    with scheduler.lock:
        return dict(scheduler.reconciled)
