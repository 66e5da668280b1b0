"""A PySpark application for the butte spark-submit tests: estimates pi and counts the
words of a text file, and writes both results (and which executors ran) as JSON.

    pi_wordcount.py OUT.json TEXT_FILE SAMPLES
"""

import json
import os
import random
import sys

from pyspark.sql import SparkSession


def inside(_: int) -> int:
    x, y = random.random(), random.random()
    return 1 if x * x + y * y <= 1 else 0


def main() -> None:
    out, text, samples = sys.argv[1], sys.argv[2], int(sys.argv[3])
    spark = SparkSession.builder.appName("pi-wordcount").getOrCreate()
    sc = spark.sparkContext
    hits = sc.parallelize(range(samples), 8).map(inside).reduce(lambda a, b: a + b)
    counts = (
        sc.textFile(text, 4)
        .flatMap(lambda line: line.split())
        .map(lambda word: (word, 1))
        .reduceByKey(lambda a, b: a + b)
        .collectAsMap()
    )
    # an executor's working directory lies in its worker task's sandbox: it names the agent
    executors = sorted(set(sc.parallelize(range(16), 16).map(lambda _: os.getcwd()).collect()))
    with open(out, "w") as f:
        json.dump({"pi": 4.0 * hits / samples, "counts": counts, "executors": executors}, f)
    print(f"Pi is roughly {4.0 * hits / samples}", flush=True)
    spark.stop()


if __name__ == "__main__":
    main()
