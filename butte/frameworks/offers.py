"""Offers as the bundled frameworks' planners see them, and TaskInfos built from their choices.

The planners (`butte.frameworks.spark.plan`, `butte.dask.plan`) are pure: they get an
`OfferView` (what one offer holds, in plain numbers) and answer with the cpus, memory and
ports each new task takes from it. `task_resources` turns such a choice back into the
resources of a TaskInfo.

The other frameworks read offers with the same pieces: `plain_resources` (what a task can
take as plain amounts), `offer_role` and `attributes_of` (for placement constraints).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from butte.coord.url import is_zk_url, parse_zk_url
from butte.core.resources import ResourceError, Resources, parse_resources


@dataclass(frozen=True)
class OfferView:
    """The plain (unreserved, non-volume, non-revocable) resources of one
    offer: cpus, memory in MiB and the offered port ranges."""

    offer_id: str
    agent_id: str
    hostname: str
    role: str
    cpus: float
    mem: float
    ports: tuple[tuple[int, int], ...]

    def port_count(self) -> int:
        return sum(end - begin + 1 for begin, end in self.ports)


# What makes a resource more than a plain amount: a persistent volume or disk source, a
# revocable or shared resource, one from a resource provider. The bundled frameworks' tasks
# take none of these.
_NOT_PLAIN = ("disk", "revocable", "shared", "provider_id")


def plain_resources(offer: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The offer's resources (JSON) that a task can take as plain amounts (see `_NOT_PLAIN`);
    reserved ones included: callers that take only unreserved ones filter further."""
    return [r for r in offer.get("resources", []) if not any(k in r for k in _NOT_PLAIN)]


def offer_role(offer: Mapping[str, Any], default: str = "*") -> str:
    """The role the master allocated the offer to (``allocation_info.role``)."""
    role: str = offer.get("allocation_info", {}).get("role", default)
    return role


def attributes_of(offer: Mapping[str, Any]) -> dict[str, str]:
    """An offer's attributes as strings (text, scalar, ranges or set values)."""
    out: dict[str, str] = {}
    for a in offer.get("attributes") or ():
        kind = a.get("type")
        if kind == "TEXT":
            out[a["name"]] = str(a.get("text", {}).get("value", ""))
        elif kind == "SCALAR":
            v = a.get("scalar", {}).get("value", 0)
            out[a["name"]] = str(int(v)) if float(v).is_integer() else str(v)
        elif kind == "RANGES":
            ranges = a.get("ranges", {}).get("range", [])
            out[a["name"]] = ",".join(f"[{r['begin']}-{r['end']}]" for r in ranges)
        elif kind == "SET":
            out[a["name"]] = ",".join(a.get("set", {}).get("item", []))
    return out


def offer_view(offer: Mapping[str, Any], default_role: str = "*") -> OfferView:
    """The `OfferView` of an offer as the master sent it. Raises ResourceError for resources
    that cannot be parsed."""
    # Only unreserved resources: the TaskInfos built by task_resources carry no reservation.
    resources = Resources.from_json(plain_resources(offer)).unreserved()
    return OfferView(
        offer_id=offer["id"]["value"],
        agent_id=offer["agent_id"]["value"],
        hostname=offer.get("hostname") or "",
        role=offer_role(offer, default_role),
        cpus=resources.scalar("cpus"),
        mem=resources.scalar("mem"),
        ports=tuple(resources.ranges("ports")),
    )


def take_ports(ranges: Sequence[tuple[int, int]], count: int) -> tuple[list[int], list]:
    """The ``count`` lowest ports of ``ranges`` and the ranges left; ValueError when the
    ranges hold fewer ports."""
    taken: list[int] = []
    left: list[tuple[int, int]] = []
    for begin, end in ranges:
        while len(taken) < count and begin <= end:
            taken.append(begin)
            begin += 1
        if begin <= end:
            left.append((begin, end))
    if len(taken) < count:
        raise ValueError(f"offer has {len(taken)} port(s), {count} needed")
    return taken, left


def task_resources(cpus: float, mem: float, ports: Sequence[int], role: str) -> list[dict]:
    """The ``resources`` of a TaskInfo taking ``cpus``, ``mem`` MiB and ``ports`` from an
    offer allocated to ``role``."""
    text = f"cpus:{cpus:g};mem:{mem:g}"
    if ports:
        text += ";ports:[" + ",".join(f"{p}-{p}" for p in ports) + "]"
    try:
        return parse_resources(text).to_json("pre", allocation_role=role)
    except ResourceError as e:  # a planner bug, not bad input: say so loudly
        raise ValueError(f"cannot express {text!r} as resources: {e}") from None


def local_address_for(master: str) -> str:
    """The local address that agents can reach this process at: the one this host uses to
    reach the master (``HOST:PORT``, ``h1:p1,h2:p2`` or ``zk://...``)."""
    if is_zk_url(master):
        host = parse_zk_url(master).hosts[0][0]
    else:
        first = master.split(",")[0].strip().split("//")[-1].split("/")[0]
        host = first.rsplit(":", 1)[0] if ":" in first else first
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((host, 9))  # a UDP connect sends nothing; it only picks a route
            return probe.getsockname()[0]
    except OSError:
        return socket.gethostbyname(socket.gethostname())
