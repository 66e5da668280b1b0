"""Nested containers with real processes: a real master and agent (cgroups, pid and mount
namespaces), one long-running task started with ``butte run``, and commands run inside it
through the agent's operator API (sessions, attached input, TTYs and window sizes, kill,
wait, remove, bad input) and through ``butte task exec`` / ``butte task attach``, the
interactive one driven through a real pty. Needs root and cgroup v1 (as test_isolation),
except the last test: a task without isolation, on a cluster of its own."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import http.client
import json
import os
import pty
import pwd
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from butte.cli.main import main
from butte.client.operator import OperatorClient, OperatorError
from butte.core.recordio import RecordIOReader
from butte.testing.cluster import ClusterHandle, start_cluster
from butte.testing.require import require

pytestmark = pytest.mark.integration

HIERARCHY = "/sys/fs/cgroup"
CONTROLLERS = ("memory", "cpu", "cpuacct", "freezer")
ISOLATION = "cgroups/cpu,cgroups/mem,namespaces/pid,filesystem/linux"
# The task prints a line every 0.3 s (for `task attach`) and otherwise sleeps.
TASK = "while true; do echo tick; sleep 0.3; done"
STREAM = {"Content-Type": "application/json", "Accept": "application/recordio"}


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "the tests run as root only (namespaces, cgroups)"
    for controller in CONTROLLERS:
        if not os.path.isfile(f"{HIERARCHY}/{controller}/cgroup.procs"):
            return f"no cgroup v1 {controller} controller under {HIERARCHY}"
    return None


class Task:
    """The running task: ids, its agent's address and a client of the agent."""

    def __init__(self, cluster: ClusterHandle, task_id: str, container: str, agent: str) -> None:
        self.cluster = cluster
        self.task_id = task_id
        self.container = container
        self.address = agent
        self.agent = OperatorClient(agent)

    def nested(self, name: str | None = None) -> dict[str, Any]:
        return {"value": name or uuid.uuid4().hex[:12], "parent": {"value": self.container}}

    def post(self, body: dict[str, Any] | bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        conn = self.connect()
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn.request("POST", "/api/v1", data, headers)
        response = conn.getresponse()
        out = response.status, response.read()
        conn.close()
        return out

    def connect(self) -> http.client.HTTPConnection:
        host, port = self.address.rsplit(":", 1)
        return http.client.HTTPConnection(host, int(port), timeout=60)

    def session(self, cid: dict[str, Any], command: dict[str, Any], **container: Any) -> Session:
        payload: dict[str, Any] = {"container_id": cid, "command": command}
        if container:
            payload["container"] = {"type": "MESOS", **container}
        body = {
            "type": "LAUNCH_NESTED_CONTAINER_SESSION",
            "launch_nested_container_session": payload,
        }
        conn = self.connect()
        conn.request("POST", "/api/v1", json.dumps(body).encode(), STREAM)
        response = conn.getresponse()
        assert response.status == 200, response.read()
        return Session(conn, response)

    def wait(self, cid: dict[str, Any]) -> dict[str, Any]:
        return self.agent.call("WAIT_NESTED_CONTAINER", {"container_id": cid})

    def send_input(self, cid: dict[str, Any], records: list[dict[str, Any]]) -> tuple[int, bytes]:
        body = _input_record({"type": "CONTAINER_ID", "container_id": cid})
        for io in records:
            body += _input_record({"type": "PROCESS_IO", "process_io": io})
        return self.post(body, INPUT_HEADERS)


INPUT_HEADERS = {"Content-Type": "application/recordio", "Message-Content-Type": "application/json"}


class Session:
    """A LAUNCH_NESTED_CONTAINER_SESSION response being read."""

    def __init__(self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse):
        self.conn = conn
        self.response = response
        assert response.getheader("Content-Type") == "application/recordio"
        assert response.getheader("Message-Content-Type") == "application/json"

        self.reader = RecordIOReader()
        self.out = {"STDOUT": b"", "STDERR": b""}

    def _read_some(self) -> bool:
        chunk = self.response.read1(65536)
        for record in self.reader.feed(chunk):
            message = json.loads(record)
            assert message["type"] == "DATA"
            self.out[message["data"]["type"]] += base64.b64decode(message["data"]["data"])
        return bool(chunk)

    def read_until(self, wanted: bytes) -> None:
        while wanted not in self.out["STDOUT"]:
            assert self._read_some(), self.out

    def output(self) -> dict[str, bytes]:
        """Everything until the stream ends, by STDOUT/STDERR."""
        while self._read_some():
            pass
        self.conn.close()
        return self.out


def _input_record(payload: dict[str, Any]) -> bytes:
    body = json.dumps(
        {"type": "ATTACH_CONTAINER_INPUT", "attach_container_input": payload}
    ).encode()
    return str(len(body)).encode() + b"\n" + body


def _stdin(data: bytes) -> dict[str, Any]:
    return {"type": "DATA", "data": {"type": "STDIN", "data": base64.b64encode(data).decode()}}


def _window(rows: int, columns: int) -> dict[str, Any]:
    size = {"window_size": {"rows": rows, "columns": columns}}
    return {"type": "CONTROL", "control": {"type": "TTY_INFO", "tty_info": size}}


def _shell(command: str) -> dict[str, Any]:
    return {"value": command}


@contextlib.contextmanager
def running_task(cluster: ClusterHandle, name: str, command: str) -> Iterator[dict[str, Any]]:
    """Runs ``command`` as a task through ``butte run`` and yields the task once it is
    TASK_RUNNING (the run is ended on exit, which kills the task)."""
    run = subprocess.Popen(
        [sys.executable, "-m", "butte", "run", "--master", cluster.master_address]
        + ["--name", name, "--command", command],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        master = OperatorClient(cluster.master_address)
        deadline = time.monotonic() + 60
        running: list[dict[str, Any]] = []
        while not running and time.monotonic() < deadline:
            tasks = master.call("GET_TASKS").get("tasks", [])
            running = [t for t in tasks if t["state"] == "TASK_RUNNING"]
            time.sleep(0.1)
        assert running, "the task did not start"
        yield running[0]
    finally:
        run.terminate()
        run.wait(30)


@pytest.fixture(scope="module")
def task(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Task]:
    require(_missing(), "cgroup v1 controllers and root")
    root = f"butte-nested-{uuid.uuid4().hex[:8]}"
    flags = [f"--isolation={ISOLATION}", f"--cgroups_root={root}"]
    with start_cluster(tmp_path_factory.mktemp("nested"), agent_flags=flags) as cluster:
        with running_task(cluster, "box", TASK) as running:
            status = running["statuses"][-1]
            container = status["container_status"]["container_id"]["value"]
            agent = cluster.state()["slaves"][0]["pid"].split("@")[1]
            yield Task(cluster, running["task_id"]["value"], container, agent)
    for controller in CONTROLLERS:
        with contextlib.suppress(OSError):
            Path(HIERARCHY, controller, root).rmdir()


def test_session_runs_in_the_tasks_namespaces_and_cgroups(task: Task) -> None:
    cid = task.nested()
    command = "ls /proc | grep -c '^[0-9]*$'; cat /proc/self/cgroup; id -u; echo oops >&2; exit 7"
    out = task.session(cid, _shell(command)).output()
    lines = out["STDOUT"].decode().splitlines()
    # The task's shell and its sleep, the session's sh, ls and grep: nothing of the host's.
    assert int(lines[0]) <= 8, lines
    memory = [line for line in lines if ":memory:" in line]
    assert memory and memory[0].endswith(f"/{task.container}"), lines
    assert out["STDERR"] == b"oops\n"
    result = task.wait(cid)
    assert result["exit_status"] == 7 << 8
    assert "state" not in result  # Mesos gives one for a resource limitation only
    # The task's own pid 1 is its shell, seen from inside the nested command.
    out = task.session(task.nested(), _shell("cat /proc/1/cmdline")).output()
    assert out["STDOUT"].startswith(b"sh\0-c\0while true")


def test_a_named_user_and_the_environment(task: Task) -> None:
    cid = task.nested()
    env = {"variables": [{"name": "GREETING", "value": "hi there"}]}
    command = {"value": 'id -u; echo "$GREETING"; pwd', "user": "nobody", "environment": env}
    out = task.session(cid, command).output()["STDOUT"].decode().splitlines()
    assert out[0] == str(pwd.getpwnam("nobody").pw_uid)
    assert out[1] == "hi there"
    assert out[2].endswith(f"/runs/{task.container}")  # a session starts in the sandbox


def test_large_output_arrives_whole(task: Task) -> None:
    cid = task.nested()
    out = task.session(cid, _shell("head -c 3000000 /dev/zero | tr '\\0' x; echo end")).output()
    assert out["STDOUT"] == b"x" * 3_000_000 + b"end\n"
    assert (_nested_sandbox(task, cid["value"]) / "stdout").stat().st_size == 3_000_004


def test_input_reaches_the_process(task: Task) -> None:
    cid = task.nested()
    session = task.session(cid, _shell("cat; echo done"))
    status, _ = task.send_input(cid, [_stdin(b"hello "), _stdin(b"world\n"), _stdin(b"")])
    assert status == 200
    assert session.output()["STDOUT"] == b"hello world\ndone\n"
    assert task.wait(cid)["exit_status"] == 0


def test_tty_and_window_resize(task: Task) -> None:
    cid = task.nested()
    command = "stty size; read line; stty size; tty; echo got:$line"
    session = task.session(cid, _shell(command), tty_info=_window(24, 80)["control"]["tty_info"])
    session.read_until(b"24 80")  # the first size is printed before the resize
    records = [_window(40, 120), {"type": "CONTROL", "control": {"type": "HEARTBEAT"}}]
    status, body = task.send_input(cid, [*records, _stdin(b"x\n")])
    assert status == 200, body
    text = session.output()["STDOUT"].decode()
    # Its end first: output cut off and a command killed early would look alike.
    ended = task.wait(cid)
    assert ended["exit_status"] == 0, (ended, text)
    assert "24 80" in text and "40 120" in text, text
    assert "/dev/pts/" in text and "got:x" in text, text


def test_a_terminals_last_output_arrives_whole(task: Task) -> None:
    # A burst written right before the command (and then its launcher, the terminal's
    # session leader) ends: the agent reads the pty master to its end (EIO), so nothing
    # written before the exit may be cut off, however the exit and the reads interleave.
    cid = task.nested()
    command = "head -c 200000 /dev/zero | tr '\\0' x; echo; echo last"
    session = task.session(cid, _shell(command), tty_info=_window(24, 80)["control"]["tty_info"])
    out = session.output()["STDOUT"]
    assert out == b"x" * 200_000 + b"\r\nlast\r\n", (len(out), out[-40:])
    assert task.wait(cid)["exit_status"] == 0


def test_attach_output_and_input_of_a_plain_nested_container(task: Task) -> None:
    cid = task.nested()
    payload = {"container_id": cid, "command": _shell("read x; echo got:$x")}
    task.agent.call("LAUNCH_NESTED_CONTAINER", payload)
    body = {"type": "ATTACH_CONTAINER_OUTPUT", "attach_container_output": {"container_id": cid}}
    conn = task.connect()
    conn.request("POST", "/api/v1", json.dumps(body).encode(), STREAM)
    output = Session(conn, conn.getresponse())
    assert output.response.status == 200
    assert task.send_input(cid, [_stdin(b"abc\n"), _stdin(b"")])[0] == 200
    assert output.output()["STDOUT"] == b"got:abc\n"
    assert task.wait(cid)["exit_status"] == 0


def test_kill_wait_remove(task: Task) -> None:
    cid = task.nested()
    payload = {"container_id": cid, "command": _shell("echo started; exec sleep 100")}
    task.agent.call("LAUNCH_NESTED_CONTAINER", payload)
    listed = task.agent.call("GET_CONTAINERS", {"show_nested": True})["containers"]
    (nested,) = [c for c in listed if c["container_id"] == cid]
    assert nested["container_status"]["container_id"] == cid  # with its parent, as in Mesos
    plain = task.agent.call("GET_CONTAINERS")["containers"]
    assert not any(c["container_id"].get("parent") for c in plain)
    # A launch of the same id again is accepted without a second container (Mesos: 202).
    status, _ = task.post(
        {"type": "LAUNCH_NESTED_CONTAINER", "launch_nested_container": payload},
        {"Content-Type": "application/json"},
    )
    assert status == 202
    # Killed once it has printed (a SIGTERM before its echo would leave nothing to keep).
    stdout = _nested_sandbox(task, cid["value"]) / "stdout"
    deadline = time.monotonic() + 20
    while not (stdout.exists() and stdout.read_text() == "started\n"):
        assert time.monotonic() < deadline, "the command never printed"
        time.sleep(0.05)
    task.agent.call("KILL_NESTED_CONTAINER", {"container_id": cid, "signal": int(signal.SIGTERM)})
    result = task.wait(cid)
    assert result == {"exit_status": signal.SIGTERM}
    # Ended (not yet removed): as in Mesos, no longer there to kill (404) or attach to (a
    # failure, 500).
    with pytest.raises(OperatorError) as e:
        task.agent.call("KILL_NESTED_CONTAINER", {"container_id": cid})
    assert e.value.status == 404 and "cannot be found (or is already killed)" in e.value.message
    attach = {"type": "ATTACH_CONTAINER_OUTPUT", "attach_container_output": {"container_id": cid}}
    assert task.post(attach, STREAM)[0] == 500
    sandbox = stdout.parent
    assert stdout.read_text() == "started\n"
    task.agent.call("REMOVE_NESTED_CONTAINER", {"container_id": cid})
    assert not sandbox.exists()
    with pytest.raises(OperatorError) as e:
        task.wait(cid)
    assert e.value.status == 404


def test_newer_container_calls_with_a_parent(task: Task) -> None:
    cid = task.nested()
    task.agent.call("LAUNCH_CONTAINER", {"container_id": cid, "command": _shell("sleep 100")})
    task.agent.call("KILL_CONTAINER", {"container_id": cid})
    result = task.agent.call("WAIT_CONTAINER", {"container_id": cid})
    assert result == {"exit_status": signal.SIGKILL}
    task.agent.call("REMOVE_CONTAINER", {"container_id": cid})
    with pytest.raises(OperatorError) as e:
        task.agent.call(
            "LAUNCH_CONTAINER", {"container_id": {"value": "x"}, "command": _shell("true")}
        )
    assert e.value.status == 400 and "standalone" in e.value.message
    sized = {"container_id": task.nested(), "command": _shell("true"), "resources": [{}]}
    with pytest.raises(OperatorError) as e:
        task.agent.call("LAUNCH_CONTAINER", sized)
    assert e.value.status == 400 and "resources" in e.value.message


def test_a_session_ends_its_command_when_the_client_goes(task: Task) -> None:
    cid = task.nested()
    session = task.session(cid, _shell("exec sleep 100"))
    session.response.close()
    session.conn.close()
    result = task.wait(cid)
    assert result["exit_status"] == signal.SIGKILL
    assert result["message"] == "the session's client went away"


def test_a_command_killed_by_sigkill_reports_the_signal(task: Task) -> None:
    """The wait status is the raw one of a command that SIGKILL ended, whoever sent it."""
    cid = task.nested()
    command = {"container_id": cid, "command": _shell("kill -9 $$")}
    task.agent.call("LAUNCH_NESTED_CONTAINER", command)
    assert task.wait(cid) == {"exit_status": signal.SIGKILL}
    cid = task.nested()
    task.agent.call("LAUNCH_NESTED_CONTAINER", {"container_id": cid, "command": _shell("sleep 60")})
    task.agent.call("KILL_NESTED_CONTAINER", {"container_id": cid, "signal": int(signal.SIGKILL)})
    assert task.wait(cid) == {"exit_status": signal.SIGKILL}


def test_streaming_answers_in_json_where_accept_asks_for_it(task: Task) -> None:
    """Accept: application/json (or none): Content-Type application/json, the same
    RecordIO-framed JSON records (Mesos' agent does so for older clients)."""
    for accept in ({"Accept": "application/json"}, {}):
        cid = task.nested()
        call = {
            "type": "LAUNCH_NESTED_CONTAINER_SESSION",
            "launch_nested_container_session": {"container_id": cid, "command": _shell("echo hi")},
        }
        conn = task.connect()
        conn.request(
            "POST",
            "/api/v1",
            json.dumps(call).encode(),
            {"Content-Type": "application/json", **accept},
        )
        response = conn.getresponse()
        assert response.status == 200, response.read()
        assert response.getheader("Content-Type") == "application/json"
        assert response.getheader("Message-Content-Type") is None
        records = RecordIOReader().feed(response.read())
        conn.close()
        data = b"".join(base64.b64decode(json.loads(r)["data"]["data"]) for r in records)
        assert data == b"hi\n"
        assert task.wait(cid)["exit_status"] == 0


def test_bad_calls(task: Task) -> None:
    json_headers = {"Content-Type": "application/json"}

    def refused(call_type: str, payload: dict[str, Any]) -> tuple[int, str]:
        with pytest.raises(OperatorError) as e:
            task.agent.call(call_type, payload)
        return e.value.status, e.value.message

    unknown = {"value": "nope", "parent": {"value": task.container}}
    assert refused("WAIT_NESTED_CONTAINER", {"container_id": unknown})[0] == 404
    assert refused("KILL_NESTED_CONTAINER", {"container_id": unknown})[0] == 404
    orphan = {"value": "a", "parent": {"value": "no-such-parent"}}
    launch = {"container_id": orphan, "command": _shell("true")}
    assert refused("LAUNCH_NESTED_CONTAINER", launch)[0] == 404
    deep = {"value": "b", "parent": task.nested("c")}
    status, message = refused(
        "LAUNCH_NESTED_CONTAINER", {"container_id": deep, "command": _shell("true")}
    )
    assert status == 400 and "nested containers of nested containers" in message
    sneaky = {"value": "../../x", "parent": {"value": task.container}}
    assert (
        refused("LAUNCH_NESTED_CONTAINER", {"container_id": sneaky, "command": _shell("true")})[0]
        == 400
    )
    missing = {"container_id": task.nested(), "command": {"shell": False, "value": "/no/such"}}
    status, message = refused("LAUNCH_NESTED_CONTAINER", missing)
    assert status == 400 and "/no/such" in message and "No such file" in message
    session_call = {
        "type": "LAUNCH_NESTED_CONTAINER_SESSION",
        "launch_nested_container_session": {
            "container_id": task.nested(),
            "command": _shell("true"),
        },
    }
    accept_html = {**json_headers, "Accept": "text/html"}
    assert task.post(session_call, accept_html)[0] == 406  # neither JSON nor RecordIO
    docker = {
        "container_id": task.nested(),
        "command": _shell("true"),
        "container": {"type": "DOCKER"},
    }
    assert refused("LAUNCH_NESTED_CONTAINER", docker)[0] == 400
    status, _ = task.post(
        {"type": "ATTACH_CONTAINER_OUTPUT", "attach_container_output": {"container_id": unknown}},
        STREAM,
    )
    assert status == 404
    # Input: JSON instead of a stream, garbage framing, a wrong first record, bad base64,
    # a window size for a container without a TTY, an unknown container.
    status, _ = task.post(
        {
            "type": "ATTACH_CONTAINER_INPUT",
            "attach_container_input": {"type": "CONTAINER_ID", "container_id": unknown},
        },
        json_headers,
    )
    assert status == 415
    assert task.post(b"xyz\nnot a record", INPUT_HEADERS)[0] == 400
    wrong_first = _input_record({"type": "PROCESS_IO", "process_io": _stdin(b"hi")})
    assert task.post(wrong_first, INPUT_HEADERS)[0] == 400
    assert task.send_input(unknown, [])[0] == 404
    cid = task.nested()
    session = task.session(cid, _shell("cat"))
    bad = {"type": "DATA", "data": {"type": "STDIN", "data": "***"}}
    assert task.send_input(cid, [bad])[0] == 400
    assert task.send_input(cid, [_window(10, 10)])[0] == 400
    assert task.send_input(cid, [_stdin(b"")])[0] == 200
    assert session.output()["STDOUT"] == b""
    assert task.wait(cid)["exit_status"] == 0
    # A task's own container takes no input (tasks have no TTY).
    top = {"value": task.container}
    status, body = task.send_input(top, [])
    assert status == 400 and b"no input" in body


# -- the CLI -------------------------------------------------------------------------------------


def _butte(task: Task, *argv: str, **kwargs: Any) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "butte",
            "task",
            *argv[:1],
            "--master",
            task.cluster.master_address,
            *argv[1:],
        ],
        capture_output=True,
        timeout=60,
        **kwargs,
    )


def test_cli_exec_prints_output_and_exits_with_the_status(task: Task, capfd) -> None:
    def butte_exec(*command: str) -> int:
        return main(["task", "exec", "--master", task.cluster.master_address, *command])

    assert butte_exec(task.task_id, "--", "sh", "-c", "echo out; echo err >&2; exit 5") == 5
    assert capfd.readouterr() == ("out\n", "err\n")
    # Without -i the command's stdin is at its end at once.
    assert butte_exec(task.task_id, "--", "cat") == 0
    assert capfd.readouterr().out == ""
    assert butte_exec(task.task_id, "--", "sh", "-c", "kill -TERM $$") == 128 + signal.SIGTERM
    assert butte_exec(task.task_id, "--", "sh", "-c", "kill -9 $$") == 128 + signal.SIGKILL
    # -i forwards stdin (a process of its own: stdin is the pipe given to it).
    done = _butte(task, "exec", "-i", task.task_id, "--", "tr", "a-z", "A-Z", input=b"shout\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"SHOUT\n"


def test_cli_exec_interactive_terminal(task: Task) -> None:
    pid, fd = pty.fork()
    if pid == 0:
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
        argv = [sys.executable, "-m", "butte", "task", "exec", "--master"]
        os.execv(
            sys.executable, [*argv, task.cluster.master_address, "-it", task.task_id, "--", "sh"]
        )
    try:
        screen = _Screen(fd)
        screen.expect(b"# ")  # root's prompt: the shell runs
        screen.send(b"stty size\n")
        screen.expect(b"30 100")
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 132, 0, 0))
        # The kernel sends the CLI SIGWINCH; it forwards the size. Ask until it is seen.
        deadline = time.monotonic() + 20
        while b"50 132" not in screen.text and time.monotonic() < deadline:
            screen.send(b"stty size\n")
            screen.read_for(0.5)
        assert b"50 132" in screen.text, screen.text
        screen.send(b"exit 3\n")
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 3, screen.text
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        os.close(fd)


class _Screen:
    """What the CLI writes to its terminal."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.text = b""

    def send(self, data: bytes) -> None:
        os.write(self.fd, data)

    def read_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                return
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:
                return
            if not chunk:
                return
            self.text += chunk

    def expect(self, wanted: bytes, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while wanted not in self.text and time.monotonic() < deadline:
            self.read_for(0.2)
        assert wanted in self.text, self.text


def test_cli_attach_follows_the_tasks_output(task: Task) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "butte",
            "task",
            "attach",
            "--master",
            task.cluster.master_address,
            task.task_id,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        lines: list[bytes] = []
        reader = threading.Thread(
            target=lambda: lines.extend(process.stdout.readline() for _ in range(2))
        )
        reader.start()
        reader.join(30)
        assert lines == [b"tick\n", b"tick\n"], process.stderr
    finally:
        process.kill()
        process.wait()


def _nested_sandbox(task: Task, name: str) -> Path:
    found = list(Path(task.cluster.work_dir).rglob(f"runs/{task.container}/containers/{name}"))
    assert len(found) == 1, found
    return found[0]


def test_exec_into_a_task_without_isolation(cluster: ClusterHandle, capfd) -> None:
    """No namespaces or cgroups to enter (the agent's defaults): the command runs beside
    the task, with its environment and in its sandbox."""
    with running_task(cluster, "plain", "sleep 300") as running:
        argv = ["task", "exec", "--master", cluster.master_address, running["task_id"]["value"]]
        assert main([*argv, "--", "sh", "-c", 'pwd; echo "$MESOS_SANDBOX"; exit 2']) == 2
        here, sandbox = capfd.readouterr().out.splitlines()
        assert here == sandbox and "/runs/" in sandbox
        # Nothing takes a nested command down with its task here but the agent itself.
        agent = OperatorClient(cluster.state()["slaves"][0]["pid"].split("@")[1])
        container = running["statuses"][-1]["container_status"]["container_id"]["value"]
        cid = {"value": "left-behind", "parent": {"value": container}}
        agent.call("LAUNCH_NESTED_CONTAINER", {"container_id": cid, "command": _shell("sleep 300")})
    result = agent.call("WAIT_NESTED_CONTAINER", {"container_id": cid})
    assert result["exit_status"] == signal.SIGKILL
    assert result["message"] == "the parent container ended"
