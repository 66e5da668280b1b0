"""Property tests of the RFC 6455 frame reader (`butte.core.websocket.FrameReader`): random
sequences of valid and invalid frames, cut into random pieces, give exactly the messages and
the first close code that a small reference model of RFC 6455 section 5 predicts."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from butte.core.websocket import FrameReader, ProtocolError, mask

MAX_MESSAGE = 300


@dataclass(frozen=True)
class Frame:
    opcode: int
    payload: bytes
    final: bool = True
    rsv: int = 0
    masked: bool = True

    def encode(self) -> bytes:
        n = len(self.payload)
        first = (0x80 if self.final else 0) | self.rsv << 4 | self.opcode
        bit = 0x80 if self.masked else 0
        if n < 126:
            header = struct.pack("!BB", first, bit | n)
        elif n < 65536:
            header = struct.pack("!BBH", first, bit | 126, n)
        else:
            header = struct.pack("!BBQ", first, bit | 127, n)
        if not self.masked:
            return header + self.payload
        key = os.urandom(4)
        return header + key + mask(self.payload, key)


def expected(frames: list[Frame], require_mask: bool) -> tuple[list[tuple[int, bytes]], int | None]:
    """What RFC 6455 says a reader must do: the items it hands out, and the close code of the
    first violation (None when there is none)."""
    out: list[tuple[int, bytes]] = []
    kind: int | None = None
    parts: list[bytes] = []
    for f in frames:
        n = len(f.payload)
        if f.rsv:
            return out, 1002
        if f.opcode & 0x8:
            if f.opcode not in (0x8, 0x9, 0xA) or n > 125 or not f.final:
                return out, 1002
        elif f.opcode not in (0x0, 0x1, 0x2):
            return out, 1002
        elif (f.opcode == 0x0) == (kind is None):
            return out, 1002
        if n > MAX_MESSAGE:
            return out, 1009
        if require_mask and not f.masked:
            return out, 1002
        if f.opcode & 0x8:
            out.append((f.opcode, f.payload))
            continue
        if f.opcode != 0x0:
            kind = f.opcode
        parts.append(f.payload)
        if not f.final:
            if sum(map(len, parts)) > MAX_MESSAGE:
                return out, 1009
            continue
        message = b"".join(parts)
        if kind == 0x1:
            try:
                message.decode("utf-8")
            except UnicodeDecodeError:
                return out, 1007
        assert kind is not None
        out.append((kind, message))
        kind, parts = None, []
    return out, None


payloads = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=20).map(str.encode),
    st.binary(min_size=120, max_size=130),
    st.binary(min_size=290, max_size=310),
)
frames = st.builds(
    Frame,
    opcode=st.sampled_from([0x0, 0x0, 0x1, 0x1, 0x2, 0x8, 0x9, 0xA, 0x3, 0xB]),
    payload=payloads,
    final=st.booleans(),
    rsv=st.sampled_from([0, 0, 0, 0, 0, 1, 2, 4]),
    masked=st.sampled_from([True, True, True, False]),
)


def read_all(data: bytes, cuts: list[int], require_mask: bool) -> tuple[list, int | None]:
    reader = FrameReader(MAX_MESSAGE, require_mask=require_mask)
    items: list[tuple[int, bytes]] = []
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    try:
        for start, end in zip(points, points[1:], strict=False):
            reader.feed(data[start:end])
            while (item := reader.next()) is not None:
                items.append(item)
    except ProtocolError as e:
        return items, e.code
    return items, None


@settings(max_examples=250, deadline=None)
@given(
    st.lists(frames, max_size=8),
    st.lists(st.integers(min_value=0, max_value=5000), max_size=6),
    st.booleans(),
)
def test_reader_follows_rfc6455(frame_list: list[Frame], cuts: list[int], server: bool) -> None:
    data = b"".join(f.encode() for f in frame_list)
    assert read_all(data, cuts, server) == expected(frame_list, server)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.text(max_size=30)), min_size=1, max_size=6))
def test_valid_fragmented_text_round_trips(messages: list[tuple[bool, str]]) -> None:
    frame_list: list[Frame] = []
    for fragmented, text in messages:
        data = text.encode()
        if fragmented and len(data) > 1:
            cut = len(data) // 2  # may split a multi-byte character: valid across frames
            frame_list += [Frame(0x1, data[:cut], final=False), Frame(0x0, data[cut:])]
            frame_list.insert(len(frame_list) - 1, Frame(0x9, b"ping"))  # control in between
        else:
            frame_list.append(Frame(0x1, data))
    items, code = read_all(b"".join(f.encode() for f in frame_list), [], True)
    assert code is None
    assert [p for op, p in items if op == 0x1] == [t.encode() for _, t in messages]
