"""The fetcher: gets a task's CommandInfo.URIs into its sandbox before its executor starts
(Mesos' ``mesos-fetcher``; docs/protocol.md §1.8 and fetcher.md).

Per URI: ``http://`` and ``https://`` are downloaded; ``file://`` URLs and absolute paths are
copied. The file keeps the URI's last path segment as its name, or ``output_file`` (relative
to the sandbox). Then ``executable: true`` sets the execute bits (and disables extraction);
otherwise, with ``extract`` (the default), archives are unpacked into the sandbox: ``.tar``,
``.tar.gz``/``.tgz``, ``.tar.bz2``/``.tbz2``, ``.tar.xz``/``.txz``, ``.zip``, and plain ``.gz``
(decompressed next to itself). The archive itself stays, like Mesos.

``cache: true`` keeps one copy per URI under the cache directory
(``<cache>/<sha256 of the URI>/<name>``) and copies it into every later sandbox instead of
downloading again. For a task that runs as another user, `give_to` hands what was fetched
to that user. Nothing here runs on the event loop: the containerizer calls `fetch_all`
from a worker thread. Errors raise `FetchError` with a message naming the URI.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import lzma
import os
import shutil
import stat
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterable

from butte.agent.executor.lite import give_tree
from butte.core.messages import URI

DOWNLOAD_TIMEOUT = 60.0
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_CHUNK = 1 << 20


class FetchError(Exception):
    """A URI could not be fetched (the message says which and why)."""


def fetch_all(items: Iterable[tuple[URI, str]], cache_dir: str | None) -> None:
    """Fetches every ``(uri, target directory)``; raises FetchError at the first failure."""
    for uri, target in items:
        try:
            fetch(uri, target, cache_dir)
        except FetchError as e:
            if uri.value in str(e):
                raise
            raise FetchError(f"Failed to fetch '{uri.value}': {e}") from None
        except (OSError, ValueError, tarfile.TarError, zipfile.BadZipFile, EOFError) as e:
            raise FetchError(f"Failed to fetch '{uri.value}': {type(e).__name__}: {e}") from None


def give_to(items: Iterable[tuple[URI, str]], uid: int, gid: int) -> None:
    """Makes every target directory of ``items`` and all in it (volumes mounted there
    aside) belong to ``uid``/``gid``: the user a task runs as owns what was fetched for
    it, as when Mesos' fetcher runs as that user."""
    for target in dict.fromkeys(t for _, t in items):
        give_tree(target, uid, gid)


def fetch(uri: URI, target_dir: str, cache_dir: str | None) -> str:
    """Fetches one URI into ``target_dir`` (created if needed); returns the file's path."""
    source, name = _source(uri)
    destination = _destination(target_dir, uri.output_file or name, uri.value)
    os.makedirs(os.path.dirname(destination), exist_ok=True)
    if uri.cache and cache_dir:
        cached = os.path.join(cache_dir, hashlib.sha256(uri.value.encode()).hexdigest(), name)
        if not os.path.exists(cached):
            os.makedirs(os.path.dirname(cached), exist_ok=True)
            _obtain(source, uri.value, cached)
        _copy(cached, destination)
    else:
        _obtain(source, uri.value, destination)
    if uri.executable:
        mode = os.stat(destination).st_mode
        os.chmod(destination, mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    elif uri.extract:
        extract(destination, target_dir)
    return destination


def _source(uri: URI) -> tuple[str, str]:
    """(where to read from: a URL or a local path, the file's default name)."""
    value = uri.value.strip()
    parsed = urllib.parse.urlparse(value)
    scheme = parsed.scheme.lower()
    if scheme in ("http", "https"):
        name = os.path.basename(urllib.parse.unquote(parsed.path))
        source = value
    elif scheme == "file":
        source = urllib.parse.unquote(parsed.path)
        name = os.path.basename(source)
    elif scheme == "" and os.path.isabs(value):
        source, name = value, os.path.basename(value)
    elif scheme == "":
        raise FetchError(
            f"Failed to fetch '{value}': relative paths need --frameworks_home, which "
            "butte does not support; use an absolute path or a file:// URL"
        )
    else:
        raise FetchError(f"Failed to fetch '{value}': unsupported scheme '{scheme}'")
    if not name:
        raise FetchError(f"Failed to fetch '{value}': cannot tell a file name (use output_file)")
    return source, name


def _destination(target_dir: str, name: str, value: str) -> str:
    """``name`` inside ``target_dir``; refuses names that leave it."""
    if os.path.isabs(name):
        raise FetchError(f"Failed to fetch '{value}': output_file must be a relative path")
    root = os.path.realpath(target_dir)
    path = os.path.realpath(os.path.join(root, name))
    if path == root or not path.startswith(root + os.sep):
        raise FetchError(f"Failed to fetch '{value}': '{name}' is outside the sandbox")
    return path


def _obtain(source: str, value: str, destination: str) -> None:
    """Downloads or copies ``source`` to ``destination`` (via a temp file and a rename)."""
    temporary = f"{destination}.fetching"
    try:
        if source.startswith(("http://", "https://")):
            _download(source, value, temporary)
        else:
            if not os.path.isfile(source):
                raise FetchError(f"Failed to fetch '{value}': {source} is not a readable file")
            shutil.copyfile(source, temporary)
        os.replace(temporary, destination)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def _download(url: str, value: str, destination: str) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "butte-fetcher"})
    try:
        with urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT) as response:
            with open(destination, "wb") as out:
                shutil.copyfileobj(response, out, _CHUNK)
    except urllib.error.HTTPError as e:
        raise FetchError(f"Failed to fetch '{value}': HTTP {e.code} {e.reason}") from None
    except urllib.error.URLError as e:
        raise FetchError(f"Failed to fetch '{value}': {e.reason}") from None
    except TimeoutError:
        raise FetchError(f"Failed to fetch '{value}': timed out") from None


def _copy(source: str, destination: str) -> None:
    temporary = f"{destination}.fetching"
    shutil.copyfile(source, temporary)
    os.replace(temporary, destination)


def extract(path: str, target_dir: str) -> bool:
    """Unpacks the archive at ``path`` into ``target_dir`` if its name says it is one;
    whether it did. Members that would land outside ``target_dir`` are refused."""
    name = os.path.basename(path).lower()
    if name.endswith(_TAR_SUFFIXES):
        with tarfile.open(path, "r:*") as archive:
            archive.extractall(target_dir, filter="data")
        return True
    if name.endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            root = os.path.realpath(target_dir)
            for member in archive.namelist():
                where = os.path.realpath(os.path.join(root, member))
                if where != root and not where.startswith(root + os.sep):
                    raise FetchError(f"zip member {member!r} would land outside the sandbox")
            archive.extractall(target_dir)
        return True
    for suffix, opener in ((".gz", gzip.open), (".bz2", bz2.open), (".xz", lzma.open)):
        if name.endswith(suffix):
            plain = path[: -len(suffix)]
            with opener(path, "rb") as packed, open(plain, "wb") as out:
                shutil.copyfileobj(packed, out, _CHUNK)
            return True
    return False
