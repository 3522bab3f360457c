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
for kind in process flow; do
    without=$(rate --kind "$kind" --no-search-index)
    with=$(rate --kind "$kind")
    python3 - "$kind" "$without" "$with" <<'PY'
import sys
kind, without, with_ = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
print(f"{kind:8} without index {without:>9,} events/s   with index {with_:>9,} events/s   ratio {with_ / without:.2f}")
PY
done
