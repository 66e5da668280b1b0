"""ZooKeeper URLs as Mesos takes them (docs/protocol.md §4.1).

``zk://[user:password@]host1:port1,host2:port2/path`` names an ensemble and the znode under
which masters contend; ``file:///some/file`` names a file holding such a URL (Mesos reads the
flag's value from it). The port defaults to 2181. `parse_zk_url` raises ValueError with a
message fit for a command-line error on anything else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_ZK_PORT = 2181
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::(\d{1,5}))?$")
_PATH_PART = re.compile(r"^[^\x00-\x1f\x7f/]+$")
_MAX_FILE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class ZkUrl:
    """A parsed ``zk://`` URL: the ensemble, the election path, optional digest credentials."""

    hosts: tuple[tuple[str, int], ...]
    path: str
    credentials: tuple[str, str] | None = None

    @property
    def hosts_string(self) -> str:
        """``h1:p1,h2:p2``, the connection string kazoo takes."""
        return ",".join(f"{host}:{port}" for host, port in self.hosts)

    def __str__(self) -> str:
        auth = f"{self.credentials[0]}:***@" if self.credentials else ""
        return f"zk://{auth}{self.hosts_string}{self.path}"


def is_zk_url(text: str) -> bool:
    """Whether ``text`` asks for ZooKeeper detection (``zk://`` or ``file://``)."""
    return text.strip().lower().startswith(("zk://", "file://"))


def parse_zk_url(text: str) -> ZkUrl:
    """Parses ``zk://...`` or ``file:///path`` (holding one). Raises ValueError."""
    text = text.strip()
    if text.lower().startswith("file://"):
        text = _read_url_file(text[len("file://") :])
    if not text.lower().startswith("zk://"):
        raise ValueError(f"expected zk://host:port[,host:port...]/path, got {_shown(text)}")
    rest = text[len("zk://") :]
    credentials = None
    slash = rest.find("/")
    authority, path = (rest, "") if slash < 0 else (rest[:slash], rest[slash:])
    if "@" in authority:
        auth, _, authority = authority.rpartition("@")
        user, sep, password = auth.partition(":")
        if not user or not sep:
            raise ValueError(f"credentials in {_shown(text)} must be user:password@")
        credentials = (user, password)
    hosts = tuple(_parse_host(h, text) for h in authority.split(","))
    return ZkUrl(hosts=hosts, path=_check_path(path, text), credentials=credentials)


def _read_url_file(path: str) -> str:
    if not path.startswith("/"):
        raise ValueError(f"file:// URL needs an absolute path, got {_shown(path)}")
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror or e}") from None
    if len(data) > _MAX_FILE_BYTES:
        raise ValueError(f"{path} is too large to hold a zk:// URL")
    content = data.decode("utf-8", "replace").strip()
    if not content:
        raise ValueError(f"{path} is empty; expected a zk:// URL in it")
    if content.lower().startswith("file://"):
        raise ValueError(f"{path} names another file; expected a zk:// URL")
    return content


def _parse_host(part: str, text: str) -> tuple[str, int]:
    part = part.strip()
    match = _HOST.match(part)
    if not part or match is None:
        raise ValueError(f"bad ZooKeeper host {part!r} in {_shown(text)}: expected host[:port]")
    host, port_text = match.groups()
    port = int(port_text) if port_text else DEFAULT_ZK_PORT
    if not 0 < port < 65536:
        raise ValueError(f"ZooKeeper port {port} out of range in {_shown(text)}")
    return host, port


def _check_path(path: str, text: str) -> str:
    if path in ("", "/"):
        raise ValueError(f"{_shown(text)} needs a znode path, e.g. zk://host:2181/mesos")
    path = path.rstrip("/")
    for part in path.split("/")[1:]:
        if not _PATH_PART.match(part) or part in (".", "..", "zookeeper"):
            raise ValueError(f"bad znode path {path!r} in {_shown(text)}")
    return path


def _shown(text: str) -> str:
    """The URL for an error message: quoted, bounded, credentials hidden."""
    shown = re.sub(r"//[^/@]*@", "//***@", text)
    return repr(shown[:200])
