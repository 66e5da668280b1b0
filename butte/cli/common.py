"""What every ``butte`` subcommand module shares: the user-facing error (`CliError`) and the
``BUTTE_<FLAG>`` environment defaults (`apply_env_defaults`; see `butte.cli.main`). Kept
apart from `butte.cli.main`, which imports the subcommand modules, so that they need not
import it back."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Mapping
from typing import Any

ENV_PREFIX = "BUTTE_"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


class CliError(Exception):
    """A user-facing failure: printed as one line to stderr, exit status ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def check_master(master: str) -> None:
    """Refuses (exit 2, bad usage) a ``--master`` that is neither ``[http(s)://]HOST[:PORT]``
    (a list of them, comma-separated) nor a well-formed ``zk://`` URL."""
    from butte.client.operator import MasterUnreachable, parse_master
    from butte.coord.url import is_zk_url, parse_zk_url

    try:
        if is_zk_url(master):
            parse_zk_url(master)
            return
        for address in master.split(","):
            parse_master(address)
    except (ValueError, MasterUnreachable) as e:
        raise CliError(f"bad --master: {e}", 2) from None


def env_name(action: argparse.Action) -> str | None:
    """``BUTTE_<FLAG>`` for a long option (``--work_dir`` -> ``BUTTE_WORK_DIR``; the first
    spelling names it, so ``--shell/--no-shell`` is ``BUTTE_SHELL``)."""
    if isinstance(action, argparse._HelpAction | argparse._VersionAction):
        return None
    longs = [s for s in action.option_strings if s.startswith("--")]
    if not longs:
        return None
    return ENV_PREFIX + longs[0][2:].replace("-", "_").upper()


def _parse_bool(name: str, text: str) -> bool:
    if text.strip().lower() in _TRUE:
        return True
    if text.strip().lower() in _FALSE:
        return False
    raise CliError(f"{name}={text!r} is not a boolean (use true/false, 1/0, yes/no)", 2)


def _convert(action: argparse.Action, name: str, text: str) -> Any:
    """Converts one environment string the way argparse would convert it on the command line."""
    if action.type is None:
        return text
    try:
        return action.type(text)  # type: ignore[operator]  # argparse's types are callables
    except (TypeError, ValueError, argparse.ArgumentTypeError) as e:
        raise CliError(f"{name}={text!r}: {e}", 2) from None


def apply_env_defaults(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """Makes ``BUTTE_<FLAG>`` variables the defaults of ``parser``'s flags (see module doc)."""
    for action in parser._actions:
        name = env_name(action)
        if name is None or name not in environ:
            continue
        text = environ[name]
        if isinstance(action, argparse._StoreTrueAction | argparse._StoreFalseAction):
            value: Any = _parse_bool(name, text)
            if isinstance(action, argparse._StoreFalseAction):
                value = not value
        elif isinstance(action, argparse.BooleanOptionalAction):
            value = _parse_bool(name, text)
        elif isinstance(action, argparse._AppendAction) or action.nargs in ("*", "+"):
            # Lists come as shell words: BUTTE_ENV="A=1 'B=two words'".
            value = [_convert(action, name, word) for word in shlex.split(text)]
        elif isinstance(action, argparse._StoreAction):
            value = _convert(action, name, text)
        else:
            continue
        if action.choices is not None and not isinstance(value, list):
            if value not in action.choices:
                raise CliError(f"{name}={text!r}: choose from {sorted(action.choices)}", 2)
        action.default = value
        action.required = False
