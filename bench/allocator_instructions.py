"""Instructions executed by one full allocation cycle, per shape of `bench_allocator.py --quota`,
counted by valgrind (cachegrind): a figure that, unlike seconds, does not move with the load
of a shared machine, so that two versions of the allocator can be compared on a busy one.

    .venv/bin/python bench/allocator_instructions.py [--shapes base,res,quota,both]

Each shape runs twice under ``valgrind --tool=cachegrind --cache-sim=no`` (about 20 s each):
once building the allocator only, once building it and running one cycle; the difference is
the cycle. Hash randomisation is fixed (PYTHONHASHSEED=0) so that runs repeat. Shapes: base
(no quota, no reservations), res (half the agents reserved), quota (100 roles with quota),
both. Instruction counts leave out memory stalls: on the development container the seconds
ratio of a shape to the baseline came out 0.1-0.3 above the instruction ratio.
"""

from __future__ import annotations

import argparse
import gc
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHAPES = {"base": None, "res": (False, True), "quota": (True, False), "both": (True, True)}


def child(shape: str, cycle: bool) -> None:
    """Builds the shape's allocator (and runs one cycle if ``cycle``), inside valgrind."""
    sys.path.insert(0, str(ROOT / "bench"))
    import bench_allocator as b

    gc.set_threshold(10_000, 10, 10)  # as `butte master` and bench_allocator --quota do
    flags = SHAPES[shape]
    if flags is None:
        alloc = b.build(10_000, 1_000, "each")
    else:
        alloc = b.build_quota(10_000, 1_000, *flags)
    gc.collect()
    if cycle:
        alloc.allocate(0.0)


def count(shape: str, cycle: bool) -> int:
    """Instructions of one child run."""
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=str(ROOT))
    cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null"]
    cmd += [sys.executable, __file__, "--child", shape, "--cycle" if cycle else "--build"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    match = re.search(r"I\s+refs:\s+([\d,]+)", done.stderr)
    if match is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{done.stderr}")
    return int(match.group(1).replace(",", ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", default="base,res,quota,both")
    parser.add_argument("--child", choices=sorted(SHAPES), help=argparse.SUPPRESS)
    parser.add_argument("--cycle", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--build", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.cycle)
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (apt-get install valgrind)")
        return 1
    shapes = args.shapes.split(",")
    unknown = [s for s in shapes if s not in SHAPES]
    if unknown:
        parser.error(f"unknown shapes {unknown}; known: {sorted(SHAPES)}")
    cycles = {}
    for shape in ["base", *[s for s in shapes if s != "base"]]:
        cycles[shape] = count(shape, True) - count(shape, False)
    for shape, instructions in cycles.items():
        ratio = instructions / cycles["base"]
        print(f"{shape:<6} {instructions / 1e6:8.0f} M instructions  x{ratio:.2f} of base")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
