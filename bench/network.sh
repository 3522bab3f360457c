#!/usr/bin/env bash
# Network sensor throughput, side by side, in one run, each tool pinned to one CPU:
#
#  1. Lindi replay with the ET Open ruleset vs `suricata -r` with the same rules
#     (`--runmode single`): packets/s of each and the ratio. Rule loading is measured apart:
#     each tool runs on one copy of the bench pcap and on COPIES copies (timestamps shifted
#     so flows do not carry over); packet throughput is the extra packets over the extra time,
#     loading time is what remains of the one-copy run.
#  2. Lindi replay with no rules (flows, DNS, HTTP, TLS metadata; EVE to /dev/null) vs
#     `tcpdump -r FILE -w /dev/null` (the cost of just reading the file).
#  3. Peak RSS of each with the ruleset loaded.
#  4. How many of Suricata's alerts Lindi raised too, on one copy (sid and addresses).
#
# Lindi runs without its heuristics (--no-heuristics): Suricata has none, so both do the same
# work.
#
# Usage: bench/network.sh [COPIES]   (default 20). Installs tcpdump, and Suricata from
# bookworm-backports, with apt if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
COPIES=${1:-20}
PCAP=../shared/corpus/network/bench/bench-ethernet.pcap
RULES=../shared/corpus/rules/et-open.rules
for f in "$PCAP" "$RULES"; do
    [ -f "$f" ] || { echo "no $f: the shared corpus must be beside the repository" >&2; exit 1; }
done
"$(dirname "$0")/../packaging/install-suricata.sh"
cargo build --release -p lindi-agent >&2
LINDI=target/release/lindi-agent
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# COPIES copies of the bench pcap, each shifted past the last (no flow spans two copies).
python3 bench/copies.py "$PCAP" "$work/many.pcap" "$COPIES"
cp "$PCAP" "$work/one.pcap"
cat "$work/one.pcap" "$work/many.pcap" >/dev/null  # page cache

# run NAME CMD...: wall seconds and peak RSS (KiB) into $work/NAME.{s,rss}, output discarded.
run() {
    local name=$1
    shift
    local s e
    s=$(date +%s.%N)
    taskset -c 0 /usr/bin/time -f "%M" -o "$work/$name.rss" "$@" >"$work/$name.out" 2>"$work/$name.err"
    e=$(date +%s.%N)
    python3 -c "print($e - $s)" >"$work/$name.s"
}
suri() {
    local name=$1 input=$2
    mkdir -p "$work/$name.log"
    run "$name" suricata -r "$input" -S "$RULES" -l "$work/$name.log" -k none \
        -c /etc/suricata/suricata.yaml --runmode single \
        --set stream.reassembly.randomize-chunk-size=no \
        --set app-layer.protocols.http.libhtp.default-config.randomize-inspection-sizes=no
}

run lindi_rules_1 "$LINDI" replay "$work/one.pcap" --rules "$RULES" --no-heuristics
run lindi_rules_n "$LINDI" replay "$work/many.pcap" --rules "$RULES" --no-heuristics
suri suri_1 "$work/one.pcap"
suri suri_n "$work/many.pcap"
run lindi_bare_n "$LINDI" replay "$work/many.pcap" --no-heuristics
run tcpdump_n tcpdump -r "$work/many.pcap" -w /dev/null
cp "$work/lindi_rules_1.out" "$work/lindi-eve.json"

python3 - "$work" "$COPIES" <<'PY'
import json, re, sys
w, copies = sys.argv[1], int(sys.argv[2])
t = lambda n: float(open(f"{w}/{n}.s").read())
rss = lambda n: int(open(f"{w}/{n}.rss").read().split()[-1]) / 1024
err = lambda n: open(f"{w}/{n}.err").read()
one = int(re.search(r"(\d+) packets", err("lindi_rules_1")).group(1))
extra = one * (copies - 1)
def split(a, b):
    per_packet = (t(b) - t(a)) / extra
    return extra / (t(b) - t(a)), t(a) - per_packet * one
l_pps, l_load = split("lindi_rules_1", "lindi_rules_n")
s_pps, s_load = split("suri_1", "suri_n")
l_rules = re.search(r"rules: (\d+) loaded, (\d+) not supported", err("lindi_rules_1"))
bare_pps = one * copies / t("lindi_bare_n")
tcpd_pps = one * copies / t("tcpdump_n")
print(f"input: bench-ethernet.pcap, {one:,} packets; throughput from 1 vs {copies} copies; one CPU each")
print(f"ET Open: Lindi loads {l_rules.group(1)} rules ({l_rules.group(2)} not supported); Suricata all 14019")
print(f"  Lindi    {l_pps:>12,.0f} packets/s   rule loading {l_load:5.1f} s   peak RSS {rss('lindi_rules_n'):6.0f} MiB")
print(f"  Suricata {s_pps:>12,.0f} packets/s   rule loading {s_load:5.1f} s   peak RSS {rss('suri_n'):6.0f} MiB")
print(f"  Lindi / Suricata packets/s: {l_pps / s_pps:.2f}x (goal 3x); RSS {rss('lindi_rules_n') / rss('suri_n'):.2f} (goal < 1)")
print(f"no rules: Lindi {bare_pps:,.0f} packets/s; tcpdump -r -w /dev/null {tcpd_pps:,.0f} packets/s;"
      f" Lindi time / tcpdump time {t('lindi_bare_n') / t('tcpdump_n'):.2f}x (goals 1.5 M/s, 3x)")
key = lambda e: (e.get("alert", {}).get("signature_id") or e.get("sid"), e["src_ip"], e.get("src_port"), e["dest_ip"], e.get("dest_port"))
lindi = {key(e) for e in map(json.loads, open(f"{w}/lindi-eve.json")) if e.get("event_type") == "alert"}
suri = {key(e) for e in map(json.loads, open(f"{w}/suri_1.log/eve.json")) if e.get("event_type") == "alert"}
print(f"alerts on one copy (distinct sid+addresses): Suricata {len(suri)}, Lindi {len(lindi)}, both {len(lindi & suri)}")
PY
