"""A TCP proxy a test can cut as a network failure does: the server's side of every connection goes
away while the client's socket stays open and silent, so a client learns of the cut only when it next
sends something (the proxy then closes its socket). Connections made after the cut pass as before."""

from __future__ import annotations

import asyncio
from types import TracebackType


class _Pair:
    def __init__(self, client: asyncio.StreamWriter, server: asyncio.StreamWriter) -> None:
        self.client = client
        self.server = server
        self.cut = False
        self.tasks: list[asyncio.Task[None]] = []
        self.to_client: asyncio.Task[None] | None = None  # what forwards the server's bytes


class SilentCutProxy:
    def __init__(self, server_host: str, server_port: int) -> None:
        self._server_address = (server_host, server_port)
        self._pairs: set[_Pair] = set()
        self._listener: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self._listener is not None
        port: int = self._listener.sockets[0].getsockname()[1]
        return port

    async def __aenter__(self) -> SilentCutProxy:
        self._listener = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self, _type: type[BaseException] | None, _value: BaseException | None, _tb: TracebackType | None
    ) -> None:
        assert self._listener is not None
        self._listener.close()
        for pair in list(self._pairs):
            for task in pair.tasks:
                task.cancel()
            pair.client.close()
            pair.server.close()
        await self._listener.wait_closed()

    async def cut(self) -> None:
        """Close the server's side of every connection now open; their clients are not told."""
        for pair in list(self._pairs):
            pair.cut = True
            if pair.to_client is not None:
                pair.to_client.cancel()  # the server's EOF must not reach the client
            pair.server.close()
            await asyncio.gather(pair.server.wait_closed(), return_exceptions=True)

    async def _accept(self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter) -> None:
        server_reader, server = await asyncio.open_connection(*self._server_address)
        pair = _Pair(client, server)
        self._pairs.add(pair)
        pair.to_client = asyncio.create_task(self._forward(server_reader, client, pair))
        pair.tasks = [asyncio.create_task(self._forward(client_reader, server, pair)), pair.to_client]

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pair: _Pair) -> None:
        try:
            while data := await reader.read(65536):
                if pair.cut:  # the client spoke after the cut: now its connection goes too
                    break
                writer.write(data)
                await writer.drain()
        except ConnectionError:
            pass
        except asyncio.CancelledError:
            if pair.cut:  # stopped by the cut: the client's side stays open
                return
            raise
        self._pairs.discard(pair)
        pair.client.close()
        pair.server.close()
