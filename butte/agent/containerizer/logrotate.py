"""stdout/stderr rotation by size (``--container_logger=logrotate``, after Mesos' logrotate
container logger and its ``max_stdout_size`` / ``logrotate_stdout_options``).

Every second the log rotator (`butte.agent.executor.rotator`, a process of its own that
outlives the agent, as Mesos' ``mesos-logrotate-logger`` processes do) looks at the size of
each live container's ``stdout`` and ``stderr`` (and those of task group members under
``tasks/<id>/``); the agent keeps it running and tells it which sandboxes to rotate with
which policy (`RotatorClient`). One past its maximum is rotated the way logrotate's
``copytruncate`` does it: ``stdout.N-1`` becomes ``stdout.N`` (the oldest
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
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from butte.agent.executor import lite

if TYPE_CHECKING:
    import subprocess

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

    def wire(self) -> list[int]:
        """This policy as the rotator's protocol carries it (`of_wire` reads it back)."""
        return [self.max_stdout, self.max_stderr, self.keep_stdout, self.keep_stderr]

    @classmethod
    def of_wire(cls, value: Any) -> RotationPolicy:
        """A policy from its `wire` form; ValueError unless four positive integers."""
        if not (
            isinstance(value, list)
            and len(value) == 4
            and all(type(n) is int and n > 0 for n in value)
        ):
            raise ValueError(f"a policy is four positive integers, got {value!r}"[:200])
        return cls(*value)

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


# -- the agent's side of the log rotator (butte.agent.executor.rotator) -----------------------

ROTATOR_SOCKET = "rotator.sock"  # under the work dir
ROTATOR_LOCK = "rotator.lock"  # held by the rotator that rotates; holds its pid
ROTATOR_START_TIMEOUT = 10.0  # for a new rotator to listen / an old one to answer
ROTATOR_SEND_TIMEOUT = 10.0
ROTATOR_STOP_TIMEOUT = 2.0  # for a rotator told to stop to exit

# One sandbox to rotate: its path, its own policy, its task group members' by task id.
Work = tuple[str, RotationPolicy, dict[str, RotationPolicy]]


class RotatorUnavailable(Exception):
    """The log rotator could not be reached or started."""


class RotatorClient:
    """One agent's connection to its log rotator. `connect` adopts the rotator a previous
    run of the agent left (its socket answers) or starts one; `send` replaces the list of
    sandboxes it rotates; `poll` reads what it reported and notices that it is gone.
    `connect`, `send` and `stop` block (the agent runs them in a thread); `poll` does not."""

    def __init__(self, argv: Sequence[str], work_dir: str, recovery_timeout: float) -> None:
        self._argv = [*argv, os.path.abspath(work_dir), repr(float(recovery_timeout))]
        self.path = os.path.join(os.path.abspath(work_dir), ROTATOR_SOCKET)
        self.pid: int | None = None  # the connected rotator's
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None  # one this agent started
        self._buffer = bytearray()

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def connect(self) -> bool:
        """Connects to the running rotator, else starts one; True: an existing one was
        adopted. RotatorUnavailable (or OSError) if neither works."""
        import subprocess  # only agents that rotate pay for it

        self._reap()
        sock = _connect(self.path)
        adopted = sock is not None
        if sock is None:
            self._proc = subprocess.Popen(
                self._argv, stdin=subprocess.DEVNULL, start_new_session=True, cwd="/"
            )
            deadline = time.monotonic() + ROTATOR_START_TIMEOUT
            while sock is None:
                if self._proc.poll() is not None:
                    raise RotatorUnavailable(
                        f"the log rotator exited with status {self._proc.returncode}"
                    )
                if time.monotonic() > deadline:
                    self._proc.kill()
                    self._proc.wait()
                    raise RotatorUnavailable(f"the log rotator did not start ({self.path})")
                time.sleep(0.01)
                sock = _connect(self.path)
        sock.settimeout(ROTATOR_START_TIMEOUT)
        self._buffer.clear()
        try:
            while b"\n" not in self._buffer:
                data = sock.recv(1 << 16)
                if not data:
                    raise ValueError("connection closed")
                self._buffer += data
            end = self._buffer.index(b"\n")
            hello = lite.loads(bytes(self._buffer[:end]))
            del self._buffer[: end + 1]
            self.pid = int(hello["rotator"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            sock.close()
            raise RotatorUnavailable(f"no answer from the log rotator: {e}") from None
        sock.setblocking(False)
        self._sock = sock
        return adopted

    def send(self, work: Sequence[Work]) -> None:
        """Tells the rotator to rotate exactly these sandboxes from now on."""
        sandboxes = [
            [sandbox, own.wire(), {task: p.wire() for task, p in members.items()}]
            for sandbox, own, members in work
        ]
        self._request({"op": "rotate", "sandboxes": sandboxes})

    def poll(self) -> list[str]:
        """What the rotator reported since the last call (warnings and errors, to log);
        ``connected`` turns False if it is gone. Does not block."""
        sock = self._sock
        while sock is not None:
            try:
                data = sock.recv(1 << 16)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self._lost()
                break
            self._buffer += data
        said = []
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[:end])
            del self._buffer[: end + 1]
            try:
                message = lite.loads(line)
                said.append(str(message.get("warning") or message.get("error") or message))
            except (ValueError, AttributeError):
                said.append(f"unreadable line {line[:200]!r}")
        return said

    def stop(self) -> None:
        """Makes the rotator exit (the one connected, else one left running at this work
        dir); waits for one this agent started."""
        if self._sock is None:
            self._sock = _connect(self.path)
        sock = self._sock
        if sock is not None:
            self._request({"op": "stop"})
            # Until it is gone: a rotator that finds its agent gone before it read the
            # request would never see it.
            with contextlib.suppress(OSError):
                sock.settimeout(ROTATOR_STOP_TIMEOUT)
                while sock.recv(1 << 16):
                    pass
            self._lost()
        if self._proc is not None:
            import subprocess

            try:
                self._proc.wait(5.0)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def close(self) -> None:
        """Disconnects; the rotator goes on with what it was told last."""
        self._lost()

    def _request(self, message: dict[str, Any]) -> None:
        sock = self._sock
        if sock is None:
            return
        try:
            sock.settimeout(ROTATOR_SEND_TIMEOUT)
            sock.sendall(lite.dumps(message) + b"\n")
            sock.setblocking(False)
        except OSError:
            self._lost()

    def _lost(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        self._buffer.clear()
        self._reap()

    def _reap(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None


def stop_rotator(work_dir: str) -> None:
    """Makes a rotator left running at ``work_dir`` exit (an agent that no longer rotates).
    Quick enough for the event loop: a stat, and where one is left, a request and its exit
    (a few milliseconds, `ROTATOR_STOP_TIMEOUT` at most)."""
    path = os.path.join(work_dir, ROTATOR_SOCKET)
    if os.path.exists(path):
        RotatorClient((), work_dir, 0.0).stop()


def _connect(path: str) -> socket.socket | None:
    from butte.agent.executor.launcher import short_address

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.connect(short_address(path))
    except OSError:
        sock.close()
        return None
    return sock
