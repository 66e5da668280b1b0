"""The master's read-only views for the web UI, on the pure core: the utilisation ring buffer
(butte/master/history.py), the agent, framework and role listings (butte/master/browse.py),
the task listing (butte/master/task_listing.py),
the change summaries (butte/master/ui_feed.py) and matching tasks to containers
(butte/master/task_usage.py)."""

from __future__ import annotations

import time

import pytest

from butte.master import browse, history, operator_views, task_listing, task_usage
from butte.master.state_json import legacy_task
from butte.master.ui_feed import ChangeSummary
from tests.unit.master_kit import Harness, command_task, launch_body


def _cluster(tasks: int = 1, cpus: float = 1.0) -> tuple[Harness, str, list[str], list[str]]:
    """Two agents of 4 CPUs, one framework, ``tasks`` running tasks of ``cpus`` on one agent:
    (harness, framework id, agent ids, task ids, newest last)."""
    h = Harness()
    agents = [h.register_agent("c1"), h.register_agent("c2")]
    fid, stream = h.subscribe("ui")
    h.allocate()
    offer = next(o for o in h.offers(stream) if o["agent_id"]["value"] == agents[0])
    ids = [f"t{i}" for i in range(tasks)]
    specs = [command_task(t, offer, f"cpus:{cpus};mem:128") for t in ids]
    h.call(fid, stream, launch_body(offer, *specs))
    for task_id in ids:
        h.clock.advance(1.0)
        h.status_update("c1", fid, task_id, "TASK_RUNNING", agents[0])
    return h, fid, agents, ids


# -- history ----------------------------------------------------------------------------------


def test_sample_holds_used_total_and_offered_of_each_resource():
    h, *_ = _cluster(tasks=2)
    sample = history.utilisation_sample(h.master, 1000.0)
    assert len(sample) == 13 and sample[0] == 1_000_000
    cpus_used, cpus_total, cpus_offered = sample[1:4]
    assert (cpus_used, cpus_total) == (2.0, 8.0)
    assert cpus_offered >= 0.0
    mem_used, mem_total = sample[4:6]
    assert (mem_used, mem_total) == (256.0, 8192.0)


def test_ring_buffer_keeps_the_window_and_answers_what_is_new():
    ring = history.UtilisationHistory(interval=5.0, window=20.0)
    for i in range(10):
        ring.add((float(i * 5000), *([0.0] * 12)))
    kept = ring.to_json()["samples"]
    assert [s[0] for s in kept] == [30000.0, 35000.0, 40000.0, 45000.0]
    assert [s[0] for s in ring.to_json(since_ms=35000.0)["samples"]] == [40000.0, 45000.0]
    assert ring.to_json(since_ms=45000.0)["samples"] == []
    assert len(ring.to_json()["fields"]) == 13
    with pytest.raises(ValueError):
        history.UtilisationHistory(interval=0.0)


# -- listings ---------------------------------------------------------------------------------


def test_agent_listing_sorts_filters_pages_and_finds_by_id():
    h, _, agents, _ = _cluster(tasks=3)
    listing = browse.build_agent_listing(h.master, 0.0)
    busy = listing.page(browse.PageQuery(sort="cpus", descending=True))
    assert busy["total"] == busy["count"] == 2
    first = busy["rows"][0]
    assert first["id"] == agents[0]
    assert first["TASK_RUNNING"] == 3
    assert first["used_resources"]["cpus"] == 3.0 and first["resources"]["cpus"] == 4.0
    idle = listing.page(browse.PageQuery(sort="cpus"))
    assert idle["rows"][0]["id"] == agents[1]
    one = listing.page(browse.PageQuery(limit=1, offset=1, sort="id"))
    assert one["count"] == 2 and len(one["rows"]) == 1
    found = listing.page(browse.PageQuery(q=agents[1][-4:].lower()))
    assert [r["id"] for r in found["rows"]] == [agents[1]]
    by_id = browse.agent_rows_by_id(h.master, [agents[0], "nope"])
    assert by_id == [first]  # the same row, found without the listing
    with pytest.raises(browse.QueryError):
        listing.page(browse.PageQuery(sort="bogus"))


def test_framework_listing_counts_tasks_and_what_they_hold():
    h, fid, _, _ = _cluster(tasks=2)
    live, done = browse.build_framework_listings(h.master, 0.0)
    row = live.page(browse.PageQuery())["rows"][0]
    assert row["id"] == fid and row["name"] == "ui" and row["roles"] == ["*"]
    assert row["TASK_RUNNING"] == 2 and row["used_resources"]["cpus"] == 2.0
    assert row["completed"] is False
    assert done.page(browse.PageQuery())["total"] == 0
    assert browse.framework_rows_by_id(h.master, [fid], False) == [row]
    assert browse.framework_rows_by_id(h.master, [fid], True) == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"limit": "x"}, "integers"),
        ({"limit": "100000"}, "between"),
        ({"offset": "-1"}, ">= 0"),
        ({"order": "up"}, "'order'"),
    ],
)
def test_bad_page_queries_are_refused(query, message):
    with pytest.raises(browse.QueryError, match=message):
        browse.PageQuery.parse(query)


def test_task_listing_newest_first_filtered_by_the_master():
    h, fid, agents, ids = _cluster(tasks=5, cpus=0.5)
    listing = task_listing.build_task_listing(h.master)
    page = listing.page(task_listing.TaskQuery(limit=2), legacy_task)
    assert [t["id"] for t in page["tasks"]] == ["t4", "t3"]
    assert page["has_more"] is True and page["total"] == 5
    last = listing.page(task_listing.TaskQuery(offset=4, limit=2), legacy_task)
    assert [t["id"] for t in last["tasks"]] == ["t0"] and last["has_more"] is False
    # The records are the master's: a state change shows without a rebuild.
    h.status_update("c1", fid, "t2", "TASK_FAILED", agents[0], message="boom")
    failed = listing.page(task_listing.TaskQuery.parse({"state": "TASK_FAILED"}), legacy_task)
    assert [t["id"] for t in failed["tasks"]] == ["t2"]
    assert failed["tasks"][0]["statuses"][-1]["message"] == "boom"
    active = listing.page(
        task_listing.TaskQuery.parse({"state": "active", "limit": "10"}), legacy_task
    )
    assert len(active["tasks"]) == 4
    assert (
        listing.page(task_listing.TaskQuery.parse({"q": "T3"}), legacy_task)["tasks"][0]["id"]
        == "t3"
    )
    elsewhere = task_listing.TaskQuery.parse({"agent_id": agents[1]})
    assert listing.page(elsewhere, legacy_task)["tasks"] == []
    with pytest.raises(browse.QueryError, match="'state'"):
        task_listing.TaskQuery.parse({"state": "TASK_BOGUS"})


def test_expensive_builds_are_reused_for_a_while_cheap_ones_never():
    builds = []

    def slow() -> int:
        time.sleep(0.02)
        builds.append(1)
        return len(builds)

    reused = browse.Rebuilt(slow, cheap_build=0.001, staleness_factor=50.0)
    assert reused.current() == 1 and reused.current() == 1
    # A page that saw a change after this build learns when to ask again.
    assert 0.0 < reused.freshness()["rebuilt_in_seconds"] <= 5.0
    fresh = browse.Rebuilt(slow, cheap_build=10.0)
    assert fresh.current() == 2 and fresh.current() == 3
    assert fresh.freshness()["rebuilt_in_seconds"] == 0.0


# -- change summaries -------------------------------------------------------------------------


def test_change_summary_names_what_changed_once():
    h, fid, agents, ids = _cluster(tasks=2)
    fw = h.master.frameworks[fid]
    task = fw.tasks["t0"]
    summary = ChangeSummary()
    summary.add(operator_views.task_added(task))
    summary.add(operator_views.task_updated(fw.tasks["t1"], fw.tasks["t1"].statuses[-1]))
    summary.add(operator_views.agent_removed(agents[1]))
    summary.add(operator_views.framework_updated(h.master, fw))
    summary.add({"type": "HEARTBEAT"})
    record = summary.take()
    assert record is not None and record["type"] == "CHANGES"
    changes = record["changes"]
    assert changes["tasks"] == ["t0", "t1"]
    assert set(changes["agents"]) == {agents[0], agents[1]}
    assert changes["frameworks"] == [fid]
    assert changes["tasks_added"] == 1 and changes["agents_added_or_removed"] == 1
    assert changes["truncated"] is False
    assert summary.take() is None


def test_change_summary_caps_ids_and_says_so():
    summary = ChangeSummary(max_ids=3)
    for i in range(5):
        summary.add({"type": "AGENT_REMOVED", "agent_removed": {"agent_id": {"value": f"a{i}"}}})
    changes = summary.take()["changes"]
    assert changes["agents"] == ["a0", "a1", "a2"] and changes["truncated"] is True


# -- task usage -------------------------------------------------------------------------------


def test_task_usage_matches_the_tasks_container():
    h, fid, agents, _ = _cluster(tasks=1)
    task = h.master.frameworks[fid].tasks["t0"]
    stats = {"timestamp": 1.0, "cpus_user_time_secs": 0.5, "mem_rss_bytes": 1024}
    containers = [
        {"framework_id": fid, "executor_id": "other", "container_id": "x", "statistics": {}},
        {"framework_id": fid, "executor_id": "t0", "container_id": "c-1", "statistics": stats},
    ]
    entry = task_usage.usage_entry(task, containers, None, 1)
    assert entry["container_id"] == "c-1" and entry["statistics"] == stats
    assert entry["agent_id"] == agents[0]
    missing = task_usage.usage_entry(task, containers[:1], None, 1)
    assert "no container" in missing["error"]
    refused = task_usage.usage_entry(task, None, "the agent answered 500", 1)
    assert refused["error"] == "the agent answered 500"
    assert task_usage.find_tasks(h.master, ["t0", "nope"]) == {"t0": task, "nope": None}
    # A task the caller may not view (view_tasks) is found as an unknown one.
    hidden = task_usage.find_tasks(h.master, ["t0"], lambda t: t.framework_id != fid)
    assert hidden == {"t0": None}


def test_roles_match_the_legacy_endpoint_amounts():
    h, fid, agents, _ = _cluster(tasks=3)
    h.register_agent("c3", resources="cpus(analytics):2;mem(analytics):512;cpus:2;mem:512")
    h.pump(h.master.update_weights({"analytics": 2.5}))
    rows = {r["name"]: r for r in browse.build_roles(h.master)}
    assert set(rows) == set(operator_views.role_names(h.master))
    star, analytics = rows["*"], rows["analytics"]
    assert star["allocated"]["cpus"] == 3.0 and star["frameworks"] == [fid]
    assert analytics["weight"] == 2.5 and analytics["reserved"]["cpus"] == 2.0
    assert analytics["reserved"]["mem"] == 512.0 and star["reserved"]["cpus"] == 0.0
    usage = operator_views.role_usage(h.master)
    for role, (allocated, offered, _) in usage.items():
        assert rows[role]["allocated"]["cpus"] == allocated.scalar("cpus")
        assert rows[role]["offered"]["cpus"] == offered.scalar("cpus")
