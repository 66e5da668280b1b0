"""SchedulerClient against the in-process fake master: subscription, stream parsing, redirects,
retries, call encodings and error mapping."""

from __future__ import annotations

import asyncio
import base64

import pytest

from butte.client.http1 import Http1Pool
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


# -- calls over pipelined keep-alive connections (butte.client.http1) --------------------------


class RawServer:
    """A tiny HTTP server on a socket: records every connection and every read, and answers
    each request with ``answer(request_bytes)`` (raw response bytes, or None for silence)."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.connections = 0
        self.reads: list[bytes] = []
        self.requests: list[bytes] = []
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()

    @property
    def address(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        buf = b""
        while data := await reader.read(65536):
            self.reads.append(data)
            buf += data
            out = []
            while b"\r\n\r\n" in buf:
                head, rest = buf.split(b"\r\n\r\n", 1)
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                if len(rest) < length:
                    break
                request, buf = head + b"\r\n\r\n" + rest[:length], rest[length:]
                self.requests.append(request)
                answer = self.answer(request)
                if answer is not None:
                    out.append(answer)
            if out:
                writer.write(b"".join(out))
        writer.close()


def http_reply(status: int, body: bytes = b"", extra: str = "") -> bytes:
    return b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n%s\r\n%s" % (
        status,
        len(body),
        extra.encode(),
        body,
    )


def test_calls_share_one_keep_alive_connection_and_are_pipelined(fake_master):
    async def scenario():
        async with client_for(fake_master) as client:
            await asyncio.gather(*(client.revive() for _ in range(20)))
            await client.suppress()
            pool = client._http  # noqa: SLF001
            return {address: len(conns) for address, conns in pool._connections.items()}  # noqa: SLF001

    connections = arun(scenario())
    revives = fake_master.calls_of("REVIVE")
    assert len(revives) == 20 and len(fake_master.calls_of("SUPPRESS")) == 1
    assert connections == {fake_master.address: 1}  # one connection carried all calls


def test_pipelined_requests_go_out_in_one_write_and_answers_match_in_order():
    from butte.client.http1 import Http1Pool, post_request, request_prefix

    def answer(request: bytes) -> bytes:
        body = request.split(b"\r\n\r\n", 1)[1]
        # An answer split oddly is still matched: chunked, then Content-Length.
        if body.endswith(b"1"):
            chunks = b"3\r\nans\r\n1\r\n1\r\n0\r\n\r\n"
            return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks
        return http_reply(202, b"ans" + body[-1:])

    async def scenario():
        async with RawServer(answer) as server:
            pool = Http1Pool()
            prefix = request_prefix(server.address, "/p", {"Content-Type": "application/json"})
            futures = [
                pool.request(server.address, post_request(prefix, b"call%d" % i), 5.0)
                for i in range(5)
            ]
            replies = await asyncio.gather(*futures)
            pool.close()
            return server, replies

    server, replies = arun(scenario())
    assert [r.body for r in replies] == [b"ans0", b"ans1", b"ans2", b"ans3", b"ans4"]
    assert [r.status for r in replies] == [202, 200, 202, 202, 202]
    assert server.connections == 1
    assert len(server.reads) == 1  # all five requests in one write
    assert server.requests[0].startswith(b"POST /p HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nContent-Length: 5\r\n\r\ncall0" in server.requests[0]


def test_response_split_across_reads_and_connection_close_opens_a_new_connection(fake_master):
    from butte.client.http1 import _ResponseParser

    parser = _ResponseParser()
    data = http_reply(202) + http_reply(400, b"bad offer", "Connection: close\r\n")
    replies = [r for i in range(len(data)) for r in parser.feed(data[i : i + 1])]
    assert [(r.status, r.body) for r in replies] == [(202, b""), (400, b"bad offer")]
    assert replies[1].headers["connection"] == "close"
    with pytest.raises(ValueError, match="after `Connection: close`"):
        parser.feed(http_reply(202))  # nothing may follow on the wire

    async def scenario():
        closing = RawServer(lambda r: http_reply(202, b"", "Connection: close\r\n"))
        async with closing as server, client_for(fake_master) as client:
            client.leader = server.address
            await client.revive()
            await client.revive()
            return server.connections

    assert arun(scenario()) == 2


def test_calls_follow_307_to_the_leader(fake_master):
    def redirect(request: bytes) -> bytes:
        return http_reply(307, b"", f"Location: //{fake_master.address}/api/v1/scheduler\r\n")

    async def scenario():
        async with RawServer(redirect) as standby, client_for(fake_master) as client:
            client.leader = standby.address  # as if the leader had moved away meanwhile
            await client.kill("t1")
            return len(standby.requests)

    assert arun(scenario()) == 1
    kill = fake_master.calls_of("KILL")[0]
    assert kill["kill"] == {"task_id": {"value": "t1"}}
    assert fake_master.headers[-1]["Mesos-Stream-Id"] == fake_master.stream_id


def test_call_errors_unreachable_timeout_and_broken_connection(fake_master):
    async def scenario():
        client = client_for(fake_master, call_timeout=0.3)
        await client.subscribe()
        client.leader = f"127.0.0.1:{free_port()}"  # nothing listens there
        errors = []
        with pytest.raises(CallError) as refused:
            await client.revive()
        errors.append(refused.value)
        async with RawServer(lambda r: None) as silent:  # never answers
            client.leader = silent.address
            with pytest.raises(CallError) as timed_out:
                await client.revive()
            errors.append(timed_out.value)
        async with RawServer(lambda r: b"HTTP/1.1 banana\r\n\r\n") as broken:
            client.leader = broken.address
            with pytest.raises(CallError) as bad:
                await client.revive()
            errors.append(bad.value)
        await client.close()
        return errors

    refused, timed_out, bad = arun(scenario())
    assert refused.status is None and refused.call_type == "REVIVE"
    assert timed_out.status is None and "no answer in time" in timed_out.message
    assert bad.status is None and "bad response: Invalid status code" in bad.message


def test_a_cancelled_call_does_not_shift_the_answers_of_later_ones():
    from butte.client.http1 import Http1Pool, post_request, request_prefix

    async def scenario():
        async with RawServer(lambda r: http_reply(200, r[-1:])) as server:
            pool = Http1Pool()
            prefix = request_prefix(server.address, "/p", {})
            first = pool.request(server.address, post_request(prefix, b"a"), 5.0)
            second = pool.request(server.address, post_request(prefix, b"b"), 5.0)
            first.cancel()
            reply = await second
            pool.close()
            return reply.body

    assert arun(scenario()) == b"b"


def test_a_new_leader_fails_the_calls_in_flight_to_the_old_one():
    """A call to a leader that froze (it accepts, never answers) fails as soon as another
    leader is named, not after the call timeout (Mesos' scheduler library drops them)."""

    async def main() -> None:
        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(65536)  # and never answer

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        old = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        client = client_for(old, call_timeout=30.0)
        client.framework_info["id"] = {"value": "F"}
        client._http = Http1Pool()
        try:
            call = asyncio.ensure_future(client.call("REVIVE"))
            await asyncio.sleep(0.2)
            assert not call.done()
            started = asyncio.get_running_loop().time()
            client._leader_changed("127.0.0.1:1")
            with pytest.raises(CallError):
                await asyncio.wait_for(call, 5)
            assert asyncio.get_running_loop().time() - started < 2
        finally:
            client._http.close()
            server.close()

    arun(main())
