"""Load generator for the booking path: many clients over keep-alive connections.

Against a server started the way the README says (`make run`, or `python main.py`), it creates
events through the admin endpoint, fires bookings at them for a while, then prints throughput,
latency percentiles and answers by status, and checks in PostgreSQL that the capacity invariant
holds and that every 201 has exactly one booking, audit row and outbox message.

    python -m bench.load --scenario hot --connections 64 --duration 15
    python -m bench.load --scenario spread --events 1000
    python -m bench.load --scenario hot --pgbench     # also PostgreSQL alone, and the ratio
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import uvloop
from pydantic import SecretStr

from app.core.config import Settings
from app.core.security import Role, create_access_token
from bench.http import Connection, ProtocolError

BENCH_DIR = Path(__file__).resolve().parent


@dataclass
class Results:
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base-url", default=os.environ.get("BENCH_URL", "http://127.0.0.1:8002"))
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--jwt-secret", default=os.environ.get("JWT_SECRET"))
    parser.add_argument("--scenario", choices=["hot", "spread"], default="hot")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--events", type=int, default=1000, help="events in the spread scenario")
    parser.add_argument("--capacity", type=int, default=1_000_000, help="seats per event")
    parser.add_argument("--think-ms", type=float, default=2.0, help="mean random pause between requests")
    parser.add_argument("--pgbench", action="store_true", help="also measure PostgreSQL alone (pgbench)")
    return parser.parse_args()


def token_factory(secret: str | None) -> tuple[Settings, str]:
    settings = Settings(database_url="unused", redis_url="unused")
    if secret:
        settings = settings.model_copy(update={"jwt_secret": SecretStr(secret)})
    admin = create_access_token(settings, 1, role=Role.ADMIN)
    return settings, admin


async def create_events(base: str, admin: str, ids: list[int], capacity: int, connections: int = 8) -> None:
    """Create the events through the admin endpoint, a few connections at a time."""
    pending = list(ids)

    async def creator() -> None:
        connection = await Connection.open(base)
        try:
            while pending:
                event_id = pending.pop()
                body = {"event_name": f"bench {event_id}", "total_capacity": capacity, "price": "25", "currency": "USD"}
                status, answer = await connection.request(
                    "PUT", f"/api/v1/admin/availability/{event_id}", admin, json.dumps(body).encode()
                )
                if status != 200:
                    raise SystemExit(f"could not create event {event_id}: {status} {answer.decode()}")
        finally:
            await connection.close()

    await asyncio.gather(*(creator() for _ in range(connections)))


async def client(base: str, token: str, events: list[int], deadline: float, think: float, results: Results) -> None:
    rng = random.Random()
    connection: Connection | None = None
    while time.perf_counter() < deadline:
        body = b'{"event_id": %d, "quantity": 1}' % rng.choice(events)
        started = time.perf_counter()
        try:
            connection = connection or await Connection.open(base)
            status, _ = await connection.request("POST", "/api/v1/bookings/", token, body)
        except (OSError, ProtocolError) as exc:
            results.errors[type(exc).__name__] += 1
            if connection is not None:
                connection.abort()
            connection = None  # a new connection for the next request
            continue
        results.statuses[status] += 1
        results.latencies.append(time.perf_counter() - started)
        if think:
            await asyncio.sleep(rng.expovariate(1 / think))
    if connection is not None:
        await connection.close()


async def run_load(args: argparse.Namespace, events: list[int], results: Results) -> float:
    settings, admin = token_factory(args.jwt_secret)
    await create_events(args.base_url, admin, events, args.capacity)
    tokens = [create_access_token(settings, 10_000 + i) for i in range(args.connections)]
    started = time.perf_counter()
    deadline = started + args.duration
    await asyncio.gather(
        *(client(args.base_url, token, events, deadline, args.think_ms / 1000, results) for token in tokens)
    )
    return time.perf_counter() - started


INVARIANT = """
SELECT count(*) FROM event_availability
WHERE available_capacity + reserved_capacity + confirmed_capacity <> total_capacity
   OR available_capacity < 0 OR reserved_capacity < 0 OR confirmed_capacity < 0
"""


async def check_database(dsn: str, events: list[int], results: Results) -> list[str]:
    connection = await asyncpg.connect(dsn)
    try:
        broken = await connection.fetchval(INVARIANT)
        reserved = await connection.fetchval(
            "SELECT coalesce(sum(reserved_capacity), 0) FROM event_availability WHERE event_id = ANY($1)", events
        )
        bookings = await connection.fetchval("SELECT count(*) FROM bookings WHERE event_id = ANY($1)", events)
        audits = await connection.fetchval(
            "SELECT count(*) FROM audit_log a JOIN bookings b ON a.entity_type = 'booking' AND a.entity_id = b.id "
            "AND a.action = 'booking.created' WHERE b.event_id = ANY($1)",
            events,
        )
        messages = await connection.fetchval(
            "SELECT count(*) FROM outbox WHERE kind = 'created' AND event_id = ANY($1)", events
        )
    finally:
        await connection.close()
    answered = results.statuses[201]
    return [
        f"invariant violations        {broken}  {'OK' if broken == 0 else 'BROKEN'}",
        f"201 answers / booking rows  {answered} / {bookings}  {'OK' if answered == bookings else 'MISMATCH'}",
        f"reserved seats              {reserved}  {'OK' if reserved == bookings else 'MISMATCH'}",
        f"audit rows / outbox rows    {audits} / {messages}  {'OK' if audits == messages == bookings else 'MISMATCH'}",
    ]


def run_pgbench(dsn: str, event_id: int, clients: int, duration: int) -> float | None:
    """PostgreSQL alone: the same one-booking transaction, on the same schema and database."""
    script = (BENCH_DIR / "booking.pgbench").read_text().replace(":event_id", str(event_id))
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as handle:
        handle.write(script)
    command = ["pgbench", "-n", "-f", handle.name, "-c", str(clients), "-j", "2", "-T", str(duration), dsn]
    try:
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"pgbench failed: {exc}")
        return None
    finally:
        os.unlink(handle.name)
    for line in output.splitlines():
        if line.startswith("tps"):
            return float(line.split("=")[1].split()[0])
    return None


def percentile(sorted_values: list[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))] * 1000


def report(args: argparse.Namespace, results: Results, elapsed: float) -> float:
    sent = sum(results.statuses.values())
    latencies = sorted(results.latencies)
    booked_per_second = results.statuses[201] / elapsed
    print(
        f"scenario           {args.scenario} ({args.events if args.scenario == 'spread' else 1} events), "
        f"{args.connections} connections, {elapsed:.1f} s"
    )
    print(f"requests sent      {sent}")
    print(f"bookings made      {results.statuses[201]}")
    print(f"requests/s         {sent / elapsed:.0f}")
    print(f"bookings/s         {booked_per_second:.0f}")
    if latencies:
        print(
            f"latency ms         p50 {percentile(latencies, 0.50):.1f}  p95 {percentile(latencies, 0.95):.1f}  "
            f"p99 {percentile(latencies, 0.99):.1f}  mean {statistics.fmean(latencies) * 1000:.1f}"
        )
    print(f"answers by status  {dict(sorted(results.statuses.items()))}")
    print(f"client errors      {dict(results.errors) or 0}")
    return booked_per_second


def main() -> None:
    args = parse_args()
    if not args.database_url:
        raise SystemExit("--database-url (or DATABASE_URL) is needed to check the invariant afterwards")
    dsn = args.database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
    base_id = random.randint(10**9, 2 * 10**9)
    events = [base_id] if args.scenario == "hot" else [base_id + i for i in range(args.events)]
    results = Results()
    elapsed = uvloop.run(run_load(args, events, results))
    booked_per_second = report(args, results, elapsed)
    for line in asyncio.run(check_database(dsn, events, results)):
        print(line)
    if args.pgbench:
        pg_event = base_id + 10**6
        asyncio.run(asyncpg_create_event(dsn, pg_event))
        tps = run_pgbench(dsn, pg_event, args.connections, int(args.duration))
        if tps:
            print(f"pgbench tps        {tps:.0f} (one booking per transaction, {args.connections} clients)")
            print(f"service/PostgreSQL {booked_per_second / tps:.2f}")


async def asyncpg_create_event(dsn: str, event_id: int) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "INSERT INTO event_availability (event_id, event_name, total_capacity, available_capacity, "
            "reserved_capacity, confirmed_capacity, price, currency, sales_open, event_status, version) "
            "VALUES ($1, 'pgbench', 100000000, 100000000, 0, 0, 25, 'USD', true, 'published', 1)",
            event_id,
        )
    finally:
        await connection.close()


if __name__ == "__main__":
    main()
