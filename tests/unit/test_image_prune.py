"""PRUNE_IMAGES on the agent's image store: which layers a prune removes and keeps, the
lock between launches and prunes, the provisioner's record of the layers a root filesystem
uses, and the checks on a request's excluded images (docs/containers.md "Pruning images")."""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from butte.agent.containerizer.image_runtime import (
    MAX_EXCLUDED_IMAGES,
    ImageGcConfig,
    ImageRuntime,
    disk_usage,
    excluded_images,
    image_options,
    member_id,
    owner_of,
    parse_image_gc_config,
)
from butte.agent.containerizer.images import Image, ImageConfig, ImageStore, SharedLock
from butte.agent.containerizer.provisioner import LAYERS_FILE, Provisioner, mounted_lower_dirs
from butte.testing.images import save_archive
from butte.testing.require import require


def _rootfs(tmp_path: Path) -> Path:
    """A tiny base layer of our own (no busybox needed): shared by every image here."""
    root = tmp_path / "base"
    (root / "etc").mkdir(parents=True)
    (root / "etc/base").write_text("base\n")
    return root


def _digest(store: ImageStore, name: str) -> list[str]:
    return [os.path.basename(p) for p in store.get(name).layers]


@pytest.fixture
def registry(tmp_path: Path) -> Path:
    """Archives ``one`` (base + B), ``two`` (base + C) and ``three`` (E alone)."""
    out = tmp_path / "registry"
    out.mkdir()
    base = _rootfs(tmp_path)
    save_archive(out / "one:latest.tar", "one", rootfs=base, layers=[{"etc/b": b"b\n"}])
    save_archive(out / "two:latest.tar", "two", rootfs=base, layers=[{"etc/c": b"c\n"}])
    lone = tmp_path / "lone"
    lone.mkdir()
    (lone / "e").write_text("e\n")
    save_archive(out / "three:latest.tar", "three", rootfs=lone)
    return out


def test_prune_keeps_used_and_excluded_layers_removes_the_rest_and_logs_them(
    tmp_path: Path, registry: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = ImageStore(str(registry), str(tmp_path / "store"))
    base, b = _digest(store, "one")
    assert _digest(store, "two")[0] == base
    c = _digest(store, "two")[1]
    (e,) = _digest(store, "three")
    assert store.unpacked == 4
    caplog.set_level(logging.INFO, logger="butte.agent")
    used = os.path.join(store.layers_dir, b)
    pruned = store.prune(["two"], lambda: {used})
    assert pruned.removed == (e,)
    assert pruned.in_use == (b,)
    assert sorted(pruned.excluded) == sorted([base, c])
    assert sorted(store.layer_ids()) == sorted([base, b, c])
    assert not os.path.exists(os.path.join(store.layers_dir, e))
    assert os.listdir(store.gc_dir) == []
    assert f"image store: pruned layer {e}" in caplog.text
    # A pruned image is read and unpacked again; one whose layers stayed costs no unpacking.
    assert store.get("three").layers == (os.path.join(store.layers_dir, e),)
    assert store.unpacked == 5
    assert (Path(store.layers_dir) / e / "e").read_text() == "e\n"
    store.get("one")
    assert store.unpacked == 5


def test_prune_with_nothing_used_or_excluded_empties_the_store(
    tmp_path: Path, registry: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = ImageStore(str(registry), str(tmp_path / "store"))
    for name in ("one", "two", "three"):
        store.get(name)
    caplog.set_level(logging.INFO, logger="butte.agent")
    # An excluded image without an archive keeps nothing (and is no error: Mesos' store
    # skips an excluded image it does not have).
    pruned = store.prune(["gone:1"], set)
    assert len(pruned.removed) == 4 and pruned.in_use == pruned.excluded == ()
    assert store.layer_ids() == [] and os.listdir(store.layers_dir) == []
    assert "excluded image 'gone:1' keeps no layer" in caplog.text
    # Nothing is remembered of the images: each is unpacked again.
    assert store.get("one").config.diff_ids
    assert store.unpacked == 6


def test_an_excluded_image_keeps_its_layers_as_its_archive_has_them_after_a_restart(
    tmp_path: Path, registry: Path
) -> None:
    store = ImageStore(str(registry), str(tmp_path / "store"))
    layers = _digest(store, "one")
    _digest(store, "three")
    # A new process knows no image: the excluded one's layers come from its archive.
    again = ImageStore(str(registry), str(tmp_path / "store"))
    assert again.image_layers("one") == tuple(layers)
    pruned = again.prune(["one"], set)
    assert sorted(again.layer_ids()) == sorted(layers)
    assert len(pruned.removed) == 1


def test_a_marked_layer_left_by_a_crash_is_deleted_at_start(tmp_path: Path, registry: Path) -> None:
    store = ImageStore(str(registry), str(tmp_path / "store"))
    (Path(store.gc_dir) / ("a" * 64)).mkdir()
    (Path(store.gc_dir) / ("a" * 64) / "f").write_text("x")
    ImageStore(str(registry), str(tmp_path / "store"))
    assert os.listdir(store.gc_dir) == []


def _in_thread(target: Any, *args: Any) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []

    def run() -> None:
        result.append(target(*args))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def test_a_prune_waits_for_a_launch_holding_the_store(tmp_path: Path, registry: Path) -> None:
    store = ImageStore(str(registry), str(tmp_path / "store"))
    (e,) = _digest(store, "three")
    with store.using():
        pruning, result = _in_thread(store.prune, [], set)
        time.sleep(0.3)
        assert pruning.is_alive() and not result
        assert store.layer_ids() == [e]
        # The same thread may get another image while it holds the store.
        store.get("one")
    pruning.join(10)
    assert result and e in result[0].removed
    assert store.layer_ids() == []


def test_a_waiting_prune_holds_back_new_launches() -> None:
    lock = SharedLock()
    order: list[str] = []
    reader_in = threading.Event()
    release_reader = threading.Event()

    def reader() -> None:
        with lock.shared():
            reader_in.set()
            release_reader.wait(10)
        order.append("first launch")

    def writer() -> None:
        with lock.exclusive():
            order.append("prune")

    def late_reader() -> None:
        with lock.shared():
            order.append("second launch")

    first = threading.Thread(target=reader)
    first.start()
    assert reader_in.wait(10)
    prune = threading.Thread(target=writer)
    prune.start()
    time.sleep(0.2)  # the prune waits for the first launch
    second = threading.Thread(target=late_reader)
    second.start()
    time.sleep(0.2)
    assert order == []  # the second launch waits behind the waiting prune
    release_reader.set()
    for thread in (first, prune, second):
        thread.join(10)
    assert order == ["first launch", "prune", "second launch"]


def test_the_provisioner_records_the_layers_a_root_filesystem_uses(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    (layer / "bin").mkdir(parents=True)
    (layer / "bin/x").write_text("x")
    provisioner = Provisioner(str(tmp_path / "provisioner"), "copy")
    image = Image("app", config=ImageConfig(cmd=("x",)), layers=(str(layer),))
    rootfs = provisioner.provision("c1", image)
    assert Path(rootfs, "bin/x").read_text() == "x"
    assert (tmp_path / "provisioner/c1" / LAYERS_FILE).exists()
    assert provisioner.layers_in_use() == {str(layer)}
    provisioner.destroy("c1")
    assert provisioner.layers_in_use() == set()


def test_a_container_without_a_record_keeps_the_layers_mounted_there(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "provisioner"
    provisioner = Provisioner(str(root), "copy")
    (root / "old/rootfs").mkdir(parents=True)  # made before records existed: no layers.json
    (root / "broken").mkdir()
    (root / "broken" / LAYERS_FILE).write_text("{not json")
    caplog.set_level(logging.WARNING, logger="butte.agent")
    assert provisioner.layers_in_use() == set()  # nothing mounted there
    assert "no layer record for broken, old" in caplog.text
    mountinfo = (
        "36 35 98:0 / /mnt1 rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n"
        f"90 23 0:55 / {root}/old/rootfs rw,relatime shared:50 - overlay overlay "
        f"rw,lowerdir=/s/layers/a\\040b:/s/layers/c,upperdir={root}/old/upper,workdir=w\n"
        "91 23 0:56 / /elsewhere rw - overlay overlay rw,lowerdir=/s/layers/z,upperdir=u\n"
    )
    assert mounted_lower_dirs([f"{root}/old/"], mountinfo) == {"/s/layers/a b", "/s/layers/c"}
    assert mounted_lower_dirs([f"{root}/other/"], mountinfo) == set()


class _SlowProvisioner(Provisioner):
    """The real provisioner, held at the start of `provision` until ``go`` is set (so that a
    prune can be started while a launch has its image but no root filesystem yet)."""

    started: threading.Event
    go: threading.Event

    def provision(self, container_id: str, image: Image) -> str:
        self.started.set()
        assert self.go.wait(10)
        return super().provision(container_id, image)


def test_a_prune_during_a_launch_keeps_the_layers_being_provisioned(
    tmp_path: Path, registry: Path
) -> None:
    require("images are prepared by root only" if os.geteuid() else None, "root")
    runtime = ImageRuntime(str(tmp_path / "work"), str(registry), "copy")
    slow = _SlowProvisioner(runtime.provisioner.root, "copy")
    slow.started, slow.go = threading.Event(), threading.Event()
    runtime.provisioner = slow
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    container = {"type": "MESOS", "mesos": {"image": {"type": "DOCKER", "docker": {"name": "one"}}}}
    command = {"shell": True, "value": "cat /etc/b"}
    launching, plan = _in_thread(
        runtime.prepare, "c1", container, command, str(sandbox), {}, {}, None
    )
    assert slow.started.wait(10)
    pruning, pruned = _in_thread(runtime.prune, [])
    time.sleep(0.3)
    assert pruning.is_alive()  # it waits for the launch
    layers = runtime.store.layer_ids()
    assert len(layers) == 2
    slow.go.set()
    launching.join(10)
    pruning.join(10)
    assert plan and Path(plan[0]["rootfs"], "etc/b").read_text() == "b\n"
    assert pruned and pruned[0].removed == () and sorted(pruned[0].in_use) == sorted(layers)
    assert runtime.store.layer_ids() == layers
    # Once the container is gone its layers go with the next prune.
    runtime.release("c1")
    assert sorted(runtime.prune([]).removed) == sorted(layers)
    assert runtime.store.layer_ids() == []


def test_task_group_members_root_filesystems_go_with_their_executors_container(
    tmp_path: Path, registry: Path
) -> None:
    """Each member in an image gets a root filesystem of its own (`member_id`), its
    PARENT volumes in the executor's sandbox; they are removed with the executor's
    container, and kept after a restart while that container is recovered."""
    require("images are prepared by root only" if os.geteuid() else None, "root")
    runtime = ImageRuntime(str(tmp_path / "work"), str(registry), "copy")
    sandbox = tmp_path / "sandbox"
    parent = {"type": "SANDBOX_PATH", "sandbox_path": {"type": "PARENT", "path": "shared"}}
    container = {
        "type": "MESOS",
        "mesos": {"image": {"type": "DOCKER", "docker": {"name": "one"}}},
        "volumes": [{"container_path": "/shared", "mode": "RW", "source": parent}],
    }
    command = {"shell": True, "value": "true"}
    plans = {}
    for cid in ("exec1", "exec2"):
        for index in (0, 1):
            own = sandbox / cid / "tasks" / f"m{index}"
            own.mkdir(parents=True)
            plans[cid, index] = runtime.prepare(
                member_id(cid, index), container, command, str(own), {}, {}, None,
                parent=str(sandbox / cid),
            )  # fmt: skip
    plan = plans["exec1", 1]
    assert plan["sandbox"] == str(sandbox / "exec1" / "tasks" / "m1")
    assert plan["mounts"] == [[str(sandbox / "exec1" / "shared"), "/shared", False]]
    assert (sandbox / "exec1" / "shared").is_dir()  # made in the executor's sandbox
    assert plans["exec1", 0]["rootfs"] != plan["rootfs"]
    assert runtime.provisioner.containers() == {"exec1.0", "exec1.1", "exec2.0", "exec2.1"}
    runtime.release("exec1")
    assert runtime.provisioner.containers() == {"exec2.0", "exec2.1"}
    assert runtime.remove_orphans({"exec2"}) == []
    assert runtime.remove_orphans(set()) == ["exec2.0", "exec2.1"]
    assert runtime.provisioner.containers() == set()
    assert owner_of(member_id("c", 3)) == "c" and owner_of("c") == "c"


def _docker(name: Any) -> dict[str, Any]:
    return {"type": "DOCKER", "docker": {"name": name}}


def test_excluded_images_of_a_request() -> None:
    assert excluded_images(None) == []
    assert excluded_images({}) == []
    images = [_docker("busybox"), {**_docker("team/app:2"), "cached": False}]
    assert excluded_images({"excluded_images": images}) == ["busybox", "team/app:2"]


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ("x", "'prune_images' must be an object"),
        ({"excluded_images": {"type": "DOCKER"}}, "must be a list of Image objects"),
        ({"excluded_images": ["busybox"]}, r"excluded_images\[0\]' must be an Image object"),
        ({"excluded_images": [{"type": "APPC", "appc": {"name": "x"}}]}, "APPC images are not"),
        ({"excluded_images": [{"type": "OCI", "docker": {"name": "x"}}]}, "must be DOCKER"),
        ({"excluded_images": [{"docker": {"name": "x"}}]}, "must be DOCKER, got 'None'"),
        ({"excluded_images": [{"type": "DOCKER"}]}, "must be an object with a 'name'"),
        ({"excluded_images": [_docker("../etc")]}, "not a valid Docker image name"),
        ({"excluded_images": [_docker(7)]}, "docker.name' must be a string"),
        ({"excluded_images": [_docker("a@sha256:" + "0" * 64)]}, "digests are not supported"),
        (
            {"excluded_images": [{**_docker("a"), "cached": "yes"}]},
            r"\[0\]\.cached' must be a boolean",
        ),
        ({"excluded_images": [_docker("a")] * (MAX_EXCLUDED_IMAGES + 1)}, "more than 1000"),
    ],
)
def test_bad_excluded_images_are_refused(payload: Any, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        excluded_images(payload)


# -- automatic image GC (--image_gc_config) ---------------------------------------------------


def _gc_json(**fields: Any) -> str:
    raw = {"image_disk_headroom": 0.1, "image_disk_watch_interval": {"nanoseconds": 10**9}}
    return json.dumps({**raw, **fields})


def test_image_gc_config_is_mesos_json_inline_or_in_a_file(tmp_path: Path) -> None:
    config = parse_image_gc_config(_gc_json(excluded_images=[_docker("busybox:1.36")]))
    assert config == ImageGcConfig(0.1, 1.0, ("busybox:1.36",))
    path = tmp_path / "gc.json"
    path.write_text(_gc_json(image_disk_headroom=0))
    assert parse_image_gc_config(str(path)) == ImageGcConfig(0.0, 1.0, ())
    assert parse_image_gc_config(f"file://{path}").headroom == 0.0


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("/no/such/file", "cannot read /no/such/file"),
        ("{", "is not JSON"),
        ("[]", "must be a JSON object"),
        (_gc_json(image_disk_headroom=1.5), "between 0.0 and 1.0"),
        (_gc_json(image_disk_headroom=True), "'image_disk_headroom' \\(a number\\) is required"),
        (json.dumps({"image_disk_watch_interval": {"nanoseconds": 1}}), "image_disk_headroom"),
        (json.dumps({"image_disk_headroom": 0.1}), "'image_disk_watch_interval' .* is required"),
        (_gc_json(image_disk_watch_interval={"nanoseconds": 0}), "must be positive"),
        (_gc_json(image_disk_watch_interval={"nanoseconds": "1"}), "is required"),
        (_gc_json(excluded_images=[{"type": "APPC"}]), "APPC images are not supported"),
        (_gc_json(image_gc_interval=3), r"unknown field\(s\) \['image_gc_interval'\]"),
    ],
)
def test_bad_image_gc_configs_are_refused(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_image_gc_config(text)


def test_image_gc_config_needs_image_providers(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--image_gc_config need --image_providers"):
        image_options(None, None, None, (), str(tmp_path), _gc_json())
    options = image_options(("docker",), str(tmp_path), "copy", (), str(tmp_path), _gc_json())
    assert options is not None and options.gc == ImageGcConfig(0.1, 1.0, ())


def test_gc_prunes_only_when_the_disk_is_fuller_than_its_headroom(
    tmp_path: Path, registry: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = ImageRuntime(str(tmp_path / "work"), str(registry), "copy")
    for name in ("one", "two"):
        runtime.store.get(name)
    caplog.set_level(logging.INFO, logger="butte.agent")
    usage = disk_usage(runtime.store.root)
    assert 0.0 < usage < 1.0
    # Headroom 0: a disk is never fuller than 100%, nothing happens.
    assert runtime.gc_check(ImageGcConfig(0.0, 60.0, ())) is None
    assert len(runtime.store.layer_ids()) == 3
    assert "image store disk usage: " in caplog.text
    # Headroom 1: any use at all is too much; the excluded image keeps its layers.
    pruned = runtime.gc_check(ImageGcConfig(1.0, 60.0, ("two",)))
    assert pruned is not None and len(pruned.removed) == 1 and len(pruned.excluded) == 2
    assert "image GC is triggered" in caplog.text


def test_the_gc_thread_checks_every_interval_until_closed(tmp_path: Path, registry: Path) -> None:
    gc = ImageGcConfig(1.0, 0.05, ())
    runtime = ImageRuntime(str(tmp_path / "work"), str(registry), "copy", gc=gc)
    try:
        runtime.store.get("three")
        deadline = time.monotonic() + 10
        while runtime.store.layer_ids() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert runtime.store.layer_ids() == []
    finally:
        runtime.close()
    time.sleep(0.2)  # its last check is over
    runtime.store.get("three")
    time.sleep(0.3)
    assert len(runtime.store.layer_ids()) == 1  # closed: no more checks
