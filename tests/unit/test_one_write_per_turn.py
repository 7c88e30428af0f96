"""The transport that joins a turn's writes (app/api/one_write_per_turn.py) keeps the flow control of
the transport under it: a response written faster than its client reads is paused, as before."""

from __future__ import annotations

import asyncio

from app.api.one_write_per_turn import FLUSH_BYTES, OneWritePerTurn

CHUNKS = 512  # 512 x 64 KiB = 32 MiB: more than the kernel's socket buffers hold


class Sender(asyncio.Protocol):
    def __init__(self) -> None:
        self.connected = asyncio.Event()
        self.paused = False
        self.transport: OneWritePerTurn | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = OneWritePerTurn(transport, asyncio.get_running_loop())
        self.connected.set()

    def pause_writing(self) -> None:
        self.paused = True


async def test_a_turn_that_writes_more_than_the_client_reads_is_paused_within_the_turn() -> None:
    sender = Sender()
    server = await asyncio.get_running_loop().create_server(lambda: sender, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)  # a client that never reads
    try:
        await sender.connected.wait()
        assert sender.transport is not None
        for _ in range(CHUNKS):  # all in one turn of the loop, as uvicorn writes a whole body
            sender.transport.write(b"x" * FLUSH_BYTES)
        assert sender.paused  # held to the end of the turn, the data would not have reached the transport
    finally:
        writer.transport.abort()
        assert sender.transport is not None
        sender.transport.abort()
        server.close()
        await server.wait_closed()
