"""stdout/stderr rotation by size (``--container_logger=logrotate``, after Mesos' logrotate
container logger and its ``max_stdout_size`` / ``logrotate_stdout_options``).

Every second the agent looks at the size of each live container's ``stdout`` and ``stderr``
(and those of task group members under ``tasks/<id>/``). One past its maximum is rotated the
way logrotate's ``copytruncate`` does it: ``stdout.N-1`` becomes ``stdout.N`` (the oldest
beyond ``rotate N`` goes), the file's bytes are copied to ``stdout.1`` and it is truncated
to zero. The writers keep their descriptors (opened with O_APPEND, so their next write lands
at the new end). Bytes written between the last copy and the truncation, a window of
microseconds, would be lost; the copy is repeated until the file stops growing to keep that
window small. ``/files`` serves every file; ``butte task tail -f`` notices the truncation and
reads the rest of the old contents from ``stdout.1`` before it goes on.

As with Mesos' logger, a container may set its own sizes and options in its CommandInfo's
environment (`ENV_PREFIX` + ``MAX_STDOUT_SIZE``, ``LOGROTATE_STDOUT_OPTIONS``,
``MAX_STDERR_SIZE``, ``LOGROTATE_STDERR_OPTIONS``): `RotationPolicy.for_environment`. Each
task group member is a nested container of its own in Mesos, so its logs go by its own
task's CommandInfo over the agent's settings, not by its executor's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

_UNITS = {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}
CHECK_INTERVAL = 1.0


def parse_size(text: str) -> int:
    """Mesos' Bytes syntax (``10MB``, ``512KB``, ``4096B``, a plain number of bytes), at
    least one memory page, as Mesos' logger requires."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMGT]?B)?\s*", text.upper())
    if match is None:
        raise ValueError(f"expected a size like 10MB, got {text!r}")
    value = int(match.group(1)) * _UNITS[match.group(2) or "B"]
    page = os.sysconf("SC_PAGE_SIZE")
    if value < page:
        raise ValueError(f"the size must be at least {page} bytes (one page), got {text!r}")
    return value


def parse_options(text: str) -> int:
    """The number of rotated files to keep from logrotate options. Only ``rotate N`` is
    supported; anything else is refused (never ignored)."""
    words = text.split()
    if len(words) != 2 or words[0] != "rotate" or not words[1].isdigit() or int(words[1]) < 1:
        raise ValueError(f"only 'rotate N' (N >= 1) is supported, got {text!r}")
    return int(words[1])


@dataclass(frozen=True, slots=True)
class RotationPolicy:
    """Maximum sizes and how many rotated files to keep, per stream."""

    max_stdout: int
    max_stderr: int
    keep_stdout: int
    keep_stderr: int

    def for_environment(self, env: Mapping[str, str]) -> RotationPolicy:
        """This policy with what a container's environment overrides (see the module
        docstring); raises ValueError naming a variable whose value is invalid, or one with
        the prefix that is no setting (Mesos' logger refuses those too: a misspelling is not
        ignored)."""
        known = [ENV_PREFIX + name for name, _, _ in _OVERRIDES]
        unknown = sorted(n for n in env if n.startswith(ENV_PREFIX) and n not in known)
        if unknown:
            raise ValueError(
                f"{unknown[0]} is no container logger setting (they are: {', '.join(known)})"
            )
        changes: dict[str, int] = {}
        for name, field, parse in _OVERRIDES:
            value = env.get(ENV_PREFIX + name)
            if value is None:
                continue
            try:
                changes[field] = parse(value)
            except ValueError as e:
                raise ValueError(f"{ENV_PREFIX}{name}: {e}") from None
        return dataclasses.replace(self, **changes) if changes else self

    def check(self, sandbox: str, members: Mapping[str, RotationPolicy] | None = None) -> int:
        """Rotates every stdout/stderr of the sandbox past its maximum; returns how many.
        Those of a task group member (``tasks/<task id>/``) go by ``members[task id]``
        where given."""
        rotated = 0
        directories: list[tuple[str, RotationPolicy]] = [(sandbox, self)]
        with contextlib.suppress(OSError):
            directories += [
                (e.path, (members or {}).get(e.name, self))
                for e in os.scandir(os.path.join(sandbox, "tasks"))
            ]
        for directory, policy in directories:
            for name, limit, keep in (
                ("stdout", policy.max_stdout, policy.keep_stdout),
                ("stderr", policy.max_stderr, policy.keep_stderr),
            ):
                path = os.path.join(directory, name)
                try:
                    size = os.stat(path).st_size
                except OSError:
                    continue
                if size > limit:
                    rotate(path, keep)
                    rotated += 1
        return rotated


# Mesos' logrotate logger's environment_variable_prefix default.
ENV_PREFIX = "CONTAINER_LOGGER_"
# (variable after the prefix, RotationPolicy field, parser of its value)
_OVERRIDES: tuple[tuple[str, str, Callable[[str], int]], ...] = (
    ("MAX_STDOUT_SIZE", "max_stdout", parse_size),
    ("LOGROTATE_STDOUT_OPTIONS", "keep_stdout", parse_options),
    ("MAX_STDERR_SIZE", "max_stderr", parse_size),
    ("LOGROTATE_STDERR_OPTIONS", "keep_stderr", parse_options),
)


def rotate(path: str, keep: int) -> None:
    """``copytruncate`` of ``path`` into ``path.1`` after shifting older copies. The bytes go
    to a temporary copy first, and the older copies shift only once it is whole: a copy that
    fails (a full disk) is removed and leaves the copies as they were, where shifting first
    pushed a good copy out for each failed try."""
    source = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        st = os.fstat(source)
        partial = f"{path}.1.tmp"
        target = os.open(
            partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, st.st_mode & 0o777
        )
        try:
            with contextlib.suppress(OSError):
                os.fchown(target, st.st_uid, st.st_gid)
            copied = _copy_rest(source, target, 0)
            for n in range(keep, 1, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(f"{path}.{n - 1}", f"{path}.{n}")
            os.replace(partial, f"{path}.1")
            while True:  # what was written meanwhile goes into the copy too
                if os.fstat(source).st_size == copied:
                    os.ftruncate(source, 0)
                    return
                copied = _copy_rest(source, target, copied)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise
        finally:
            os.close(target)
    finally:
        os.close(source)


def _copy_rest(source: int, target: int, copied: int) -> int:
    """Copies ``source`` from byte ``copied`` to its current end into ``target`` (at the
    same offsets); returns the bytes copied in all."""
    size = os.fstat(source).st_size
    while copied < size:
        sent = os.copy_file_range(source, target, size - copied, copied, copied)
        if sent == 0:
            break
        copied += sent
    return copied
