"""The pure Spark cluster planner and the flag handling of ``butte spark-submit``."""

from __future__ import annotations

import argparse

import pytest

from butte.cli.common import CliError
from butte.core import task_states as ts
from butte.frameworks.offers import OfferView
from butte.frameworks.spark import submit
from butte.frameworks.spark.plan import SparkPlan, SparkRequest, memory_mib


def offer(agent="a1", cpus=4.0, mem=8192.0, ports=((31000, 31099),)) -> OfferView:
    return OfferView("o", agent, f"h-{agent}", "*", cpus, mem, tuple(ports))


def test_memory_strings():
    assert [memory_mib(t) for t in ("512m", "1g", "1G", "2048", "1536k", "1gb")] == [
        512,
        1024,
        1024,
        2048,
        2,
        1024,
    ]
    for bad in ("", "1x", "-1g", "0", "g"):
        with pytest.raises(ValueError):
            memory_mib(bad)


def test_master_then_workers_until_the_requested_cores():
    plan = SparkPlan("r", SparkRequest(total_cores=5, executor_mib=1024))
    first = plan.place(offer("a1", cpus=3.5))
    master, worker = first
    assert (master.role, master.cpus, master.ports) == ("master", 0.5, (31000, 31001))
    assert plan.master_url == "spark://h-a1:31000" and plan.webui_url == "http://h-a1:31001"
    # one executor per worker: the daemon's heap + 128 MiB, the executor + 384 MiB overhead
    assert (worker.role, worker.cores, worker.cpus, worker.ports) == (
        "worker",
        3,
        3,
        (31002, 31003),
    )
    assert (worker.mem, worker.memory_mib) == (512 + 128 + 1024 + 384, 1024)
    assert plan.cores() == 3 and plan.wants_offers()
    (second,) = plan.place(offer("a2", cpus=8))
    assert second.cores == 2 and plan.cores() == 5 and not plan.wants_offers()
    assert plan.place(offer("a3")) == []


def test_executor_cores_make_whole_executors_bounded_by_memory():
    plan = SparkPlan("r", SparkRequest(total_cores=8, executor_mib=512, executor_cores=2))
    plan.place(offer("a0", cpus=0.5, mem=1024, ports=((1, 2),)))  # the master alone
    # 7 cpus hold 3 executors of 2 cores, but memory only 2 of 896 MiB next to the daemon
    (worker,) = plan.place(offer("a1", cpus=7, mem=640 + 2 * 896 + 100))
    assert (worker.cores, worker.memory_mib, worker.mem) == (4, 1024, 640 + 2 * 896)
    assert plan.place(offer("a2", cpus=1.9)) == []  # not one executor's cores
    assert plan.place(offer("a3", cpus=8, ports=((5, 5),))) == []  # a worker needs 2 ports


def test_lost_workers_are_replaced_a_lost_master_fails_the_run():
    plan = SparkPlan("r", SparkRequest(total_cores=2, executor_mib=512))
    master, w0 = plan.place(offer("a1", cpus=1.5))
    (w1,) = plan.place(offer("a2", cpus=1))
    for task in (master, w0, w1):
        plan.update(task.name, ts.RUNNING)
    assert not plan.wants_offers()
    plan.update(w1.name, ts.LOST)
    assert plan.cores() == 1 and plan.wants_offers() and plan.lost_workers == 1
    assert plan.failed is None
    assert plan.update("someone-else", ts.RUNNING) is True  # a stray: kill it
    plan.update(master.name, ts.FAILED)
    assert plan.failed and "master" in plan.failed and not plan.wants_offers()


def test_workers_failing_before_running_fail_the_run_and_close_kills_all():
    plan = SparkPlan("r", SparkRequest(total_cores=1, executor_mib=512, max_failures=2))
    master, w = plan.place(offer())
    plan.update(master.name, ts.RUNNING)
    plan.update(w.name, ts.FAILED)
    (w2,) = plan.place(offer("a2"))
    plan.update(w2.name, ts.ERROR)
    assert plan.failed and "before running" in plan.failed
    assert plan.close() == {master.name: "a1"}
    plan.update(master.name, ts.KILLED)
    assert plan.done() and plan.failed == "2 Spark workers in a row ended before running"


def test_bad_requests_are_refused():
    with pytest.raises(ValueError):
        SparkRequest(total_cores=0, executor_mib=512)
    with pytest.raises(ValueError):
        SparkRequest(total_cores=2, executor_mib=512, executor_cores=3)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    submit.add_flags(parser)
    return parser.parse_args(list(argv))


def test_spark_submit_options_pass_through_and_app_args_stay_the_apps(tmp_path):
    home = tmp_path / "spark"
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "spark-submit").touch()
    args = parse(
        "--master", "m:5050", "--spark_home", str(home), "--executor-cores", "2",
        "--conf", "spark.cores.max=6", "--conf", "spark.executor.memory=2g", "--name", "x",
        "--py-files", "a.zip", "app.py", "--executor-cores", "9", "in.txt",
    )  # fmt: skip
    spec = submit.spec_from_args(args)
    assert spec.request.total_cores == 6 and spec.request.executor_cores == 2
    assert spec.request.executor_mib == 2048
    assert spec.app == "app.py" and spec.app_args == ("--executor-cores", "9", "in.txt")
    options = list(spec.submit_options)
    assert options[:6] == [
        "--deploy-mode",
        "client",
        "--total-executor-cores",
        "6",
        "--executor-cores",
        "2",
    ]
    assert ["--name", "x"] == options[options.index("--name") :][:2]
    assert "--py-files" in options and "spark.cores.max=6" in options
    assert spec.framework_name == "spark: x"
    for bad in (
        ("--conf", "spark.master=local"),
        ("--executor-cores", "4", "--total-executor-cores", "2"),
    ):
        with pytest.raises(CliError):
            submit.spec_from_args(parse("--master", "m", "--spark_home", str(home), *bad, "a.py"))
    with pytest.raises(SystemExit):
        parse("--master", "m", "--deploy-mode", "cluster", "a.py")
    with pytest.raises(CliError, match="no Spark distribution"):
        submit.spec_from_args(parse("--master", "m", "--spark_home", str(tmp_path), "a.py"))
