"""Shared pieces of the benchmarks: figures and their table, the machine they ran on, and
real master / simulated-agent processes on 127.0.0.1.

A `Figure` is one row of the table `bench/run_all.py` prints: median/min/max of its samples,
the target, the ratio (measured / target for times, target / measured for rates, so <= 1.0
meets the target either way) and a verdict.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from butte.cli.local import free_port  # noqa: E402

PYTHON = sys.executable
# How children run `butte` (BENCH_BUTTE="python /path/wrapper.py" to try another loop).
BUTTE = os.environ.get("BENCH_BUTTE", f"{PYTHON} -m butte").split()


@dataclass
class Figure:
    """One measured figure against its target (see the module docstring)."""

    number: str
    what: str
    samples: list[float]
    unit: str
    target: float | None
    higher_is_better: bool = False
    note: str = ""
    error: str = ""
    # A figure whose target is only "completes" (no bound on the value).
    completes_only: bool = False

    @property
    def median(self) -> float:
        return statistics.median(self.samples) if self.samples else float("nan")

    @property
    def ratio(self) -> float | None:
        if self.error or not self.samples or self.target is None or self.completes_only:
            return None
        med = self.median
        if self.higher_is_better:
            return self.target / med if med > 0 else float("inf")
        return med / self.target

    @property
    def verdict(self) -> str:
        if self.error:
            return "ERROR"
        if self.completes_only:
            return "ok" if self.samples else "MISS"
        ratio = self.ratio
        if ratio is None:
            return "info"
        return "ok" if ratio <= 1.0 else "MISS"

    def target_text(self) -> str:
        if self.completes_only:
            return "completes"
        if self.target is None:
            return "-"
        op = ">=" if self.higher_is_better else "<="
        return f"{op} {_num(self.target)} {self.unit}"

    def figure_text(self) -> str:
        if self.error:
            return self.error[:60]
        if not self.samples:
            return "-"
        if len(self.samples) == 1:
            return f"{_num(self.median)} {self.unit}"
        return (
            f"{_num(self.median)} {self.unit} "
            f"({_num(min(self.samples))}..{_num(max(self.samples))})"
        )


def _num(value: float) -> str:
    if value != value:  # NaN
        return "nan"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    if abs(value) >= 0.1:
        return f"{value:.3f}"
    return f"{value:.4f}"


def machine_text() -> str:
    """The machine a run happened on: CPUs, model, memory, Python, load."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f", {int(line.split()[1]) / 1024 / 1024:.0f} GiB RAM"
    load = ""
    with contextlib.suppress(OSError):
        load = f", load {os.getloadavg()[0]:.2f}"
    return (
        f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {model}{mem}, "
        f"Python {platform.python_version()} on {platform.system()} {platform.release()}{load}"
    )


def print_table(figures: Sequence[Figure], title: str) -> None:
    """The one table of a run (notes in the last column)."""
    rows = [("#", "what", "figure: median (min..max)", "target", "ratio", "verdict", "notes")]
    for f in figures:
        ratio = f.ratio
        rows.append(
            (
                f.number,
                f.what,
                f.figure_text(),
                f.target_text(),
                f"{ratio:.3f}" if ratio is not None else "-",
                f.verdict,
                f.note,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    print()
    print(title)
    print(f"machine: {machine_text()}")
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


# -- processes --------------------------------------------------------------------------------


def http_json(url: str, body: dict[str, Any] | None = None, timeout: float = 30.0) -> Any:
    """GETs (or POSTs ``body`` to) a JSON endpoint on 127.0.0.1."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def http_bytes(url: str, body: dict[str, Any] | None = None, timeout: float = 30.0) -> bytes:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    request = urllib.request.Request(url, data=data, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


@dataclass
class Process:
    """A child process (master, simulated agents ...) with its log file."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen | None = None
    stop_signal: int = signal.SIGTERM  # an agent's: SIGUSR1 (SIGTERM leaves its tasks)

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.popen = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
            cwd=ROOT,
            start_new_session=True,
        )
        log.close()

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, grace: float = 5.0) -> None:
        if not self.running():
            return
        assert self.popen is not None
        self.popen.send_signal(self.stop_signal)
        try:
            self.popen.wait(grace)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)

    def kill(self) -> None:
        if self.running():
            assert self.popen is not None
            self.popen.kill()
            self.popen.wait(5)

    def rss_bytes(self) -> int:
        """Resident memory now (VmRSS), 0 if gone."""
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


class Master(Process):
    """A real ``butte master`` on a free port of 127.0.0.1."""

    def __init__(self, work_dir: Path, flags: Sequence[str] = (), port: int | None = None):
        self.port = port or free_port()
        work_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(
            "master",
            [
                *BUTTE,
                "master",
                f"--port={self.port}",
                f"--work_dir={work_dir / 'master'}",
                "--logging_level=WARNING",
                *flags,
            ],
            work_dir / "master.log",
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def wait_healthy(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                raise RuntimeError(f"master exited:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{self.url}/health", timeout=1.0):
                    return
            time.sleep(0.05)
        raise TimeoutError(f"master not healthy within {timeout}s:\n{self.log_tail()}")

    def metrics(self) -> dict[str, float]:
        return http_json(f"{self.url}/metrics/snapshot")

    def wait_agents(self, count: int, timeout: float = 120.0) -> float:
        """Waits until ``count`` agents are connected; returns the seconds it took."""
        started = time.monotonic()
        while True:
            with contextlib.suppress(OSError, ValueError):
                if self.metrics().get("master/slaves_connected", 0) >= count:
                    return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise TimeoutError(f"{count} agents not connected within {timeout}s")
            if not self.running():
                raise RuntimeError(f"master exited:\n{self.log_tail()}")
            time.sleep(0.25)


def sim_process(
    work_dir: Path, master: str, agents: int, flags: Sequence[str] = (), name: str = "sim"
) -> Process:
    """A ``butte sim`` child process (not started)."""
    return Process(
        name,
        [
            *BUTTE,
            "sim",
            f"--master={master}",
            f"--agents={agents}",
            "--status_interval=2secs",
            *flags,
        ],
        work_dir / f"{name}.log",
    )


@contextlib.contextmanager
def processes(*procs: Process) -> Iterator[None]:
    """Stops every given process on exit (they may be started inside)."""
    try:
        yield
    finally:
        for proc in reversed(procs):
            with contextlib.suppress(Exception):
                proc.stop()


# What one real agent offers in the single-agent benchmarks (6, images, Docker): more than
# they use, so the agent's rate is measured, not its resources.
ONE_AGENT_RESOURCES = "cpus:64;mem:262144;disk:100000;ports:[31000-32000]"


@contextlib.contextmanager
def master_with_agent(
    tmp: Path, agent_flags: Sequence[str] = ()
) -> Iterator[tuple[Master, Process]]:
    """A real master (100 ms allocation interval) and one real agent registered with it,
    both working in ``tmp`` and stopped on exit."""
    master = Master(tmp, ["--allocation_interval=100ms"])
    agent = Process(
        "agent",
        [
            *BUTTE,
            "agent",
            f"--master={master.address}",
            f"--port={free_port()}",
            f"--work_dir={tmp / 'agent'}",
            f"--resources={ONE_AGENT_RESOURCES}",
            "--logging_level=WARNING",
            *agent_flags,
        ],
        tmp / "agent.log",
        stop_signal=signal.SIGUSR1,
    )
    with processes(master, agent):
        master.start()
        master.wait_healthy()
        agent.start()
        master.wait_agents(1, timeout=30)
        yield master, agent


@contextlib.contextmanager
def work_dir(prefix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix=f"butte-bench-{prefix}-") as d:
        yield Path(d)


def exit_on_sigterm() -> None:
    """SIGTERM raises SystemExit, so the `processes` cleanup stops the children. Also tunes
    the collector as `butte master` and `butte sim` do (the frameworks here are busy too)."""
    gc.set_threshold(10_000, 10, 10)

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(q * (len(ordered) - 1)))))
    return ordered[index]


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU seconds a process has used so far (0.0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class SpawnRate:
    """What `raw_spawn` measured: processes per second and CPU seconds per process, of the
    child (``/bin/true`` from exec to exit) and of the parent (spawning and reaping it)."""

    rate: float
    child_cpu: float
    parent_cpu: float


def raw_spawn(count: int = 2000, inflight: int = 64) -> SpawnRate:
    """This machine's raw spawn rate, the yardstick of benchmark 6: ``os.posix_spawn`` of
    ``/bin/true`` with ``inflight`` children at a time, reaped with ``os.wait``."""
    env = {"PATH": "/usr/bin:/bin"}
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    parent = time.thread_time()
    started = time.perf_counter()
    running = done = 0
    launched = 0
    while done < count:
        while running < inflight and launched < count:
            os.posix_spawn("/bin/true", ["true"], env)
            running += 1
            launched += 1
        os.wait()
        running -= 1
        done += 1
    elapsed = time.perf_counter() - started
    parent_cpu = time.thread_time() - parent
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_cpu = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    return SpawnRate(count / elapsed, child_cpu / count, parent_cpu / count)
