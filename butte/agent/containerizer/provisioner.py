"""Root filesystems of containers in images, made from the layer store's layers.

`Provisioner` builds a container's root filesystem under ``<work_dir>/provisioner/<id>``:
``copy`` applies the layers one after the other into ``rootfs`` (`apply_layer`: whiteouts
delete, opaque directories replace, as overlayfs would show them); ``overlay`` mounts them
as lower directories under a per-container upper one. Blocking, like the store.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field

from butte.agent.containerizer.images import OPAQUE_XATTR, Image, ImageError, remove_path

BACKENDS = ("copy", "overlay")


def overlay_supported() -> bool:
    """Whether the kernel has overlayfs."""
    try:
        with open("/proc/filesystems") as f:
            return any(line.split()[-1:] == ["overlay"] for line in f)
    except OSError:
        return False


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


def apply_layer(layer: str, target: str) -> None:
    """Copies one stored layer onto ``target`` as overlayfs would show it above what is
    there: whiteouts delete, opaque directories replace, a directory replaces a non-dir."""
    for entry in os.scandir(layer):
        source = entry.path
        dest = os.path.join(target, entry.name)
        st = entry.stat(follow_symlinks=False)
        if _is_whiteout(st):
            remove_path(dest)
        elif stat.S_ISDIR(st.st_mode):
            existing = os.lstat(dest) if os.path.lexists(dest) else None
            if existing is None or not stat.S_ISDIR(existing.st_mode):
                remove_path(dest)
                os.mkdir(dest)
            elif _opaque(source):
                for child in os.listdir(dest):
                    remove_path(os.path.join(dest, child))
            apply_layer(source, dest)
            os.chown(dest, st.st_uid, st.st_gid)
            os.chmod(dest, stat.S_IMODE(st.st_mode))
        else:
            remove_path(dest)
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(source), dest)
                os.lchown(dest, st.st_uid, st.st_gid)
            elif stat.S_ISFIFO(st.st_mode):
                os.mkfifo(dest, stat.S_IMODE(st.st_mode))
                os.chown(dest, st.st_uid, st.st_gid)
            else:
                shutil.copy2(source, dest, follow_symlinks=False)
                os.chown(dest, st.st_uid, st.st_gid)


@dataclass(slots=True)
class Provisioner:
    """Root filesystems of containers under ``<work_dir>/provisioner/<container id>``."""

    root: str
    backend: str = "copy"
    _mounted: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown --image_provisioner_backend '{self.backend}'")
        os.makedirs(self.root, exist_ok=True)

    def container_dir(self, container_id: str) -> str:
        return os.path.join(self.root, container_id)

    def provision(self, container_id: str, image: Image) -> str:
        """Builds the container's root filesystem; returns its path."""
        base = self.container_dir(container_id)
        rootfs = os.path.join(base, "rootfs")
        os.makedirs(rootfs, exist_ok=True)
        try:
            if self.backend == "overlay":
                self._overlay(base, rootfs, image.layers)
            else:
                for layer in image.layers:
                    apply_layer(layer, rootfs)
        except OSError as e:
            self.destroy(container_id)
            raise ImageError(f"cannot provision the root filesystem of {image.name}: {e}") from None
        return rootfs

    def _overlay(self, base: str, rootfs: str, layers: Sequence[str]) -> None:
        from butte.agent.containerizer import linux

        upper, work = os.path.join(base, "upper"), os.path.join(base, "work")
        os.makedirs(upper, exist_ok=True)
        os.makedirs(work, exist_ok=True)
        lower = ":".join(reversed(layers))  # overlayfs lists the top layer first
        linux.mount_data(
            "overlay", rootfs, "overlay", 0, f"lowerdir={lower},upperdir={upper},workdir={work}"
        )

    def destroy(self, container_id: str) -> None:
        """Removes the container's root filesystem (unmounting an overlay first)."""
        base = self.container_dir(container_id)
        rootfs = os.path.join(base, "rootfs")
        if os.path.ismount(rootfs):
            from butte.agent.containerizer import linux

            with contextlib.suppress(OSError):
                linux.umount(rootfs, detach=True)
        shutil.rmtree(base, ignore_errors=True)

    def containers(self) -> set[str]:
        """Ids of the containers that have a root filesystem here."""
        try:
            return set(os.listdir(self.root))
        except OSError:
            return set()


def overlay_problem(work_dir: str) -> str | None:
    """Why an overlay cannot be mounted under ``work_dir`` (None: it can): tried once with
    an empty layer, as the provisioner would (the kernel may have overlayfs while the agent
    may not mount, or the work dir's file system cannot hold an upper directory)."""
    if not overlay_supported():
        return "the kernel has no overlayfs"
    from butte.agent.containerizer import linux

    os.makedirs(work_dir, exist_ok=True)
    probe = tempfile.mkdtemp(prefix=".overlay-probe.", dir=work_dir)
    try:
        parts = {name: os.path.join(probe, name) for name in ("lower", "upper", "work", "root")}
        for path in parts.values():
            os.mkdir(path)
        options = f"lowerdir={parts['lower']},upperdir={parts['upper']},workdir={parts['work']}"
        linux.mount_data("overlay", parts["root"], "overlay", 0, options)
        linux.umount(parts["root"], detach=True)
        return None
    except OSError as e:
        return f"cannot mount an overlay under {work_dir}: {e}"
    finally:
        shutil.rmtree(probe, ignore_errors=True)
