"""Pieces of the operator surface that the master and the agent shells both serve.

* `prometheus_text`: a ``/metrics/snapshot`` map (Mesos names like ``master/uptime_secs``) as
  Prometheus text exposition (prometheus-client's format), names sanitised
  (``master_uptime_secs``); per-role figures become a ``role`` label.
* `LoggingLevel`: GET_LOGGING_LEVEL / SET_LOGGING_LEVEL. Mesos' level is glog's verbosity
  (0 = normal); here level >= 1 turns on DEBUG logging for ``duration``, then it reverts.
* `file_info`: an ``os.stat`` result as a v1 ``FileInfo`` and a legacy ``/files/browse`` entry.
* `quiet_bad_requests`: aiohttp's log of a malformed request (a URL over 8 KB, a bad header)
  as one INFO line instead of an ERROR with a traceback, each time.
* `system_metrics`: the ``system/*`` figures every Mesos process serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import stat
from collections.abc import Iterator, Mapping
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

PROMETHEUS_CONTENT_TYPE = CONTENT_TYPE_LATEST

_INVALID = re.compile(r"[^a-zA-Z0-9_:]")
# ``allocator/mesos/roles/<role>/shares/dominant`` -> name without the role, role as label.
_ROLE_METRIC = re.compile(r"^(?P<head>.*?/roles)/(?P<role>[^/]+)/(?P<tail>.+)$")


def prometheus_name(name: str) -> str:
    """A Mesos metric name as a valid Prometheus metric name."""
    out = _INVALID.sub("_", name)
    if not out or out[0].isdigit():
        out = "_" + out
    return out


class _SnapshotCollector(Collector):
    def __init__(self, snapshot: Mapping[str, float], help_prefix: str) -> None:
        self._snapshot = snapshot
        self._help = help_prefix

    def collect(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily] = {}
        for key, value in sorted(self._snapshot.items()):
            match = _ROLE_METRIC.match(key)
            labels: dict[str, str] = {}
            if match:
                name = prometheus_name(f"{match['head']}/{match['tail']}")
                labels = {"role": match["role"]}
            else:
                name = prometheus_name(key)
            family = families.get(name)
            if family is None:
                family = GaugeMetricFamily(
                    name, f"{self._help} {key}", labels=sorted(labels) or None
                )
                families[name] = family
            family.add_metric([labels[k] for k in sorted(labels)], float(value))
        yield from families.values()


def prometheus_text(snapshot: Mapping[str, float], help_prefix: str = "Mesos metric") -> bytes:
    """The snapshot in Prometheus text format (a private registry, so nothing global)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snapshot, help_prefix))
    return generate_latest(registry)


class _BadRequestLog(logging.Filter):
    """Turns aiohttp's "Error handling request" records about malformed requests into one
    brief INFO line: bad input from outside, logged at a level an operator can keep on."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError) and record.levelno >= logging.ERROR:
            record.levelno, record.levelname = logging.INFO, "INFO"
            message = str(error).replace("\n", " ")
            record.msg, record.args = "Malformed HTTP request refused: %s", (message[:200],)
            record.exc_info = record.exc_text = None
        return True


def quiet_bad_requests() -> None:
    """Installs `_BadRequestLog` on aiohttp's server logger (once)."""
    logger = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, _BadRequestLog) for f in logger.filters):
        logger.addFilter(_BadRequestLog())


class LoggingLevel:
    """The process-wide verbosity that SET_LOGGING_LEVEL changes for a while."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger()
        self._base = self._logger.level
        self._level = 0
        self._revert: asyncio.TimerHandle | None = None

    @property
    def level(self) -> int:
        return self._level

    def set(self, level: int, duration: float) -> str | None:
        """Applies ``level`` for ``duration`` seconds; an error message for bad values."""
        if level < 0 or level > 2**32 - 1:
            return "'level' must be a non-negative 32-bit integer"
        if not 0 < duration <= 365 * 24 * 3600:
            return "'duration' must be positive and at most a year"
        if self._revert is not None:
            self._revert.cancel()
        self._apply(level)
        loop = asyncio.get_running_loop()
        self._revert = loop.call_later(duration, self._apply, 0)
        return None

    def _apply(self, level: int) -> None:
        self._level = level
        self._logger.setLevel(logging.DEBUG if level > 0 else self._base)


def file_info(path: str, st: os.stat_result) -> dict[str, Any]:
    """A v1 ``FileInfo`` (LIST_FILES)."""
    return {
        "path": path,
        "nlink": st.st_nlink,
        "size": st.st_size,
        "mtime": {"nanoseconds": st.st_mtime_ns},
        "mode": st.st_mode,
        "uid": _user(st.st_uid),
        "gid": _group(st.st_gid),
    }


def legacy_file_info(path: str, st: os.stat_result) -> dict[str, Any]:
    """One ``/files/browse`` entry (mtime in epoch seconds, mode as ``-rw-r--r--``)."""
    return {
        "path": path,
        "nlink": st.st_nlink,
        "size": st.st_size,
        "mtime": int(st.st_mtime),
        "mode": stat.filemode(st.st_mode),
        "uid": _user(st.st_uid),
        "gid": _group(st.st_gid),
    }


def _user(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (KeyError, ImportError):
        return str(uid)


def _group(gid: int) -> str:
    try:
        import grp

        return grp.getgrgid(gid).gr_name
    except (KeyError, ImportError):
        return str(gid)


def system_metrics() -> dict[str, float]:
    """``system/*``: the host's CPUs, load and memory (as Mesos reports them)."""
    out: dict[str, float] = {"system/cpus_total": float(os.cpu_count() or 1)}
    with contextlib.suppress(OSError):
        one, five, fifteen = os.getloadavg()
        out.update({"system/load_1min": one, "system/load_5min": five})
        out["system/load_15min"] = fifteen
    with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
        with open("/proc/meminfo") as f:
            info = {line.split(":")[0]: line.split()[1] for line in f if ":" in line}
        out["system/mem_total_bytes"] = float(int(info["MemTotal"]) * 1024)
        out["system/mem_free_bytes"] = float(int(info.get("MemAvailable", "0")) * 1024)
    return out
