"""The pure gang planner of ``butte mpi`` (butte.frameworks.mpi.gang)."""

from __future__ import annotations

import random

from butte.core import task_states as ts
from butte.core.resources import Resources, parse_resources
from butte.frameworks.mpi import gang

RANK = Resources.scalars(cpus=1, mem=128)


def offer(oid: str, agent: str, cpus: float, mem: float = 1024) -> gang.Offer:
    return gang.Offer(oid, agent, f"host-{agent}", Resources.scalars(cpus=cpus, mem=mem))


def of_type(effects: list[gang.Effect], kind: type) -> list:
    return [e for e in effects if isinstance(e, kind)]


def test_place_uses_fewest_agents_and_respects_per_agent() -> None:
    spec = gang.GangSpec(ranks=4, rank_resources=RANK)
    nodes = gang.place([offer("o1", "a", 2), offer("o2", "b", 4), offer("o3", "c", 1)], spec)
    assert nodes is not None
    assert [(n.agent_id, n.ranks) for n in nodes] == [("b", 4)]
    capped = gang.GangSpec(ranks=4, rank_resources=RANK, per_agent=2)
    nodes = gang.place([offer("o1", "a", 2), offer("o2", "b", 4), offer("o3", "c", 1)], capped)
    assert nodes is not None
    assert sorted((n.agent_id, n.ranks) for n in nodes) == [("a", 2), ("b", 2)]
    # Two offers from one agent add up.
    nodes = gang.place([offer("o1", "a", 1), offer("o2", "a", 1)], gang.GangSpec(2, RANK))
    assert nodes is not None and nodes[0].offer_ids == ("o1", "o2") and nodes[0].ranks == 2
    # Memory limits slots too.
    assert gang.place([offer("o1", "a", 8, mem=200)], gang.GangSpec(2, RANK)) is None


def test_holds_partial_offers_then_launches_all_ranks_at_once() -> None:
    planner = gang.GangPlanner(gang.GangSpec(ranks=3, rank_resources=RANK, hold_seconds=5))
    effects = planner.on_offers([offer("o1", "a", 2)], now=0.0)
    assert not of_type(effects, gang.Launch) and not of_type(effects, gang.Decline)
    assert "holding 2/3 rank slots on 1 agent(s)" in of_type(effects, gang.Progress)[0].message
    effects = planner.on_offers([offer("o2", "b", 2), offer("o3", "c", 4)], now=1.0)
    (launch,) = of_type(effects, gang.Launch)
    assert sum(n.ranks for n in launch.nodes) == 3
    assert [n.agent_id for n in launch.nodes] == ["c"]
    # The unused held offers go back; no further offers are wanted.
    (decline,) = of_type(effects, gang.Decline)
    assert set(decline.offer_ids) == {"o1", "o2"}
    assert of_type(effects, gang.Suppress)
    assert planner.phase is gang.Phase.LAUNCHING


def test_offers_without_a_slot_are_not_held() -> None:
    planner = gang.GangPlanner(gang.GangSpec(ranks=2, rank_resources=RANK))
    effects = planner.on_offers([offer("o1", "a", 0.5)], now=0.0)
    assert of_type(effects, gang.Decline)[0].offer_ids == ("o1",)
    assert planner.held == {} and planner.hold_since is None


def test_releases_everything_after_the_hold_and_backs_off_growing() -> None:
    spec = gang.GangSpec(ranks=4, rank_resources=RANK, hold_seconds=2, backoff_initial=1)
    planner = gang.GangPlanner(spec)
    planner.on_offers([offer("o1", "a", 2)], now=0.0)
    assert planner.on_tick(1.9, jitter=0.5) == []
    effects = planner.on_tick(2.0, jitter=0.5)
    (decline,) = of_type(effects, gang.Decline)
    assert decline.offer_ids == ("o1",) and decline.refuse_seconds == 1.0
    assert planner.phase is gang.Phase.BACKOFF and planner.held == {}
    # Offers arriving during the backoff are refused for the rest of it.
    later = planner.on_offers([offer("o2", "b", 2)], now=2.5)
    assert of_type(later, gang.Decline)[0].refuse_seconds == 0.5
    assert of_type(planner.on_tick(3.0, 0.5), gang.Revive)
    planner.on_offers([offer("o3", "a", 2)], now=3.0)
    effects = planner.on_tick(5.0, jitter=0.5)
    assert of_type(effects, gang.Decline)[0].refuse_seconds == 2.0  # doubled


def _launched(ranks: int = 2) -> gang.GangPlanner:
    planner = gang.GangPlanner(gang.GangSpec(ranks=ranks, rank_resources=RANK, per_agent=1))
    planner.on_offers([offer(f"o{i}", f"a{i}", 1) for i in range(ranks)], now=0.0)
    assert planner.phase is gang.Phase.LAUNCHING
    return planner


def test_launcher_starts_only_when_every_node_runs() -> None:
    planner = _launched(2)
    assert not of_type(planner.on_update(0, ts.RUNNING, "", 1.0), gang.StartLauncher)
    (start,) = of_type(planner.on_update(1, ts.RUNNING, "", 1.0), gang.StartLauncher)
    assert len(start.nodes) == 2
    assert planner.on_launcher_exit(0, 2.0) == []
    planner.on_update(0, ts.FINISHED, "", 2.1)
    (done,) = of_type(planner.on_update(1, ts.FINISHED, "", 2.2), gang.Done)
    assert done.exit_status == 0


def test_a_node_lost_before_the_gang_runs_kills_the_rest_and_retries_all() -> None:
    planner = _launched(2)
    planner.on_update(0, ts.RUNNING, "", 1.0)
    effects = planner.on_update(1, ts.LOST, "agent gone", 1.0)
    assert of_type(effects, gang.Kill)[0].node_indexes == (0,)
    assert not of_type(effects, gang.StartLauncher)
    effects = planner.on_update(0, ts.KILLED, "", 1.5)
    assert planner.phase is gang.Phase.BACKOFF
    assert of_type(planner.on_tick(10.0, 0.0), gang.Revive)
    effects = planner.on_offers([offer("p0", "a0", 1), offer("p1", "a1", 1)], now=10.0)
    (launch,) = of_type(effects, gang.Launch)
    assert launch.attempt == 2


def test_gives_up_after_max_launch_attempts() -> None:
    spec = gang.GangSpec(ranks=1, rank_resources=RANK, max_launch_attempts=1)
    planner = gang.GangPlanner(spec)
    planner.on_offers([offer("o1", "a", 1)], now=0.0)
    (done,) = of_type(planner.on_update(0, ts.ERROR, "bad", 0.5), gang.Done)
    assert done.exit_status == 1 and "failed to start 1 time(s)" in done.message


def test_a_failing_node_fails_the_job_kills_the_rest_and_stops_mpirun() -> None:
    planner = _launched(3)
    for i in range(3):
        planner.on_update(i, ts.RUNNING, "", 1.0)
    effects = planner.on_update(1, ts.FAILED, "Command exited with status 7", 2.0)
    assert of_type(effects, gang.Kill)[0].node_indexes == (0, 2)
    assert of_type(effects, gang.StopLauncher)
    planner.on_update(0, ts.KILLED, "", 2.1)
    assert planner.on_update(2, ts.KILLED, "", 2.2) == []  # mpirun has not exited yet
    (done,) = of_type(planner.on_launcher_exit(143, 2.5), gang.Done)
    assert done.exit_status == 143 and "node1" in done.message


def test_mpirun_failing_kills_every_node_and_keeps_its_status() -> None:
    planner = _launched(2)
    planner.on_update(0, ts.RUNNING, "", 1.0)
    planner.on_update(1, ts.RUNNING, "", 1.0)
    effects = planner.on_launcher_exit(7, 2.0)
    assert of_type(effects, gang.Kill)[0].node_indexes == (0, 1)
    planner.on_update(0, ts.KILLED, "", 2.1)
    (done,) = of_type(planner.on_update(1, ts.KILLED, "", 2.2), gang.Done)
    assert done.exit_status == 7


def test_nodes_that_linger_after_mpirun_succeeded_are_killed_after_a_drain() -> None:
    planner = _launched(2)
    planner.on_update(0, ts.RUNNING, "", 1.0)
    planner.on_update(1, ts.RUNNING, "", 1.0)
    planner.on_launcher_exit(0, 2.0)
    planner.on_update(0, ts.FINISHED, "", 2.5)
    assert planner.on_tick(2.0 + gang.DRAIN_SECONDS - 0.1, 0.0) == []
    kill = of_type(planner.on_tick(2.0 + gang.DRAIN_SECONDS, 0.0), gang.Kill)
    assert kill[0].node_indexes == (1,)
    (done,) = of_type(planner.on_update(1, ts.KILLED, "", 30.0), gang.Done)
    assert done.exit_status == 1


def test_abort_while_gathering_declines_and_ends() -> None:
    planner = gang.GangPlanner(gang.GangSpec(ranks=4, rank_resources=RANK))
    planner.on_offers([offer("o1", "a", 2)], now=0.0)
    effects = planner.abort("interrupted")
    assert of_type(effects, gang.Decline)[0].offer_ids == ("o1",)
    assert of_type(effects, gang.Done)[0].exit_status == 1


class _Allocator:
    """A toy master for the simulation: agents' free CPUs, offered whole to each framework
    in turn (rotating, as DRF does for equal shares) unless a decline filter holds."""

    def __init__(self, agents: dict[str, float]) -> None:
        self.free = dict(agents)
        self.filters: dict[tuple[int, str], float] = {}
        self.outstanding: dict[str, tuple[int, str, float]] = {}
        self.next_id = 0
        self.turn = 0

    def offers_for(self, fw: int, now: float) -> list[gang.Offer]:
        out = []
        for agent, cpus in self.free.items():
            if cpus <= 0 or self.filters.get((fw, agent), 0) > now:
                continue
            if any(a == agent for _, a, _ in self.outstanding.values()):
                continue
            self.next_id += 1
            oid = f"o{self.next_id}"
            self.outstanding[oid] = (fw, agent, cpus)
            out.append(offer(oid, agent, cpus))
        return out

    def decline(self, fw: int, ids: tuple[str, ...], refuse: float, now: float) -> None:
        for oid in ids:
            _, agent, _ = self.outstanding.pop(oid)
            self.filters[(fw, agent)] = now + refuse

    def launch(self, nodes: tuple[gang.Node, ...]) -> None:
        for node in nodes:
            for oid in node.offer_ids:
                self.outstanding.pop(oid)
            self.free[node.agent_id] -= node.ranks


def test_two_gangs_that_together_exceed_the_cluster_both_run() -> None:
    """Each job wants 3 of 4 CPUs on two 2-CPU agents; each is first offered one agent, so
    each holds half of what it needs: the backoff must break the tie."""
    rng = random.Random(7)
    sim = _Allocator({"a": 2, "b": 2})
    spec = gang.GangSpec(ranks=3, rank_resources=RANK, hold_seconds=2, backoff_initial=1)
    planners = [gang.GangPlanner(spec), gang.GangPlanner(spec)]
    finished_at: dict[int, float] = {}
    running: dict[int, float] = {}
    # The first round: each framework gets one agent.
    first = {0: "a", 1: "b"}
    now = 0.0
    for fw, agent in first.items():
        sim.next_id += 1
        oid = f"o{sim.next_id}"
        sim.outstanding[oid] = (fw, agent, 2)
        _apply(sim, fw, planners[fw].on_offers([offer(oid, agent, 2)], now), now, running)
    while len(finished_at) < 2 and now < 300:
        now += 0.1
        for fw, planner in enumerate(planners):
            if fw in running and now - running[fw] >= 5.0 and fw not in finished_at:
                finished_at[fw] = now  # the job ran 5 s and ended: its CPUs come back
                for node in planner.nodes:
                    sim.free[node.agent_id] += node.ranks
            _apply(sim, fw, planner.on_tick(now, rng.random()), now, running)
            if planner.phase is gang.Phase.GATHERING and fw not in running:
                new = sim.offers_for(fw, now)
                if new:
                    _apply(sim, fw, planner.on_offers(new, now), now, running)
        # Never more CPUs in use than the cluster has (no over-commit, no half gangs).
        assert all(cpus >= 0 for cpus in sim.free.values())
    assert sorted(finished_at) == [0, 1], (finished_at, [p.phase for p in planners])


def _apply(
    sim: _Allocator, fw: int, effects: list[gang.Effect], now: float, running: dict[int, float]
) -> None:
    for effect in effects:
        if isinstance(effect, gang.Decline):
            sim.decline(fw, effect.offer_ids, effect.refuse_seconds, now)
        elif isinstance(effect, gang.Launch):
            sim.launch(effect.nodes)
            running[fw] = now


def test_abort_while_running_kills_and_keeps_the_given_status() -> None:
    planner = _launched(2)
    planner.on_update(0, ts.RUNNING, "", 1.0)
    planner.on_update(1, ts.RUNNING, "", 1.0)
    effects = planner.abort("interrupted by SIGINT", 130)
    assert of_type(effects, gang.Kill)[0].node_indexes == (0, 1)
    assert of_type(effects, gang.StopLauncher)
    planner.on_update(0, ts.KILLED, "", 2.0)
    planner.on_update(1, ts.KILLED, "", 2.0)
    (done,) = of_type(planner.on_launcher_exit(1, 2.5), gang.Done)
    assert done.exit_status == 130


def test_a_failed_rank_fails_the_job_with_its_status() -> None:
    planner = _launched(2)
    planner.on_update(0, ts.RUNNING, "", 1.0)
    planner.on_update(1, ts.RUNNING, "", 1.0)
    effects = planner.on_rank_failed("node1", 3, 7)
    assert of_type(effects, gang.Kill)[0].node_indexes == (0, 1)
    assert of_type(effects, gang.StopLauncher)
    # Later reports (the other ranks being killed) change nothing.
    assert planner.on_rank_failed("node0", 0, 143) == []
    planner.on_update(0, ts.KILLED, "", 2.0)
    planner.on_update(1, ts.KILLED, "", 2.0)
    (done,) = of_type(planner.on_launcher_exit(143, 2.5), gang.Done)
    assert done.exit_status == 7 and done.message == "rank 3 on node1 exited with status 7"


def ported(oid: str, agent: str, cpus: float, ports: str) -> gang.Offer:
    """An offer with port ranges (``"[28000-28009]"``)."""
    resources = Resources.scalars(cpus=cpus, mem=1024) + parse_resources(f"ports:{ports}")
    return gang.Offer(oid, agent, f"host-{agent}", resources)


def test_node_tasks_take_one_run_of_offered_ports_for_their_daemon_and_ranks() -> None:
    spec = gang.GangSpec(ranks=4, rank_resources=RANK, per_agent=2, node_ports=3, rank_ports=2)
    assert spec.ports_needed(2) == 7
    nodes = gang.place(
        [ported("o1", "a", 2, "[28000-28001,28003-28009]"), ported("o2", "b", 2, "[28100-28110]")],
        spec,
    )
    assert nodes is not None
    by_agent = {n.agent_id: n for n in nodes}
    # a's first run is too short: its ports are the lowest run long enough.
    assert by_agent["a"].ports == tuple(range(28003, 28010))
    assert by_agent["b"].ports == tuple(range(28100, 28107))
    # Without ports wanted a node takes none.
    plain = gang.place([ported("o1", "a", 4, "[28000-28000]")], gang.GangSpec(2, RANK))
    assert plain is not None and plain[0].ports == ()


def test_ports_bound_the_ranks_an_agent_holds_and_portless_offers_are_not_held() -> None:
    spec = gang.GangSpec(ranks=2, rank_resources=RANK, node_ports=3, rank_ports=2)
    # 4 cpus, but its longest run (6 ports) holds one rank: 3 + 2.
    assert (
        gang.agent_slots(
            Resources.scalars(cpus=4, mem=1024)
            + parse_resources("ports:[28000-28005,28007-28008]"),
            RANK,
            None,
            3,
            2,
        )
        == 1
    )
    assert gang.place([ported("o1", "a", 4, "[28000-28005]")], spec) is None
    planner = gang.GangPlanner(spec)
    effects = planner.on_offers([offer("o1", "a", 4), ported("o2", "b", 4, "[28000-28003]")], 0.0)
    # Neither holds a rank with its node's ports: both go back, none is held.
    assert set(of_type(effects, gang.Decline)[0].offer_ids) == {"o1", "o2"} and not planner.held
    effects = planner.on_offers([ported("o3", "c", 4, "[28000-28006]")], 1.0)
    (launch,) = of_type(effects, gang.Launch)
    assert launch.nodes[0].ports == tuple(range(28000, 28007))


def test_shortfall_names_the_ports_a_node_needs() -> None:
    spec = gang.GangSpec(ranks=2, rank_resources=RANK, node_ports=3, rank_ports=2)
    reason = gang.shortfall(spec, [ported("", "a", 8, "[28000-28003]")]) or ""
    assert "a rank needs cpus:1;mem:128 (and 3 + 2 per rank port(s) per agent" in reason
    assert gang.shortfall(spec, [ported("", "a", 8, "[28000-28006]")]) is None


def test_shortfall_of_too_many_ranks_names_the_ports_too() -> None:
    spec = gang.GangSpec(ranks=3, rank_resources=RANK, node_ports=3, rank_ports=2)
    # 8 cpus, but 7 ports: the daemon's 3 and 2 ranks' 2 each.
    reason = gang.shortfall(spec, [ported("", "a", 8, "[28000-28006]")])
    assert reason == (
        "3 ranks of cpus:1;mem:128 need 3 slots (and 3 + 2 per rank port(s) per agent, in one "
        "run of offered ports), but the 1 registered agent(s) hold only 2 together: host-a: 2"
    )


def test_a_nodes_run_of_ports_starts_where_the_pick_says() -> None:
    ports = Resources.scalars(cpus=1) + parse_resources("ports:[28000-28003,28010-28015]")
    # Runs of 3 may start at 28000-28001 and 28010-28013: six places.
    assert gang.node_ports(ports, 3) == (28000, 28001, 28002)
    assert gang.node_ports(ports, 3, 0.0) == (28000, 28001, 28002)
    assert gang.node_ports(ports, 3, 2 / 6) == (28010, 28011, 28012)
    assert gang.node_ports(ports, 3, 0.999) == (28013, 28014, 28015)
    assert gang.node_ports(ports, 5, 0.0) == tuple(range(28010, 28015))
    assert gang.node_ports(ports, 0, 0.5) == ()
    spec = gang.GangSpec(ranks=1, rank_resources=RANK, node_ports=1, rank_ports=1)
    planner = gang.GangPlanner(spec, port_pick=lambda: 0.999)
    (launch,) = of_type(
        planner.on_offers([ported("o1", "a", 2, "[28000-28099]")], 0.0), gang.Launch
    )
    assert launch.nodes[0].ports == (28098, 28099)
