"""What the flags of ``butte agent`` and ``butte master`` share with Mesos' flags library
beyond their names: the ``--no-<flag>`` form of boolean flags (`add_negations`) and values
written back in a flag's own syntax, as ``/flags`` shows them (`duration_text`,
`size_text`, `flag_text`).

A boolean flag is declared in butte as an optional value that means true when the flag
stands alone (``nargs="?"``, ``const=True``, a bool default): ``--switch_user``,
``--switch_user=false``. Mesos also takes ``--no-switch_user`` for the latter; rather than
every module declaring boolean flags adding it, `add_negations` adds it to each boolean flag
of a parser once all of a command's flags are declared.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator, Sequence
from typing import Any

from butte.core.durations import format_duration, parse_duration

NEGATION_PREFIX = "--no-"

# Mesos' Bytes units, largest first (stout prints the largest that divides the size).
_SIZE_UNITS = (("TB", 1 << 40), ("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10))

# argparse.Namespace entries that are not flags: what the CLI stores to dispatch.
_NOT_FLAGS = frozenset({"handler", "command"})


def boolean(text: str | bool) -> bool:
    """argparse type of Mesos' boolean flags (``--flag``, ``--flag=true|false``): true or
    false, also 1/0, yes/no and on/off."""
    if isinstance(text, bool):
        return text
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def is_boolean_flag(action: argparse.Action) -> bool:
    """Whether ``action`` is a boolean flag as butte declares them (see the module doc)."""
    return (
        isinstance(action, argparse._StoreAction)
        and action.nargs == "?"
        and action.const is True
        and isinstance(action.default, bool)
        and any(s.startswith("--") for s in action.option_strings)
    )


class _Negation(argparse.Action):
    """``--no-<flag>``: sets the boolean flag's setting to false; refuses a value.

    It takes an optional value only to refuse one with a message of its own (``nargs=0``
    would have argparse say "ignored explicit argument"). Its default is SUPPRESS so that
    the flag's own default (perhaps from ``BUTTE_<FLAG>``) is the one that stands."""

    def __init__(self, option_strings: Sequence[str], dest: str, flag: str) -> None:
        super().__init__(
            option_strings,
            dest,
            nargs="?",
            default=argparse.SUPPRESS,
            help=argparse.SUPPRESS,  # the flag's own help names it
        )
        self.flag = flag

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        if values is not None:
            # ArgumentError: argparse prints usage and this one line, and exits with 2.
            raise argparse.ArgumentError(self, f"takes no value (it means {self.flag}=false)")
        setattr(namespace, self.dest, False)


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0-65535 (0: any free port)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is not in 0-65535")
    return port


def add_negations(parser: argparse.ArgumentParser) -> None:
    """Adds ``--no-<flag>`` to every boolean flag of ``parser`` that lacks it, and names it
    and the flag's default (``true``/``false``) in the flag's help. Call it after the
    command's flags are all declared."""
    taken = parser._option_string_actions
    for action in list(parser._actions):
        if not is_boolean_flag(action):
            continue
        longs = [s for s in action.option_strings if s.startswith("--")]
        negations = [NEGATION_PREFIX + s[2:] for s in longs]
        if any(n in taken for n in negations):
            continue  # declared already (or added by an earlier call)
        parser.add_argument(*negations, action=_Negation, dest=action.dest, flag=longs[0])
        if action.help is not argparse.SUPPRESS:
            text = action.help or ""
            if "default" not in text.lower():
                # Mesos' spelling (true/false), where argparse would print True/False.
                text += f" (default: {'true' if action.default else 'false'})"
            action.help = f"{text} ({', '.join(negations)} means false)".lstrip()


def duration_text(seconds: float) -> str:
    """``seconds`` in Mesos' duration syntax, exactly: as stout prints it (``2mins``,
    ``1weeks``, ``250ms``) where that parses back to the same value, else in seconds with
    every digit (``0.123456789secs``)."""
    text = format_duration(seconds)
    if math.isfinite(seconds) and parse_duration(text) != seconds:
        text = f"{seconds!r}secs"
    return text


def size_text(size: int) -> str:
    """A byte count in Mesos' Bytes syntax, as stout prints it: the largest unit that
    divides it (``10MB``, ``1536KB``), else bytes (``1000B``)."""
    for unit, scale in _SIZE_UNITS:
        if size and size % scale == 0:
            return f"{size // scale}{unit}"
    return f"{size}B"


def flag_text(value: Any) -> str | None:
    """A flag's value as ``/flags`` shows it when nothing more is known of its syntax:
    booleans as Mesos spells them (``true``/``false``), None (an unset flag, which Mesos
    leaves out) as None, JSON objects (``--domain``) as JSON, anything else as ``str``
    (strings as given, numbers exactly)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def flag_values(args: argparse.Namespace) -> Iterator[tuple[str, Any]]:
    """(dest, value) of every flag of parsed ``args``, by dest; not what the CLI stores
    there to dispatch (the handler, the command's name)."""
    for dest, value in sorted(vars(args).items()):
        if dest not in _NOT_FLAGS and not callable(value):
            yield dest, value


def flag_texts(args: argparse.Namespace) -> dict[str, str]:
    """Every set flag of ``args`` as `flag_text` shows it, by name."""
    texts = ((name, flag_text(value)) for name, value in flag_values(args))
    return {name: text for name, text in texts if text is not None}


def log_fields(flags: dict[str, str]) -> dict[str, str]:
    """A ``/state`` document's top-level ``log_dir`` and ``external_log_file``: Mesos puts
    each there when its flag is set (UIs show a log link by them)."""
    return {name: flags[name] for name in ("log_dir", "external_log_file") if name in flags}
