"""``butte maintenance``: the master's maintenance schedule and machine modes
(docs/maintenance.md).

    butte maintenance schedule                 print the schedule (JSON)
    butte maintenance schedule set FILE        replace it with FILE's Schedule JSON ('-': stdin)
    butte maintenance schedule clear           empty it
    butte maintenance status                   DRAINING machines with each framework's answer
                                               to its inverse offers, and DOWN machines
    butte maintenance down HOST[=IP] ...       START_MAINTENANCE (machines must be scheduled)
    butte maintenance up HOST[=IP] ...         STOP_MAINTENANCE (machines must be DOWN)

A machine is ``HOST``, ``=IP`` or ``HOST=IP``. Exit codes as the other operator commands: 1
when the master refuses (its reason is printed), 2 when it cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from butte.cli.common import CliError, apply_env_defaults
from butte.cli.output import Column, add_common, client, guarded, print_json, print_table
from butte.client.operator import OperatorError

STATUS_COLUMNS = (
    Column("MACHINE", is_id=True),
    Column("MODE"),
    Column("FRAMEWORK", 1, is_id=True),
    Column("ANSWER", 1),
)


def add_command(commands: argparse._SubParsersAction) -> None:
    """Adds ``butte maintenance`` and its actions to the top-level parser."""
    top = commands.add_parser(
        "maintenance",
        help="show and change the maintenance schedule, bring machines down and up",
        description="Show and change the master's maintenance schedule and machine modes "
        "(docs/maintenance.md).",
    )
    actions = top.add_subparsers(dest="maintenance_command", metavar="ACTION", required=True)
    schedule = actions.add_parser("schedule", help="print, set or clear the schedule")
    add_common(schedule, json_flag=False)
    schedule.add_argument("what", nargs="?", choices=["set", "clear"], help="change it")
    schedule.add_argument("file", nargs="?", help="Schedule JSON file for 'set' ('-': stdin)")
    schedule.set_defaults(handler=guarded(cmd_schedule))
    status = actions.add_parser("status", help="DRAINING and DOWN machines, inverse offer answers")
    add_common(status)
    status.set_defaults(handler=guarded(cmd_status))
    for name, summary in (
        ("down", "take scheduled machines DOWN (their agents are removed)"),
        ("up", "bring DOWN machines UP again (they leave the schedule)"),
    ):
        sub = actions.add_parser(name, help=summary, description=summary)
        add_common(sub)
        sub.add_argument("machines", nargs="+", metavar="HOST[=IP]")
        sub.set_defaults(handler=guarded(cmd_down if name == "down" else cmd_up))
    for parser in actions.choices.values():
        apply_env_defaults(parser, os.environ)


def machine_id(text: str) -> dict[str, str]:
    """``HOST``, ``=IP`` or ``HOST=IP`` as a MachineID."""
    hostname, _, ip = text.partition("=")
    out = {"hostname": hostname} if hostname else {}
    if ip:
        out["ip"] = ip
    if not out:
        raise CliError(f"'{text}' names no machine (HOST, =IP or HOST=IP)", 2)
    return out


def machine_text(machine: dict[str, Any]) -> str:
    hostname, ip = machine.get("hostname", ""), machine.get("ip", "")
    return f"{hostname}={ip}" if hostname and ip else hostname or f"={ip}"


def _call(args: argparse.Namespace, call: str, payload: dict[str, Any] | None) -> dict[str, Any]:
    try:
        return client(args).call(call, payload)
    except OperatorError as e:
        raise CliError(f"{call} refused: {e.message}") from None


def cmd_schedule(args: argparse.Namespace) -> int:
    if args.what is None:
        print_json(_call(args, "GET_MAINTENANCE_SCHEDULE", None).get("schedule", {}))
        return 0
    if args.what == "clear":
        schedule: Any = {"windows": []}
    else:
        if not args.file:
            raise CliError("'schedule set' needs a Schedule JSON file ('-' for stdin)", 2)
        try:
            if args.file == "-":
                schedule = json.load(sys.stdin)
            else:
                with open(args.file, encoding="utf-8") as f:
                    schedule = json.load(f)
        except (OSError, ValueError) as e:
            raise CliError(f"cannot read a schedule from {args.file}: {e}", 2) from None
    _call(args, "UPDATE_MAINTENANCE_SCHEDULE", {"schedule": schedule})
    windows = schedule.get("windows", []) if isinstance(schedule, dict) else []
    print(f"Maintenance schedule updated: {len(windows)} window(s)")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status = _call(args, "GET_MAINTENANCE_STATUS", None).get("status", {})
    if args.json:
        print_json(status)
        return 0
    rows = []
    for entry in status.get("draining_machines", []):
        name = machine_text(entry.get("id", {}))
        answers = entry.get("statuses") or [{}]
        for answer in answers:
            fid = answer.get("framework_id", {}).get("value", "")
            rows.append([name, "DRAINING", fid, answer.get("status", "")])
    for machine in status.get("down_machines", []):
        rows.append([machine_text(machine), "DOWN", "", ""])
    print_table(STATUS_COLUMNS, rows, wide=getattr(args, "wide", False))
    return 0


def _modes(args: argparse.Namespace, call: str, mode: str) -> int:
    machines = [machine_id(m) for m in args.machines]
    _call(args, call, {"machines": machines})
    if args.json:
        print_json({"machines": machines, "mode": mode})
    else:
        print(f"{len(machines)} machine(s) {mode}: {', '.join(args.machines)}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    return _modes(args, "START_MAINTENANCE", "DOWN")


def cmd_up(args: argparse.Namespace) -> int:
    return _modes(args, "STOP_MAINTENANCE", "UP")
