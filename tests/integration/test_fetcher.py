"""The fetcher with a real agent process (fake master of `test_agent_process`) and a
loopback HTTP server: archives unpacked into the sandbox, executables, output_file, file://
and plain paths, the cache, and a failed fetch failing the task with a clear message."""

from __future__ import annotations

import gzip
import io
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from test_agent_process import AgentProcess, FakeMaster, run_scenario, sandbox, wait_for

pytestmark = pytest.mark.integration


def make_files(root: Path) -> dict[str, bytes]:
    """Name -> bytes of everything the test server offers."""
    tar_buffer = io.BytesIO()
    with tarfile.open(fileobj=tar_buffer, mode="w:gz") as archive:
        data = b"from the tarball\n"
        member = tarfile.TarInfo("pkg/hello.txt")
        member.size = len(data)
        archive.addfile(member, io.BytesIO(data))
    zip_buffer = io.BytesIO()
    with zipfile.ZipFile(zip_buffer, "w") as archive:
        archive.writestr("zipped/note.txt", "from the zip\n")
    files = {
        "bundle.tar.gz": tar_buffer.getvalue(),
        "notes.zip": zip_buffer.getvalue(),
        "words.txt.gz": gzip.compress(b"from the gzip\n"),
        "tool.sh": b"#!/bin/sh\necho tool ran\n",
        "config.json": b'{"k": 1}\n',
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    return files


class FileServer:
    """A loopback HTTP server for the files, counting requests per name."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.hits: dict[str, int] = {}
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/files/{name}", self.serve)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = self.runner.addresses[0][1]

    async def serve(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.hits[name] = self.hits.get(name, 0) + 1
        if name not in self.files:
            return web.Response(status=404, text="no such file")
        return web.Response(body=self.files[name])

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/files/{name}"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def test_fetch_extract_executable_output_file_and_local_paths(tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    files = make_files(local)
    command = (
        "cat pkg/hello.txt zipped/note.txt words.txt; ./tool.sh; cat renamed.json; "
        "cat local-copy.txt; test -e bundle.tar.gz"
    )
    (local / "plain.txt").write_text("from a plain path\n")

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        server = FileServer(files)
        await server.start()
        try:
            uris = [
                {"value": server.url("bundle.tar.gz")},
                {"value": server.url("notes.zip")},
                {"value": server.url("words.txt.gz")},
                {"value": server.url("tool.sh"), "executable": True},
                {"value": server.url("config.json"), "output_file": "renamed.json"},
                {"value": f"file://{local}/plain.txt", "output_file": "local-copy.txt"},
                {"value": str(local / "plain.txt")},
            ]
            await master.run_task("f1", command, uris=uris)
            await wait_for(lambda: "TASK_FINISHED" in master.states("f1"), "finished", 15)
        finally:
            await server.stop()
        out = (sandbox(tmp_path, "f1") / "stdout").read_text()
        assert out == (
            'from the tarball\nfrom the zip\nfrom the gzip\ntool ran\n{"k": 1}\nfrom a plain path\n'
        )
        assert (sandbox(tmp_path, "f1") / "plain.txt").exists()

    run_scenario(tmp_path, scenario)


def test_cache_downloads_once_and_failures_fail_the_task(tmp_path):
    local = tmp_path / "local"
    local.mkdir()
    files = make_files(local)

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        server = FileServer(files)
        await server.start()
        try:
            cached: dict[str, Any] = {"value": server.url("tool.sh"), "cache": True}
            for task_id in ("c1", "c2"):
                await master.run_task(task_id, "sh tool.sh", uris=[cached])
                await wait_for(lambda t=task_id: "TASK_FINISHED" in master.states(t), task_id)
            assert server.hits["tool.sh"] == 1
            missing = [{"value": server.url("nope.tar.gz")}]
            await master.run_task("x1", "true", uris=missing)
            await wait_for(lambda: "TASK_FAILED" in master.states("x1"), "fetch failure")
        finally:
            await server.stop()
        failed = master.updates("x1")[-1]
        assert failed["reason"] == "REASON_CONTAINER_LAUNCH_FAILED"
        assert "nope.tar.gz" in failed["message"] and "404" in failed["message"]
        assert (sandbox(tmp_path, "c2") / "stdout").read_text() == "tool ran\n"
        cache = list((tmp_path / "work" / "fetcher-cache").glob("*/tool.sh"))
        assert len(cache) == 1

    run_scenario(tmp_path, scenario)
