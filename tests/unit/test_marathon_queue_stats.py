"""``/v2/queue``'s offer statistics and ``api_post_event`` as Marathon writes them: the
reject summaries over Marathon's whole reason funnel, ``lastUnusedOffers`` on
``embed=lastUnusedOffers``, the delay in whole seconds, no ``role`` (the marathon client
cannot read it); an ``api_post_event`` with the client's address and the request's path for
the requests Marathon posts it for, and the stream's attach and detach events on the bus."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp.test_utils import TestClient

from butte.frameworks.marathon.appdef import normalize_app
from butte.frameworks.marathon.main import EventHub
from butte.frameworks.marathon.model import Launch, Publish
from butte.frameworks.marathon.planner import Planner, PlannerConfig
from tests.unit.test_marathon_api import APP, Shell, call, run
from tests.unit.test_marathon_planner import World, app, offer

# Marathon's NoOfferMatchReason.reasonFunnel, the order of every reject summary.
FUNNEL = [
    "UnfulfilledRole",
    "UnfulfilledConstraint",
    "NoCorrespondingReservationFound",
    "AgentMaintenance",
    "InsufficientCpus",
    "InsufficientMemory",
    "InsufficientDisk",
    "InsufficientGpus",
    "InsufficientPorts",
    "DeclinedScarceResources",
]


def declined(steps: list[dict[str, Any]]) -> dict[str, int]:
    """The reasons of a reject summary that declined something, with their counts."""
    return {s["reason"]: s["declined"] for s in steps if s["declined"]}


def test_an_app_bigger_than_every_agent_says_insufficient_cpus_on_each_offer():
    w = World()
    w.p.deploy({"/big": app("/big", cpus=64, instances=2)}, w.now)
    assert w.offer(offer("a1", "h1"), offer("a2", "h2")) == []
    w.now += 10
    assert w.offer(offer("a1", "h1")) == []  # a newer offer of a1 replaces its last one
    (item,) = w.p.queue(w.now)
    # Without Marathon 1.9's role: the marathon client 0.13.0 fails on a field it does not know.
    assert item["count"] == 2 and "role" not in item
    assert item["delay"] == {"timeLeftSeconds": 0, "overdue": True}
    summary = item["processedOffersSummary"]
    assert summary["processedOffersCount"] == 3 and summary["unusedOffersCount"] == 3
    assert summary["lastUnusedOfferAt"] == "1970-01-01T00:16:50.000Z"
    assert "lastUsedOfferAt" not in summary  # absent until an offer is used, as Marathon's
    # Every reason of Marathon's funnel, in its order, each with the offers that reached it.
    last = summary["rejectSummaryLastOffers"]
    assert [s["reason"] for s in last] == FUNNEL
    assert declined(last) == {"InsufficientCpus": 2}  # the last offer of each agent
    assert [s["processed"] for s in last] == [2, 2, 2, 2, 2, 0, 0, 0, 0, 0]
    attempt = summary["rejectSummaryLaunchAttempt"]
    assert declined(attempt) == {"InsufficientCpus": 3}
    assert [s["processed"] for s in attempt] == [3, 3, 3, 3, 3, 0, 0, 0, 0, 0]
    assert "lastUnusedOffers" not in item
    (with_offers,) = w.p.queue(w.now, embed_offers=True)
    unused = with_offers["lastUnusedOffers"]
    assert [(u["offer"]["agentId"], u["reason"]) for u in unused] == [
        ("a2", ["InsufficientCpus"]),
        ("a1", ["InsufficientCpus"]),
    ]
    first = unused[1]["offer"]
    assert first["hostname"] == "h1" and first["id"].startswith("o")
    assert first["resources"] == [
        {"name": "cpus", "role": "*", "scalar": 4.0},
        {"name": "mem", "role": "*", "scalar": 4096.0},
        {"name": "ports", "role": "*", "ranges": [{"begin": 31000, "end": 32000}]},
    ]
    assert unused[1]["timestamp"] == "1970-01-01T00:16:50.000Z"


def test_an_app_alone_in_the_queue_is_told_why_even_when_no_offer_could_ever_fit():
    # An offer smaller than what every waiting app needs used to be passed over without a
    # look: the queue then showed no processed offer and no reason at all.
    w = World()
    w.p.deploy({"/big": app("/big", cpus=64, mem=100000)}, w.now)
    w.offer(offer("a1", "h1"))
    summary = w.p.queue(w.now, embed_offers=True)[0]
    assert summary["processedOffersSummary"]["processedOffersCount"] == 1
    assert summary["lastUnusedOffers"][0]["reason"] == ["InsufficientCpus", "InsufficientMemory"]
    # counted once, under the first reason of the funnel
    assert declined(summary["processedOffersSummary"]["rejectSummaryLaunchAttempt"]) == {
        "InsufficientCpus": 1
    }


def test_a_constraint_no_agent_meets_is_an_unfulfilled_constraint():
    w = World()
    spec = app("/rack", constraints=[["rack", "CLUSTER", "r9"]])
    w.p.deploy({"/rack": spec}, w.now)
    offers = [offer(f"a{i}", f"h{i}", attributes={"rack": f"r{i}"}) for i in (1, 2, 3)]
    assert w.offer(*offers) == []
    (item,) = w.p.queue(w.now, embed_offers=True)
    summary = item["processedOffersSummary"]
    assert declined(summary["rejectSummaryLastOffers"]) == {"UnfulfilledConstraint": 3}
    assert [s["processed"] for s in summary["rejectSummaryLastOffers"]][:3] == [3, 3, 0]
    assert {tuple(u["reason"]) for u in item["lastUnusedOffers"]} == {("UnfulfilledConstraint",)}
    assert item["lastUnusedOffers"][0]["offer"]["attributes"] == [{"name": "rack", "text": "r1"}]
    # Short of cpus as well: both reasons are listed, the funnel counts the constraint.
    w.p.deploy({"/rack": {**spec, "cpus": 64.0}}, w.now, force=True)
    w.offer(offer("a1", "h1", attributes={"rack": "r1"}))
    (item,) = w.p.queue(w.now, embed_offers=True)
    assert item["lastUnusedOffers"][0]["reason"] == ["InsufficientCpus", "UnfulfilledConstraint"]
    assert declined(item["processedOffersSummary"]["rejectSummaryLastOffers"]) == {
        "UnfulfilledConstraint": 3
    }


def test_offers_without_an_accepted_role_are_an_unfulfilled_role():
    p = Planner(PlannerConfig(role="web"), seed=1)
    p.subscribed("fw-1", 1000.0)
    spec = normalize_app(
        {"id": "/r", "cmd": "x", "cpus": 0.1, "mem": 16, "acceptedResourceRoles": ["web"]},
        role="web",
    )
    p.deploy({"/r": spec}, 1000.0)
    p.tick(1000.0)
    p.offers([offer()], 1000.0)
    (item,) = p.queue(1000.0, embed_offers=True)
    assert item["lastUnusedOffers"][0]["reason"] == [
        "InsufficientCpus",
        "InsufficientMemory",
        "UnfulfilledRole",
    ]
    assert declined(item["processedOffersSummary"]["rejectSummaryLastOffers"]) == {
        "UnfulfilledRole": 1
    }


def test_a_backed_off_app_shows_whole_seconds_and_statistics_end_with_the_launch():
    w = World()
    w.p.deploy({"/web": app(instances=1, backoffSeconds=7.6)}, w.now)
    (launch,) = w.offer(offer())
    w.p.tick(w.now)
    assert w.p.queue(w.now) == []  # nothing left to launch: not queued
    w.update(launch.tasks[0]["task_id"]["value"], "TASK_FAILED")
    w.p.tick(w.now)
    (item,) = w.p.queue(w.now + 0.3)
    assert item["delay"] == {"timeLeftSeconds": 7, "overdue": False}
    # A new launch attempt: the offer used by the last one is not counted again.
    assert item["processedOffersSummary"]["processedOffersCount"] == 0
    assert "lastUsedOfferAt" not in item["processedOffersSummary"]
    assert declined(item["processedOffersSummary"]["rejectSummaryLaunchAttempt"]) == {}


def test_queue_route_embeds_last_unused_offers_only_when_asked():
    async def test(client: TestClient, shell: Shell) -> None:
        status, _ = await call(client, "POST", "/v2/apps", {**APP, "id": "/big", "cpus": 99})
        assert status == 201
        shell.launch("/big")
        status, body = await call(client, "GET", "/v2/queue")
        assert status == 200 and "lastUnusedOffers" not in body["queue"][0]
        # Marathon's order (count, delay, since, processedOffersSummary, app), without its
        # 1.9 role, which the marathon client 0.13.0 cannot read
        assert list(body["queue"][0])[:2] == ["count", "delay"]
        assert list(body["queue"][0])[-1] == "app"
        status, body = await call(client, "GET", "/v2/queue?embed=lastUnusedOffers")
        assert [u["reason"] for u in body["queue"][0]["lastUnusedOffers"]] == [["InsufficientCpus"]]

    run(test)


def api_posts(shell: Shell) -> list[dict[str, Any]]:
    events = [e.event for e in shell.effects if isinstance(e, Publish)]
    shell.effects.clear()
    return [e for e in events if e["eventType"] == "api_post_event"]


def test_api_post_event_carries_the_client_address_and_the_request_path():
    async def test(client: TestClient, shell: Shell) -> None:
        status, _ = await call(client, "POST", "/v2/apps?force=true", {**APP, "id": "/a/web"})
        assert status == 201
        (event,) = api_posts(shell)
        assert event["clientIp"] == "127.0.0.1"
        assert event["uri"] == "/v2/apps"  # the path, without the query
        assert event["appDefinition"]["id"] == "/a/web"
        assert event["appDefinition"]["version"] == shell.planner.apps["/a/web"]["version"]
        for method in ("PUT", "PATCH"):
            status, _ = await call(client, method, "/v2/apps/a/web?force=true", {"mem": 20})
            assert status == 200
            (event,) = api_posts(shell)
            assert (event["clientIp"], event["uri"]) == ("127.0.0.1", "/v2/apps/a/web")
            assert event["appDefinition"]["mem"] == 20
        status, _ = await call(client, "PUT", "/v2/apps/a/new", APP)  # created by a PUT
        assert status == 201
        assert [e["uri"] for e in api_posts(shell)] == ["/v2/apps/a/new"]

    run(test)


def test_no_api_post_event_where_marathon_posts_none():
    # Marathon's AppsResource posts it on create and on a single app's update only: not on
    # deletes, restarts, batch updates, group changes or kills with scale.
    async def test(client: TestClient, shell: Shell) -> None:
        await call(client, "POST", "/v2/apps", {**APP, "id": "/b/one", "instances": 2})
        shell.launch("/b/one")
        api_posts(shell)
        task = sorted(shell.planner.by_app["/b/one"])[0]
        requests: list[tuple[str, str, Any]] = [
            ("POST", "/v2/apps/b/one/restart?force=true", None),
            ("PUT", "/v2/apps?force=true", [{"id": "/b/one", "mem": 24}]),
            ("PATCH", "/v2/apps?force=true", [{"id": "/b/one", "mem": 28}]),
            ("PUT", "/v2/groups/b?force=true", {"scaleBy": 2}),
            ("POST", "/v2/groups", {"id": "/g", "apps": [{**APP, "id": "/g/x"}]}),
            ("DELETE", f"/v2/apps/b/one/tasks/{task}?scale=true&force=true", None),
            ("DELETE", "/v2/apps/b/one?force=true", None),
        ]
        for method, path, body in requests:
            status, answer = await call(client, method, path, body)
            assert status in (200, 201, 202), (method, path, answer)
            assert api_posts(shell) == [], (method, path)

    run(test)


def test_an_offer_used_by_one_app_counts_as_unused_for_the_app_it_cannot_hold():
    w = World()
    w.p.deploy({"/small": app("/small", instances=2), "/big": app("/big", cpus=64)}, w.now)
    (launch,) = w.offer(offer())
    assert isinstance(launch, Launch) and len(launch.tasks) == 2
    (item,) = w.p.queue(w.now)  # /small has nothing left to launch
    assert item["app"]["id"] == "/big"
    summary = item["processedOffersSummary"]
    assert (summary["processedOffersCount"], summary["unusedOffersCount"]) == (1, 1)
    assert declined(summary["rejectSummaryLastOffers"]) == {"InsufficientCpus": 1}
    assert [s["processed"] for s in summary["rejectSummaryLaunchAttempt"]] == [1] * 5 + [0] * 5


async def next_event(response: Any) -> dict[str, Any]:
    """The next event of an open ``/v2/events`` stream."""
    while True:
        line = await asyncio.wait_for(response.content.readline(), 5)
        if line.startswith(b"data: "):
            return json.loads(line[len(b"data: ") :])


def test_stream_attach_and_detach_are_events_every_stream_sees_through_its_filter():
    async def test(client: TestClient, shell: Shell) -> None:
        shell.hub = EventHub()
        watcher = await client.get("/v2/events")
        attached = await next_event(watcher)
        assert attached["eventType"] == "event_stream_attached"
        assert attached["remoteAddress"] == "127.0.0.1"
        only_posts = await client.get("/v2/events?event_type=api_post_event")
        assert (await next_event(watcher))["eventType"] == "event_stream_attached"
        await call(client, "POST", "/v2/apps", {**APP, "id": "/s/web"})
        for effect in shell.effects:  # what the service's flush hands the hub
            if isinstance(effect, Publish):
                shell.hub.publish(effect.event)
        # The filtered stream's first event is the one it asked for: no attach of its own.
        post = await next_event(only_posts)
        assert (post["eventType"], post["uri"]) == ("api_post_event", "/v2/apps")
        only_posts.close()
        # Its end is noticed on a write to it, as Marathon's: posts go on until it is.
        seen: list[str] = []

        async def collect() -> None:
            while True:
                seen.append((await next_event(watcher))["eventType"])

        collector = asyncio.ensure_future(collect())
        for _ in range(100):
            if "event_stream_detached" in seen:
                break
            shell.hub.publish({"eventType": "api_post_event", "uri": "/x"})
            await asyncio.sleep(0.05)
        collector.cancel()
        assert "event_stream_detached" in seen
        watcher.close()

    run(test)


def maintenance_offer(start: float, duration: float | None = None) -> dict[str, Any]:
    """An offer of an agent the master has in a maintenance window (docs/maintenance.md)."""
    window: dict[str, Any] = {"start": {"nanoseconds": int(start * 1e9)}}
    if duration is not None:
        window["duration"] = {"nanoseconds": int(duration * 1e9)}
    return {**offer(), "unavailability": window}


def test_offers_of_an_agent_in_maintenance_are_not_used_and_say_agent_maintenance():
    def launched(config: PlannerConfig, o: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        p = Planner(config, seed=1)
        p.subscribed("fw-1", 1000.0)
        p.deploy({"/web": app()}, 1000.0)
        p.tick(1000.0)
        p.offers([o], 1000.0)
        n = sum(len(e.tasks) for e in p.take_effects() if isinstance(e, Launch))
        queue = p.queue(1000.0, embed_offers=True)
        return n, queue[0] if queue else {}

    n, item = launched(PlannerConfig(), maintenance_offer(990.0))
    assert n == 0
    # As Marathon's ResourceMatcher: the unavailability is an unfulfilled constraint too,
    # and the funnel counts the offer under that, its first reason.
    assert item["lastUnusedOffers"][0]["reason"] == ["UnfulfilledConstraint", "AgentMaintenance"]
    summary = item["processedOffersSummary"]
    assert declined(summary["rejectSummaryLaunchAttempt"]) == {"UnfulfilledConstraint": 1}
    assert declined(summary["rejectSummaryLastOffers"]) == {"UnfulfilledConstraint": 1}
    # A window ahead (beyond --draining_seconds) or over, or --disable_maintenance_mode: used.
    assert launched(PlannerConfig(), maintenance_offer(1100.0))[0] == 1
    assert launched(PlannerConfig(), maintenance_offer(900.0, duration=50))[0] == 1
    assert launched(PlannerConfig(), maintenance_offer(990.0, duration=50))[0] == 0
    assert launched(PlannerConfig(maintenance_mode=False), maintenance_offer(990.0))[0] == 1
    assert launched(PlannerConfig(draining_seconds=200), maintenance_offer(1100.0))[0] == 0


def gpu_offer() -> dict[str, Any]:
    o = offer()
    o["resources"].append({"name": "gpus", "type": "SCALAR", "scalar": {"value": 2}})
    return o


def test_an_app_without_gpus_leaves_offers_with_gpus_alone_unless_unrestricted():
    def launched(config: PlannerConfig, spec: dict[str, Any]) -> tuple[int, list[dict]]:
        p = Planner(config, seed=1)
        p.subscribed("fw-1", 1000.0)
        p.deploy({spec["id"]: spec}, 1000.0)
        p.tick(1000.0)
        p.offers([gpu_offer()], 1000.0)
        n = sum(len(e.tasks) for e in p.take_effects() if isinstance(e, Launch))
        return n, p.queue(1000.0, embed_offers=True)

    n, (item,) = launched(PlannerConfig(), app())
    assert n == 0
    assert item["lastUnusedOffers"][0]["reason"] == ["DeclinedScarceResources"]
    summary = item["processedOffersSummary"]
    assert declined(summary["rejectSummaryLaunchAttempt"]) == {"DeclinedScarceResources": 1}
    # Too small as well: every reason, the funnel's first counted.
    n, (item,) = launched(PlannerConfig(), app(cpus=64))
    assert item["lastUnusedOffers"][0]["reason"] == ["InsufficientCpus", "DeclinedScarceResources"]
    # The app's label, the flag, or an app that needs GPUs: placed there.
    assert launched(PlannerConfig(), app(gpus=1))[0] == 1
    assert launched(PlannerConfig(gpu_scheduling_behavior="unrestricted"), app())[0] == 1
    unrestricted = app(labels={"GPU_SCHEDULING_BEHAVIOR": "unrestricted"})
    assert launched(PlannerConfig(), unrestricted)[0] == 1
    restricted = app(labels={"GPU_SCHEDULING_BEHAVIOR": "restricted"})
    assert launched(PlannerConfig(gpu_scheduling_behavior="unrestricted"), restricted)[0] == 0
    # A label naming no behaviour is ignored, as Marathon ignores it.
    other = app(labels={"GPU_SCHEDULING_BEHAVIOR": "sometimes"})
    assert launched(PlannerConfig(), other)[0] == 0


def test_marathon_flags_reach_the_planner():
    from butte.cli.main import build_parser
    from butte.frameworks.marathon.main import Service

    argv = ["marathon", "--master", "127.0.0.1:1", "--work_dir", "/nonexistent"]
    config = Service(build_parser(argv).parse_args(argv)).planner.config
    assert (config.maintenance_mode, config.draining_seconds) == (True, 0.0)
    assert config.gpu_scheduling_behavior == "restricted"
    more = [
        *argv,
        "--disable_maintenance_mode",
        "--draining_seconds",
        "60",
        "--gpu_scheduling_behavior",
        "unrestricted",
    ]
    config = Service(build_parser(more).parse_args(more)).planner.config
    assert (config.maintenance_mode, config.draining_seconds) == (False, 60.0)
    assert config.gpu_scheduling_behavior == "unrestricted"
