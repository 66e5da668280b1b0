"""Sandbox files on the agent: ``/files/browse``, ``/files/read``, ``/files/download`` and the
operator calls LIST_FILES / READ_FILE (docs/protocol.md §3.3, 3.4).

Only executor sandboxes are served, addressed two ways (as Mesos does):

* the virtual path ``/frameworks/<fw>/executors/<ex>/runs/<container|latest>[/...]`` (what
  the master and the CLI use: it needs no knowledge of the agent's work dir), and
* the real path ``<work_dir>/slaves/<agent>/frameworks/<fw>/executors/<ex>/runs/<container>
  [/...]`` (the ``directory`` of an executor in ``/state``, what Mesos UIs use).

The agent's own log is served too, as ``/slave/log`` when the agent runs with ``--log_dir`` or
``--external_log_file`` (`butte.daemon_log`): to a principal the ``access_mesos_logs`` ACL lets
read it (403 otherwise), and nothing under it (the log is a file: ``/slave/log/x`` is 404). The
master serves its own ``/master/log`` through the same class (``sandboxes=False``).

Refused: ``..`` components (400), anything outside a sandbox such as ``/etc/passwd`` or the
agent's other files (404), paths that resolve outside their own sandbox through a symlink,
to another framework's sandbox for instance (403), and files a task could have hard-linked
into its sandbox from elsewhere: a regular file is served only when it has one link and lives
on the sandbox's own file system, checked on the opened file (403). Reads are clamped to
`MAX_READ` bytes.
"""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from aiohttp import web

from butte import daemon_log
from butte.agent import paths
from butte.core.codec import encode_json
from butte.operator_common import file_info, legacy_file_info

MAX_READ = 4 << 20
DEFAULT_READ = 1 << 20
_MAX_OFFSET = 1 << 62
_DOWNLOAD_CHUNK = 256 * 1024


class FileError(Exception):
    """A request the files API refuses: HTTP status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Resolved:
    """A requested path: as asked (for listings), and where it really is."""

    requested: str
    real: str
    # The device of the sandbox the path is in: files elsewhere are not served.
    device: int
    # An attached file (the daemon's log, `butte.daemon_log`), not a sandbox's: no link rules.
    attached: bool = False

    def open(self) -> BinaryIO:
        """The regular file, opened for reading and checked on its descriptor (so a task
        cannot swap it between the check and the read): one link only, on the sandbox's
        file system. Raises FileError."""
        try:
            # O_NONBLOCK: opening a FIFO a task made must not wait for a writer.
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
            fd = os.open(self.real, flags)
        except OSError as e:
            raise FileError(404, f"Cannot read '{self.requested}': {e.strerror}") from None
        st = os.fstat(fd)
        problem = None
        if stat.S_ISDIR(st.st_mode):
            problem = (400, "Cannot read a directory")
        elif not stat.S_ISREG(st.st_mode):
            problem = (403, f"'{self.requested}' is not a regular file")
        elif not self.attached and (st.st_nlink != 1 or st.st_dev != self.device):
            problem = (403, f"'{self.requested}' is linked from outside its sandbox")
        if problem is not None:
            os.close(fd)
            raise FileError(*problem)
        return os.fdopen(fd, "rb")


class SandboxFiles:
    """Resolves and reads sandbox paths of one agent (see the module docstring)."""

    def __init__(
        self, work_dir: str, agent_id: Callable[[], str | None], *, sandboxes: bool = True
    ) -> None:
        """``sandboxes`` False: only the attached files (`butte.daemon_log`) are served."""
        self._work_dir = os.path.abspath(work_dir)
        self._work_dir_real = os.path.realpath(work_dir)
        self._agent_id = agent_id
        self._sandboxes = sandboxes

    # -- resolution --------------------------------------------------------------------------

    def resolve(self, raw: str | None) -> Resolved:
        """The real file behind ``raw``; raises FileError (400/403/404)."""
        if not raw:
            raise FileError(400, "Expecting 'path' to be present")
        if "\x00" in raw or len(raw) > 4096:
            raise FileError(400, "Invalid 'path'")
        if ".." in raw.split("/"):
            raise FileError(400, f"Path traversal ('..') is not allowed: {raw}")
        found = daemon_log.find(raw)
        if found is not None:
            return self._resolve_attached(raw, *found)
        requested = "/" + raw.strip("/") if raw.startswith("/") else raw.rstrip("/")
        parts = [p for p in requested.split("/") if p not in ("", ".")]
        runs, rest = self._sandbox_of(requested, parts) if self._sandboxes else (None, [])
        if runs is None:
            raise FileError(404, f"No file or directory found at path '{raw}'")
        run, tail = rest[0], rest[1:]
        if run == paths.LATEST:
            try:
                run = os.readlink(os.path.join(runs, paths.LATEST))
            except OSError:
                raise FileError(404, f"No file or directory found at path '{raw}'") from None
            if "/" in run or run in ("", ".", ".."):
                raise FileError(403, "The 'latest' link does not name a sandbox")
        root = os.path.join(runs, run)
        root_real = os.path.realpath(root)
        if root_real != os.path.join(os.path.realpath(runs), run) or not os.path.isdir(root):
            raise FileError(404, f"No file or directory found at path '{raw}'")
        real = os.path.realpath(os.path.join(root_real, *tail))
        if real != root_real and not real.startswith(root_real + os.sep):
            raise FileError(403, f"'{raw}' points outside its sandbox")
        if not os.path.exists(real):
            raise FileError(404, f"No file or directory found at path '{raw}'")
        return Resolved(requested, real, os.stat(root_real).st_dev)

    @staticmethod
    def _resolve_attached(raw: str, attachment: daemon_log.Attachment, rest: str) -> Resolved:
        """An attached file: itself only (Mesos answers a path below a file 'Not Found')."""
        real = attachment.real()
        if rest or not os.path.isfile(real):
            raise FileError(404, f"No file or directory found at path '{raw}'")
        return Resolved(attachment.virtual, real, os.stat(real).st_dev, attached=True)

    @staticmethod
    def authorize(raw: str | None, principal: str | None) -> None:
        """Raises FileError 403 when ``raw`` is an attached file that ``principal`` (the
        caller's, None when unauthenticated) may not read (``access_mesos_logs``)."""
        found = daemon_log.find(raw) if raw else None
        if found is None:
            return
        refusal = found[0].refusal(principal)
        if refusal is not None:
            raise FileError(403, refusal)

    def _sandbox_of(self, requested: str, parts: list[str]) -> tuple[str | None, list[str]]:
        """(the executor's ``runs`` dir, the parts after it) for a virtual or real path."""
        if requested.startswith("/"):
            for base in {self._work_dir, self._work_dir_real}:
                prefix = [p for p in base.split("/") if p]
                if parts[: len(prefix)] == prefix and parts[len(prefix) : len(prefix) + 1] == [
                    "slaves"
                ]:
                    return self._runs(parts[len(prefix) + 1 :], with_agent=True)
        return self._runs(parts, with_agent=False)

    def _runs(self, parts: list[str], with_agent: bool) -> tuple[str | None, list[str]]:
        if with_agent:
            if not parts:
                return None, []
            agent_id, parts = parts[0], parts[1:]
        else:
            agent_id = self._agent_id() or ""
        if (
            not agent_id
            or len(parts) < 6
            or parts[0] != "frameworks"
            or parts[2] != "executors"
            or parts[4] != "runs"
        ):
            return None, []
        runs = paths.runs_dir(self._work_dir, agent_id, parts[1], parts[3])
        return runs, parts[5:]

    # -- /files/debug --------------------------------------------------------------------------

    def attached(self) -> dict[str, str]:
        """``/files/debug``: each path by which a sandbox is served -> its real directory, in
        the three forms Mesos' agent attaches for an executor's run: the sandbox's own path,
        ``<work_dir>/slaves/<agent>/.../runs/latest`` and the virtual
        ``/frameworks/<fw>/executors/<ex>/runs/latest`` (this agent id only: virtual paths
        name no agent). Read from the work dir, as `resolve` serves any run still there.
        The attached files (``/slave/log``: `butte.daemon_log`) come first."""
        out: dict[str, str] = dict(daemon_log.attached())
        if not self._sandboxes:
            return out
        current = self._agent_id()
        root = paths.slaves_root(self._work_dir)
        for agent_id in _subdirs(root):
            frameworks = os.path.join(root, agent_id, "frameworks")
            for fw in _subdirs(frameworks):
                for ex in _subdirs(os.path.join(frameworks, fw, "executors")):
                    virtual = f"/frameworks/{fw}/executors/{ex}" if agent_id == current else None
                    self._attach_runs(
                        out, paths.runs_dir(self._work_dir, agent_id, fw, ex), virtual
                    )
        return out

    @staticmethod
    def _attach_runs(out: dict[str, str], runs: str, virtual: str | None) -> None:
        """`attached`'s entries for one executor's ``runs`` directory: each run `resolve`
        serves (a real directory, not a link), and ``latest`` when it names one of them."""
        runs_real = os.path.realpath(runs)
        served: dict[str, str] = {}
        for run in _subdirs(runs):
            real = os.path.realpath(os.path.join(runs, run))
            if run != paths.LATEST and real == os.path.join(runs_real, run):
                served[run] = out[os.path.join(runs, run)] = real
        try:
            latest = served.get(os.readlink(os.path.join(runs, paths.LATEST)))
        except OSError:
            latest = None
        if latest is not None:
            out[os.path.join(runs, paths.LATEST)] = latest
            if virtual is not None:
                out[f"{virtual}/runs/{paths.LATEST}"] = latest

    # -- operations --------------------------------------------------------------------------

    def browse(self, raw: str | None, legacy: bool = True) -> list[dict[str, Any]]:
        """The entries of a directory (or the one file) at ``raw``."""
        target = self.resolve(raw)
        info = legacy_file_info if legacy else file_info
        if not os.path.isdir(target.real):
            return [info(target.requested, os.stat(target.real))]
        out = []
        for name in sorted(os.listdir(target.real)):
            try:
                st = os.lstat(os.path.join(target.real, name))
            except OSError:
                continue
            out.append(info(f"{target.requested}/{name}", st))
        return out

    def read(self, raw: str | None, offset: int, length: int | None) -> tuple[int, bytes]:
        """(file size, up to ``length`` bytes from ``offset``). ``length`` None = the
        default page; it is clamped to MAX_READ. Raises FileError for bad arguments."""
        target = self.resolve(raw)
        if os.path.isdir(target.real):
            raise FileError(400, "Cannot read a directory")
        if offset < 0 or offset > _MAX_OFFSET:
            raise FileError(400, f"Invalid offset {offset}")
        if length is not None and length < 0:
            raise FileError(400, f"Negative length {length}")
        length = DEFAULT_READ if length is None else min(length, MAX_READ)
        with target.open() as f:
            try:
                size = os.fstat(f.fileno()).st_size
                if offset >= size or length == 0:
                    return size, b""
                f.seek(offset)
                return size, f.read(length)
            except OSError as e:
                raise FileError(404, f"Cannot read '{raw}': {e.strerror}") from None

    # -- HTTP (legacy endpoints) -------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        """``/files/*`` under ``/`` and ``/slave(1)/``."""
        out = []
        for prefix in ("", "/slave(1)"):
            out += [
                web.get(prefix + "/files/browse", self.http_browse),
                web.get(prefix + "/files/browse.json", self.http_browse),
                web.get(prefix + "/files/read", self.http_read),
                web.get(prefix + "/files/read.json", self.http_read),
                web.get(prefix + "/files/download", self.http_download),
                web.get(prefix + "/files/download.json", self.http_download),
            ]
        return out

    async def http_browse(self, request: web.Request) -> web.Response:
        try:
            self.authorize(request.query.get("path"), request.get("principal"))
            return _json(self.browse(request.query.get("path")))
        except FileError as e:
            return web.Response(status=e.status, text=e.message)

    async def http_read(self, request: web.Request) -> web.Response:
        try:
            self.authorize(request.query.get("path"), request.get("principal"))
            offset = _int_param(request, "offset", -1)
            length = _int_param(request, "length", None)
            if offset == -1:  # Mesos (also without an offset): answers the file's size
                size, _ = self.read(request.query.get("path"), 0, 0)
                return _json({"data": "", "offset": size})
            size, data = self.read(request.query.get("path"), offset, length)
        except FileError as e:
            return web.Response(status=e.status, text=e.message)
        return _json({"data": _text(data), "offset": offset})

    async def http_download(self, request: web.Request) -> web.StreamResponse:
        try:
            self.authorize(request.query.get("path"), request.get("principal"))
            target = self.resolve(request.query.get("path"))
        except FileError as e:
            return web.Response(status=e.status, text=e.message)
        if os.path.isdir(target.real):
            return web.Response(status=400, text="Cannot download a directory")
        try:
            f = target.open()
        except FileError as e:
            return web.Response(status=e.status, text=e.message)
        name = os.path.basename(target.real)
        with f:
            left = os.fstat(f.fileno()).st_size  # what is there now (stdout may grow)
            response = web.StreamResponse(
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Disposition": f'attachment; filename="{name}"',
                    "Content-Length": str(left),
                }
            )
            await response.prepare(request)
            while left > 0 and (chunk := f.read(min(left, _DOWNLOAD_CHUNK))):
                left -= len(chunk)
                await response.write(chunk)
            await response.write_eof()
        return response

    # -- operator calls ----------------------------------------------------------------------

    def list_files(self, path: str, principal: str | None = None) -> dict[str, Any]:
        """LIST_FILES' answer payload to the caller ``principal`` (`authorize`; None:
        unauthenticated)."""
        self.authorize(path, principal)
        return {"file_infos": self.browse(path, legacy=False)}

    def read_file(
        self, path: str, offset: int, length: int | None, principal: str | None = None
    ) -> dict[str, Any]:
        """READ_FILE's answer payload (``data`` base64) to the caller ``principal``."""
        self.authorize(path, principal)
        size, data = self.read(path, offset, length)
        return {"size": size, "data": base64.b64encode(data).decode()}


def _subdirs(path: str) -> list[str]:
    """The names of the directories in ``path`` (links to directories too), sorted; none
    when it cannot be read."""
    try:
        with os.scandir(path) as entries:
            return sorted(e.name for e in entries if e.is_dir())
    except OSError:
        return []


def _json(body: Any) -> web.Response:
    return web.Response(body=encode_json(body), content_type="application/json")


def _int_param(request: web.Request, name: str, default: int | None) -> Any:
    text = request.query.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise FileError(400, f"'{name}' must be an integer, got '{text[:40]}'") from None
    if name == "length" and value == -1:
        return None  # Mesos spelling of "no limit"
    if value < -1 or (name == "length" and value < 0):
        raise FileError(400, f"Invalid '{name}' {value}")
    return value


def _text(data: bytes) -> str:
    """Bytes as JSON text: UTF-8 (invalid bytes replaced), keeping a multi-byte character cut
    at the end of the page whole in the next read rather than garbled in this one."""
    cut = len(data)
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:
            continue  # continuation byte: look further back for the lead byte
        if byte >= 0xC0:
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            if need > back:
                cut = len(data) - back
        break
    return data[:cut].decode("utf-8", "replace")
