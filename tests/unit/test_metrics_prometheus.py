"""Prometheus exposition of metric snapshots, master metrics names, and small CLI pieces
(argv routing, completion script, master address parsing, formatting)."""

from __future__ import annotations

import subprocess

import pytest
from master_kit import Harness
from prometheus_client.parser import text_string_to_metric_families

from butte.cli.completion import script
from butte.cli.main import build_parser
from butte.cli.ops import normalise_state, route_argv
from butte.cli.output import age, mem, number, scalars
from butte.client.operator import MasterUnreachable, parse_master, sandbox_path
from butte.core.resources import parse_resources
from butte.master.metrics import master_metrics
from butte.operator_common import prometheus_name, prometheus_text


def parsed(text: bytes) -> dict[str, list]:
    return {
        f.name: [(s.labels, s.value) for s in f.samples]
        for f in text_string_to_metric_families(text.decode())
    }


def test_prometheus_text_sanitises_names_and_labels_roles():
    snapshot = {
        "master/uptime_secs": 12.5,
        "master/tasks_running": 3,
        "allocator/mesos/roles/web/shares/dominant": 0.25,
        "allocator/mesos/roles/batch/shares/dominant": 0.5,
        "allocator/mesos/allocation_run_ms/count": 7,
        "1weird-name.x": 1,
    }
    families = parsed(prometheus_text(snapshot))
    assert families["master_uptime_secs"] == [({}, 12.5)]
    assert families["master_tasks_running"] == [({}, 3.0)]
    shares = {s[0]["role"]: s[1] for s in families["allocator_mesos_roles_shares_dominant"]}
    assert shares == {"batch": 0.5, "web": 0.25}
    assert families["allocator_mesos_allocation_run_ms_count"] == [({}, 7.0)]
    assert prometheus_name("1weird-name.x") == "_1weird_name_x"


def test_master_metrics_have_mesos_names():
    h = Harness()
    h.register_agent("c1", resources="cpus:4;mem:1024")
    h.subscribe("fw", roles=["web"], capabilities=[{"type": "MULTI_ROLE"}])
    h.allocate()
    h.master.start_time = h.now()
    metrics = master_metrics(h.master, h.now() + 5)
    assert metrics["master/uptime_secs"] == pytest.approx(5.0)
    assert metrics["master/elected"] == 1.0
    assert metrics["master/cpus_total"] == 4.0 and metrics["master/cpus_percent"] == 0.0
    assert metrics["master/slaves_active"] == 1.0
    assert metrics["master/frameworks_active"] == 1.0
    assert metrics["allocator/mesos/allocation_runs"] >= 1
    assert "allocator/mesos/allocation_run_ms" in metrics
    assert metrics["allocator/mesos/resources/cpus/total"] == 4.0
    assert "allocator/mesos/roles/web/shares/dominant" in metrics
    assert metrics["master/messages_status_update"] == metrics.get("master/status_updates", 0)
    # Agent (re-)registrations, and recovered agents that never came back, as Mesos counts.
    assert metrics["master/slave_registrations"] == 1.0
    assert metrics["master/slave_reregistrations"] == 0.0
    assert metrics["master/recovery_slave_removals"] == 0.0
    assert "system/cpus_total" in metrics
    assert parsed(prometheus_text(metrics))["master_cpus_total"] == [({}, 4.0)]


def test_agent_actions_are_routed_and_the_daemon_is_not():
    assert route_argv(["agent", "gone", "X"]) == ["agent-action", "gone", "X"]
    # Options of the action may come first (the value of --master is not the action).
    assert route_argv(["agent", "--master", "m", "drain", "X"])[0] == "agent-action"
    assert route_argv(["agent", "reactivate", "X"])[0] == "agent-action"
    assert route_argv(["agent", "--master", "m:1", "--work_dir", "w"])[0] == "agent"
    assert route_argv(["tasks"]) == ["tasks"]


def test_completion_scripts_are_valid_shell():
    text = script(build_parser([]), "bash")
    for word in ("agents", "tasks", "ps", "top", "teardown", "completion"):
        assert word in text
    assert 'words="deactivate drain gone prune-images reactivate"' in text
    assert 'words="attach cat exec info kill ls tail"' in text
    assert 'words="down schedule status up"' in text
    subprocess.run(["bash", "-n"], input=text.encode(), check=True)
    assert "bashcompinit" in script(build_parser([]), "zsh")


def test_master_addresses():
    assert parse_master("10.0.0.1:5050") == ("10.0.0.1", 5050)
    assert parse_master("http://master.example:5051/") == ("master.example", 5051)
    assert parse_master("somehost") == ("somehost", 5050)
    assert parse_master("https://h:1") == ("h", 1)  # TLS (docs/operating.md "TLS")
    for bad in ("host:notaport", "host:70000", ":5050", "ftp://h:1"):
        with pytest.raises(MasterUnreachable):
            parse_master(bad)


def test_formatting_helpers():
    assert number(2.0) == "2" and number(0.5) == "0.5" and number(1.25) == "1.25"
    assert mem(512) == "512M" and mem(4096) == "4G" and mem(1536) == "1.5G"
    assert age(100.0, now=145.0) == "45s" and age(0, now=1) == "-"
    assert age(0.5, now=7200.5) == "2h"
    assert normalise_state("running") == "TASK_RUNNING"
    assert normalise_state("TASK_FAILED") == "TASK_FAILED"
    res = parse_resources("cpus:1.5;mem:64;ports:[1-2]").to_json()
    assert scalars(res) == {"cpus": 1.5, "mem": 64.0}


def test_sandbox_path_of_command_and_executor_tasks():
    task = {
        "task_id": {"value": "t"},
        "framework_id": {"value": "F"},
        "agent_id": {"value": "A"},
    }
    assert sandbox_path(task) == "/slaves/A/frameworks/F/executors/t/runs/latest"
    task["executor_id"] = {"value": "E"}
    assert sandbox_path(task) == "/slaves/A/frameworks/F/executors/E/runs/latest"
