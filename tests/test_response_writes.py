"""A response goes out in one TCP segment (app/api/one_write_per_turn.py), not its head in one and
its body in another: read off the client's own socket (Linux's `TCP_INFO`, segments received with
data, so acknowledgements do not count)."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator

import pytest

from tests.conftest import make_settings
from tests.service_process import ServiceProcess
from tests.support import process_env

TCPI_DATA_SEGS_IN = 152  # offset of `tcpi_data_segs_in` (u32) in Linux's struct tcp_info (4.6+)
REQUESTS = 20


@pytest.fixture(scope="module")
def service(database_url: str, redis_url: str) -> Iterator[ServiceProcess]:
    process = ServiceProcess(process_env(make_settings(database_url, redis_url)))
    try:
        process.start()
        yield process
    finally:
        process.stop()


def data_segments_received(sock: socket.socket) -> int:
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, TCPI_DATA_SEGS_IN + 4)
    segments: int = struct.unpack_from("I", info, TCPI_DATA_SEGS_IN)[0]
    return segments


def get_health(sock: socket.socket) -> bytes:
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = b""
    while not answer.endswith(b'{"status":"ok"}'):
        chunk = sock.recv(65536)
        assert chunk, answer
        answer += chunk
    return answer


def test_each_answer_is_one_segment(service: ServiceProcess) -> None:
    with socket.create_connection(("127.0.0.1", service.port), timeout=10) as sock:
        before = data_segments_received(sock)
        for _ in range(REQUESTS):
            assert get_health(sock).startswith(b"HTTP/1.1 200 OK\r\n")
        received = data_segments_received(sock) - before
    assert received == REQUESTS  # head and body apart would be two segments an answer
