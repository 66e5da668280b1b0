"""Docker images for the mesos containerizer: a local puller, a layer store, root filesystems.

``--image_providers docker --docker_registry DIR``: an image ``repo:tag`` is the ``docker
save`` archive ``DIR/repo:tag.tar`` (Mesos' local puller). `ImageStore` reads its
``manifest.json`` and config, and unpacks each layer once into a content-addressed directory
``<work_dir>/images/layers/<sha256 of the layer tar>``:

* each layer is unpacked into a staging directory and renamed into place when complete and
  its digest matched the config's ``diff_ids``: a truncated or corrupt archive gives a
  clear error and leaves nothing behind;
* entries that leave the layer (absolute names, ``..``, a path through a symlink), device
  nodes and names with NUL are refused;
* Docker's whiteouts (``.wh.<name>``, ``.wh..wh..opq``) are stored the way overlayfs reads
  them (a 0/0 character device, the ``trusted.overlay.opaque`` attribute), so the overlay
  backend uses the layers as they are and the copy backend applies them the same way;
* two launches that need the same image at once wait for one unpacking (a lock per layer).

`Provisioner` builds a container's root filesystem under ``<work_dir>/provisioner/<id>``:
``copy`` applies the layers one after the other into ``rootfs``; ``overlay`` mounts them as
lower directories with a per-container upper one. `launch_plan` says what the built-in
executor runs in it (the image's Entrypoint/Cmd/Env/WorkingDir/User under the task's
CommandInfo, its volumes); `butte.agent.containerizer.linux` does the mounts and pivot_root.
Everything here blocks: the containerizer calls it from its launch threads.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import logging
import os
import shutil
import stat
import tarfile
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from butte.core.container_info import container_problem, image_of, split_image_name

log = logging.getLogger("butte.agent")

SANDBOX_IN_CONTAINER = "/mnt/mesos/sandbox"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
OPAQUE_XATTR = "trusted.overlay.opaque"
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
BACKENDS = ("copy", "overlay")
_MAX_JSON = 16 << 20  # manifest and config files are small; refuse a huge one


class ImageError(Exception):
    """An image cannot be provided (missing, corrupt, unsafe): the launch fails with this."""


# -- pure parsing -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """What a container runs by default (Docker's config keys) and its layers' digests."""

    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    working_dir: str = ""
    user: str = ""
    diff_ids: tuple[str, ...] = ()


def archive_name(name: str) -> str:
    """The file of image ``name`` in the --docker_registry directory: ``repo:tag.tar``."""
    repo, tag = split_image_name(name)
    return f"{repo}:{tag}.tar"


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ImageError(f"image config: {what} is not a list of strings")
    return tuple(value)


def parse_config(data: bytes) -> ImageConfig:
    """An image config blob (``<hex>.json`` of a docker save archive)."""
    try:
        raw = json.loads(data)
    except ValueError as e:
        raise ImageError(f"image config is not JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ImageError("image config is not an object")
    config = raw.get("config") or {}
    rootfs = raw.get("rootfs") or {}
    if not isinstance(config, dict) or not isinstance(rootfs, dict):
        raise ImageError("image config: config and rootfs must be objects")
    env = []
    for entry in _strings(config.get("Env"), "Env"):
        key, sep, value = entry.partition("=")
        if not sep or not key:
            raise ImageError(f"image config: bad Env entry '{entry}'")
        env.append((key, value))
    diff_ids = _strings(rootfs.get("diff_ids"), "rootfs.diff_ids")
    for digest in diff_ids:
        algorithm, _, hexdigest = digest.partition(":")
        if algorithm != "sha256" or len(hexdigest) != 64 or not _is_hex(hexdigest):
            raise ImageError(f"image config: bad layer digest '{digest}'")
    working_dir = config.get("WorkingDir") or ""
    user = config.get("User") or ""
    if not isinstance(working_dir, str) or not isinstance(user, str):
        raise ImageError("image config: WorkingDir and User must be strings")
    return ImageConfig(
        entrypoint=_strings(config.get("Entrypoint"), "Entrypoint"),
        cmd=_strings(config.get("Cmd"), "Cmd"),
        env=tuple(env),
        working_dir=working_dir,
        user=user,
        diff_ids=diff_ids,
    )


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def parse_manifest(data: bytes, name: str) -> tuple[str, tuple[str, ...]]:
    """(config member, layer members) of the archive's ``manifest.json`` entry for ``name``
    (the first entry when no RepoTags match: an archive saved by image id)."""
    try:
        raw = json.loads(data)
    except ValueError as e:
        raise ImageError(f"manifest.json is not JSON: {e}") from None
    if not isinstance(raw, list) or not raw or not all(isinstance(e, dict) for e in raw):
        raise ImageError("manifest.json is not a list of images")
    repo, tag = split_image_name(name)
    wanted = {f"{repo}:{tag}", name}
    chosen = next((e for e in raw if wanted & set(e.get("RepoTags") or [])), raw[0])
    config = chosen.get("Config")
    layers = _strings(chosen.get("Layers"), "manifest Layers")
    if not isinstance(config, str) or not layers:
        raise ImageError("manifest.json names no config or no layers")
    for member in (config, *layers):
        member_path(member)
    return config, layers


def member_path(name: str) -> str:
    """A tar entry's path relative to the layer root; ImageError for a name that would
    leave it (absolute, ``..``) or has a NUL. ``""`` is the root itself."""
    if "\x00" in name:
        raise ImageError(f"entry {name!r} has a NUL character")
    if name.startswith("/"):
        raise ImageError(f"entry '{name}' is an absolute path")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ImageError(f"entry '{name}' leaves the layer ('..')")
    return "/".join(parts)


def whiteout(path: str) -> tuple[str, str] | None:
    """("opaque", directory) or ("whiteout", hidden path) for a whiteout entry, else None."""
    parent, _, base = path.rpartition("/")
    if base == OPAQUE_MARKER:
        return "opaque", parent
    if base.startswith(WHITEOUT_PREFIX) and len(base) > len(WHITEOUT_PREFIX):
        hidden = base[len(WHITEOUT_PREFIX) :]
        return "whiteout", f"{parent}/{hidden}" if parent else hidden
    return None


def launch_argv(config: ImageConfig, command: Mapping[str, Any]) -> tuple[str, list[str]]:
    """(program, argv) of a task in an image: ``shell`` runs ``/bin/sh -c value``; otherwise a
    ``value`` is the program with ``arguments`` as its whole argv (the image's Entrypoint
    and Cmd do not apply); without a value the image's Entrypoint runs with the
    ``arguments``, or else its Cmd, as Docker's ``docker run IMAGE ARGS`` does."""
    if command.get("shell", True):
        value = command.get("value")
        if not value:
            raise ImageError("a CommandInfo with shell=true needs a value")
        return "/bin/sh", ["/bin/sh", "-c", str(value)]
    arguments = [str(a) for a in command.get("arguments") or []]
    value = command.get("value")
    if value:
        return str(value), arguments or [str(value)]
    argv = [*config.entrypoint, *(arguments or config.cmd)]
    if not argv:
        raise ImageError("the image has no Entrypoint or Cmd and the task gives no command")
    return argv[0], argv


def parse_passwd(text: str) -> dict[str, tuple[int, int, str]]:
    """name -> (uid, gid, home) of an /etc/passwd."""
    out: dict[str, tuple[int, int, str]] = {}
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 6 and fields[2].isdigit() and fields[3].isdigit():
            out.setdefault(fields[0], (int(fields[2]), int(fields[3]), fields[5]))
    return out


def parse_group(text: str) -> list[tuple[str, int, list[str]]]:
    """(name, gid, members) of each line of an /etc/group."""
    out = []
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) >= 4 and fields[2].isdigit():
            out.append((fields[0], int(fields[2]), [m for m in fields[3].split(",") if m]))
    return out


@dataclass(frozen=True, slots=True)
class ImageUser:
    """Who a task in an image runs as (resolved in the image's own passwd and group)."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


def resolve_user(spec: str, passwd: str, group: str) -> ImageUser:
    """Docker's ``User``: ``name``, ``uid``, ``name:group`` or ``uid:gid``, in the image."""
    users = parse_passwd(passwd)
    groups = parse_group(group)
    user_part, _, group_part = spec.partition(":")
    if user_part.isdigit():
        uid = int(user_part)
        found = next(((n, v) for n, v in users.items() if v[0] == uid), None)
        name, gid, home = (found[0], found[1][1], found[1][2]) if found else (user_part, uid, "/")
    elif user_part in users:
        name = user_part
        uid, gid, home = users[user_part]
    else:
        raise ImageError(f"user '{user_part}' does not exist in the image's /etc/passwd")
    if group_part:
        if group_part.isdigit():
            gid = int(group_part)
        else:
            match = [g for g in groups if g[0] == group_part]
            if not match:
                raise ImageError(f"group '{group_part}' does not exist in the image's /etc/group")
            gid = match[0][1]
    extra = tuple(sorted({g[1] for g in groups if name in g[2]} - {gid}))
    return ImageUser(name, uid, gid, (gid, *extra), home or "/")


@dataclass(frozen=True, slots=True)
class Mount:
    """A bind mount of a host path onto a path inside the container's root filesystem."""

    source: str
    target: str
    readonly: bool = False


def plan_volumes(
    volumes: Sequence[Mapping[str, Any]], sandbox: str, allowed_host_paths: Sequence[str]
) -> list[Mount]:
    """The bind mounts of ``ContainerInfo.volumes`` (checked by
    `butte.core.container_info.volume_problem` first): a relative ``container_path`` lies
    in the sandbox (``/mnt/mesos/sandbox``); a relative host path or a SANDBOX_PATH source
    is in the sandbox; an absolute host path must lie under one of ``allowed_host_paths``
    (``--allowed_host_path_volumes``)."""
    mounts = []
    for volume in volumes:
        target = str(volume["container_path"])
        if not target.startswith("/"):
            target = f"{SANDBOX_IN_CONTAINER}/{target}"
        source = volume.get("source")
        if source is not None and source.get("type") == "SANDBOX_PATH":
            host = os.path.join(sandbox, str(source["sandbox_path"]["path"]).lstrip("/"))
        else:
            path = source["host_path"]["path"] if source is not None else volume["host_path"]
            host = str(path)
            if not host.startswith("/"):
                host = os.path.join(sandbox, host)
            elif not any(_under(host, prefix) for prefix in allowed_host_paths):
                allowed = ", ".join(allowed_host_paths) or "none"
                raise ImageError(
                    f"host path '{host}' is not allowed (--allowed_host_path_volumes: {allowed})"
                )
        mounts.append(Mount(os.path.normpath(host), os.path.normpath(target), _readonly(volume)))
    return mounts


def _readonly(volume: Mapping[str, Any]) -> bool:
    return volume.get("mode", "RW") == "RO"


def _under(path: str, prefix: str) -> bool:
    prefix = os.path.normpath(prefix)
    path = os.path.normpath(path)
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


# -- the layer store ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Image:
    """An image ready to run: its config and its layer directories, lowest first."""

    name: str
    config: ImageConfig
    layers: tuple[str, ...]


class _Hashing(io.RawIOBase):
    """A reader that hashes what passes through it (the layer's digest, as it is unpacked)."""

    def __init__(self, inner: IO[bytes]) -> None:
        self.inner = inner
        self.sha256 = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.inner.read(len(buffer))
        self.sha256.update(data)
        buffer[: len(data)] = data
        return len(data)

    def drain(self) -> None:
        while self.inner.read(1 << 20):
            pass


class ImageStore:
    """The local puller and the content-addressed layer store (see the module docstring)."""

    def __init__(self, registry: str, root: str) -> None:
        self.registry = registry
        self.root = root
        self.layers_dir = os.path.join(root, "layers")
        self.staging_dir = os.path.join(root, "staging")
        self.unpacked = 0  # layers unpacked by this process (a store hit does not count)
        self._lock = threading.Lock()
        self._layer_locks: dict[str, threading.Lock] = {}
        self._images: dict[str, tuple[tuple[int, int], Image]] = {}
        os.makedirs(self.layers_dir, exist_ok=True)
        # Staging left by a crash mid-unpack is garbage: nothing points at it.
        shutil.rmtree(self.staging_dir, ignore_errors=True)
        os.makedirs(self.staging_dir, exist_ok=True)

    def get(self, name: str) -> Image:
        """The image ``name``, its layers unpacked (blocking; safe from several threads)."""
        try:
            path = os.path.join(self.registry, archive_name(name))
        except ValueError as e:
            raise ImageError(str(e)) from None
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise ImageError(
                f"Failed to find image '{name}': no {os.path.basename(path)} in {self.registry}"
            ) from None
        key = (st.st_mtime_ns, st.st_size)
        cached = self._images.get(name)
        if cached is not None and cached[0] == key:
            return cached[1]
        with self._lock_for(f"image:{name}"):
            cached = self._images.get(name)
            if cached is not None and cached[0] == key:
                return cached[1]
            image = self._load(name, path)
            self._images[name] = (key, image)
            return image

    def _lock_for(self, key: str) -> threading.Lock:
        with self._lock:
            return self._layer_locks.setdefault(key, threading.Lock())

    def _load(self, name: str, path: str) -> Image:
        try:
            with tarfile.open(path, "r:") as archive:
                members = {m.name: m for m in archive.getmembers()}
                config_name, layer_names = parse_manifest(
                    _read_member(archive, members, "manifest.json"), name
                )
                config = parse_config(_read_member(archive, members, config_name))
                if len(config.diff_ids) != len(layer_names):
                    raise ImageError(
                        f"{len(layer_names)} layers in the manifest, "
                        f"{len(config.diff_ids)} in the config"
                    )
                layers = []
                for member, digest in zip(layer_names, config.diff_ids, strict=True):
                    layers.append(self._layer(archive, members, member, digest))
        except ImageError as e:
            raise ImageError(f"image '{name}' ({path}): {e}") from None
        except (tarfile.TarError, OSError, EOFError, zlib_error) as e:
            raise ImageError(f"image '{name}': cannot read {path}: {e}") from None
        return Image(name, config, tuple(layers))

    def _layer(
        self,
        archive: tarfile.TarFile,
        members: Mapping[str, tarfile.TarInfo],
        member: str,
        digest: str,
    ) -> str:
        hexdigest = digest.split(":", 1)[1]
        target = os.path.join(self.layers_dir, hexdigest)
        if os.path.isdir(target):
            return target
        with self._lock_for(hexdigest):
            if os.path.isdir(target):
                return target
            info = members.get(member)
            if info is None or not info.isfile():
                raise ImageError(f"layer {member} is missing from the archive")
            blob = archive.extractfile(info)
            assert blob is not None
            staging = tempfile.mkdtemp(prefix=f"{hexdigest[:12]}.", dir=self.staging_dir)
            try:
                actual = unpack_layer(blob, os.path.join(staging, "rootfs"))
                if actual != hexdigest:
                    raise ImageError(
                        f"layer {member} is corrupt: sha256 {actual}, the config says {hexdigest}"
                    )
                os.rename(os.path.join(staging, "rootfs"), target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            self.unpacked += 1
            log.info("image store: unpacked layer %s", hexdigest)
            return target


zlib_error: type[Exception]
try:
    import zlib

    zlib_error = zlib.error
except ImportError:  # pragma: no cover - zlib is always built in CPython
    zlib_error = OSError


def _read_member(
    archive: tarfile.TarFile, members: Mapping[str, tarfile.TarInfo], name: str
) -> bytes:
    info = members.get(name)
    if info is None or not info.isfile():
        raise ImageError(f"{name} is missing from the archive")
    if info.size > _MAX_JSON:
        raise ImageError(f"{name} is too large ({info.size} bytes)")
    handle = archive.extractfile(info)
    assert handle is not None
    data = handle.read()
    if len(data) != info.size:
        raise ImageError(f"{name} is truncated")
    return data


def unpack_layer(blob: IO[bytes], root: str) -> str:
    """Unpacks one layer tar (plain or gzipped) into the new directory ``root``, whiteouts in
    overlayfs' form; returns the sha256 of the (uncompressed) tar. ImageError for an unsafe
    or unreadable entry."""
    head = blob.read(2)
    rest: Any = _Prefixed(head, blob)
    if head == b"\x1f\x8b":
        rest = gzip.GzipFile(fileobj=rest, mode="rb")
    hashing = _Hashing(rest)
    os.mkdir(root, 0o755)
    with tarfile.open(fileobj=io.BufferedReader(hashing, 1 << 16), mode="r|") as tar:
        for info in tar:
            _unpack_entry(tar, info, root)
    hashing.drain()
    return hashing.sha256.hexdigest()


class _Prefixed(io.RawIOBase):
    """``head`` then the rest of ``inner`` (the gzip sniff must not lose bytes)."""

    def __init__(self, head: bytes, inner: IO[bytes]) -> None:
        self.head = head
        self.inner = inner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.head:
            n = min(len(buffer), len(self.head))
            buffer[:n] = self.head[:n]
            self.head = self.head[n:]
            return n
        data = self.inner.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def _safe_parent(root: str, path: str) -> str:
    """The host path of ``path`` in the layer, its parents created as real directories;
    ImageError when a parent is a symlink or a file (the entry would leave the layer)."""
    parts = path.split("/")
    current = root
    for part in parts[:-1]:
        current = os.path.join(current, part)
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            os.mkdir(current, 0o755)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise ImageError(f"entry '{path}' goes through '{part}', which is not a directory")
    return os.path.join(root, path)


def _remove(path: str) -> None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _unpack_entry(tar: tarfile.TarFile, info: tarfile.TarInfo, root: str) -> None:
    path = member_path(info.name)
    if not path:
        return  # the layer root itself
    kind = whiteout(path)
    if kind is not None:
        what, where = kind
        if what == "opaque":
            directory = _safe_parent(root, where) if where else root
            if not os.path.lexists(directory):
                os.mkdir(directory, 0o755)
            elif not stat.S_ISDIR(os.lstat(directory).st_mode):
                raise ImageError(f"opaque marker in '{where}', which is not a directory")
            os.setxattr(directory, OPAQUE_XATTR, b"y", follow_symlinks=False)
        else:
            target = _safe_parent(root, where)
            _remove(target)
            os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(0, 0))
        return
    target = _safe_parent(root, path)
    if info.isdir():
        if not os.path.isdir(target) or os.path.islink(target):
            _remove(target)
            os.mkdir(target, 0o755)
    elif info.isreg():
        _remove(target)
        source = tar.extractfile(info)
        assert source is not None
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
    elif info.issym():
        if "\x00" in info.linkname:
            raise ImageError(f"symlink '{path}' has a NUL character")
        _remove(target)
        os.symlink(info.linkname, target)
    elif info.islnk():
        linked = member_path(info.linkname)
        source_path = os.path.join(root, linked)
        if not linked:
            raise ImageError(f"hard link '{path}' has no target")
        _safe_parent(root, linked)
        if not os.path.lexists(source_path):
            raise ImageError(f"hard link '{path}' -> '{info.linkname}': no such entry")
        _remove(target)
        os.link(source_path, target, follow_symlinks=False)
        return  # the link shares the target's owner and mode
    elif info.isfifo():
        _remove(target)
        os.mkfifo(target, 0o600)
    else:
        raise ImageError(f"entry '{path}' is a device or special file: refused")
    os.lchown(target, info.uid, info.gid)
    if not info.issym():
        os.chmod(target, info.mode & 0o7777)


# -- root filesystems -----------------------------------------------------------------------


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
            _remove(dest)
        elif stat.S_ISDIR(st.st_mode):
            existing = os.lstat(dest) if os.path.lexists(dest) else None
            if existing is None or not stat.S_ISDIR(existing.st_mode):
                _remove(dest)
                os.mkdir(dest)
            elif _opaque(source):
                for child in os.listdir(dest):
                    _remove(os.path.join(dest, child))
            apply_layer(source, dest)
            os.chown(dest, st.st_uid, st.st_gid)
            os.chmod(dest, stat.S_IMODE(st.st_mode))
        else:
            _remove(dest)
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


# -- what the executor runs ---------------------------------------------------------------


def _read_text(rootfs: str, path: str) -> str:
    """A small file of the image (a symlink in the image is not followed out of it)."""
    full = os.path.join(rootfs, path)
    try:
        fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return ""
    with os.fdopen(fd, "rb") as f:
        return f.read(1 << 20).decode(errors="replace")


def launch_plan(
    *,
    image: Image,
    rootfs: str,
    sandbox: str,
    command: Mapping[str, Any],
    executor_env: Mapping[str, str],
    task_env: Mapping[str, str],
    mounts: Sequence[Mount],
    default_user: str | None,
) -> dict[str, Any]:
    """What the built-in executor needs to start the task in ``rootfs`` (JSON-able; passed
    in its environment): program and argv, environment, working directory, user, mounts."""
    config = image.config
    program, argv = launch_argv(config, command)
    user_spec = config.user or default_user or ""
    user: ImageUser | None = None
    if user_spec and user_spec not in ("root", "0", "0:0"):
        user = resolve_user(
            user_spec, _read_text(rootfs, "etc/passwd"), _read_text(rootfs, "etc/group")
        )
    env = {"PATH": DEFAULT_PATH, "HOME": user.home if user else "/root"}
    env.update(dict(config.env))
    # The executor's MESOS_* variables (not the agent's own environment: it is the host's).
    env.update({k: v for k, v in executor_env.items() if k.startswith("MESOS_")})
    env["MESOS_SANDBOX"] = SANDBOX_IN_CONTAINER
    env.update(task_env)
    cwd = config.working_dir or SANDBOX_IN_CONTAINER
    if not cwd.startswith("/"):
        cwd = "/" + cwd
    return {
        "rootfs": rootfs,
        "sandbox": sandbox,
        "program": program,
        "argv": argv,
        "env": env,
        "cwd": cwd,
        "user": None
        if user is None
        else [user.name, user.uid, user.gid, list(user.groups), user.home],
        "mounts": [[m.source, m.target, m.readonly] for m in mounts],
    }


@dataclass(frozen=True, slots=True)
class ImageOptions:
    """--docker_registry, --image_provisioner_backend, --allowed_host_path_volumes."""

    registry: str
    backend: str = "copy"
    allowed_host_paths: tuple[str, ...] = ()


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


def image_options(
    providers: Sequence[str] | None,
    registry: str | None,
    backend: str | None,
    allowed_host_paths: Sequence[str],
    work_dir: str,
) -> ImageOptions | None:
    """The image options of the agent's flags (None: no --image_providers); ValueError for
    a combination that cannot work. Without a backend: overlay where it can be mounted
    under ``work_dir``, else copy."""
    if not providers:
        if registry or backend:
            raise ValueError(
                "--docker_registry and --image_provisioner_backend need --image_providers"
            )
        return None
    if not registry:
        raise ValueError("--image_providers docker needs --docker_registry DIR (a local directory)")
    if registry.startswith(("http://", "https://")) or not os.path.isdir(registry):
        raise ValueError(f"--docker_registry {registry}: not a local directory")
    if backend in (None, "overlay"):
        problem = overlay_problem(work_dir)
        if problem is not None and backend == "overlay":
            raise ValueError(f"--image_provisioner_backend overlay: {problem}")
        backend = "copy" if problem is not None else "overlay"
    return ImageOptions(os.path.abspath(registry), backend, tuple(allowed_host_paths))


class ImageRuntime:
    """The agent's image support (``--image_providers docker``): the store, the provisioner
    and the host paths volumes may mount. `prepare` runs in a launch thread."""

    def __init__(
        self,
        work_dir: str,
        registry: str,
        backend: str = "copy",
        allowed_host_paths: Sequence[str] = (),
    ) -> None:
        self.store = ImageStore(registry, os.path.join(work_dir, "images"))
        self.provisioner = Provisioner(os.path.join(work_dir, "provisioner"), backend)
        self.allowed_host_paths = tuple(allowed_host_paths)

    def prepare(
        self,
        container_id: str,
        container: Mapping[str, Any],
        command: Mapping[str, Any],
        sandbox: str,
        executor_env: Mapping[str, str],
        task_env: Mapping[str, str],
        default_user: str | None,
    ) -> dict[str, Any]:
        """Gets the image, builds the container's root filesystem, and returns the launch
        plan for the executor (`launch_plan`). ImageError says why it cannot (whatever went
        wrong: a launch must fail, never hang)."""
        try:
            return self._prepare(
                container_id, container, command, sandbox, executor_env, task_env, default_user
            )
        except ImageError:
            raise
        except Exception as e:  # noqa: BLE001 - an archive can be broken in any way
            self.provisioner.destroy(container_id)
            raise ImageError(f"cannot prepare the image: {type(e).__name__}: {e}") from None

    def _prepare(
        self,
        container_id: str,
        container: Mapping[str, Any],
        command: Mapping[str, Any],
        sandbox: str,
        executor_env: Mapping[str, str],
        task_env: Mapping[str, str],
        default_user: str | None,
    ) -> dict[str, Any]:
        if os.geteuid() != 0:
            raise ImageError("running tasks in images needs an agent running as root")
        problem = container_problem(container)
        if problem is not None:
            raise ImageError(problem)
        name = image_of(container)
        if not name:
            raise ImageError("the container has no image")
        mounts = plan_volumes(container.get("volumes") or [], sandbox, self.allowed_host_paths)
        image = self.store.get(name)
        rootfs = self.provisioner.provision(container_id, image)
        try:
            plan = launch_plan(
                image=image,
                rootfs=rootfs,
                sandbox=sandbox,
                command=command,
                executor_env=executor_env,
                task_env=task_env,
                mounts=mounts,
                default_user=default_user,
            )
        except ImageError:
            self.provisioner.destroy(container_id)
            raise
        if plan["user"] is not None:
            # As for any task: its user owns the sandbox (it writes there).
            os.chown(sandbox, plan["user"][1], plan["user"][2])
        return plan

    def release(self, container_id: str) -> None:
        """Removes a finished container's root filesystem (blocking)."""
        if os.path.lexists(self.provisioner.container_dir(container_id)):
            self.provisioner.destroy(container_id)

    def remove_orphans(self, live: set[str]) -> list[str]:
        """Removes the root filesystems of containers not in ``live`` (after a restart)."""
        orphans = sorted(self.provisioner.containers() - live)
        for container_id in orphans:
            self.provisioner.destroy(container_id)
        return orphans
