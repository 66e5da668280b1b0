"""Linux process set-up for containers: joining cgroups, namespaces (through ctypes: Python
3.11 has no ``os.unshare``), a private /tmp, a fresh /proc, loopback up, switching user.

`spawn_isolated` is how the built-in executor starts a task that needs any of it (a fork,
where a plain task is started with ``posix_spawn``)::

    executor ── fork ──> holder (own process group; unshares pid/mnt/net namespaces)
                           └─ fork ──> task: pid 1 of the new pid namespace, /proc
                                       mounted fresh, /tmp = <sandbox>/tmp, user switched,
                                       then exec

The holder stays outside the new pid namespace, waits for the task and exits the way it
did (same status, or the same signal), so the executor reports the task's own end. It
forwards SIGTERM to the task; since the kernel drops signals without a handler that reach a
pid namespace's init, a task that neither catches nor ignores SIGTERM is ended with SIGKILL
at once, as SIGTERM would have ended it (`ends_by_default`). Errors in the child before
exec come back through a pipe and fail the spawn (TASK_FAILED with the reason).

The command launcher needs no holder: `fork_into_new_pid_namespace` makes its child pid 1 of
a new pid namespace while the launcher itself stays in its own.

Imports are kept light: the executor loads this module only for isolated tasks.
"""

from __future__ import annotations

import _signal  # type: ignore[import-not-found]  # signal's C module: no stub in typeshed
import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ctypes
    from collections.abc import Sequence

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2
# pivot_root has no libc wrapper: its system call number per architecture.
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
OLD_ROOT = ".butte-old-root"
SANDBOX_IN_CONTAINER = "/mnt/mesos/sandbox"
# Host device nodes a container's /dev gets (bind-mounted onto a fresh tmpfs).
_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")
# Host files an image task sees read-only (it shares the host's network).
_HOST_FILES = ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf")
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1

_libc: ctypes.CDLL | None = None


def is_root() -> bool:
    return os.geteuid() == 0


def libc() -> ctypes.CDLL:
    """libc through ctypes, loaded once (errno kept for the caller)."""
    global _libc
    if _libc is None:
        import ctypes

        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def preload() -> None:
    """Loads ctypes and libc now (the zygote does, so its executors share them), and looks
    up the calls forked children make: ctypes builds a function object at a name's first
    use, which each child would otherwise do again on pages of its own."""
    loaded = libc()
    for name in ("unshare", "setns", "mount", "umount2"):
        getattr(loaded, name)


def checked(result: int, what: str) -> int:
    """``result`` of a libc call made through `libc`; raises OSError with its errno, naming
    ``what``, when it failed (returned -1)."""
    if result < 0:
        import ctypes

        number = ctypes.get_errno()
        raise OSError(number, f"{what}: {os.strerror(number)}")
    return result


def unshare(flags: int) -> None:
    checked(libc().unshare(flags), "unshare")


def setns(fd: int, kind: int) -> None:
    checked(libc().setns(fd, kind), "setns")


# The caller's own pid namespace, opened at the first `fork_into_new_pid_namespace`.
_own_pid_namespace: int | None = None


def fork_into_new_pid_namespace() -> int:
    """``os.fork`` whose child is pid 1 of a pid namespace of its own, while the caller stays
    where it is: no holder process in between (the command launcher's way). Returns 0 in the
    child, the child's pid (as the caller sees it) in the caller.

    unshare(CLONE_NEWPID) only changes where the caller's *next* children start, and only the
    first of them may be that namespace's init; another unshare fails (EINVAL) while the
    caller's children namespace is not its own. So the caller sets it back with setns on its
    own namespace right after the fork, ready for the next one."""
    global _own_pid_namespace
    if _own_pid_namespace is None:
        _own_pid_namespace = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    unshare(CLONE_NEWPID)
    try:
        pid = os.fork()
    except BaseException:
        setns(_own_pid_namespace, CLONE_NEWPID)
        raise
    if pid != 0:
        setns(_own_pid_namespace, CLONE_NEWPID)
    return pid


def spawn_in_namespaces_of(
    pid: int,
    kinds: Sequence[str],
    program: str,
    argv: list[str],
    env: dict[str, str],
    *,
    search: bool,
    cwd: str | None,
    stdout_fd: int | None,
    user: tuple[str, int, int] | None = None,
) -> int:
    """Starts a probe (health check, check) in the namespaces ``kinds`` (network, mount) of
    task process ``pid``, in a process group of its own, as ``user`` (name, uid, gid) if
    given: what it reaches on 127.0.0.1 and sees in /tmp is what the task does. Returns its
    pid."""
    flags = {"net": CLONE_NEWNET, "mnt": CLONE_NEWNS}
    handles = [
        (os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC), flags[kind])
        for kind in kinds
        if kind in flags
    ]
    try:
        child = os.fork()
        if child == 0:
            try:
                _signal.set_wakeup_fd(-1)
                os.setpgid(0, 0)
                for fd, kind in handles:
                    setns(fd, kind)
                null = os.open(os.devnull, os.O_WRONLY)
                os.dup2(stdout_fd if stdout_fd is not None else null, 1)
                if cwd:
                    os.chdir(cwd)
                if user is not None:
                    switch_user(*user)
                for number in (_signal.SIGPIPE, _signal.SIGXFSZ, _signal.SIGTERM, _signal.SIGINT):
                    _signal.signal(number, _signal.SIG_DFL)
                if search:  # by hand: the host's library may be out of sight (an image)
                    program = _search_path(program, env.get("PATH", os.defpath))
                os.execve(program, argv, env)
            except BaseException as e:  # noqa: BLE001 - the child must always exit here
                try:
                    os.write(2, f"probe: {e}\n".encode())
                except OSError:
                    pass
            os._exit(127)
    finally:
        for fd, _ in handles:
            os.close(fd)
    try:
        os.setpgid(child, child)
    except OSError:
        pass
    return child


def mount(source: str | None, target: str, fstype: str | None, flags: int) -> None:
    def enc(s: str | None) -> bytes | None:
        return None if s is None else s.encode()

    result = libc().mount(enc(source), enc(target), enc(fstype), flags, None)
    checked(result, f"mount {target}")


def mount_data(source: str, target: str, fstype: str, flags: int, data: str) -> None:
    """mount(2) with file-system options (overlay's lowerdir=..., tmpfs' mode=...)."""
    result = libc().mount(source.encode(), target.encode(), fstype.encode(), flags, data.encode())
    checked(result, f"mount {fstype} on {target}")


def umount(target: str, *, detach: bool = False) -> None:
    checked(libc().umount2(target.encode(), MNT_DETACH if detach else 0), f"umount {target}")


def pivot_root(new_root: str, put_old: str) -> None:
    number = _SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise OSError(f"pivot_root: unknown system call number on {os.uname().machine}")
    checked(libc().syscall(number, new_root.encode(), put_old.encode()), "pivot_root")


def makedirs_in_root(path: str) -> None:
    """``mkdir -p`` that follows symlinks, dangling ones too, as the path resolves from the
    current root: after pivot_root an image's symlink (``/mnt -> /elsewhere``) leads to a
    directory made inside the image, as Docker does, never onto the host."""
    import stat

    parts = [p for p in path.split("/") if p]
    current, hops = "/", 0
    while parts:
        name = parts.pop(0)
        if name == ".":
            continue
        if name == "..":
            current = os.path.dirname(current) or "/"
            continue
        candidate = os.path.join(current, name)
        try:
            mode = os.lstat(candidate).st_mode
        except FileNotFoundError:
            os.mkdir(candidate, 0o755)
            current = candidate
            continue
        if stat.S_ISLNK(mode):
            hops += 1
            if hops > 40:
                raise OSError(f"too many symlinks in {path}")
            target = os.readlink(candidate)
            if target.startswith("/"):
                current = "/"
            parts[:0] = [p for p in target.split("/") if p]
            continue
        if not stat.S_ISDIR(mode):
            raise OSError(f"{candidate} is not a directory (making {path})")
        current = candidate


def _bind(source: str, target: str, readonly: bool) -> None:
    """Bind-mounts ``source`` (a path under the old root) onto ``target`` in the new root,
    creating the target (a directory, or an empty file for a file)."""
    if os.path.isdir(source):
        makedirs_in_root(target)
    else:
        makedirs_in_root(os.path.dirname(target))
        if not os.path.lexists(target):
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644))
    mount(source, target, None, MS_BIND | MS_REC)
    if readonly:
        mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)


def _container_dev(old_root: str) -> None:
    """A minimal /dev: a tmpfs with the host's null, zero, full, random, urandom and tty
    bound in, the usual symlinks, a private devpts and a /dev/shm."""
    makedirs_in_root("/dev")
    mount_data("tmpfs", "/dev", "tmpfs", MS_NOSUID, "mode=755,size=1024k")
    for name in _DEVICES:
        _bind(f"{old_root}/dev/{name}", f"/dev/{name}", False)
    for name, target in (
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
        ("ptmx", "pts/ptmx"),
    ):
        os.symlink(target, f"/dev/{name}")
    os.mkdir("/dev/pts")
    try:
        mount_data(
            "devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666"
        )
    except OSError:
        pass  # no terminals for this container; everything else works
    os.mkdir("/dev/shm")
    mount_data("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=65536k")


def enter_rootfs(plan: dict) -> None:
    """In a new mount namespace (mounts already private): makes ``plan["rootfs"]`` the root
    with pivot_root, with a fresh /proc, a minimal /dev, a read-only /sys, the sandbox at
    /mnt/mesos/sandbox, the host's /etc/hosts, /etc/hostname and /etc/resolv.conf read-only
    and the volumes' bind mounts, then drops the host's file system.
    Mount targets are created after the pivot, so a symlink in the image resolves inside
    the image and never onto the host; sources are resolved on the host before it."""
    rootfs = plan["rootfs"]
    sandbox = os.path.realpath(plan["sandbox"])
    binds = [(os.path.realpath(src), dst, bool(ro)) for src, dst, ro in plan["mounts"]]
    host_files = [(os.path.realpath(n), n) for n in _HOST_FILES if os.path.isfile(n)]
    mount(rootfs, rootfs, None, MS_BIND | MS_REC)  # pivot_root needs a mount point
    os.chdir(rootfs)
    try:
        os.mkdir(OLD_ROOT, 0o700)
    except FileExistsError:
        pass
    pivot_root(".", OLD_ROOT)
    os.chdir("/")
    old = "/" + OLD_ROOT
    makedirs_in_root("/proc")
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    _container_dev(old)
    makedirs_in_root("/sys")
    try:
        mount("sysfs", "/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC)
    except OSError:
        _bind(f"{old}/sys", "/sys", True)
    _bind(old + sandbox, SANDBOX_IN_CONTAINER, False)
    for source, name in host_files:  # the host's network: its names and resolver, as Docker
        _bind(old + source, name, True)
    for source, target, readonly in binds:
        if not os.path.exists(old + source):
            raise OSError(f"volume host path {source} does not exist")
        _bind(old + source, target, readonly)
    umount(old, detach=True)
    os.rmdir(old)
    cwd = plan.get("cwd") or "/"
    makedirs_in_root(cwd)
    os.chdir(cwd)


def join_cgroups(procs_files: Sequence[str], oom_score_adj: int | None = None) -> None:
    """Moves the calling process into each group (its children then start there), and sets
    its ``oom_score_adj`` (inherited by its children) when given."""
    if oom_score_adj is not None:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(oom_score_adj))
    for path in procs_files:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            # "0" is the writer itself, in v1 and v2: also right inside a new pid namespace,
            # where getpid() would not be the pid the kernel looks up.
            os.write(fd, b"0")
        finally:
            os.close(fd)


def loopback_up() -> None:
    """Brings ``lo`` up in the calling process's (new) network namespace."""
    import fcntl
    import socket
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(s.fileno(), _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


def private_tmp(sandbox: str, uid: int | None, gid: int | None) -> None:
    """In a new mount namespace (mounts already private): binds ``<sandbox>/tmp`` on /tmp.
    A sandbox that itself lies under /tmp (a work dir in /tmp) would vanish behind it, so it
    is bound back at its own path inside the new /tmp: MESOS_SANDBOX stays valid."""
    tmp = os.path.join(sandbox, "tmp")
    os.makedirs(tmp, exist_ok=True)
    os.chmod(tmp, 0o1777)
    if uid is not None:
        os.chown(tmp, uid, gid if gid is not None else -1)
    host_tmp = os.path.realpath("/tmp")
    real = os.path.realpath(sandbox)
    shadowed = real.startswith(host_tmp.rstrip("/") + "/")
    handle = os.open(real, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) if shadowed else None
    try:
        mount(tmp, "/tmp", None, MS_BIND | MS_REC)
        if handle is not None:
            inside = os.path.join("/tmp", os.path.relpath(real, host_tmp))
            os.makedirs(inside, exist_ok=True)
            mount(f"/proc/self/fd/{handle}", inside, None, MS_BIND)
    finally:
        if handle is not None:
            os.close(handle)


def resolve_user(name: str) -> tuple[int, int, str]:
    """(uid, gid, home) of a user; KeyError with a clear message when unknown."""
    import pwd

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise KeyError(f"user '{name}' does not exist on this agent") from None
    return entry.pw_uid, entry.pw_gid, entry.pw_dir


def switch_user(name: str, uid: int, gid: int) -> None:
    """Drops to ``name`` (supplementary groups, gid, then uid)."""
    os.initgroups(name, gid)
    os.setgid(gid)
    os.setuid(uid)


def enter_namespaces(namespaces: Sequence[str], sandbox: str, user: tuple | None) -> None:
    """The container set-up of a process that stays its own pid (a custom executor): a new
    mount namespace with a private /tmp, a loopback-only network namespace, and a pid
    namespace for its children."""
    flags = 0
    if "mnt" in namespaces:
        flags |= CLONE_NEWNS
    if "net" in namespaces:
        flags |= CLONE_NEWNET
    if "pid" in namespaces:
        flags |= CLONE_NEWPID
    if flags:
        unshare(flags)
    if "mnt" in namespaces:
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        if "tmp" in namespaces:
            private_tmp(sandbox, *(user[1:3] if user else (None, None)))
    if "net" in namespaces:
        loopback_up()


def spawn_isolated(
    program: str,
    argv: list[str],
    env: dict[str, str],
    *,
    search: bool,
    cwd: str | None,
    sandbox: str,
    stdio: tuple[str, str] | None,
    namespaces: Sequence[str],
    user: tuple[str, int, int, str] | None,
    rootfs: dict | None = None,
) -> int:
    """Starts a task as described in the module docstring; returns the holder's pid (the
    task's process group). ``user`` is (name, uid, gid, home) or None; ``stdio`` the
    stdout/stderr files of a task group member (None: inherit); ``rootfs`` the launch plan
    of a task in an image (`butte.agent.containerizer.image_runtime.launch_plan`: `enter_rootfs`,
    then its user)."""
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        os.close(read_end)
        try:
            _holder(
                program, argv, env, search, cwd, sandbox, stdio, namespaces, user, write_end, rootfs
            )
        except BaseException as e:  # noqa: BLE001 - the child must always exit here
            _report(write_end, e)
        os._exit(127)
    os.close(write_end)
    try:
        os.setpgid(pid, pid)  # also done in the child: whichever runs first
    except OSError:
        pass
    return started(pid, read_end)


# Signals whose default action does not end a process (ignore, stop, continue).
_NOT_ENDING = frozenset(
    (
        _signal.SIGCHLD,
        _signal.SIGURG,
        _signal.SIGWINCH,
        _signal.SIGCONT,
        _signal.SIGSTOP,
        _signal.SIGTSTP,
        _signal.SIGTTIN,
        _signal.SIGTTOU,
    )
)


def ends_by_default(pid: int, number: int, proc: int | None = None) -> bool:
    """Whether signal ``number`` would end process ``pid`` by its default action: one that
    ends a process by default and that ``pid`` neither catches nor ignores (``SigCgt`` and
    ``SigIgn`` in its ``status`` under /proc, or under the /proc directory open as
    ``proc``). False if that cannot be read. A pid namespace's init gets no signal it has no
    handler for, so whoever signals one on behalf of a kill uses this to end it as the
    signal would have ended another process."""
    if number in _NOT_ENDING or not 0 < number <= 64:
        return False
    try:
        fd = os.open(
            f"{pid}/status" if proc is not None else f"/proc/{pid}/status",
            os.O_RDONLY | os.O_CLOEXEC,
            dir_fd=proc,
        )
    except OSError:
        return False
    try:
        status = os.read(fd, 1 << 14)
    except OSError:
        return False
    finally:
        os.close(fd)
    bit = 1 << (number - 1)
    for line in status.splitlines():
        if line.startswith((b"SigIgn:", b"SigCgt:")) and int(line.split()[1], 16) & bit:
            return False
    return True


def started(pid: int, read_end: int) -> int:
    """``pid`` once the child has exec'd (its close-on-exec error pipe ``read_end`` reads
    empty); if it wrote why it could not start, reaps it and raises that as OSError."""
    try:
        error = b""
        while chunk := os.read(read_end, 4096):
            error += chunk
    finally:
        os.close(read_end)
    if error:
        os.waitpid(pid, 0)
        raise OSError(error.decode(errors="replace"))
    return pid


def _report(fd: int, error: BaseException) -> None:
    try:
        os.write(fd, str(error).encode() or type(error).__name__.encode())
    except OSError:
        pass


def _holder(
    program: str,
    argv: list[str],
    env: dict[str, str],
    search: bool,
    cwd: str | None,
    sandbox: str,
    stdio: tuple[str, str] | None,
    namespaces: Sequence[str],
    user: tuple[str, int, int, str] | None,
    error_fd: int,
    rootfs: dict | None = None,
) -> None:
    """The holder process (see the module docstring), a process group of its own."""
    _signal.set_wakeup_fd(-1)  # the executor's wake-up pipe is not ours to write
    # Nothing of the executor's (its agent connection, its epoll) may live on in here.
    os.closerange(3, error_fd)
    os.closerange(error_fd + 1, 1 << 16)
    os.setpgid(0, 0)
    flags = 0
    if "mnt" in namespaces or "pid" in namespaces:
        flags |= CLONE_NEWNS
    if "pid" in namespaces:
        flags |= CLONE_NEWPID
    if "net" in namespaces:
        flags |= CLONE_NEWNET
    # This /proc, opened before the task mounts its own over it in the mount namespace we
    # share: the one where the task's pid is the one we know.
    proc = None
    if "pid" in namespaces:  # close-on-exec: the task must never hold the host's /proc
        proc = os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    if flags:
        unshare(flags)
    if "pid" not in namespaces:
        _become_task(program, argv, env, search, cwd, sandbox, stdio, namespaces, user, rootfs)
        return
    child = os.fork()
    if child == 0:
        try:
            _become_task(program, argv, env, search, cwd, sandbox, stdio, namespaces, user, rootfs)
        except BaseException as e:  # noqa: BLE001
            _report(error_fd, e)
        os._exit(127)
    os.close(error_fd)  # the task holds it until exec; EOF then means success

    stood_in = []  # SIGTERM, once a SIGKILL stood in for it

    def forward(*_: object) -> None:
        # The kernel drops it if the task, its namespace's init, has no handler; it ends the
        # task then, as it would have ended any other process (and its end is reported as
        # by SIGTERM). The kill reaches the task directly too (our process group), so it
        # may have ended and been reaped below before this runs: raising here would turn
        # its exit status into ours, 127.
        try:
            os.kill(child, _signal.SIGTERM)
            if ends_by_default(child, _signal.SIGTERM, proc):
                stood_in.append(_signal.SIGTERM)
                os.kill(child, _signal.SIGKILL)
        except ProcessLookupError:
            pass

    _signal.signal(_signal.SIGTERM, forward)
    _signal.signal(_signal.SIGINT, _signal.SIG_IGN)
    _, status = os.waitpid(child, 0)
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        if number == _signal.SIGKILL and stood_in:
            number = stood_in[0]
        if number != _signal.SIGKILL:  # its disposition cannot be set (nor caught)
            _signal.signal(number, _signal.SIG_DFL)
        os.kill(os.getpid(), number)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 127)


def _become_task(
    program: str,
    argv: list[str],
    env: dict[str, str],
    search: bool,
    cwd: str | None,
    sandbox: str,
    stdio: tuple[str, str] | None,
    namespaces: Sequence[str],
    user: tuple[str, int, int, str] | None,
    rootfs: dict | None = None,
) -> None:
    # Files and the working directory first, by their host paths.
    if stdio is not None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        for target, path in zip((1, 2), stdio, strict=True):
            fd = os.open(path, flags, 0o644)
            if user is not None:
                os.fchown(fd, user[1], user[2])
            os.dup2(fd, target)
            os.close(fd)
    if cwd:
        os.chdir(cwd)
    if "mnt" in namespaces or "pid" in namespaces:
        mount(None, "/", None, MS_REC | MS_PRIVATE)
    if rootfs is not None:
        enter_rootfs(rootfs)  # its own /proc and /tmp
    elif "pid" in namespaces:
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    if "tmp" in namespaces and rootfs is None:
        private_tmp(sandbox, *(user[1:3] if user else (None, None)))
    if "net" in namespaces:
        loopback_up()
    if rootfs is not None and rootfs.get("user"):
        _name, uid, gid, groups, _home = rootfs["user"]
        os.setgroups(groups)
        os.setgid(gid)
        os.setuid(uid)
    elif user is not None:
        switch_user(user[0], user[1], user[2])
        env = {**env, "USER": user[0], "LOGNAME": user[0], "HOME": user[3]}
    for number in (_signal.SIGPIPE, _signal.SIGXFSZ, _signal.SIGTERM, _signal.SIGINT):
        _signal.signal(number, _signal.SIG_DFL)
    if search and rootfs is not None:
        program = _search_path(program, env.get("PATH", ""))
    elif search:
        os.execvpe(program, argv, env)
    os.execve(program, argv, env)


def _search_path(program: str, path: str) -> str:
    """The first executable ``program`` on ``path`` (a name with a slash as it is), searched
    by hand: in an image the host's Python library is gone, and os.execvpe imports from it."""
    if "/" in program:
        return program
    for directory in path.split(":"):
        candidate = f"{directory or '.'}/{program}"
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    raise FileNotFoundError(f"{program}: not found (PATH={path})")
