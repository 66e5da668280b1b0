"""The launcher of a nested container's command (`butte.agent.nested`), run by the agent as
``python -m butte.agent.containerizer.nested_exec SPEC_JSON`` with the command's stdio as
fds 0-2 (pipes, or a pty's slave end) and a status pipe (``status_fd``)::

    agent ── exec ──> launcher: new session, joins the parent's cgroups, setns() into the
                      namespaces of the parent's task process (pid last but one, mount last)
                        └─ fork ──> command: in the pid namespace too (setns only moves
                                    children), session of its own (the pty's controlling
                                    terminal), the task's credentials, then exec

The mount namespace makes the task's root the command's root (an image task's root
filesystem included): every path after the setns calls (working directory, the program
found through PATH) is looked up inside the container, so nothing may be imported after
them. The launcher writes ``{"pid": N}`` (N as the agent sees it) or ``{"error": "..."}``
to the status pipe once the command runs or failed to start, forwards the polite signals to it, and
exits the way it did, so the agent's wait status is the command's.

SPEC_JSON keys: ``program`` (looked up in the container's PATH), ``argv``, ``env``,
``cwd``, ``target`` (pid whose namespaces to enter),
``namespaces`` (kinds to enter), ``cgroup_procs`` (``cgroup.procs`` files to join),
``uid``/``gid``/``groups`` (None: keep the agent's), ``tty`` (make fd 0 the controlling
terminal), ``status_fd``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

from butte.agent.containerizer import linux

# setns(2) flags by /proc/<pid>/ns name; mnt last: after it /proc is the container's.
NS_FLAGS = {
    "ipc": 0x08000000,
    "uts": 0x04000000,
    "net": linux.CLONE_NEWNET,
    "pid": linux.CLONE_NEWPID,
    "mnt": linux.CLONE_NEWNS,
}
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1)


def _report(fd: int, message: dict[str, Any]) -> None:
    try:
        os.write(fd, json.dumps(message).encode() + b"\n")
        os.close(fd)
    except OSError:
        pass


def enter(spec: dict[str, Any]) -> None:
    """Cgroups, then namespaces of ``spec['target']`` (module docstring)."""
    linux.join_cgroups(spec.get("cgroup_procs") or [])
    target = spec.get("target")
    kinds = [k for k in NS_FLAGS if k in (spec.get("namespaces") or [])]
    handles = [(os.open(f"/proc/{target}/ns/{k}", os.O_RDONLY | os.O_CLOEXEC), k) for k in kinds]
    try:
        for fd, kind in handles:
            linux.setns(fd, NS_FLAGS[kind])
    finally:
        for fd, _ in handles:
            os.close(fd)


def become_command(spec: dict[str, Any]) -> None:
    """In the forked child: session, terminal, directory, credentials, exec."""
    import termios  # before exec only; loaded by the parent already (see main)

    for number in (signal.SIGPIPE, signal.SIGXFSZ, *FORWARDED):
        signal.signal(number, signal.SIG_DFL)
    os.setsid()
    if spec.get("tty"):
        import fcntl

        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    cwd = spec.get("cwd") or "/"
    try:
        os.chdir(cwd)
    except OSError:
        os.chdir("/")  # the sandbox is not mounted in this container's root
    if spec.get("uid") is not None:
        os.setgroups([int(g) for g in spec.get("groups") or [spec["gid"]]])
        os.setgid(int(spec["gid"]))
        os.setuid(int(spec["uid"]))
    argv = [str(a) for a in spec["argv"]]
    env = {str(k): str(v) for k, v in (spec.get("env") or {}).items()}
    os.execvpe(str(spec["program"]), argv, env)


def main() -> int:
    import fcntl  # noqa: F401 - loaded now: after setns(mnt) the host's files are gone
    import termios  # noqa: F401

    spec = json.loads(sys.argv[1])
    os.set_inheritable(spec["status_fd"], False)  # its end must not wait for the command's
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)  # the container may have none
    try:
        enter(spec)
    except OSError as e:
        _report(spec["status_fd"], {"error": f"cannot enter the parent container: {e}"})
        return 126
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    child = os.fork()
    if child == 0:
        os.close(read_end)
        try:
            become_command(spec)
        except BaseException as e:  # noqa: BLE001 - the child must always exit here
            try:
                os.write(write_end, f"{spec['program']}: {e}".encode())
            except OSError:
                pass
        os._exit(127)
    os.close(write_end)
    error = b""
    while chunk := os.read(read_end, 4096):
        error += chunk
    os.close(read_end)
    for fd in (0, 1, 2):  # the command holds them; EOF must follow its end, not ours
        os.dup2(null, fd)
    _report(
        spec["status_fd"], {"error": error.decode(errors="replace")} if error else {"pid": child}
    )
    for number in FORWARDED:
        signal.signal(number, lambda n, _frame: os.kill(child, n))
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        die_like(os.WTERMSIG(status))
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 127


def die_like(number: int) -> None:
    """Ends this process by signal ``number`` (the command's), so that its wait status is
    the command's. SIGKILL and SIGSTOP cannot be given a disposition (signal() refuses
    them) and need none; the others get their default action back, unblocked."""
    if number not in (signal.SIGKILL, signal.SIGSTOP):
        signal.signal(number, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [number])
    os.kill(os.getpid(), number)


if __name__ == "__main__":
    sys.exit(main())
