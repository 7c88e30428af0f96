"""Several workers on one port (`WORKERS`, app/workers.py): each listens on a socket of its own, so
the kernel spreads connections over them instead of handing most to one."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator

import httpx
import psutil
import pytest
from uvicorn.config import STARTUP_FAILURE

from app.core.config import Settings
from app.workers import WorkerListener, check_nothing_listens
from bench.server import server_pids
from tests.conftest import make_settings
from tests.redis_server import free_port
from tests.service_process import ServiceProcess
from tests.support import process_env


def connections_per_worker(service: ServiceProcess) -> list[int]:
    return [
        sum(c.status == psutil.CONN_ESTABLISHED and c.laddr.port == service.port for c in worker.net_connections("tcp"))
        for worker in map(psutil.Process, service.listeners())
    ]


async def open_connections(client: httpx.AsyncClient, count: int) -> None:
    """`count` keep-alive connections, each opened by a request of its own at the same time."""
    answers = await asyncio.gather(*(client.get("/health") for _ in range(count)))
    assert {answer.status_code for answer in answers} == {200}


@pytest.fixture(scope="module")
def two_workers(database_url: str, redis_url: str) -> Iterator[ServiceProcess]:
    """One service for the module: each test leaves it with two listening workers."""
    # INFO: uvicorn logs its supervisor's lines (where it listens, a worker that died) at that level.
    env = {**process_env(make_settings(database_url, redis_url)), "WORKERS": "2", "LOG_LEVEL": "INFO"}
    service = ServiceProcess(env)
    try:
        service.start(timeout=90)  # two workers each import the app: slow on a busy machine
        yield service
    finally:
        service.stop_with_workers(server_pids(service.port))


async def test_each_worker_listens_on_a_socket_of_its_own(two_workers: ServiceProcess) -> None:
    found = two_workers.wait_for_workers(2)
    assert [len(sockets) for sockets in found.values()] == [1, 1]
    assert len(set.union(*found.values())) == 2  # not one socket shared by both
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=two_workers.url, limits=limits, timeout=10) as client:
        await open_connections(client, 64)
        shares = connections_per_worker(two_workers)
    assert sum(shares) == 64
    assert min(shares) >= 8, shares  # a hash of each connection's addresses picks its worker


def uvicorn_said(service: ServiceProcess) -> list[str]:
    """What uvicorn's supervisor and workers logged, in the service's log format (JSON lines)."""
    said: list[str] = []
    for line in service.log.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # not a record: a killed worker's last write
            record = json.loads(line)
            if isinstance(record, dict) and record.get("logger") == "uvicorn.error":
                said.append(record["event"])
    return said


def test_the_log_says_where_the_service_listens(two_workers: ServiceProcess) -> None:
    """As with uvicorn's own workers, which share the socket it binds and announces."""
    assert two_workers.process is not None
    said = uvicorn_said(two_workers)
    assert f"Started parent process [{two_workers.process.pid}]" in said
    assert f"Uvicorn running on {two_workers.url} (Press CTRL+C to quit)" in said


async def test_a_worker_restarted_after_a_crash_listens_again(two_workers: ServiceProcess) -> None:
    before = two_workers.wait_for_workers(2)
    crashed = min(before)
    os.kill(crashed, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while crashed in two_workers.listeners() or len(two_workers.listeners()) < 2:
        assert time.monotonic() < deadline, "no worker replaced the crashed one"
        await asyncio.sleep(0.2)
    after = two_workers.listeners()
    assert len(set.union(*after.values())) == 2
    assert after[max(before)] == before[max(before)]  # the other worker kept its socket
    assert f"Child process [{crashed}] died" in uvicorn_said(two_workers)
    # New connections, each hashed to one of the two listening workers, are all answered.
    async with httpx.AsyncClient(base_url=two_workers.url, limits=httpx.Limits(max_keepalive_connections=0)) as client:
        answers = [await client.get("/health") for _ in range(40)]
    assert {answer.status_code for answer in answers} == {200}


async def test_a_second_service_on_the_same_port_does_not_start(
    two_workers: ServiceProcess, settings: Settings
) -> None:
    second = ServiceProcess({**process_env(settings), "WORKERS": "2"}, port=two_workers.port)
    try:
        second.start()  # returns once it exits: the first one answers on the port
        assert second.process is not None
        assert second.process.wait(30) == STARTUP_FAILURE  # as uvicorn's own workers exit
        assert "cannot listen" in second.log_tail()
    finally:
        workers = [child.pid for child in psutil.Process(second.process.pid).children()] if second.running() else []
        second.stop_with_workers(workers)
    two_workers.wait_for_workers(2)  # the first one serves on


def test_an_address_held_for_workers_is_refused_before_any_of_them_listens() -> None:
    port = free_port()
    with WorkerListener("127.0.0.1", port), pytest.raises(OSError):  # the check a second service makes first
        check_nothing_listens("127.0.0.1", port)
    check_nothing_listens("127.0.0.1", port)  # free again
