"""The master's web UI routes (butte/master/webui.py) in-process: what is served at ``/`` and
``/static``, with which headers, and that nothing else is."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from butte.master import webui
from butte.master.http import PrefixRouter, text_reply


class _Server:
    def __init__(self) -> None:
        self.router = PrefixRouter()

        async def state(request: web.Request) -> web.StreamResponse:
            return text_reply(200, "state")

        self.router.add("/state", state)
        self.ui = webui.add_routes(self)


def _with_client(check: Callable[[TestClient], Awaitable[None]]) -> None:
    async def main() -> None:
        server = _Server()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", server.router.dispatch)
        async with TestClient(TestServer(app)) as client:
            await check(client)

    asyncio.run(main())


def test_page_is_served_at_root_and_under_master():
    async def check(client: TestClient) -> None:
        for path in ("/", "/index.html", "/master/", "/master"):
            response = await client.get(path)
            assert response.status == 200, path
            assert response.headers["Content-Type"] == "text/html; charset=utf-8"
            assert response.headers["Cache-Control"] == "no-cache"
            assert "default-src 'self'" in response.headers["Content-Security-Policy"]
            body = await response.text()
            assert "<title>butte</title>" in body
            assert 'src="static/app.js?v=' in body  # stamped with the content hash

    _with_client(check)


def test_static_assets_have_types_and_caching():
    async def check(client: TestClient) -> None:
        html = await (await client.get("/")).text()
        version = html.split("static/app.js?v=", 1)[1].split('"', 1)[0]
        response = await client.get(f"/static/app.js?v={version}")
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/javascript; charset=utf-8"
        assert "immutable" in response.headers["Cache-Control"]
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        stale = await client.get("/static/app.js?v=old")
        assert stale.headers["Cache-Control"] == "no-cache"
        css = await client.get("/master/static/style.css")
        assert css.status == 200 and css.headers["Content-Type"].startswith("text/css")
        etag = css.headers["ETag"]
        again = await client.get("/static/style.css", headers={"If-None-Match": etag})
        assert again.status == 304
        head = await client.head("/static/style.css")
        assert head.status == 200

    _with_client(check)


def test_unknown_paths_stay_404_and_traversal_is_refused():
    async def check(client: TestClient) -> None:
        for path in (
            "/nope",
            "/api/v2/thing",
            "/static/",
            "/static/missing.js",
            "/static/../master/webui.py",
            "/static/%2e%2e/%2e%2e/pyproject.toml",
            "/static/..%2Fapp.js",
            "/static/index.html",
            "/static//etc/passwd",
            "/index.htm",
        ):
            response = await client.get(path)
            assert response.status == 404, path
            assert "No endpoint at" in await response.text()
        # Routes registered by others are untouched.
        assert await (await client.get("/master/state")).text() == "state"

    _with_client(check)


def test_only_get_and_head():
    async def check(client: TestClient) -> None:
        response = await client.post("/", data=b"x")
        assert response.status == 405
        assert response.headers["Allow"] == "GET, HEAD"
        assert (await client.delete("/static/app.js")).status == 405

    _with_client(check)


def test_assets_are_loaded_from_the_given_directory(tmp_path: Path):
    (tmp_path / "index.html").write_text(
        '<script src="static/a.js"></script><link href="static/gone.css">'
    )
    (tmp_path / "a.js").write_text("1;")
    (tmp_path / ".hidden").write_text("no")
    assets = webui.load_assets(tmp_path)
    assert set(assets) == {"index.html", "a.js"}
    page = assets["index.html"].body.decode()
    assert f"static/a.js?v={assets['a.js'].etag.strip(chr(34))}" in page
    assert 'href="static/gone.css"' in page  # unknown references are left alone


def test_every_asset_the_page_names_is_shipped():
    assets = webui.load_assets()
    page = assets["index.html"].body.decode()
    for name in ("util.js", "api.js", "chart.js", "pages.js", "tasks.js", "app.js", "style.css"):
        assert f"static/{name}?v=" in page
        assert name in assets
    assert "http://" not in page and "https://" not in page  # nothing from elsewhere
