"""The cluster's utilisation over the last hour, kept by the master for the web UI's chart.

A fixed-size ring buffer of samples, one every `SAMPLE_SECONDS` while this master leads:
what tasks and executors hold (``used``), what the agents have (``total``) and what is
offered and not yet answered (``offered``) of each of ``cpus``, ``mem``, ``disk`` and
``gpus``. A sample is 13 numbers; an hour of them is 720 samples (about 60 KB as JSON), so
the page draws the whole hour as soon as it opens instead of only what it saw itself.

Pure apart from reading the master's records: the shell calls `sample` from a timer with the
current time and serves `to_json`.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from butte.core import task_states
from butte.core.resources import Resources, from_millis
from butte.master.machine import MasterMachine

SAMPLE_SECONDS = 5.0
WINDOW_SECONDS = 3600.0
SCALARS = ("cpus", "mem", "disk", "gpus")

# [epoch milliseconds, then used, total, offered of each of SCALARS]
Sample = tuple[float, ...]


def _held(machine: MasterMachine) -> Iterator[Resources]:
    """Resources held by live tasks and by executors."""
    for fw in machine.frameworks.values():
        for task in fw.tasks.values():
            if not task_states.is_terminal(task.state):
                yield task.resources
    for agent in machine.agents.values():
        for executor in agent.executors.values():
            yield executor.resources


def _sum(items: Iterable[Resources]) -> dict[str, float]:
    """Scalar totals of ``items``. Tasks of one shape share a `Resources` (and equal ones
    hash alike), so they are counted first and each distinct shape is added once."""
    counts: dict[Resources, int] = {}
    for res in items:
        counts[res] = counts.get(res, 0) + 1
    millis: dict[str, int] = {}
    for res, n in counts.items():
        for name, amount in res.quantities().items():
            millis[name] = millis.get(name, 0) + amount * n
    return {name: from_millis(amount) for name, amount in millis.items()}


def utilisation_sample(machine: MasterMachine, now: float) -> Sample:
    """One sample of the cluster at ``now`` (epoch seconds); about 40 ms at 10k agents
    and 100k tasks."""
    total = _sum(agent.total for agent in machine.agents.values())
    used = _sum(_held(machine))
    offered = _sum(offer.resources for offer in machine.offers.values())
    values = itertools.chain.from_iterable(
        (_number(used, name), _number(total, name), _number(offered, name)) for name in SCALARS
    )
    return (round(now * 1000.0), *values)


def _number(amounts: dict[str, float], name: str) -> float:
    return round(amounts.get(name, 0.0), 3)


class UtilisationHistory:
    """The ring buffer of samples (see the module docstring)."""

    def __init__(self, interval: float = SAMPLE_SECONDS, window: float = WINDOW_SECONDS) -> None:
        if interval <= 0 or window < interval:
            raise ValueError("need 0 < interval <= window")
        self.interval = interval
        self.samples: deque[Sample] = deque(maxlen=int(window / interval))

    def add(self, sample: Sample) -> None:
        """Appends one sample; the oldest falls out once the window is full."""
        self.samples.append(sample)

    def sample(self, machine: MasterMachine, now: float) -> None:
        """Takes and keeps one sample of ``machine`` at ``now``."""
        self.add(utilisation_sample(machine, now))

    def to_json(self, since_ms: float | None = None) -> dict[str, Any]:
        """``{interval_seconds, fields, samples}``: the samples taken after ``since_ms``
        (epoch milliseconds; all of them when None), oldest first."""
        samples = self.samples
        if since_ms is not None:
            # Newest last: walk back only over what is new.
            new: list[Sample] = []
            for s in reversed(samples):
                if s[0] <= since_ms:
                    break
                new.append(s)
            chosen: Iterable[Sample] = reversed(new)
        else:
            chosen = samples
        return {
            "interval_seconds": self.interval,
            "fields": ["time_ms"]
            + [f"{name}_{kind}" for name in SCALARS for kind in ("used", "total", "offered")],
            "samples": [list(s) for s in chosen],
        }
