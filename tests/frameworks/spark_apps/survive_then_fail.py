"""A PySpark application for the butte spark-submit tests: a slow job during which the test
kills an agent (Spark retries its tasks on the other worker), then a job whose tasks always
fail, so the driver exits non-zero.

    survive_then_fail.py MARKER_DIR OUT.json
"""

import json
import os
import sys
import time

from pyspark.sql import SparkSession


def main() -> None:
    markers, out = sys.argv[1], sys.argv[2]
    spark = SparkSession.builder.appName("survive-then-fail").getOrCreate()
    sc = spark.sparkContext

    def slow(i: int) -> int:
        # tell the test that tasks are running, then take long enough to be interrupted
        open(os.path.join(markers, f"task-{i}-{os.getpid()}"), "w").close()
        time.sleep(2)
        return i

    total = sc.parallelize(range(24), 24).map(slow).sum()
    with open(out, "w") as f:
        json.dump({"sum": total}, f)
    print(f"survived with sum {total}", flush=True)
    sc.parallelize(range(4), 4).map(lambda i: i // 0).collect()  # aborts the job: exit 1
    spark.stop()


if __name__ == "__main__":
    main()
