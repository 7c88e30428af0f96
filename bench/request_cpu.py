"""The server's CPU per request on a path that needs no database: what HTTP, the framework, the
token check and the response cost each request, apart from any booking.

Against a running server (as for bench/load.py), `--connections` keep-alive clients send the same
request with the next of `--users` users' tokens, for `--duration` seconds after a warm-up; it prints
the requests per second and the server processes' user and system CPU per request, from /proc.
System time is the kernel's work for the request (the sockets, the log line): the figure a change
of how the service writes and reads its sockets moves. Compare a change with the code before it in
alternating runs (bench/README.md).

    python -m bench.request_cpu                                   # GET /health
    python -m bench.request_cpu --method POST --path /api/v1/bookings/ --body '{"event_id": 1, "quantity": 0}'
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import uvloop

from bench import server
from bench.credentials import mint, service_settings
from bench.http import Connection

WARM_UP_SECONDS = 2.0


@dataclass
class Counts:
    answers: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


async def send_forever(
    connection: Connection, request: tuple[bytes, bytes, bytes], users: list[bytes], counts: Counts
) -> None:
    """Send `request` again and again, each time with the next of `users`' tokens."""
    method, path, body = request
    for user in itertools.cycle(users):
        status, _ = await connection.request(method, path, user, body)
        counts.statuses[status] = counts.statuses.get(status, 0) + 1
        counts.answers += 1


async def measure(args: argparse.Namespace) -> None:
    if args.users < args.connections:
        raise SystemExit("--users must be at least --connections: each connection has users of its own")
    port = urlsplit(args.base_url).port or 80
    pids = server.with_workers(set(server.server_pids(port)))
    if not pids:
        raise SystemExit(f"no server process found listening on port {port}")
    users = mint(service_settings(args.jwt_secret, None), args.users).users
    connections = [await Connection.open(args.base_url) for _ in range(args.connections)]
    counts = Counts()
    request = (args.method.encode(), args.path.encode(), args.body.encode())
    senders = [
        asyncio.create_task(send_forever(connection, request, users[index :: len(connections)], counts))
        for index, connection in enumerate(connections)
    ]
    await asyncio.sleep(WARM_UP_SECONDS)
    answers, meter, started = counts.answers, server.CpuMeter(pids), time.monotonic()
    await asyncio.sleep(args.duration)
    answered = counts.answers - answers
    user, system = meter.used_by_kind()
    elapsed = time.monotonic() - started
    for sender in senders:
        sender.cancel()
    ended = await asyncio.gather(*senders, return_exceptions=True)
    failures = [error for error in ended if not isinstance(error, asyncio.CancelledError)]
    for connection in connections:
        connection.abort()
    if failures:  # fewer connections than asked for measured the rest: say so, as bench/load.py does
        raise SystemExit(f"FAILURE: {len(failures)} connections failed, e.g. {failures[0]!r}")
    if not answered:
        raise SystemExit("FAILURE: no answer came during the measurement")
    print(f"{args.method} {args.path}, {args.connections} connections, {args.users} users, {args.duration:.0f} s")
    print(f"requests/s           {answered / elapsed:.0f}")
    print(f"user CPU per request {1e6 * user / answered:.0f} µs")
    print(f"sys CPU per request  {1e6 * system / answered:.0f} µs")
    print(f"answers by status    {dict(sorted(counts.statuses.items()))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default="http://127.0.0.1:8002")
    parser.add_argument("--jwt-secret", help="the server's JWT_SECRET, if not in this environment or .env")
    parser.add_argument("--method", default="GET")
    parser.add_argument("--path", default="/health")
    parser.add_argument("--body", default="")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=10.0)
    uvloop.run(measure(parser.parse_args()))


if __name__ == "__main__":
    main()
