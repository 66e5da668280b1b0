"""How the bundled frameworks tell a request that can never fit from one that waits for busy
agents: the agents' capacities read from GET_AGENTS, the waiting notes and when to give up
(`butte.frameworks.offers`), and the MPI and Spark planners' verdicts on those capacities."""

from __future__ import annotations

from typing import Any

from butte.core.resources import Resources
from butte.frameworks.mpi import gang
from butte.frameworks.mpi.job import capacity_offers
from butte.frameworks.offers import (
    AgentCapacity,
    FitWatch,
    LargestOffer,
    OfferView,
    agent_capacities,
)
from butte.frameworks.spark.plan import SparkPlan, SparkRequest


def _scalar(name: str, value: float, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": "SCALAR", "scalar": {"value": value}, **extra}


def _ports(begin: int, end: int) -> dict[str, Any]:
    return {"name": "ports", "type": "RANGES", "ranges": {"range": [{"begin": begin, "end": end}]}}


RESERVED = [{"type": "STATIC", "role": "analytics"}]
GET_AGENTS: dict[str, Any] = {
    "agents": [
        {
            "agent_info": {"id": {"value": "a1"}, "hostname": "node1"},
            "total_resources": [
                _scalar("cpus", 4),
                _scalar("mem", 2048),
                _scalar("cpus", 4, reservations=RESERVED),
                _scalar("disk", 100, disk={"persistence": {"id": "v1"}, "volume": {}}),
                _ports(31000, 31009),
            ],
        },
        {
            "agent_info": {"id": {"value": "a2"}, "hostname": "node2"},
            "total_resources": [_scalar("cpus", 2), _scalar("mem", 8192)],
        },
    ],
    # Expected back after a master failover: only its AgentInfo is known.
    "recovered_agents": [
        {"id": {"value": "a3"}, "hostname": "node3", "resources": [_scalar("cpus", 1)]}
    ],
}


def view(agent: str, cpus: float, mem: float, ports: int = 100) -> OfferView:
    return OfferView("", agent, f"host-{agent}", "*", cpus, mem, ((31000, 31000 + ports - 1),))


# -- capacities, notes, giving up -------------------------------------------------------------


def test_agent_capacities_count_what_the_role_may_be_offered() -> None:
    unreserved = agent_capacities(GET_AGENTS, "analytics", reserved=False)
    assert [(a.agent_id, a.hostname) for a in unreserved] == [
        ("a1", "node1"),
        ("a2", "node2"),
        ("a3", "node3"),
    ]
    assert [a.resources.scalar("cpus") for a in unreserved] == [4, 2, 1]
    reserved = agent_capacities(GET_AGENTS, "analytics", reserved=True)
    assert reserved[0].resources.scalar("cpus") == 8
    assert agent_capacities(GET_AGENTS, "other", reserved=True)[0].resources.scalar("cpus") == 4
    first = unreserved[0].view()
    assert (first.agent_id, first.cpus, first.mem, first.port_count()) == ("a1", 4, 2048, 10)
    # Unreadable resources leave that agent out rather than failing the read.
    bad = {"agents": [{"agent_info": {"id": {"value": "x"}}, "total_resources": [{"x": 1}]}]}
    assert agent_capacities(bad, "*", reserved=False) == []
    assert agent_capacities({}, "*", reserved=False) == []


def test_largest_offer_in_words() -> None:
    largest = LargestOffer()
    assert largest.describe() == "no offer received yet"
    largest.saw(view("a", 1, 4000, ports=2))
    largest.saw(view("b", 3, 100, ports=5))
    assert largest.describe() == (
        "largest offer so far 3 cpus, 4000 MiB mem, 5 ports (2 offer(s) seen)"
    )


def test_fit_watch_notes_checks_and_gives_up_on_two_verdicts_in_a_row() -> None:
    fit = FitWatch(started=100.0, note_every=10.0, check_every=3.0)
    assert not fit.note_due(105.0) and fit.note_due(110.0) and not fit.note_due(115.0)
    assert fit.note_due(120.0)
    assert fit.check_due(100.0) and not fit.check_due(102.0) and fit.check_due(103.0)
    assert fit.capacity_note() == ""  # nothing read yet
    # No agent yet: nothing to say against the request.
    assert fit.judged(None, 0) is None and "no agent is registered yet" in fit.capacity_note()
    # One read saying it never fits is not enough: an agent may be registering right now.
    assert fit.judged("too big", 1) is None
    assert fit.judged(None, 2) is None and "could hold it" in fit.capacity_note()
    assert fit.judged("too big", 2) is None
    assert fit.judged("too big", 2) == "too big"


# -- MPI --------------------------------------------------------------------------------------


RANK = Resources.scalars(cpus=1, mem=128)


def agents(*cpus: float, mem: float = 1024) -> list[gang.Offer]:
    return [
        gang.Offer("", f"a{i}", f"host{i}", Resources.scalars(cpus=c, mem=mem))
        for i, c in enumerate(cpus)
    ]


def test_mpi_shortfall_names_a_rank_too_big_for_every_agent() -> None:
    spec = gang.GangSpec(ranks=2, rank_resources=Resources.scalars(cpus=8, mem=128))
    reason = gang.shortfall(spec, agents(4, 2))
    assert reason is not None
    assert reason.startswith("a rank needs cpus:8;mem:128, more than any of the 2 registered")
    assert "(the largest: cpus:4;mem:1024 on host0)" in reason
    # Memory too.
    big = gang.GangSpec(ranks=1, rank_resources=Resources.scalars(cpus=1, mem=4096))
    assert "a rank needs cpus:1;mem:4096" in (gang.shortfall(big, agents(4)) or "")


def test_mpi_shortfall_counts_the_slots_of_every_agent() -> None:
    spec = gang.GangSpec(ranks=8, rank_resources=RANK)
    reason = gang.shortfall(spec, agents(2, 3))
    assert reason == (
        "8 ranks of cpus:1;mem:128 need 8 slots, but the 2 registered agent(s) hold only 5 "
        "together: host0: 2, host1: 3"
    )
    assert gang.shortfall(gang.GangSpec(ranks=5, rank_resources=RANK), agents(2, 3)) is None
    capped = gang.GangSpec(ranks=5, rank_resources=RANK, per_agent=2)
    assert "(at most 2 per agent: --per-agent)" in (gang.shortfall(capped, agents(2, 3)) or "")
    # Nothing registered: one may still come.
    assert gang.shortfall(spec, []) is None


def test_mpi_capacities_are_read_as_offers_of_whole_agents() -> None:
    capacities = [AgentCapacity("a1", "node1", Resources.scalars(cpus=2, mem=512))]
    (offer,) = capacity_offers(capacities)
    assert (offer.agent_id, offer.hostname, offer.resources.scalar("cpus")) == ("a1", "node1", 2)
    spec = gang.GangSpec(ranks=2, rank_resources=RANK)
    assert gang.shortfall(spec, capacity_offers(capacities)) is None


# -- Spark ------------------------------------------------------------------------------------


def plan(**request: Any) -> SparkPlan:
    return SparkPlan("r1", SparkRequest(**{"total_cores": 2, "executor_mib": 512, **request}))


def test_spark_shortfall_of_the_master_and_of_a_worker() -> None:
    # The master (0.5 cpus, 640 MiB) fits nowhere.
    reason = plan().shortfall([view("a", 0.25, 8192)])
    assert reason is not None and reason.startswith("the Spark master needs 0.5 cpus, 640 MiB")
    # A worker of one 4g executor needs 640 + 4096 + 409 MiB: more than any agent has.
    reason = plan(executor_mib=4096).shortfall([view("a", 4, 2048), view("b", 8, 4096)])
    assert reason is not None and "needs 1 cpus, 5145 MiB mem" in reason
    assert "the largest: 8 cpus, 4096 MiB mem, 100 ports on host-b" in reason
    # Executors of 8 cores on 4-cpu agents.
    reason = plan(total_cores=16, executor_cores=8).shortfall([view("a", 4, 8192)])
    assert reason is not None and "one executor (8 core(s)" in reason
    # Ports count too.
    assert plan().shortfall([view("a", 4, 8192, ports=3)]) is not None
    assert plan().shortfall([view("a", 4, 8192, ports=4)]) is None


def test_spark_shortfall_places_the_master_and_a_worker_together_or_apart() -> None:
    # A worker (1 cpu, 1536 MiB) fits each agent alone, not beside the master on one.
    assert plan().shortfall([view("a", 1, 2000)]) is not None
    assert plan().shortfall([view("a", 1, 2000), view("b", 1, 2000)]) is None
    assert plan().shortfall([view("a", 2, 2200)]) is None
    # Placed, the master stays where it is: a worker must fit beside it or elsewhere.
    placed = plan()
    placed.place(view("a", 0.5, 700))
    assert placed.master is not None and not placed.workers
    assert placed.shortfall([view("a", 1, 2000)]) is not None
    assert placed.shortfall([view("a", 1, 2000), view("b", 1, 2000)]) is None
    # With a worker placed, or no agent registered, there is nothing to say.
    assert plan().shortfall([]) is None
    running = plan()
    running.place(view("a", 4, 8192))
    assert running.workers and running.shortfall([view("a", 0.1, 10)]) is None


def test_spark_says_what_it_waits_for() -> None:
    waiting = plan(executor_mib=1024)
    assert waiting.waiting_for() == (
        "an offer for the Spark master (0.5 cpus, 640 MiB mem, 2 ports)"
    )
    waiting.place(view("a", 0.5, 700))
    assert waiting.waiting_for().startswith(
        "an offer for a Spark worker (at least 1 cpus, 2048 MiB mem, 2 ports"
    )
