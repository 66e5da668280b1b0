"""Unit tests of the simulated agents' pure parts: duration specs, the per-task update stream,
master addresses and the ``butte sim`` flags."""

from __future__ import annotations

import argparse
import asyncio
import random

import pytest

from butte.core import task_states
from butte.core.messages import ID, TaskStatus
from butte.sim.agents import SimOptions, SimulatedCluster, master_ws_urls
from butte.sim.durations import TaskDuration
from butte.sim.main import add_flags, options_from_args
from butte.sim.tasks import SimTask


def test_duration_specs() -> None:
    rng = random.Random(1)
    assert TaskDuration.parse("10secs").sample(rng) == 10.0
    assert TaskDuration.parse("0").sample(rng) == 0.0
    assert TaskDuration.parse("250ms").sample(rng) == 0.25
    assert TaskDuration.parse("forever").sample(rng) is None
    spec = TaskDuration.parse("uniform:1-5secs")
    values = [spec.sample(rng) for _ in range(200)]
    assert all(1.0 <= v <= 5.0 for v in values)
    assert max(values) - min(values) > 2.0
    mixed = TaskDuration.parse("uniform:500ms-2mins")
    assert (mixed.low, mixed.high) == (0.5, 120.0)


def test_sleep_command_overrides_the_spec() -> None:
    rng = random.Random(1)
    assert TaskDuration.parse("forever").sample(rng, "sleep 3") == 3.0
    assert TaskDuration.parse("1secs").sample(rng, "/bin/sleep 0.5") == 0.5
    assert TaskDuration.parse("1secs").sample(rng, "sleep 3 && true") == 1.0


@pytest.mark.parametrize("spec", ["", "soon", "uniform:5", "uniform:5-1secs", "-1", "10parsecs"])
def test_bad_duration_specs_are_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        TaskDuration.parse(spec)


def _status(state: str, uuid: str) -> TaskStatus:
    return TaskStatus(task_id=ID("t"), state=state, uuid=uuid)


def test_one_update_in_flight_with_backoff() -> None:
    task = SimTask("f", "t", "t", [], None)
    task.add(_status(task_states.STARTING, "u1"))
    task.add(_status(task_states.RUNNING, "u2"))
    first = task.due(0.0, 1.0, 4.0)
    assert first is not None and first.uuid == "u1"
    assert task.due(0.5, 1.0, 4.0) is None  # not yet time to retry
    assert task.due(1.0, 1.0, 4.0).uuid == "u1"  # retry after 1 s ...
    assert task.due(2.9, 1.0, 4.0) is None  # ... then after 2 s more
    assert task.due(3.0, 1.0, 4.0).uuid == "u1"
    assert not task.ack("u2")  # only the head can be acknowledged
    assert task.ack("u1")
    assert task.due(3.0, 1.0, 4.0).uuid == "u2"  # the next one goes out at once
    assert task.state == task_states.RUNNING and not task.done


def test_task_is_done_once_its_terminal_update_is_acknowledged() -> None:
    task = SimTask("f", "t", "t", [], None)
    task.add(_status(task_states.FINISHED, "u1"))
    assert task.terminal and not task.done
    task.due(0.0, 1.0, 2.0)
    task.rewind()
    assert task.due(0.1, 1.0, 2.0).uuid == "u1"  # a reconnect resends at once
    assert task.ack("u1") and task.done
    report = task.report("agent-1")
    assert report.state == task_states.FINISHED and report.status_update_uuid is None


def test_master_addresses() -> None:
    assert master_ws_urls("127.0.0.1:5050") == ["ws://127.0.0.1:5050/api/v1/internal/agent"]
    assert master_ws_urls("http://h:1,h2") == [
        "ws://h:1/api/v1/internal/agent",
        "ws://h2:5050/api/v1/internal/agent",
    ]
    with pytest.raises(ValueError):
        master_ws_urls(" , ")


def test_preloaded_agents_report_their_tasks() -> None:
    options = SimOptions.from_text("cpus:2;mem:1024", preload_tasks=3)
    cluster = SimulatedCluster("127.0.0.1:1", 2, options)
    agent = cluster.agents[1]
    assert agent.agent_id is not None and len(agent.tasks) == 3
    message = cluster._register_message(agent)
    assert message.agent_info.id is not None
    assert [t.state for t in message.tasks] == [task_states.RUNNING] * 3
    assert message.frameworks[0].checkpoint


def test_waiting_for_registrations_scans_the_agents_only_when_it_may_be_done() -> None:
    cluster = SimulatedCluster("127.0.0.1:1", 3)
    scans = 0
    count = cluster.registered_count

    def counting(since: float = 0.0) -> int:
        nonlocal scans
        scans += 1
        return count(since)

    cluster.registered_count = counting  # type: ignore[method-assign]

    async def scenario() -> None:
        waiter = asyncio.ensure_future(cluster.wait_registered(timeout=5))
        for agent in cluster.agents:
            await asyncio.sleep(0)
            assert scans == 0  # fewer registered than wanted: no scan of every agent
            cluster._set_registered(agent, True)
            cluster._set_registered(agent, True)  # no double count
            cluster._notify()
        await asyncio.wait_for(waiter, 5)
        assert scans == 1
        cluster._set_registered(cluster.agents[0], False)
        assert cluster._registered_now == 2
        with pytest.raises(TimeoutError):
            await cluster.wait_registered(timeout=0.05)

    asyncio.run(scenario())


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_flags(parser)
    return parser.parse_args(["--master=127.0.0.1:5050", *argv])


def test_flags_become_options() -> None:
    options = options_from_args(
        _args("--agents=3", "--resources=cpus:8;mem:64", "--attributes=rack:r1", "--seed=4")
    )
    assert options.resources.scalar("cpus") == 8.0
    assert options.attributes[0].name == "rack"
    assert options.status_update_retry_interval_min == 10.0


@pytest.mark.parametrize(
    "flag",
    [
        "--agents=-1",
        "--resources=cpus:lots",
        "--task_duration=later",
        "--status_update_retry_interval_min=x",
        "--attributes=:x",
    ],
)
def test_bad_flags_are_refused_with_their_name(flag: str) -> None:
    with pytest.raises(ValueError) as err:
        options_from_args(_args(flag))
    assert "--" in str(err.value) or "duration" in str(err.value)


def test_client_frames_are_masked_and_read_back() -> None:
    from butte.core.websocket import TEXT, FrameReader, encode_frame, mask

    sent = encode_frame(TEXT, b"hello", masked=True)
    assert sent[:2] == b"\x81\x85" and mask(sent[6:], sent[2:6]) == b"hello"
    reader = FrameReader(1024, require_mask=True)
    reader.feed(sent + encode_frame(TEXT, b"x" * 300, masked=True))
    assert reader.next() == (TEXT, b"hello")
    assert reader.next() == (TEXT, b"x" * 300)
    assert reader.next() is None
