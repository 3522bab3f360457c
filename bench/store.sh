#!/usr/bin/env bash
# What the event search index costs the store: the plain batched insert of `bench-store`
# (same schema, pragmas and statement as the collector), with and without the index, for
# the ship benchmark's process events (one term each) and for flow records (three terms).
# Usage: bench/store.sh [EVENTS]   (default 1,000,000; release build)
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
cargo build --release -p lindi-collector --bin lindi-collector >&2
B=target/release
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rate() {
    $B/lindi-collector bench-store --events "$N" --dir "$work" "$@" |
        python3 -c 'import json,sys; print(round(json.load(sys.stdin)["events_per_sec"]))'
}
# Searches on the filled store (flow records, with the index) are timed too.
for kind in process flow; do
    without=$(rate --kind "$kind" --no-search-index)
    $B/lindi-collector bench-store --events "$N" --dir "$work" --kind "$kind" > "$work/with.json"
    python3 - "$kind" "$without" "$work/with.json" <<'PY'
import json, sys
kind, without = sys.argv[1], int(sys.argv[2])
r = json.load(open(sys.argv[3]))
w = r["events_per_sec"]
print(f"{kind:8} without index {without:>9,} events/s   with index {round(w):>9,} events/s   ratio {w / without:.2f}")
for s in r.get("searches", []):
    print(f"         search ip={s['ip']:<14} {s['matches']:>4} newest of the matches in {s['milliseconds']:.1f} ms")
PY
done
