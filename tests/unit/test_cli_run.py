"""`butte run` end to end against the fake master: offers -> ACCEPT/LAUNCH -> updates ->
acknowledgements -> TEARDOWN -> exit status."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from butte.cli.main import main
from butte.cli.run import exit_status_of


def run_cli(fake, *extra: str) -> int:
    argv = ["run", "--master", fake.address, "--name", "hello", "--command", "echo hi"]
    return main([*argv, *extra])


def launched_tasks(fake) -> list[dict]:
    return [
        task
        for call in fake.calls_of("ACCEPT")
        for operation in call["accept"]["operations"]
        for task in operation["launch"]["task_infos"]
    ]


def test_single_task_success(fake_master, capsys):
    fake_master.add_agent("a1", "host1", "cpus:1;mem:128")
    assert run_cli(fake_master) == 0
    out = capsys.readouterr().out.splitlines()
    (task,) = launched_tasks(fake_master)
    task_id = task["task_id"]["value"]
    assert task_id.startswith("hello.")
    assert out == [
        f"{task_id} TASK_STARTING on host1",
        f"{task_id} TASK_RUNNING on host1",
        f"{task_id} TASK_FINISHED on host1: Command exited with status 0",
    ]
    assert task["agent_id"] == {"value": "a1"}
    assert task["command"] == {"shell": True, "value": "echo hi"}
    resources = {r["name"]: r["scalar"]["value"] for r in task["resources"]}
    assert resources == {"cpus": 0.1, "mem": 32.0}
    assert all(r["allocation_info"] == {"role": "*"} for r in task["resources"])
    assert len(fake_master.calls_of("ACKNOWLEDGE")) == 3
    assert fake_master.calls[-1]["type"] == "TEARDOWN"
    info = fake_master.calls[0]["subscribe"]["framework_info"]
    assert info["name"] == "butte-run" and info["role"] == "*"


def test_instances_are_packed_into_offers_and_unfit_offers_declined(fake_master, capsys):
    fake_master.add_agent("a1", "host1", "cpus:0.25;mem:128")  # room for 2
    fake_master.add_agent("a2", "host2", "cpus:0.1;mem:32")  # room for 1
    fake_master.add_agent("a3", "host3", "cpus:0.05;mem:1024")  # too small
    assert run_cli(fake_master, "--instances", "3") == 0
    tasks = launched_tasks(fake_master)
    assert sorted(t["agent_id"]["value"] for t in tasks) == ["a1", "a1", "a2"]
    ids = {t["task_id"]["value"] for t in tasks}
    assert len(ids) == 3
    declines = fake_master.calls_of("DECLINE")
    assert [d["decline"]["offer_ids"] for d in declines] == [[{"value": "fake-O3"}]]
    assert fake_master.calls_of("SUPPRESS"), "offers must be suppressed once all launched"
    finished = [line for line in capsys.readouterr().out.splitlines() if "FINISHED" in line]
    assert len(finished) == 3


def test_exit_status_of_the_first_failure(fake_master, capsys):
    fake_master.add_agent("a1", "host1", "cpus:1;mem:128")
    fake_master.task_outcome = lambda task: [
        ("TASK_RUNNING", None),
        ("TASK_FAILED", "Command exited with status 3"),
    ]
    assert run_cli(fake_master) == 3
    assert "TASK_FAILED on host1: Command exited with status 3" in capsys.readouterr().out


def test_lost_task_without_exit_status_exits_1(fake_master):
    fake_master.add_agent("a1", "host1", "cpus:1;mem:128")
    fake_master.task_outcome = lambda task: [("TASK_LOST", "Agent removed")]
    assert run_cli(fake_master, "--instances", "2") == 1


def test_no_shell_env_and_role_encodings(fake_master):
    fake_master.add_agent("a1", "host1", "cpus:1;mem:128")
    rc = run_cli(
        fake_master,
        "--no-shell",
        "--env",
        "A=1",
        "--env",
        "B=x=y",
        "--role",
        "batch",
        "--framework_name",
        "fw",
        "--checkpoint",
    )
    assert rc == 0
    (task,) = launched_tasks(fake_master)
    assert task["command"] == {
        "shell": False,
        "value": "echo",
        "arguments": ["echo", "hi"],
        "environment": {"variables": [{"name": "A", "value": "1"}, {"name": "B", "value": "x=y"}]},
    }
    info = fake_master.calls[0]["subscribe"]["framework_info"]
    assert (info["name"], info["role"], info["checkpoint"]) == ("fw", "batch", True)


def test_master_error_event_ends_the_run(fake_master, capsys):
    def error_on_accept(task):
        fake_master.push({"type": "ERROR", "error": {"message": "Framework has been removed"}})
        return []

    fake_master.add_agent("a1", "host1", "cpus:1;mem:128")
    fake_master.task_outcome = error_on_accept
    assert run_cli(fake_master) == 1
    assert "Framework has been removed" in capsys.readouterr().err


def test_exit_status_parsing():
    assert exit_status_of("TASK_FINISHED", None) == 0
    assert exit_status_of("TASK_FAILED", "Command exited with status 42") == 42
    assert exit_status_of("TASK_FAILED", "Command exited with status 0") == 1
    assert exit_status_of("TASK_KILLED", "Command terminated with signal Killed") == 1
    assert exit_status_of("TASK_ERROR", None) == 1


def _wait_for_line(stream, needle: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = stream.readline()
        if needle in line:
            return line
        if not line:
            break
    raise AssertionError(f"no line with {needle!r}")


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_kills_tasks_and_tears_down(fake_master, sig, status):
    fake_master.add_agent("a1", "host1", "cpus:1;mem:128")
    fake_master.task_outcome = lambda task: [("TASK_RUNNING", None)]
    process = subprocess.Popen(
        [sys.executable, "-m", "butte", "run", "--master", fake_master.address]
        + ["--name", "long", "--command", "sleep 100"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_for_line(process.stdout, "TASK_RUNNING")
        process.send_signal(sig)
        killed = _wait_for_line(process.stdout, "TASK_KILLED")
        assert process.wait(10) == status
    finally:
        process.kill()
        stderr = process.communicate()[1]
    kill = fake_master.calls_of("KILL")[0]["kill"]
    assert killed.startswith(kill["task_id"]["value"])
    assert kill["agent_id"] == {"value": "a1"}
    assert fake_master.calls[-1]["type"] == "TEARDOWN"
    assert "Traceback" not in stderr


def test_a_task_takes_its_roles_reservations_first_and_the_master_takes_it():
    # As mesos-execute: `--role db` uses what is reserved for db, then unreserved resources.
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from master_kit import Harness, launch_body

    from butte.cli.run import _offer_resources, take_resources
    from butte.core import internal
    from butte.core.resources import Resources, parse_resources

    h = Harness()
    h.register_agent("c1", resources="cpus:1;mem:256;cpus(db):2;mem(db):64")
    fid, stream = h.subscribe(role="db")
    h.allocate()
    [offer] = h.offers(stream)
    need = parse_resources("cpus:1;mem:128")
    taken = take_resources(_offer_resources(offer), need, "db")
    assert taken == parse_resources("cpus(db):1;mem(db):64;mem:64")
    assert take_resources(_offer_resources(offer), parse_resources("cpus:4"), "db") is None
    task = {
        "name": "t",
        "task_id": {"value": "t1"},
        "agent_id": offer["agent_id"],
        "resources": taken.to_json("pre", allocation_role="db"),
        "command": {"value": "true"},
    }
    h.call(fid, stream, launch_body(offer, task))
    [run] = h.agent_messages("c1", internal.RunTask)
    assert Resources.from_json(run.task.resources) == taken


def test_a_bad_master_or_timeout_is_bad_usage_in_one_line(capsys, monkeypatch):
    from butte.cli.main import main

    for argv in (
        ["agents", "--master", "127.0.0.1:99999"],
        ["agents", "--master", "zk://"],
        ["run", "--master", "127.0.0.1:99999", "--name", "x", "--command", "true"],
    ):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("butte: error: bad --master: ") and err.count("\n") == 1, err
    monkeypatch.setenv("BUTTE_TIMEOUT", "abc")
    assert main(["agents", "--master", "127.0.0.1:5050"]) == 2
    assert "BUTTE_TIMEOUT must be a number of seconds" in capsys.readouterr().err
