"""uvicorn's httptools protocol with bounds on request heads, which it does not have itself.

httptools keeps a header growing in memory (by repeated concatenation) for as long as it arrives,
and nothing limits how long a client may take to send a head. Here a head (request line and header
fields) larger than `max_head_bytes` is answered 431, and one not complete within `head_timeout`
seconds of the connection opening or its first byte is answered 408; both close the connection.
Bodies are not counted, and a complete request costs one timer more than before.
"""

from __future__ import annotations

import asyncio
import http
import json
from asyncio import TimerHandle
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from app.api.one_write_per_turn import OneWritePerTurn
from app.api.problems import PROBLEM_JSON, error_body
from app.core.errors import AppError, HeaderFieldsTooLargeError, RequestTimeoutError


class HeadTooLargeError(Exception):
    pass


class HeadLimitedProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        max_head_bytes: int,
        head_timeout: float,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.max_head_bytes = max_head_bytes
        self.head_timeout = head_timeout
        # Bytes received while a head may be arriving; None from a head's end to its message's end.
        self.head_bytes: int | None = 0
        self.head_size = 0  # of the head being parsed, as httptools passes it on
        self.head_oversized = False
        self.head_timer: TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(OneWritePerTurn(transport, self.loop))
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.head_bytes is None:  # a body: as uvicorn does
            super().data_received(data)
            return
        # Bounds what httptools keeps of a head still arriving (it passes on a header only once whole).
        self.head_bytes += len(data)
        super().data_received(data)
        if self.head_bytes is not None and self.head_bytes > self.max_head_bytes:
            self._refuse(HeaderFieldsTooLargeError)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.head_size = 0
        self._start_head_timer()

    # A head that came whole in one read, body and all, is measured exactly as httptools passes it on.
    def on_url(self, url: bytes) -> None:
        self._add_to_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._add_to_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _add_to_head(self, size: int) -> None:
        self.head_size += size
        if self.head_size > self.max_head_bytes:
            self.head_oversized = True
            raise HeadTooLargeError  # stops the parser; uvicorn then calls send_400_response

    def send_400_response(self, msg: str) -> None:
        if self.head_oversized:
            self._refuse(HeaderFieldsTooLargeError)
        else:
            super().send_400_response(msg)

    def on_headers_complete(self) -> None:
        self.head_bytes = None
        self._stop_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.head_bytes = 0

    def _start_head_timer(self) -> None:
        if self.head_timer is None:
            self.head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if self.head_bytes:  # part of a head came: say why the connection ends
            self._refuse(RequestTimeoutError)
        elif not self.transport.is_closing():
            self.transport.close()

    def _refuse(self, error: type[AppError]) -> None:
        """Answer (unless a response is still being written) and close the connection."""
        self.head_bytes = None
        self._stop_head_timer()
        if self.transport.is_closing():
            return
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(_problem_response(error, self.server_state.default_headers))
        self.transport.close()


DETAILS: dict[type[AppError], str] = {
    HeaderFieldsTooLargeError: "The request line and headers are too large",
    RequestTimeoutError: "The request line and headers did not arrive in time",
}


def _problem_response(error: type[AppError], default_headers: list[tuple[bytes, bytes]]) -> bytes:
    body = json.dumps(error_body(error, DETAILS[error], None)).encode()
    status = http.HTTPStatus(error.status_code)
    lines = [f"HTTP/1.1 {status.value} {status.phrase}".encode()]
    lines += [name + b": " + value for name, value in default_headers]
    lines += [
        b"content-type: " + PROBLEM_JSON.encode(),
        b"content-length: " + str(len(body)).encode(),
        b"connection: close",
    ]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body
