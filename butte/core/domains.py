"""Fault domains (Mesos' ``DomainInfo``): the region and zone a master or agent is in.

Masters and agents take ``--domain``; an agent's domain travels in its AgentInfo and in its
offers. Agents in a region other than the master's are *remote*: their resources are offered
only to frameworks with the ``REGION_AWARE`` capability (the allocator's `_pick`). An agent
with a domain cannot register with a master without one (the master could not tell whether it
is remote), nor one without a domain with a master run with ``--require_agent_domain``; as in
Mesos, such a registration is ignored (not shut down: its tasks keep running) and the agent
retries. docs/operating.md "Fault domains".
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from typing import Any

REGION_AWARE = "REGION_AWARE"


def parse_domain(text: str, flag: str = "--domain") -> dict[str, Any]:
    """``--domain``: DomainInfo JSON, given inline or as a path or ``file://`` URL of it.
    ValueError names what is wrong: as Mesos, a domain must define ``fault_domain``, with a
    ``region`` and a ``zone``, each with a non-empty ``name``."""
    body = text
    if not text.lstrip().startswith(("{", "[")):
        path = text[len("file://") :] if text.startswith("file://") else text
        try:
            with open(path, encoding="utf-8") as f:
                body = f.read()
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
            raise ValueError(f"{flag}: cannot read {path}: {reason}") from None
    try:
        domain = json.loads(body)
    except json.JSONDecodeError as e:
        raise ValueError(f"{flag}: not JSON: {e}") from None
    if not isinstance(domain, dict):
        raise ValueError(f"{flag}: expected a JSON object (DomainInfo)")
    unknown = set(domain) - {"fault_domain"}
    if unknown:
        raise ValueError(f"{flag}: unknown field(s) {', '.join(sorted(unknown))}")
    fault = domain.get("fault_domain")
    if not isinstance(fault, dict):
        raise ValueError(f"{flag}: `domain` must define `fault_domain`")
    unknown = set(fault) - {"region", "zone"}
    if unknown:
        raise ValueError(f"{flag}: unknown field(s) of fault_domain: {', '.join(sorted(unknown))}")
    for level in ("region", "zone"):
        part = fault.get(level)
        if not isinstance(part, dict) or not isinstance(part.get("name"), str) or not part["name"]:
            raise ValueError(f"{flag}: fault_domain.{level}.name must be a non-empty string")
        if set(part) != {"name"}:
            raise ValueError(f"{flag}: fault_domain.{level} takes only `name`")
    return domain


def domain_flag(text: str) -> dict[str, Any]:
    """argparse type of the masters' and agents' ``--domain``."""
    try:
        return parse_domain(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--domain: ")) from None


def region(domain: Mapping[str, Any] | None) -> str | None:
    """The region name of a domain (None: no domain, or one without a fault domain, which
    Mesos treats as no domain)."""
    fault = domain.get("fault_domain") if isinstance(domain, Mapping) else None
    part = fault.get("region") if isinstance(fault, Mapping) else None
    name = part.get("name") if isinstance(part, Mapping) else None
    return name if isinstance(name, str) else None


def is_remote(master_domain: Mapping[str, Any] | None, agent: Mapping[str, Any] | None) -> bool:
    """Whether an agent is in a region other than the master's. An agent without a fault
    domain is local; an admitted agent with one implies the master has one."""
    theirs = region(agent)
    return theirs is not None and theirs != region(master_domain)


def registration_refusal(
    master_domain: Mapping[str, Any] | None,
    require_agent_domain: bool,
    agent: Mapping[str, Any] | None,
) -> str | None:
    """Why the master ignores an agent's (re-)registration for its domain, or None."""
    if agent is not None and master_domain is None:
        return (
            f"the agent is configured with domain {json.dumps(agent, sort_keys=True)} "
            "but the master has no configured domain"
        )
    if agent is None and require_agent_domain:
        return "the agent has no domain, and this master requires agent domains"
    return None
