"""``butte local --marathon``: a cluster with the service scheduler in one command, and an
app deployed with a second (a POST to its REST API)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from butte.testing.cluster import free_port

pytestmark = [pytest.mark.integration]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_local_with_marathon_deploys_an_app(tmp_path):
    port, api = free_port(), free_port()
    argv = [sys.executable, "-m", "butte", "local", "--agents", "1", "--port", str(port)]
    argv += ["--work_dir", str(tmp_path), "--marathon", "--marathon_port", str(api)]
    argv += ["--resources", "cpus:2;mem:1024;disk:1024;ports:[31000-32000]"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "Press Ctrl-C" in line:
                break
        assert any(f"http://127.0.0.1:{api}" in line for line in lines), "".join(lines)
        body = json.dumps({"id": "/hello", "cmd": "sleep 300", "cpus": 0.1, "mem": 16}).encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{api}/v2/apps",
            data=body,
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 201
        deadline = time.monotonic() + 60
        while _get(f"http://127.0.0.1:{api}/v2/apps/hello")["app"]["tasksRunning"] != 1:
            assert time.monotonic() < deadline, "app not running"
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0
