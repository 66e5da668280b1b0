"""Running a task in an image: what the built-in executor starts, as whom, with which mounts.

`ImageRuntime` is the agent's image support (``--image_providers docker``): for a launch it
gets the image from the store (`butte.agent.containerizer.images`), builds the container's
root filesystem (`butte.agent.containerizer.provisioner`) and returns the launch plan
(`launch_plan`: the image's Entrypoint/Cmd/Env/WorkingDir under the task's CommandInfo,
its volumes) that goes to the executor in its environment;
`butte.agent.containerizer.linux` does the mounts and pivot_root. Blocking: the
containerizer calls it from its launch threads. `ImageRuntime.prune` is the agent's
PRUNE_IMAGES (its request checked by `excluded_images`); with ``--image_gc_config``
(`parse_image_gc_config`) a thread of its own prunes whenever the store's file system has less
free space than the configured headroom, as Mesos' automatic image GC does.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from butte.agent.containerizer.images import Image, ImageConfig, ImageError, ImageStore, Pruned
from butte.agent.containerizer.provisioner import Provisioner, overlay_problem
from butte.core.container_info import container_problem, image_of, split_image_name

log = logging.getLogger("butte.agent")

SANDBOX_IN_CONTAINER = "/mnt/mesos/sandbox"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
MAX_EXCLUDED_IMAGES = 1000  # a PRUNE_IMAGES request naming more is refused (400)


def member_id(container_id: str, index: int) -> str:
    """The id the root filesystem of a task group member (the ``index``-th of its group)
    is provisioned under: its executor's container id (a UUID, without dots), a dot, its
    index."""
    return f"{container_id}.{index}"


def owner_of(provisioned: str) -> str:
    """The container (executor) a provisioned root filesystem belongs to (`member_id`)."""
    return provisioned.split(".", 1)[0]


def excluded_images(payload: Any) -> list[str]:
    """The image names of a PRUNE_IMAGES payload (``{"excluded_images": [Image...]}``, or
    None: no payload, nothing excluded). ValueError, with a message fit for a 400, for
    anything else: an image that is not an object, of a type other than DOCKER (butte has
    no APPC store), without a valid Docker name, or too many of them."""
    if payload is None:
        return []
    if not isinstance(payload, Mapping):
        raise ValueError("'prune_images' must be an object")
    images = payload.get("excluded_images")
    if images is None:
        return []
    if not isinstance(images, list):
        raise ValueError("'prune_images.excluded_images' must be a list of Image objects")
    if len(images) > MAX_EXCLUDED_IMAGES:
        raise ValueError(f"more than {MAX_EXCLUDED_IMAGES} excluded images")
    names = []
    for i, image in enumerate(images):
        where = f"prune_images.excluded_images[{i}]"
        if not isinstance(image, Mapping):
            raise ValueError(f"'{where}' must be an Image object")
        kind = image.get("type")
        if kind == "APPC":
            raise ValueError(f"'{where}': APPC images are not supported (only DOCKER)")
        if kind != "DOCKER":
            raise ValueError(f"'{where}.type' must be DOCKER, got {str(kind)[:40]!r}")
        if not isinstance(image.get("cached", True), bool):
            raise ValueError(f"'{where}.cached' must be a boolean")
        docker = image.get("docker")
        if not isinstance(docker, Mapping):
            raise ValueError(f"'{where}.docker' must be an object with a 'name'")
        name = docker.get("name")
        if not isinstance(name, str):
            raise ValueError(f"'{where}.docker.name' must be a string")
        try:
            split_image_name(name)
        except ValueError as e:
            raise ValueError(f"'{where}.docker.name': {e}") from None
        names.append(str(name))
    return names


def launch_argv(config: ImageConfig, command: Mapping[str, Any]) -> tuple[str, list[str]]:
    """(program, argv) of a task in an image, by the table of Mesos' docker runtime
    isolator (``getLaunchCommand``): ``shell`` runs ``/bin/sh -c value``; otherwise a
    ``value`` is the program with ``arguments`` as its whole argv (the image's Entrypoint
    and Cmd do not apply). Without a value the image decides the program: its Entrypoint,
    followed by the task's ``arguments`` or else by its Cmd; with no Entrypoint, ``Cmd[0]``,
    followed by the task's ``arguments`` or else by the rest of its Cmd."""
    if command.get("shell", True):
        value = command.get("value")
        if not value:
            raise ImageError("a CommandInfo with shell=true needs a value")
        return "/bin/sh", ["/bin/sh", "-c", str(value)]
    arguments = [str(a) for a in command.get("arguments") or []]
    value = command.get("value")
    if value:
        return str(value), arguments or [str(value)]
    if config.entrypoint:
        argv = [*config.entrypoint, *(arguments or config.cmd)]
    elif config.cmd:
        # Cmd[0] stays the program: the task's arguments replace only the rest of Cmd.
        argv = [config.cmd[0], *(arguments or config.cmd[1:])]
    else:
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
    in_sandbox: bool = False  # a sandbox path: made (as a directory) when missing


def plan_volumes(
    volumes: Sequence[Mapping[str, Any]],
    sandbox: str,
    allowed_host_paths: Sequence[str],
    parent: str | None = None,
) -> list[Mount]:
    """The bind mounts of ``ContainerInfo.volumes`` (checked by
    `butte.core.container_info.volume_problem` first): a relative ``container_path`` lies
    in the sandbox (``/mnt/mesos/sandbox``); a relative host path or a SANDBOX_PATH source
    is in the sandbox, or for a PARENT one in ``parent`` (a task group member's executor's
    sandbox); an absolute host path must lie under one of ``allowed_host_paths``
    (``--allowed_host_path_volumes``)."""
    mounts = []
    for volume in volumes:
        target = str(volume["container_path"])
        if not target.startswith("/"):
            target = f"{SANDBOX_IN_CONTAINER}/{target}"
        source = volume.get("source")
        in_sandbox = True
        if source is not None and source.get("type") == "SANDBOX_PATH":
            sandbox_path = source["sandbox_path"]
            base = parent if parent and sandbox_path.get("type") == "PARENT" else sandbox
            host = os.path.join(base, str(sandbox_path["path"]).lstrip("/"))
        else:
            path = source["host_path"]["path"] if source is not None else volume["host_path"]
            host = str(path)
            if not host.startswith("/"):
                # A relative host path is a SANDBOX_PATH (SELF) volume, as in Mesos.
                host = os.path.join(sandbox, host)
            elif not any(_under(host, prefix) for prefix in allowed_host_paths):
                allowed = ", ".join(allowed_host_paths) or "none"
                raise ImageError(
                    f"host path '{host}' is not allowed (--allowed_host_path_volumes: {allowed})"
                )
            else:
                in_sandbox = False
        mounts.append(
            Mount(os.path.normpath(host), os.path.normpath(target), _readonly(volume), in_sandbox)
        )
    return mounts


def make_volume_sources(mounts: Sequence[Mount], sandbox: str) -> None:
    """Creates the missing sandbox directories that volumes mount, owned by the sandbox's
    owner (as Mesos' ``volume/sandbox_path`` isolator; an existing one is left as it is),
    and checks that every other source exists: a launch fails here, in the agent, rather
    than in the executor. ImageError says why not."""
    for mount in mounts:
        if mount.in_sandbox and not os.path.lexists(mount.source):
            if not _under(os.path.realpath(mount.source), os.path.realpath(sandbox)):
                # A symlink in the sandbox (a fetched archive's) points elsewhere.
                raise ImageError(f"volume path {mount.source} leads out of the sandbox")
            owner = os.stat(sandbox)
            made = []
            path = mount.source
            while not os.path.lexists(path) and _under(path, sandbox):
                made.append(path)
                path = os.path.dirname(path)
            try:
                for directory in reversed(made):
                    os.mkdir(directory)
                    os.chown(directory, owner.st_uid, owner.st_gid)
            except OSError as e:
                raise ImageError(
                    f"cannot create the volume's directory {mount.source} in the sandbox: "
                    f"{e.strerror or e}"
                ) from None
        if not os.path.exists(mount.source):
            raise ImageError(f"volume host path {mount.source} does not exist")


def _readonly(volume: Mapping[str, Any]) -> bool:
    return volume.get("mode", "RW") == "RO"


def _under(path: str, prefix: str) -> bool:
    prefix = os.path.normpath(prefix)
    path = os.path.normpath(path)
    return path == prefix or path.startswith(prefix.rstrip("/") + "/")


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
    # The image's User is not used (Mesos' docker runtime isolator only warns about it,
    # `ImageRuntime.prepare`): the task runs as its CommandInfo's or framework's user.
    user_spec = default_user or ""
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
class ImageGcConfig:
    """``--image_gc_config`` (Mesos' ``ImageGcConfig``): every ``interval`` seconds, when the
    store's file system is fuller than ``1 - headroom``, prune all but ``excluded``."""

    headroom: float
    interval: float
    excluded: tuple[str, ...] = ()


def parse_image_gc_config(text: str) -> ImageGcConfig:
    """``--image_gc_config``: Mesos' JSON (``image_disk_headroom`` from 0.0 to 1.0,
    ``image_disk_watch_interval`` ``{"nanoseconds": N}``, optional ``excluded_images``), given
    as the JSON itself or as the path of a file holding it. ValueError says what is wrong."""
    if not text.lstrip().startswith(("{", "[")):
        path = text.removeprefix("file://")
        try:
            with open(path) as f:
                text = f.read(1 << 20)
        except OSError as e:
            raise ValueError(f"--image_gc_config: cannot read {path}: {e.strerror}") from None
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise ValueError(f"--image_gc_config is not JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError("--image_gc_config must be a JSON object")
    unknown = set(raw) - {"image_disk_headroom", "image_disk_watch_interval", "excluded_images"}
    if unknown:
        raise ValueError(f"--image_gc_config: unknown field(s) {sorted(unknown)}")
    headroom = raw.get("image_disk_headroom")
    if isinstance(headroom, bool) or not isinstance(headroom, int | float):
        raise ValueError("--image_gc_config: 'image_disk_headroom' (a number) is required")
    if not 0.0 <= headroom <= 1.0:
        raise ValueError("--image_gc_config: 'image_disk_headroom' must be between 0.0 and 1.0")
    interval = raw.get("image_disk_watch_interval")
    nanoseconds = interval.get("nanoseconds") if isinstance(interval, dict) else None
    if isinstance(nanoseconds, bool) or not isinstance(nanoseconds, int):
        raise ValueError(
            "--image_gc_config: 'image_disk_watch_interval' ({\"nanoseconds\": N}) is required"
        )
    if not 0 < nanoseconds <= 2**63 - 1:
        raise ValueError("--image_gc_config: 'image_disk_watch_interval' must be positive")
    try:
        excluded = excluded_images({"excluded_images": raw.get("excluded_images")})
    except ValueError as e:
        raise ValueError(f"--image_gc_config: {e}") from None
    return ImageGcConfig(float(headroom), nanoseconds / 1e9, tuple(excluded))


def disk_usage(path: str) -> float:
    """The used fraction (0.0 to 1.0) of the file system holding ``path``."""
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) / st.f_blocks if st.f_blocks else 0.0


@dataclass(frozen=True, slots=True)
class ImageOptions:
    """--docker_registry, --image_provisioner_backend, --allowed_host_path_volumes,
    --image_gc_config."""

    registry: str
    backend: str = "copy"
    allowed_host_paths: tuple[str, ...] = ()
    gc: ImageGcConfig | None = None


def image_options(
    providers: Sequence[str] | None,
    registry: str | None,
    backend: str | None,
    allowed_host_paths: Sequence[str],
    work_dir: str,
    gc_config: str | None = None,
) -> ImageOptions | None:
    """The image options of the agent's flags (None: no --image_providers); ValueError for
    a combination that cannot work. Without a backend: overlay where it can be mounted
    under ``work_dir``, else copy."""
    if not providers:
        if registry or backend or gc_config:
            raise ValueError(
                "--docker_registry, --image_provisioner_backend and --image_gc_config need "
                "--image_providers"
            )
        return None
    gc = parse_image_gc_config(gc_config) if gc_config is not None else None
    if not registry:
        raise ValueError("--image_providers docker needs --docker_registry DIR (a local directory)")
    if registry.startswith(("http://", "https://")) or not os.path.isdir(registry):
        raise ValueError(f"--docker_registry {registry}: not a local directory")
    if backend is None or backend == "overlay":
        problem = overlay_problem(work_dir)
        if problem is not None and backend == "overlay":
            raise ValueError(f"--image_provisioner_backend overlay: {problem}")
        backend = "copy" if problem is not None else "overlay"
    return ImageOptions(os.path.abspath(registry), backend, tuple(allowed_host_paths), gc)


class ImageRuntime:
    """The agent's image support (``--image_providers docker``): the store, the provisioner
    and the host paths volumes may mount. `prepare` runs in a launch thread; with ``gc``
    (``--image_gc_config``) a daemon thread checks the store's disk every interval."""

    def __init__(
        self,
        work_dir: str,
        registry: str,
        backend: str = "copy",
        allowed_host_paths: Sequence[str] = (),
        gc: ImageGcConfig | None = None,
    ) -> None:
        self.store = ImageStore(registry, os.path.join(work_dir, "images"))
        self.provisioner = Provisioner(os.path.join(work_dir, "provisioner"), backend)
        self.allowed_host_paths = tuple(allowed_host_paths)
        self.gc = gc
        self._gc_stop = threading.Event()
        if gc is not None:
            threading.Thread(target=self._gc_loop, args=(gc,), name="image-gc", daemon=True).start()

    def _gc_loop(self, gc: ImageGcConfig) -> None:
        while not self._gc_stop.wait(gc.interval):
            try:
                self.gc_check(gc)
            except Exception:  # noqa: BLE001 - the check runs again at the next interval
                log.exception("image GC failed")

    def gc_check(self, gc: ImageGcConfig) -> Pruned | None:
        """One automatic image GC check (Mesos' ``checkImageDiskUsage``): prunes, keeping
        ``gc.excluded``, when the store's file system has less than ``gc.headroom`` free."""
        usage = disk_usage(self.store.root)
        log.info("image store disk usage: %.2f%%", 100 * usage)
        if usage + gc.headroom <= 1.0:
            return None
        log.info(
            "image store disk usage exceeds %.2f%%: image GC is triggered",
            100 * (1.0 - gc.headroom),
        )
        return self.prune(gc.excluded)

    def close(self) -> None:
        """Stops the automatic image GC (the thread ends at its next wake-up)."""
        self._gc_stop.set()

    def prepare(
        self,
        container_id: str,
        container: Mapping[str, Any],
        command: Mapping[str, Any],
        sandbox: str,
        executor_env: Mapping[str, str],
        task_env: Mapping[str, str],
        default_user: str | None,
        parent: str | None = None,
    ) -> dict[str, Any]:
        """Gets the image, builds the container's root filesystem, and returns the launch
        plan for the executor (`launch_plan`). ``parent``: for a task group member (whose
        ``sandbox`` is its own directory), its executor's sandbox, where its PARENT volumes
        are. ImageError says why it cannot (whatever went wrong: a launch must fail, never
        hang)."""
        try:
            return self._prepare(
                container_id,
                container,
                command,
                sandbox,
                executor_env,
                task_env,
                default_user,
                parent,
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
        parent: str | None,
    ) -> dict[str, Any]:
        if os.geteuid() != 0:
            raise ImageError("running tasks in images needs an agent running as root")
        problem = container_problem(container, in_group=parent is not None)
        if problem is not None:
            raise ImageError(problem)
        name = image_of(container)
        if not name:
            raise ImageError("the container has no image")
        volumes = container.get("volumes") or []
        mounts = plan_volumes(volumes, sandbox, self.allowed_host_paths, parent)
        # A prune waits until the root filesystem records the layers it uses (and this launch
        # waits for a prune under way): a layer being provisioned is never removed.
        with self.store.using():
            image = self.store.get(name)
            rootfs = self.provisioner.provision(container_id, image)
        if image.config.user:
            log.warning(
                "Container user '%s' is not supported yet for container %s: it runs as its "
                "task's user",
                image.config.user,
                container_id,
            )
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
        try:
            # A member's sources may be in its executor's sandbox, which holds its own.
            make_volume_sources(mounts, parent or sandbox)
        except ImageError:
            self.provisioner.destroy(container_id)
            raise
        return plan

    def release(self, container_id: str) -> None:
        """Removes a finished container's root filesystem and its task group members'
        (`member_id`; blocking)."""
        for provisioned in self.provisioner.containers():
            if owner_of(provisioned) == container_id:
                self.provisioner.destroy(provisioned)

    def prune(self, excluded: Sequence[str]) -> Pruned:
        """PRUNE_IMAGES: removes from the store every layer that no container's root
        filesystem uses and no image named in ``excluded`` has (blocking; waits for the
        launches getting an image, which then wait for it)."""
        pruned = self.store.prune(excluded, self.provisioner.layers_in_use)
        log.info(
            "PRUNE_IMAGES: removed %d layer(s); kept %d used by containers and %d of the "
            "excluded images (%s)",
            len(pruned.removed),
            len(pruned.in_use),
            len(pruned.excluded),
            ", ".join(excluded) or "none",
        )
        return pruned

    def remove_orphans(self, live: set[str]) -> list[str]:
        """Removes the root filesystems of containers not in ``live`` (after a restart),
        a task group member's with its executor's container."""
        orphans = sorted(c for c in self.provisioner.containers() if owner_of(c) not in live)
        for container_id in orphans:
            self.provisioner.destroy(container_id)
        return orphans
