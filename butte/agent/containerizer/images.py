"""Docker images for the mesos containerizer: a local puller and a content-addressed layer store.

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
  backend uses the layers as they are and the copy backend applies them the same way
  (`butte.agent.containerizer.provisioner`);
* two launches that need the same image at once wait for one unpacking (a lock per layer);
* `ImageStore.prune` (the agent's PRUNE_IMAGES, docs/containers.md "Pruning images") removes
  every layer that no container uses and no excluded image has: a layer is moved to
  ``<work_dir>/images/gc/`` (one rename, so it is either whole in the store or gone from it)
  and then deleted. Launches hold `ImageStore.using` from getting an image until its
  container's use of the layers is recorded, and a prune waits for them (and they for it).

Everything here blocks: the containerizer calls it from its launch threads
(`butte.agent.containerizer.image_runtime`).
"""

from __future__ import annotations

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
import zlib
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import IO, Any

from butte.core.container_info import split_image_name

log = logging.getLogger("butte.agent")

OPAQUE_XATTR = "trusted.overlay.opaque"
WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
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


class SharedLock:
    """A readers-writer lock between launches (shared) and prunes (exclusive). A thread
    that holds it shared may take it shared again; a waiting prune stops new launches from
    starting so that a stream of launches cannot starve it. Taking it exclusive while
    holding it shared deadlocks: nothing here does."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._depth = threading.local()

    @contextmanager
    def shared(self) -> Iterator[None]:
        depth: int = getattr(self._depth, "value", 0)
        if depth == 0:
            with self._cond:
                while self._writer or self._writers_waiting:
                    self._cond.wait()
                self._readers += 1
        self._depth.value = depth + 1
        try:
            yield
        finally:
            self._depth.value = depth
            if depth == 0:
                with self._cond:
                    self._readers -= 1
                    if self._readers == 0:
                        self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writer or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


@dataclass(frozen=True, slots=True)
class Pruned:
    """What one `ImageStore.prune` did, by layer digest (hex): removed, kept because a
    container uses it, kept because an excluded image has it (and no container uses it)."""

    removed: tuple[str, ...] = ()
    in_use: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()


class ImageStore:
    """The local puller and the content-addressed layer store (see the module docstring)."""

    def __init__(self, registry: str, root: str) -> None:
        self.registry = registry
        self.root = root
        self.layers_dir = os.path.join(root, "layers")
        self.staging_dir = os.path.join(root, "staging")
        self.gc_dir = os.path.join(root, "gc")
        self.unpacked = 0  # layers unpacked by this process (a store hit does not count)
        self._lock = threading.Lock()
        self._layer_locks: dict[str, threading.Lock] = {}
        self._images: dict[str, tuple[tuple[int, int], Image]] = {}
        self._use = SharedLock()
        os.makedirs(self.layers_dir, exist_ok=True)
        # Staging left by a crash mid-unpack is garbage: nothing points at it; so are layers
        # a prune had marked (moved out of the store) but not deleted yet.
        for leftover in (self.staging_dir, self.gc_dir):
            shutil.rmtree(leftover, ignore_errors=True)
            os.makedirs(leftover, exist_ok=True)

    def using(self) -> AbstractContextManager[None]:
        """Held by a launch from getting its image until its use of the layers is recorded
        (`butte.agent.containerizer.provisioner`): no prune runs meanwhile."""
        return self._use.shared()

    def get(self, name: str) -> Image:
        """The image ``name``, its layers unpacked (blocking; safe from several threads).
        The layers stay until a prune: hold `using` until the container's use of them is
        recorded."""
        path = self._archive(name)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise ImageError(f"Failed to find image '{name}': no such archive {path}") from None
        key = (st.st_mtime_ns, st.st_size)
        with self._use.shared():
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

    def _archive(self, name: str) -> str:
        try:
            return os.path.join(self.registry, archive_name(name))
        except ValueError as e:
            raise ImageError(str(e)) from None

    def layer_ids(self) -> list[str]:
        """The digests (hex) of the layers in the store."""
        try:
            names = os.listdir(self.layers_dir)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if len(n) == 64 and _is_hex(n))

    def image_layers(self, name: str) -> tuple[str, ...]:
        """The layer digests (hex) of image ``name`` as its archive has it now (the archive's
        manifest and config only: nothing is unpacked). ImageError when there is none."""
        path = self._archive(name)
        try:
            with tarfile.open(path, "r:") as archive:
                members = {m.name: m for m in archive.getmembers()}
                config_name, _ = parse_manifest(
                    _read_member(archive, members, "manifest.json"), name
                )
                config = parse_config(_read_member(archive, members, config_name))
        except FileNotFoundError:
            raise ImageError(f"no such archive {path}") from None
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            raise ImageError(f"cannot read {path}: {e}") from None
        return tuple(d.split(":", 1)[1] for d in config.diff_ids)

    def prune(self, excluded: Sequence[str], in_use: Callable[[], Collection[str]]) -> Pruned:
        """Removes every layer that no container uses and no image of ``excluded`` (names)
        has; logs each one. ``in_use`` gives the layer directories containers use; it is
        asked once no launch is between getting its image and recording its use (`using`),
        and launches wait until the prune is done. Images other than the excluded ones are
        forgotten: the next launch of one reads its archive again and unpacks the layers it
        no longer finds. An excluded image whose archive cannot be read keeps nothing."""
        with self._use.exclusive():
            used = {os.path.basename(os.path.normpath(p)) for p in in_use()}
            kept_for: set[str] = set()
            for name in excluded:
                try:
                    kept_for.update(self.image_layers(name))
                except ImageError as e:
                    log.info("image store: excluded image '%s' keeps no layer: %s", name, e)
            # Only the excluded images are remembered (Mesos' store keeps their metadata); this
            # comes first so that no image is remembered with a layer that a failed removal
            # below has already taken.
            names = set(excluded)
            self._images = {n: v for n, v in self._images.items() if n in names}
            # No launch holds a lock now; locks of removed layers would only accumulate.
            self._layer_locks = {}
            removed, in_use_kept, excluded_kept = [], [], []
            for layer in self.layer_ids():
                if layer in used:
                    in_use_kept.append(layer)
                elif layer in kept_for:
                    excluded_kept.append(layer)
                else:
                    self._remove_layer(layer)
                    removed.append(layer)
        return Pruned(tuple(removed), tuple(in_use_kept), tuple(excluded_kept))

    def _remove_layer(self, layer: str) -> None:
        """Marks the layer (a rename out of the store: a crash leaves it whole or gone) and
        deletes it."""
        marked = os.path.join(self.gc_dir, layer)
        shutil.rmtree(marked, ignore_errors=True)
        os.rename(os.path.join(self.layers_dir, layer), marked)
        size = _tree_size(marked)
        shutil.rmtree(marked, ignore_errors=True)
        log.info("image store: pruned layer %s (%d bytes)", layer, size)

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
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
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


def _tree_size(root: str) -> int:
    """Bytes of the regular files under ``root`` (for the log: what a prune freed)."""
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            try:
                st = os.lstat(os.path.join(directory, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


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


def remove_path(path: str) -> None:
    """Removes a file, link or directory tree (nothing there: nothing to do)."""
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
            remove_path(target)
            os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(0, 0))
        return
    target = _safe_parent(root, path)
    if info.isdir():
        if not os.path.isdir(target) or os.path.islink(target):
            remove_path(target)
            os.mkdir(target, 0o755)
    elif info.isreg():
        remove_path(target)
        source = tar.extractfile(info)
        assert source is not None
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
    elif info.issym():
        if "\x00" in info.linkname:
            raise ImageError(f"symlink '{path}' has a NUL character")
        remove_path(target)
        os.symlink(info.linkname, target)
    elif info.islnk():
        linked = member_path(info.linkname)
        source_path = os.path.join(root, linked)
        if not linked:
            raise ImageError(f"hard link '{path}' has no target")
        _safe_parent(root, linked)
        if not os.path.lexists(source_path):
            raise ImageError(f"hard link '{path}' -> '{info.linkname}': no such entry")
        remove_path(target)
        os.link(source_path, target, follow_symlinks=False)
        return  # the link shares the target's owner and mode
    elif info.isfifo():
        remove_path(target)
        os.mkfifo(target, 0o600)
    else:
        raise ImageError(f"entry '{path}' is a device or special file: refused")
    os.lchown(target, info.uid, info.gid)
    if not info.issym():
        os.chmod(target, info.mode & 0o7777)
