"""Maintenance and offer lifetime on a real cluster (docs/maintenance.md): the operator calls
and legacy endpoints with bad input refused, an unmodified pymesos scheduler receiving inverse
offers and answering them, offers carrying the unavailability, ``/machine/down`` removing the
agent, the schedule surviving a standalone master restart, ``butte maintenance``,
``--offer_timeout`` and ``offer_constraints``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
import requests
from operator_kit import JSON, EventStream, call, post, wait_for

from butte.core.auth import basic_header
from butte.testing.require import require_module

pymesos = require_module("pymesos")

pytestmark = [pytest.mark.integration, pytest.mark.compat]

START_NS = 1_900_000_000 * 10**9
HOUR_NS = 3600 * 10**9
MACHINE = {"hostname": "127.0.0.1", "ip": "127.0.0.1"}


def schedule_of(*machines: dict[str, str]) -> dict[str, Any]:
    return {
        "windows": [
            {
                "machine_ids": list(machines),
                "unavailability": {
                    "start": {"nanoseconds": START_NS},
                    "duration": {"nanoseconds": HOUR_NS},
                },
            }
        ]
    }


class SchedulerStream(EventStream):
    """A raw scheduler SUBSCRIBE stream (to send ``offer_constraints``, which pymesos
    cannot), its events read in the background."""

    def __init__(self, url: str, subscribe: dict[str, Any]) -> None:
        call = {"type": "SUBSCRIBE", "subscribe": subscribe}
        super().__init__(url, "/api/v1/scheduler", call, expect_ok=False)


class Maintained(pymesos.Scheduler):
    """Runs one long task, keeps every further offer unanswered (so --offer_timeout must
    rescind it), declines its first inverse offer and accepts the next."""

    def __init__(self) -> None:
        self.offers: list[dict] = []
        self.rescinded: list[str] = []
        self.inverse: list[dict] = []
        self.inverse_rescinded: list[str] = []
        self.states: list[str] = []
        self.launched = False

    def resourceOffers(self, driver: Any, offers: list[dict]) -> None:  # noqa: N802
        self.offers.extend(offers)
        if self.launched:
            return
        self.launched = True
        offer = offers[0]
        task = {
            "task_id": {"value": "long"},
            "agent_id": offer["agent_id"],
            "name": "long",
            "command": {"value": "sleep 600"},
            "resources": [
                {"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.1}},
                {"name": "mem", "type": "SCALAR", "scalar": {"value": 32}},
            ],
        }
        driver.launchTasks(offer["id"], [task], {"refuse_seconds": 0.2})

    def offerRescinded(self, driver: Any, offer_id: dict) -> None:  # noqa: N802
        self.rescinded.append(offer_id["value"])

    def inverseOffers(self, driver: Any, offers: list[dict]) -> None:  # noqa: N802
        self.inverse.extend(offers)
        ids = [o["id"] for o in offers]
        if len(self.inverse) == len(offers):
            driver.declineInverseOffer(ids, {"refuse_seconds": 0.5})
        else:
            driver.acceptInverseOffers(ids)

    def inverseOfferRescinded(self, driver: Any, offer_id: dict) -> None:  # noqa: N802
        self.inverse_rescinded.append(offer_id["value"])

    def statusUpdate(self, driver: Any, update: dict) -> None:  # noqa: N802
        self.states.append(update["state"])


def statuses(url: str) -> list[str]:
    status = call(url, "GET_MAINTENANCE_STATUS")["status"]
    return [s["status"] for m in status.get("draining_machines", []) for s in m.get("statuses", [])]


def test_bad_input_is_refused_and_changes_nothing(cluster):
    url = cluster.master_url
    assert post(url, schedule_of(MACHINE), "/maintenance/schedule").status_code == 200
    before = requests.get(url + "/maintenance/schedule", timeout=10).json()
    assert before == schedule_of(MACHINE)
    bad = [
        ("/maintenance/schedule", b"{not json"),
        ("/maintenance/schedule", {"windows": [{"machine_ids": [], "unavailability": {}}]}),
        ("/maintenance/schedule", {"windows": [{"machine_ids": [{"ip": "no-ip"}]}]}),
        ("/maintenance/schedule", "[" * 100_000),
        ("/machine/down", [{"hostname": "not-scheduled"}]),
        ("/machine/down", {"hostname": "127.0.0.1"}),
        ("/machine/up", [MACHINE]),  # it is DRAINING, not DOWN
    ]
    for path, body in bad:
        response = post(url, body, path)
        assert response.status_code == 400, (path, response.status_code, response.text)
        assert response.text
    assert requests.get(url + "/machine/down", timeout=10).status_code == 405
    call(url, "UPDATE_MAINTENANCE_SCHEDULE", {}, status=400)
    call(url, "START_MAINTENANCE", {"machines": []}, status=400)
    assert call(url, "GET_MAINTENANCE_SCHEDULE")["schedule"] == before
    assert requests.get(url + "/master/maintenance/schedule", timeout=10).json() == before
    # An empty schedule clears it.
    call(url, "UPDATE_MAINTENANCE_SCHEDULE", {"schedule": {}})
    assert call(url, "GET_MAINTENANCE_SCHEDULE")["schedule"] == {"windows": []}


def test_cli_sets_and_prints_the_schedule(cluster, tmp_path):
    env = {**os.environ, "BUTTE_MASTER": cluster.master_address}
    path = tmp_path / "schedule.json"
    path.write_text(json.dumps(schedule_of(MACHINE)))

    def butte(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "butte", "maintenance", *argv],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )

    done = butte("schedule", "set", str(path))
    assert done.returncode == 0, done.stderr
    shown = butte("schedule")
    assert json.loads(shown.stdout) == schedule_of(MACHINE)
    refused = butte("up", "127.0.0.1=127.0.0.1")  # DRAINING, not DOWN: the master's reason, exit 1
    assert refused.returncode == 1 and "not in DOWN mode" in refused.stderr


@pytest.mark.timeout(120)
@pytest.mark.cluster(master_flags=["--offer_timeout=2secs"], agent_flags=["--attributes=rack:r1"])
def test_inverse_offers_down_up_and_restart_with_pymesos(cluster):
    url = cluster.master_url
    # offer_constraints: refused when invalid; a framework they exclude gets no offers.
    info = {"user": "root", "name": "constrained"}
    invalid = {
        "framework_info": info,
        "offer_constraints": {"role_constraints": {"other": {"groups": []}}},
    }
    refused = SchedulerStream(url, invalid)
    assert refused.status == 400
    refused.close()

    def rack(value: str) -> dict[str, Any]:
        constraint = {
            "selector": {"attribute_name": "rack"},
            "predicate": {"text_equals": {"value": value}},
        }
        groups = [{"attribute_constraints": [constraint]}]
        return {
            "framework_info": info,
            "offer_constraints": {"role_constraints": {"*": {"groups": groups}}},
        }

    excluded = SchedulerStream(url, rack("r2"))
    included = SchedulerStream(url, rack("r1"))
    try:
        first = included.wait("OFFERS")
        # Held past --offer_timeout: rescinded, and offered again.
        offer_id = first["offers"]["offers"][0]["id"]["value"]
        included.wait("RESCIND", lambda e: e["rescind"]["offer_id"]["value"] == offer_id)
        wait_for(lambda: len(included.of("OFFERS")) >= 2, 15, "offered again")
        assert excluded.of("OFFERS") == []
    finally:
        excluded.close()
        included.close()

    scheduler = Maintained()
    framework = {"user": "root", "name": "maintained", "hostname": "localhost"}
    driver = pymesos.MesosSchedulerDriver(
        scheduler, framework, cluster.master_address, use_addict=False
    )
    driver.start()
    try:
        wait_for(lambda: "TASK_RUNNING" in scheduler.states, 30, "task running")
        # Offers pymesos holds are rescinded by --offer_timeout.
        wait_for(lambda: scheduler.rescinded, 15, "offer rescinded after --offer_timeout")

        call(url, "UPDATE_MAINTENANCE_SCHEDULE", {"schedule": schedule_of(MACHINE)})
        wait_for(lambda: scheduler.inverse, 15, "inverse offer")
        inverse = scheduler.inverse[0]
        assert inverse["unavailability"]["start"] == {"nanoseconds": START_NS}
        wait_for(lambda: "DECLINE" in statuses(url), 10, "decline recorded")
        # After the 0.5s filter the next inverse offer comes and is accepted.
        wait_for(lambda: "ACCEPT" in statuses(url), 15, "accept recorded")
        wait_for(lambda: any("unavailability" in o for o in scheduler.offers), 15, "offer unavail.")

        env = {**os.environ, "BUTTE_MASTER": cluster.master_address}
        cli = subprocess.run(
            [sys.executable, "-m", "butte", "maintenance", "status", "--json"],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )
        assert cli.returncode == 0, cli.stderr
        assert json.loads(cli.stdout)["draining_machines"][0]["id"] == MACHINE

        # DOWN: the agent is removed and its task lost; the machine is not offered.
        assert post(url, [MACHINE], "/machine/down").status_code == 200
        wait_for(lambda: "TASK_LOST" in scheduler.states, 15, "task lost")
        cluster.wait_until(lambda s: not s["slaves"], what="agent removed")
        status = call(url, "GET_MAINTENANCE_STATUS")["status"]
        assert status.get("down_machines") == [MACHINE]
        assert status.get("draining_machines", []) == []
    finally:
        driver.stop()
        driver.join()

    # The schedule and the DOWN machine survive a restart of the standalone master.
    schedule = call(url, "GET_MAINTENANCE_SCHEDULE")["schedule"]
    cluster.master.restart()
    wait_for(lambda: _serving(url), 30, "master back")
    assert call(url, "GET_MAINTENANCE_SCHEDULE")["schedule"] == schedule
    assert call(url, "GET_MAINTENANCE_STATUS")["status"]["down_machines"] == [MACHINE]
    done = subprocess.run(
        [sys.executable, "-m", "butte", "maintenance", "up", "127.0.0.1=127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "BUTTE_MASTER": cluster.master_address},
    )
    assert done.returncode == 0, done.stderr
    assert call(url, "GET_MAINTENANCE_SCHEDULE")["schedule"] == {"windows": []}


def _serving(url: str) -> bool:
    try:
        return requests.get(url + "/health", timeout=2).status_code == 200 and bool(
            call(url, "GET_MAINTENANCE_SCHEDULE")
        )
    except (requests.RequestException, AssertionError):
        return False


def test_maintenance_acls(cluster_factory, tmp_path):
    secrets = {"ops": "s1", "other": "s2"}
    creds = tmp_path / "credentials"
    creds.write_text("".join(f"{p} {s}\n" for p, s in secrets.items()))
    acls = {
        "update_maintenance_schedules": [
            {"principals": {"values": ["ops"]}, "machines": {"type": "ANY"}},
            {"principals": {"type": "ANY"}, "machines": {"type": "NONE"}},
        ],
        "start_maintenances": [{"principals": {"type": "ANY"}, "machines": {"type": "NONE"}}],
    }
    cluster = cluster_factory(
        master_flags=[
            "--authenticate_http_readwrite",
            f"--credentials={creds}",
            f"--acls={json.dumps(acls)}",
        ]
    )
    url = cluster.master_url

    def headers(principal: str) -> dict[str, str]:
        return {"Authorization": basic_header(principal, secrets[principal]), **JSON}

    body = json.dumps(schedule_of(MACHINE))
    denied = requests.post(
        url + "/maintenance/schedule", data=body, headers=headers("other"), timeout=10
    )
    assert denied.status_code == 403 and "update_maintenance_schedules" in denied.text
    update = {"type": "UPDATE_MAINTENANCE_SCHEDULE"}
    update["update_maintenance_schedule"] = {"schedule": schedule_of(MACHINE)}
    denied = requests.post(url + "/api/v1", json=update, headers=headers("other"), timeout=10)
    assert denied.status_code == 403
    allowed = requests.post(
        url + "/maintenance/schedule", data=body, headers=headers("ops"), timeout=10
    )
    assert allowed.status_code == 200, allowed.text
    down = {"type": "START_MAINTENANCE", "start_maintenance": {"machines": [MACHINE]}}
    denied = requests.post(url + "/api/v1", json=down, headers=headers("ops"), timeout=10)
    assert denied.status_code == 403 and "start_maintenances" in denied.text
    schedule = requests.get(url + "/maintenance/schedule", headers=headers("ops"), timeout=10)
    assert schedule.json() == schedule_of(MACHINE)
