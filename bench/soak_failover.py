"""Leader failover soak: a real ZooKeeper, 3 masters, 3 agents, one framework, for minutes.

A standalone ZooKeeper server (`butte.testing.zookeeper`), three ``butte master --zk``
processes (their registry replicated in ZooKeeper, ``--registry=replicated_log``, the
default) and three ``butte agent --master zk://...`` run on 127.0.0.1. An unmodified pymesos
scheduler (it detects the leader through ZooKeeper itself, checkpointing, a week's
failover timeout) keeps ``--long`` ``sleep 3600`` tasks running and a stream of short
``sleep 0.3`` tasks going. Until ``--minutes`` have passed, each round does one fault:

* ``kill-leader``: SIGKILL the leading master, restart it a few seconds later;
* ``kill-leader+agent``: the same, and SIGKILL an agent, restarting it (recovery) meanwhile;
* ``pause-leader``: SIGSTOP the leader for twice the ZooKeeper session timeout and a second,
  then SIGCONT (it finds its session gone and exits; restarted as a supervisor would);
* ``kill-leader+framework``: the same as the first, and the scheduler is stopped and
  started again in a new driver with its framework id (failover within failover_timeout);
* ``kill-leader-twice``: SIGKILL the leader, then the next one as soon as it serves (its
  agents still re-registering), restarting both 3 s after the second kill.

After each round it waits for things to settle and checks the invariants:

* every task the framework launched is either running on the agents (an agent's /state
  lists it and a process with its ``SOAK_TASK`` variable lives) or got exactly one terminal
  update (distinct uuids; resends of one uuid are counted as duplicates, not errors);
* no task runs twice (in the agents' /state or among live processes);
* the leader's GET_TASKS agrees with the agents' /state and the framework's view, and an
  explicit reconciliation answers every running task with TASK_RUNNING;
* no master or agent exited except those killed (a paused leader exits on purpose);
* no long task lost: a long task that ends (it must not) is a failure.

Short tasks are not launched while it checks. A launch sent to a leader as it died reaches
no agent and gets no update, as in Mesos: such tasks are reconciled after 5 s, and the
answer (TASK_LOST from the new leader) is their terminal update.

Printed per fault: the seconds from the kill to a new leader serving, to the framework
re-subscribed, to every agent re-registered; at the end min/median/max of each.

    .venv/bin/python bench/soak_failover.py [--minutes 5] [--long 30] [--short 3] [--seed 1]

Exit status 0 when every invariant held, 1 otherwise. `run_soak` is what
tests/faults/test_failover_soak_short.py runs for a minute or so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import signal
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymesos  # type: ignore[import-untyped]

from butte.cli.local import AGENT_STOP_SIGNAL, HOST, ManagedProcess, free_port
from butte.core import task_states as ts
from butte.testing.zookeeper import MasterGroup, ZooKeeperEnsemble

SESSION_SECONDS = 2.0
MASTER_FLAGS = (
    f"--zk_session_timeout={SESSION_SECONDS:g}secs",
    "--registry=replicated_log",
    "--allocation_interval=100ms",
    "--agent_ping_timeout=1secs",
    "--agent_reregister_timeout=60secs",
)
AGENT_FLAGS = (
    f"--zk_session_timeout={SESSION_SECONDS:g}secs",
    "--registration_backoff_factor=100ms",
    "--status_update_retry_interval_min=200ms",
    "--status_update_retry_interval_max=1secs",
    "--executor_shutdown_grace_period=1secs",
)
AGENT_RESOURCES = "cpus:8;mem:8192;disk:4096;ports:[31000-31100]"
FAULTS = (
    "kill-leader",
    "kill-leader+agent",
    "pause-leader",
    "kill-leader+framework",
    "kill-leader-twice",
)
TERMINAL = ts.TERMINAL


class SoakError(AssertionError):
    """An invariant did not hold (the message says which and for what)."""


# -- the framework -------------------------------------------------------------------------------


class Soaker(pymesos.Scheduler):
    """Keeps ``long`` ``sleep 3600`` tasks and ``short_in_flight`` ``sleep 0.3`` tasks going;
    records every launch, every status (by uuid) and reconciliation answers."""

    def __init__(self, long: int, short_in_flight: int = 3) -> None:
        self.long = long
        self.short_in_flight = short_in_flight
        self.lock = threading.Lock()
        self.framework_id: str | None = None
        self.subscriptions: list[float] = []  # monotonic times of (re)registered
        self.launched: dict[str, str] = {}  # task id -> agent id
        self.launch_times: dict[str, float] = {}  # task id -> time.time() of the launch
        self.states: dict[str, list[str]] = defaultdict(list)  # non-reconciliation states
        self.terminal_uuids: dict[str, set[str]] = defaultdict(set)
        self.duplicates = 0
        self.seen_uuids: set[str] = set()
        self.reconciled: dict[str, str] = {}
        self.counter = 0
        self.launching = True
        self.short_paused = False  # while the invariants are checked

    # pymesos callbacks (threads of the driver)
    def registered(self, driver: Any, framework_id: dict[str, str], master_info: Any) -> None:
        with self.lock:
            self.framework_id = framework_id["value"]
            self.subscriptions.append(time.monotonic())

    def reregistered(self, driver: Any, master_info: Any) -> None:
        with self.lock:
            self.subscriptions.append(time.monotonic())

    def _alive(self, prefix: str) -> int:
        return sum(
            1
            for t in self.launched
            if t.startswith(prefix) and not (set(self.states.get(t, [])) & TERMINAL)
        )

    def resourceOffers(self, driver: Any, offers: list[dict[str, Any]]) -> None:  # noqa: N802
        for offer in offers:
            tasks = []
            with self.lock:
                want_long = self.long - self._alive("long-") if self.launching else 0
                want_short = (
                    self.short_in_flight - self._alive("short-")
                    if self.launching and not self.short_paused
                    else 0
                )
                agent = offer["agent_id"]["value"]
                for kind, count, command in (
                    ("long", min(want_long, 4), "sleep 3600"),
                    ("short", want_short, "sleep 0.3"),
                ):
                    for _ in range(max(0, count)):
                        self.counter += 1
                        task_id = f"{kind}-{self.counter}"
                        self.launched[task_id] = agent
                        self.launch_times[task_id] = time.time()
                        tasks.append(_task(task_id, agent, command))
            if tasks:
                driver.launchTasks(offer["id"], tasks, {"refuse_seconds": 0.1})
            else:
                driver.declineOffer(offer["id"], {"refuse_seconds": 0.5})

    def statusUpdate(self, driver: Any, update: dict[str, Any]) -> None:  # noqa: N802
        task_id = update["task_id"]["value"]
        state = update["state"]
        uuid = update.get("uuid")
        with self.lock:
            if update.get("reason") == "REASON_RECONCILIATION" and not uuid:
                self.reconciled[task_id] = state
                # The master does not know the task (its launch died with a leader): the
                # answer is the task's end, as a framework must take it.
                if state in TERMINAL and not self.terminal_uuids.get(task_id):
                    self.states[task_id].append(state)
                    self.terminal_uuids[task_id].add("reconciliation")
            elif uuid and uuid in self.seen_uuids:
                self.duplicates += 1
            else:
                if uuid:
                    self.seen_uuids.add(uuid)
                self.states[task_id].append(state)
                if state in TERMINAL:
                    self.terminal_uuids[task_id].add(uuid or f"no-uuid-{len(self.seen_uuids)}")
        if uuid:
            driver.acknowledgeStatusUpdate(update)

    def pending_short_ids(self) -> list[str]:
        with self.lock:
            return [
                t
                for t in self.launched
                if t.startswith("short-") and not (set(self.states.get(t, [])) & TERMINAL)
            ]

    def pending_short(self) -> int:
        return len(self.pending_short_ids())

    def running(self) -> set[str]:
        with self.lock:
            return {t for t, s in self.states.items() if s and s[-1] == ts.RUNNING}

    def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise SoakError(f"{what}: not reached in {timeout:g}s")
            time.sleep(0.05)


def _task(task_id: str, agent_id: str, command: str) -> dict[str, Any]:
    return {
        "task_id": {"value": task_id},
        "agent_id": {"value": agent_id},
        "name": task_id,
        "command": {
            "value": command,
            # How the soak finds the task's process among the machine's.
            "environment": {"variables": [{"name": "SOAK_TASK", "value": task_id}]},
        },
        "resources": [
            {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
            {"name": "mem", "type": "SCALAR", "scalar": {"value": 16}},
        ],
    }


class Framework:
    """The scheduler and its current driver; `restart` is a scheduler failover."""

    def __init__(self, zk_url: str, soaker: Soaker) -> None:
        self.zk_url = zk_url
        self.soaker = soaker
        self.driver: Any = None

    def start(self) -> None:
        info: dict[str, Any] = {
            "user": os.environ.get("USER", "root"),
            "name": "soak",
            "hostname": "localhost",
            "checkpoint": True,
            "failover_timeout": 7 * 24 * 3600.0,
        }
        if self.soaker.framework_id:
            info["id"] = {"value": self.soaker.framework_id}
        self.driver = pymesos.MesosSchedulerDriver(
            self.soaker, info, self.zk_url, use_addict=False, implicit_acknowledgements=False
        )
        self.driver.start()

    def stop(self) -> None:
        if self.driver is not None:
            self.driver.stop(failover=True)
            self.driver = None

    def restart(self) -> None:
        self.stop()
        self.start()


# -- the cluster ----------------------------------------------------------------------------------


class SoakCluster:
    """ZooKeeper + 3 masters + 3 agents under ``directory``."""

    def __init__(self, directory: Path, masters: int = 3, agents: int = 3) -> None:
        self.directory = directory
        self.zk = ZooKeeperEnsemble(directory / "zk", size=1)
        self.zk_url = self.zk.url("/mesos")
        self.masters = MasterGroup(directory, self.zk_url, masters, flags=MASTER_FLAGS)
        self.agents: list[ManagedProcess] = []
        self.agent_ports: list[int] = []
        for i in range(agents):
            port = free_port()
            argv = [sys.executable, "-m", "butte", "agent", "--master", self.zk_url]
            argv += ["--ip", HOST, "--port", str(port), "--work_dir", str(directory / f"a{i}")]
            argv += ["--resources", AGENT_RESOURCES, *AGENT_FLAGS]
            self.agents.append(
                ManagedProcess(
                    f"agent-{i}", argv, directory / f"agent-{i}.log", stop_signal=AGENT_STOP_SIGNAL
                )
            )
            self.agent_ports.append(port)
        # Exits that were not ours: (name, status).
        self.unexpected_exits: list[tuple[str, int | None]] = []
        # Masters expected to exit once (a resumed ex-leader finds its session gone).
        self.exits_allowed: set[int] = set()

    def start(self) -> None:
        self.zk.start()
        self.masters.start()
        self.masters.wait_leader(60)
        for agent in self.agents:
            agent.start()
        self.wait_agents(60)

    def stop(self) -> None:
        for agent in self.agents:
            agent.stop(grace=3.0)
        self.masters.stop()
        self.zk.stop()

    def check_alive(self) -> None:
        """Records masters and agents that exited on their own, restarting the masters
        (their supervisor's job) but not hiding the exit; a master in ``exits_allowed``
        (a paused leader finds its session gone) may exit once, with status 1."""
        for i, master in enumerate(self.masters.masters):
            if master.process is not None and not master.expected_down and not master.running():
                status = master.process.returncode
                if i in self.exits_allowed and status == 1:
                    self.exits_allowed.discard(i)
                else:
                    self.unexpected_exits.append((master.name, status))
                master.start()
        for agent in self.agents:
            if agent.process is not None and not agent.expected_down and not agent.running():
                self.unexpected_exits.append((agent.name, agent.process.returncode))
                agent.start()

    def leader_state(self) -> dict[str, Any] | None:
        leader = self.masters.leader()
        return None if leader is None else self.masters.state(leader, timeout=5)

    def wait_agents(self, timeout: float) -> None:
        count = len(self.agents)
        deadline = time.monotonic() + timeout
        while True:
            state = self.leader_state()
            if state and sum(1 for a in state.get("slaves", []) if a.get("active")) >= count:
                return
            if time.monotonic() > deadline:
                raise SoakError(f"{count} agents not active with the leader in {timeout:g}s")
            time.sleep(0.05)

    def agent_state(self, index: int) -> dict[str, Any]:
        url = f"http://{HOST}:{self.agent_ports[index]}/state"
        with urllib.request.urlopen(url, timeout=10) as response:
            return json.loads(response.read())

    def leader_tasks(self) -> dict[str, tuple[str, str]]:
        """GET_TASKS of the leader: task id -> (state, agent id) (not completed ones)."""
        leader = self.masters.wait_leader(30)
        request = urllib.request.Request(
            f"http://{self.masters.addresses[leader]}/api/v1",
            data=b'{"type":"GET_TASKS"}',
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            body = json.loads(response.read())["get_tasks"]
        return {
            t["task_id"]["value"]: (t["state"], t["agent_id"]["value"])
            for t in body.get("tasks", [])
        }


def agents_running(cluster: SoakCluster) -> dict[str, list[str]]:
    """Task id -> names of the agents whose /state lists it non-terminal."""
    found: dict[str, list[str]] = defaultdict(list)
    for i in range(len(cluster.agents)):
        state = cluster.agent_state(i)
        for fw in state.get("frameworks", []):
            for ex in fw.get("executors", []):
                for task in ex.get("tasks", []) + ex.get("queued_tasks", []):
                    if task.get("state") not in TERMINAL:
                        found[task["id"]].append(f"agent-{i}")
    return found


def live_processes(directory: Path) -> dict[str, list[int]]:
    """SOAK_TASK -> pids of live ``sleep`` processes carrying it (their environment names the
    task) that ``directory``'s agents started: those run in a sandbox under ``directory``, so
    another run's processes on the same machine do not count."""
    found: dict[str, list[int]] = defaultdict(list)
    root = os.path.realpath(directory) + os.sep
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cmdline = Path(entry.path, "cmdline").read_bytes().split(b"\0")
            if not cmdline or not cmdline[0].endswith(b"sleep"):
                continue
            if not os.readlink(Path(entry.path, "cwd")).startswith(root):
                continue
            environ = Path(entry.path, "environ").read_bytes().split(b"\0")
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            continue
        for item in environ:
            if item.startswith(b"SOAK_TASK="):
                found[item.split(b"=", 1)[1].decode()].append(int(entry.name))
    return found


# -- invariants ------------------------------------------------------------------------------------


def check_invariants(cluster: SoakCluster, soaker: Soaker, framework: Framework) -> list[str]:
    """Settled checks (module docstring); the list of violations (empty: all held)."""
    problems: list[str] = []
    # Short tasks stop being launched, and those in flight end, so that what each view
    # lists is not a moving target.
    soaker.short_paused = True
    time.sleep(1.0)  # a launch decided just before may still be on its way to the master
    try:
        soaker.wait(lambda: soaker.pending_short() == 0, 5, "short tasks ended")
    except SoakError:
        # Launches that died with a leader reach no agent; a framework learns their end
        # by explicit reconciliation (docs/reliability.md "Leader failover soak").
        pending = soaker.pending_short_ids()
        framework.driver.reconcileTasks([{"task_id": {"value": t}} for t in pending])
        try:
            soaker.wait(lambda: soaker.pending_short() == 0, 15, "short tasks ended")
        except SoakError:
            pending = soaker.pending_short_ids()
            when = {
                t: time.strftime("%H:%M:%S", time.localtime(soaker.launch_times[t]))
                for t in pending
            }
            problems.append(f"short tasks not ended in 20s: launched {when}")
    try:
        return problems + _check(cluster, soaker, framework)
    finally:
        soaker.short_paused = False


def _check(cluster: SoakCluster, soaker: Soaker, framework: Framework) -> list[str]:
    problems: list[str] = []
    with soaker.lock:
        launched = dict(soaker.launched)
        states = {t: list(s) for t, s in soaker.states.items()}
        terminal = {t: set(u) for t, u in soaker.terminal_uuids.items()}
    on_agents = agents_running(cluster)
    processes = live_processes(cluster.directory)
    for task_id in launched:
        ended = terminal.get(task_id, set())
        if len(ended) > 1:
            problems.append(f"{task_id}: {len(ended)} different terminal updates {states[task_id]}")
        if ended:
            if task_id in on_agents:
                problems.append(
                    f"{task_id}: ended {states[task_id]} but runs on {on_agents[task_id]}"
                )
            if task_id.startswith("long-"):
                problems.append(f"{task_id}: a long task ended: {states[task_id]}")
            continue
        if task_id not in on_agents:
            problems.append(
                f"{task_id}: no terminal update and no agent runs it {states.get(task_id)}"
            )
        elif task_id not in processes and task_id.startswith("long-"):
            problems.append(f"{task_id}: listed on {on_agents[task_id]} but no process lives")
    for task_id, where in on_agents.items():
        if len(where) > 1:
            problems.append(f"{task_id}: runs twice, on {where}")
    for task_id, pids in processes.items():
        if len(pids) > 1:
            problems.append(f"{task_id}: {len(pids)} live processes {pids}")
    # The leader, the agents and the framework agree on what runs.
    leader_tasks = cluster.leader_tasks()
    leader = {t: s for t, (s, _) in leader_tasks.items() if s not in TERMINAL}
    agents_set = set(on_agents)
    running = soaker.running()
    if set(leader) != agents_set:
        only_leader = {
            t: (*leader_tasks[t], states.get(t)) for t in sorted(set(leader) - agents_set)
        }
        problems.append(
            f"GET_TASKS != agents' /state: only leader {only_leader}, "
            f"only agents {sorted(agents_set - set(leader))}"
        )
    long_running = {t for t in running if t.startswith("long-")}
    long_agents = {t for t in agents_set if t.startswith("long-")}
    if long_running != long_agents:
        problems.append(
            "framework's running long tasks != agents': only framework "
            f"{sorted(long_running - long_agents)}, "
            f"only agents {sorted(long_agents - long_running)}"
        )
    # Explicit reconciliation answers every long task the framework runs with TASK_RUNNING.
    with soaker.lock:
        soaker.reconciled.clear()
    asked = sorted(long_running)
    framework.driver.reconcileTasks([{"task_id": {"value": t}} for t in asked])
    try:
        soaker.wait(
            lambda: all(t in soaker.reconciled for t in asked), 20, "reconciliation answers"
        )
    except SoakError:
        missing = [t for t in asked if t not in soaker.reconciled]
        problems.append(f"reconciliation: no answer for {missing}")
    wrong = {t: s for t, s in soaker.reconciled.items() if t in asked and s != ts.RUNNING}
    if wrong:
        problems.append(f"reconciliation: not running {wrong}")
    return problems


# -- rounds ---------------------------------------------------------------------------------------


@dataclass
class Timing:
    fault: str
    leader: float | None = None
    framework: float | None = None
    agents: float | None = None


@dataclass
class SoakResult:
    timings: list[Timing] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    launched: int = 0
    finished_short: int = 0
    duplicates: int = 0
    unexpected_exits: list[tuple[str, int | None]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.unexpected_exits


def settle(cluster: SoakCluster, soaker: Soaker, timeout: float = 60.0) -> None:
    """Waits until every agent is back with the leader and the framework has every task
    the agents run as running."""
    cluster.wait_agents(timeout)
    deadline = time.monotonic() + timeout
    while True:
        cluster.check_alive()
        try:
            on_agents = {t for t in agents_running(cluster) if t.startswith("long-")}
        except OSError:
            on_agents = None
        long_running = {t for t in soaker.running() if t.startswith("long-")}
        if on_agents is not None and on_agents == long_running and len(long_running) >= soaker.long:
            return
        if time.monotonic() > deadline:
            raise SoakError(
                f"not settled in {timeout:g}s: {len(long_running)} long tasks running for the "
                f"framework, agents run {None if on_agents is None else len(on_agents)}"
            )
        time.sleep(0.2)


def failover_round(
    cluster: SoakCluster, soaker: Soaker, framework: Framework, fault: str, rng: random.Random
) -> Timing:
    """One fault (module docstring) and the time to each milestone, from the (first) kill."""
    group = cluster.masters
    old = group.wait_leader(30)
    down = [old]  # masters killed (or paused) this round, brought back at restart_at
    subscriptions = len(soaker.subscriptions)
    timing = Timing(fault)
    started = time.monotonic()
    agent: ManagedProcess | None = None
    if fault == "pause-leader":
        cluster.exits_allowed.add(old)
        group.pause(old)
    else:
        group.kill(old)
    if fault == "kill-leader+agent":
        agent = rng.choice(cluster.agents)
        agent.kill()
    if fault == "kill-leader+framework":
        framework.stop()
    restart_at = started + (2 * SESSION_SECONDS + 1 if fault == "pause-leader" else 3.0)
    second_kill = fault != "kill-leader-twice"  # done (or not wanted)
    restarted = False

    def restart() -> None:
        for index in down:
            if fault == "pause-leader":
                group.resume(index)  # it finds its session gone and exits (status 1)
            else:
                group.restart(index)
        if agent is not None:
            agent.start()
        if fault == "kill-leader+framework":
            framework.start()

    deadline = started + 90
    while timing.leader is None or timing.framework is None or timing.agents is None:
        now = time.monotonic()
        if now > deadline:
            raise SoakError(f"{fault}: not recovered in 90s: {timing}")
        if not restarted and now >= restart_at:
            restarted = True
            restart()
        cluster.check_alive()
        leader = group.leader()
        if not second_kill and leader is not None and leader not in down:
            # The new leader dies as soon as it serves, its recovery under way.
            second_kill = True
            group.kill(leader)
            down.append(leader)
            subscriptions = len(soaker.subscriptions)
            restart_at = time.monotonic() + 3.0
            continue
        if timing.leader is None and leader is not None and leader not in down:
            timing.leader = time.monotonic() - started
        if timing.leader is not None:
            if timing.framework is None and len(soaker.subscriptions) > subscriptions:
                timing.framework = soaker.subscriptions[subscriptions] - started
            if timing.agents is None and (agent is None or restarted):
                state = cluster.leader_state()
                active = sum(1 for a in (state or {}).get("slaves", []) if a.get("active"))
                if active == len(cluster.agents):
                    timing.agents = time.monotonic() - started
        time.sleep(0.02)
    if not restarted:
        while time.monotonic() < restart_at:
            time.sleep(0.05)
        restart()
    return timing


def run_soak(
    directory: Path,
    minutes: float = 5.0,
    long: int = 30,
    seed: int = 1,
    max_rounds: int | None = None,
    short: int = 3,
    log: Callable[[str], None] = lambda line: print(time.strftime("%H:%M:%S"), line),
    pause: tuple[float, float] = (1.0, 3.0),
) -> SoakResult:
    """Runs the soak (module docstring) under ``directory``; the result (never raises for
    a violated invariant: it is in ``problems``). ``pause``: the range of the random
    seconds between a settled round and its checks, while short tasks come and go."""
    rng = random.Random(seed)
    result = SoakResult()
    cluster = SoakCluster(directory)
    soaker = Soaker(long, short)
    framework = Framework(cluster.zk_url, soaker)
    cluster.start()
    try:
        framework.start()
        soaker.wait(lambda: len(soaker.running()) >= long, 120, f"{long} tasks running")
        settle(cluster, soaker)
        log(f"cluster up: {long} long tasks running; soaking for {minutes:g} min")
        end = time.monotonic() + minutes * 60
        rounds = 0
        while time.monotonic() < end and (max_rounds is None or rounds < max_rounds):
            fault = FAULTS[rounds % len(FAULTS)] if rounds < len(FAULTS) else rng.choice(FAULTS)
            rounds += 1
            try:
                timing = failover_round(cluster, soaker, framework, fault, rng)
                result.timings.append(timing)
                log(
                    f"round {rounds} {fault}: leader {timing.leader:.2f}s, framework "
                    f"{timing.framework:.2f}s, agents {timing.agents:.2f}s"
                )
                settle(cluster, soaker)
                time.sleep(rng.uniform(*pause))  # short tasks come and go meanwhile
                problems = check_invariants(cluster, soaker, framework)
            except (SoakError, OSError, TimeoutError) as e:
                problems = [f"{type(e).__name__}: {e}"]
            for problem in problems:
                log(f"  VIOLATION round {rounds} {fault}: {problem}")
            result.problems += [f"round {rounds} {fault}: {p}" for p in problems]
            if problems and any(p.startswith(("SoakError", "TimeoutError")) for p in problems):
                break  # the cluster did not recover: the rest would only repeat it
    finally:
        with soaker.lock:
            soaker.launching = False
            result.launched = len(soaker.launched)
            result.finished_short = sum(
                1 for t, s in soaker.states.items() if t.startswith("short-") and ts.FINISHED in s
            )
            result.duplicates = soaker.duplicates
        result.unexpected_exits = list(cluster.unexpected_exits)
        with contextlib.suppress(Exception):
            framework.stop()
        cluster.stop()
    return result


def summary(result: SoakResult) -> str:
    lines = [
        f"rounds {len(result.timings)}, tasks launched {result.launched} "
        f"(short tasks finished {result.finished_short}), duplicate updates "
        f"{result.duplicates}, violations {len(result.problems)}, unexpected exits "
        f"{result.unexpected_exits or 'none'}"
    ]
    for what in ("leader", "framework", "agents"):
        values = [getattr(t, what) for t in result.timings if getattr(t, what) is not None]
        if values:
            lines.append(
                f"kill -> {what:<9} min {min(values):.2f}s  median "
                f"{statistics.median(values):.2f}s  max {max(values):.2f}s  (n={len(values)})"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--long", type=int, default=30, help="long-running tasks kept (30)")
    parser.add_argument("--short", type=int, default=3, help="short tasks in flight (3)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--dir", help="work directory (default: a temporary one, removed)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    # pymesos logs every refused connection to a dead leader with its traceback.
    logging.getLogger("pymesos").setLevel(logging.CRITICAL)
    if args.dir:
        result = run_soak(Path(args.dir), args.minutes, args.long, args.seed, short=args.short)
    else:
        with tempfile.TemporaryDirectory(prefix="butte-soak-") as tmp:
            result = run_soak(Path(tmp), args.minutes, args.long, args.seed, short=args.short)
    print(summary(result))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
