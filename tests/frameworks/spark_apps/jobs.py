"""The PySpark application of the butte spark-submit tests, several checks in one run (JVMs
start slowly): a pi estimate and a word count (results written as JSON, with the working
directories of the executors that ran, which name their agents); then a slow job during
which the test kills an agent (Spark retries its tasks on the other worker); then a job whose
tasks always fail, so the driver exits 1.

    jobs.py OUT_DIR TEXT_FILE SAMPLES
"""

import json
import os
import random
import sys
import time

from pyspark.sql import SparkSession

SLOW_TASKS = 12


def inside(_: int) -> int:
    x, y = random.random(), random.random()
    return 1 if x * x + y * y <= 1 else 0


def write(out_dir: str, name: str, value: object) -> None:
    with open(os.path.join(out_dir, name + ".tmp"), "w") as f:
        json.dump(value, f)
    os.rename(os.path.join(out_dir, name + ".tmp"), os.path.join(out_dir, name))


def main() -> None:
    out, text, samples = sys.argv[1], sys.argv[2], int(sys.argv[3])
    spark = SparkSession.builder.appName("butte-test-jobs").getOrCreate()
    sc = spark.sparkContext
    hits = sc.parallelize(range(samples), 8).map(inside).reduce(lambda a, b: a + b)
    print(f"Pi is roughly {4.0 * hits / samples}", flush=True)
    counts = (
        sc.textFile(text, 4)
        .flatMap(lambda line: line.split())
        .map(lambda word: (word, 1))
        .reduceByKey(lambda a, b: a + b)
        .collectAsMap()
    )
    # an executor's working directory lies in its worker task's sandbox: it names the agent
    executors = sorted(set(sc.parallelize(range(16), 16).map(lambda _: os.getcwd()).collect()))
    pi = 4.0 * hits / samples
    write(out, "results.json", {"pi": pi, "counts": counts, "executors": executors})

    markers = os.path.join(out, "markers")

    def slow(i: int) -> int:
        # tell the test that tasks are running, then take long enough to be interrupted
        open(os.path.join(markers, f"task-{i}-{os.getpid()}"), "w").close()
        time.sleep(1.5)
        return i

    # Few enough that the survivor soon runs them all alone (the agent dies at the first).
    total = sc.parallelize(range(SLOW_TASKS), SLOW_TASKS).map(slow).sum()
    write(out, "survived.json", {"sum": total})
    print(f"survived with sum {total}", flush=True)
    sc.parallelize(range(4), 4).map(lambda i: i // 0).collect()  # aborts the job: exit 1
    spark.stop()


if __name__ == "__main__":
    main()
