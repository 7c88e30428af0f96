"""A lean HTTP/1.1 keep-alive client for the load generator.

The load generator shares the machine with the server, PostgreSQL and Redis, so every
microsecond it spends per request is taken from what it measures. A general client (aiohttp)
costs about as much CPU per request as the service's own request handling; this one writes each
request whole and reads each answer by its `Content-Length`, which is all the booking API needs.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

HEADER_END = b"\r\n\r\n"
CONTENT_LENGTH = b"\r\ncontent-length:"


class ProtocolError(Exception):
    """An answer this client does not read (no Content-Length, a closed connection)."""


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self._reader = reader
        self._writer = writer
        self._host = host

    @classmethod
    async def open(cls, base_url: str) -> Connection:
        url = urlsplit(base_url)
        host, port = url.hostname or "127.0.0.1", url.port or 80
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, f"{host}:{port}")

    async def request(self, method: str, path: str, token: str, body: bytes = b"") -> tuple[int, bytes]:
        """Send one request; the answer's status and body."""
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self._host}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self._writer.write(head.encode() + body)
        try:
            header = await self._reader.readuntil(HEADER_END)
            status = int(header[9:12])
            at = header.lower().find(CONTENT_LENGTH)
            if at < 0:
                raise ProtocolError(f"an answer without Content-Length (status {status})")
            length = int(header[at + len(CONTENT_LENGTH) : header.index(b"\r\n", at + 2)])
            return status, await self._reader.readexactly(length)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise ProtocolError(str(exc)) from exc

    def abort(self) -> None:
        """Drop a connection that failed mid-answer: it cannot carry another request."""
        self._writer.transport.abort()

    async def close(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()
