"""``butte top``: a live view of the cluster's utilisation, refreshed every ``--interval``.

Shows the cluster's CPUs, memory, disk and GPUs used of total (with bars), task counts by
state, the busiest agents and the frameworks holding the most. It reads
``/metrics/snapshot``, GET_AGENTS and GET_FRAMEWORKS each refresh. ``--once`` prints one
frame and exits (for scripts and tests); Ctrl-C ends the live view.

Per task, used vs its container's limits: the busiest agents' ``/monitor/statistics`` (memory
used against the container's memory limit, CPU seconds so far, and the container's CPUs; exact
with cgroup isolators, docs/isolation.md). A container's limits are its tasks' resources plus
its executor's own (a command task's executor adds 0.1 CPUs and 32 MB). An agent that does
not answer within a second is left out.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import urllib.request
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from butte.cli.output import (
    Column,
    add_common,
    add_wide,
    client,
    fit_table,
    guarded,
    mem,
    number,
    scalars,
    stdout,
    uncut_console,
    used_of,
)
from butte.client.operator import MasterUnreachable, OperatorClient
from butte.core.auth import basic_header
from butte.core.tls import TlsError, client_context_for

_RESOURCES = (("cpus", number), ("mem", mem), ("disk", mem), ("gpus", number))
_STATES = ("staging", "starting", "running", "killing", "finished", "failed", "killed", "lost")


def add_command(commands: argparse._SubParsersAction) -> None:
    sub = commands.add_parser("top", help="live view of cluster utilisation")
    add_common(sub, json_flag=False)
    add_wide(sub, json_flag=False)
    sub.add_argument("--once", action="store_true", help="print one frame and exit")
    sub.add_argument("--interval", type=float, default=2.0, help="seconds between refreshes")
    sub.add_argument("--rows", type=int, default=15, help="agents and frameworks shown (15)")
    sub.set_defaults(handler=guarded(cmd_top))


def snapshot(master: OperatorClient) -> dict[str, Any]:
    """Everything one frame shows."""
    agents = master.call("GET_AGENTS").get("agents", [])
    return {
        "metrics": master.get_json("/metrics/snapshot"),
        "agents": agents,
        "frameworks": master.call("GET_FRAMEWORKS").get("frameworks", []),
        "usage": container_usage(agents, credentials=master.credentials()),
        "master": master.address,
        "time": time.time(),
    }


def container_usage(
    agents: list[dict[str, Any]],
    limit: int = 15,
    credentials: tuple[str | None, str | None] = (None, None),
) -> list[dict[str, Any]]:
    """``/monitor/statistics`` of the ``limit`` busiest agents, each entry with its agent
    (``credentials``: the operator's, for agents run with ``--authenticate_http_readonly``)."""
    principal, secret = credentials
    headers = {"Authorization": basic_header(principal, secret or "")} if principal else {}
    ranked = sorted(
        agents,
        key=lambda a: _share(
            scalars(a.get("allocated_resources") or []), scalars(a.get("total_resources") or [])
        ),
        reverse=True,
    )
    out: list[dict[str, Any]] = []
    try:  # agents speak TLS when LIBPROCESS_SSL_ENABLED says so (docs/operating.md "TLS")
        context = client_context_for("", os.environ)
    except TlsError:
        return out
    scheme = "http" if context is None else "https"
    for a in ranked[:limit]:
        info = a.get("agent_info", {})
        url = f"{scheme}://{info.get('hostname')}:{info.get('port')}/monitor/statistics"
        try:
            request = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(request, timeout=1.0, context=context) as response:
                entries = json.load(response)
        except (OSError, ValueError):
            continue
        for entry in entries if isinstance(entries, list) else []:
            out.append({**entry, "agent": info.get("id", {}).get("value", "?")})
    return out


def render(data: dict[str, Any], rows: int = 15, width: int = 200, wide: bool = False) -> Group:
    """One frame of the view, its tables fitted to ``width`` columns (IDs are never cut:
    less important columns are dropped instead, unless ``wide``)."""
    m = data["metrics"]
    host, port = data["master"]
    header = Text.assemble(
        ("butte top", "bold"),
        f"  master {host}:{port}  ",
        f"agents {int(m.get('master/slaves_active', 0))} active / "
        f"{int(m.get('master/slaves_connected', 0))} connected  ",
        f"frameworks {int(m.get('master/frameworks_active', 0))} active  ",
        time.strftime("%H:%M:%S", time.localtime(data["time"])),
    )
    usage = Table.grid(padding=(0, 2))
    for name, fmt in _RESOURCES:
        total, used = m.get(f"master/{name}_total", 0.0), m.get(f"master/{name}_used", 0.0)
        bar = ProgressBar(total=max(total, 1e-9), completed=used, width=40)
        percent = f"{100 * used / total:5.1f}%" if total else "    -"
        usage.add_row(name.upper(), bar, percent, used_of(used, total, fmt))
    counts = "  ".join(f"{s} {int(m.get(f'master/tasks_{s}', 0))}" for s in _STATES)
    return Group(
        header,
        usage,
        Text("tasks: " + counts),
        _agents_table(data["agents"], rows, width, wide),
        _frameworks_table(data["frameworks"], rows, width, wide),
        _usage_table(data.get("usage", []), rows, width, wide),
    )


_USAGE_COLUMNS = (
    Column("TASK", is_id=True),
    Column("AGENT", 4),
    Column("MEM USED/LIMIT", 1),
    Column("CPU SECS", 2),
    Column("CPUS LIMIT", 3),
)


def _usage_table(usage: list[dict[str, Any]], rows: int, width: int, wide: bool) -> Table:
    mb = 1024 * 1024
    ranked = sorted(
        usage,
        key=lambda e: e.get("statistics", {}).get("mem_rss_bytes", 0),
        reverse=True,
    )
    lines = []
    for entry in ranked[:rows]:
        stats = entry.get("statistics", {})
        used = stats.get("mem_total_bytes", stats.get("mem_rss_bytes", 0)) / mb
        limit = stats.get("mem_limit_bytes", 0) / mb
        cpu = stats.get("cpus_user_time_secs", 0) + stats.get("cpus_system_time_secs", 0)
        lines.append(
            (
                entry.get("source") or entry.get("executor_id", "?"),
                entry["agent"],
                used_of(used, limit, mem),
                f"{cpu:.2f}",
                number(stats.get("cpus_limit", 0)),
            )
        )
    return fit_table(_USAGE_COLUMNS, lines, width, wide, title="Tasks: used vs container limits")


def _share(used: dict[str, float], total: dict[str, float]) -> float:
    return max((used.get(k, 0) / v for k, v in total.items() if v), default=0.0)


_AGENT_COLUMNS = (
    Column("AGENT", is_id=True),
    Column("HOST", 5),
    Column("CPUS", 1),
    Column("MEM", 2),
    Column("DISK", 3),
    Column("GPUS", 4),
)
_FRAMEWORK_COLUMNS = (
    Column("FRAMEWORK", is_id=True),
    Column("NAME", 1),
    Column("CPUS", 2),
    Column("MEM", 3),
    Column("GPUS", 4),
)


def _agents_table(agents: list[dict[str, Any]], rows: int, width: int, wide: bool) -> Table:
    ranked = []
    for a in agents:
        total, used = (
            scalars(a.get("total_resources", [])),
            scalars(a.get("allocated_resources") or []),
        )
        ranked.append((_share(used, total), a, total, used))
    ranked.sort(key=lambda r: r[0], reverse=True)
    lines = []
    for _, a, total, used in ranked[:rows]:
        info = a.get("agent_info", {})
        lines.append(
            (
                info.get("id", {}).get("value", "?"),
                f"{info.get('hostname', '?')}:{info.get('port', '?')}",
                *(used_of(used.get(n, 0), total.get(n, 0), f) for n, f in _RESOURCES),
            )
        )
    return fit_table(_AGENT_COLUMNS, lines, width, wide, title="Busiest agents")


def _frameworks_table(frameworks: list[dict[str, Any]], rows: int, width: int, wide: bool) -> Table:
    ranked = [(scalars(f.get("allocated_resources", [])), f) for f in frameworks]
    ranked.sort(key=lambda r: (r[0].get("cpus", 0), r[0].get("mem", 0)), reverse=True)
    lines = []
    for used, f in ranked[:rows]:
        info = f.get("framework_info", {})
        lines.append(
            (
                info.get("id", {}).get("value", "?"),
                info.get("name", ""),
                number(used.get("cpus", 0)),
                mem(used.get("mem", 0)),
                number(used.get("gpus", 0)),
            )
        )
    return fit_table(_FRAMEWORK_COLUMNS, lines, width, wide, title="Frameworks by allocation")


def cmd_top(args: argparse.Namespace) -> int:
    master = client(args)
    console = stdout()

    def frame() -> Group:
        return render(snapshot(master), args.rows, console.width, args.wide)

    first = frame()
    console = uncut_console(console, first, args.wide)
    if args.once:
        console.print(first)
        return 0
    interval = max(0.2, args.interval)
    with Live(first, console=console, screen=False) as live:
        while True:
            time.sleep(interval)
            try:
                live.update(frame())
            except MasterUnreachable as e:
                live.update(Text(f"master unreachable: {e}; retrying", style="bold red"))
