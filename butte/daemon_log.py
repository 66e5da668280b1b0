"""A daemon's own log as a file the files API serves: ``--log_dir`` and ``--external_log_file``
of ``butte master`` and ``butte agent`` (docs/operating.md "Log files").

* `add_flags`: those two and glog's ``--quiet`` and ``--logbufsecs``, as the master and the
  agent both define them.
* `start_logging`: the process's logging, as before on stderr, and with ``--log_dir`` also in
  a file there, ``<program>.<host>.<user>.log.<SEVERITY>.<yyyymmdd-hhmmss>.<pid>`` (one per
  start, as glog names Mesos' files) behind the stable link ``<program>.<SEVERITY>``
  (``butte-master.INFO``, ``butte-agent.INFO``). The file receives every record the process
  logs at the level in force, the ``--logging_level`` or what SET_LOGGING_LEVEL set for a while.
* `attach` / `find` / `attached`: the files attached under a virtual path, each guarded by the
  ``access_mesos_logs`` ACL, as Mesos' master and agent attach their log (its
  ``files->attach(path, "/master/log", authorizeLogAccess)``): ``/master/log`` and
  ``/slave/log`` (`MASTER_LOG`, `AGENT_LOG`). ``--external_log_file`` wins over the file
  ``--log_dir`` writes, as in Mesos. The master and the agent files APIs
  (`butte.master.files`, `butte.agent.files`) serve them; one daemon per process, so the
  registry is the process's.
"""

from __future__ import annotations

import argparse
import getpass
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from typing import TextIO

from butte.core.flags import boolean
from butte.master.acls import Acls, forbidden

MASTER_LOG = "/master/log"
AGENT_LOG = "/slave/log"
LOG_ACTION = "access_mesos_logs"


def add_flags(parser: argparse.ArgumentParser, program: str, virtual: str) -> None:
    """``--log_dir`` and ``--external_log_file`` of the daemon ``program`` (``butte-master``
    or ``butte-agent``), whose log is attached as ``virtual``."""
    parser.add_argument(
        "--log_dir",
        default=None,
        help=f"directory to write the log to as well as stderr: {program}.<host>.<user>.log."
        f"<SEVERITY>.<time>.<pid> per start, linked as {program}.INFO (WARNING, ERROR with "
        f"that --logging_level); created if missing. The file is served as {virtual} by "
        "/files/* and LIST_FILES / READ_FILE (ACL access_mesos_logs) and in the web UI "
        "(default: no file)",
    )
    parser.add_argument(
        "--quiet",
        type=boolean,
        nargs="?",
        const=True,
        default=False,
        help="log nothing to stderr; with --log_dir the file still gets everything (Mesos' "
        "glog flag)",
    )
    parser.add_argument(
        "--logbufsecs",
        type=_seconds,
        default=0,
        help="at most how many seconds the --log_dir file may hold back INFO lines before "
        "writing them; WARNING and above are written at once (Mesos' glog flag; default: 0, "
        "every line at once)",
    )
    parser.add_argument(
        "--external_log_file",
        default=None,
        help="a log file of this daemon that something else writes (syslog, journald, a "
        f"redirection of stderr): butte does not write it, it serves it as {virtual}, "
        "instead of the --log_dir file (default: none)",
    )


# -- writing -------------------------------------------------------------------------------


def severity(level: str) -> str:
    """The glog severity whose file holds what ``--logging_level`` lets through (DEBUG
    records go to the INFO file, as glog's verbose ones do)."""
    return "INFO" if level in ("DEBUG", "INFO") else level


def _seconds(text: str) -> int:
    """argparse type of ``--logbufsecs``: whole seconds, 0 or more (glog's int32 flag)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole seconds, got {text!r}") from None
    if not 0 <= value <= 2**31 - 1:
        raise argparse.ArgumentTypeError(f"expected 0 or more seconds, got {text!r}")
    return value


class _HeldBack(logging.StreamHandler):
    """The log file's handler under ``--logbufsecs``: INFO and DEBUG lines stay in the
    stream's buffer until a line comes more than the given seconds after the last write
    (glog, too, checks its buffer's age when it logs), or the buffer fills; a WARNING or
    worse is written at once with everything before it, and closing writes the rest."""

    def __init__(self, stream: TextIO, seconds: float) -> None:
        super().__init__(stream)
        self.seconds = seconds
        self._flushed = time.monotonic()
        self._urgent = True

    def emit(self, record: logging.LogRecord) -> None:
        self._urgent = record.levelno >= logging.WARNING
        super().emit(record)  # calls flush()

    def flush(self) -> None:
        now = time.monotonic()
        if self._urgent or now - self._flushed >= self.seconds:
            super().flush()
            self._flushed = now

    def close(self) -> None:
        self._urgent = True
        self.flush()
        super().close()


def start_logging(
    program: str,
    level: str,
    fmt: str,
    log_dir: str | None,
    quiet: bool = False,
    logbufsecs: int = 0,
) -> str | None:
    """Configures the root logger (``level``, ``fmt``, stderr unless ``quiet``) and, with
    ``log_dir``, a file there too, whose INFO lines may wait ``logbufsecs`` seconds; the
    file's real path, or None without ``log_dir``. Raises ValueError naming the flag when the
    directory or the file cannot be made."""
    stderr: logging.Handler = logging.NullHandler() if quiet else logging.StreamHandler(sys.stderr)
    logging.basicConfig(level=getattr(logging, level, logging.INFO), format=fmt, handlers=[stderr])
    if log_dir is None:
        return None
    path, stream = _open_log_file(program, severity(level), log_dir, buffered=logbufsecs > 0)
    handler = _HeldBack(stream, logbufsecs) if logbufsecs > 0 else logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(fmt))
    # No level of its own: the root logger's (which SET_LOGGING_LEVEL changes) decides.
    logging.getLogger().addHandler(handler)
    return path


def _open_log_file(
    program: str, sev: str, log_dir: str, buffered: bool = False
) -> tuple[str, TextIO]:
    directory = os.path.abspath(log_dir)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{program}.{socket.gethostname()}.{user}.log.{sev}.{stamp}.{os.getpid()}"
    path = os.path.join(directory, name)
    try:
        os.makedirs(directory, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    except OSError as e:
        raise ValueError(
            f"--log_dir {log_dir}: cannot write a log file there: {e.strerror or e}"
        ) from None
    # Line-buffered, unless --logbufsecs holds lines back (then a buffer a burst fits in).
    stream = os.fdopen(fd, "a", encoding="utf-8", buffering=1 << 16 if buffered else 1)
    link = os.path.join(directory, f"{program}.{sev}")
    temporary = f"{link}.{os.getpid()}.tmp"
    try:
        # Replaced in one step: a reader following the link never finds it missing.
        os.symlink(name, temporary)
        os.replace(temporary, link)
    except OSError as e:
        logging.getLogger(__name__).warning("cannot link %s to %s: %s", link, name, e.strerror)
    return os.path.realpath(path), stream


# -- attaching -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file served under a virtual path, and the ACLs whose ``access_mesos_logs`` guards it."""

    virtual: str
    path: str
    acls: Acls

    def real(self) -> str:
        """Where the file is now (an external file's link followed anew at each request, so a
        rotated file is found)."""
        return os.path.realpath(self.path)

    def refusal(self, principal: str | None) -> str | None:
        """The 403 message for a ``principal`` that may not read it, else None."""
        if self.acls.unrestricted(LOG_ACTION):
            return None
        return forbidden(self.acls, LOG_ACTION, principal)


_ATTACHED: dict[str, Attachment] = {}


def attach(virtual: str, path: str, acls: Acls) -> None:
    """Serves the file ``path`` as ``virtual`` from now on (replacing what was there)."""
    _ATTACHED[virtual] = Attachment(virtual, os.path.abspath(path), acls)


def detach(virtual: str) -> None:
    """Stops serving ``virtual``."""
    _ATTACHED.pop(virtual, None)


def attach_log(
    virtual: str, written: str | None, external_log_file: str | None, acls: Acls
) -> str | None:
    """Attaches the daemon's log as Mesos does: ``--external_log_file`` if given, else the file
    ``--log_dir`` made (``written``), else nothing; what was attached."""
    path = external_log_file or written
    if path is None:
        return None
    if external_log_file is not None and not os.access(external_log_file, os.R_OK):
        logging.getLogger(__name__).warning(
            "--external_log_file %s cannot be read (yet): %s answers 404 until it can",
            external_log_file,
            virtual,
        )
    attach(virtual, path, acls)
    return path


def attached() -> dict[str, str]:
    """``/files/debug``'s entries: each virtual path -> the real path of its file."""
    return {virtual: a.real() for virtual, a in sorted(_ATTACHED.items())}


def find(raw: str) -> tuple[Attachment, str] | None:
    """(the attachment, the rest of the path after it) for a path at or under an attached
    virtual path (a trailing ``/`` and empty or ``.`` components ignored), else None. The
    callers refuse ``..`` first."""
    if not _ATTACHED or not raw.startswith("/"):
        return None
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    for virtual, attachment in _ATTACHED.items():
        own = [p for p in virtual.split("/") if p]
        if parts[: len(own)] == own:
            return attachment, "/".join(parts[len(own) :])
    return None
