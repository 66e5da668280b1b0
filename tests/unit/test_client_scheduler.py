"""SchedulerClient against the in-process fake master: subscription, stream parsing, redirects,
retries, call encodings and error mapping."""

from __future__ import annotations

import asyncio
import base64

import pytest

from butte.client.scheduler import (
    CallError,
    MasterUnreachable,
    SchedulerClient,
    SchedulerError,
    SubscriptionError,
    as_id,
    redirect_target,
)
from butte.core.codec import record
from butte.core.messages import FrameworkInfo, TaskInfo
from butte.testing.cluster import free_port
from butte.testing.fake_master import FakeMaster

INFO = {"name": "test-fw", "user": "alice"}


def arun(coro, timeout: float = 10.0):
    async def bounded():
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def client_for(master: FakeMaster | str, **kwargs) -> SchedulerClient:
    address = master if isinstance(master, str) else master.address
    kwargs.setdefault("backoff_initial", 0.01)
    kwargs.setdefault("retry_timeout", 5.0)
    return SchedulerClient(address, INFO, **kwargs)


async def next_of_type(client: SchedulerClient, kind: str) -> dict:
    async for event in client:
        if event["type"] == kind:
            return event
    raise AssertionError(f"stream ended before a {kind} event")


# -- subscription ------------------------------------------------------------------------------


def test_subscribe_sends_framework_info_and_reads_stream_id(fake_master):
    async def scenario():
        async with client_for(fake_master) as client:
            first = await client.next_event(1)
            second = await client.next_event(1)
            return client.framework_id, client.stream_id, first, second

    framework_id, stream_id, first, second = arun(scenario())
    assert framework_id == "fake-0000"
    assert stream_id == fake_master.stream_id and stream_id
    assert first["type"] == "SUBSCRIBED"
    assert first["subscribed"]["framework_id"] == {"value": "fake-0000"}
    assert second == {"type": "HEARTBEAT"}
    call = fake_master.calls[0]
    assert call["type"] == "SUBSCRIBE"
    assert "framework_id" not in call  # a new framework has no id yet
    assert call["subscribe"]["framework_info"]["name"] == "test-fw"
    assert call["subscribe"]["framework_info"]["user"] == "alice"
    headers = fake_master.headers[0]
    assert headers["Content-Type"] == "application/json"
    assert "Mesos-Stream-Id" not in headers


def test_framework_info_struct_is_accepted(fake_master):
    async def scenario():
        client = SchedulerClient(fake_master.address, FrameworkInfo(user="bob", name="typed"))
        await client.subscribe()
        await client.close()

    arun(scenario())
    info = fake_master.calls[0]["subscribe"]["framework_info"]
    assert info["user"] == "bob" and info["name"] == "typed"


def test_records_split_across_chunks_and_joined_in_one_chunk(fake_master):
    offers = {"type": "OFFERS", "offers": {"offers": [{"id": {"value": "o1"}}]}}
    rescind = {"type": "RESCIND", "rescind": {"offer_id": {"value": "o1"}}}
    data = record(offers)

    async def scenario():
        async with client_for(fake_master) as client:
            await next_of_type(client, "HEARTBEAT")
            # Length prefix split in the middle, JSON split in the middle, then two records
            # plus the start of a third in one chunk.
            fake_master.push_raw(data[:1])
            fake_master.push_raw(data[1:7])
            fake_master.push_raw(data[7:30])
            fake_master.push_raw(data[30:] + record(rescind) + record(offers)[:5])
            fake_master.push_raw(record(offers)[5:])
            return [await client.next_event(2) for _ in range(3)]

    assert arun(scenario()) == [offers, rescind, offers]


def test_follows_307_to_the_leader(fake_master):
    with FakeMaster() as leader:
        fake_master.redirect_next_subscribe(leader.address)

        async def scenario():
            async with client_for(fake_master) as client:
                await client.decline(["o1"])
                return client.leader

        assert arun(scenario()) == leader.address
        assert [c["type"] for c in leader.calls] == ["SUBSCRIBE", "DECLINE"]
    assert [c["type"] for c in fake_master.calls] == ["SUBSCRIBE"]


def test_redirect_target_parses_protocol_relative_location():
    assert redirect_target("//m2:5051/api/v1/scheduler") == "m2:5051"
    assert redirect_target("http://10.0.0.2:5050/master/api/v1/scheduler") == "10.0.0.2:5050"
    assert redirect_target("//m3") == "m3:5050"


def test_retries_503_until_a_leader_answers(fake_master):
    fake_master.fail_next_subscribes(503, "No leader elected", times=3)

    async def scenario():
        async with client_for(fake_master) as client:
            return client.framework_id

    assert arun(scenario()) == "fake-0000"
    assert len(fake_master.calls_of("SUBSCRIBE")) == 4


def test_unreachable_master_raises_after_the_retry_timeout():
    address = f"127.0.0.1:{free_port()}"

    async def scenario():
        client = client_for(address, retry_timeout=0.3)
        try:
            await client.subscribe()
        finally:
            await client.close()

    with pytest.raises(MasterUnreachable, match="cannot subscribe"):
        arun(scenario())


def test_subscribe_rejected_with_4xx_raises_with_the_masters_message(fake_master):
    fake_master.fail_next_subscribes(400, "Missing required fields: framework_info.user")

    async def scenario():
        client = client_for(fake_master)
        try:
            await client.subscribe()
        finally:
            await client.close()

    with pytest.raises(SubscriptionError, match="HTTP 400.*framework_info.user"):
        arun(scenario())
    assert len(fake_master.calls) == 1  # not retried


# -- calls -------------------------------------------------------------------------------------


def test_calls_carry_stream_id_and_framework_id(fake_master):
    async def scenario():
        async with client_for(fake_master) as client:
            await client.revive()
            await client.suppress(["web"])
            return client.stream_id

    stream_id = arun(scenario())
    for call, headers in zip(fake_master.calls[1:], fake_master.headers[1:], strict=True):
        assert headers["Mesos-Stream-Id"] == stream_id
        assert call["framework_id"] == {"value": "fake-0000"}
    assert fake_master.calls[1] == {"framework_id": {"value": "fake-0000"}, "type": "REVIVE"}
    assert fake_master.calls[2]["suppress"] == {"roles": ["web"]}


def test_call_encodings(fake_master):
    offer = {"id": {"value": "o1"}, "agent_id": {"value": "a1"}, "hostname": "h"}
    task = {"name": "t", "task_id": {"value": "t1"}, "command": {"value": "true"}}
    typed = TaskInfo(name="u", task_id=as_id("t2"), agent_id=as_id("a1"))
    uuid = base64.b64encode(b"0123456789abcdef").decode()

    async def scenario():
        async with client_for(fake_master) as client:
            await client.launch(offer, [task, typed], refuse_seconds=2)
            await client.decline(["o2", {"value": "o3"}])
            await client.kill("t1", "a1", grace_period=1.5)
            await client.acknowledge("a1", "t1", uuid)
            await client.reconcile(["t1", ("t2", "a1")])
            await client.message("a1", "e1", b"hi")
            await client.shutdown("e1", "a1")
            await client.update_framework({"name": "renamed", "user": "alice"})
            await client.teardown()

    arun(scenario())
    calls = {c["type"]: c for c in fake_master.calls}
    accept = calls["ACCEPT"]["accept"]
    assert accept["offer_ids"] == [{"value": "o1"}]
    assert accept["filters"] == {"refuse_seconds": 2}
    operation = accept["operations"][0]
    assert operation["type"] == "LAUNCH"
    first, second = operation["launch"]["task_infos"]
    assert first == {**task, "agent_id": {"value": "a1"}}
    assert second == {"name": "u", "task_id": {"value": "t2"}, "agent_id": {"value": "a1"}}
    assert calls["DECLINE"]["decline"] == {"offer_ids": [{"value": "o2"}, {"value": "o3"}]}
    assert calls["KILL"]["kill"] == {
        "task_id": {"value": "t1"},
        "agent_id": {"value": "a1"},
        "kill_policy": {"grace_period": {"nanoseconds": 1_500_000_000}},
    }
    assert calls["ACKNOWLEDGE"]["acknowledge"] == {
        "agent_id": {"value": "a1"},
        "task_id": {"value": "t1"},
        "uuid": uuid,
    }
    assert calls["RECONCILE"]["reconcile"] == {
        "tasks": [
            {"task_id": {"value": "t1"}},
            {"task_id": {"value": "t2"}, "agent_id": {"value": "a1"}},
        ]
    }
    assert calls["MESSAGE"]["message"]["data"] == "aGk="
    assert calls["SHUTDOWN"]["shutdown"] == {
        "executor_id": {"value": "e1"},
        "agent_id": {"value": "a1"},
    }
    update = calls["UPDATE_FRAMEWORK"]["update_framework"]["framework_info"]
    assert update["name"] == "renamed" and update["id"] == {"value": "fake-0000"}
    assert calls["TEARDOWN"] == {"framework_id": {"value": "fake-0000"}, "type": "TEARDOWN"}


def test_non_2xx_answers_raise_call_error_with_the_message(fake_master):
    fake_master.respond_to("DECLINE", 400, "Offer o9 is no longer valid")

    async def scenario():
        async with client_for(fake_master) as client:
            await client.decline(["o9"])

    with pytest.raises(CallError) as info:
        arun(scenario())
    assert info.value.status == 400
    assert info.value.call_type == "DECLINE"
    assert "Offer o9 is no longer valid" in str(info.value)


def test_acknowledge_status_only_when_the_update_has_a_uuid(fake_master):
    with_uuid = {
        "task_id": {"value": "t1"},
        "agent_id": {"value": "a1"},
        "state": "TASK_RUNNING",
        "uuid": "AAAAAAAAAAAAAAAAAAAAAA==",
    }
    from_master = {"task_id": {"value": "t1"}, "state": "TASK_LOST"}

    async def scenario():
        async with client_for(fake_master) as client:
            return await client.acknowledge_status(from_master), await client.acknowledge_status(
                with_uuid
            )

    assert arun(scenario()) == (False, True)
    assert len(fake_master.calls_of("ACKNOWLEDGE")) == 1


# -- reconnection ------------------------------------------------------------------------------


def _assert_resubscribed_with_id(fake_master: FakeMaster) -> None:
    again = fake_master.calls_of("SUBSCRIBE")[1]
    assert again["framework_id"] == {"value": "fake-0000"}
    assert again["subscribe"]["framework_info"]["id"] == {"value": "fake-0000"}


def test_resubscribes_with_framework_id_when_the_stream_ends(fake_master):
    async def scenario():
        async with client_for(fake_master) as client:
            await next_of_type(client, "HEARTBEAT")
            old_stream = client.stream_id
            fake_master.close_stream()
            event = await next_of_type(client, "SUBSCRIBED")
            return event, old_stream, client.stream_id

    event, old_stream, new_stream = arun(scenario())
    assert event["subscribed"]["framework_id"] == {"value": "fake-0000"}
    assert new_stream != old_stream
    _assert_resubscribed_with_id(fake_master)


def test_heartbeat_watchdog_resubscribes_after_missed_heartbeats(fake_master):
    fake_master.heartbeat_interval = 0.05
    fake_master.heartbeats = False

    async def scenario():
        async with client_for(fake_master) as client:
            await next_of_type(client, "SUBSCRIBED")
            await next_of_type(client, "SUBSCRIBED")  # after 5 x 0.05 s of silence

    arun(scenario(), timeout=5)
    _assert_resubscribed_with_id(fake_master)


def test_error_event_is_delivered_and_ends_the_iteration(fake_master):
    async def scenario():
        async with client_for(fake_master) as client:
            await next_of_type(client, "HEARTBEAT")
            fake_master.push({"type": "ERROR", "error": {"message": "Framework failed over"}})
            return [event async for event in client]

    assert arun(scenario()) == [{"type": "ERROR", "error": {"message": "Framework failed over"}}]
    assert len(fake_master.calls_of("SUBSCRIBE")) == 1


def test_close_ends_the_iteration(fake_master):
    async def scenario():
        client = client_for(fake_master)
        await client.subscribe()
        await client.close()
        return [event["type"] async for event in client]

    assert arun(scenario()) in (["SUBSCRIBED"], ["SUBSCRIBED", "HEARTBEAT"])


def test_as_id_forms():
    assert as_id("x") == {"value": "x"}
    assert as_id({"value": "x"}) == {"value": "x"}
    assert as_id({"id": {"value": "o"}, "agent_id": {"value": "a"}}) == {"value": "o"}
    with pytest.raises(TypeError):
        as_id(3)  # type: ignore[arg-type]


def test_malformed_zookeeper_master_urls_are_refused_clearly():
    with pytest.raises(SchedulerError, match="znode path"):
        SchedulerClient("zk://127.0.0.1:2181", INFO)
    client = SchedulerClient("zk://127.0.0.1:2181/mesos", INFO)  # connects on subscribe()
    assert client.leader == ""
