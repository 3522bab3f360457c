#!/usr/bin/env bash
# The collector on each store engine, end to end, in one run: one agent ships N synthetic
# events to one collector node on (1) its embedded SQLite store and (2) PostgreSQL (a server
# this script starts in its scratch directory, fsync on, like SQLite's synchronous = FULL).
# Prints events/s end to end and the CPU seconds per million events of the collector process
# and of the PostgreSQL server, and the ratio PostgreSQL/SQLite.
#
# Not yet here (docs/scaling.md says what comes): one node with NATS JetStream between ingest
# and the pipeline, and two ingest plus two pipeline processes.
#
# Usage: bench/scale.sh [N]   (default 500000). Loopback only; bounded by N and a time limit.
# As root, PostgreSQL runs as the `postgres` user (Debian's postgresql package).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-500000}
TIMEOUT_S=${TIMEOUT_S:-600}
source bench/lib.sh
bench_start
source bench/collector.sh

pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$pg_bin/initdb" ] || { echo "PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 1; }
as_pg=()
[ "$(id -u)" -eq 0 ] && as_pg=(runuser -u postgres --)
pgdir=$(mktemp -d)
[ "$(id -u)" -eq 0 ] && chown postgres: "$pgdir"
pgport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"${as_pg[@]}" "$pg_bin/initdb" -D "$pgdir/data" -U postgres --auth=trust --encoding=UTF8 --locale=C >/dev/null
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $pgport -c unix_socket_directories=" start >/dev/null
pg_stop() {
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pgdir/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$pgdir"
}
trap 'pg_stop; bench_cleanup' EXIT

# CPU seconds (user + system) of the processes whose ids are given.
cpu_of() {
  python3 - "$@" <<'PY'
import os, sys
tick = os.sysconf("SC_CLK_TCK")
total = 0
for pid in sys.argv[1:]:
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        total += int(f[11]) + int(f[12])
    except (OSError, IndexError):
        pass
print(total / tick)
PY
}
# This run's server: its postmaster and the processes it started.
pg_pids() {
  local pm
  pm=$(head -1 "$pgdir/data/postmaster.pid")
  echo "$pm" $(pgrep -P "$pm" -d ' ')
}

run_one() {  # $1: label, $2: store URL or empty for SQLite
  local label=$1 url=$2 c_cpu pg_before pg_after
  rm -rf "$work/c" "$work/a"
  STORE_URL=$url start_collector
  pids+=("$coll_pid")
  token=$($B/lindi-collector token create --data-dir "$work/c" --constituency bench)
  $B/lindi-agent enroll --token "$token" --state-dir "$work/a" >/dev/null
  cat >"$work/agent.toml" <<TOML
state_dir = "$work/a"
[health]
interval_ms = 3600000
[sensors.process]
enabled = false
[sensors.fim]
enabled = false
[sensors.synthetic]
events_total = $N
TOML
  pg_before=$(cpu_of $(pg_pids))
  local start end n
  start=$(date +%s.%N)
  $B/lindi-agent run --config "$work/agent.toml" 2>"$work/a.err" &
  agent_pid=$!
  pids+=("$agent_pid")
  local deadline=$(( $(date +%s) + TIMEOUT_S ))
  while :; do
    n=$(curl -sf -H "Authorization: Bearer $LINDI_TOKEN" "http://127.0.0.1:$hport/api/v1/status" \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["events_stored_total"])' || echo 0)
    [ "$n" -ge "$N" ] && break
    if [ "$(date +%s)" -ge "$deadline" ]; then echo "$label: timed out, $n of $N stored" >&2; exit 1; fi
    sleep 0.05
  done
  end=$(date +%s.%N)
  c_cpu=$(cpu_of "$coll_pid")
  pg_after=$(cpu_of $(pg_pids))
  kill -TERM "$agent_pid"; wait "$agent_pid" || true; agent_pid=
  kill -TERM "$coll_pid"; wait "$coll_pid" || true; coll_pid=
  echo "$label $start $end $c_cpu $pg_before $pg_after" >>"$work/results"
}

run_one sqlite ""
run_one postgres "postgresql://postgres@127.0.0.1:$pgport/postgres"

python3 - "$N" "$work/results" <<'PY'
import sys
n = int(sys.argv[1])
rows = {}
for line in open(sys.argv[2]):
    label, start, end, c_cpu, pg0, pg1 = line.split()
    rows[label] = (n / (float(end) - float(start)), float(c_cpu), float(pg1) - float(pg0))
per_m = 1_000_000 / n
print(f"events: {n} from one agent, one collector node\n")
print(f"{'store':<10} {'events/s':>12} {'collector CPU s/1M':>20} {'PostgreSQL CPU s/1M':>21}")
for label, (eps, c, pg) in rows.items():
    pgs = f"{pg * per_m:.1f}" if label != "sqlite" else "-"
    print(f"{label:<10} {eps:>12,.0f} {c * per_m:>20.1f} {pgs:>21}")
s, p = rows["sqlite"][0], rows["postgres"][0]
print(f"\nratio PostgreSQL/SQLite (events/s): {p / s:.2f}")
PY
