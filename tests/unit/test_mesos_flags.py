"""Mesos' flag syntax on ``butte agent`` and ``butte master``: Mesos' names of the disk
intervals, ``--no-<flag>`` for every boolean flag, and ``/flags`` values that parse back to
the same setting when passed as ``--<name>=<value>``."""

from __future__ import annotations

import argparse
import json
import re

import pytest

from butte.agent import flags as agent_flags
from butte.agent.main import add_flags as add_agent_flags
from butte.cli.main import main as butte_main
from butte.master.main import add_flags as add_master_flags
from butte.master.main import config_from_args

AGENT_REQUIRED = ("--master", "127.0.0.1:5050", "--work_dir", "/tmp/w")
MASTER_REQUIRED = ("--work_dir", "/tmp/m")


def agent_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="butte agent")
    add_agent_flags(parser)
    return parser


def master_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="butte master")
    add_master_flags(parser)
    return parser


def parse_agent(*argv: str) -> argparse.Namespace:
    return agent_parser().parse_args([*AGENT_REQUIRED, *argv])


def parse_master(*argv: str) -> argparse.Namespace:
    return master_parser().parse_args([*MASTER_REQUIRED, *argv])


# --- 1. Mesos' names of --container_disk_watermark_interval and --disk_watermark_interval


def test_disk_interval_defaults_follow_mesos() -> None:
    args = parse_agent()
    assert args.container_disk_watermark_interval == 15.0
    assert args.disk_watermark_interval == 60.0


@pytest.mark.parametrize(
    ("flag", "dest"),
    [
        ("--container_disk_watch_interval", "container_disk_watermark_interval"),
        ("--container_disk_watermark_interval", "container_disk_watermark_interval"),
        ("--disk_watch_interval", "disk_watermark_interval"),
        ("--disk_watermark_interval", "disk_watermark_interval"),
    ],
)
def test_mesos_and_butte_names_set_the_same_interval(flag: str, dest: str) -> None:
    args = parse_agent(f"{flag}=90secs")
    assert getattr(args, dest) == 90.0
    assert getattr(parse_agent(flag, "200ms"), dest) == pytest.approx(0.2)
    assert set(vars(args)) == set(vars(parse_agent()))  # one setting, not one per name


def test_help_names_both_spellings_mesos_first() -> None:
    text = " ".join(agent_parser().format_help().split())
    for mesos, butte in (
        ("--container_disk_watch_interval", "--container_disk_watermark_interval"),
        ("--disk_watch_interval", "--disk_watermark_interval"),
    ):
        assert f"{mesos} DURATION, {butte} DURATION" in text


# --- 2. --no-<flag> for every boolean flag


def _boolean_flags(parser: argparse.ArgumentParser, required: tuple[str, ...]) -> list[str]:
    """Names of the flags that take Mesos booleans, found by what they parse (not by how they
    are declared): ``--<name>=true`` gives True and ``--<name>=false`` False."""
    names = []
    for action in parser._actions:
        longs = [s for s in action.option_strings if s.startswith("--") and s != "--help"]
        if not longs or longs[0].startswith("--no-"):
            continue
        try:
            on = parser.parse_args([*required, f"{longs[0]}=true"])
            off = parser.parse_args([*required, f"{longs[0]}=false"])
        except SystemExit:
            continue
        if getattr(on, action.dest) is True and getattr(off, action.dest) is False:
            names.append(longs[0][2:])
    return names


@pytest.mark.parametrize(
    ("parser", "required", "expected"),
    [
        (
            agent_parser,
            AGENT_REQUIRED,
            {"switch_user", "cgroups_enable_cfs", "enforce_container_disk_quota"},
        ),
        (master_parser, MASTER_REQUIRED, {"authenticate_agents", "filter_gpu_resources"}),
    ],
    ids=["agent", "master"],
)
def test_no_form_of_every_boolean_flag(parser, required, expected, capsys) -> None:
    p = parser()
    names = _boolean_flags(p, required)
    capsys.readouterr()  # the probes' usage errors
    assert expected <= set(names), names
    for name in names:
        assert getattr(p.parse_args([*required, f"--no-{name}"]), name) is False, name
        assert getattr(p.parse_args([*required, f"--{name}"]), name) is True, name
        # The last of the two spellings wins, as every repeated flag does.
        args = p.parse_args([*required, f"--no-{name}", f"--{name}=true"])
        assert getattr(args, name) is True, name


def test_no_form_of_flags_true_by_default() -> None:
    args = parse_agent("--no-executor_zygote", "--no-docker_kill_orphans")
    assert args.executor_zygote is False and args.docker_kill_orphans is False
    assert parse_master("--no-filter_gpu_resources").filter_gpu_resources is False
    assert config_from_args(parse_master("--no-filter_gpu_resources")).allocator == (
        config_from_args(parse_master("--filter_gpu_resources=false")).allocator
    )


def test_help_mentions_the_no_form() -> None:
    text = " ".join(agent_parser().format_help().split())
    assert "--no-switch_user" in text


@pytest.mark.parametrize("value", ["=true", "=false", "=", " false"])
def test_no_form_takes_no_value(value: str, capsys) -> None:
    with pytest.raises(SystemExit) as stop:
        parse_agent(*f"--no-switch_user{value}".split(" "))
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "argument --no-switch_user: takes no value" in err
    assert "--switch_user=false" in err


# --- 3. /flags values parse back to the same setting

NON_DEFAULT_AGENT = (
    "--gc_delay=2mins",
    "--disk_watch_interval=90secs",
    "--container_disk_watermark_interval=250ms",
    "--executor_shutdown_grace_period=2.5",
    "--registration_backoff_factor=0.123456789secs",
    "--executor_registration_timeout=1234567secs",
    "--recovery_timeout=3days",
    "--docker_stop_timeout=3secs",
    "--logrotate_max_stdout_size=1536KB",
    "--logrotate_max_stderr_size=5000",
    "--logrotate_stdout_options=rotate 2",
    "--work_dir_min_free=1GB",
    "--container_logger=logrotate",
    "--switch_user",
    "--no-executor_zygote",
    "--cgroups_enable_cfs=1",
    "--resources=cpus:1.5;mem:64;disk:10;ports:[1-2,5-9];gpus:1",
    "--attributes=rack:r1;zone:a;n:3;r:[1-5];s:{a,b}",
    '--executor_environment_variables={"A": "1", "B": "two words"}',
    "--nvidia_gpu_devices=0,2",
    "--image_providers=docker",
    "--allowed_host_path_volumes=/data,/srv/x",
    "--hostname=node1",
    "--master=zk://h1:2181,h2:2181/mesos",
    "--max_connections=7",
    "--gc_disk_headroom=0.25",
    "--container_max_pids=100",
    "--containerizers=mesos,docker",
    "--recover=cleanup",
)


def _passed_back(shown: dict[str, str]) -> list[str]:
    return [f"--{name}={value}" for name, value in shown.items()]


@pytest.mark.parametrize("argv", [(), NON_DEFAULT_AGENT], ids=["defaults", "non-defaults"])
def test_agent_flags_endpoint_values_parse_back(argv: tuple[str, ...]) -> None:
    args = parse_agent(*argv)
    shown = agent_flags.flags_for_state(args)
    assert all(isinstance(v, str) for v in shown.values())
    again = agent_parser().parse_args(_passed_back(shown))
    assert vars(again) == vars(args)
    assert agent_flags.flags_for_state(again) == shown


def test_agent_flags_endpoint_uses_each_flags_syntax() -> None:
    shown = agent_flags.flags_for_state(parse_agent(*NON_DEFAULT_AGENT))
    assert shown["gc_delay"] == "2mins"
    assert shown["disk_watch_interval"] == "90secs"
    assert shown["container_disk_watch_interval"] == "250ms"
    assert shown["logrotate_max_stdout_size"] == "1536KB"
    assert shown["logrotate_max_stderr_size"] == "5000B"
    assert shown["logrotate_stdout_options"] == "rotate 2"
    assert shown["work_dir_min_free"] == "1GB"
    assert shown["switch_user"] == "true" and shown["executor_zygote"] == "false"
    assert shown["docker_stop_timeout"] == "3secs"
    assert json.loads(shown["executor_environment_variables"]) == {"A": "1", "B": "two words"}
    defaults = agent_flags.flags_for_state(parse_agent())
    assert defaults["gc_delay"] == "1weeks"
    assert defaults["logrotate_max_stdout_size"] == "10MB"
    assert defaults["logrotate_stderr_options"] == "rotate 9"
    assert defaults["container_disk_watch_interval"] == "15secs"
    assert defaults["disk_watch_interval"] == "1mins"
    assert defaults["enforce_container_disk_quota"] == "false"
    assert "hostname" not in defaults  # unset, as Mesos leaves out flags without a value


NON_DEFAULT_MASTER = (
    "--allocation_interval=100ms",
    "--hostname=m1",
    "--offer_timeout=30secs",
    "--authenticate_agents",
    "--no-filter_gpu_resources",
    "--roles=a,b",
    "--weights=a=2",
    "--max_stream_backlog=1048576",
    "--registry=in_memory",
)


@pytest.mark.parametrize("argv", [(), NON_DEFAULT_MASTER], ids=["defaults", "non-defaults"])
def test_master_flags_endpoint_values_parse_back(argv: tuple[str, ...], tmp_path) -> None:
    credentials = tmp_path / "credentials"
    credentials.write_text("ops secret\n")
    args = parse_master(f"--credentials={credentials}", *argv)
    shown = config_from_args(args).flags
    assert all(isinstance(v, str) for v in shown.values())
    again = master_parser().parse_args(_passed_back(shown))
    assert vars(again) == vars(args)
    assert "None" not in shown.values() and "True" not in shown.values()


# --- 4. Bad values: one argparse error line, exit status 2, no traceback


@pytest.mark.parametrize(
    "argv",
    [
        ["agent", *AGENT_REQUIRED, "--disk_watch_interval=soon"],
        ["agent", *AGENT_REQUIRED, "--container_disk_watch_interval=-1secs"],
        ["agent", *AGENT_REQUIRED, "--container_disk_watch_interval="],
        ["agent", *AGENT_REQUIRED, "--no-switch_user=true"],
        ["agent", *AGENT_REQUIRED, "--no-enforce_container_disk_quota="],
        ["agent", *AGENT_REQUIRED, "--no-cgroups_enable_cfs", "false"],
        ["agent", *AGENT_REQUIRED, "--no-gc_delay"],
        ["master", *MASTER_REQUIRED, "--no-authenticate_agents=1"],
        ["master", *MASTER_REQUIRED, "--no-filter_gpu_resources=false"],
    ],
)
def test_bad_values_are_one_line_usage_errors(argv: list[str], capsys) -> None:
    assert butte_main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    # The subcommand's parser reports bad values; the top one flags it does not know.
    assert len(errors) == 1 and re.match(r"butte( agent| master)?: error: ", errors[0]), err


@pytest.mark.parametrize(
    ("parse", "argv", "problem"),
    [
        (parse_agent, ("--port", "99999"), "port 99999 is not in 0-65535"),
        (parse_master, ("--port", "-1"), "port -1 is not in 0-65535"),
        (parse_agent, ("--port", "web"), "'web' is not a port number"),
        (parse_agent, ("--registration_backoff_factor", "1mins"), "must be less than 1mins"),
    ],
)
def test_out_of_range_values_are_refused_as_mesos_refuses_them(parse, argv, problem, capsys):
    with pytest.raises(SystemExit):
        parse(*argv)
    assert problem in capsys.readouterr().err


def test_in_range_values_parse() -> None:
    assert parse_agent("--port", "0").port == 0
    assert parse_master("--port", "65535").port == 65535
    assert parse_agent("--registration_backoff_factor", "59secs").registration_backoff_factor == 59
