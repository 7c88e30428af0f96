#!/usr/bin/env bash
# A throwaway PgBouncer in transaction mode, in the foreground (Ctrl-C stops it), for measuring the
# service behind it: its own ini and userlist in a temporary directory, no unix socket, trust
# authentication on loopback, every database passed through to one PostgreSQL.
#
# Usage: bash bench/pgbouncer.sh [listen port] [server connections per database] [postgres host:port]
#   bash bench/pgbouncer.sh 16432 20 127.0.0.1:5432
# then serve with DATABASE_URL=postgresql+asyncpg://postgres@127.0.0.1:16432/bench and
# DB_PREPARED_STATEMENTS=false (Debian 12's PgBouncer is 1.18: no protocol-level prepared statements).
# As root, PgBouncer runs as the `postgres` user (it refuses root).
set -euo pipefail
port="${1:-16432}"
pool="${2:-20}"
upstream="${3:-127.0.0.1:5432}"
command -v pgbouncer > /dev/null || { echo "pgbouncer is not installed (apt-get install pgbouncer)" >&2; exit 1; }
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
chmod 755 "$dir"
cat > "$dir/pgbouncer.ini" <<EOF
[databases]
* = host=${upstream%:*} port=${upstream##*:}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = trust
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = $pool
max_client_conn = 1000
EOF
echo '"postgres" ""' > "$dir/userlist.txt"
chmod 644 "$dir"/*
as_user=()
[ "$(id -u)" = 0 ] && as_user=(-u postgres)
echo "pgbouncer $(pgbouncer --version | head -1 | cut -d' ' -f2) on 127.0.0.1:$port, transaction mode, $pool server connections per database, to $upstream" >&2
pgbouncer "${as_user[@]}" "$dir/pgbouncer.ini"
