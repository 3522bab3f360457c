#!/usr/bin/env bash
# A collector on each store and bus layout, end to end, in one run. Two agents ship N
# synthetic events between them (a detection every 100 events, so triage works too) to:
#   1. one node on its embedded SQLite store;
#   2. one node on PostgreSQL (fsync on, like SQLite's synchronous = FULL);
#   3. one node on PostgreSQL with NATS JetStream between its ingest and its pipeline;
#   4. two ingest and two pipeline processes on PostgreSQL and JetStream (an agent per
#      ingest node).
# Prints events/s end to end (first agent start to the last event committed) and the CPU
# seconds per million events of each role: ingest, pipeline (for one node: the one process),
# PostgreSQL and nats-server. PostgreSQL and nats-server are started here, in the scratch
# directory, on free loopback ports.
#
# Usage: bench/scale.sh [N]   (default 400000). Loopback only; bounded by N and a time limit.
# As root, PostgreSQL runs as the `postgres` user (Debian's postgresql package).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-400000}
TIMEOUT_S=${TIMEOUT_S:-600}
source bench/lib.sh
bench_start
source bench/collector.sh

free_tcp() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
free_udp() { python3 -c 'import socket; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# PostgreSQL.
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$pg_bin/initdb" ] || { echo "PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 1; }
as_pg=()
[ "$(id -u)" -eq 0 ] && as_pg=(runuser -u postgres --)
pgdir=$(mktemp -d)
[ "$(id -u)" -eq 0 ] && chown postgres: "$pgdir"
pgport=$(free_tcp)
"${as_pg[@]}" "$pg_bin/initdb" -D "$pgdir/data" -U postgres --auth=trust --encoding=UTF8 --locale=C >/dev/null
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $pgport -c unix_socket_directories= -c max_connections=200" start >/dev/null
# NATS with JetStream.
command -v nats-server >/dev/null || { echo "nats-server not found (apt-get install nats-server)" >&2; exit 1; }
natsport=$(free_tcp)
nats-server -js -a 127.0.0.1 -p "$natsport" -sd "$work/nats" >"$work/nats.log" 2>&1 &
nats_pid=$!
pids+=("$nats_pid")
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$natsport") 2>/dev/null && break; sleep 0.1; done
stop_servers() {
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pgdir/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$pgdir"
}
trap 'stop_servers; bench_cleanup' EXIT

# CPU seconds (user + system) of the given processes.
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
# This run's PostgreSQL: its postmaster and the processes it started.
pg_pids() {
  local pm
  pm=$(head -1 "$pgdir/data/postmaster.pid")
  echo "$pm" $(pgrep -P "$pm" -d ' ')
}
new_database() {  # $1: name. A fresh database per layout; prints its URL.
  "${as_pg[@]}" "$pg_bin/psql" -q -h 127.0.0.1 -p "$pgport" -U postgres -c "CREATE DATABASE $1" >/dev/null
  echo "postgresql://postgres@127.0.0.1:$pgport/$1"
}

# Another node of the collector in "$work/c": same CA, certificates and settings, its own
# data directory and ports. Prints its data directory; sets $node_q and $node_h.
node_of() {
  local dir="$work/c$1"
  rm -rf "$dir"; mkdir -p "$dir"
  cp "$work/c"/*.crt "$work/c"/*.key "$work/c/collector.toml" "$dir/"
  node_q=$(free_udp); node_h=$(free_tcp)
  sed -i -e "s|^data_dir = .*|data_dir = \"$dir\"|" \
    -e "s|^listen_addr = .*|listen_addr = \"127.0.0.1:$node_q\"|" \
    -e "s|^http_listen_addr = .*|http_listen_addr = \"127.0.0.1:$node_h\"|" "$dir/collector.toml"
}

start_agent() {  # $1: name, $2: events, $3: collector QUIC address
  local dir="$work/$1"
  rm -rf "$dir"
  local token
  token=$($B/lindi-collector token create --data-dir "$work/c" --constituency bench)
  $B/lindi-agent enroll --token "$token" --state-dir "$dir" --collector "$3" >/dev/null
  cat >"$dir.toml" <<TOML
state_dir = "$dir"
collector_addr = "$3"
[health]
interval_ms = 3600000
[sensors.process]
enabled = false
[sensors.fim]
enabled = false
[sensors.synthetic]
events_total = $2
detection_every = 100
TOML
  $B/lindi-agent run --config "$dir.toml" 2>"$dir.err" &
  agent_pids+=($!)
  pids+=($!)
}

run_layout() {  # $1: label, $2: store URL or "", $3: bus (none|nats), $4: ingest nodes, $5: pipeline nodes
  local label=$1 url=$2 bus=$3 ni=$4 np=$5
  rm -rf "$work/c" "$work"/c[0-9]* "$work"/agent*
  STORE_URL=$url start_collector
  kill -TERM "$coll_pid"; wait "$coll_pid" || true
  if [ "$bus" = nats ]; then
    # init wrote every section with its defaults: set the bus's.
    sed -i -e '/^\[bus\]/,/^\[/ s|^engine = .*|engine = "nats"|' \
      -e "/^\\[bus\\]/,/^\\[/ s|^servers = .*|servers = [\"nats://127.0.0.1:$natsport\"]|" \
      -e "/^\\[bus\\]/,/^\\[/ s|^stream = .*|stream = \"BENCH_$label\"|" "$work/c/collector.toml"
    grep -A4 '^\[bus\]' "$work/c/collector.toml" >&2
  fi
  local ingest_pids=() pipeline_pids=() ingest_addrs=() i api_port=$hport
  if [ "$ni" -eq 0 ]; then
    "$B/lindi-collector" run --data-dir "$work/c" >"$work/c.out" 2>"$work/c.err" &
    ingest_pids+=($!); pids+=($!)
    ingest_addrs+=("$(sed -n 's/^listen_addr = "\(.*\)"/\1/p' "$work/c/collector.toml")")
  else
    for i in $(seq "$ni"); do
      node_of "i$i"
      "$B/lindi-collector" run --role ingest --data-dir "$work/ci$i" >"$work/ci$i.out" 2>"$work/ci$i.err" &
      ingest_pids+=($!); pids+=($!); ingest_addrs+=("127.0.0.1:$node_q")
      # Every node serves the API and reads the shared store: ask the first ingest node.
      [ "$i" -eq 1 ] && api_port=$node_h
    done
    for i in $(seq "$np"); do
      node_of "p$i"
      "$B/lindi-collector" run --role pipeline --data-dir "$work/cp$i" >"$work/cp$i.out" 2>"$work/cp$i.err" &
      pipeline_pids+=($!); pids+=($!)
    done
  fi
  sleep 2
  local pg0 nats0
  pg0=$( [ -n "$url" ] && cpu_of $(pg_pids) || echo 0)
  nats0=$(cpu_of "$nats_pid")
  agent_pids=()
  local start end n
  start=$(date +%s.%N)
  start_agent agent1 $((N / 2)) "${ingest_addrs[0]}"
  start_agent agent2 $((N - N / 2)) "${ingest_addrs[$(( ${#ingest_addrs[@]} - 1 ))]}"
  local want=$((N + N / 100))
  local deadline=$(( $(date +%s) + TIMEOUT_S ))
  while :; do
    n=$(curl -sf -H "Authorization: Bearer $LINDI_TOKEN" "http://127.0.0.1:$api_port/api/v1/status" 2>/dev/null \
      | python3 -c 'import json,sys; print(json.load(sys.stdin)["events_stored_total"])' 2>/dev/null || echo 0)
    [ "$n" -ge "$want" ] && break
    if [ "$(date +%s)" -ge "$deadline" ]; then echo "$label: timed out, $n of $want stored" >&2; exit 1; fi
    sleep 0.05
  done
  end=$(date +%s.%N)
  local ci cp pg nats
  ci=$(cpu_of "${ingest_pids[@]}")
  cp=$( [ ${#pipeline_pids[@]} -gt 0 ] && cpu_of "${pipeline_pids[@]}" || echo 0)
  pg=$( [ -n "$url" ] && python3 -c "print($(cpu_of $(pg_pids)) - $pg0)" || echo 0)
  nats=$(python3 -c "print($(cpu_of "$nats_pid") - $nats0)")
  for p in "${agent_pids[@]}" "${ingest_pids[@]}" "${pipeline_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${agent_pids[@]}" "${ingest_pids[@]}" "${pipeline_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  echo "$label $start $end $want $ci $cp $pg $nats" >>"$work/results"
}

run_layout sqlite "" none 0 0
run_layout postgres "$(new_database lindi_postgres)" none 0 0
run_layout pg_nats "$(new_database lindi_pg_nats)" nats 0 0
run_layout cluster_2x2 "$(new_database lindi_cluster)" nats 2 2

python3 - "$work/results" <<'PY'
import sys
rows = []
for line in open(sys.argv[1]):
    label, start, end, n, ci, cp, pg, nats = line.split()
    n = int(n)
    per_m = 1_000_000 / n
    rows.append((label, n / (float(end) - float(start)), float(ci) * per_m, float(cp) * per_m, float(pg) * per_m, float(nats) * per_m))
print("events (incl. 1% detections) per layout, two agents; CPU seconds per million events\n")
print(f"{'layout':<12} {'events/s':>10} {'ingest':>8} {'pipeline':>9} {'PostgreSQL':>11} {'NATS':>6}")
for label, eps, ci, cp, pg, nats in rows:
    one = label in ("sqlite", "postgres", "pg_nats")
    print(f"{label:<12} {eps:>10,.0f} {ci:>8.1f} {('(one)' if one else f'{cp:.1f}'):>9} {pg:>11.1f} {nats:>6.1f}")
base = rows[0][1]
print()
for label, eps, *_ in rows[1:]:
    print(f"{label} / sqlite: {eps / base:.2f}")
PY
