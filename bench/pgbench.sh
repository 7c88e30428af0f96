#!/usr/bin/env bash
# PostgreSQL alone: the one-booking transaction of bench/booking.pgbench on the service's schema.
# Usage: DATABASE_URL=postgresql://postgres@127.0.0.1/bookings bash bench/pgbench.sh [clients] [seconds]
set -euo pipefail
clients="${1:-64}"
seconds="${2:-15}"
dsn="${DATABASE_URL:?set DATABASE_URL to a migrated database}"
dsn="${dsn/postgresql+asyncpg:/postgresql:}"
event_id=$(( 3000000000 + RANDOM ))
psql "$dsn" -qc "INSERT INTO event_availability (event_id, event_name, total_capacity, available_capacity,
  reserved_capacity, confirmed_capacity, price, currency, sales_open, event_status, version)
  VALUES ($event_id, 'pgbench', 100000000, 100000000, 0, 0, 25, 'USD', true, 'published', 1)"
script=$(mktemp)
trap 'rm -f "$script"' EXIT
sed "s/:event_id/$event_id/g" "$(dirname "$0")/booking.pgbench" > "$script"
pgbench -n -f "$script" -c "$clients" -j 2 -T "$seconds" "$dsn" | grep -E "^(tps|latency|number of (transactions|clients))"
