#!/usr/bin/env bash
# Network pipeline throughput (first slice: decoding and flows, no rules yet), in one run:
# Lindi's replay of the benchmark pcap vs `tcpdump -r FILE -w /dev/null` (the cost of just
# reading the file). The capture is repeated COPIES times (mergecap-free: pcap records are
# appended with shifted timestamps by a small Python helper) so that reading dominates
# start-up. Prints packets/s of each and the ratios. Suricata and rule loading join when the
# rule engine lands.
#
# Usage: bench/network.sh [COPIES]   (default 10). Installs tcpdump with apt if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
COPIES=${1:-10}
PCAP=../shared/corpus/network/bench/bench-ethernet.pcap
[ -f "$PCAP" ] || { echo "no $PCAP: the shared corpus must be beside the repository" >&2; exit 1; }
command -v tcpdump >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tcpdump >/dev/null; }
cargo build --release -p lindi-agent >&2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

python3 - "$PCAP" "$work/bench.pcap" "$COPIES" <<'PY'
import struct, sys
src, dst, copies = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = open(src, "rb").read()
magic = struct.unpack("<I", data[:4])[0]
assert magic == 0xa1b2c3d4, "expects a little-endian microsecond pcap"
header, body = data[:24], data[24:]
recs, pos = [], 0
while pos + 16 <= len(body):
    sec, usec, incl, orig = struct.unpack("<IIII", body[pos:pos + 16])
    recs.append((sec, usec, body[pos + 16:pos + 16 + incl], incl, orig))
    pos += 16 + incl
span = recs[-1][0] - recs[0][0] + 3600
with open(dst, "wb") as f:
    f.write(header)
    for c in range(copies):
        for sec, usec, payload, incl, orig in recs:
            f.write(struct.pack("<IIII", sec + c * span, usec, incl, orig))
            f.write(payload)
PY
timeit() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>"$work/err"; e=$(date +%s.%N); python3 -c "print($e - $s)"; }
# Warm the page cache.
cat "$work/bench.pcap" >/dev/null
lindi=$(timeit target/release/lindi-agent replay "$work/bench.pcap")
summary=$(cat "$work/err")
tcpd=$(timeit tcpdump -r "$work/bench.pcap" -w /dev/null)
python3 - "$lindi" "$tcpd" "$COPIES" "$summary" <<'PY'
import re, sys
lindi, tcpd, copies, summary = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
n = int(re.search(r"(\d+) packets", summary).group(1))
print(f"input: bench-ethernet.pcap x {copies} = {n:,} packets")
print(f"lindi-agent replay (flows, EVE to /dev/null): {lindi:.2f} s, {n / lindi:,.0f} packets/s")
print(f"tcpdump -r -w /dev/null:                      {tcpd:.2f} s, {n / tcpd:,.0f} packets/s")
print(f"lindi time / tcpdump time: {lindi / tcpd:.2f}x")
print(summary.strip())
PY
