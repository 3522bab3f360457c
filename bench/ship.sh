#!/usr/bin/env bash
# Ship N synthetic events from one agent to a local collector and print events/s end to end,
# bytes on the wire per event and the zstd ratio. In the same run, measure the embedded
# store's limit (a plain batched insert of the same rows, same schema, same pragmas) and print
# the ratio ours/limit.
#
# Usage: bench/ship.sh [N]   (default 1000000). Loopback only; bounded by N and a time limit.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
TIMEOUT_S=${TIMEOUT_S:-600}

cargo build --release --workspace --bins >&2
B=target/release
work=$(mktemp -d)
cleanup() {
  [ -n "${agent_pid:-}" ] && kill "$agent_pid" 2>/dev/null || true
  [ -n "${coll_pid:-}" ] && kill "$coll_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

source bench/collector.sh
start_collector
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

stored() {
  curl -sf -H "Authorization: Bearer $LINDI_TOKEN" "http://127.0.0.1:$hport/api/v1/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["events_stored_total"])'
}

start=$(date +%s.%N)
$B/lindi-agent run --config "$work/agent.toml" 2>"$work/a.err" &
agent_pid=$!
deadline=$(( $(date +%s) + TIMEOUT_S ))
while :; do
  n=$(stored || echo 0)
  [ "$n" -ge "$N" ] && break
  if [ "$(date +%s)" -ge "$deadline" ]; then echo "timed out: $n of $N stored" >&2; exit 1; fi
  sleep 0.05
done
end=$(date +%s.%N)
kill -TERM "$agent_pid"; wait "$agent_pid" || true; agent_pid=
wire=$(grep -o 'wire_bytes_sent=[0-9]*' "$work/a.err" | tail -1 | cut -d= -f2)
read -r comp uncomp < <(python3 - "$work/c/lindi.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
print(*db.execute("SELECT SUM(compressed_bytes), SUM(uncompressed_bytes) FROM batches").fetchone())
PY
)
kill -TERM "$coll_pid"; wait "$coll_pid" || true; coll_pid=

limit=$($B/lindi-collector bench-store --events "$N" --dir "$work" | python3 -c 'import json,sys; print(json.load(sys.stdin)["events_per_sec"])')

python3 - "$N" "$start" "$end" "$wire" "$comp" "$uncomp" "$limit" <<'PY'
import sys
n, start, end, wire, comp, uncomp, limit = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4] or 0), int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7])
secs = end - start
eps = n / secs
print(f"events:                 {n}")
print(f"end to end:             {secs:.2f} s, {eps:,.0f} events/s (agent start to last event committed)")
print(f"bytes on the wire:      {wire / n:.1f} per event (UDP payload incl. QUIC/TLS, {wire:,} bytes)")
print(f"batch bodies:           {comp / n:.1f} bytes/event compressed, {uncomp / n:.1f} uncompressed, zstd ratio {uncomp / comp:.1f}x")
print(f"store limit:            {limit:,.0f} events/s (plain batched insert, same schema)")
print(f"ratio ours/limit:       {eps / limit:.2f}")
PY
