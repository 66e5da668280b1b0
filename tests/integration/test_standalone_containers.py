"""Standalone containers (LAUNCH_CONTAINER without a parent) on a real agent process over
HTTP, against the fake master of `test_agent_process` (`butte.agent.nested_api`, docs/
protocol.md "Standalone containers"): launch (200, then 202 for the same id), GET_CONTAINERS
with and without ``show_standalone``, KILL then WAIT (the signal), REMOVE (its sandbox and
checkpoint go), validation of ids, resources and container infos (400), ACLs (403), and
one that lives through an agent restart (SIGKILL, same work dir) in its own cgroups, still
listed, killable and waitable afterwards.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import signal
from pathlib import Path
from typing import Any

import pytest
from test_agent_process import AgentProcess, FakeMaster, wait_for
from test_isolation import HIERARCHY, cgroups_root  # noqa: F401 - a fixture
from test_nested_recovery import Agent, run_with_restartable_agent

pytestmark = pytest.mark.integration


def scalar(name: str, value: float, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "SCALAR", "scalar": {"value": value}, **extra}


RESOURCES = [scalar("cpus", 0.1), scalar("mem", 64)]
VOLUME = {"mode": "RW", "container_path": "data"}


def post(port: int, body: Any) -> tuple[int, bytes]:
    """One v1 call (``body`` as JSON, or raw bytes): (HTTP status, answer body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        conn.request(
            "POST",
            "/api/v1",
            data,
            {"Content-Type": "application/json", "Accept": "application/json"},
        )
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


async def call(agent: Agent, kind: str, payload: dict[str, Any]) -> tuple[int, Any]:
    """(status, decoded payload of the answer, or its text when it is not JSON)."""
    status, body = await asyncio.to_thread(post, agent.port, {"type": kind, kind.lower(): payload})
    try:
        return status, json.loads(body).get(kind.lower(), {})
    except ValueError:
        return status, body.decode(errors="replace")


def launch_body(name: str, command: str, **extra: Any) -> dict[str, Any]:
    return {
        "container_id": {"value": name},
        "command": {"value": command},
        "resources": RESOURCES,
        **extra,
    }


async def listed(agent: Agent, **flags: bool) -> dict[str, dict[str, Any]]:
    status, answer = await call(agent, "GET_CONTAINERS", flags)
    assert status == 200, answer
    return {c["container_id"]["value"]: c for c in answer.get("containers", [])}


def test_standalone_container_launch_list_kill_wait_remove(tmp_path: Path) -> None:
    work = tmp_path / "work"

    async def scenario(master: FakeMaster, process: AgentProcess, agent: Agent) -> None:
        body = launch_body("sa-1", "echo hello; echo oops >&2; exec sleep 30")
        assert await call(agent, "LAUNCH_CONTAINER", body) == (200, "")
        # The same id again: Mesos' ALREADY_LAUNCHED.
        status, _ = await call(agent, "LAUNCH_CONTAINER", body)
        assert status == 202
        sandbox = work / "containers" / "sa-1"
        stdout = sandbox / "stdout"
        await wait_for(lambda: stdout.exists() and stdout.read_text() == "hello\n", "output")
        assert (sandbox / "stderr").read_text() == "oops\n"

        assert "sa-1" not in await listed(agent)
        assert "sa-1" not in await listed(agent, show_nested=True)
        entry = (await listed(agent, show_standalone=True))["sa-1"]
        assert "framework_id" not in entry and "executor_id" not in entry
        assert entry["container_status"]["executor_pid"] > 0
        assert entry["resource_statistics"]["mem_limit_bytes"] == 64 << 20

        # Not a task's sandbox: /files does not serve it (Mesos attaches none for it).
        files = await asyncio.to_thread(
            post,
            agent.port,
            {"type": "READ_FILE", "read_file": {"path": str(stdout), "offset": 0}},
        )
        assert files[0] == 404, files

        # Still running: not removable.
        status, text = await call(agent, "REMOVE_CONTAINER", {"container_id": {"value": "sa-1"}})
        assert status == 409, text

        waiting = asyncio.ensure_future(
            call(agent, "WAIT_CONTAINER", {"container_id": {"value": "sa-1"}})
        )
        await asyncio.sleep(0.3)
        assert not waiting.done()
        killed = await call(
            agent, "KILL_CONTAINER", {"container_id": {"value": "sa-1"}, "signal": 15}
        )
        assert killed == (200, "")
        assert await waiting == (200, {"exit_status": signal.SIGTERM})
        # Its end stays known until it is removed.
        again = await call(agent, "WAIT_CONTAINER", {"container_id": {"value": "sa-1"}})
        assert again == (200, {"exit_status": signal.SIGTERM})
        assert "sa-1" not in await listed(agent, show_standalone=True)
        status, _ = await call(agent, "KILL_CONTAINER", {"container_id": {"value": "sa-1"}})
        assert status == 404
        status, text = await call(agent, "LAUNCH_CONTAINER", body)
        assert status == 409 and "REMOVE_CONTAINER" in text

        checkpoint = work / "meta" / "standalone" / "sa-1"
        assert (checkpoint / "termination").exists()
        removed = await call(agent, "REMOVE_CONTAINER", {"container_id": {"value": "sa-1"}})
        assert removed == (200, "")
        assert not sandbox.exists() and not checkpoint.exists()
        status, _ = await call(agent, "WAIT_CONTAINER", {"container_id": {"value": "sa-1"}})
        assert status == 404

        # An exit status, and a command that cannot start.
        assert (await call(agent, "LAUNCH_CONTAINER", launch_body("sa-2", "exit 7")))[0] == 200
        waited = await call(agent, "WAIT_CONTAINER", {"container_id": {"value": "sa-2"}})
        assert waited == (200, {"exit_status": 7 << 8})
        missing = {"container_id": {"value": "sa-3"}, "command": {"value": "/nonexistent/x"}}
        missing["command"]["shell"] = False
        status, text = await call(agent, "LAUNCH_CONTAINER", missing)
        assert status == 400, text
        assert not (work / "containers" / "sa-3").exists()
        assert not (work / "meta" / "standalone" / "sa-3").exists()
        assert (await call(agent, "WAIT_CONTAINER", {"container_id": {"value": "sa-3"}}))[0] == 404

    run_with_restartable_agent(work, scenario)


def test_standalone_container_bad_input_is_refused(tmp_path: Path) -> None:
    work = tmp_path / "work"

    async def scenario(master: FakeMaster, process: AgentProcess, agent: Agent) -> None:
        def body(**changes: Any) -> dict[str, Any]:
            return {**launch_body("bad", "exec sleep 30"), **changes}

        refused = {
            "reserved": body(resources=[scalar("cpus", 1, role="web")]),
            "reservations": body(
                resources=[scalar("cpus", 1, reservations=[{"type": "STATIC", "role": "a"}])]
            ),
            "revocable": body(resources=[scalar("cpus", 1, revocable={})]),
            "persistent": body(
                resources=[
                    scalar("disk", 10, disk={"persistence": {"id": "v"}, "volume": VOLUME}),
                ]
            ),
            "negative": body(resources=[scalar("mem", -5)]),
            "not a number": body(resources=[scalar("mem", "lots")]),
            "huge": body(resources=[scalar("cpus", 1e300)]),
            "ports": body(resources=[{"name": "ports", "type": "RANGES", "ranges": {"range": []}}]),
            "not objects": body(resources=["cpus:1"]),
            "limits": body(limits={"cpus": {"value": 2}}),
            "docker": body(container={"type": "DOCKER", "docker": {"image": "x"}}),
            "image": body(container={"type": "MESOS", "mesos": {"image": {"type": "DOCKER"}}}),
            "no command": {"container_id": {"value": "bad"}, "resources": RESOURCES},
            "uris": body(command={"value": "true", "uris": [{"value": "http://x/y"}]}),
            "bad id": body(container_id={"value": "a/b"}),
            "empty id": body(container_id={"value": ""}),
        }
        for what, payload in refused.items():
            status, text = await call(agent, "LAUNCH_CONTAINER", payload)
            assert status == 400, (what, status, text)
        # Nothing of them was started or kept.
        assert "bad" not in await listed(agent, show_standalone=True)
        assert not (work / "containers" / "bad").exists()
        assert not (work / "meta" / "standalone" / "bad").exists()

        # Malformed calls.
        status, _ = await asyncio.to_thread(post, agent.port, b'{"type": "LAUNCH_CONTAINER"')
        assert status == 400
        wrong_type = {"type": "LAUNCH_CONTAINER", "launch_container": {"container_id": 5}}
        assert (await asyncio.to_thread(post, agent.port, wrong_type))[0] == 400
        # The nested calls still need their parent.
        nested = {"container_id": {"value": "n"}, "command": {"value": "true"}}
        status, _ = await call(agent, "LAUNCH_NESTED_CONTAINER", nested)
        assert status == 400
        # Unknown ones.
        unknown = {"container_id": {"value": "nope"}}
        assert (await call(agent, "WAIT_CONTAINER", unknown))[0] == 404
        assert (await call(agent, "KILL_CONTAINER", unknown))[0] == 404
        assert (await call(agent, "REMOVE_CONTAINER", unknown))[0] == 404
        bad_signal = {"container_id": {"value": "nope"}, "signal": 99999}
        assert (await call(agent, "KILL_CONTAINER", bad_signal))[0] == 400

    run_with_restartable_agent(work, scenario)


def test_standalone_container_acls(tmp_path: Path) -> None:
    work = tmp_path / "work"
    acls = {
        "launch_standalone_containers": [
            {"principals": {"type": "ANY"}, "users": {"type": "NONE"}}
        ],
        "view_standalone_containers": [{"principals": {"type": "ANY"}, "users": {"type": "NONE"}}],
    }

    async def scenario(master: FakeMaster, process: AgentProcess, agent: Agent) -> None:
        status, text = await call(agent, "LAUNCH_CONTAINER", launch_body("sa", "sleep 30"))
        assert status == 403 and "launch_standalone_containers" in text, text
        assert not (work / "containers" / "sa").exists()

    run_with_restartable_agent(work, scenario, "--acls", json.dumps(acls))


def test_standalone_container_acls_hide_it_from_get_containers(tmp_path: Path) -> None:
    work = tmp_path / "work"
    acls = {
        "view_standalone_containers": [{"principals": {"type": "ANY"}, "users": {"type": "NONE"}}],
        "wait_standalone_containers": [{"principals": {"type": "ANY"}, "users": {"type": "NONE"}}],
    }

    async def scenario(master: FakeMaster, process: AgentProcess, agent: Agent) -> None:
        assert (await call(agent, "LAUNCH_CONTAINER", launch_body("sa", "sleep 30")))[0] == 200
        assert "sa" not in await listed(agent, show_standalone=True)
        status, text = await call(agent, "WAIT_CONTAINER", {"container_id": {"value": "sa"}})
        assert status == 403, text
        assert (await call(agent, "KILL_CONTAINER", {"container_id": {"value": "sa"}}))[0] == 200

    run_with_restartable_agent(work, scenario, "--acls", json.dumps(acls))


def test_standalone_container_survives_an_agent_restart_in_its_cgroups(
    tmp_path: Path,
    cgroups_root: str,  # noqa: F811 - the fixture
) -> None:
    work = tmp_path / "work"
    memory = Path(HIERARCHY, "memory", cgroups_root, "survivor")

    async def scenario(master: FakeMaster, process: AgentProcess, agent: Agent) -> None:
        ticker = "i=0; while :; do echo $i; i=$((i+1)); sleep 0.1; done"
        assert (await call(agent, "LAUNCH_CONTAINER", launch_body("survivor", ticker)))[0] == 200
        # One that ends while the agent is down.
        quick = launch_body("quick", "sleep 0.5; exit 3")
        assert (await call(agent, "LAUNCH_CONTAINER", quick))[0] == 200
        # Its own cgroup, limited by its resources, holding its processes.
        limit = memory / "memory.limit_in_bytes"
        assert int(limit.read_text()) == 64 << 20
        pid = (await listed(agent, show_standalone=True))["survivor"]["container_status"][
            "executor_pid"
        ]
        assert str(pid) in (memory / "cgroup.procs").read_text().split()
        stdout = work / "containers" / "survivor" / "stdout"
        await wait_for(lambda: stdout.exists() and stdout.read_text(), "output")

        await process.kill()
        at_kill = len(stdout.read_text().split())
        await asyncio.sleep(1.0)
        await process.start()
        await wait_for(lambda: master.connections >= 2, "the agent back", timeout=20)

        after = await listed(agent, show_standalone=True)
        assert set(after) == {"survivor"}, after
        entry = after["survivor"]
        assert entry["container_status"]["executor_pid"] == pid
        waited = await call(agent, "WAIT_CONTAINER", {"container_id": {"value": "quick"}})
        assert waited == (200, {"exit_status": 3 << 8})
        await wait_for(lambda: not memory.with_name("quick").exists(), "its cgroup removed")
        # Its cgroup was kept (not destroyed as an orphan's), its output went on.
        assert str(pid) in (memory / "cgroup.procs").read_text().split()
        assert len(stdout.read_text().split()) > at_kill + 3
        waiting = asyncio.ensure_future(
            call(agent, "WAIT_CONTAINER", {"container_id": {"value": "survivor"}})
        )
        killed = await call(
            agent, "KILL_CONTAINER", {"container_id": {"value": "survivor"}, "signal": 15}
        )
        assert killed == (200, "")
        assert await waiting == (200, {"exit_status": signal.SIGTERM})
        await wait_for(lambda: not memory.exists(), "its cgroup removed")

    run_with_restartable_agent(
        work,
        scenario,
        "--isolation",
        "cgroups/cpu,cgroups/mem",
        "--cgroups_root",
        cgroups_root,
    )


def test_standalone_container_over_its_memory_fails_with_the_limitation(
    tmp_path: Path,
    cgroups_root: str,  # noqa: F811 - the fixture
) -> None:
    work = tmp_path / "work"

    async def scenario(master: FakeMaster, process: AgentProcess, agent: Agent) -> None:
        # tail keeps a line without newline in memory: 600 MB against a 64 MB limit.
        hog = launch_body("hog", "head -c 600000000 /dev/zero | tail > /dev/null")
        assert (await call(agent, "LAUNCH_CONTAINER", hog))[0] == 200
        status, waited = await call(agent, "WAIT_CONTAINER", {"container_id": {"value": "hog"}})
        assert status == 200, waited
        assert waited["state"] == "TASK_FAILED", waited
        assert waited["reason"] == "REASON_CONTAINER_LIMITATION_MEMORY", waited
        assert "exit_status" in waited
        await wait_for(
            lambda: not Path(HIERARCHY, "memory", cgroups_root, "hog").exists(),
            "its cgroup removed",
        )

    run_with_restartable_agent(
        work, scenario, "--isolation", "cgroups/mem", "--cgroups_root", cgroups_root
    )


def test_standalone_container_with_namespace_isolators_is_refused(
    tmp_path: Path,
    cgroups_root: str,  # noqa: F811 - the fixture
) -> None:
    """An agent whose isolators give containers namespaces of their own: butte runs a
    standalone container in the agent's namespaces only, so it refuses one (400) rather
    than run it without them; its cgroups are not left behind."""
    work = tmp_path / "work"

    async def scenario(master: FakeMaster, process: AgentProcess, agent: Agent) -> None:
        status, text = await call(agent, "LAUNCH_CONTAINER", launch_body("ns", "sleep 30"))
        assert status == 400 and "namespaces" in text, (status, text)
        assert "ns" not in await listed(agent, show_standalone=True)
        await wait_for(
            lambda: not Path(HIERARCHY, "memory", cgroups_root, "ns").exists(),
            "its cgroup removed",
        )

    run_with_restartable_agent(
        work,
        scenario,
        "--isolation",
        "cgroups/mem,namespaces/pid",
        "--cgroups_root",
        cgroups_root,
    )
