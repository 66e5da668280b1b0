"""Runs every benchmark and prints one table: #, what, figure (median/min/max), target,
ratio (<= 1.0 meets the target), verdict, and the machine it ran on.

    .venv/bin/python bench/run_all.py            # full sizes (about 5 minutes on 2 cores)
    .venv/bin/python bench/run_all.py --quick    # small sizes, a smoke run (about 2 minutes)
    .venv/bin/python bench/run_all.py --only 5,8 # some of them

1-4 run the allocator alone (no network); 5-9 run real master processes with simulated
agents (``butte sim``) and asyncio frameworks on 127.0.0.1; 10 drives the master core
in-process. 9 is the ZooKeeper failover of `bench_failover.py` when that file exists, and
always the standalone stand-in (a master restart). A benchmark that fails prints ERROR in
its row; the exit status is 0 unless ``--strict`` and a target was missed.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import bench_agent
import bench_allocator as alloc
import bench_e2e
import bench_memory
import bench_probe
import bench_reregister
import bench_state
import bench_webui
from common import Figure, exit_on_sigterm, print_table

Runner = Callable[[bool], list[Figure]]


def allocator_figures(quick: bool) -> list[Figure]:
    """1-4: the pure-core allocator (`bench_allocator.py`)."""
    star = "star"
    if quick:
        c1 = alloc.full_cycle_samples(2_000, 200, star, 2)
        c2 = alloc.full_cycle_samples(1_000, 100, star, 3)
        s3 = alloc.suppressed_samples(2_000, 200, star, 5)
        d4 = alloc.decline_samples(1_000, 100, star, 20, refuse=5.0)
        sizes = ("2k x 200", "1k x 100", "2k")
    else:
        c1 = alloc.full_cycle_samples(10_000, 1_000, star, 3)
        c2 = alloc.full_cycle_samples(1_000, 100, star, 5)
        s3 = alloc.suppressed_samples(10_000, 1_000, star, 7)
        d4 = alloc.decline_samples(2_000, 200, star, 200, refuse=5.0)
        sizes = ("10k x 1k", "1k x 100", "10k")
    figures = [
        Figure("1", f"allocation cycle, {sizes[0]} (agents x fw)", c1, "s", 1.0),
        Figure("2a", f"allocation cycle, {sizes[1]}", c2, "s", 0.05),
    ]
    if not quick:
        figures.append(
            Figure(
                "2b",
                "allocation cycle, 20k x 2k",
                alloc.full_cycle_samples(20_000, 2_000, star, 2),
                "s",
                3.5,
            )
        )
        figures.append(
            Figure(
                "2c",
                "allocation cycle, 50k x 200",
                alloc.full_cycle_samples(50_000, 200, star, 1),
                "s",
                None,
                completes_only=True,
            )
        )
    figures.append(Figure("3", f"cycle, every fw suppressed, {sizes[2]} agents", s3, "s", 0.02))
    first, last = d4[: len(d4) // 10 or 1], d4[-(len(d4) // 10 or 1) :]
    drift = (sum(last) / len(last)) / (sum(first) / len(first))
    figures.append(
        Figure(
            "4",
            f"offers/s over {len(d4)} decline rounds (refuse 5 s)",
            d4,
            "offers/s",
            10_000,
            higher_is_better=True,
            note=f"last/first tenth {drift:.2f}",
        )
    )
    return figures


def e2e_figures(quick: bool) -> list[Figure]:
    if quick:
        result = bench_e2e.run_e2e(agents=200, frameworks=2, seconds=4, warmup=2, inflight=50)
        label = " (200 agents, 2 fw)"
    else:
        result = bench_e2e.run_e2e()
        label = " (2,000 agents, 10 fw)"
    figures = bench_e2e.figures(result, label=label)
    figures[0].note = bench_e2e.cpu_text(result).replace("CPU during the window: ", "CPU ")
    return figures


def agent_figures(quick: bool) -> list[Figure]:
    tasks = 300 if quick else 2000
    return bench_agent.figures(bench_agent.run_agent_bench(tasks=tasks), tasks=tasks)


def probe_figures(quick: bool) -> list[Figure]:
    if quick:
        agents, frameworks = 300, 10
        samples, used = bench_probe.run_probe(
            agents, frameworks, rounds=1, task_duration="uniform:3-6secs"
        )
    else:
        agents, frameworks = 10_000, 200
        samples, used = bench_probe.run_probe(agents, frameworks, rounds=3)
    return bench_probe.figures(samples, used, agents, frameworks)


def state_figures(quick: bool) -> list[Figure]:
    agents = 1_000 if quick else 10_000
    result = bench_state.run_state_bench(agents, 10, rounds=3, seconds=3 if quick else 8)
    return bench_state.figures(result, agents, agents * 10)


def failover_figures(quick: bool) -> list[Figure]:
    """9: the HA failover bench when it exists, and the standalone restart stand-in."""
    figures: list[Figure] = []
    path = Path(__file__).with_name("bench_failover.py")
    if path.exists():
        figures.extend(_external_figures(path, quick))
    agents = 1_000 if quick else 10_000
    results = bench_reregister.run_reregister(agents, 10, rounds=1 if quick else 2)
    figures.extend(bench_reregister.figures(results, agents, agents * 10))
    return figures


def _external_figures(path: Path, quick: bool) -> list[Figure]:
    """Figures of another helper's benchmark module: ``figures_for_runner(quick)`` if it has
    one, else ``main([--quick])`` run for its own output."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if hasattr(module, "figures_for_runner"):
        return list(module.figures_for_runner(quick))
    started = time.monotonic()
    status = module.main(["--quick"] if quick else [])
    seconds = time.monotonic() - started
    return [
        Figure(
            "9",
            f"{path.name} (its own output above)",
            [],
            "",
            None,
            note=f"exit {status}, {seconds:.0f} s",
        )
    ]


def memory_figures(quick: bool) -> list[Figure]:
    agents = 5_000 if quick else 50_000
    return bench_memory.figures(bench_memory.run_memory(agents, 10))


def webui_figures(quick: bool) -> list[Figure]:
    agents = 1_000 if quick else 10_000
    result = bench_webui.run_webui_bench(agents, 10, rounds=1 if quick else 3)
    return bench_webui.figures(result, agents, agents * 10)


BENCHMARKS: list[tuple[str, str, Runner]] = [
    ("1-4", "allocator (pure core)", allocator_figures),
    ("5", "end to end", e2e_figures),
    ("6", "real agent", agent_figures),
    ("7", "NSDI'11 probe", probe_figures),
    ("8", "state endpoints", state_figures),
    ("9", "failover / re-registration", failover_figures),
    ("10", "memory", memory_figures),
    ("11", "web UI in Chromium", webui_figures),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--only", default="", help="comma-separated numbers: 1-4,5,...,11")
    parser.add_argument("--strict", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    exit_on_sigterm()
    wanted = {w.strip() for w in args.only.split(",") if w.strip()}
    figures: list[Figure] = []
    started = time.monotonic()
    for number, name, run in BENCHMARKS:
        if wanted and number not in wanted:
            continue
        t0 = time.monotonic()
        print(f"[{number}] {name} ...", flush=True)
        try:
            got = run(args.quick)
        except Exception as e:  # noqa: BLE001 - one row says what broke; the others run
            traceback.print_exc()
            got = [Figure(number, name, [], "", None, error=f"{type(e).__name__}: {e}")]
        figures.extend(got)
        print(f"[{number}] done in {time.monotonic() - t0:.0f} s", flush=True)
    mode = "quick" if args.quick else "full"
    title = f"butte benchmarks ({mode}, {time.monotonic() - started:.0f} s)"
    print_table(figures, title)
    missed = [f for f in figures if f.verdict in ("MISS", "ERROR")]
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
