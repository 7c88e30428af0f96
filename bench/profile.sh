#!/usr/bin/env bash
# Where the server's CPU goes under load: py-spy samples the running server (and its workers) while
# bench/load.py loads it, and writes a speedscope file (open it at speedscope.app, or in any viewer
# of that format) or a flame graph SVG.
#
# Usage: bash bench/profile.sh [seconds] [output] [bench.load options...]
#   (an empty output: bench/results/profile-<date>-<time>.<format's extension>, not versioned)
#   bash bench/profile.sh 15 hot.speedscope.json --scenario hot --users 20000
#   PYSPY_FORMAT=flamegraph bash bench/profile.sh 15 rush.svg --scenario rush --capacity 5000
# Environment: BENCH_URL (the server, default http://127.0.0.1:8002), DATABASE_URL (for load.py),
#   PYSPY_FORMAT (speedscope | flamegraph | raw, default speedscope), PYSPY_RATE (samples/s, default 100),
#   PYSPY_NATIVE=1 (also C frames: asyncpg, uvloop, orjson; costs more), PY (default .venv/bin/python).
# py-spy samples without pausing the server (--nonblocking; with PYSPY_NATIVE=1 it must pause it); it
# runs on the same cores, so the load's own figures during a profile are not figures to report.
set -euo pipefail
seconds="${1:-15}"
output="${2:-}"
shift $(( $# < 2 ? $# : 2 ))
root="$(cd "$(dirname "$0")/.." && pwd)"
format="${PYSPY_FORMAT:-speedscope}"
if [ -z "$output" ]; then
  case "$format" in speedscope) ext=speedscope.json ;; flamegraph) ext=svg ;; *) ext=txt ;; esac
  mkdir -p "$root/bench/results"
  output="$root/bench/results/profile-$(date +%Y%m%d-%H%M%S).$ext"
fi
py="${PY:-$root/.venv/bin/python}"
pyspy="$(dirname "$py")/py-spy"
url="${BENCH_URL:-http://127.0.0.1:8002}"
port="${url##*:}"
port="${port%%/*}"

pid="$(cd "$root" && "$py" -m bench.server --port "$port" --root | head -n 1)"
if [ -z "$pid" ]; then
  echo "no server process found listening on port $port" >&2
  exit 1
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# The load lasts two seconds longer than the profile, which starts once the load is running.
(cd "$root" && exec "$py" -m bench.load --base-url "$url" --duration "$((seconds + 2))" --no-pgbench "$@") >"$log" 2>&1 &
load=$!
trap 'kill "$load" 2>/dev/null || true; rm -f "$log"' EXIT
until grep -q '^load ' "$log"; do
  if ! kill -0 "$load" 2>/dev/null; then
    cat "$log"
    echo "the load ended before it started loading" >&2
    exit 1
  fi
  sleep 0.2
done
# Native frames need the process paused for each sample; Python frames alone do not.
mode=(--nonblocking)
if [ "${PYSPY_NATIVE:-0}" = 1 ]; then mode=(--native); fi
"$pyspy" record --pid "$pid" --subprocesses "${mode[@]}" --duration "$seconds" \
  --rate "${PYSPY_RATE:-100}" --format "$format" --output "$output"
status=0
wait "$load" || status=$?
cat "$log"
echo "profile of pid $pid and its workers, ${seconds} s under load: $output"
exit "$status"
