"""``butte run``: run a command as one or more tasks, like ``mesos-execute``.

Flow: SUBSCRIBE as a short-lived framework -> for each OFFERS event pack as many pending tasks
as fit into each offer (ACCEPT with one LAUNCH), decline what does not fit -> SUPPRESS once
everything is launched -> print one line per status update and ACKNOWLEDGE it -> when every
task is terminal, TEARDOWN and exit with the job's status: 0 if all tasks finished, otherwise
the exit status of the first failed task (from "Command exited with status N"), else 1.
Ctrl-C (or SIGTERM) kills the launched tasks, waits briefly for their last updates, tears the
framework down and exits 130 (143).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import re
import shlex
import signal
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from butte.cli.common import CliError, check_master
from butte.cli.output import add_credentials
from butte.client.scheduler import (
    CallError,
    MasterUnreachable,
    SchedulerClient,
    SchedulerError,
    SubscriptionError,
)
from butte.core import task_states
from butte.core.ids import validate_id
from butte.core.resources import ResourceError, Resources, parse_resources

SUMMARY = "run a command as tasks on a cluster (like mesos-execute)"
DESCRIPTION = (
    "Subscribes to the master as a framework, launches --instances copies of --command on "
    "offered resources, prints every status update, and exits with the tasks' exit status "
    "when all of them have ended. Ctrl-C kills the tasks."
)
DEFAULT_RESOURCES = "cpus:0.1;mem:32"
_EXIT_STATUS = re.compile(r"exited with status (\d+)")
# How long an interrupted run waits for its killed tasks to report before tearing down.
_KILL_WAIT_SECONDS = 10.0
# While tasks wait to be launched, what they wait for is said at most this often.
WAITING_NOTE_SECONDS = 5.0

Writer = Callable[[str], None]


def _env_pair(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Defines the ``butte run`` flags."""
    parser.add_argument(
        "--master",
        required=True,
        help="master to subscribe to, HOST:PORT (https://HOST:PORT for TLS), or "
        "zk://host1:port1,host2:port2/path to "
        "follow the leading master of a ZooKeeper ensemble",
    )
    parser.add_argument("--name", required=True, help="task name; task ids are NAME.<id>.<i>")
    parser.add_argument("--command", required=True, help="command to run in each task")
    parser.add_argument(
        "--resources", default=DEFAULT_RESOURCES, help="resources of each task, Mesos syntax"
    )
    parser.add_argument(
        "--instances", type=_positive_int, default=1, help="number of tasks to launch"
    )
    parser.add_argument("--role", default="*", help="role to subscribe with")
    parser.add_argument(
        "--shell",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the command with /bin/sh -c; --no-shell execs its first word with the rest "
        "as arguments",
    )
    parser.add_argument(
        "--env",
        action="append",
        type=_env_pair,
        default=[],
        metavar="NAME=VALUE",
        help="environment variable for the tasks (repeatable)",
    )
    parser.add_argument(
        "--checkpoint", action="store_true", help="ask agents to checkpoint the tasks"
    )
    parser.add_argument("--framework_name", default="butte-run", help="framework name")
    parser.add_argument(
        "--connect_timeout",
        type=float,
        default=5.0,
        help="seconds to keep retrying an unreachable master before giving up (exit 2)",
    )
    add_credentials(parser)


@dataclass(frozen=True)
class JobSpec:
    """What to run: the parsed ``butte run`` flags."""

    master: str
    name: str
    command: str
    resources: Resources
    instances: int = 1
    role: str = "*"
    shell: bool = True
    env: tuple[tuple[str, str], ...] = ()
    checkpoint: bool = False
    framework_name: str = "butte-run"
    connect_timeout: float = 5.0
    principal: str | None = None
    secret: str | None = field(default=None, repr=False)


def spec_from_args(args: argparse.Namespace) -> JobSpec:
    """Validates the flags into a JobSpec (CliError with exit status 2 on bad input)."""
    try:
        resources = parse_resources(args.resources)
    except ResourceError as e:
        raise CliError(f"bad --resources {args.resources!r}: {e}", 2) from None
    if resources.is_empty():
        raise CliError("--resources must not be empty", 2)
    error = validate_id(args.name, "--name")
    if error:
        raise CliError(error, 2)
    if not args.command.strip():
        raise CliError("--command must not be empty", 2)
    check_master(args.master)
    return JobSpec(
        master=args.master,
        name=args.name,
        command=args.command,
        resources=resources,
        instances=args.instances,
        role=args.role,
        shell=args.shell,
        env=tuple(args.env),
        checkpoint=args.checkpoint,
        framework_name=args.framework_name,
        connect_timeout=args.connect_timeout,
        principal=args.principal,
        secret=args.secret,
    )


def run(args: argparse.Namespace) -> int:
    """``butte run`` entry point."""
    return asyncio.run(run_job(spec_from_args(args)))


def _print(line: str) -> None:
    print(line, flush=True)


def _info(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


async def run_job(spec: JobSpec, write: Writer = _print, info: Writer = _info) -> int:
    """Runs the job to completion; returns its exit status. ``write`` gets the status lines,
    ``info`` the progress notes."""
    return await _Job(spec, write, info).run()


def exit_status_of(state: str, message: str | None) -> int:
    """A failed task's exit status: N from "Command exited with status N", else 1."""
    if state == task_states.FINISHED:
        return 0
    match = _EXIT_STATUS.search(message or "")
    if match and int(match.group(1)) != 0:
        return int(match.group(1))
    return 1


def take_resources(available: Resources, need: Resources, role: str) -> Resources | None:
    """What a task that needs ``need`` (unreserved amounts) takes of ``available``: scalars
    reserved for ``role`` first, then unreserved ones, as mesos-execute takes them; None if
    they do not fit."""
    taken = Resources()
    rest = need
    for key, value in available.reserved(role).items():
        name = key[0]
        wanted = rest.scalar_millis(name) if isinstance(value, int) else 0
        if wanted <= 0 or key[2] is not None:
            continue  # not needed, or a disk with a volume or source
        amount = min(value, wanted)
        taken = taken + Resources({key: amount})
        rest = rest - Resources({(name, (), None): amount})
    if not available.unreserved().contains(rest):
        return None
    return taken + rest


def _offer_resources(offer: dict[str, Any]) -> Resources:
    """The plain (non-volume, non-revocable) resources of an offer."""
    plain = [
        r
        for r in offer.get("resources", [])
        if not any(k in r for k in ("disk", "revocable", "shared", "provider_id"))
    ]
    return Resources.from_json(plain)


@dataclass
class _Job:
    """State of one ``butte run``: which tasks are pending, launched and finished."""

    spec: JobSpec
    write: Writer
    info: Writer
    pending: list[str] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)
    agents: dict[str, str] = field(default_factory=dict)  # task id -> agent id
    hostnames: dict[str, str] = field(default_factory=dict)  # agent id -> hostname
    seen_uuids: set[str] = field(default_factory=set)
    first_failure: int | None = None
    suppressed: bool = False
    offers_seen: int = 0
    # Monotonic time of the last "waiting for ..." note (None: nothing said yet).
    last_note: float | None = None

    def __post_init__(self) -> None:
        run_id = uuid.uuid4().hex[:8]
        self.pending = [f"{self.spec.name}.{run_id}.{i}" for i in range(self.spec.instances)]

    def framework_info(self) -> dict[str, Any]:
        return {
            "user": getpass.getuser(),
            "name": self.spec.framework_name,
            "role": self.spec.role,
            "checkpoint": self.spec.checkpoint,
            "failover_timeout": 0.0,
            "capabilities": [{"type": "TASK_KILLING_STATE"}],
        }

    def done(self) -> bool:
        return not self.pending and all(task_states.is_terminal(s) for s in self.states.values())

    async def run(self) -> int:
        client = SchedulerClient(
            self.spec.master,
            self.framework_info(),
            retry_timeout=self.spec.connect_timeout,
            backoff_max=1.0,
            principal=self.spec.principal,
            secret=self.spec.secret,
        )
        try:
            await client.subscribe()
        except MasterUnreachable as e:
            await client.close()
            # The client's text names the address again: "cannot subscribe to master: A: why".
            reason = str(e).removeprefix("cannot subscribe to master: ")
            reason = reason.removeprefix(f"{client.leader}: ")
            waited = f"gave up after {self.spec.connect_timeout:g}s (--connect_timeout)"
            raise CliError(
                f"cannot reach master {self.spec.master}: {reason}; {waited}", 2
            ) from None
        except SubscriptionError as e:
            await client.close()
            raise CliError(str(e), 2) from None
        self.info(f"Subscribed with framework id {client.framework_id} at {client.leader}")
        interrupted: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        installed = _install_signal_handlers(interrupted)
        events = _Events(client)
        try:
            return await self._drive(client, events, interrupted)
        finally:
            _remove_signal_handlers(installed)
            await events.close()
            await client.close()

    async def _drive(
        self, client: SchedulerClient, events: _Events, interrupted: asyncio.Future[int]
    ) -> int:
        """Handles events until all tasks ended (or an interrupt), then tears down."""
        while not self.done():
            event = await events.next(interrupted, WAITING_NOTE_SECONDS)
            if event is None:
                return await self._abort(client, events, interrupted.result())
            if event is _IDLE:
                self._note_waiting()
                continue
            await self._handle(client, event)
        with contextlib.suppress(SchedulerError):
            await client.teardown()
        return 0 if self.first_failure is None else self.first_failure

    async def _abort(self, client: SchedulerClient, events: _Events, status: int) -> int:
        """Kills the launched tasks, shows their last updates (up to a few seconds, or until
        a second interrupt), tears down; returns ``status``."""
        self.pending.clear()
        live = [t for t, s in self.states.items() if not task_states.is_terminal(s)]
        self.info(f"Interrupted: killing {len(live)} task(s)")
        for task_id in live:
            with contextlib.suppress(SchedulerError):
                await client.kill(task_id, self.agents.get(task_id))
        second: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        installed = _install_signal_handlers(second)
        try:
            async with asyncio.timeout(_KILL_WAIT_SECONDS):
                while not self.done():
                    event = await events.next(second)
                    if event is None:
                        break
                    await self._handle(client, event)
        except (TimeoutError, CliError):
            pass
        finally:
            _remove_signal_handlers(installed)
        with contextlib.suppress(SchedulerError):
            await client.teardown()
        return status

    async def _handle(self, client: SchedulerClient, event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "OFFERS":
            await self._use_offers(client, event["offers"].get("offers", []))
        elif kind == "UPDATE":
            await self._on_update(client, event["update"]["status"])
        elif kind == "SUBSCRIBED" and self.states:
            # A resubscription: ask where our tasks stand (updates may have been dropped).
            await client.reconcile(list(self.agents.items()))
        elif kind == "FAILURE":
            failure = event.get("failure", {})
            agent = failure.get("agent_id", {}).get("value", "?")
            if "executor_id" not in failure:
                self.info(f"Agent {self.hostnames.get(agent, agent)} was lost")
        elif kind == "ERROR":
            message = event.get("error", {}).get("message", "unknown error")
            raise CliError(f"master ended the subscription: {message}")

    def _due_note(self) -> bool:
        """Whether a "waiting for ..." note is due (one per WAITING_NOTE_SECONDS)."""
        now = time.monotonic()
        if self.last_note is not None and now - self.last_note < WAITING_NOTE_SECONDS:
            return False
        self.last_note = now
        return True

    def _note_waiting(self) -> None:
        """Nothing arrived for a while: says what the pending tasks wait for."""
        if not self.pending or not self._due_note():
            return
        need = self.spec.resources.to_text()
        if self.offers_seen == 0:
            self.info(
                f"Waiting for offers for {len(self.pending)} task(s) of {need}: none received "
                "yet (no agent registered, or every agent's resources are in use)"
            )
        else:
            self.info(
                f"Waiting for offers that fit {len(self.pending)} task(s) of {need} "
                f"({self.offers_seen} offer(s) so far were too small)"
            )

    async def _use_offers(self, client: SchedulerClient, offers: list[dict[str, Any]]) -> None:
        self.offers_seen += len(offers)
        for offer in offers:
            self.hostnames[offer["agent_id"]["value"]] = offer.get("hostname", "?")
            tasks = self._fit(offer)
            refuse = 1.0 if self.pending else 30.0
            try:
                if tasks:
                    await client.launch(offer, tasks, refuse_seconds=refuse)
                else:
                    await client.decline([offer], refuse_seconds=refuse)
            except CallError as e:
                self.info(f"Warning: {e}")
                continue
            for task in tasks:
                task_id = task["task_id"]["value"]
                self.states[task_id] = task_states.STAGING
                self.agents[task_id] = offer["agent_id"]["value"]
        if not self.pending and not self.suppressed:
            self.suppressed = True
            with contextlib.suppress(CallError):
                await client.suppress()

    def _fit(self, offer: dict[str, Any]) -> list[dict[str, Any]]:
        """Takes as many pending tasks as the offer holds; returns their TaskInfos."""
        try:
            available = _offer_resources(offer)
        except ResourceError as e:
            self.info(f"Warning: ignoring offer {offer['id']['value']}: {e}")
            return []
        need = self.spec.resources
        role = offer.get("allocation_info", {}).get("role", self.spec.role)
        tasks = []
        while self.pending and (taken := take_resources(available, need, role)) is not None:
            available = available - taken
            tasks.append(self._task_info(self.pending.pop(0), taken, role, offer))
        if not tasks and self.pending and self._due_note():
            self.info(
                f"Waiting for offers that fit {need.to_text()} "
                f"(offer from {offer.get('hostname', '?')} has {available.to_text()})"
            )
        return tasks

    def _task_info(
        self, task_id: str, need: Resources, role: str, offer: dict[str, Any]
    ) -> dict[str, Any]:
        command: dict[str, Any] = {"shell": self.spec.shell}
        if self.spec.shell:
            command["value"] = self.spec.command
        else:
            argv = shlex.split(self.spec.command)
            command["value"] = argv[0]
            command["arguments"] = argv
        if self.spec.env:
            variables = [{"name": k, "value": v} for k, v in self.spec.env]
            command["environment"] = {"variables": variables}
        return {
            "name": self.spec.name,
            "task_id": {"value": task_id},
            "agent_id": offer["agent_id"],
            "resources": need.to_json("pre", allocation_role=role),
            "command": command,
        }

    async def _on_update(self, client: SchedulerClient, status: dict[str, Any]) -> None:
        task_id = status["task_id"]["value"]
        state = status["state"]
        duplicate = status.get("uuid") in self.seen_uuids
        if status.get("uuid"):
            self.seen_uuids.add(status["uuid"])
        if not duplicate:
            agent = status.get("agent_id", {}).get("value") or self.agents.get(task_id, "")
            line = f"{task_id} {state} on {self.hostnames.get(agent, agent or '?')}"
            detail = status.get("message") or status.get("reason")
            self.write(f"{line}: {detail}" if detail else line)
        if task_id in self.states and not task_states.is_terminal(self.states[task_id]):
            self.states[task_id] = state
            if task_states.is_terminal(state) and state != task_states.FINISHED:
                if self.first_failure is None:
                    self.first_failure = exit_status_of(state, status.get("message"))
        try:
            await client.acknowledge_status(status)
        except CallError as e:
            self.info(f"Warning: {e}")


# What `_Events.next` returns when ``idle`` seconds passed without an event.
_IDLE: dict[str, Any] = {"type": "(idle)"}


class _Events:
    """The client's events, one at a time, awaited alongside an interrupt or a timeout. A
    read still pending when the wait ends is kept for the next wait instead of cancelled,
    so an event that arrives just then is never lost."""

    def __init__(self, client: SchedulerClient) -> None:
        self.client = client
        self._getter: asyncio.Future[dict[str, Any] | None] | None = None

    async def next(
        self, interrupted: asyncio.Future[int], idle: float | None = None
    ) -> dict[str, Any] | None:
        """The next event, None if ``interrupted`` resolved first, or ``_IDLE`` after
        ``idle`` seconds without either. Raises CliError when the subscription ended."""
        if self._getter is None:
            self._getter = asyncio.ensure_future(self.client.next_event())
        getter = self._getter
        waiting: set[asyncio.Future[Any]] = {getter, interrupted}
        await asyncio.wait(waiting, timeout=idle, return_when=asyncio.FIRST_COMPLETED)
        if not getter.done():
            return None if interrupted.done() else _IDLE
        self._getter = None
        try:
            event = getter.result()
        except SchedulerError as e:
            raise CliError(f"lost the master: {e}") from None
        if event is None:
            raise CliError("the master closed the subscription")
        return event

    async def close(self) -> None:
        """Cancels a pending read."""
        if self._getter is not None:
            self._getter.cancel()
            with contextlib.suppress(asyncio.CancelledError, SchedulerError):
                await self._getter
            self._getter = None


def _install_signal_handlers(future: asyncio.Future[int]) -> list[signal.Signals]:
    """Resolves ``future`` with 130 on SIGINT, 143 on SIGTERM; returns what was installed."""
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):

        def fire(sig: signal.Signals = sig) -> None:
            if not future.done():
                future.set_result(128 + int(sig))

        try:
            loop.add_signal_handler(sig, fire)
        except (NotImplementedError, RuntimeError, ValueError):
            continue  # not the main thread: Ctrl-C then raises KeyboardInterrupt instead
        installed.append(sig)
    return installed


def _remove_signal_handlers(installed: list[signal.Signals]) -> None:
    loop = asyncio.get_running_loop()
    for sig in installed:
        loop.remove_signal_handler(sig)
