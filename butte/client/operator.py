"""A small synchronous client of a master's operator surface, for the CLI and scripts.

It speaks HTTP to one master (``HOST:PORT``, ``http://HOST:PORT``, ``https://HOST:PORT`` or
a ``zk://`` URL, resolved to the leading master through ZooKeeper): v1 calls
(``call("GET_TASKS")``), legacy JSON documents (``get_json("/master/state")``) and the files
API. A non-leading master's
redirect (307 with ``Location: //host:port``) is followed.

Failures raise `MasterUnreachable` (no answer: connection refused, timeout, bad address) or
`OperatorError` (the master answered 4xx/5xx; ``status`` and the master's one-line message).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import urllib.parse
from typing import Any

from butte.core.auth import basic_header
from butte.core.tls import TlsError, client_context_for

DEFAULT_MASTER = "127.0.0.1:5050"
_MAX_REDIRECTS = 3


class MasterUnreachable(Exception):
    """No answer from the master."""


class OperatorError(Exception):
    """The master answered with an error status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{message} (HTTP {status})" if message else f"HTTP {status}")
        self.status = status
        self.message = message


def parse_master(master: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``http(s)://HOST:PORT``, or ``HOST`` = port 5050) as (host, port)."""
    text = master.strip()
    if text.startswith(("zk://", "zoo://")):
        return leader_from_zookeeper(text)
    if "://" in text:
        parsed = urllib.parse.urlparse(text)
        if parsed.scheme not in ("http", "https", ""):
            raise MasterUnreachable(f"unsupported master URL scheme in '{master}'")
        text = parsed.netloc
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, "5050"
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise MasterUnreachable(f"bad master address '{master}' (expected HOST:PORT)")
    return host, int(port)


def leader_from_zookeeper(url: str, timeout: float = 5.0) -> tuple[str, int]:
    """The leading master's (host, port) from ``zk://hosts/path`` (docs/protocol.md §4.2: the
    lowest ``json.info_*`` child holds the leader's MasterInfo)."""
    try:
        from kazoo.client import KazooClient
        from kazoo.exceptions import KazooException
        from kazoo.handlers.threading import KazooTimeoutError
    except ImportError:
        raise MasterUnreachable("zk:// masters need the 'kazoo' package") from None
    rest = url.split("://", 1)[1]
    hosts, _, path = rest.partition("/")
    hosts = hosts.rpartition("@")[2]
    path = "/" + (path or "mesos").strip("/")
    client = KazooClient(hosts=hosts, timeout=timeout)
    try:
        client.start(timeout=timeout)
        children = sorted(c for c in client.get_children(path) if c.startswith("json.info_"))
        if not children:
            raise MasterUnreachable(f"no leading master registered under {url}")
        data, _ = client.get(f"{path}/{children[0]}")
    except (KazooException, KazooTimeoutError, OSError) as e:
        raise MasterUnreachable(f"cannot read the leader from {url}: {e}") from None
    finally:
        client.stop()
        client.close()
    info = json.loads(data)
    address = info.get("address") or {}
    host = address.get("ip") or address.get("hostname") or info.get("hostname")
    port = address.get("port") or info.get("port")
    if not host or not port:
        raise MasterUnreachable(f"leader information under {url} has no address")
    return str(host), int(port)


class OperatorClient:
    """Operator API, legacy endpoints and files of one master."""

    def __init__(
        self,
        master: str = DEFAULT_MASTER,
        timeout: float = 10.0,
        principal: str | None = None,
        secret: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        """``principal``/``secret``: HTTP Basic credentials for a master that authenticates
        its HTTP endpoints (``--authenticate_http_*``). TLS: ``https://HOST:PORT``, or any
        address with LIBPROCESS_SSL_ENABLED (``ssl_context`` replaces the context built from
        ``LIBPROCESS_SSL_*``; docs/operating.md "TLS")."""
        self.master = master
        self.timeout = timeout
        self._address: tuple[str, int] | None = None
        self._auth = {"Authorization": basic_header(principal, secret or "")} if principal else {}
        self._principal, self._secret = principal, secret
        self._ssl: ssl.SSLContext | None = None
        if ssl_context is not None:
            self._ssl = ssl_context
        elif not master.strip().startswith(("zk://", "zoo://", "http://")):
            # https://, or host:port (and zk://) with LIBPROCESS_SSL_ENABLED.
            scheme = "https" if master.strip().startswith("https://") else ""
            try:
                self._ssl = client_context_for(scheme, os.environ)
            except TlsError as e:
                raise MasterUnreachable(str(e)) from None

    @property
    def address(self) -> tuple[str, int]:
        if self._address is None:
            self._address = parse_master(self.master)
        return self._address

    # -- transport ---------------------------------------------------------------------------

    @property
    def auth(self) -> dict[str, str]:
        """The Authorization header of the client's credentials (empty without any)."""
        return dict(self._auth)

    def connection(self, timeout: float | None) -> http.client.HTTPConnection:
        """A new connection to the address, over TLS where the client uses it (for
        streaming calls, which `request` does not serve)."""
        host, port = self.address
        if self._ssl is None:
            return http.client.HTTPConnection(host, port, timeout=timeout)
        return http.client.HTTPSConnection(host, port, timeout=timeout, context=self._ssl)

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        """One request; the response body of a 2xx answer, else OperatorError."""
        for _ in range(_MAX_REDIRECTS + 1):
            host, port = self.address
            conn = (
                http.client.HTTPConnection(host, port, timeout=self.timeout)
                if self._ssl is None
                else http.client.HTTPSConnection(
                    host, port, timeout=self.timeout, context=self._ssl
                )
            )
            try:
                conn.request(method, path, body=body, headers={**self._auth, **(headers or {})})
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException) as e:
                reason = getattr(e, "strerror", None) or str(e) or type(e).__name__
                raise MasterUnreachable(f"master {host}:{port} is unreachable: {reason}") from None
            finally:
                conn.close()
            if response.status in (301, 302, 303, 307, 308):
                location = response.getheader("Location") or ""
                parsed = urllib.parse.urlparse(location)
                if not parsed.hostname:
                    raise OperatorError(response.status, "redirect without a master address")
                self._address = (parsed.hostname, parsed.port or 5050)
                continue
            if response.status >= 400:
                message = data.decode("utf-8", "replace").strip().splitlines()
                raise OperatorError(response.status, message[0][:300] if message else "")
            return data
        raise MasterUnreachable("too many redirects between masters")

    def credentials(self) -> tuple[str | None, str | None]:
        """This client's ``principal`` and ``secret``, for a client of another daemon (an
        agent) that the same operator talks to."""
        return self._principal, self._secret

    def call(self, call_type: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        """A v1 operator call; returns its payload (``{}`` for calls that answer nothing)."""
        body: dict[str, Any] = {"type": call_type}
        if payload is not None:
            body[call_type.lower()] = payload
        data = self.request(
            "POST",
            "/api/v1",
            json.dumps(body).encode(),
            {"Content-Type": "application/json", "Accept": "application/json"},
        )
        if not data:
            return {}
        answer = json.loads(data)
        return answer.get(call_type.lower(), {})

    def get_json(self, path: str, **params: Any) -> Any:
        """A legacy JSON document (``/master/state``, ``/metrics/snapshot`` ...)."""
        query = {k: v for k, v in params.items() if v is not None}
        if query:
            path += "?" + urllib.parse.urlencode(query)
        return json.loads(self.request("GET", path))

    # -- files -------------------------------------------------------------------------------

    def list_files(self, path: str) -> list[dict[str, Any]]:
        return self.call("LIST_FILES", {"path": path}).get("file_infos", [])

    def read_file(self, path: str, offset: int, length: int | None = None) -> tuple[int, bytes]:
        """(file size, bytes read from ``offset``)."""
        payload: dict[str, Any] = {"path": path, "offset": offset}
        if length is not None:
            payload["length"] = length
        answer = self.call("READ_FILE", payload)
        return int(answer.get("size", 0)), base64.b64decode(answer.get("data", ""))


def sandbox_path(task: dict[str, Any]) -> str:
    """Where the master's files API finds a task's sandbox (a GET_TASKS ``Task``):
    ``/slaves/<agent>/frameworks/<fw>/executors/<executor>/runs/latest`` (the executor of a
    command task is named after the task)."""
    agent = task["agent_id"]["value"]
    framework = task["framework_id"]["value"]
    executor = (task.get("executor_id") or task["task_id"])["value"]
    return f"/slaves/{agent}/frameworks/{framework}/executors/{executor}/runs/latest"
