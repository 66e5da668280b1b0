"""Master flags of offer lifetime and registry pruning (``butte master --help``):
``--offer_timeout``, ``--registry_gc_interval``, ``--registry_max_agent_age`` and
``--registry_max_agent_count``, with Mesos' defaults. `butte.master.offer_lifetime` acts on
them."""

from __future__ import annotations

import argparse
from typing import Any

from butte.core.durations import parse_duration


def add_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--offer_timeout",
        default=None,
        help="rescind offers a framework holds longer than this duration, giving their "
        "resources back to the allocator (default: offers never time out)",
    )
    parser.add_argument(
        "--registry_gc_interval",
        default="15mins",
        help="how often unreachable and gone agents are pruned from the registry (default 15mins)",
    )
    parser.add_argument(
        "--registry_max_agent_age",
        default="2weeks",
        help="unreachable and gone agents older than this are pruned from the registry "
        "(default 2weeks)",
    )
    parser.add_argument(
        "--registry_max_agent_count",
        type=int,
        default=100 * 1024,
        help="at most this many unreachable (and this many gone) agents are kept in the "
        "registry, the oldest pruned first (default 102400)",
    )


def options(args: argparse.Namespace) -> dict[str, Any]:
    """The `MasterOptions` fields these flags set; raises ValueError with a clear message."""
    out: dict[str, Any] = {}
    for name in ("offer_timeout", "registry_gc_interval", "registry_max_agent_age"):
        text = getattr(args, name)
        if text is None:
            out[name] = None
            continue
        try:
            seconds = parse_duration(text)
        except ValueError as e:
            raise ValueError(f"--{name}: {e}") from None
        if seconds <= 0:
            raise ValueError(f"--{name} must be positive")
        out[name] = seconds
    if args.registry_max_agent_count < 0:
        raise ValueError("--registry_max_agent_count must not be negative")
    out["registry_max_agent_count"] = args.registry_max_agent_count
    return out
