"""The master's lean agent WebSocket (`butte.master.agent_socket`): the upgrade it takes and
the ones it leaves to aiohttp, and frame parsing, against a fake transport."""

from __future__ import annotations

import asyncio
import os
import struct

import pytest

from butte.core.websocket import accept_key, encode_frame, mask, python_mask
from butte.master.agent_socket import AgentUpgrade, AgentWebSocket, upgrade_key

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 1.3


def head(path: bytes = b"/api/v1/internal/agent", **extra: bytes) -> bytes:
    headers = {
        b"Host": b"127.0.0.1:5050",
        b"Upgrade": b"websocket",
        b"Connection": b"Upgrade",
        b"Sec-WebSocket-Key": KEY,
        b"Sec-WebSocket-Version": b"13",
    }
    for name, value in extra.items():
        headers[name.replace("_", "-").encode()] = value
    lines = [b"GET " + path + b" HTTP/1.1"]
    lines += [name + b": " + value for name, value in headers.items() if value]
    return b"\r\n".join(lines)


def client_frame(
    opcode: int, payload: bytes, final: bool = True, masked: bool = True, rsv: int = 0
) -> bytes:
    n = len(payload)
    first = (0x80 if final else 0) | rsv << 4 | opcode
    mask_bit = 0x80 if masked else 0
    if n < 126:
        header = struct.pack("!BB", first, mask_bit | n)
    elif n < 65536:
        header = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, n)
    if not masked:
        return header + payload
    key = os.urandom(4)
    return header + key + mask(payload, key)


class FakeTransport(asyncio.Transport):
    """Records writes; nothing written is ever sent (the peer does not read)."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False
        self.aborted = False
        self.reading = True
        self.protocol = None

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_write_buffer_size(self) -> int:
        return sum(map(len, self.written))

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str):
        return ("10.0.0.7", 40000) if name == "peername" else None

    def set_protocol(self, protocol) -> None:
        self.protocol = protocol


class Owner:
    def __init__(self, accepts: bool = True) -> None:
        self.accepts = accepts
        self.opened: list[AgentWebSocket] = []
        self.messages: list[bytes] = []
        self.closed: list[AgentWebSocket] = []

    def accepts_agents(self) -> bool:
        return self.accepts

    def agent_opened(self, link: AgentWebSocket) -> None:
        link.connection_id = f"c{len(self.opened)}"
        self.opened.append(link)

    def agent_data(self, link: AgentWebSocket, data: bytes) -> None:
        self.messages.append(data)

    def agent_closed(self, link: AgentWebSocket) -> None:
        self.closed.append(link)


class Fallback:
    """Stands for aiohttp's handler: records what it is given."""

    def __init__(self) -> None:
        self.made = False
        self.data = b""

    def connection_made(self, transport) -> None:
        self.made = True

    def data_received(self, data: bytes) -> None:
        self.data += data


def upgrade(owner: Owner, data: bytes) -> tuple[FakeTransport, list[Fallback]]:
    fallbacks: list[Fallback] = []

    def fallback() -> Fallback:
        fallbacks.append(Fallback())
        return fallbacks[-1]

    transport = FakeTransport()
    protocol = AgentUpgrade(owner, fallback, 1 << 20)  # type: ignore[arg-type]
    protocol.connection_made(transport)  # type: ignore[arg-type]
    for i in range(0, len(data), 7):  # in pieces, as TCP may deliver it
        (transport.protocol or protocol).data_received(data[i : i + 7])
    return transport, fallbacks


def test_accept_key_is_the_rfc_example() -> None:
    assert accept_key(KEY) == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_the_plain_agent_upgrade_is_taken() -> None:
    assert upgrade_key(head()) == KEY
    assert upgrade_key(head(Connection=b"keep-alive, Upgrade")) == KEY


@pytest.mark.parametrize(
    "request_head",
    [
        head(b"/master/api/v1/internal/agent"),
        head(b"/api/v1/scheduler"),
        head().replace(b"GET", b"POST", 1),
        head().replace(b"HTTP/1.1", b"HTTP/1.0", 1),
        head(Upgrade=b""),
        head(Connection=b"keep-alive"),
        head(Sec_WebSocket_Version=b"8"),
        head(Sec_WebSocket_Key=b"short"),
        head(Content_Length=b"0"),
        head() + b"\r\nUpgrade: websocket",  # repeated
        head() + b"\r\nno colon here",
    ],
)
def test_anything_else_is_left_to_aiohttp(request_head: bytes) -> None:
    assert upgrade_key(request_head) is None
    owner = Owner()
    transport, fallbacks = upgrade(owner, request_head + b"\r\n\r\n")
    assert [f.data for f in fallbacks] == [request_head + b"\r\n\r\n"]
    assert transport.protocol is fallbacks[0] and fallbacks[0].made
    assert transport.written == [] and owner.opened == []


def test_upgrade_answers_101_and_hands_the_transport_to_the_socket() -> None:
    owner = Owner()
    hello = client_frame(0x1, b'{"type":"PONG"}')
    transport, fallbacks = upgrade(owner, head() + b"\r\n\r\n" + hello)
    assert fallbacks == []
    response = transport.written[0]
    assert response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in response
    [link] = owner.opened
    assert transport.protocol is link and link.peer_ip == "10.0.0.7"
    assert owner.messages == [b'{"type":"PONG"}']  # sent right behind the handshake


def test_a_master_that_takes_no_agents_leaves_the_upgrade_to_aiohttp() -> None:
    owner = Owner(accepts=False)
    transport, fallbacks = upgrade(owner, head() + b"\r\n\r\n")
    assert len(fallbacks) == 1 and fallbacks[0].data == head() + b"\r\n\r\n"
    assert transport.written == [] and owner.opened == []


def socket(owner: Owner, max_message: int = 1 << 20) -> tuple[AgentWebSocket, FakeTransport]:
    link = AgentWebSocket(owner, "10.0.0.7", max_message)  # type: ignore[arg-type]
    transport = FakeTransport()
    link.connection_made(transport)  # type: ignore[arg-type]
    return link, transport


def test_frames_split_fragmented_pinged_and_closed() -> None:
    async def main() -> None:
        owner = Owner()
        link, transport = socket(owner)
        big = b"x" * 70_000  # a 64-bit length
        data = (
            client_frame(0x1, b"one")
            + client_frame(0x1, b"tw", final=False)
            + client_frame(0x9, b"are you there")  # a ping between fragments
            + client_frame(0x0, b"o")
            + client_frame(0x2, big)
            + client_frame(0x1, b"m" * 300)  # a 16-bit length
        )
        for i in range(0, len(data), 5):
            link.data_received(data[i : i + 5])
        assert owner.messages == [b"one", b"two", big, b"m" * 300]
        await asyncio.sleep(0)
        assert transport.written == [encode_frame(0xA, b"are you there", masked=False)]
        link.send(b'{"type":"PING"}')
        await asyncio.sleep(0)
        assert transport.written[-1] == b"\x81\x0f" + b'{"type":"PING"}'
        link.data_received(client_frame(0x8, struct.pack("!H", 1000)))
        assert transport.closed and transport.written[-1] == b"\x88\x02\x03\xe8"
        link.send(b"late")  # dropped: the connection is closing
        await asyncio.sleep(0)
        assert transport.written[-1] == b"\x88\x02\x03\xe8"
        link.connection_lost(None)
        link.connection_lost(None)
        assert owner.closed == [link]

    asyncio.run(main())


def test_the_frames_of_one_loop_iteration_leave_in_one_write_and_before_a_close() -> None:
    async def main() -> None:
        link, transport = socket(Owner())
        link.send(b"a")
        link.send(b"bc")
        assert transport.written == []  # not before the end of this iteration
        await asyncio.sleep(0)
        assert transport.written == [b"\x81\x01a\x81\x02bc"]
        link.send(b"d")
        link.close(1001)
        assert transport.written[1:] == [b"\x81\x01d", b"\x88\x02\x03\xe9"]
        assert transport.closed
        await asyncio.sleep(0)
        assert len(transport.written) == 3  # nothing written twice

    asyncio.run(main())


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (client_frame(0x1, b"hello", masked=False), 1002),
        (client_frame(0x1, b"y" * 200), 1009),
        (client_frame(0x3, b""), 1002),
        (client_frame(0x0, b"lonely"), 1002),  # a continuation with nothing before it
        (client_frame(0x1, b"a", final=False) + client_frame(0x1, b"b"), 1002),
        (client_frame(0x1, b"x", rsv=0b100), 1002),  # RSV1 without an extension
        (client_frame(0x1, b"x", rsv=0b001), 1002),
        (client_frame(0x9, b"p" * 126), 1002),  # control frames carry at most 125 bytes
        (client_frame(0x9, b"p", final=False), 1002),  # ... and are never fragmented
        (client_frame(0xB, b""), 1002),  # reserved control opcode
        (client_frame(0x1, b"\xff\xfe"), 1007),  # text that is not UTF-8
        (client_frame(0x1, b"\xe2\x82", final=False) + client_frame(0x0, b"\x28"), 1007),
        (client_frame(0x8, b"\x03"), 1002),  # a 1-byte close payload
        (client_frame(0x8, struct.pack("!H", 1005)), 1002),  # a code never sent
        (client_frame(0x8, struct.pack("!H", 999)), 1002),
        (client_frame(0x8, struct.pack("!H", 2000)), 1002),  # unassigned
        (client_frame(0x8, struct.pack("!H", 1000) + b"\xc3\x28"), 1007),  # reason not UTF-8
    ],
    # Named, not shown: a masked frame's bytes are random, and test ids must be the same in
    # every process that collects them (pytest-xdist's workers).
    ids=[
        "unmasked",
        "too-big",
        "reserved-opcode",
        "lonely-continuation",
        "unfinished-text",
        "rsv1",
        "rsv3",
        "long-ping",
        "fragmented-ping",
        "reserved-control",
        "text-not-utf8",
        "fragments-not-utf8",
        "close-1-byte",
        "close-1005",
        "close-999",
        "close-2000",
        "close-reason-not-utf8",
    ],
)
def test_protocol_errors_close_the_connection(frame: bytes, code: int) -> None:
    owner = Owner()
    link, transport = socket(owner, max_message=100)
    link.data_received(frame)
    assert owner.messages == []
    assert transport.closed and transport.written[-1] == encode_frame(
        0x8, struct.pack("!H", code), masked=False
    )


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1011, 3000, 4999])
def test_a_close_is_answered_with_the_peers_code(code: int) -> None:
    owner = Owner()
    link, transport = socket(owner)
    link.data_received(client_frame(0x8, struct.pack("!H", code) + "bye é".encode()))
    assert transport.closed
    assert transport.written[-1] == encode_frame(0x8, struct.pack("!H", code), masked=False)


def test_a_close_without_a_code_is_answered_1000_and_utf8_text_passes() -> None:
    owner = Owner()
    link, transport = socket(owner)
    text = "grüße \U0001f600".encode()
    link.data_received(client_frame(0x1, text[:3], final=False) + client_frame(0x0, text[3:]))
    assert owner.messages == [text]
    link.data_received(client_frame(0x8, b""))
    assert transport.written[-1] == encode_frame(0x8, struct.pack("!H", 1000), masked=False)


def test_an_agent_that_does_not_read_is_not_read_from_and_then_disconnected() -> None:
    async def main() -> None:
        owner = Owner()
        link = AgentWebSocket(owner, "10.0.0.7", 1 << 20, max_backlog=10_000)  # type: ignore[arg-type]
        transport = FakeTransport()
        link.connection_made(transport)  # type: ignore[arg-type]
        link.pause_writing()  # the kernel's buffer filled up
        assert not transport.reading
        link.resume_writing()
        assert transport.reading
        for _ in range(9):
            link.send(b"x" * 1000)
            await asyncio.sleep(0)
        assert not transport.aborted
        link.send(b"x" * 1000)  # over 10,000 bytes behind
        await asyncio.sleep(0)
        assert transport.aborted
        link.send(b"late")  # dropped
        await asyncio.sleep(0)
        assert len(transport.written) == 10

    asyncio.run(main())


def test_server_frames_are_unmasked_with_the_shortest_length() -> None:
    assert encode_frame(0x1, b"ab", masked=False) == b"\x81\x02ab"
    assert encode_frame(0x1, b"a" * 126, masked=False)[:4] == b"\x81\x7e\x00\x7e"
    assert encode_frame(0x1, b"a" * 65536, masked=False)[:10] == b"\x81\x7f" + struct.pack(
        "!Q", 65536
    )


def test_compiled_and_pure_python_mask_agree() -> None:
    key = b"\x01\x80\xff\x7f"
    samples = [os.urandom(n) for n in (0, 1, 3, 4, 5, 127, 5000)]
    fast = [mask(data, key) for data in samples]
    assert [python_mask(data, key) for data in samples] == fast
    assert [mask(data, key) for data in fast] == samples
