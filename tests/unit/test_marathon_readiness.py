"""Marathon readiness checks in the planner: validated definitions, a `Probe` per running
instance of the new configuration at the check's interval, and deployments (a start, a
rolling restart) that wait for the instances to answer ready."""

from __future__ import annotations

import pytest

from butte.frameworks.marathon.appdef import Invalid, normalize_app
from butte.frameworks.marathon.model import Kill, Probe
from tests.unit.test_marathon_planner import World, app, offer

PORTS = [{"port": 0, "name": "http"}]
CHECK = {"path": "/ready", "intervalSeconds": 2, "timeoutSeconds": 1}


def probes(effects: list) -> list[Probe]:
    return [e for e in effects if isinstance(e, Probe)]


def test_definitions_are_validated_and_filled_in():
    spec = app(portDefinitions=PORTS, readinessChecks=[CHECK])
    assert spec["readinessChecks"] == [
        {
            "name": "readinessCheck",
            "protocol": "HTTP",
            "path": "/ready",
            "portName": "http",
            "intervalSeconds": 2,
            "timeoutSeconds": 1,
            "httpStatusCodesForReady": [200],
            "preserveLastResponse": False,
        }
    ]
    assert "readinessChecks" not in app()  # none: the definition is as before
    bad = [
        ({"portName": "web"}, "/readinessChecks(0)/portName"),
        ({"protocol": "TCP"}, "/readinessChecks(0)/protocol"),
        ({"httpStatusCodesForReady": []}, "/readinessChecks(0)/httpStatusCodesForReady"),
        ({"httpStatusCodesForReady": [700]}, "/readinessChecks(0)/httpStatusCodesForReady"),
        ({"path": "ready"}, "/readinessChecks(0)/path"),
        ({"intervalSeconds": 0}, "/readinessChecks(0)/intervalSeconds"),
        ({"timeoutSeconds": 5}, "/readinessChecks(0)/timeoutSeconds"),
        ({"bogus": 1}, "/readinessChecks(0)/bogus"),
    ]
    for fields, path in bad:
        with pytest.raises(Invalid) as e:
            normalize_app(
                {
                    "id": "/x",
                    "cmd": "c",
                    "portDefinitions": PORTS,
                    "readinessChecks": [{**CHECK, **fields}],
                }
            )
        assert path in [d["path"] for d in e.value.details], fields
    with pytest.raises(Invalid):
        normalize_app({"id": "/x", "cmd": "c", "readinessChecks": {"path": "/"}})


def test_a_start_waits_until_every_instance_is_ready():
    w = World()
    w.p.deploy({"/web": app(instances=2, portDefinitions=PORTS, readinessChecks=[CHECK])}, w.now)
    launches = w.offer(offer())
    tasks = [t for launch in launches for t in launch.tasks]
    assert len(tasks) == 2
    assert not probes(w.step())  # staging: nothing to ask yet
    w.run_all(launches)
    sent = probes(w.step())
    assert len(sent) == 2
    ports = {i.task_id: i.ports[0] for i in w.p.app_instances("/web")}
    assert {p.url for p in sent} == {f"http://h1:{ports[t]}/ready" for t in ports}
    assert sent[0].timeout == 1 and sent[0].codes == [200]
    assert not probes(w.step())  # in flight: not sent twice
    first, second = sent[0].task_id, sent[1].task_id
    w.p.readiness(first, 200, "", w.now)
    w.p.readiness(second, 503, "", w.now)
    w.step()
    assert w.p.deployments  # one is not ready yet
    results = w.p.app_json("/web", {"readiness"})["readinessCheckResults"]
    assert {r["taskId"]: r["ready"] for r in results} == {first: True, second: False}
    assert not probes(w.step(1.0))  # the interval (2 s) has not passed
    again = probes(w.step(1.5))
    assert [p.task_id for p in again] == [second]
    w.p.readiness(second, None, "ConnectionRefusedError", w.now)
    last = w.p.app_json("/web", {"readiness"})["readinessCheckResults"]
    assert last[[r["taskId"] for r in last].index(second)]["lastResponse"]["body"] == (
        "ConnectionRefusedError"
    )
    assert w.p.deployments
    w.step(2.5)
    w.p.readiness(second, 200, "", w.now)
    w.step()
    assert not w.p.deployments
    assert all(i.ready for i in w.p.app_instances("/web"))
    assert not probes(w.step(5))  # ready instances are not checked again
    # readiness is stored with the instance: a new leader does not check it again
    records = {key: v for kind, key, v in w.p.take_dirty() if kind == "instance"}
    assert records[first]["ready"] is True


def test_an_https_check_probes_the_task_over_tls():
    w = World()
    https = {**CHECK, "protocol": "HTTPS"}
    w.p.deploy({"/web": app(instances=1, portDefinitions=PORTS, readinessChecks=[https])}, w.now)
    launches = w.offer(offer())
    w.run_all(launches)
    (sent,) = probes(w.step())
    (inst,) = w.p.app_instances("/web")
    assert sent.url == f"https://h1:{inst.ports[0]}/ready"


def test_a_rolling_restart_keeps_old_instances_until_new_ones_are_ready():
    w = World()
    spec = app(instances=2, portDefinitions=PORTS)  # at first without a readiness check
    w.p.deploy({"/web": spec}, w.now)
    w.run_all(w.offer(offer()))
    w.step()
    assert not w.p.deployments
    old = {i.task_id for i in w.p.app_instances("/web")}
    # the new configuration brings the check: the old instances count as ready
    w.p.deploy({"/web": app(instances=2, portDefinitions=PORTS, readinessChecks=[CHECK])}, w.now)
    effects = w.step()
    assert not [e for e in effects if isinstance(e, Kill)]  # old ones kept: none ready yet
    launches = w.offer(offer())
    new = [t["task_id"]["value"] for launch in launches for t in launch.tasks]
    assert len(new) == 2
    w.run_all(launches)
    sent = probes(w.step())
    assert {p.task_id for p in sent} == set(new)  # only the new configuration is checked
    assert not [e for e in w.step() if isinstance(e, Kill)]  # running, but not ready
    w.p.readiness(new[0], 200, "", w.now)
    kills = [e for e in w.step() if isinstance(e, Kill)]
    assert len(kills) == 1 and kills[0].task_id in old  # one ready: one old one goes
    w.update(kills[0].task_id, "TASK_KILLED")
    w.step(2.5)
    w.p.readiness(new[1], 200, "", w.now)
    kills = [e for e in w.step() if isinstance(e, Kill)]
    assert len(kills) == 1 and kills[0].task_id in old
    w.update(kills[0].task_id, "TASK_KILLED")
    w.step()
    assert not w.p.deployments
    assert {i.task_id for i in w.p.app_instances("/web")} == set(new)
