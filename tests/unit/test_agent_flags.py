"""The agent's flags: Mesos spellings, durations, master address and resource detection."""

from __future__ import annotations

import argparse

import pytest

from butte.agent import flags
from butte.agent.main import add_flags, options_from_args
from butte.core.resources import parse_resources


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_flags(parser)
    return parser.parse_args(["--master", "127.0.0.1:5050", "--work_dir", "/tmp/w", *argv])


def test_defaults_follow_mesos():
    args = parse()
    assert args.ip == "127.0.0.1" and args.port == 5051
    assert args.executor_registration_timeout == 60.0
    assert args.executor_shutdown_grace_period == 5.0
    assert args.status_update_retry_interval_min == 10.0
    assert args.status_update_retry_interval_max == 600.0
    assert args.registration_backoff_factor == 1.0
    assert args.http_command_executor is True


def test_durations_and_mesos_flag_syntax():
    args = parse(
        "--status_update_retry_interval_min=200ms",
        "--executor_registration_timeout",
        "3hrs",
        "--executor_shutdown_grace_period",
        "2.5",
    )
    assert args.status_update_retry_interval_min == pytest.approx(0.2)
    assert args.executor_registration_timeout == 3 * 3600
    assert args.executor_shutdown_grace_period == 2.5


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("10.0.0.1:5050", "10.0.0.1:5050"),
        ("m1", "m1:5050"),
        ("master@10.0.0.2:6000", "10.0.0.2:6000"),
        ("http://m1:5050/", "m1:5050"),
    ],
)
def test_master_address_forms(text, address):
    assert flags.master_address(text) == address


@pytest.mark.parametrize("text", ["zk://h:2181", "m1:notaport", "m1:0", ":5050", "a/b:1"])
def test_bad_master_addresses(text):
    with pytest.raises(argparse.ArgumentTypeError) as error:
        flags.master_address(text)
    if text.startswith("zk://"):
        assert "needs a znode path" in str(error.value)


def test_zk_master_url_is_kept():
    assert flags.master_address(" zk://h1:2181,h2/mesos ") == "zk://h1:2181,h2/mesos"


def test_bad_flag_values_are_argparse_errors(capsys):
    for argv in (
        ["--resources", "cpus:x"],
        ["--executor_registration_timeout", "soon"],
        ["--attributes", "novalue"],
    ):
        with pytest.raises(SystemExit):
            parse(*argv)
    assert "invalid" in capsys.readouterr().err


def test_file_urls_give_a_flags_value_from_a_file(tmp_path, capsys):
    """As Mesos reads them: --resources=file:///path (text or JSON), and the same for the
    attributes and the executors' environment."""
    (tmp_path / "resources.json").write_text(
        '[{"name": "cpus", "type": "SCALAR", "scalar": {"value": 3}}]\n'
    )
    (tmp_path / "attributes").write_text("rack:r7\n")
    (tmp_path / "env.json").write_text('{"LD_LIBRARY_PATH": "/opt/lib"}')
    args = parse(
        f"--resources=file://{tmp_path}/resources.json",
        f"--attributes=file://{tmp_path}/attributes",
        f"--executor_environment_variables=file://{tmp_path}/env.json",
    )
    assert args.resources.scalar("cpus") == 3
    assert [(a.name, a.value) for a in args.attributes] == [("rack", "r7")]
    assert args.executor_environment_variables == {"LD_LIBRARY_PATH": "/opt/lib"}
    with pytest.raises(SystemExit):
        parse(f"--resources=file://{tmp_path}/missing")
    assert f"cannot read {tmp_path}/missing: No such file or directory" in capsys.readouterr().err


def test_given_resources_override_detected_ones(tmp_path):
    total = flags.total_resources(parse_resources("cpus:2;gpus:1"), str(tmp_path))
    assert total.scalar("cpus") == 2 and total.scalar("gpus") == 1
    assert total.scalar("mem") > 0 and total.scalar("disk") > 0
    assert total.ranges("ports") == ((31000, 32000),)


def test_detection_rules(monkeypatch, tmp_path):
    monkeypatch.setattr(flags, "_meminfo_total_mb", lambda: 16384.0)
    monkeypatch.setattr(flags, "_filesystem_mb", lambda path: 8192.0)
    monkeypatch.setattr(flags.os, "cpu_count", lambda: 8)
    assert flags.detected_resources(str(tmp_path)) == (
        "cpus:8;mem:15360;disk:4096;ports:[31000-32000]"
    )
    monkeypatch.setattr(flags, "_meminfo_total_mb", lambda: 1024.0)
    monkeypatch.setattr(flags, "_filesystem_mb", lambda path: 20480.0)
    assert "mem:512;disk:15360" in flags.detected_resources(str(tmp_path))


def test_options_from_args(tmp_path):
    args = parse(
        "--resources",
        "cpus:1;mem:64;disk:10;ports:[1-2]",
        "--attributes",
        "rack:r1",
        "--hostname",
        "node1",
    )
    options = options_from_args(args)
    assert options.hostname == "node1" and options.master == "127.0.0.1:5050"
    assert options.resources == parse_resources("cpus:1;mem:64;disk:10;ports:[1-2]")
    assert options.attributes[0].name == "rack"
    assert options.flags["status_update_retry_interval_min"] == "10secs"
    assert options.flags["resources"] == "cpus:1;disk:10;mem:64;ports:[1-2]"


def test_recovery_flags(tmp_path):
    args = parse()
    assert args.recover == "reconnect"
    assert args.executor_reregistration_timeout == 2.0
    assert args.recovery_timeout == 900.0
    assert args.fetcher_cache_dir is None
    args = parse("--recover=cleanup", "--executor_reregistration_timeout=5secs")
    options = options_from_args(args)
    assert options.recover == "cleanup" and options.executor_reregistration_timeout == 5.0
    with pytest.raises(SystemExit):
        parse("--recover=sometimes")


def test_reregistration_timeout_is_capped_like_mesos(capsys):
    from butte.agent.main import run

    assert run(parse("--executor_reregistration_timeout=16secs")) == 2
    assert "15secs" in capsys.readouterr().err


def test_container_logger_takes_mesos_module_name(capsys):
    assert parse("--container_logger", flags.MESOS_LOGROTATE_MODULE).container_logger == (
        "logrotate"
    )
    assert parse("--container_logger=logrotate").container_logger == "logrotate"
    assert parse().container_logger == "sandbox"
    with pytest.raises(SystemExit):
        parse("--container_logger=syslog")
    assert "expected sandbox, logrotate or" in capsys.readouterr().err
