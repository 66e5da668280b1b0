"""Operator subcommands of ``butte``: looking at and steering a running cluster over HTTP.

``agents``, ``frameworks``, ``tasks`` (alias ``ps``), ``task info|cat|tail|ls``
(`butte.cli.task`), ``roles``, ``state``, ``top`` (`butte.cli.top`), ``teardown FW``,
``agent gone|drain|deactivate|reactivate AGENT``, ``agent prune-images AGENT`` (the
agent's PRUNE_IMAGES, sent to the agent itself), ``maintenance ...``
(`butte.cli.maintenance`), ``reservations``,
``reserve``, ``unreserve``, ``volumes``, ``volume create|destroy`` (`butte.cli.reservations`) and
``completion bash|zsh`` (`butte.cli.completion`).

Every one talks to the master named by ``--master`` (or ``BUTTE_MASTER``; default
127.0.0.1:5050) through its operator API, prints a table (``--json`` for scripts), and exits
0 on success, 1 when something is not found or refused, 2 when the master cannot be reached
or the command line is wrong.
"""

from __future__ import annotations

import argparse
import functools
import os
from typing import Any

from rich.table import Table

from butte.cli import completion, maintenance, reservations, task, task_exec, top
from butte.cli.common import CliError, apply_env_defaults
from butte.cli.output import (
    NOT_FOUND,
    Column,
    add_common,
    add_wide,
    age,
    client,
    guarded,
    mem,
    ns_seconds,
    number,
    print_json,
    print_table,
    progress,
    scalars,
    short_state,
    stdout,
    used_of,
)
from butte.client.operator import MasterUnreachable, OperatorClient, OperatorError
from butte.core import task_states

# Subcommands with only the common flags: name -> summary (handlers in `add_commands`).
_SIMPLE: dict[str, str] = {
    "agents": "list the agents and their resources",
    "frameworks": "list the frameworks",
    "roles": "list the roles with their weights, shares, allocations and quotas",
    "state": "print the master's whole state (/master/state, always JSON)",
}


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Adds every operator subcommand to the top-level ``butte`` parser."""
    handlers = {
        "agents": cmd_agents,
        "frameworks": cmd_frameworks,
        "roles": cmd_roles,
        "state": cmd_state,
    }
    for name, summary in _SIMPLE.items():
        sub = commands.add_parser(name, help=summary, description=summary)
        add_common(sub)
        if name != "state":
            add_wide(sub)
        sub.set_defaults(handler=guarded(handlers[name]))
    frameworks = commands.choices["frameworks"]
    frameworks.add_argument("--all", action="store_true", help="include completed frameworks")
    for name in ("tasks", "ps"):
        sub = commands.add_parser(
            name,
            help="list tasks" + (" (alias of tasks)" if name == "ps" else ""),
            description="List the cluster's tasks (live ones unless --all).",
        )
        add_common(sub)
        add_wide(sub)
        sub.add_argument("--framework", help="only tasks of this framework (id or id prefix)")
        sub.add_argument(
            "--state",
            help="only tasks in this state (e.g. running, failed, TASK_FINISHED); a terminal "
            "state looks at completed tasks too",
        )
        sub.add_argument("--all", action="store_true", help="include completed tasks")
        sub.set_defaults(handler=guarded(cmd_tasks))
    sub = commands.add_parser("teardown", help="tear a framework down (kills its tasks)")
    add_common(sub)
    sub.add_argument("framework_id", metavar="FRAMEWORK_ID")
    sub.set_defaults(handler=guarded(cmd_teardown))
    _add_agent_commands(commands)
    task_exec.add_commands(task.add_commands(commands))
    top.add_command(commands)
    maintenance.add_command(commands)
    reservations.add_commands(commands)
    completion.add_command(commands)


# ``butte agent`` runs an agent daemon; ``butte agent gone|drain|... ID`` acts on one instead.
# `route_argv` sends those to this hidden subcommand.
AGENT_ACTIONS_COMMAND = "agent-action"
AGENT_ACTIONS = ("gone", "drain", "deactivate", "reactivate", "prune-images")
# Options of the operator actions that take a value (their value is not the action's name).
_VALUED_OPTIONS = ("--master", "--principal", "--secret")


def route_argv(argv: list[str]) -> list[str]:
    """``agent gone|drain|deactivate|reactivate ...`` -> the hidden operator subcommand (its
    options may come first: ``agent --master M drain ID``); anything else unchanged."""
    words = [
        i
        for i, w in enumerate(argv)
        if not w.startswith("-") and (i == 0 or argv[i - 1] not in _VALUED_OPTIONS)
    ]
    if len(words) >= 2 and argv[words[0]] == "agent" and argv[words[1]] in AGENT_ACTIONS:
        return [*argv[: words[0]], AGENT_ACTIONS_COMMAND, *argv[words[0] + 1 :]]
    return argv


def _add_agent_commands(commands: argparse._SubParsersAction) -> None:
    agent = commands.add_parser(AGENT_ACTIONS_COMMAND, prog="butte agent")
    # Hidden from `butte --help`: users spell it `butte agent gone|drain|...`.
    commands._choices_actions = [
        a for a in commands._choices_actions if a.dest != AGENT_ACTIONS_COMMAND
    ]
    actions = agent.add_subparsers(dest="agent_command", metavar="ACTION", required=True)
    gone = actions.add_parser(
        "gone",
        help="mark an agent gone: its tasks are lost and it may never come back",
        description="Marks the agent gone (MARK_AGENT_GONE): the master tells it to shut "
        "down, reports its tasks as gone, and refuses it if it comes back.",
    )
    add_common(gone)
    gone.add_argument("agent_id", metavar="AGENT_ID")
    gone.set_defaults(handler=guarded(cmd_agent_gone))
    drain = actions.add_parser(
        "drain",
        help="drain an agent: no new tasks, running ones killed after a grace period",
        description="Drains the agent (DRAIN_AGENT): no more offers, its tasks are killed "
        "after --grace seconds.",
    )
    add_common(drain)
    drain.add_argument("agent_id", metavar="AGENT_ID")
    drain.add_argument("--grace", type=float, default=None, help="seconds before kill")
    drain.add_argument("--mark-gone", action="store_true", help="mark it gone once drained")
    drain.set_defaults(handler=guarded(cmd_agent_drain))
    deactivate = actions.add_parser(
        "deactivate",
        help="stop offering an agent's resources; what runs there keeps running",
        description="DEACTIVATE_AGENT: the master makes no more offers from the agent.",
    )
    reactivate = actions.add_parser(
        "reactivate",
        help="offer a deactivated (or drained) agent's resources again",
        description="REACTIVATE_AGENT: offers resume; refused while a drain is still going.",
    )
    for sub, call, done in (
        (deactivate, "DEACTIVATE_AGENT", "deactivated"),
        (reactivate, "REACTIVATE_AGENT", "reactivated"),
    ):
        add_common(sub)
        sub.add_argument("agent_id", metavar="AGENT_ID")
        sub.set_defaults(handler=guarded(functools.partial(cmd_agent_call, call, done)))
    prune = actions.add_parser(
        "prune-images",
        help="remove the agent's image layers that no running container uses",
        description="PRUNE_IMAGES, sent to the agent (found through the master): its image "
        "store keeps only the layers of running containers and of the --exclude images; a "
        "later task in a removed image unpacks it again (docs/containers.md).",
    )
    add_common(prune)
    prune.add_argument("agent_id", metavar="AGENT_ID")
    prune.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="IMAGE",
        help="a Docker image name whose layers stay (repeatable)",
    )
    prune.set_defaults(handler=guarded(cmd_agent_prune_images))
    for sub in (gone, drain, deactivate, reactivate, prune):
        apply_env_defaults(sub, os.environ)


# -- agents, frameworks, roles, state ---------------------------------------------------------


# Columns of the tables; `Column.drop` says which go first on a narrow terminal.
AGENT_COLUMNS = (
    Column("ID", is_id=True),
    Column("HOST", 2),
    Column("ACTIVE", 1),
    Column("CPUS", 1),
    Column("MEM", 3),
    Column("DISK", 4),
    Column("GPUS", 5),
    Column("REGISTERED", 6),
)
FRAMEWORK_COLUMNS = (
    Column("ID", is_id=True),
    Column("NAME", 1),
    Column("ROLES", 4),
    Column("STATUS", 1),
    Column("CPUS", 2),
    Column("MEM", 2),
    Column("GPUS", 5),
    Column("REGISTERED", 3),
)
TASK_COLUMNS = (
    Column("ID", is_id=True),
    Column("NAME", 2),
    Column("STATE"),
    Column("FRAMEWORK", 6, is_id=True),
    Column("AGENT", 7, is_id=True),
    Column("CPUS", 3),
    Column("MEM", 3),
    Column("STARTED", 4),
)


def cmd_agents(args: argparse.Namespace) -> int:
    with progress("Asking the master for its agents..."):
        agents = client(args).call("GET_AGENTS").get("agents", [])
    if args.json:
        print_json(agents)
        return 0
    rows = []
    for a in agents:
        info = a.get("agent_info", {})
        total, used = scalars(a.get("total_resources", [])), scalars(a.get("allocated_resources"))
        rows.append(
            (
                info.get("id", {}).get("value", "?"),
                f"{info.get('hostname', '?')}:{info.get('port', '?')}",
                "yes" if a.get("active") else "no",
                used_of(used.get("cpus", 0), total.get("cpus", 0)),
                used_of(used.get("mem", 0), total.get("mem", 0), mem),
                used_of(used.get("disk", 0), total.get("disk", 0), mem),
                used_of(used.get("gpus", 0), total.get("gpus", 0)),
                age(ns_seconds(a.get("registered_time"))),
            )
        )
    print_table(AGENT_COLUMNS, rows, args.wide)
    return 0


def framework_roles(info: dict[str, Any]) -> str:
    roles = info.get("roles") or [info.get("role", "*")]
    return ",".join(roles)


def cmd_frameworks(args: argparse.Namespace) -> int:
    with progress("Asking the master for its frameworks..."):
        answer = client(args).call("GET_FRAMEWORKS")
    rows = [(f, "active" if f.get("active") else "inactive") for f in answer.get("frameworks", [])]
    if args.all:
        rows += [(f, "completed") for f in answer.get("completed_frameworks", [])]
    if args.json:
        print_json([f for f, _ in rows])
        return 0
    lines = []
    for f, status in rows:
        info = f.get("framework_info", {})
        used = scalars(f.get("allocated_resources", []))
        if status == "inactive" and f.get("connected"):
            status = "connected"
        lines.append(
            (
                info.get("id", {}).get("value", "?"),
                info.get("name", ""),
                framework_roles(info),
                status,
                number(used.get("cpus", 0)),
                mem(used.get("mem", 0)),
                number(used.get("gpus", 0)),
                age(ns_seconds(f.get("registered_time"))),
            )
        )
    print_table(FRAMEWORK_COLUMNS, lines, args.wide)
    return 0


def cmd_roles(args: argparse.Namespace) -> int:
    master = client(args)
    with progress("Asking the master for its roles..."):
        roles = master.call("GET_ROLES").get("roles", [])
        metrics = master.get_json("/metrics/snapshot")
    if args.json:
        print_json(roles)
        return 0
    table = Table(
        "ROLE",
        "WEIGHT",
        "SHARE",
        "FRAMEWORKS",
        "CPUS",
        "MEM",
        "OFFERED CPUS",
        "GUARANTEE",
        "LIMIT",
        "CONSUMED",
    )
    for role in roles:
        quota = role.get("quota") or {}
        name = role.get("name", "?")
        allocated = scalars(role.get("allocated", role.get("resources", [])))
        offered = scalars(role.get("offered", []))
        share = metrics.get(f"allocator/mesos/roles/{name}/shares/dominant")
        table.add_row(
            name,
            number(float(role.get("weight", 1.0))),
            f"{share:.3f}" if isinstance(share, int | float) else "-",
            str(len(role.get("frameworks", []))),
            number(allocated.get("cpus", 0)),
            mem(allocated.get("mem", 0)),
            number(offered.get("cpus", 0)),
            quota_cell(quota.get("guarantee")),
            quota_cell(quota.get("limit")),
            quota_cell(quota.get("consumed")),
        )
    stdout().print(table)
    return 0


def quota_cell(amounts: Any) -> str:
    """A role's quota guarantee, limit or consumption (name -> value) as ``cpus 2, mem 1G``;
    ``-`` when empty."""
    if not isinstance(amounts, dict) or not amounts:
        return "-"
    parts = []
    for name, value in sorted(amounts.items()):
        if isinstance(value, int | float):
            parts.append(f"{name} {mem(value) if name in ('mem', 'disk') else number(value)}")
    return ", ".join(parts) or "-"


def cmd_state(args: argparse.Namespace) -> int:
    """The state document is JSON with or without ``--json`` (accepted like on every other
    operator command, so scripts can pass it uniformly)."""
    with progress("Fetching the master's state..."):
        state = client(args).get_json("/master/state")
    print_json(state)
    return 0


# -- tasks --------------------------------------------------------------------------------------

# States a task in GET_TASKS' ``tasks`` list may be in; the others are in the
# ``unreachable_tasks`` and ``completed_tasks`` lists.
_LIVE_STATES = frozenset(
    {task_states.STAGING, task_states.STARTING, task_states.RUNNING, task_states.KILLING}
)


def normalise_state(text: str) -> str:
    """``running`` / ``TASK_RUNNING`` / ``Running`` -> ``TASK_RUNNING``; CliError (exit 2,
    listing the valid ones) for a state that does not exist."""
    upper = text.strip().upper().replace("-", "_")
    state = upper if upper.startswith("TASK_") else "TASK_" + upper
    if state not in task_states.ALL_STATES:
        valid = ", ".join(sorted(short_state(s).lower() for s in task_states.ALL_STATES))
        raise CliError(f"unknown task state '{text}'; valid states: {valid}", 2)
    return state


def cmd_tasks(args: argparse.Namespace) -> int:
    wanted = normalise_state(args.state) if args.state else None
    with progress("Asking the master for its tasks..."):
        answer = client(args).call("GET_TASKS")
    tasks = list(answer.get("tasks", []))
    # Asking for a state that only ended tasks have (failed, finished ...) implies --all.
    if args.all or (wanted is not None and wanted not in _LIVE_STATES):
        tasks += answer.get("unreachable_tasks", []) + answer.get("completed_tasks", [])
    if args.framework:
        tasks = [t for t in tasks if t["framework_id"]["value"].startswith(args.framework)]
    if wanted is not None:
        tasks = [t for t in tasks if t.get("state") == wanted]
    if args.json:
        print_json(tasks)
        return 0
    rows = []
    for t in tasks:
        res = scalars(t.get("resources", []))
        statuses = t.get("statuses") or []
        started = statuses[0].get("timestamp") if statuses else None
        rows.append(
            (
                t["task_id"]["value"],
                t.get("name", ""),
                short_state(t.get("state", "?")),
                t["framework_id"]["value"],
                t.get("agent_id", {}).get("value", ""),
                number(res.get("cpus", 0)),
                mem(res.get("mem", 0)),
                age(started),
            )
        )
    print_table(TASK_COLUMNS, rows, args.wide)
    return 0


# -- steering -----------------------------------------------------------------------------------


def cmd_teardown(args: argparse.Namespace) -> int:
    try:
        with progress(f"Tearing down {args.framework_id}..."):
            client(args).call("TEARDOWN", {"framework_id": {"value": args.framework_id}})
    except OperatorError as e:
        raise CliError(f"cannot tear down framework {args.framework_id}: {e.message}") from None
    if args.json:
        print_json({"framework_id": args.framework_id, "torn_down": True})
    else:
        print(f"Framework {args.framework_id} torn down")
    return 0


def cmd_agent_gone(args: argparse.Namespace) -> int:
    try:
        client(args).call("MARK_AGENT_GONE", {"agent_id": {"value": args.agent_id}})
    except OperatorError as e:
        raise CliError(f"cannot mark agent {args.agent_id} gone: {e.message}", NOT_FOUND) from None
    if args.json:
        print_json({"agent_id": args.agent_id, "gone": True})
    else:
        print(f"Agent {args.agent_id} marked gone")
    return 0


def cmd_agent_call(call: str, done: str, args: argparse.Namespace) -> int:
    """DEACTIVATE_AGENT / REACTIVATE_AGENT of one agent."""
    try:
        client(args).call(call, {"agent_id": {"value": args.agent_id}})
    except OperatorError as e:
        raise CliError(
            f"cannot {done[:-1]} agent {args.agent_id}: {e.message}", NOT_FOUND
        ) from None
    if args.json:
        print_json({"agent_id": args.agent_id, done: True})
    else:
        print(f"Agent {args.agent_id} {done}")
    return 0


def cmd_agent_prune_images(args: argparse.Namespace) -> int:
    """PRUNE_IMAGES on one agent, at the address the master knows it by."""
    master = client(args)
    address = task.agent_address(master, args.agent_id)
    excluded = [{"type": "DOCKER", "docker": {"name": name}} for name in args.exclude]
    # The operator's credentials go to the agent too (one run with --authenticate_http_*).
    principal, secret = master.credentials()
    agent = OperatorClient(address, timeout=master.timeout, principal=principal, secret=secret)
    try:
        with progress(f"Pruning the images of agent {args.agent_id} ({address})..."):
            agent.call("PRUNE_IMAGES", {"excluded_images": excluded})
    except OperatorError as e:
        raise CliError(f"agent {address} refused to prune images: {e.message}") from None
    except MasterUnreachable as e:
        reason = str(e).split(": ", 1)[-1]  # the client words it for a master
        raise CliError(f"cannot reach agent {address}: {reason}", 2) from None
    if args.json:
        print_json({"agent_id": args.agent_id, "pruned": True, "excluded": args.exclude})
    else:
        print(f"Agent {args.agent_id}: unused image layers removed")
    return 0


def cmd_agent_drain(args: argparse.Namespace) -> int:
    payload: dict[str, Any] = {"agent_id": {"value": args.agent_id}, "mark_gone": args.mark_gone}
    if args.grace is not None:
        payload["max_grace_period"] = {"nanoseconds": int(args.grace * 1e9)}
    try:
        client(args).call("DRAIN_AGENT", payload)
    except OperatorError as e:
        raise CliError(f"cannot drain agent {args.agent_id}: {e.message}", NOT_FOUND) from None
    if args.json:
        print_json({"agent_id": args.agent_id, "draining": True})
    else:
        print(f"Agent {args.agent_id} is draining")
    return 0
