"""``butte reservations|reserve|unreserve|volumes|volume``: an agent's reservations and
persistent volumes, looked at and changed through the master's operator API
(docs/reservations.md "From the command line and the web UI").

    butte reservations [--agent ID] [--role ROLE]     static and dynamic reservations (GET_STATE)
    butte reserve AGENT_ID RESOURCES --role ROLE      RESERVE_RESOURCES
    butte unreserve AGENT_ID RESOURCES --role ROLE    UNRESERVE_RESOURCES
    butte volumes [--agent ID] [--role ROLE]          persistent volumes (GET_STATE)
    butte volume create AGENT_ID --role R --size MB --id ID --container-path P   CREATE_VOLUMES
    butte volume destroy AGENT_ID ID [--role R]       DESTROY_VOLUMES

RESOURCES is the text form of ``--resources`` without roles (``cpus:1;mem:512;disk:100;
ports:[31000-31009]``), or a JSON list of v1 Resource objects in their reserved form, sent as
they are (for what the text cannot say: a disk with a source, several reservations at once).
``unreserve``, ``volume create`` and ``volume destroy`` find the reservation or volume to
name on the agent itself (GET_AGENTS), so an operator types roles and amounts, not
reservation stacks. Exit statuses as the other operator commands: 1 when the master refuses
(its reason is printed) or nothing matches on the agent, 2 when the master cannot be reached
or the command line is wrong.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from butte.cli.common import CliError, apply_env_defaults
from butte.cli.output import (
    NOT_FOUND,
    Column,
    add_common,
    add_wide,
    client,
    guarded,
    mem,
    print_json,
    print_table,
    progress,
)
from butte.client.operator import OperatorClient, OperatorError
from butte.core import reservation_rows
from butte.core.resources import (
    Disk,
    Reservation,
    ResourceError,
    Resources,
    parse_resources,
    validate_role,
)

RESERVATION_COLUMNS = (
    Column("AGENT", is_id=True),
    Column("HOST", 3),
    Column("ROLE"),
    Column("TYPE", 2),
    Column("PRINCIPAL", 1),
    Column("LABELS", 4),
    Column("RESOURCES"),
    Column("USED", 1),
    Column("USED BY", 5),
)
VOLUME_COLUMNS = (
    Column("AGENT", is_id=True),
    Column("ID", is_id=True),
    Column("ROLE"),
    Column("SIZE"),
    Column("SOURCE", 3),
    Column("CONTAINER PATH", 1),
    Column("MODE", 4),
    Column("PRINCIPAL", 5),
    Column("IN USE BY", 2),
)

_PRINCIPAL_NOTE = (
    " The reservation's principal is --principal (BUTTE_PRINCIPAL), the principal the "
    "command authenticates as: a master that authenticates requires them to be the same."
)


def add_commands(commands: argparse._SubParsersAction) -> None:
    """Adds the reservation and volume subcommands to the top-level parser."""
    parsers = []
    for name, summary in (
        ("reservations", "list the agents' static and dynamic reservations"),
        ("volumes", "list the agents' persistent volumes"),
    ):
        sub = commands.add_parser(name, help=summary, description=summary + " (GET_STATE).")
        add_common(sub)
        add_wide(sub)
        sub.add_argument("--agent", metavar="ID", help="only this agent (id or id prefix)")
        sub.add_argument("--role", help="only this role (the last role of a refined stack)")
        sub.set_defaults(handler=guarded(cmd_list), listing=name)
        parsers.append(sub)
    reserve = commands.add_parser(
        "reserve",
        help="reserve an agent's unreserved resources for a role (RESERVE_RESOURCES)",
        description="Reserves RESOURCES of the agent for ROLE (RESERVE_RESOURCES). RESOURCES: "
        "'cpus:1;mem:512;disk:100' (taken from unreserved resources, or with --refine from "
        "the agent's reservation for the nearest ancestor role of ROLE), or a JSON list of "
        "Resource objects in their reserved form, sent as they are." + _PRINCIPAL_NOTE,
    )
    _operation_flags(reserve)
    reserve.add_argument(
        "--refine",
        action="store_true",
        help="refine the agent's reservation for an ancestor role of ROLE (eng -> eng/web)",
    )
    reserve.set_defaults(handler=guarded(cmd_reserve))
    unreserve = commands.add_parser(
        "unreserve",
        help="give reserved resources of an agent back (UNRESERVE_RESOURCES)",
        description="Unreserves RESOURCES of the agent's reservation for ROLE "
        "(UNRESERVE_RESOURCES; a refined reservation goes back to its parent role). The "
        "reservation is looked up on the agent; --reserved-by and --label choose among "
        "several. RESOURCES as for 'reserve'.",
    )
    _operation_flags(unreserve)
    unreserve.add_argument(
        "--reserved-by", metavar="PRINCIPAL", help="only the reservation made by PRINCIPAL"
    )
    unreserve.set_defaults(handler=guarded(cmd_unreserve))
    parsers += [reserve, unreserve]
    parsers += _add_volume_command(commands)
    for parser in parsers:
        apply_env_defaults(parser, os.environ)


def _principal_is_also(sub: argparse.ArgumentParser, what: str) -> None:
    """``--principal`` of `add_common` names the credentials; here it is ``what`` too."""
    for action in sub._actions:
        if "--principal" in action.option_strings:
            action.help = f"principal to authenticate as, and {what}"


def _operation_flags(sub: argparse.ArgumentParser) -> None:
    add_common(sub)
    _principal_is_also(sub, "the new reservation's principal")
    sub.add_argument("agent_id", metavar="AGENT_ID")
    sub.add_argument("resources", metavar="RESOURCES")
    sub.add_argument("--role", help="the role (with RESOURCES as text; JSON names its own)")
    sub.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a label of the reservation (repeatable; with unreserve: it must have it)",
    )


def _add_volume_command(commands: argparse._SubParsersAction) -> list[argparse.ArgumentParser]:
    top = commands.add_parser(
        "volume",
        help="create or destroy a persistent volume (CREATE_VOLUMES, DESTROY_VOLUMES)",
        description="Create or destroy a persistent volume on an agent's reserved disk "
        "('butte volumes' lists them).",
    )
    actions = top.add_subparsers(dest="volume_command", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create",
        help="make a persistent volume of reserved disk (CREATE_VOLUMES)",
        description="Creates a persistent volume of SIZE MB of the agent's disk reserved for "
        "ROLE (CREATE_VOLUMES). The reservation (and the disk's source, PATH or MOUNT) is "
        "looked up on the agent; --reserved-by and --label choose among several. The "
        "volume's creator principal is --principal.",
    )
    add_common(create)
    _principal_is_also(create, "the volume's creator principal")
    create.add_argument("agent_id", metavar="AGENT_ID")
    create.add_argument("--role", required=True, help="role whose reserved disk holds it")
    create.add_argument("--size", type=float, required=True, metavar="MB", help="size in MB")
    create.add_argument("--id", required=True, dest="volume_id", help="the persistence id")
    create.add_argument(
        "--container-path",
        required=True,
        metavar="PATH",
        help="where tasks see it, relative to their sandbox",
    )
    create.add_argument("--mode", choices=("RW", "RO"), default="RW", help="access mode")
    create.add_argument(
        "--reserved-by", metavar="PRINCIPAL", help="use the reservation made by PRINCIPAL"
    )
    create.add_argument(
        "--label", action="append", default=[], metavar="KEY=VALUE", help="the reservation's"
    )
    create.set_defaults(handler=guarded(cmd_volume_create))
    destroy = actions.add_parser(
        "destroy",
        help="destroy a persistent volume and its data (DESTROY_VOLUMES)",
        description="Destroys the persistent volume ID of the agent (DESTROY_VOLUMES): its "
        "data is removed and the disk goes back to the reservation. A volume in use is not "
        "destroyed.",
    )
    add_common(destroy)
    destroy.add_argument("agent_id", metavar="AGENT_ID")
    destroy.add_argument("volume_id", metavar="ID")
    destroy.add_argument("--role", help="the volume's role, where two roles use the same id")
    destroy.set_defaults(handler=guarded(cmd_volume_destroy))
    return [create, destroy]


# -- listing ------------------------------------------------------------------------------------


def _labels_text(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


def cmd_list(args: argparse.Namespace) -> int:
    with progress("Asking the master for its state..."):
        state = client(args).call("GET_STATE")
    reservations, volumes = reservation_rows.rows_from_state(state)
    rows = reservations if args.listing == "reservations" else volumes
    if args.agent:
        rows = [r for r in rows if r["agent_id"].startswith(args.agent)]
    if args.role:
        rows = [r for r in rows if r["role"] == args.role]
    if args.json:
        print_json(rows)
        return 0
    if args.listing == "reservations":
        table = [
            (
                r["agent_id"],
                r["hostname"],
                " > ".join(r["roles"]),
                r["type"],
                r["principal"] or "-",
                _labels_text(r["labels"]),
                r["text"],
                r["used"] or "no",
                ",".join(r["used_by"]) or "-",
            )
            for r in rows
        ]
        print_table(RESERVATION_COLUMNS, table, args.wide)
    else:
        table = [
            (
                r["agent_id"],
                r["id"],
                " > ".join(r["roles"]),
                mem(r["size"]),
                r["source"] + (f" {r['root']}" if r["root"] else ""),
                r["container_path"] or "-",
                r["mode"],
                r["principal"] or "-",
                ",".join(r["used_by"]) or "-",
            )
            for r in rows
        ]
        print_table(VOLUME_COLUMNS, table, args.wide)
    return 0


# -- changing -----------------------------------------------------------------------------------


def parse_labels(pairs: list[str]) -> tuple[tuple[str, str], ...]:
    """``KEY=VALUE`` words as labels; CliError (exit 2) for a word without ``=``."""
    out = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"bad label '{pair}': expected KEY=VALUE", 2)
        out.append((key, value))
    return tuple(out)


def _check_role(role: str | None) -> str:
    if not role:
        raise CliError("--role is required (unless RESOURCES is a JSON list)", 2)
    error = validate_role(role, allow_star=False)
    if error:
        raise CliError(f"bad --role: {error}", 2)
    return role


def plain_amounts(text: str) -> Resources:
    """The text form of RESOURCES: amounts without roles, nothing empty."""
    try:
        amounts = parse_resources(text)
    except ResourceError as e:
        raise CliError(f"bad RESOURCES '{text}': {e}", 2) from None
    if not amounts:
        raise CliError(f"RESOURCES '{text}' names nothing", 2)
    if amounts.reserved():
        raise CliError("RESOURCES take no roles ('cpus:1', not 'cpus(ops):1'); use --role", 2)
    return amounts


def json_resources(
    text: str, args: argparse.Namespace | None = None
) -> list[dict[str, Any]] | None:
    """RESOURCES given as a JSON list (checked to be one), or None for the text form. The
    flags that build a reservation from the text form are refused with JSON (``args``),
    rather than ignored."""
    if not text.lstrip().startswith("["):
        return None
    for flag in ("role", "label", "refine", "reserved_by"):
        if args is not None and getattr(args, flag, None):
            name = "--" + flag.replace("_", "-")
            raise CliError(f"{name} goes with RESOURCES as text; JSON resources say it all", 2)
    try:
        items = json.loads(text)
    except ValueError as e:
        raise CliError(f"RESOURCES is not valid JSON: {e}", 2) from None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        raise CliError("RESOURCES in JSON must be a list of Resource objects", 2)
    return items


def on_stack(amounts: Resources, stack: reservation_rows.Stack) -> Resources:
    """``amounts`` (unreserved) under the reservation ``stack``."""
    out = Resources()
    for (name, _, _), value in amounts.items():
        out = out + Resources({(name, stack, None): value})
    return out


def agent_total(master: OperatorClient, agent_id: str) -> Resources:
    """The agent's total resources (GET_AGENTS); CliError (exit 1) for an unknown agent."""
    for agent in master.call("GET_AGENTS").get("agents", []):
        if agent.get("agent_info", {}).get("id", {}).get("value") == agent_id:
            return reservation_rows.parse_list(agent.get("total_resources"))
    raise CliError(f"no agent {agent_id} is registered with the master", NOT_FOUND)


def _stack_text(stack: reservation_rows.Stack) -> str:
    last = stack[-1]
    labels = _labels_text(dict(last.labels))
    return f"{' > '.join(s.role for s in stack)} (principal {last.principal or '-'}, {labels})"


def choose_stack(
    total: Resources,
    roles: list[str],
    agent_id: str,
    reserved_by: str | None = None,
    labels: tuple[tuple[str, str], ...] = (),
    holding: str | None = None,
) -> reservation_rows.Stack:
    """The one reservation stack on the agent for the first of ``roles`` that has any,
    narrowed by principal, labels and (``holding``) a resource name it must hold outside
    volumes; CliError (exit 1) for none or several."""
    for role in roles:
        stacks = reservation_rows.stacks_for(total, [role])
        if holding is not None:
            stacks = [s for s in stacks if _holds(total, s, holding)]
        if reserved_by is not None:
            stacks = [s for s in stacks if s[-1].principal == reserved_by]
        stacks = [s for s in stacks if set(labels) <= set(s[-1].labels)]
        if len(stacks) == 1:
            return stacks[0]
        if len(stacks) > 1:
            listed = "; ".join(_stack_text(s) for s in stacks)
            raise CliError(
                f"agent {agent_id} has several reservations for role '{role}': {listed}; "
                "choose one with --reserved-by or --label (or give RESOURCES as JSON)",
                NOT_FOUND,
            )
    raise CliError(
        f"agent {agent_id} has no such reservation for role '{roles[0]}'"
        + (" or its ancestors" if len(roles) > 1 else "")
        + (f" holding {holding} outside volumes" if holding else ""),
        NOT_FOUND,
    )


def _holds(total: Resources, stack: reservation_rows.Stack, name: str) -> bool:
    return any(
        k[0] == name and k[1] == stack and (k[2] is None or k[2].persistence_id is None)
        for k, _ in total.items()
    )


def ancestors(role: str) -> list[str]:
    """``a/b/c`` -> ``["a/b", "a"]`` (nearest first)."""
    parts = role.split("/")
    return ["/".join(parts[:i]) for i in range(len(parts) - 1, 0, -1)]


def _operate(args: argparse.Namespace, call: str, key: str, items: list[dict[str, Any]]) -> int:
    payload = {"agent_id": {"value": args.agent_id}, key: items}
    try:
        with progress(f"{call} on {args.agent_id}..."):
            client(args).call(call, payload)
    except OperatorError as e:
        raise CliError(f"{call} refused: {e}", NOT_FOUND) from None
    return 0


def _done(args: argparse.Namespace, what: str, items: list[dict[str, Any]], text: str) -> int:
    if args.json:
        print_json({"agent_id": args.agent_id, what: items})
    else:
        print(text)
    return 0


def cmd_reserve(args: argparse.Namespace) -> int:
    items = json_resources(args.resources, args)
    if items is None:
        role = _check_role(args.role)
        amounts = plain_amounts(args.resources)
        base: reservation_rows.Stack = ()
        if args.refine:
            parents = ancestors(role)
            if not parents:
                raise CliError(f"--refine needs a role below another one, not '{role}'", 2)
            total = agent_total(client(args), args.agent_id)
            base = choose_stack(total, parents, args.agent_id)
        new = Reservation(role, "DYNAMIC", args.principal, parse_labels(args.label))
        items = on_stack(amounts, (*base, new)).to_json("post")
        text = f"Reserved {amounts.to_text()} of agent {args.agent_id} for role {role}"
    else:
        text = f"Reserved {len(items)} resource(s) of agent {args.agent_id}"
    _operate(args, "RESERVE_RESOURCES", "resources", items)
    return _done(args, "reserved", items, text)


def cmd_unreserve(args: argparse.Namespace) -> int:
    items = json_resources(args.resources, args)
    if items is None:
        role = _check_role(args.role)
        amounts = plain_amounts(args.resources)
        labels = parse_labels(args.label)
        total = agent_total(client(args), args.agent_id)
        stack = choose_stack(total, [role], args.agent_id, args.reserved_by, labels)
        items = on_stack(amounts, stack).to_json("post")
        text = f"Unreserved {amounts.to_text()} of agent {args.agent_id} from role {role}"
    else:
        text = f"Unreserved {len(items)} resource(s) of agent {args.agent_id}"
    _operate(args, "UNRESERVE_RESOURCES", "resources", items)
    return _done(args, "unreserved", items, text)


def _disk_source(total: Resources, stack: reservation_rows.Stack) -> Disk | None:
    """The source of the reservation's plain disk (None: the agent's root disk); CliError
    when the reservation holds disks of several sources."""
    sources = {
        k[2].source_only() if k[2] is not None else None
        for k, _ in total.items()
        if k[0] == "disk" and k[1] == stack and (k[2] is None or k[2].persistence_id is None)
    }
    if len(sources) > 1:
        raise CliError(
            "the reservation holds disks of several sources: give the volume as JSON to "
            "CREATE_VOLUMES instead",
            NOT_FOUND,
        )
    return next(iter(sources), None)


def cmd_volume_create(args: argparse.Namespace) -> int:
    role = _check_role(args.role)
    if not args.volume_id:
        raise CliError("--id must not be empty", 2)
    if not 0 < args.size <= 1e12:
        raise CliError(f"--size must be a positive number of MB, not {args.size:g}", 2)
    labels = parse_labels(args.label)
    total = agent_total(client(args), args.agent_id)
    stack = choose_stack(total, [role], args.agent_id, args.reserved_by, labels, "disk")
    source = _disk_source(total, stack)
    disk = Disk(
        persistence_id=args.volume_id,
        principal=args.principal,
        container_path=args.container_path,
        mode=args.mode,
        source=source.source if source else "ROOT",
        root=source.root if source else None,
    )
    try:
        amount = Resources.from_json(
            [{"name": "disk", "type": "SCALAR", "scalar": {"value": args.size}}]
        )
    except ResourceError as e:
        raise CliError(f"bad --size: {e}", 2) from None
    millis = amount.scalar_millis("disk")
    items = Resources({("disk", stack, disk): millis}).to_json("post")
    _operate(args, "CREATE_VOLUMES", "volumes", items)
    text = f"Created volume {args.volume_id} ({mem(args.size)}) on agent {args.agent_id}"
    return _done(args, "volumes", items, text + f" for role {role}")


def cmd_volume_destroy(args: argparse.Namespace) -> int:
    total = agent_total(client(args), args.agent_id)
    found = [
        row
        for row in reservation_rows.volume_rows(args.agent_id, "", total, [])
        if row["id"] == args.volume_id and (args.role is None or row["role"] == args.role)
    ]
    if not found:
        raise CliError(f"agent {args.agent_id} has no volume '{args.volume_id}'", NOT_FOUND)
    if len(found) > 1:
        roles = ", ".join(r["role"] for r in found)
        message = f"volume '{args.volume_id}' exists for roles {roles}: give --role"
        raise CliError(message, NOT_FOUND)
    items = [found[0]["resource"]]
    _operate(args, "DESTROY_VOLUMES", "volumes", items)
    text = f"Destroyed volume {args.volume_id} on agent {args.agent_id}"
    return _done(args, "volumes", items, text)
