"""The launcher of a nested container's command (`butte.agent.nested`), run by the agent as
``python -m butte.agent.containerizer.nested_exec SPEC_JSON`` with the command's stdio as
fds 0-2 (pipes, or a pty's slave end), a status pipe (``status_fd``) and a go pipe
(``go_fd``)::

    agent ── exec ──> launcher: new session (its leader), waits until the agent has
                      checkpointed it (a byte on the go pipe; EOF: the agent is gone, run
                      nothing), joins the parent's cgroups, setns() into the namespaces of
                      the parent's task process (pid last but one, mount last)
                        └─ fork ──> command: in the pid namespace too (setns only moves
                                    children), a process group of its own in the
                                    launcher's session (the pty's foreground group), the
                                    task's credentials, then exec

The command is no session leader on purpose: the agent's recovery takes every session
leader working in a sandbox for an executor (`butte.agent.containerizer.posix.
find_sandbox_leaders`), and a nested command works in its parent's sandbox. The launcher,
whose session it is, works in ``/``. The agent signals the command through that session
(`butte.agent.nested`).

The mount namespace makes the task's root the command's root (an image task's root
filesystem included): every path after the setns calls (working directory, the program
found through PATH) is looked up inside the container, so nothing may be imported after
them, and the host files the launcher needs (output logs, checkpoint directory) are opened
before. The launcher writes ``{"pid": N}`` (N as the agent sees it) or ``{"error": "..."}``
to the status pipe once the command runs or failed to start, forwards the polite signals to
it, and exits the way it did, so the agent's wait status is the command's.

Outliving the agent (Mesos' I/O switchboard and ``status`` file, as far as butte needs them):
the launcher holds a copy of the agent's ends of the command's output (the pipes' read ends,
or the pty master; ``hold``) without reading them, so the command neither gets SIGPIPE nor
loses its terminal when the agent dies. It watches the agent (a pidfd of ``agent_pid``);
once the agent is gone it copies the command's output to the sandbox's ``stdout``/``stderr``
itself (``logs``), where a restarted agent follows it. When the command has ended it writes
its wait status to ``<checkpoint>/status`` (temp file, fsync, rename), which a restarted
agent reads, since a process that is not its child cannot be waited for.

Input across an agent restart (Mesos' switchboard keeps the command's stdin too): the
launcher also holds the agent's input end (``input``: the stdin pipe's write end, or the pty
master) and serves it on a unix socket, ``<checkpoint>/io`` (`IO_SOCKET`), bound before the
command starts. A client of the launcher's own user connects and sends one byte: ``F``
(fetch) is answered ``F`` with a copy of the input end (SCM_RIGHTS), or ``C`` once the
input is closed; ``E`` (end of input) makes the launcher close its copy of a stdin pipe, so
that the command sees EOF once the agent closed its copy too, and is answered ``K``. A
restarted agent fetches the input end this way and writes to it (and sizes the terminal)
as the agent that launched the command did. Without the socket (it could not be bound) the
launcher holds no input: the agent's copy is then the only one, as before.

SPEC_JSON keys: ``program`` (looked up in the container's PATH), ``argv``, ``env``,
``cwd``, ``target`` (pid whose namespaces to enter),
``namespaces`` (kinds to enter), ``cgroup_procs`` (``cgroup.procs`` files to join),
``uid``/``gid``/``groups`` (None: keep the agent's), ``tty`` (make fd 0 the controlling
terminal), ``status_fd``, ``go_fd``, ``agent_pid``, ``hold`` (``[fd, "STDOUT"|"STDERR"]``
pairs), ``logs`` (``{"STDOUT": path, "STDERR": path}``), ``checkpoint`` (directory or None),
``input`` (the agent's input end, kept and served on `IO_SOCKET`; None: none kept).
"""

from __future__ import annotations

import array  # noqa: F401 - socket.send_fds imports it late, when the host's files are gone
import contextlib
import json
import os
import select
import signal
import socket
import struct
import sys
import time
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
STATUS_FILE = "status"
# The unix socket in the checkpoint directory that serves the command's input end.
IO_SOCKET = "io"
# How long one client of that socket may take to send its request.
IO_REQUEST_TIMEOUT = 1.0
# After the command ended with the agent gone: how long to go on copying output that
# something the command left behind still writes, counted from the last of it.
DRAIN_IDLE = 1.0
CHUNK = 64 * 1024


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
    """In the forked child: process group, terminal, directory, credentials, exec."""
    for number in (signal.SIGPIPE, signal.SIGXFSZ, *FORWARDED):
        signal.signal(number, signal.SIG_DFL)
    os.setpgid(0, 0)
    if spec.get("tty"):
        # The launcher made the pty its session's terminal; the command's group takes the
        # foreground (job control: ^C and SIGWINCH go to it). A background group asking
        # for that gets SIGTTOU unless it ignores it meanwhile.
        signal.signal(signal.SIGTTOU, signal.SIG_IGN)
        os.tcsetpgrp(0, os.getpid())
        signal.signal(signal.SIGTTOU, signal.SIG_DFL)
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


def wait_status(raw: int) -> int:
    """The wait status the agent reports for a raw waitpid(2) status: ``code << 8`` for an
    exit, the signal number for a death by signal (no core-dump bit), as the agent works it
    out from its own child's return code."""
    if os.WIFSIGNALED(raw):
        return os.WTERMSIG(raw)
    if os.WIFEXITED(raw):
        return os.WEXITSTATUS(raw) << 8
    return raw


def write_status(directory_fd: int, status: int) -> None:
    """Writes ``status`` as the ``status`` file of the directory ``directory_fd``
    atomically (temp file, fsync, rename, fsync of the directory). By directory fd: after
    setns(mnt) the host's path to it is gone."""
    temporary = STATUS_FILE + ".tmp"
    fd = os.open(
        temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644, dir_fd=directory_fd
    )
    try:
        os.write(fd, b"%d\n" % status)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temporary, STATUS_FILE, src_dir_fd=directory_fd, dst_dir_fd=directory_fd)
    os.fsync(directory_fd)


def _wait_for_go(fd: int) -> bool:
    """True once the agent says go; False at EOF (it died before checkpointing us)."""
    try:
        return bool(os.read(fd, 1))
    except OSError:
        return False


def _open_logs(spec: dict[str, Any]) -> dict[int, int]:
    """Held output fd -> the sandbox log file it is copied to once the agent is gone."""
    logs = spec.get("logs") or {}
    out: dict[int, int] = {}
    for fd, kind in spec.get("hold") or []:
        path = logs.get(kind)
        if path is None:
            continue
        try:
            out[int(fd)] = os.open(
                path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644
            )
        except OSError:
            continue  # output is then lost after the agent's end; the command runs on
    return out


def _copy(source: int, target: int) -> int | None:
    """Copies what ``source`` has now to ``target``: how many bytes; None at its end (EOF,
    or EIO of a pty master whose slave side is closed)."""
    try:
        data = os.read(source, CHUNK)
    except BlockingIOError:
        return 0
    except OSError:
        return None
    if not data:
        return None
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(target, view) :]
        except OSError:
            break  # a full disk: the output is dropped, not the command
    return len(data)


class InputKeeper:
    """The command's input end, kept for the agent and handed to it on `IO_SOCKET` (module
    docstring). ``tty``: the end is the pty master, which is the output's too and never
    closed here."""

    def __init__(self, input_fd: int | None, tty: bool, checkpoint: int | None) -> None:
        self.input_fd = input_fd
        self.tty = tty
        self.checkpoint = checkpoint
        self.listener: socket.socket | None = None
        if input_fd is not None and (checkpoint is None or not self._listen(checkpoint)):
            self.close_input()  # nobody could fetch it: the agent's copy is the only one

    def _listen(self, checkpoint: int) -> bool:
        with contextlib.suppress(OSError):
            os.unlink(IO_SOCKET, dir_fd=checkpoint)  # of an earlier container of that id
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        # By the directory's fd: its path may be longer than a socket address may be.
        old = os.umask(0o077)  # the socket hands out a container's input: its owner only
        try:
            listener.bind(f"/proc/self/fd/{checkpoint}/{IO_SOCKET}")
            listener.listen(8)
            listener.setblocking(False)
        except OSError:
            listener.close()
            return False
        finally:
            os.umask(old)
        self.listener = listener
        return True

    def close_input(self) -> None:
        """End of input: a stdin pipe's copy is closed (the command sees EOF once the
        agent's is closed too); a pty master stays, it carries the output."""
        if self.tty:
            return
        fd, self.input_fd = self.input_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    def serve(self) -> None:
        """Answers one client of the socket: only one of this process's user (the agent's)."""
        assert self.listener is not None
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            try:
                conn.settimeout(IO_REQUEST_TIMEOUT)
                size = struct.calcsize("3i")
                _pid, uid, _gid = struct.unpack(
                    "3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, size)
                )
                if uid != os.getuid():
                    return
                request = conn.recv(1)
                if request == b"F":
                    if self.input_fd is None:
                        conn.sendall(b"C")
                    else:
                        socket.send_fds(conn, [b"F"], [self.input_fd])
                elif request == b"E":
                    self.close_input()
                    conn.sendall(b"K")
            except OSError:
                pass  # a client that went away or never said anything

    def finish(self) -> None:
        """The command has ended: nothing more to hand out."""
        if self.listener is None:
            return
        self.listener.close()
        self.listener = None
        if self.checkpoint is not None:
            with contextlib.suppress(OSError):
                os.unlink(IO_SOCKET, dir_fd=self.checkpoint)


class Supervisor:
    """Waits for the command, copying its output once the agent is gone (module docstring),
    and serves the command's input end to the agent (`InputKeeper`)."""

    def __init__(
        self,
        child: int,
        agent_pid: int | None,
        drains: dict[int, int],
        keeper: InputKeeper | None = None,
    ) -> None:
        self.drains = dict(drains)
        self.poller = select.poll()
        self.keeper = keeper
        self.listener_fd: int | None = None
        if keeper is not None and keeper.listener is not None:
            self.listener_fd = keeper.listener.fileno()
            self.poller.register(self.listener_fd, select.POLLIN)
        self.child = child
        self.child_fd = os.pidfd_open(child)
        self.poller.register(self.child_fd, select.POLLIN)
        self.agent_fd: int | None = None
        with contextlib.suppress(OSError):  # the agent is gone already
            self.agent_fd = os.pidfd_open(agent_pid) if agent_pid is not None else None
        self.draining = False
        if self.agent_fd is None:
            self._agent_gone()
        else:
            self.poller.register(self.agent_fd, select.POLLIN)

    def _agent_gone(self) -> None:
        """From now on the output is ours to copy: nobody else reads it any more."""
        if self.agent_fd is not None:
            self.poller.unregister(self.agent_fd)
            os.close(self.agent_fd)
            self.agent_fd = None
        self.draining = True
        for fd in self.drains:
            os.set_blocking(fd, False)
            self.poller.register(fd, select.POLLIN)

    def _step(self, timeout_ms: int | None) -> tuple[bool, bool]:
        """One poll: (the command has ended, output was copied)."""
        ended = copied = False
        for fd, _events in self.poller.poll(timeout_ms):
            if fd == self.child_fd:
                ended = True
            elif fd == self.agent_fd:
                self._agent_gone()
            elif fd == self.listener_fd and self.keeper is not None:
                self.keeper.serve()
            elif fd in self.drains:
                count = _copy(fd, self.drains[fd])
                if count is None:
                    self.poller.unregister(fd)
                    os.close(self.drains.pop(fd))
                elif count:
                    copied = True
        return ended, copied

    def run(self) -> int:
        """The command's raw wait status, once it ended (and its output was copied, if the
        agent is gone)."""
        while not self._step(None)[0]:
            pass
        _, raw = os.waitpid(self.child, 0)
        self.poller.unregister(self.child_fd)
        os.close(self.child_fd)
        if self.listener_fd is not None and self.keeper is not None:
            self.poller.unregister(self.listener_fd)
            self.listener_fd = None
            self.keeper.finish()
        if not self.draining:
            self._step(0)  # the agent may have gone meanwhile: then drain below
        # Until every writer is gone, or nothing came for DRAIN_IDLE (a background process
        # the command left behind holds its output).
        idle_until = time.monotonic() + DRAIN_IDLE
        while self.draining and self.drains and (left := idle_until - time.monotonic()) > 0:
            if self._step(int(left * 1000) + 1)[1]:
                idle_until = time.monotonic() + DRAIN_IDLE
        return raw


def main() -> int:
    import fcntl  # loaded now: after setns(mnt) the host's files are gone
    import termios

    spec = json.loads(sys.argv[1])
    status_fd = int(spec["status_fd"])
    go_fd = spec.get("go_fd")
    held = [int(fd) for fd, _ in spec.get("hold") or []]
    if spec.get("input") is not None:
        held.append(int(spec["input"]))
    # None of them may reach the command: its ends must not wait for it.
    for fd in (status_fd, *held, *([int(go_fd)] if go_fd is not None else [])):
        os.set_inheritable(fd, False)
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)  # the container may have none
    if go_fd is not None:
        go = _wait_for_go(int(go_fd))
        os.close(int(go_fd))
        if not go:
            _report(status_fd, {"error": "the agent went away before the launch"})
            return 126
    drains = _open_logs(spec)
    checkpoint = None
    if spec.get("checkpoint"):
        with contextlib.suppress(OSError):
            checkpoint = os.open(spec["checkpoint"], os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    # Bound before the namespaces are entered: the socket lives in the host's filesystem.
    keeper = InputKeeper(
        None if spec.get("input") is None else int(spec["input"]),
        bool(spec.get("tty")),
        checkpoint,
    )
    try:
        enter(spec)
    except OSError as e:
        _report(status_fd, {"error": f"cannot enter the parent container: {e}"})
        return 126
    if spec.get("tty"):
        # The session's controlling terminal: the launcher leads the session (above).
        with contextlib.suppress(OSError):
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
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
    if error:
        _report(status_fd, {"error": error.decode(errors="replace")})
        os.waitpid(child, 0)
        return 127
    _report(status_fd, {"pid": child})
    for number in FORWARDED:
        signal.signal(number, lambda n, _frame: os.kill(child, n))
    agent = spec.get("agent_pid")
    raw = Supervisor(child, int(agent) if agent is not None else None, drains, keeper).run()
    if checkpoint is not None:
        with contextlib.suppress(OSError):
            write_status(checkpoint, wait_status(raw))
    if os.WIFSIGNALED(raw):
        die_like(os.WTERMSIG(raw))
    return os.waitstatus_to_exitcode(raw) if os.WIFEXITED(raw) else 127


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
