"""A connection's transport that sends what was written in one turn of the event loop in one `send`.

uvicorn writes a response in two calls, its head and then its body, and the event loop's transport
sends each at once: two system calls and two TCP segments per response, which the client reads in
two. On loopback the kernel delivers a segment within the sender's own system call, so each costs
the worker more than the call itself: under load, uvicorn's `send` was a quarter of the CPU of a
`GET /health` (py-spy), and joining the two halved the kernel's time per request answered 422 (85 to
40 µs, docs/scaling.md). Held until the end of the turn, a response whose head and body are written
together goes out in one call (one segment, if it fits in one); a streamed response's parts go out
each at the end of the turn it was written in, and whatever is held goes out before the connection
closes. Past `FLUSH_BYTES` held, it goes out at once: the transport's flow control then pauses a
response that writes faster than the client reads, as before."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

FLUSH_BYTES = 64 * 1024  # asyncio's and uvloop's default high-water mark for a transport's buffer


class OneWritePerTurn(asyncio.Transport):
    """`transport`, with the writes of one turn of the loop joined into one."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, bytes):
            data = bytes(data)  # a copy: the writer may reuse its buffer before the turn ends
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= FLUSH_BYTES:
            self.flush()

    def writelines(self, list_of_data: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        if self._pending:
            data = b"".join(self._pending)
            self._pending.clear()
            self._pending_bytes = 0
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()  # what was written goes out before the connection closes
        self._transport.close()

    def abort(self) -> None:
        self._pending.clear()
        self._pending_bytes = 0
        self._transport.abort()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._pending_bytes

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)
