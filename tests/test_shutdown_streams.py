"""Stopping a real service process with live availability streams open: the streams end at once."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx

from app.core.config import Settings
from app.core.security import Role, create_access_token
from tests.service_process import ServiceProcess
from tests.support import process_env

# uvicorn's graceful timeout: before the fix, a stop with open streams waited all of it.
GRACEFUL_SECONDS = 20
# Generous against a loaded machine, and well below the graceful timeout.
EXIT_BOUND_SECONDS = 10


async def test_sigterm_with_open_streams_exits_at_once_without_traceback(settings: Settings) -> None:
    service = ServiceProcess({**process_env(settings), "SHUTDOWN_TIMEOUT_SECONDS": str(GRACEFUL_SECONDS)})
    service.start()
    try:
        admin = {"Authorization": f"Bearer {create_access_token(settings, 1, role=Role.ADMIN)}"}
        user = {"Authorization": f"Bearer {create_access_token(settings, 2)}"}
        async with httpx.AsyncClient(base_url=service.url, timeout=GRACEFUL_SECONDS + 10) as client:
            event = {"event_name": "Gig", "total_capacity": 5, "price": "5.00", "currency": "USD"}
            assert (await client.put("/api/v1/admin/availability/1", json=event, headers=admin)).status_code == 200
            first_event = [asyncio.Event(), asyncio.Event()]

            async def watch(seen: asyncio.Event) -> list[str]:
                lines = []
                async with client.stream("GET", "/api/v1/availability/1/stream", headers=user) as stream:
                    async for line in stream.aiter_lines():
                        lines.append(line)
                        seen.set()
                return lines

            streams = [asyncio.create_task(watch(seen)) for seen in first_event]
            await asyncio.wait_for(asyncio.gather(*(seen.wait() for seen in first_event)), timeout=20)
            assert service.process is not None
            service.process.send_signal(signal.SIGTERM)
            started = time.monotonic()
            exit_code = await asyncio.to_thread(service.process.wait, GRACEFUL_SECONDS + 10)
            took = time.monotonic() - started
            ended = await asyncio.gather(*streams)  # both end normally: no error, no cut transfer
        assert exit_code in (0, -signal.SIGTERM)
        assert took < EXIT_BOUND_SECONDS, f"took {took:.1f}s"
        assert all(any(line.startswith("data:") for line in lines) for lines in ended)
        log = service.log.read_text(errors="replace")
        assert "Traceback" not in log and "timeout graceful shutdown exceeded" not in log, log
    finally:
        service.stop()
