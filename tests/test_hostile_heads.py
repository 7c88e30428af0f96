"""Request heads against a real uvicorn process over raw sockets: an oversized head is refused (431)
and a head that never completes is cut off (408), while normal requests keep working."""

from __future__ import annotations

import contextlib
import http.client
import socket
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import make_settings
from tests.service_process import ServiceProcess
from tests.support import process_env

HEAD_TIMEOUT = 2


@pytest.fixture(scope="module")
def service(database_url: str, redis_url: str) -> Iterator[ServiceProcess]:
    env = process_env(make_settings(database_url, redis_url))
    process = ServiceProcess({**env, "REQUEST_HEAD_TIMEOUT_SECONDS": str(HEAD_TIMEOUT), "MAX_HEADER_BYTES": "16384"})
    process.start()
    try:
        yield process
    finally:
        process.stop()


def _connect(service: ServiceProcess) -> socket.socket:
    # Far longer than the head timeout: a server that never answers fails the test, not a clock.
    return socket.create_connection(("127.0.0.1", service.port), timeout=HEAD_TIMEOUT * 10)


def _read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes; a reset after its answer counts as the close."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def _health_answers(service: ServiceProcess) -> None:
    assert httpx.get(f"{service.url}/health", timeout=10).status_code == 200


def test_oversized_head_is_refused(service: ServiceProcess) -> None:
    with _connect(service) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(64):  # 1 MiB of one header, never finished
                sock.sendall(b"a" * 16384)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused and closed while we were still sending
        answer = _read_all(sock)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b"request_header_fields_too_large" in answer or answer == b""
    _health_answers(service)


def test_many_headers_add_up(service: ServiceProcess) -> None:
    with _connect(service) as sock:
        head = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(400))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head + b"\r\n")
        answer = _read_all(sock)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:200]


def test_long_request_line_is_refused(service: ServiceProcess) -> None:
    with _connect(service) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(b"GET /health?q=" + b"a" * 40_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = _read_all(sock)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:200]


def test_half_sent_head_is_cut_off(service: ServiceProcess) -> None:
    with _connect(service) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        answer = _read_all(sock)  # the server must end it: this blocks until it does
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert b"request_timeout" in answer
    _health_answers(service)


def test_silent_connection_is_closed(service: ServiceProcess) -> None:
    with _connect(service) as sock:
        assert _read_all(sock) == b""


def test_normal_requests_keep_working_on_one_connection(service: ServiceProcess) -> None:
    body = b'{"payment_reference": "' + b"x" * 40_000 + b'"}'  # a body larger than the head limit
    with _connect(service) as sock:
        for _ in range(3):
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Fine: " + b"v" * 8000 + b"\r\n\r\n")
            assert _response(sock).status == 200
        sock.sendall(
            b"POST /api/v1/payments/webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
        assert _response(sock).status == 401  # unsigned: refused by the app, not by the head limit


def _response(sock: socket.socket) -> http.client.HTTPResponse:
    response = http.client.HTTPResponse(sock)
    response.begin()
    response.read()
    return response
