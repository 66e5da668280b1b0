"""``butte reservations|reserve|unreserve|volumes|volume`` as subprocesses against a real
master and agent (docs/reservations.md "From the command line and the web UI"): reserving
(also refined), a volume created, listed with the task that uses it, refused while in use,
destroyed, unreserved; bad input refused with one line and a non-zero exit, changing
nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from operator_kit import call, wait_for

from butte.testing.cluster import daemons_missing, start_cluster
from butte.testing.require import require

pytestmark = pytest.mark.integration

USER = Path(__file__).with_name("volume_user.py")
RESOURCES = "cpus:4;mem:2048;disk:1000;ports:[31000-31100];cpus(eng):1"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Iterator:
    if daemons_missing():
        require(daemons_missing(), "a real cluster")
    with start_cluster(tmp_path_factory.mktemp("cli-resv") / "c", resources=RESOURCES) as c:
        yield c


def butte(cluster, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "BUTTE_MASTER": cluster.master_address, "COLUMNS": "250"}
    return subprocess.run(
        [sys.executable, "-m", "butte", *args], capture_output=True, text=True, timeout=60, env=env
    )


def ok(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    return result.stdout


def refused(result: subprocess.CompletedProcess, code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("butte: error:"), result.stderr
    return lines[0]


def agent_id(cluster) -> str:
    return call(cluster.master_url, "GET_AGENTS")["agents"][0]["agent_info"]["id"]["value"]


def total(cluster) -> list:
    return call(cluster.master_url, "GET_AGENTS")["agents"][0]["total_resources"]


def listed(cluster, what: str, *args: str) -> list[dict]:
    return json.loads(ok(butte(cluster, what, "--json", *args)))


def test_static_reservation_is_listed(cluster):
    [row] = listed(cluster, "reservations")
    assert (row["role"], row["type"], row["text"], row["used"]) == ("eng", "STATIC", "cpus:1", "")
    table = ok(butte(cluster, "reservations"))
    assert "STATIC" in table and agent_id(cluster) in table and "cpus:1" in table


def test_reserve_volume_use_destroy_unreserve(cluster, tmp_path):
    aid = agent_id(cluster)
    reserve = ("reserve", aid, "cpus:1;mem:256;disk:300", "--role", "db", "--principal", "dba")
    out = ok(butte(cluster, *reserve, "--label", "team=storage", "--label", "tier=1"))
    assert "Reserved" in out
    [row] = listed(cluster, "reservations", "--role", "db")
    assert row["principal"] == "dba" and row["labels"] == {"team": "storage", "tier": "1"}
    assert row["text"] == "cpus:1;disk:300;mem:256" and row["type"] == "DYNAMIC"
    # a refined reservation: eng (static) pushed down to eng/web
    ok(butte(cluster, "reserve", aid, "cpus:0.5", "--role", "eng/web", "--refine"))
    [refined] = listed(cluster, "reservations", "--role", "eng/web")
    assert refined["roles"] == ["eng", "eng/web"] and refined["text"] == "cpus:0.5"
    assert "eng > eng/web" in ok(butte(cluster, "reservations", "--agent", aid[:8]))

    create = ("volume", "create", aid, "--role", "db", "--size", "100", "--id", "pgdata")
    out = ok(butte(cluster, *create, "--container-path", "data", "--principal", "dba"))
    assert "Created volume pgdata" in out
    [vol] = listed(cluster, "volumes")
    assert (vol["id"], vol["role"], vol["size"], vol["source"]) == ("pgdata", "db", 100, "ROOT")
    assert (vol["container_path"], vol["mode"], vol["used_by"]) == ("data", "RW", [])
    # the same id again: the master's 409 and its reason, nothing changes
    before = total(cluster)
    message = refused(butte(cluster, *create, "--container-path", "data"), 1)
    assert "CREATE_VOLUMES refused" in message and "pgdata" in message and "409" in message
    assert total(cluster) == before

    log = open(tmp_path / "user.log", "w+")  # noqa: SIM115 - read after the process ends
    user = subprocess.Popen(
        [sys.executable, str(USER), cluster.master_address, "db", "pgdata"],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert user.stdout is not None
        line = user.stdout.readline()
        assert line.startswith("running "), (line, open(tmp_path / "user.log").read())
        task_id = line.split()[1]
        [vol] = listed(cluster, "volumes", "--agent", aid)
        assert vol["used_by"] == [task_id]
        [row] = listed(cluster, "reservations", "--role", "db")
        assert task_id in row["used_by"] and "disk:100" in row["used"]
        table = ok(butte(cluster, "volumes"))
        assert "pgdata" in table and task_id in table
        message = refused(butte(cluster, "volume", "destroy", aid, "pgdata"), 1)
        assert "DESTROY_VOLUMES refused" in message and "409" in message
    finally:
        user.kill()
        user.wait(10)
        log.close()
    # the framework (failover timeout 0) goes with its connection: its task ends, the
    # volume is free again
    wait_for(lambda: listed(cluster, "volumes")[0]["used_by"] == [], 60, "the volume freed")
    assert "Destroyed volume pgdata" in ok(butte(cluster, "volume", "destroy", aid, "pgdata"))
    assert listed(cluster, "volumes") == []
    refused(butte(cluster, "volume", "destroy", aid, "pgdata"), 1)

    ok(butte(cluster, "unreserve", aid, "cpus:1;mem:256;disk:300", "--role", "db"))
    ok(butte(cluster, "unreserve", aid, "cpus:0.5", "--role", "eng/web"))
    assert [r["role"] for r in listed(cluster, "reservations")] == ["eng"]


def test_bad_input_is_refused_and_changes_nothing(cluster):
    aid = agent_id(cluster)
    before = total(cluster)
    assert "409" in refused(butte(cluster, "reserve", aid, "cpus:100", "--role", "db"), 1)
    unknown = refused(butte(cluster, "reserve", "no-agent", "cpus:1", "--role", "db"), 1)
    assert "No agent found with specified ID" in unknown
    assert "bad scalar" in refused(butte(cluster, "reserve", aid, "cpus:x", "--role", "db"), 2)
    refused(butte(cluster, "reserve", aid, "cpus(db):1", "--role", "db"), 2)
    refused(butte(cluster, "reserve", aid, "cpus:1"), 2)  # no --role
    refused(butte(cluster, "reserve", aid, "cpus:1", "--role", "../x"), 2)
    refused(butte(cluster, "reserve", aid, "cpus:1", "--role", "db", "--label", "x"), 2)
    refused(butte(cluster, "reserve", aid, "[{not json", "--role", "db"), 2)
    # JSON passed as is: the master's reason for a malformed resource
    message = refused(butte(cluster, "reserve", aid, '[{"name": "cpus"}]'), 1)
    assert "400" in message
    json_and_role = ("reserve", aid, '[{"name": "cpus"}]', "--role", "db")
    assert "--role goes with RESOURCES as text" in refused(butte(cluster, *json_and_role), 2)
    refused(butte(cluster, "unreserve", aid, "cpus:1", "--role", "nobody"), 1)
    message = refused(butte(cluster, "unreserve", aid, "cpus:1", "--role", "eng"), 1)
    assert "static reservations cannot be undone" in message and "400" in message
    create = ("volume", "create", aid, "--role", "eng", "--size", "1", "--id", "v")
    assert "holding disk" in refused(butte(cluster, *create, "--container-path", "d"), 1)
    bad_size = (*create[:5], "--size", "-1", "--id", "v", "--container-path", "d")
    assert "--size" in refused(butte(cluster, *bad_size), 2)
    refused(butte(cluster, "volume", "destroy", aid, "nothing"), 1)
    assert total(cluster) == before
    completion = ok(butte(cluster, "completion", "bash"))
    assert "reservations" in completion and "volume)" in completion and "--refine" in completion


def test_authenticated_master_and_acls(tmp_path):
    """The principal the CLI authenticates as makes the reservation; the master's 401 and
    403 (``--acls`` reserve_resources) come back as one line and exit 1."""
    secrets = {"ops": "ops-Secret-1", "intern": "intern-Secret-2"}
    creds = tmp_path / "credentials"
    creds.write_text("".join(f"{p} {s}\n" for p, s in secrets.items()))
    acls = {
        "reserve_resources": [
            {"principals": {"values": ["ops"]}, "roles": {"type": "ANY"}},
            {"principals": {"type": "ANY"}, "roles": {"type": "NONE"}},
        ]
    }
    flags = [
        "--authenticate_http_readwrite",
        f"--credentials={creds}",
        f"--acls={json.dumps(acls)}",
    ]
    with start_cluster(tmp_path / "c", master_flags=flags, http_auth=("ops", secrets["ops"])) as c:
        aid = c.state()["slaves"][0]["id"]

        def as_(principal: str | None, *args: str) -> subprocess.CompletedProcess:
            env = {**os.environ, "BUTTE_MASTER": c.master_address, "COLUMNS": "250"}
            env.pop("BUTTE_PRINCIPAL", None)
            env.pop("BUTTE_SECRET", None)
            if principal is not None:
                env |= {"BUTTE_PRINCIPAL": principal, "BUTTE_SECRET": secrets[principal]}
            return subprocess.run(
                [sys.executable, "-m", "butte", *args],
                capture_output=True,
                text=True,
                timeout=60,
                env=env,
            )

        reserve = ("reserve", aid, "cpus:1", "--role", "db")
        assert "401" in refused(as_(None, *reserve), 1)
        message = refused(as_("intern", *reserve), 1)
        assert "403" in message and "Not authorized" in message
        ok(as_("ops", *reserve))
        [row] = json.loads(ok(as_("ops", "reservations", "--json")))
        assert (row["role"], row["principal"]) == ("db", "ops")
        ok(as_("ops", "unreserve", aid, "cpus:1", "--role", "db"))


def test_volume_on_a_path_disk_takes_its_source(tmp_path):
    """``volume create`` finds the reservation's disk source on the agent (a PATH disk
    statically reserved for ``db``) and the volume is made there."""
    root = tmp_path / "ssd"
    root.mkdir()
    disk = {
        "name": "disk",
        "type": "SCALAR",
        "scalar": {"value": 500},
        "role": "db",
        "disk": {"source": {"type": "PATH", "path": {"root": str(root)}}},
    }
    plain = [
        {"name": "cpus", "type": "SCALAR", "scalar": {"value": 2}},
        {"name": "mem", "type": "SCALAR", "scalar": {"value": 1024}},
    ]
    with start_cluster(tmp_path / "c", resources=json.dumps([*plain, disk])) as c:
        aid = c.state()["slaves"][0]["id"]
        create = ("volume", "create", aid, "--role", "db", "--size", "100", "--id", "fast")
        ok(butte(c, *create, "--container-path", "data"))
        [vol] = listed(c, "volumes")
        assert (vol["source"], vol["root"], vol["size"]) == ("PATH", str(root), 100)
        assert f"PATH {root}" in ok(butte(c, "volumes"))
        made = root / "volumes" / "roles" / "db" / "fast"
        # the agent makes and removes the directory once the master's update reaches it
        wait_for(made.is_dir, 30, "the volume's directory on the PATH disk")
        ok(butte(c, "volume", "destroy", aid, "fast"))
        wait_for(lambda: not made.exists(), 30, "the volume's directory removed")
