"""The web UI's HTTP side: the master serves its single-page app at ``/``.

The app is a handful of hand-written static files in ``butte/webui`` (package data)
(``index.html``, scripts, ``style.css``); there is no build step and nothing is loaded from
elsewhere, so the UI works on an air-gapped cluster. Every file is read into memory once, when
the routes are added, and served from there:

* ``/`` and ``/index.html`` (and the same under ``/master/``): the page, with every asset
  reference stamped with its content hash (``static/app.js?v=<hash>``) and ``Cache-Control:
  no-cache``, so a browser always sees the assets of the master it talks to;
* ``/static/<name>``: one of those files by exact name (nothing else is reachable, so no path
  can leave the directory), with its content type, an ETag and, when asked for with the
  current hash, a year of immutable caching.

`PrefixRouter` hands a path to the longest registered prefix, and ``/`` is the prefix of every
path; anything that is not the page itself is therefore answered with the router's usual 404,
so unknown API paths keep failing loudly.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Protocol

from aiohttp import web

from butte.master.http import PrefixRouter, text_reply

ASSET_DIR = "webui"  # beside this package, in butte/ (shipped as package data)
INDEX = "index.html"
_PAGE_PATHS = frozenset({"/", "/index.html", "/master", "/master/", "/master/index.html"})
_STATIC_PREFIXES = ("/static/", "/master/static/")
_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
}
_ASSET_REF = re.compile(rb'((?:src|href)=")(static/[A-Za-z0-9_.-]+)(")')
# The page may talk to this master only, and be framed by nobody; a probe of another master
# after a failover is a no-cors fetch, which needs connect-src to name it.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' http: https:; frame-ancestors 'none'; base-uri 'none'"
)
_COMMON_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "same-origin"}


class _Server(Protocol):
    router: PrefixRouter


@dataclass(frozen=True, slots=True)
class Asset:
    """One file of the UI, ready to send."""

    body: bytes
    content_type: str
    etag: str


def _content_type(name: str) -> str:
    dot = name.rfind(".")
    return _CONTENT_TYPES.get(name[dot:] if dot >= 0 else "", "application/octet-stream")


def _asset(name: str, body: bytes) -> Asset:
    digest = hashlib.sha256(body).hexdigest()[:16]
    return Asset(body, _content_type(name), f'"{digest}"')


def load_assets(directory: Traversable | None = None) -> dict[str, Asset]:
    """Every regular file of the UI directory (default: ``butte/webui``), by name; the page's
    asset references carry the referenced file's hash."""
    root = directory if directory is not None else resources.files("butte") / ASSET_DIR
    raw = {
        entry.name: entry.read_bytes()
        for entry in root.iterdir()
        if entry.is_file() and not entry.name.startswith((".", "_"))
    }
    assets = {name: _asset(name, body) for name, body in raw.items() if name != INDEX}
    if INDEX in raw:

        def stamp(match: re.Match[bytes]) -> bytes:
            ref = match.group(2).decode()
            asset = assets.get(ref.removeprefix("static/"))
            version = f"?v={asset.etag.strip(chr(34))}" if asset else ""
            return match.group(1) + (ref + version).encode() + match.group(3)

        assets[INDEX] = _asset(INDEX, _ASSET_REF.sub(stamp, raw[INDEX]))
    return assets


class WebUI:
    """Serves the assets of `load_assets` (see the module docstring)."""

    def __init__(self, assets: dict[str, Asset]) -> None:
        self.assets = assets

    async def page(self, request: web.Request) -> web.StreamResponse:
        """``/``: the app's page; any other path that fell through to ``/`` is a 404."""
        if request.path not in _PAGE_PATHS:
            return text_reply(404, f"No endpoint at '{request.path}'")
        asset = self.assets.get(INDEX)
        if asset is None:
            return text_reply(404, "The web UI is not installed")
        return self._send(request, asset, "no-cache", {"Content-Security-Policy": _CSP})

    async def static(self, request: web.Request) -> web.StreamResponse:
        """``/static/<name>``: a UI file by its exact name."""
        path = request.path
        name = next((path[len(p) :] for p in _STATIC_PREFIXES if path.startswith(p)), "")
        asset = self.assets.get(name) if name != INDEX else None
        if asset is None:
            return text_reply(404, f"No endpoint at '{path}'")
        current = request.query.get("v") == asset.etag.strip('"')
        cache = "public, max-age=31536000, immutable" if current else "no-cache"
        return self._send(request, asset, cache)

    @staticmethod
    def _send(
        request: web.Request, asset: Asset, cache: str, extra: dict[str, str] | None = None
    ) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return text_reply(
                405, f"Expecting 'GET', received '{request.method}'", {"Allow": "GET, HEAD"}
            )
        headers = {
            **_COMMON_HEADERS,
            "Cache-Control": cache,
            "ETag": asset.etag,
            **(extra or {}),
        }
        if asset.etag in _etags(request.headers.get("If-None-Match", "")):
            return web.Response(status=304, headers=headers)
        headers["Content-Type"] = asset.content_type
        return web.Response(body=asset.body, headers=headers)


def _etags(header: str) -> set[str]:
    return {part.strip().removeprefix("W/") for part in header.split(",") if part.strip()}


def add_routes(server: _Server, directory: Traversable | None = None) -> WebUI:
    """Registers ``/`` and ``/static`` on the server's router; returns the handler object."""
    ui = WebUI(load_assets(directory))
    server.router.add("/", ui.page)
    server.router.add("/static", ui.static)
    return ui
