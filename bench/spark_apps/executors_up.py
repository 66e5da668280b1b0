"""Benchmark application: reports, from the driver, how many seconds after BENCH_T0 (a
wall-clock time in the environment) the first executor registered and when the executors
held CORES cores together, as one ``BENCH {...}`` JSON line.

    executors_up.py CORES CORES_PER_EXECUTOR
"""

import json
import os
import sys
import time

from pyspark.sql import SparkSession


def main() -> None:
    t0 = float(os.environ["BENCH_T0"])
    cores, per_executor = int(sys.argv[1]), int(sys.argv[2])
    spark = SparkSession.builder.appName("executors-up").getOrCreate()
    sc = spark.sparkContext
    driver_up = time.time() - t0
    first = None
    deadline = time.time() + 900
    while time.time() < deadline:
        # the driver's own block manager is in this map too
        executors = sc._jsc.sc().getExecutorMemoryStatus().size() - 1
        if executors >= 1 and first is None:
            first = time.time() - t0
        if executors * per_executor >= cores:
            break
        time.sleep(0.05)
    every = time.time() - t0
    print("BENCH " + json.dumps({"driver": driver_up, "first": first, "all": every}), flush=True)
    spark.stop()


if __name__ == "__main__":
    main()
