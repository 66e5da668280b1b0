"""Wire encoding shared by every HTTP API: compact ASCII JSON and RecordIO framing.

Clients depend on two details (docs/protocol.md §0.3, 6.4): records are ``<length>\\n<json>`` with
the byte length of compact single-line JSON, and the JSON is ASCII-only so that a client that
slices decoded text by the byte count (mesoshttp) still finds record boundaries.
"""

from __future__ import annotations

import re
import string
from typing import Any

import msgspec

from butte.core.recordio import RecordIOReader

__all__ = ["RecordIOReader", "encode_json", "frame", "record"]

_encoder = msgspec.json.Encoder()
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def encode_json(obj: Any) -> bytes:
    """Compact, ASCII-only JSON bytes for any message, struct or plain value (including
    pre-encoded `msgspec.Raw` fragments)."""
    data = _encoder.encode(obj)
    if data.isascii():
        return data
    # Rare path: non-ASCII text (task names, labels) gets \\u escapes, as json.dumps'
    # ensure_ascii writes them. Outside strings JSON is ASCII, so escaping the encoded text
    # is exact.
    return _NON_ASCII.sub(_escape, data.decode("utf-8")).encode("ascii")


def record(obj: Any) -> bytes:
    """One RecordIO record: decimal length, LF, then the compact JSON."""
    data = encode_json(obj)
    return b"%d\n%s" % (len(data), data)


def frame(data: bytes) -> bytes:
    """Frames already-encoded JSON bytes as a RecordIO record."""
    return b"%d\n%s" % (len(data), data)


_BASE64 = frozenset(string.ascii_letters + string.digits + "+/")


def base64_problem(field: str, data: str) -> str | None:
    """Why ``data`` is no base64 (the JSON form of a protobuf ``bytes`` field), in the words
    Mesos answers a call with; None when it is. As lenient as Mesos' decoder: padding may
    be missing and whitespace is skipped; a character outside the alphabet is refused."""
    for c in data.partition("=")[0]:
        if c not in _BASE64 and not c.isspace():
            return f"Failed to base64 decode bytes field '{field}': Invalid character {c!r}"
    return None
