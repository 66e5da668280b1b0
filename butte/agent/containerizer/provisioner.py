"""Root filesystems of containers in images, made from the layer store's layers.

`Provisioner` builds a container's root filesystem under ``<work_dir>/provisioner/<id>``:
``copy`` applies the layers one after the other into ``rootfs`` (`apply_layer`: whiteouts
delete, opaque directories replace, as overlayfs would show them); ``overlay`` mounts them
as lower directories under a per-container upper one. Blocking, like the store.

Before it uses any layer, `Provisioner.provision` records the container's image and layer
directories in ``<work_dir>/provisioner/<id>/layers.json`` (Mesos checkpoints the same):
`Provisioner.layers_in_use` is what a prune of the image store must keep, after a restart
too, for as long as the container's root filesystem is there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field

from butte.agent.containerizer.images import OPAQUE_XATTR, Image, ImageError, remove_path

BACKENDS = ("copy", "overlay")
LAYERS_FILE = "layers.json"

log = logging.getLogger("butte.agent")


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
        try:
            os.makedirs(rootfs, exist_ok=True)
            _write_record(base, image)
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

    def layers_in_use(self) -> set[str]:
        """The layer directories of every container's root filesystem here: those of their
        records, and, for a container without a readable record (made before records
        existed), the lower directories of the overlays mounted in it."""
        used: set[str] = set()
        unknown = []
        for container_id in sorted(self.containers()):
            layers = _read_record(self.container_dir(container_id))
            if layers is None:
                unknown.append(container_id)
            else:
                used.update(layers)
        if unknown:
            log.warning(
                "provisioner: no layer record for %s: keeping the layers mounted there",
                ", ".join(unknown),
            )
            prefixes = tuple(os.path.join(self.container_dir(c), "") for c in unknown)
            used.update(mounted_lower_dirs(prefixes))
        return used

    def containers(self) -> set[str]:
        """Ids of the containers that have a root filesystem here."""
        try:
            return set(os.listdir(self.root))
        except OSError:
            return set()


def _write_record(base: str, image: Image) -> None:
    """``layers.json``: the image and its layer directories (written whole: a temporary file
    renamed into place)."""
    record = json.dumps({"image": image.name, "layers": list(image.layers)})
    path = os.path.join(base, LAYERS_FILE)
    with open(path + ".tmp", "w") as f:
        f.write(record)
        f.flush()
        os.fsync(f.fileno())
    os.replace(path + ".tmp", path)


def _read_record(base: str) -> list[str] | None:
    """The layer directories of a container's record; None when it has no readable one."""
    try:
        with open(os.path.join(base, LAYERS_FILE)) as f:
            raw = json.load(f)
    except (OSError, ValueError):
        return None
    layers = raw.get("layers") if isinstance(raw, dict) else None
    if not isinstance(layers, list) or not all(isinstance(p, str) for p in layers):
        return None
    return layers


def _unescape(field: str) -> str:
    """A /proc/self/mountinfo field (space, tab, newline and backslash are octal escapes)."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mounted_lower_dirs(mount_points: Sequence[str], mountinfo: str | None = None) -> set[str]:
    """The ``lowerdir`` directories of the overlays mounted under any of ``mount_points``
    (prefixes), from ``/proc/self/mountinfo`` (or the ``mountinfo`` text given)."""
    if mountinfo is None:
        try:
            with open("/proc/self/mountinfo") as f:
                mountinfo = f.read()
        except OSError:
            return set()
    out: set[str] = set()
    for line in mountinfo.splitlines():
        head, sep, tail = line.partition(" - ")
        fields, rest = head.split(), tail.split()
        if not sep or len(fields) < 5 or len(rest) < 3 or rest[0] != "overlay":
            continue
        if not _unescape(fields[4]).startswith(tuple(mount_points)):
            continue
        for option in rest[2].split(","):
            if option.startswith("lowerdir="):
                out.update(_unescape(option[len("lowerdir=") :]).split(":"))
    return out


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
