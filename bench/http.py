"""A lean HTTP/1.1 keep-alive client for the load generator.

The load generator shares the machine with the server, PostgreSQL and Redis, so every
microsecond it spends per request is taken from what it measures. A general client (aiohttp)
costs about as much CPU per request as the service's own request handling; this one writes each
request whole and reads each answer by its `Content-Length`, which is all the booking API needs.
Headers are passed already encoded (a token's `Authorization` line is encoded once, before the run).
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

HEADER_END = b"\r\n\r\n"
CONTENT_LENGTH = b"\r\ncontent-length:"
REQUEST_HEAD = b"%s %s HTTP/1.1\r\nHost: %s\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"


class ProtocolError(Exception):
    """An answer this client does not read (no Content-Length, a closed connection)."""


def bearer(token: str) -> bytes:
    """The `Authorization` header line for a token, ready to pass as `headers`."""
    return b"Authorization: Bearer %s\r\n" % token.encode()


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: bytes) -> None:
        self._reader = reader
        self._writer = writer
        self._host = host

    @classmethod
    async def open(cls, base_url: str) -> Connection:
        url = urlsplit(base_url)
        host, port = url.hostname or "127.0.0.1", url.port or 80
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, f"{host}:{port}".encode())

    async def request(self, method: bytes, path: bytes, headers: bytes, body: bytes = b"") -> tuple[int, bytes]:
        """Send one request (`headers`: encoded header lines, each ending in CRLF); the answer's status and body."""
        self._writer.write(REQUEST_HEAD % (method, path, self._host, headers, len(body)) + body)
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
        """Drop a connection at once (it failed mid-answer, or the run is over)."""
        self._writer.transport.abort()

    async def close(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()
