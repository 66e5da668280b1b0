"""The agent's PRUNE_IMAGES with real processes: a real agent (``--image_providers docker``)
against the fake master of `test_agent_process`, tasks in docker-save archives of busybox
from the local registry directory of `test_images`, and the operator API over HTTP on
loopback; then ``butte agent prune-images`` against a real master. Needs root and Debian's
busybox-static, as `test_images` does."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import requests
import test_images
from test_agent_process import FID, AgentProcess, FakeMaster, agent_port, run_scenario, wait_for
from test_images import (
    finished,
    image_flags,
    output,
    run_image_task,
    shell,
    terminal,
)
from test_isolation import container_of

from butte.agent.containerizer.images import ImageStore
from butte.agent.containerizer.provisioner import overlay_supported
from butte.core.auth import basic_header
from butte.testing.cluster import start_cluster
from butte.testing.images import save_archive

pytestmark = pytest.mark.integration
registry = test_images.registry  # the fixture: a local directory of image archives

OPS = ("ops", "ops-Secret-p41")
DEV = ("dev", "dev-Secret-p42")


def top_layer(archive: Path) -> str:
    """The digest (hex) of the top layer of a docker-save archive."""
    with tarfile.open(archive) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        config = json.loads(tar.extractfile(manifest[0]["Config"]).read())  # type: ignore[union-attr]
    return config["rootfs"]["diff_ids"][-1].split(":", 1)[1]


def layers(tmp_path: Path) -> set[str]:
    return set(os.listdir(tmp_path / "work/images/layers"))


def provisioned(tmp_path: Path) -> set[str]:
    return set(os.listdir(tmp_path / "work/provisioner"))


def prune_call(*names: str) -> dict[str, Any]:
    images = [{"type": "DOCKER", "docker": {"name": n}} for n in names]
    return {"type": "PRUNE_IMAGES", "prune_images": {"excluded_images": images}}


async def post(port: int, call: Any, creds: tuple[str, str] | None = None) -> tuple[int, str]:
    headers = {"Authorization": basic_header(*creds)} if creds else {}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"http://127.0.0.1:{port}/api/v1", json=call, headers=headers) as response,
    ):
        return response.status, await response.text()


def _backends() -> list[str]:
    return ["copy", "overlay"] if overlay_supported() else ["copy"]


@pytest.mark.parametrize("backend", _backends())
def test_prune_removes_unused_layers_keeps_used_and_excluded_ones_and_pulls_again(
    tmp_path, registry, backend
):
    tops = {}
    for name in ("keep", "drop", "spare"):
        archive = save_archive(
            registry / f"{name}:1.tar", name, layers=[{"etc/which": name.encode() + b"\n"}]
        )
        tops[name] = top_layer(archive)

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        port = agent_port(master)
        await run_image_task(master, "keep", "keep:1", shell("cat /etc/which; exec sleep 600"))
        for name in ("drop", "spare"):
            await run_image_task(master, name, f"{name}:1", shell("cat /etc/which"))
            status = await finished(master, name)
            assert status["state"] == "TASK_FINISHED", (status, output(tmp_path, name, "stderr"))
        keep = await wait_for(
            lambda: "TASK_RUNNING" in master.states("keep") and container_of(master, "keep"),
            "keep running",
            30,
        )
        # The ended containers' root filesystems are gone: only keep's uses layers now.
        await wait_for(lambda: provisioned(tmp_path) == {keep}, "ended rootfses removed", 20)
        (base,) = layers(tmp_path) - set(tops.values())  # busybox, shared by all three
        assert layers(tmp_path) == {base, *tops.values()}

        assert await post(port, prune_call("spare:1")) == (200, "")
        assert layers(tmp_path) == {base, tops["keep"], tops["spare"]}
        assert f"image store: pruned layer {tops['drop']}" in agent.logs()
        assert "PRUNE_IMAGES: removed 1 layer(s); kept 2 used by containers" in agent.logs()
        # The running task's root filesystem is whole (with overlay: still its lower layers).
        rootfs = tmp_path / "work/provisioner" / keep / "rootfs"
        assert (rootfs / "etc/which").read_text() == "keep\n"
        assert (rootfs / "bin/busybox").exists()
        assert "TASK_RUNNING" in master.states("keep") and not terminal(master, "keep")

        # Without exclusions the spare image goes too; what keep uses stays.
        assert await post(port, prune_call()) == (200, "")
        assert layers(tmp_path) == {base, tops["keep"]}

        # A pruned image is pulled again (its archive read, its layer unpacked) and runs.
        await run_image_task(master, "drop-again", "drop:1", shell("cat /etc/which"))
        status = await finished(master, "drop-again")
        assert status["state"] == "TASK_FINISHED", status
        assert output(tmp_path, "drop-again") == "drop\n"
        assert agent.logs().count(f"image store: unpacked layer {tops['drop']}") == 2

        # Once keep has ended nothing is used: the store empties.
        kill = {"type": "KILL_TASK", "framework_id": {"value": FID}, "task_id": {"value": "keep"}}
        await master.send(kill)
        assert (await finished(master, "keep"))["state"] == "TASK_KILLED"
        await wait_for(lambda: not provisioned(tmp_path), "every rootfs removed", 20)
        assert await post(port, {"type": "PRUNE_IMAGES"}) == (200, "")
        assert layers(tmp_path) == set()
        assert os.listdir(tmp_path / "work/images/gc") == []

    run_scenario(tmp_path, scenario, agent_flags=image_flags(registry, backend))


def test_prune_images_acls_bad_input_and_launches_during_prunes(tmp_path, registry):
    save_archive(registry / "busybox:latest.tar", "busybox", layers=[{"etc/hi": b"hi\n"}])
    credentials = tmp_path / "credentials.json"
    entries = [{"principal": p, "secret": s} for p, s in (OPS, DEV)]
    credentials.write_text(json.dumps({"credentials": entries}))
    acls = {
        "prune_images": [
            {"principals": {"values": ["ops"]}, "images": {"type": "ANY"}},
            {"principals": {"type": "ANY"}, "images": {"type": "NONE"}},
        ]
    }
    flags = (
        *image_flags(registry),
        "--authenticate_http_readwrite",
        f"--http_credentials={credentials}",
        f"--acls={json.dumps(acls)}",
    )

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        port = agent_port(master)
        await run_image_task(master, "first", "busybox", shell("cat /etc/hi"))
        assert (await finished(master, "first"))["state"] == "TASK_FINISHED"
        await wait_for(lambda: not provisioned(tmp_path), "its rootfs removed", 20)
        stored = layers(tmp_path)
        assert len(stored) == 2

        status, text = await post(port, prune_call())
        assert status == 401
        status, text = await post(port, prune_call(), DEV)
        assert (status, text) == (403, "Forbidden: 'dev' may not prune images (prune_images)")
        bad: list[tuple[Any, str]] = [
            ({"type": "PRUNE_IMAGES", "prune_images": "all"}, "prune_images"),
            (
                {"type": "PRUNE_IMAGES", "prune_images": {"excluded_images": "busybox"}},
                "must be a list of Image objects",
            ),
            (
                {
                    "type": "PRUNE_IMAGES",
                    "prune_images": {"excluded_images": [{"type": "APPC", "appc": {"name": "a"}}]},
                },
                "APPC images are not supported",
            ),
            (
                {
                    "type": "PRUNE_IMAGES",
                    "prune_images": {"excluded_images": [{"type": "XYZ", "docker": {"name": "a"}}]},
                },
                "must be DOCKER",
            ),
            (prune_call("../../etc/passwd"), "not a valid Docker image name"),
            (prune_call(*["busybox"] * 1001), "more than 1000 excluded images"),
        ]
        for call, problem in bad:
            status, text = await post(port, call, OPS)
            assert status == 400 and problem in text, (call, status, text)
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                f"http://127.0.0.1:{port}/api/v1",
                data=b'{"type": "PRUNE_IMAGES", "prune_images": {',
                headers={"Content-Type": "application/json", "Authorization": basic_header(*OPS)},
            ) as response,
        ):
            assert response.status == 400
        assert layers(tmp_path) == stored  # nothing refused removed anything

        # Launches and prunes at once: each launch gets whole layers (a prune waits for a
        # launch getting its image, a launch for a prune under way).
        for round_ in range(3):
            ids = [f"r{round_}-{i}" for i in range(3)]
            for task_id in ids:
                await run_image_task(master, task_id, "busybox", shell("cat /etc/hi"))
            answers = await asyncio.gather(*(post(port, prune_call(), OPS) for _ in range(3)))
            assert answers == [(200, "")] * 3
            for task_id in ids:
                status = await finished(master, task_id)
                assert status["state"] == "TASK_FINISHED", (
                    status,
                    output(tmp_path, task_id, "stderr"),
                )
                assert output(tmp_path, task_id) == "hi\n"
        assert "Traceback" not in agent.logs()

    run_scenario(tmp_path, scenario, agent_flags=flags)


def test_cli_agent_prune_images_through_the_master(tmp_path, registry):
    save_archive(registry / "busybox:latest.tar", "busybox", layers=[{"etc/hi": b"hi\n"}])
    save_archive(registry / "other:1.tar", "other", layers=[{"etc/o": b"o\n"}])
    with start_cluster(tmp_path, agent_flags=image_flags(registry)) as cluster:
        (agent_info,) = [
            a["agent_info"]
            for a in requests.post(
                cluster.master_url + "/api/v1", json={"type": "GET_AGENTS"}, timeout=10
            ).json()["get_agents"]["agents"]
        ]
        agent_id = agent_info["id"]["value"]
        # The agent's store, filled as its launches would (the same store code, this process).
        store = ImageStore(str(registry), str(cluster.agents[0].work_dir / "images"))
        kept = {os.path.basename(p) for p in store.get("busybox").layers}
        other = {os.path.basename(p) for p in store.get("other:1").layers} - kept
        assert len(kept) == 2 and len(other) == 1

        def cli(*args: str) -> subprocess.CompletedProcess[str]:
            argv = [sys.executable, "-m", "butte", "agent", "prune-images", *args]
            argv += ["--master", cluster.master_address]
            return subprocess.run(argv, capture_output=True, text=True, timeout=60)

        refused = cli(agent_id, "--exclude", "../etc")
        assert refused.returncode == 1, refused
        assert "refused to prune images" in refused.stderr
        assert "not a valid Docker image name" in refused.stderr
        assert set(store.layer_ids()) == kept | other
        unknown = cli("no-such-agent")
        assert unknown.returncode == 1 and "not registered" in unknown.stderr, unknown

        done = cli(agent_id, "--exclude", "busybox", "--json")
        assert done.returncode == 0, (done, cluster.logs())
        assert json.loads(done.stdout) == {
            "agent_id": agent_id,
            "pruned": True,
            "excluded": ["busybox"],
        }
        assert set(store.layer_ids()) == kept


def test_automatic_image_gc_prunes_when_the_disk_is_over_the_threshold(tmp_path, registry):
    tops = {}
    for name in ("keep", "drop", "spare"):
        archive = save_archive(
            registry / f"{name}:1.tar", name, layers=[{"etc/which": name.encode() + b"\n"}]
        )
        tops[name] = top_layer(archive)
    # Headroom 1.0: any disk use at all is over the threshold, so every check prunes.
    gc = {
        "image_disk_headroom": 1.0,
        "image_disk_watch_interval": {"nanoseconds": 300_000_000},
        "excluded_images": [{"type": "DOCKER", "docker": {"name": "spare:1"}}],
    }

    async def scenario(master: FakeMaster, agent: AgentProcess) -> None:
        port = agent_port(master)
        await run_image_task(master, "keep", "keep:1", shell("exec sleep 600"))
        keep = await wait_for(
            lambda: "TASK_RUNNING" in master.states("keep") and container_of(master, "keep"),
            "keep running",
            30,
        )
        for name in ("drop", "spare"):
            await run_image_task(master, name, f"{name}:1", shell("cat /etc/which"))
            status = await finished(master, name)
            assert status["state"] == "TASK_FINISHED", (status, output(tmp_path, name, "stderr"))
            assert output(tmp_path, name) == f"{name}\n"
        await wait_for(lambda: provisioned(tmp_path) == {keep}, "ended rootfses removed", 20)
        await wait_for(
            lambda: tops["drop"] not in layers(tmp_path), "the unused layer collected", 20
        )
        assert {tops["keep"], tops["spare"]} <= layers(tmp_path) and len(layers(tmp_path)) == 3
        assert "image GC is triggered" in agent.logs()
        # An operator's prune keeps --image_gc_config's excluded images too (as in Mesos).
        assert await post(port, prune_call()) == (200, "")
        assert tops["spare"] in layers(tmp_path)
        # A collected image is pulled again when a task needs it.
        await run_image_task(master, "drop-again", "drop:1", shell("cat /etc/which"))
        status = await finished(master, "drop-again")
        assert status["state"] == "TASK_FINISHED", status
        assert output(tmp_path, "drop-again") == "drop\n"

    flags = (*image_flags(registry), f"--image_gc_config={json.dumps(gc)}")
    run_scenario(tmp_path, scenario, agent_flags=flags)


def test_an_agent_refuses_a_bad_image_gc_config_at_start(tmp_path, registry):
    base = [sys.executable, "-m", "butte.agent", "--master", "127.0.0.1:1"]
    base += ["--work_dir", str(tmp_path / "work")]
    bad_headroom = json.dumps(
        {"image_disk_headroom": 2, "image_disk_watch_interval": {"nanoseconds": 1}}
    )
    for extra, problem in (
        (image_flags(registry) + (f"--image_gc_config={bad_headroom}",), "between 0.0 and 1.0"),
        (("--image_gc_config=/no/such/gc.json",), "need --image_providers"),
    ):
        done = subprocess.run([*base, *extra], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and problem in done.stderr, done
