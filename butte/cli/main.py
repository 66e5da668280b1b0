"""The ``butte`` command: ``master``, ``agent``, ``local``, ``run``, ``sim``, ``version``,
and the operator subcommands of `butte.cli.ops` (``agents``, ``tasks``, ``task cat``, ``top``
...).

Flags use Mesos' spellings (``--work_dir``, ``--master``). Every flag may also come from the
environment as ``BUTTE_<FLAG>`` (``BUTTE_WORK_DIR``, ``BUTTE_PORT``): the variable becomes the
flag's default, so the command line still wins, and a required flag is satisfied by it. This
is applied generically to every subcommand, including the flags that the master and agent
modules define.

The master and agent modules are imported only when their subcommand is used, so ``butte
--help`` and the other subcommands work even where those modules fail to import.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import butte
from butte.cli.common import CliError, apply_env_defaults, env_name

# Subcommands whose flags and behaviour live in another package: name -> (module, summary).
# Each module has ``add_flags(parser)`` and ``run(args) -> int`` and is imported only when
# its subcommand is selected. Daemons and bundled frameworks register here.
_DAEMONS = {
    "master": ("butte.master.main", "run a master (scheduler, operator and agent APIs)"),
    "agent": (
        "butte.agent.main",
        "run an agent that launches tasks for a master (`agent gone|drain|deactivate|"
        "reactivate|prune-images ID`: act on one)",
    ),
    "chronos": (
        "butte.frameworks.chronos.main",
        "run a Chronos-compatible job scheduler (ISO8601 schedules, dependencies)",
    ),
    "marathon": (
        "butte.frameworks.marathon.main",
        "run a Marathon-compatible service scheduler (REST API v2) as a framework",
    ),
    "mpi": ("butte.frameworks.mpi.cli", "run an MPI program as a gang-scheduled job"),
    "vm": (
        "butte.frameworks.vm.cli",
        "VM scheduler: `vm serve` runs it; create|list|show|start|stop|restart|delete|console",
    ),
    "spark-submit": (
        "butte.frameworks.spark.submit",
        "run a Spark application on a Spark standalone cluster launched as tasks",
    ),
}


class _Formatter(argparse.HelpFormatter):
    """Shows the default and the environment variable of every flag in ``--help``."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = action.default not in (None, False, [], (), argparse.SUPPRESS)
        # Skipped where the help already names its default (the daemons' flags do).
        if action.option_strings and shown and "default" not in text.lower():
            text += " (default: %(default)s)"
        name = env_name(action)
        if name is not None:
            text += f" [env {name}]"
        return text


def _subcommand(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line (first word that is not an option)."""
    for word in argv:
        if not word.startswith("-"):
            return word
    return None


def build_parser(
    argv: Sequence[str] = (), environ: Mapping[str, str] | None = None
) -> argparse.ArgumentParser:
    """The full parser. The master/agent flags are added only when ``argv`` selects that
    subcommand, so their modules are not imported otherwise."""
    from butte.cli import local, ops, run
    from butte.sim import main as sim

    environ = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog="butte",
        description="butte: a cluster resource manager speaking the Mesos v1 HTTP APIs.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=version_text())
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    selected = _subcommand(argv)
    for name, (module, summary) in _DAEMONS.items():
        sub = commands.add_parser(
            name, help=summary, description=summary, formatter_class=_Formatter
        )
        if name == selected:
            _daemon_module(name, module).add_flags(sub)
            sub.set_defaults(handler=_daemon_runner(name, module))
    for name, module_ in (("local", local), ("run", run), ("sim", sim)):
        sub = commands.add_parser(
            name, help=module_.SUMMARY, description=module_.DESCRIPTION, formatter_class=_Formatter
        )
        module_.add_flags(sub)
        sub.set_defaults(handler=module_.run)
    sub = commands.add_parser("version", help="print the version", formatter_class=_Formatter)
    sub.set_defaults(handler=_print_version)
    ops.add_commands(commands)  # agents, frameworks, tasks, task, top, teardown, agent ...
    # Only the subcommand being run takes BUTTE_<FLAG> defaults: a variable one command
    # accepts (BUTTE_OUTPUT=json for `tasks`) may be a value another refuses (`top` has no
    # json output), and that must not stop every command.
    for name, sub in commands.choices.items():
        if name == selected:
            apply_env_defaults(sub, environ)
    # `butte completion` prints the script of this whole parser (butte.cli.completion).
    commands.choices["completion"].set_defaults(root_parser=parser)
    return parser


def _daemon_module(name: str, module: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise CliError(f"`butte {name}` is not available in this build: {e}") from None


def _daemon_runner(name: str, module: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return _daemon_module(name, module).run(args)

    return run


def version_text() -> str:
    """``butte <version> (Mesos API <version>)``."""
    return f"butte {butte.__version__} (Mesos API {butte.MESOS_COMPAT_VERSION})"


def _print_version(args: argparse.Namespace) -> int:
    print(version_text())
    return 0


__all__ = ["CliError", "apply_env_defaults", "build_parser", "main", "version_text"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``butte`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        from butte.cli.ops import route_argv

        argv = route_argv(argv)  # `butte agent gone|drain|... ID` is an operator action
        args = build_parser(argv).parse_args(argv)
        return int(args.handler(args) or 0)
    except CliError as e:
        print(f"butte: error: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        print("butte: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # argparse: --help (0) and usage errors (2)
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BrokenPipeError:
        return 1
    except Exception as e:  # noqa: BLE001 - one line for users; no traceback on stderr
        print(f"butte: error: {type(e).__name__}: {e}", file=sys.stderr)
        if os.environ.get("BUTTE_DEBUG"):
            raise
        return 1


if __name__ == "__main__":
    sys.exit(main())
