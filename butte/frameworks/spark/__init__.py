"""Spark on butte: ``butte spark-submit`` launches a Spark standalone master and workers as
tasks and runs the application against them (docs/spark.md). Needs the ``spark`` extra."""
