"""Spark on butte: seconds from ``butte spark-submit`` to the first executor registered and
to all requested cores, for 2 and 4 one-core workers, next to Spark's own ``spark-submit``
against a standalone cluster started by hand beforehand on the same machine.

    .venv/bin/python bench/bench_spark.py [--workers 2 4] [--repeat 1]

Needs the spark extra and Java. The butte cluster is one master and 4 agents on 127.0.0.1
(cpus:1.5 each, so every agent holds one one-core worker and one of them the Spark master
too); the hand-started cluster is a Spark master and N workers of one core each with the
same daemon settings. Both runs time from the moment the command is started; the driver
application (bench/spark_apps/executors_up.py) reports when executors registered with it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from butte.cli.local import free_port  # noqa: E402
from butte.frameworks.spark.submit import _DAEMON_JAVA_OPTS, default_spark_home  # noqa: E402
from butte.testing.cluster import start_cluster  # noqa: E402

APP = ROOT / "bench" / "spark_apps" / "executors_up.py"
AGENTS = [
    f"cpus:1.5;mem:3000;disk:1024;ports:[{31000 + 100 * i}-{31099 + 100 * i}]" for i in range(4)
]
OPTIONS = ["--executor-cores", "1", "--executor-memory", "512m", "--driver-memory", "512m",
           "--conf", "spark.ui.enabled=false"]  # fmt: skip


def app_args(workers: int) -> list[str]:
    return [str(APP), str(workers), "1"]


def result_of(output: str) -> dict:
    for line in output.splitlines():
        if line.startswith("BENCH "):
            return json.loads(line[6:])
    raise RuntimeError(f"no BENCH line in the driver's output:\n{output[-3000:]}")


def on_butte(workers: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp, start_cluster(tmp, agents=4, resources=AGENTS) as c:
        t0 = time.time()
        env = dict(os.environ, BENCH_T0=str(t0))
        argv = [sys.executable, "-m", "butte", "spark-submit", "--master", c.master_address,
                "--total-executor-cores", str(workers), *OPTIONS, *app_args(workers)]  # fmt: skip
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=1200)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        return result_of(proc.stdout)


def by_hand(workers: int) -> dict:
    home = default_spark_home()
    assert home, "pyspark is not installed"
    env = dict(os.environ, SPARK_HOME=home, SPARK_DAEMON_MEMORY="512m",
               SPARK_DAEMON_JAVA_OPTS=_DAEMON_JAVA_OPTS, SPARK_LOCAL_IP="127.0.0.1")  # fmt: skip
    spark_class = f"{home}/bin/spark-class"
    port, ui = free_port(), free_port()
    procs = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            procs.append(subprocess.Popen(
                [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                 "--port", str(port), "--webui-port", str(ui)],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
            for i in range(workers):
                procs.append(subprocess.Popen(
                    [spark_class, "org.apache.spark.deploy.worker.Worker",
                     f"spark://127.0.0.1:{port}", "--host", "127.0.0.1", "--cores", "1",
                     "--memory", "512m", "--work-dir", f"{tmp}/w{i}", "--webui-port", "0"],
                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
            deadline = time.time() + 900
            while alive_workers(ui) < workers:
                assert time.time() < deadline, "hand-started workers did not register"
                time.sleep(0.2)
            t0 = time.time()
            master = f"spark://127.0.0.1:{port}"
            cores = ["--total-executor-cores", str(workers)]
            argv = [f"{home}/bin/spark-submit", "--master", master, *cores, *OPTIONS]
            argv += app_args(workers)
            run_env = dict(env, BENCH_T0=str(t0), PYSPARK_PYTHON=sys.executable)
            proc = subprocess.run(argv, env=run_env, capture_output=True, text=True, timeout=1200)
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr[-3000:])
            return result_of(proc.stdout)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                p.wait(30)


def alive_workers(ui: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui}/json/", timeout=5) as response:
            return json.loads(response.read()).get("aliveworkers", 0)
    except (OSError, ValueError):
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}")
    for workers in args.workers:
        for name, fn in (
            ("butte spark-submit", on_butte),
            ("spark-submit, cluster by hand", by_hand),
        ):
            runs = [fn(workers) for _ in range(args.repeat)]
            first = statistics.median(r["first"] for r in runs)
            every = statistics.median(r["all"] for r in runs)
            driver = statistics.median(r["driver"] for r in runs)
            print(
                f"{workers} workers, {name}: driver up {driver:.1f} s, first executor "
                f"{first:.1f} s, all {workers} cores {every:.1f} s (median of {len(runs)}; "
                f"load {os.getloadavg()[0]:.1f})",
                flush=True,
            )


if __name__ == "__main__":
    main()
