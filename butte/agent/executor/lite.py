"""Small, fast-importing building blocks for the built-in executor process.

Every task starts one executor process, so its start-up time is paid per task. The standard
``json``, ``socket``, ``signal`` and ``http.client`` modules pull in ``re``, ``enum`` and the
``email`` package (tens of milliseconds on a slow machine); this module uses only the C
modules underneath them (``_json``, ``_socket``, ``binascii``, ``select``), so the executor
starts in a couple of milliseconds after the interpreter. Nothing here is specific to tasks.

* `dumps` / `loads`: compact ASCII JSON via the C accelerator of ``json`` (falls back to the
  ``json`` module if the accelerator is missing).
* `parse_duration`: Mesos duration strings (``5secs``), without ``re``.
* `HttpConnection`: HTTP/1.1 keep-alive client for small JSON POSTs to the agent.
* `give_tree`: hands a directory and what is in it to a user, mount points left alone.
* `ChunkedDecoder`: incremental decoding of a chunked body (the RecordIO records in it are
  read by `butte.core.recordio`, which imports nothing either). The executor does not use
  httptools (llhttp), as the master and the scheduler client do: importing it costs 4-6 ms,
  more than the rest of the executor's start-up, on every task.
"""

from __future__ import annotations

import _socket
import binascii
import os

from butte.core.durations import UNITS

# typing costs ~10 ms of imports (re, functools ...): only type checkers read it here.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

try:
    import _json

    class _ScanContext:
        strict = True
        object_hook = None
        object_pairs_hook = None
        parse_float = float
        parse_int = int
        parse_constant = float  # NaN/Infinity, as json does
        memo: dict = {}

    # typeshed types these C functions as classes taking a JSONDecoder / a default function;
    # they take any object with the decoder's attributes, and None (no default), at run time.
    _scan = _json.make_scanner(_ScanContext())  # type: ignore[arg-type]
    _encode = _json.make_encoder(
        None,
        None,  # type: ignore[arg-type]
        _json.encode_basestring_ascii,
        None,
        ":",
        ",",
        False,
        False,
        True,
    )

    def loads(data: bytes | str) -> Any:
        """Parses one JSON document."""
        text = data.decode() if isinstance(data, bytes | bytearray) else data
        text = text.strip()
        try:
            value, end = _scan(text, 0)
        except StopIteration:
            raise ValueError("invalid JSON") from None
        if end != len(text):
            raise ValueError("extra data after JSON")
        return value

    def dumps(obj: Any) -> bytes:
        """Compact ASCII JSON bytes."""
        return "".join(_encode(obj, 0)).encode()

except (ImportError, AttributeError, TypeError):  # pragma: no cover - non-CPython fallback
    import json as _jsonlib

    def loads(data: bytes | str) -> Any:
        return _jsonlib.loads(data)

    def dumps(obj: Any) -> bytes:
        return _jsonlib.dumps(obj, separators=(",", ":")).encode()


def parse_duration(text: str, default: float) -> float:
    """Seconds in a Mesos duration (``5secs``, ``200ms``; bare numbers are seconds); the
    default for anything unparsable."""
    text = text.strip()
    digits = len(text)
    while digits and not (text[digits - 1].isdigit() or text[digits - 1] == "."):
        digits -= 1
    try:
        number = float(text[:digits])
    except ValueError:
        return default
    unit = text[digits:].strip() or "secs"
    return number * UNITS[unit] if unit in UNITS else default


def give_tree(path: str, uid: int, gid: int) -> None:
    """Makes ``path`` and everything under it belong to ``uid``/``gid`` (links changed, not
    followed), except what is mounted there: a volume (a host path, another sandbox's
    directory) keeps its owners. ``os.path.ismount`` cannot tell a bind mount within one
    file system, so the mount points come from ``/proc/self/mountinfo``."""
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        points = {
            p for line in f if (p := line.split()[4].replace("\\040", " ")).startswith(real + "/")
        }
    os.lchown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        dirs[:] = [d for d in dirs if os.path.join(os.path.realpath(root), d) not in points]
        for name in dirs + files:
            os.lchown(os.path.join(root, name), uid, gid)


def new_uuid() -> str:
    """base64 of 16 random bytes: a TaskStatus uuid."""
    return binascii.b2a_base64(os.urandom(16), newline=False).decode()


class HttpError(Exception):
    """The connection failed or the answer was not HTTP."""


_resolved: dict[tuple[str, int], list] = {}


def resolve(host: str, port: int) -> list:
    """getaddrinfo for a TCP connection, remembered for the life of the process. An ASCII
    host name goes in as bytes: a str would be encoded by the ``idna`` codec, whose import
    (``re``, ``enum``, ``unicodedata``) would cost more than the rest of a short task."""
    key = (host, port)
    found = _resolved.get(key)
    if found is None:
        try:
            name: str | bytes = host.encode("ascii")
        except UnicodeEncodeError:
            name = host
        found = _resolved[key] = _socket.getaddrinfo(name, port, 0, _socket.SOCK_STREAM)
    return found


def connect(host: str, port: int, timeout: float | None = 10.0) -> _socket.socket:
    """A connected TCP socket (blocking, with ``timeout``)."""
    last: Exception | None = None
    for family, kind, proto, _, address in resolve(host, port):
        sock = _socket.socket(family, kind, proto)
        try:
            sock.settimeout(timeout)
            sock.connect(address)
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            return sock
        except OSError as e:
            sock.close()
            last = e
    raise HttpError(f"cannot connect to {host}:{port}: {last}")


def request_bytes(
    host: str, port: int, path: str, body: bytes, keep_alive: bool = True, token: str = ""
) -> bytes:
    """The bytes of a JSON POST request (with ``Authorization: Bearer <token>`` when a token
    is given: the executor's own, MESOS_EXECUTOR_AUTHENTICATION_TOKEN)."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Content-Type: application/json\r\nAccept: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
    )
    if token:
        head += f"Authorization: Bearer {token}\r\n"
    if not keep_alive:
        head += "Connection: close\r\n"
    return head.encode() + b"\r\n" + body


def read_head(sock: _socket.socket, buffer: bytearray) -> tuple[int, dict[str, str]]:
    """Reads up to the end of the response headers into ``buffer`` (which keeps whatever
    body bytes followed); returns the status code and lower-cased headers."""
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            break
        chunk = sock.recv(65536)
        if not chunk:
            raise HttpError("connection closed before the response headers")
        buffer += chunk
        if len(buffer) > 65536:
            raise HttpError("response headers too long")
    lines = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    del buffer[: end + 4]
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise HttpError(f"bad status line {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


class HttpConnection:
    """A keep-alive connection for JSON POSTs that get small non-streaming answers."""

    def __init__(self, host: str, port: int, token: str = "") -> None:
        self.host = host
        self.port = port
        self.token = token
        self._sock: _socket.socket | None = None

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """POSTs ``body``; returns (status, response body). Reconnects once if the kept-alive
        connection was closed by the server meanwhile."""
        for attempt in (0, 1):
            fresh = self._sock is None
            if self._sock is None:
                self._sock = connect(self.host, self.port)
            try:
                return self._exchange(path, body)
            except (OSError, HttpError):
                self.close()
                if fresh or attempt:
                    raise
        raise HttpError("unreachable")  # pragma: no cover

    def _exchange(self, path: str, body: bytes) -> tuple[int, bytes]:
        assert self._sock is not None
        self._sock.sendall(request_bytes(self.host, self.port, path, body, token=self.token))
        buffer = bytearray()
        status, headers = read_head(self._sock, buffer)
        length = int(headers.get("content-length", "0"))
        while len(buffer) < length:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise HttpError("connection closed in the response body")
            buffer += chunk
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, bytes(buffer[:length])

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class ChunkedDecoder:
    """Incremental decoder of an HTTP/1.1 chunked body."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._remaining = 0  # bytes left in the current chunk's data
        self._skip_crlf = False
        self.finished = False

    def feed(self, data: bytes) -> bytes:
        """Decoded body bytes available after ``data``."""
        self._buffer += data
        out = bytearray()
        while self._buffer and not self.finished:
            if self._skip_crlf:
                if len(self._buffer) < 2:
                    break
                del self._buffer[:2]
                self._skip_crlf = False
            if self._remaining:
                take = min(self._remaining, len(self._buffer))
                out += self._buffer[:take]
                del self._buffer[:take]
                self._remaining -= take
                if not self._remaining:
                    self._skip_crlf = True
                continue
            end = self._buffer.find(b"\r\n")
            if end < 0:
                if len(self._buffer) > 1024:
                    raise HttpError("bad chunk header")
                break
            size_text = bytes(self._buffer[:end]).split(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise HttpError(f"bad chunk size {size_text!r}") from None
            del self._buffer[: end + 2]
            if size == 0:
                self.finished = True
            else:
                self._remaining = size
        return bytes(out)
