"""The pure worker plan of `butte.dask.ButteCluster`: scaling, placement, loss, close."""

from __future__ import annotations

import pytest

from butte.core import task_states as ts
from butte.dask.plan import Stop, WorkerPlan, WorkerShape, place_scheduler, shortfall
from butte.frameworks.offers import OfferView, offer_view, task_resources


def offer(agent="a1", cpus=4.0, mem=4096.0, ports=((31000, 31009),)) -> OfferView:
    return OfferView("o", agent, f"host-{agent}", "*", cpus, mem, tuple(ports))


def plan(**kw) -> WorkerPlan:
    return WorkerPlan(prefix="w", shape=WorkerShape(cpus=1, mem=1024, ports=1), **kw)


def test_scale_up_places_what_each_offer_holds_with_distinct_ports():
    p = plan()
    p.scale(5)
    assert p.pending == ["w-0", "w-1", "w-2", "w-3", "w-4"] and p.wants_offers()
    first = p.place(offer("a1", cpus=2.5, mem=8192))
    assert [(x.name, x.agent_id, x.ports) for x in first] == [
        ("w-0", "a1", (31000,)),
        ("w-1", "a1", (31001,)),
    ]
    # memory bounds the second offer, a missing port range the third
    assert [x.name for x in p.place(offer("a2", cpus=8, mem=2048))] == ["w-2", "w-3"]
    assert p.place(offer("a3", ports=())) == []
    assert p.planned() == ["w-0", "w-1", "w-2", "w-3", "w-4"]
    assert p.wants_offers()
    p.place(offer("a3"))
    assert not p.wants_offers() and not p.pending


def test_scale_down_drops_pending_then_unconnected_then_newest_connected():
    p = plan()
    p.scale(4)
    p.place(offer(cpus=3))  # w-0..w-2 launched, w-3 pending
    stops = p.scale(1, connected={"w-0", "w-1"})
    # w-3 (pending) goes silently, w-2 (not connected) is killed, then the newest connected
    assert stops == [Stop("w-2", "a1", retire=False), Stop("w-1", "a1", retire=True)]
    assert p.planned() == ["w-0"]
    assert p.update("w-2", ts.KILLED) == [] and p.update("w-1", ts.FINISHED) == []
    assert p.done() is False and p.stopping == {}
    with pytest.raises(ValueError):
        p.scale(-1)


def test_lost_workers_are_replaced_cleanly_exited_ones_not():
    p = plan()
    p.scale(2)
    p.place(offer())
    p.update("w-0", ts.RUNNING)
    p.update("w-1", ts.RUNNING)
    p.update("w-0", ts.LOST)
    assert p.pending == ["w-2"] and p.replaced == 1 and p.wants_offers()
    p.update("w-1", ts.FINISHED)  # retired by the Dask scheduler: not replaced
    assert p.planned() == ["w-2"]


def test_repeated_failures_before_running_stop_the_replacing():
    p = plan(max_failures=3)
    p.scale(1)
    for _ in range(3):
        (launch,) = p.place(offer())
        p.update(launch.name, ts.FAILED)
    assert p.gave_up and not p.wants_offers() and p.planned() == []
    p.scale(1)  # asking again tries again
    assert p.wants_offers() and not p.gave_up


def test_stray_tasks_are_killed_and_close_stops_everything():
    p = plan()
    assert p.update("ghost", ts.RUNNING) == [Stop("ghost", None, retire=False)]
    assert p.update("ghost", ts.LOST) == []
    p.scale(3)
    p.place(offer(cpus=2))
    stops = p.close()
    assert {s.name for s in stops} == {"w-0", "w-1"} and not p.pending
    assert p.scale(5) == [] and not p.wants_offers()
    p.update("w-0", ts.KILLED)
    p.update("w-1", ts.LOST)  # lost while closing: not replaced
    assert p.done() and p.planned() == []


def test_offer_view_and_task_resources_round_trip():
    raw = {
        "id": {"value": "o1"},
        "agent_id": {"value": "a1"},
        "hostname": "h1",
        "allocation_info": {"role": "dev"},
        "resources": task_resources(2, 512, [31000, 31001, 31005], "dev")
        + [
            {
                "name": "cpus",
                "type": "SCALAR",
                "scalar": {"value": 8},
                "role": "dev",
                "reservations": [{"type": "STATIC", "role": "dev"}],
            }
        ],
    }
    view = offer_view(raw)
    # reserved resources are left alone: the TaskInfos built here carry no reservation
    assert (view.cpus, view.mem, view.role) == (2, 512, "dev")
    assert view.ports == ((31000, 31001), (31005, 31005))
    assert view.port_count() == 3


def test_scheduler_task_takes_its_port_and_dashboard_port_from_the_offer():
    shape = WorkerShape(cpus=1, mem=512, ports=2)
    launch = place_scheduler(
        offer("a1", cpus=2, mem=1024, ports=((28000, 28000), (28005, 28009))), shape
    )
    assert launch is not None
    assert (launch.agent_id, launch.hostname, launch.port, launch.dashboard_port) == (
        "a1",
        "host-a1",
        28000,
        28005,
    )
    assert launch.ports == (28000, 28005) and launch.address == "tcp://host-a1:28000"
    # without a dashboard one port is enough
    alone = place_scheduler(offer(ports=((28010, 28010),)), WorkerShape(1, 512, 1))
    assert alone is not None and alone.ports == (28010,) and alone.dashboard_port is None


def test_scheduler_task_waits_for_an_offer_with_enough_ports_and_says_what_is_missing():
    shape = WorkerShape(cpus=1, mem=512, ports=2)
    one_port = offer(ports=((28000, 28000),))
    assert place_scheduler(one_port, shape) is None
    assert shortfall(one_port, shape) == "1 of 2 ports"
    assert place_scheduler(offer(ports=()), shape) is None
    small = offer(cpus=0.5, mem=256, ports=())
    assert shortfall(small, shape) == "0.5 of 1 cpus, 256 of 512 MiB mem, 0 of 2 ports"
    assert shortfall(offer(), shape) is None
    with pytest.raises(ValueError):
        place_scheduler(offer(), WorkerShape(1, 512, 3))
