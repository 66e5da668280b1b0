"""Images in the mesos containerizer: tasks/s, first-use unpack, container start overhead,
and ``runc run`` of the same root filesystem as the bound, all measured in one run.

* image tasks/s: a real master and one real ``butte agent --image_providers docker`` (image
  cached after the first task); a `LaunchingFramework` keeps ``--inflight`` tasks of
  ``/bin/sh -c true`` in a busybox image in flight until ``--tasks`` have finished; the same
  number of plain ``true`` tasks (no image) on the same agent, in the same run;
* first-use unpack: `ImageStore.get` of the busybox archive into an empty store (the agent's
  code, in-process), ``--rounds`` times (median and min printed, as for every time here);
* container start, sequential, ``--starts`` times each: ``posix_spawn`` of ``/bin/true``
  and wait (the plain process start); a root filesystem provisioned (copy, and overlay where
  the kernel has it) plus the pivot_root launcher starting ``/bin/true`` in it and the root
  filesystem removed (what the agent adds per image task; each part timed); ``runc run`` of
  an OCI bundle holding the same root filesystem (``runc spec``, ``/bin/true``, no
  terminal), to compare with the launch part.

Needs root, Debian's busybox-static and runc (scripts/test-deps/42-images.sh).

    python bench/bench_images.py [--tasks 300] [--inflight 16] [--starts 30] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from common import exit_on_sigterm, master_with_agent, work_dir
from frameworks import LaunchingFramework, TaskShape, finish_rate

from butte.agent.containerizer import linux
from butte.agent.containerizer.image_runtime import launch_plan
from butte.agent.containerizer.images import ImageStore
from butte.agent.containerizer.provisioner import Provisioner, overlay_supported
from butte.testing.images import save_archive

IMAGE = "bench/busybox:latest"
RUNC = shutil.which("runc") or "/usr/sbin/runc"


class ImageFramework(LaunchingFramework):
    """A `LaunchingFramework` whose tasks run in ``image`` (None: plain tasks)."""

    def __init__(self, *args: Any, image: str | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.image = image

    def _task(self, offer: dict[str, Any]) -> dict[str, Any]:
        task = super()._task(offer)
        if self.image is not None:
            task["container"] = {
                "type": "MESOS",
                "mesos": {"image": {"type": "DOCKER", "docker": {"name": self.image}}},
            }
        return task


async def _drive(master: str, name: str, image: str | None, tasks: int, inflight: int) -> dict:
    fw = ImageFramework(
        master,
        name,
        TaskShape(cpus=0.01, mem=4.0, command="true"),
        tasks_per_offer=inflight,
        max_inflight=inflight,
        max_tasks=tasks,
        until_terminal=True,
        image=image,
    )
    failed: list[str] = []

    def on_update(status: dict[str, Any]) -> None:
        if status["state"] in ("TASK_FAILED", "TASK_ERROR", "TASK_LOST"):
            failed.append(status.get("message", ""))

    fw.on_update = on_update
    return {
        "rate": await finish_rate(fw, 600),
        "finished": fw.stats.finished,
        "failed": failed,
    }


def agent_rates(registry: Path, tasks: int, inflight: int) -> dict[str, dict]:
    """Image tasks/s and plain tasks/s on one real agent."""
    with work_dir("images") as tmp:
        flags = ["--image_providers=docker", f"--docker_registry={registry}"]
        with master_with_agent(tmp, flags) as (master, _):
            warm = asyncio.run(_drive(master.address, "warm", IMAGE, 1, 1))  # unpack once
            image = asyncio.run(_drive(master.address, "image", IMAGE, tasks, inflight))
            plain = asyncio.run(_drive(master.address, "plain", None, tasks, inflight))
    return {"warm": warm, "image": image, "plain": plain}


def first_use(registry: Path, rounds: int) -> list[float]:
    """Seconds to get the image into an empty store, per round."""
    out = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="bench-store.") as store_dir:
            store = ImageStore(str(registry), store_dir)
            started = time.perf_counter()
            store.get(IMAGE)
            out.append(time.perf_counter() - started)
    return out


def plain_starts(count: int) -> list[float]:
    out = []
    for _ in range(count):
        started = time.perf_counter()
        pid = os.posix_spawn("/bin/true", ["true"], {"PATH": "/bin"})
        os.waitpid(pid, 0)
        out.append(time.perf_counter() - started)
    return out


def image_starts(store: ImageStore, backend: str, count: int, tmp: Path) -> dict[str, list[float]]:
    """Per start: provision, start ``/bin/true`` in the root filesystem and wait (the
    launcher), remove; and the three together."""
    image = store.get(IMAGE)
    provisioner = Provisioner(str(tmp / f"provisioner-{backend}"), backend)
    sandbox = tmp / "sandbox"
    sandbox.mkdir(exist_ok=True)
    out: dict[str, list[float]] = {"total": [], "provision": [], "launch": [], "remove": []}
    for i in range(count):
        started = time.perf_counter()
        cid = f"c{i}"
        rootfs = provisioner.provision(cid, image)
        provisioned = time.perf_counter()
        plan = launch_plan(
            image=image,
            rootfs=rootfs,
            sandbox=str(sandbox),
            command={"shell": False, "value": "/bin/true"},
            executor_env={},
            task_env={},
            mounts=[],
            default_user=None,
        )
        pid = linux.spawn_isolated(
            plan["program"],
            plan["argv"],
            plan["env"],
            search=False,
            cwd=None,
            sandbox=str(sandbox),
            stdio=None,
            namespaces=["mnt", "pid"],
            user=None,
            rootfs=plan,
        )
        _, status = os.waitpid(pid, 0)
        ran = time.perf_counter()
        provisioner.destroy(cid)
        if status != 0:
            raise RuntimeError(f"/bin/true in the image exited with wait status {status}")
        ended = time.perf_counter()
        out["total"].append(ended - started)
        out["provision"].append(provisioned - started)
        out["launch"].append(ran - provisioned)
        out["remove"].append(ended - ran)
    return out


def runc_starts(store: ImageStore, count: int, tmp: Path) -> list[float]:
    """``runc run`` of a bundle with the same root filesystem (copied once), per start."""
    image = store.get(IMAGE)
    bundle = tmp / "bundle"
    rootfs = Provisioner(str(tmp / "runc-rootfs"), "copy").provision("bundle", image)
    bundle.mkdir()
    os.symlink(rootfs, bundle / "rootfs")
    subprocess.run([RUNC, "spec", "--bundle", str(bundle)], check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["args"] = ["/bin/true"]
    spec["process"]["terminal"] = False
    spec["root"] = {"path": rootfs, "readonly": False}
    (bundle / "config.json").write_text(json.dumps(spec))
    state = tmp / "runc-state"
    out = []
    for i in range(count):
        started = time.perf_counter()
        subprocess.run(
            [
                RUNC,
                "--root",
                str(state),
                "run",
                "--bundle",
                str(bundle),
                f"bench-{os.getpid()}-{i}",
            ],
            check=True,
            stdin=subprocess.DEVNULL,
        )
        out.append(time.perf_counter() - started)
    return out


def _ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1e3:.1f} ms (min {min(samples) * 1e3:.1f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=300)
    parser.add_argument("--inflight", type=int, default=16)
    parser.add_argument("--starts", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("bench_images needs root (mount namespaces, pivot_root, runc)")
    exit_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="bench-images.") as tmp_dir:
        tmp = Path(tmp_dir)
        registry = tmp / "registry"
        (registry / "bench").mkdir(parents=True)
        archive = save_archive(registry / "bench/busybox:latest.tar", "bench/busybox")
        size = archive.stat().st_size / 1e6
        unpack = first_use(registry, args.rounds)
        store = ImageStore(str(registry), str(tmp / "store"))
        plain = plain_starts(args.starts)
        backends = ["copy", "overlay"] if overlay_supported() else ["copy"]
        starts = {b: image_starts(store, b, args.starts, tmp) for b in backends}
        runc = runc_starts(store, args.starts, tmp)
        rates = agent_rates(registry, args.tasks, args.inflight)
    print(f"image: busybox-static root filesystem, docker-save archive of {size:.1f} MB")
    print(f"first-use unpack (empty store):  {_ms(unpack)}")
    print(f"plain process start (spawn+wait): {_ms(plain)}")
    for backend, parts in starts.items():
        print(f"image container, {backend:7} total: {_ms(parts['total'])}")
        for part in ("provision", "launch", "remove"):
            print(f"    {part:9}: {_ms(parts[part])}")
    print(f"runc run of the same rootfs (launch only): {_ms(runc)}")
    image, plain_rate = rates["image"], rates["plain"]
    backend = "overlay" if overlay_supported() else "copy"
    print(
        f"one agent ({backend} backend), {args.tasks} tasks, {args.inflight} in flight: "
        f"image tasks {image['rate']:.1f}/s, plain tasks {plain_rate['rate']:.1f}/s "
        f"(ratio {image['rate'] / plain_rate['rate']:.2f}); "
        f"failed: {len(image['failed'])} image, {len(plain_rate['failed'])} plain"
    )
    for message in (image["failed"] + plain_rate["failed"])[:3]:
        print(f"  e.g. {message}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
