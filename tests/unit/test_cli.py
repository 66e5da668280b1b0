"""The `butte` command line: help at every level, BUTTE_* environment flags, error handling."""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys

import pytest

import butte
from butte.cli.main import CliError, apply_env_defaults, build_parser, main
from butte.testing.cluster import free_port


def parse(argv: list[str], environ: dict[str, str] | None = None) -> argparse.Namespace:
    return build_parser(argv, environ or {}).parse_args(argv)


# -- help -----------------------------------------------------------------------------------


def test_top_level_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("master", "agent", "local", "run", "version"):
        assert command in out


@pytest.mark.parametrize(
    ("command", "flags"),
    [
        (
            "run",
            ["--master", "--name", "--command", "--resources", "--instances", "--role"]
            + ["--shell", "--no-shell", "--env", "--checkpoint", "--framework_name"],
        ),
        ("local", ["--port", "--agents", "--work_dir", "--resources", "--demo"]),
    ],
)
def test_subcommand_help_lists_its_flags_with_env_names(capsys, command, flags):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    for flag in flags:
        assert flag in out
    assert "[env BUTTE_" in out


@pytest.mark.parametrize("command", ["master", "agent"])
def test_daemon_help_comes_from_its_module_or_says_it_is_missing(capsys, command):
    rc = main([command, "--help"])
    captured = capsys.readouterr()
    if importlib.util.find_spec(f"butte.{command}.main") is None:
        assert rc == 1
        assert "not available" in captured.err
    else:
        assert rc == 0
        assert "--work_dir" in captured.out or "--master" in captured.out


def test_top_level_help_does_not_import_the_daemons():
    code = (
        "import sys, contextlib, io\n"
        "from butte.cli.main import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['--help'])\n"
        "print(sorted(m for m in sys.modules if m.startswith(('butte.master', 'butte.agent'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_version_subcommand_and_python_dash_m(capsys):
    assert main(["version"]) == 0
    assert butte.__version__ in capsys.readouterr().out
    result = subprocess.run(
        [sys.executable, "-m", "butte", "version"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert result.stdout.startswith("butte ")


def test_missing_subcommand_is_a_usage_error(capsys):
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


# -- environment variables ------------------------------------------------------------------


def test_env_variable_satisfies_a_required_flag():
    args = parse(["run", "--name", "n", "--command", "true"], {"BUTTE_MASTER": "127.0.0.1:1234"})
    assert args.master == "127.0.0.1:1234"


def test_command_line_wins_over_env():
    args = parse(
        ["run", "--master", "a:1", "--name", "n", "--command", "x", "--instances", "2"],
        {"BUTTE_MASTER": "b:2", "BUTTE_INSTANCES": "7"},
    )
    assert args.master == "a:1"
    assert args.instances == 2


def test_env_values_are_converted_like_flags():
    environ = {
        "BUTTE_MASTER": "m:5050",
        "BUTTE_NAME": "job",
        "BUTTE_COMMAND": "sleep 1",
        "BUTTE_INSTANCES": "3",
        "BUTTE_SHELL": "false",
        "BUTTE_CHECKPOINT": "yes",
        "BUTTE_ENV": "A=1 'B=two words'",
    }
    args = parse(["run"], environ)
    assert (args.name, args.command, args.instances) == ("job", "sleep 1", 3)
    assert args.shell is False
    assert args.checkpoint is True
    assert args.env == [("A", "1"), ("B", "two words")]


def test_env_for_local_flags():
    args = parse(["local"], {"BUTTE_PORT": "6060", "BUTTE_WORK_DIR": "/tmp/x", "BUTTE_AGENTS": "2"})
    assert (args.port, args.work_dir, args.agents) == (6060, "/tmp/x", 2)


def test_bad_env_values_are_clear_errors():
    with pytest.raises(CliError, match="BUTTE_INSTANCES"):
        parse(["run"], {"BUTTE_INSTANCES": "many"})
    with pytest.raises(CliError, match="BUTTE_CHECKPOINT.*boolean"):
        parse(["run"], {"BUTTE_CHECKPOINT": "maybe"})


def test_env_defaults_apply_to_any_parser():
    parser = argparse.ArgumentParser()
    parser.add_argument("--work_dir", required=True)
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--color", choices=["red", "blue"], default="red")
    apply_env_defaults(parser, {"BUTTE_WORK_DIR": "/w", "BUTTE_VERBOSE": "1"})
    args = parser.parse_args([])
    assert (args.work_dir, args.verbose, args.color) == ("/w", True, "red")
    with pytest.raises(CliError, match="choose from"):
        apply_env_defaults(parser, {"BUTTE_COLOR": "green"})


# -- errors ---------------------------------------------------------------------------------


def test_unreachable_master_is_one_line_and_exit_2(capsys):
    port = free_port()
    rc = main(
        ["run", "--master", f"127.0.0.1:{port}", "--name", "x", "--command", "true"]
        + ["--connect_timeout", "0.3"]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1
    assert f"cannot reach master 127.0.0.1:{port}: connection refused" in err
    assert "Traceback" not in err
    assert "ssl:default" not in err and "Connect call failed" not in err  # aiohttp's text


def test_bad_resources_are_one_line_and_exit_2(capsys):
    argv = ["run", "--master", "127.0.0.1:1", "--name", "x", "--command", "true"]
    rc = main([*argv, "--resources", "cpus:lots"])
    err = capsys.readouterr().err
    assert rc == 2
    assert "bad --resources" in err and err.count("\n") == 1


def test_unreachable_master_from_a_real_process_has_no_traceback():
    port = free_port()
    result = subprocess.run(
        [sys.executable, "-m", "butte", "run", "--master", f"127.0.0.1:{port}"]
        + ["--name", "x", "--command", "true", "--connect_timeout", "0.2"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("butte: error: cannot reach master")
    assert "Traceback" not in result.stderr
