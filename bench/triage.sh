#!/usr/bin/env bash
# Feed N synthetic detections (95% repeats of a few hundred keys, 5% unique) through the
# collector's store, classification, triage and ticket rules on the embedded SQLite store, as
# ingest and the triage pipeline run them; print detections/s, alerts and tickets produced, and
# the latency from a batch's commit to the commit of its triage (p50, p99, max).
#
# Goal (issue 6): at least 50,000 detections/s and p99 under 1 s.
# Usage: bench/triage.sh [N]   (default 1000000). No network; the database is a temp file.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
cargo build --release -p lindi-collector --bins >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
report=$(target/release/lindi-collector bench-triage --detections "$N" --dir "$work")
echo "$report"
python3 - "$report" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
print(f"detections:   {r['detections']:,} in {r['seconds']:.1f} s = {r['detections_per_sec']:,.0f}/s (goal 50,000/s: {'met' if r['detections_per_sec'] >= 50000 else 'MISSED'})")
print(f"alerts:       {r['alerts']:,}  tickets: {r['tickets']:,}")
print(f"latency:      p50 {r['latency_p50_ms']:.0f} ms, p99 {r['latency_p99_ms']:.0f} ms, max {r['latency_max_ms']:.0f} ms (goal p99 < 1 s: {'met' if r['latency_p99_ms'] < 1000 else 'MISSED'})")
PY
