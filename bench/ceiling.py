"""PostgreSQL's own ceiling: the one-booking transaction of `booking.pgbench`, run by pgbench alone.

Run right after the load, on the same database and schema, with as many clients as the load had
connections, so the service's figure can be stated as a ratio to it from the same run.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import asyncpg

BENCH_DIR = Path(__file__).resolve().parent

CREATE_EVENT = """
INSERT INTO event_availability (event_id, event_name, total_capacity, available_capacity, reserved_capacity,
                                confirmed_capacity, price, currency, sales_open, event_status, version)
VALUES ($1, 'pgbench', 100000000, 100000000, 0, 0, 25, 'USD', true, 'published', 1)
"""


async def create_event(dsn: str, event_id: int) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(CREATE_EVENT, event_id)
    finally:
        await connection.close()


def run_pgbench(dsn: str, event_id: int, clients: int, seconds: int) -> float | None:
    """Transactions per second, or None (and why, printed) if pgbench could not run."""
    script = (BENCH_DIR / "booking.pgbench").read_text().replace(":event_id", str(event_id))
    with tempfile.NamedTemporaryFile("w", suffix=".sql", delete=False) as handle:
        handle.write(script)
    command = ["pgbench", "-n", "-f", handle.name, "-c", str(clients), "-j", "2", "-T", str(seconds), dsn]
    try:
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        print(f"pgbench failed: {exc} {getattr(exc, 'stderr', '') or ''}".rstrip())
        return None
    finally:
        os.unlink(handle.name)
    for line in output.splitlines():
        if line.startswith("tps"):
            return float(line.split("=")[1].split()[0])
    return None
