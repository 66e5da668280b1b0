"""The master's fast path for scheduler calls (`butte.master.fast_http`) against a fake
transport: which requests it serves, one write for pipelined answers, the hand-off of a
connection to aiohttp with what it had buffered."""

from __future__ import annotations

import asyncio

from butte.master.fast_http import Reply, SchedulerFastPath, text


class FakeTransport(asyncio.Transport):
    """Records writes, protocol changes and closing."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.protocol: asyncio.BaseProtocol | None = None
        self.closed = False
        self.reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def write(self, data: bytes) -> None:  # type: ignore[override]
        self.writes.append(bytes(data))

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


class Handler:
    """Answers every call with 202, or None (not leading) when told."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str], bytes]] = []
        self.leading = True

    def scheduler_reply(self, path: str, headers: dict[str, str], body: bytes) -> Reply | None:
        if not self.leading:
            return None
        self.calls.append((path, headers, body))
        return text(202)


class AiohttpStandIn(asyncio.Protocol):
    """What the hand-off gives the connection to."""

    def __init__(self) -> None:
        self.transport: asyncio.BaseTransport | None = None
        self.data = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.data += data


def call(body: bytes = b"{}", path: str = "/api/v1/scheduler", extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: m\r\nContent-Type: application/json\r\n"
        "Mesos-Stream-Id: s1\r\n"
        f"{extra}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def connect() -> tuple[SchedulerFastPath, FakeTransport, Handler, list[AiohttpStandIn]]:
    handler = Handler()
    handed: list[AiohttpStandIn] = []

    def aiohttp_protocol() -> AiohttpStandIn:
        handed.append(AiohttpStandIn())
        return handed[-1]

    protocol = SchedulerFastPath(handler, aiohttp_protocol, set(), max_body=1024)
    transport = FakeTransport()
    protocol.connection_made(transport)
    return protocol, transport, handler, handed


def run(scenario) -> None:
    async def main() -> None:
        scenario()

    asyncio.run(main())


def test_pipelined_calls_are_answered_in_one_write():
    def scenario() -> None:
        protocol, transport, handler, handed = connect()
        protocol.data_received(call(b'{"a":1}') + call(b'{"a":2}') + call(b'{"a":3}')[:50])
        assert [c[2] for c in handler.calls] == [b'{"a":1}', b'{"a":2}']
        assert len(transport.writes) == 1
        assert transport.writes[0].count(b"HTTP/1.1 202 Accepted\r\n") == 2
        assert b"Content-Length: 0\r\n" in transport.writes[0]
        protocol.data_received(call(b'{"a":3}')[50:])
        assert handler.calls[-1][2] == b'{"a":3}' and len(transport.writes) == 2
        assert handler.calls[0][1]["mesos-stream-id"] == "s1" and not handed

    run(scenario)


def test_other_requests_hand_the_connection_to_aiohttp_with_the_buffered_bytes():
    def scenario() -> None:
        protocol, transport, handler, handed = connect()
        health = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        protocol.data_received(call() + health + call())
        assert len(handler.calls) == 1 and len(transport.writes) == 1  # answered first
        assert transport.protocol is handed[0] and handed[0].transport is transport
        assert handed[0].data == health + call()

    run(scenario)


def test_not_leading_hands_off_the_call_itself():
    def scenario() -> None:
        protocol, transport, handler, handed = connect()
        handler.leading = False
        protocol.data_received(call())
        assert not transport.writes and handed[0].data == call()

    run(scenario)


def test_connection_close_is_honoured():
    def scenario() -> None:
        protocol, transport, handler, handed = connect()
        protocol.data_received(call(extra="Connection: close\r\n") + call())
        assert len(handler.calls) == 1 and transport.closed
        assert b"Connection: close\r\n" in transport.writes[0]

    run(scenario)


def test_which_requests_the_fast_path_serves():
    def served(request: bytes) -> bool:
        holder: list[bool] = []

        def scenario() -> None:
            protocol, transport, handler, handed = connect()
            protocol.data_received(request)
            holder.append(bool(handler.calls))
            assert bool(handler.calls) != bool(handed)  # served here or handed to aiohttp

        run(scenario)
        return holder[0]

    ok = "POST /api/v1/scheduler HTTP/1.1\nHost: m\nMesos-Stream-Id: s\nContent-Length: 2\n\n{}"

    def crlf(text: str) -> bytes:
        return text.replace("\n", "\r\n").encode("latin-1")

    assert served(crlf(ok))
    assert served(crlf(ok.replace("/api", "/master/api")))
    for other in (
        ok.replace("HTTP/1.1", "HTTP/1.0"),  # HTTP/1.0 keep-alive rules: aiohttp
        ok.replace("POST", "PUT"),
        ok.replace("scheduler", "scheduler/"),
        ok.replace("scheduler", "scheduler?x=1"),
        ok.replace("Mesos-Stream-Id: s\n", ""),  # SUBSCRIBE
        ok.replace("Content-Length: 2", "Transfer-Encoding: chunked") + "\n2\n{}\n0\n\n",
        ok.replace("Host: m", "Host: m\nExpect: 100-continue"),
        ok.replace("Host: m", "Host: m\nMesos-Stream-Id: t"),  # repeated
        ok.replace("Content-Length: 2", "Content-Length: 2000"),  # over max_body: 413
    ):
        assert not served(crlf(other)), other


def test_malformed_requests_are_refused_with_400_and_closed():
    ok = (
        "POST /api/v1/scheduler HTTP/1.1\r\nHost: m\r\nMesos-Stream-Id: s\r\n"
        "Content-Length: 2\r\n\r\n{}"
    )
    for bad in (
        ok.replace("Content-Length:", "Content-Length :"),  # space before the colon
        ok.replace("Host: m", "Host: m\x00n"),  # NUL in a value
        ok.replace("Host: m\r\n", ""),  # HTTP/1.1 without Host
        ok.replace("\r\n", "\n"),  # bare LF line endings
        ok.replace("Content-Length: 2", "Content-Length: 2\r\nContent-Length: 3"),
        ok.replace("Content-Length: 2", "Content-Length: \u00b2"),
        "GET / HTTP/1.1\r\nHost: m\x01\r\n\r\n",  # also requests aiohttp would serve
    ):

        def scenario(bad: str = bad) -> None:
            protocol, transport, handler, handed = connect()
            protocol.data_received(call() + bad.encode("latin-1"))
            assert len(handler.calls) == 1 and not handed, bad
            assert transport.writes[0].startswith(b"HTTP/1.1 202 "), bad
            assert b"HTTP/1.1 400 Bad Request\r\n" in transport.writes[0], bad
            assert transport.closed, bad

        run(scenario)


def test_a_body_arriving_after_the_read_that_completed_the_call_before_it():
    # One read completes call A and the head of call B; B's body comes with the next read.
    def scenario() -> None:
        protocol, transport, handler, handed = connect()
        a, b, c = call(b'{"a":1}'), call(b'{"b":22}'), call(b'{"c":333}')
        head_of_b = b.index(b"\r\n\r\n") + 4
        protocol.data_received(a + b[:head_of_b])
        protocol.data_received(b[head_of_b:] + c[:30])
        protocol.data_received(c[30:])
        assert [x[2] for x in handler.calls] == [b'{"a":1}', b'{"b":22}', b'{"c":333}']
        assert not handed and not transport.closed

    run(scenario)


def test_a_request_arriving_byte_by_byte_is_served_once_whole():
    def scenario() -> None:
        protocol, transport, handler, handed = connect()
        data = b"\r\n" + call(b'{"x":1}') + call(b'{"y":2}')
        for i in range(len(data)):
            protocol.data_received(data[i : i + 1])
        assert [c[2] for c in handler.calls] == [b'{"x":1}', b'{"y":2}'] and not handed
        protocol.data_received(b"GET /health HTTP/1.1\r\nHost: m\r\n\r\n")
        assert handed[0].data == b"GET /health HTTP/1.1\r\nHost: m\r\n\r\n"

    run(scenario)


def test_a_client_that_does_not_read_is_not_read_from_until_it_does():
    def scenario() -> None:
        protocol, transport, handler, handed = connect()
        protocol.pause_writing()  # the transport's buffer passed its high-water mark
        assert not transport.reading
        protocol.resume_writing()
        assert transport.reading
        protocol.pause_writing()
        protocol.data_received(b"GET /health HTTP/1.1\r\nHost: m\r\n\r\n")  # hand-off, paused
        assert transport.reading and transport.protocol is handed[0]

    run(scenario)


def test_a_head_that_does_not_arrive_in_time_gets_408_and_the_connection_closes():
    async def scenario() -> None:
        handler = Handler()
        protocol = SchedulerFastPath(handler, AiohttpStandIn, set(), 1024, header_timeout=0.2)
        transport = FakeTransport()
        protocol.connection_made(transport)
        data = call()
        protocol.data_received(data[:10])
        await asyncio.sleep(0.1)
        protocol.data_received(data[10:20])  # dribbling bytes does not extend the deadline
        await asyncio.sleep(0.15)
        assert transport.closed
        assert transport.writes[-1].startswith(b"HTTP/1.1 408 Request Timeout\r\n")
        # A head that completes in time, and a connection idle between requests, are fine.
        protocol = SchedulerFastPath(handler, AiohttpStandIn, set(), 1024, header_timeout=0.2)
        transport = FakeTransport()
        protocol.connection_made(transport)
        protocol.data_received(data[:10])
        await asyncio.sleep(0.1)
        protocol.data_received(data[10:])
        await asyncio.sleep(0.3)
        assert not transport.closed and transport.writes[0].startswith(b"HTTP/1.1 202 ")

    asyncio.run(scenario())
