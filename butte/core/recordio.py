"""The one RecordIO reader (``<decimal length>\\n<length bytes>`` records), shared by the
scheduler client, the tests and the built-in executor. It imports nothing, because the
executor imports it on every task's start (see `butte.agent.executor.lite`)."""

from __future__ import annotations


class RecordIOReader:
    """Incremental RecordIO parser: feed bytes, get complete records back. Raises
    ValueError on a malformed length or a record over ``max_record`` bytes."""

    __slots__ = ("_buf", "_max")

    def __init__(self, max_record: int = 64 * 1024 * 1024) -> None:
        self._buf = bytearray()
        self._max = max_record

    def feed(self, data: bytes) -> list[bytes]:
        """The records completed by ``data``, in order."""
        self._buf += data
        out: list[bytes] = []
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                if len(self._buf) > 20:
                    raise ValueError("RecordIO length prefix too long")
                return out
            try:
                size = int(self._buf[:nl])
            except ValueError:
                raise ValueError(f"bad RecordIO length {bytes(self._buf[:nl])!r}") from None
            if size <= 0 or size > self._max:
                raise ValueError(f"RecordIO record size {size} out of bounds")
            end = nl + 1 + size
            if len(self._buf) < end:
                return out
            out.append(bytes(self._buf[nl + 1 : end]))
            del self._buf[:end]
