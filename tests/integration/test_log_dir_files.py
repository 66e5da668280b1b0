"""The daemons' own logs through the files API, on real master and agent processes:
``--log_dir`` (a file the daemon writes, at the logging level in force) and
``--external_log_file`` (a file someone else writes), attached as ``/master/log`` and
``/slave/log`` in ``/files/browse|read|download|debug`` and LIST_FILES / READ_FILE, guarded by
``access_mesos_logs``; 404 without either flag; ``..`` refused; an unwritable ``--log_dir``
stops the start."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from butte.cli.local import LocalCluster, free_port
from butte.core.auth import basic_header

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"


class Daemon:
    """A ``butte master`` or ``butte agent`` process with its port and output file."""

    def __init__(self, kind: str, work: Path, flags: list[str], master: str | None = None):
        self.port = free_port()
        self.output = work / f"{kind}-{self.port}.out"
        argv = [sys.executable, "-m", "butte", kind, "--port", str(self.port)]
        argv += ["--work_dir", str(work / f"{kind}-{self.port}")]
        if kind == "master":
            argv += ["--ip", HOST]
        else:
            argv += ["--ip", HOST, "--master", str(master)]
            argv += ["--resources", "cpus:1;mem:256;disk:256;ports:[11490-11499]"]
        with open(self.output, "wb") as out:
            self.process = subprocess.Popen(argv + flags, stdout=out, stderr=subprocess.STDOUT)
        self.url = f"http://{HOST}:{self.port}"

    def wait_up(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"exited {self.process.returncode}: {self.output_text()}")
            with contextlib.suppress(requests.RequestException):
                if requests.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            time.sleep(0.1)
        raise AssertionError(f"not up in {timeout}s: {self.output_text()}")

    def output_text(self) -> str:
        return self.output.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Any]:
    started: list[Daemon] = []

    def start(kind: str, flags: list[str], master: str | None = None) -> Daemon:
        daemon = Daemon(kind, tmp_path, flags, master)
        started.append(daemon)
        daemon.wait_up()
        return daemon

    try:
        yield start
    finally:
        for daemon in reversed(started):
            daemon.stop()


def api(base: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    return requests.post(
        base + "/api/v1",
        data=json.dumps(body),
        headers={"Content-Type": "application/json", **(headers or {})},
        timeout=10,
    )


def read_file(base: str, path: str, headers: dict[str, str] | None = None) -> bytes:
    body = {"type": "READ_FILE", "read_file": {"path": path, "offset": 0, "length": 1 << 20}}
    answer = api(base, body, headers)
    assert answer.status_code == 200, answer.text
    return base64.b64decode(answer.json()["read_file"]["data"])


def files(base: str, op: str, path: str, **params: Any) -> requests.Response:
    return requests.get(f"{base}/files/{op}", params={"path": path, **params}, timeout=10)


def wait_for(check: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_master_log_dir_is_served_as_master_log(daemons, tmp_path):
    logs = tmp_path / "logs"  # made by the master
    master = daemons("master", ["--log_dir", str(logs)])
    link = logs / "butte-master.INFO"
    assert link.is_symlink(), sorted(os.listdir(logs))
    real = os.path.realpath(link)
    assert os.path.basename(real).startswith("butte-master.")
    assert f".log.INFO.{time.strftime('%Y%m%d')}" in real

    debug = requests.get(master.url + "/files/debug", timeout=10)
    assert debug.status_code == 200 and debug.json() == {"/master/log": real}

    line = f"listening on {HOST}:{master.port}"
    size = files(master.url, "read", "/master/log", offset=-1).json()["offset"]
    assert size > 0
    page = files(master.url, "read", "/master/log", offset=0, length=size)
    assert page.status_code == 200 and line in page.json()["data"], page.text
    assert line.encode() in read_file(master.url, "/master/log")

    listed = api(master.url, {"type": "LIST_FILES", "list_files": {"path": "/master/log"}})
    assert listed.status_code == 200, listed.text
    [info] = listed.json()["list_files"]["file_infos"]
    assert info["path"] == "/master/log" and info["size"] >= size
    [entry] = files(master.url, "browse", "/master/log/").json()
    assert entry["path"] == "/master/log" and entry["mode"].startswith("-")

    download = files(master.url, "download", "/master/log")
    assert download.status_code == 200
    assert Path(real).read_bytes().startswith(download.content)
    assert line.encode() in download.content

    flags = api(master.url, {"type": "GET_FLAGS"}).json()["get_flags"]["flags"]
    assert {"name": "log_dir", "value": str(logs)} in flags
    assert requests.get(master.url + "/flags", timeout=10).json()["flags"]["log_dir"] == str(logs)
    state = requests.get(master.url + "/state", timeout=10).json()
    assert state["log_dir"] == str(logs) and "external_log_file" not in state

    # Nothing but the file itself, and no way out of it.
    for path in ("/master/log/../..", "/master/log/../../etc/passwd", "/master/../master/log"):
        for op in ("read", "browse", "download"):
            answer = files(master.url, op, path, offset=0)
            assert answer.status_code == 400, (op, path, answer.text)
        body = {"type": "READ_FILE", "read_file": {"path": path, "offset": 0}}
        assert api(master.url, body).status_code == 400, path
    for path in ("/master/log/x", "/master/logs", "/master", "/slave/log"):
        assert files(master.url, "read", path, offset=0).status_code == 404, path


def test_master_log_file_follows_the_logging_level(daemons, tmp_path):
    master = daemons("master", ["--log_dir", str(tmp_path), "--logging_level", "WARNING"])
    log = tmp_path / "butte-master.WARNING"
    assert log.is_symlink() and not (tmp_path / "butte-master.INFO").exists()
    line = "Maintenance schedule updated: 0 window(s)"

    def update_schedule() -> None:
        answer = requests.post(
            master.url + "/master/maintenance/schedule", json={"windows": []}, timeout=10
        )
        assert answer.status_code == 200, answer.text

    update_schedule()  # an INFO record: below WARNING, not written
    time.sleep(0.5)
    assert line not in log.read_text()
    assert f"listening on {HOST}" not in log.read_text()
    body = {
        "type": "SET_LOGGING_LEVEL",
        "set_logging_level": {"level": 1, "duration": {"nanoseconds": 60 * 10**9}},
    }
    assert api(master.url, body).status_code == 200
    update_schedule()
    assert wait_for(lambda: line in log.read_text()), log.read_text()
    assert log.read_text().count(line) == 1
    assert line.encode() in read_file(master.url, "/master/log")


def test_no_log_flags_no_master_log(daemons):
    master = daemons("master", [])
    for op in ("read", "browse", "download"):
        assert files(master.url, op, "/master/log", offset=0).status_code == 404, op
    body = {"type": "READ_FILE", "read_file": {"path": "/master/log", "offset": 0}}
    assert api(master.url, body).status_code == 404
    assert requests.get(master.url + "/files/debug", timeout=10).json() == {}
    state = requests.get(master.url + "/state", timeout=10).json()
    assert "log_dir" not in state and "external_log_file" not in state


SECRETS = {"ops": "ops-Secret-l1", "alice": "alice-Secret-l2"}
ACLS = {
    "access_mesos_logs": [
        {"principals": {"values": ["ops"]}, "logs": {"type": "ANY"}},
        {"principals": {"type": "ANY"}, "logs": {"type": "NONE"}},
    ],
}


def auth(principal: str) -> dict[str, str]:
    return {"Authorization": basic_header(principal, SECRETS[principal])}


def test_external_log_file_is_attached_under_access_mesos_logs(daemons, tmp_path):
    external = tmp_path / "syslog" / "master.log"
    external.parent.mkdir()
    external.write_text("written by syslog, not by butte\n")
    creds = tmp_path / "credentials"
    creds.write_text("".join(f"{p} {s}\n" for p, s in SECRETS.items()))
    master = daemons(
        "master",
        [
            "--external_log_file",
            str(external),
            "--log_dir",
            str(tmp_path / "own"),  # written, but the external file is the one attached
            "--authenticate_http_readonly",
            "--authenticate_http_readwrite",
            f"--credentials={creds}",
            f"--acls={json.dumps(ACLS)}",
        ],
    )
    assert (tmp_path / "own" / "butte-master.INFO").is_symlink()
    debug = requests.get(master.url + "/files/debug", headers=auth("ops"), timeout=10)
    assert debug.json() == {"/master/log": os.path.realpath(external)}
    state = requests.get(master.url + "/state", headers=auth("ops"), timeout=10).json()
    assert state["external_log_file"] == str(external)
    assert state["log_dir"] == str(tmp_path / "own")

    def get(op: str, principal: str | None) -> requests.Response:
        headers = auth(principal) if principal else {}
        return requests.get(
            f"{master.url}/files/{op}",
            params={"path": "/master/log", "offset": 0},
            headers=headers,
            timeout=10,
        )

    assert get("read", "ops").json()["data"] == "written by syslog, not by butte\n"
    assert read_file(master.url, "/master/log", auth("ops")).startswith(b"written by syslog")
    with external.open("a") as f:
        f.write("a second line\n")
    assert get("download", "ops").content.endswith(b"a second line\n")
    for op in ("read", "browse", "download"):
        refused = get(op, "alice")
        assert refused.status_code == 403, (op, refused.text)
        assert "access_mesos_logs" in refused.text
        assert get(op, None).status_code == 401
    body = {"type": "READ_FILE", "read_file": {"path": "/master/log", "offset": 0}}
    assert api(master.url, body, auth("alice")).status_code == 403
    assert (
        api(
            master.url, {"type": "LIST_FILES", "list_files": {"path": "/master/log"}}, auth("alice")
        )
    ).status_code == 403

    external.unlink()  # gone (rotated away): 404 until it is back
    assert get("read", "ops").status_code == 404


def test_agent_log_dir_is_served_as_slave_log(daemons, tmp_path):
    master = daemons("master", [])
    logs = tmp_path / "agent-logs"
    agent = daemons("agent", ["--log_dir", str(logs)], master=f"{HOST}:{master.port}")
    real = os.path.realpath(logs / "butte-agent.INFO")
    assert os.path.basename(real).startswith("butte-agent.")
    line = "connected to master at"

    def read_agent() -> str:
        answer = files(agent.url, "read", "/slave/log", offset=0, length=1 << 20)
        assert answer.status_code == 200, answer.text
        return str(answer.json()["data"])

    assert wait_for(lambda: line in read_agent()), read_agent()
    debug = requests.get(agent.url + "/files/debug", timeout=10).json()
    assert debug["/slave/log"] == real
    assert line.encode() in read_file(agent.url, "/slave/log")
    flags = requests.get(agent.url + "/flags", timeout=10).json()["flags"]
    assert flags["log_dir"] == str(logs)
    assert requests.get(agent.url + "/state", timeout=10).json()["log_dir"] == str(logs)

    # Through the master, as the web UI reads it.
    agent_id = wait_for(lambda: requests.get(agent.url + "/state", timeout=10).json().get("id"), 20)
    assert agent_id
    via_master = files(master.url, "read", f"/slaves/{agent_id}/slave/log", offset=0)
    assert via_master.status_code == 200 and line in via_master.json()["data"]
    for path in ("/slave/log/../..", f"/slaves/{agent_id}/slave/log/../../etc/passwd"):
        assert files(agent.url, "read", path, offset=0).status_code == 400, path
        assert files(master.url, "read", path, offset=0).status_code in (400, 404), path
    assert files(agent.url, "read", "/slave/log/x", offset=0).status_code == 404
    assert files(agent.url, "read", "/master/log", offset=0).status_code == 404


def test_quiet_daemons_log_to_their_file_only(daemons, tmp_path):
    """``--quiet``: nothing on stderr, everything in the ``--log_dir`` file; with
    ``--logbufsecs`` the INFO lines wait in the daemon until it stops (or the time is up)."""
    logs = tmp_path / "quiet-logs"
    flags = ["--quiet", "--log_dir", str(logs), "--logbufsecs=60"]
    master = daemons("master", flags)
    agent = daemons("agent", flags, master=f"{HOST}:{master.port}")
    master_log = logs / "butte-master.INFO"
    agent_log = logs / "butte-agent.INFO"
    flags_seen = requests.get(master.url + "/flags", timeout=10).json()["flags"]
    assert flags_seen["quiet"] == "true" and flags_seen["logbufsecs"] == "60"
    wait_for(lambda: requests.get(agent.url + "/state", timeout=10).json().get("id"), 20)
    assert f"listening on {HOST}" not in master_log.read_text()  # held back, for now
    agent.stop()  # a clean stop writes what was held back
    assert "connected to master at" in agent_log.read_text()
    master.stop()
    assert f"listening on {HOST}" in master_log.read_text()
    assert master.output_text() == "" and agent.output_text() == ""


def test_unwritable_log_dir_stops_the_start(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for kind, extra in (("master", []), ("agent", ["--master", f"{HOST}:1"])):
        done = subprocess.run(
            [sys.executable, "-m", "butte", kind, "--work_dir", str(tmp_path / kind)]
            + ["--port", str(free_port()), "--log_dir", str(blocker / "logs"), *extra],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode != 0, (kind, done.stdout, done.stderr)
        message = done.stdout + done.stderr
        assert f"--log_dir {blocker / 'logs'}: cannot write a log file there" in message, message


def test_local_cluster_attaches_each_daemons_log(tmp_path):
    cluster = LocalCluster(tmp_path / "local", port=free_port(), agents=0, attach_logs=True)
    try:
        cluster.start()
        cluster.wait_ready(30)
        log = cluster.log_paths["master"]
        answer = files(cluster.master_url, "read", "/master/log", offset=0)
        assert answer.status_code == 200, answer.text
        assert f"listening on {HOST}:{cluster.port}" in answer.json()["data"]
        debug = requests.get(cluster.master_url + "/files/debug", timeout=10).json()
        assert debug == {"/master/log": os.path.realpath(log)}
    finally:
        cluster.stop()


AGENT_SECRETS = {"ops": "ops-Secret-l3", "alice": "alice-Secret-l4", "bob": "bob-Secret-l5"}
AGENT_ACLS = {
    # alice may read logs but no sandbox; bob neither.
    "access_mesos_logs": [
        {"principals": {"values": ["ops", "alice"]}, "logs": {"type": "ANY"}},
        {"principals": {"type": "ANY"}, "logs": {"type": "NONE"}},
    ],
    "access_sandboxes": [
        {"principals": {"values": ["ops"]}, "users": {"type": "ANY"}},
        {"principals": {"type": "ANY"}, "users": {"type": "NONE"}},
    ],
}


def test_agent_log_is_guarded_by_access_mesos_logs_not_access_sandboxes(daemons, tmp_path):
    creds = tmp_path / "credentials"
    creds.write_text("".join(f"{p} {s}\n" for p, s in AGENT_SECRETS.items()))
    auth_flags = ["--authenticate_http_readonly", "--authenticate_http_readwrite"]
    acls = f"--acls={json.dumps(AGENT_ACLS)}"
    master = daemons("master", [*auth_flags, f"--credentials={creds}", acls])
    agent = daemons(
        "agent",
        [*auth_flags, f"--http_credentials={creds}", acls, "--log_dir", str(tmp_path / "logs")],
        master=f"{HOST}:{master.port}",
    )

    def get(base: str, path: str, principal: str | None) -> requests.Response:
        headers = (
            {"Authorization": basic_header(principal, AGENT_SECRETS[principal])}
            if principal
            else {}
        )
        return requests.get(
            base + "/files/read",
            params={"path": path, "offset": 0},
            headers=headers,
            timeout=10,
        )

    for principal in ("ops", "alice"):
        answer = get(agent.url, "/slave/log", principal)
        assert answer.status_code == 200, (principal, answer.text)
        assert "butte.agent" in answer.json()["data"]
    refused = get(agent.url, "/slave/log", "bob")
    assert refused.status_code == 403 and "access_mesos_logs" in refused.text, refused.text
    assert get(agent.url, "/slave/log", None).status_code == 401

    ops = {"Authorization": basic_header("ops", AGENT_SECRETS["ops"])}
    agent_id = wait_for(
        lambda: requests.get(agent.url + "/state", headers=ops, timeout=10).json().get("id"), 20
    )
    via_master = f"/slaves/{agent_id}/slave/log"
    assert get(master.url, via_master, "alice").status_code == 200
    for spelling in (
        via_master,
        f"/slaves/{agent_id}/slave//log",
        f"/slaves/{agent_id}/slave/./log",
    ):
        refused = get(master.url, spelling, "bob")
        assert refused.status_code == 403 and "access_mesos_logs" in refused.text, refused.text
    # The agent's own LIST_FILES / READ_FILE check the caller as /files/read does.
    bob = {"Authorization": basic_header("bob", AGENT_SECRETS["bob"])}
    for call in (
        {"type": "READ_FILE", "read_file": {"path": "/slave/log", "offset": 0}},
        {"type": "LIST_FILES", "list_files": {"path": "/slave/log"}},
    ):
        answer = api(agent.url, call, ops)
        assert answer.status_code == 200, answer.text
        refused = api(agent.url, call, bob)
        assert refused.status_code == 403 and "access_mesos_logs" in refused.text, refused.text
        if call["type"] == "READ_FILE":
            data = base64.b64decode(answer.json()["read_file"]["data"])
            assert b"butte.agent" in data
