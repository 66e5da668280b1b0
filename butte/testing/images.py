"""Container images for tests, built locally: nothing is ever pulled from a registry.

`busybox_rootfs` makes a small root filesystem from Debian's ``busybox-static`` (one static
binary and its applet links), cached outside the repository. `save_archive` writes it, plus
optional extra layers, as a ``docker save`` archive (``manifest.json``, a config blob and one
``layer.tar`` per layer), the format both the agent's local image store
(``--docker_registry DIR`` with ``<repo>:<tag>.tar`` files) and ``docker load`` read.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from butte.testing.require import require

BUSYBOX = "/bin/busybox"
CACHE = Path(os.environ.get("BUTTE_TEST_CACHE", "/var/cache/butte-test")) / "images"
# An extra layer: path inside the image -> file content, or None for a whiteout (the path is
# deleted by this layer, as Docker's ``.wh.<name>`` entries say).
Layer = Mapping[str, bytes | None]


def busybox_missing() -> str | None:
    """Why a busybox root filesystem cannot be built here, or None."""
    if not os.path.exists(BUSYBOX):
        return f"{BUSYBOX} is missing (Debian's busybox-static package)"
    probe = subprocess.run([BUSYBOX, "--list"], capture_output=True)
    if probe.returncode != 0:
        return f"{BUSYBOX} is not busybox-static"
    return None


def busybox_rootfs() -> Path:
    """A cached root filesystem: busybox and its applets in /bin, /etc/passwd with root and
    nobody, and empty /tmp, /proc, /sys, /dev. Built once; a test must not modify it."""
    require(busybox_missing(), "busybox-static")
    root = CACHE / "busybox-rootfs"
    if (root / ".complete").exists():
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="busybox-rootfs.", dir=CACHE))
    for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "root", "home/nobody"):
        (staging / d).mkdir(parents=True, exist_ok=True)
    os.chmod(staging / "tmp", 0o1777)
    shutil.copy2(BUSYBOX, staging / "bin/busybox")
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True)
    for applet in applets.stdout.split():
        if applet != "busybox" and "/" not in applet:
            os.symlink("busybox", staging / "bin" / applet)
    (staging / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home/nobody:/bin/sh\n"
    )
    (staging / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (staging / ".complete").touch()
    try:
        staging.rename(root)
    except OSError:  # another test built it meanwhile
        shutil.rmtree(staging, ignore_errors=True)
    return root


def _tar_bytes(add: Any) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        add(tar)
    return buf.getvalue()


def _rootfs_layer(rootfs: Path) -> bytes:
    def add(tar: tarfile.TarFile) -> None:
        for entry in sorted(rootfs.iterdir()):
            if entry.name != ".complete":
                tar.add(entry, arcname=entry.name)

    return _tar_bytes(add)


def _files_layer(files: Layer) -> bytes:
    def add(tar: tarfile.TarFile) -> None:
        for path, content in sorted(files.items()):
            path = path.lstrip("/")
            parent, _, name = path.rpartition("/")
            if content is None:  # a whiteout hides the path in the layers below
                info = tarfile.TarInfo(f"{parent}/.wh.{name}" if parent else f".wh.{name}")
                tar.addfile(info, io.BytesIO(b""))
                continue
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(content), 0o755
            tar.addfile(info, io.BytesIO(content))

    return _tar_bytes(add)


def save_archive(
    out: str | os.PathLike[str],
    repo: str,
    tag: str = "latest",
    *,
    config: Mapping[str, Any] | None = None,
    layers: Sequence[Layer] = (),
    rootfs: Path | None = None,
) -> Path:
    """Writes a ``docker save`` archive of ``rootfs`` (default: `busybox_rootfs`) plus
    ``layers`` on top, tagged ``repo:tag``, with the image ``config`` (Docker's keys:
    ``Entrypoint``, ``Cmd``, ``Env``, ``WorkingDir``, ``User``...). Returns ``out``."""
    blobs = [_rootfs_layer(rootfs or busybox_rootfs())] + [_files_layer(f) for f in layers]
    diff_ids = ["sha256:" + hashlib.sha256(b).hexdigest() for b in blobs]
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": dict(config or {}),
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    config_blob = json.dumps(image_config, sort_keys=True).encode()
    config_name = hashlib.sha256(config_blob).hexdigest() + ".json"
    layer_names = [f"{d.split(':', 1)[1]}/layer.tar" for d in diff_ids]
    manifest = [{"Config": config_name, "RepoTags": [f"{repo}:{tag}"], "Layers": layer_names}]
    repositories = {repo: {tag: diff_ids[-1].split(":", 1)[1]}}
    out = Path(out)
    with tarfile.open(out, "w") as tar:
        members = [(config_name, config_blob), *zip(layer_names, blobs, strict=True)]
        members += [("manifest.json", json.dumps(manifest).encode())]
        members += [("repositories", json.dumps(repositories).encode())]
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out
