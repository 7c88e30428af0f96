"""Load generator for the booking path: many clients over keep-alive connections, many users.

Against a server started the way the README says (`make run`, or `python main.py`), it creates
events through the admin endpoint, runs the scenario for a while with every request carrying the
next of `--users` users' tokens, then prints throughput, latencies and answers by status, the
server's CPU per booking and memory (from /proc), PostgreSQL's own ceiling (pgbench) and the
service's ratio to it, and checks in PostgreSQL that what the clients were told was stored.
It exits with status 1, after a loud FAILURE line, on any answer the scenario does not expect,
any client error or any check that does not hold.

    python -m bench.load --scenario hot                  # one event, everyone books it
    python -m bench.load --scenario spread --events 1000
    python -m bench.load --scenario rush --capacity 5000 # the whole purchase funnel, until sold out
    python -m bench.load --scenario rush --capacity 5000 --queue --admit-per-minute 30000 --max-tickets-per-user 2
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import sys
import time
from urllib.parse import urlsplit

import uvloop

from bench import report
from bench.ceiling import create_event, run_pgbench
from bench.checks import check_database
from bench.clients import Client, book_forever, run_for
from bench.credentials import Credentials, mint, service_settings
from bench.http import Connection
from bench.machine_speed import ADDITIONS, additions_seconds
from bench.results import Run, new_run
from bench.rush import buy_forever
from bench.server import CpuMeter, describe, server_pids, with_workers


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default=os.environ.get("BENCH_URL", "http://127.0.0.1:8002"))
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--jwt-secret", help="the server's JWT_SECRET, if not in this environment or .env")
    parser.add_argument(
        "--webhook-secret", help="the server's PAYMENT_WEBHOOK_SECRET (rush), if not in the environment"
    )
    parser.add_argument("--scenario", choices=["hot", "spread", "rush"], default="hot")
    parser.add_argument("--users", type=int, default=20_000, help="distinct users; requests cycle through them")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--events", type=int, default=1000, help="events in the spread scenario")
    parser.add_argument("--capacity", type=int, default=1_000_000, help="seats per event")
    parser.add_argument("--think-ms", type=float, default=2.0, help="mean random pause between requests")
    parser.add_argument("--queue", action="store_true", help="rush: the event behind its waiting room")
    parser.add_argument("--admit-per-minute", type=int, default=30_000, help="the waiting room's rate (--queue)")
    parser.add_argument("--max-tickets-per-user", type=int, help="the events' per-buyer limit (default: none)")
    parser.add_argument(
        "--pgbench", action=argparse.BooleanOptionalAction, default=True,
        help="measure PostgreSQL alone (pgbench) after the load, for the same-run ratio",
    )  # fmt: skip
    parser.add_argument("--server-pid", type=int, action="append", help="the server's pid (default: found by port)")
    parser.add_argument("--additions", type=int, default=ADDITIONS, help="size of the machine-speed loop")
    args = parser.parse_args(argv)
    if not args.database_url:
        parser.error("--database-url (or DATABASE_URL) is needed to check the database afterwards")
    if args.users < 1:
        parser.error("--users must be at least 1")
    if args.queue and args.scenario != "rush":
        parser.error("--queue goes with --scenario rush")
    return args


async def create_events(
    base: str, admin: bytes, ids: list[int], capacity: int, per_user: int | None, connections: int = 8
) -> None:
    """Create the events through the admin endpoint, a few connections at a time."""
    pending = list(ids)

    async def creator() -> None:
        connection = await Connection.open(base)
        try:
            while pending:
                event_id = pending.pop()
                body = {
                    "event_name": f"bench {event_id}",
                    "total_capacity": capacity,
                    "price": "25",
                    "currency": "USD",
                    "max_tickets_per_user": per_user,
                }
                path = b"/api/v1/admin/availability/%d" % event_id
                status, answer = await connection.request(b"PUT", path, admin, json.dumps(body).encode())
                if status != 200:
                    raise SystemExit(f"could not create event {event_id}: {status} {answer.decode()}")
        finally:
            await connection.close()

    await asyncio.gather(*(creator() for _ in range(min(connections, len(ids)))))


async def open_waiting_room(base: str, admin: bytes, event_id: int, admit_per_minute: int) -> None:
    connection = await Connection.open(base)
    try:
        body = json.dumps({"enabled": True, "admit_per_minute": admit_per_minute, "admission_minutes": 10})
        path = b"/api/v1/admin/queue/%d" % event_id
        status, answer = await connection.request(b"PUT", path, admin, body.encode())
        if status != 200:
            raise SystemExit(f"could not enable the waiting room of event {event_id}: {status} {answer.decode()}")
    finally:
        await connection.close()


async def run_load(args: argparse.Namespace, run: Run, credentials: Credentials, server: list[int]) -> float:
    """Run the scenario; the CPU seconds the `server` processes used meanwhile."""
    await create_events(args.base_url, credentials.admin, run.events, args.capacity, args.max_tickets_per_user)
    if args.queue:
        await open_waiting_room(args.base_url, credentials.admin, run.events[0], args.admit_per_minute)
    users = itertools.cycle(credentials.users)
    clients = [Client(args.base_url, users, args.think_ms / 1000) for _ in range(args.connections)]
    if run.scenario == "rush":
        coroutines = [buy_forever(client, run, credentials) for client in clients]
    else:
        coroutines = [book_forever(client, run.steps["booking"], run.events) for client in clients]
    report.line("load", f"running from {time.strftime('%H:%M:%S')}", flush=True)  # bench/profile.sh waits for it
    started, meter = time.perf_counter(), CpuMeter(server)
    await run_for(args.duration, coroutines)
    run.elapsed = time.perf_counter() - started
    return meter.used()


def find_server(args: argparse.Namespace) -> list[int]:
    if args.server_pid:
        return with_workers(set(args.server_pid))
    return server_pids(urlsplit(args.base_url).port or 80)


def measure_ceiling(args: argparse.Namespace, dsn: str, event_id: int, run: Run) -> bool:
    """pgbench on an event of its own, as many clients as connections, as long as the load ran."""
    asyncio.run(create_event(dsn, event_id))
    tps = run_pgbench(dsn, event_id, args.connections, max(1, round(args.duration)))
    report.ceiling(run, tps, args.connections)
    return tps is not None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    dsn = args.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    settings = service_settings(args.jwt_secret, args.webhook_secret)
    if args.scenario == "rush" and not settings.payment_webhook_secret.get_secret_value():
        raise SystemExit("rush signs webhooks: set PAYMENT_WEBHOOK_SECRET (as the server has it) or --webhook-secret")
    base_id = random.randint(10**9, 2 * 10**9)
    events = [base_id + i for i in range(args.events)] if args.scenario == "spread" else [base_id]
    run = new_run(args.scenario, events, queue=args.queue, max_tickets_per_user=args.max_tickets_per_user)
    report.header(args.scenario, len(events), args.capacity, args.connections, args.users, args.duration)
    report.line("machine speed", f"{args.additions:,} additions in {additions_seconds(args.additions):.2f} s")
    credentials = mint(settings, args.users)
    processes = describe(find_server(args))
    cpu = uvloop.run(run_load(args, run, credentials, [process.pid for process in processes]))
    report.load(run)
    report.server(run, processes, cpu)
    checks = asyncio.run(check_database(dsn, run))
    for check in checks:
        print(check.line())
    failures = run.failures() + [f"check {check.name}: {check.detail}" for check in checks if not check.ok]
    if args.pgbench and not measure_ceiling(args, dsn, base_id + 10**6, run):
        failures.append("pgbench did not run (--no-pgbench to leave it out)")
    report.verdict(failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
