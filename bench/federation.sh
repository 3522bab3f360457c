#!/usr/bin/env bash
# Indicators across the network of teams, measured in one run (loopback only, every loop
# bounded):
#
#  1. Propagation: a hub and two sector collectors peered, each sector with an agent capturing
#     on lo. The hub imports N indicators (a MISP feed on disk, IPv4 addresses); each sector
#     receives them over its link and publishes them to its agent as the signed lindi-intel
#     bundle. Measured: seconds from the start of the import until each sector's agent raises
#     a detection for traffic to an address of the set (one probe address per sector).
#  2. Agent memory: each agent's RSS before the import and once it runs the set.
#  3. Per-packet cost: `lindi-agent replay` of the benchmark pcap with the same N indicators
#     as an IoC file and with none; the extra time per packet (load time split off by running
#     1 and COPIES copies, as bench/network.sh does).
#
# Goals (issue 9): N = 1,000,000 fully propagated in under 60 s, under 50 MB of agent memory
# for them, under 10% added per-packet cost.
#
# Usage: bench/federation.sh [N] [COPIES]   (defaults 1000000 and 10). Needs root (live
# capture on lo) and the shared corpus beside the repository (the benchmark pcap). KEEP=1
# keeps the working directory (stores, logs) for a look afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
COPIES=${2:-10}
PCAP=../shared/corpus/network/bench/bench-ethernet.pcap
[ -f "$PCAP" ] || { echo "no $PCAP: the shared corpus must be beside the repository" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "needs root (live capture on lo)" >&2; exit 1; }
. bench/lib.sh
bench_start

free_port() { # udp|tcp
  python3 -c 'import socket,sys
s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM if sys.argv[1]=="udp" else socket.SOCK_STREAM)
s.bind(("127.0.0.1",0)); print(s.getsockname()[1])' "$1"
}

# The indicators: N-2 addresses from 10.0.0.0 up, and the two probe addresses.
python3 - "$N" "$work" <<'PY'
import json, os, sys, uuid
n, w = int(sys.argv[1]), sys.argv[2]
addrs = [f"10.{(k >> 16) & 255}.{(k >> 8) & 255}.{k & 255}" for k in range(n - 2)] + ["127.0.0.77", "127.0.0.78"]
feed = os.path.join(w, "feed")
os.makedirs(feed)
manifest, per = {}, 50_000
with open(os.path.join(w, "iocs.ioc"), "w") as ioc:
    for e in range(0, len(addrs), per):
        eid = str(uuid.UUID(int=e + 1))
        attrs = []
        for a in addrs[e:e + per]:
            u = str(uuid.uuid4())
            attrs.append({"uuid": u, "type": "ip-dst", "value": a, "to_ids": True, "timestamp": "1796400000"})
            ioc.write(f"ip:{a}\n")
        manifest[eid] = {"info": f"bench {e}", "timestamp": "1796400000"}
        json.dump({"Event": {"uuid": eid, "info": f"bench {e}", "timestamp": "1796400000",
                             "Tag": [{"name": "tlp:green"}], "Attribute": attrs}},
                  open(os.path.join(feed, f"{eid}.json"), "w"))
json.dump(manifest, open(os.path.join(feed, "manifest.json"), "w"))
PY

# Three collectors.
declare -A http peer
for c in hub sa sb; do
  q=$(free_port udp); h=$(free_port tcp); p=$(free_port udp)
  http[$c]=$h; peer[$c]=$p
  role=sector; [ "$c" = hub ] && role=hub
  printf 'data_dir = "%s"\nname = "%s"\nlisten_addr = "127.0.0.1:%s"\nhttp_listen_addr = "127.0.0.1:%s"\n[peering]\nlisten_addr = "127.0.0.1:%s"\nrole = "%s"\n' \
    "$work/$c" "$c" "$q" "$h" "$p" "$role" >"$work/$c.toml"
  [ "$c" != hub ] && printf '[intel]\npublish = true\ninterval_secs = 2\n' >>"$work/$c.toml"
  $B/lindi-collector init --config "$work/$c.toml" >/dev/null
  echo "bench password 1234" | $B/lindi-collector users add bench --role admin --constituency '*' --config "$work/$c.toml" >/dev/null
  $B/lindi-collector run --config "$work/$c.toml" >"$work/$c.out" 2>"$work/$c.err" &
  pids+=($!)
done
for c in hub sa sb; do
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:${http[$c]}/healthz" >/dev/null && break; sleep 0.1; done
done
for s in sa sb; do
  t=$($B/lindi-collector peer invite --config "$work/hub.toml" --name "$s" --role sector)
  $B/lindi-collector peer join --config "$work/$s.toml" --token "$t" --name hub >/dev/null
done

# One agent per sector, each seeing only its probe address.
declare -A agent_pid agent_id probe=([sa]=127.0.0.77 [sb]=127.0.0.78)
for s in sa sb; do
  key=$($B/lindi-collector indicators key --config "$work/$s.toml")
  $B/lindi-agent enroll --token "$($B/lindi-collector token create --config "$work/$s.toml" --constituency bench)" --state-dir "$work/agent-$s" >/dev/null
  cat >"$work/agent-$s.toml" <<TOML
state_dir = "$work/agent-$s"
[shipper]
flush_interval_ms = 100
[health]
interval_ms = 1000
[sensors.process]
enabled = false
[sensors.fim]
enabled = false
[sensors.net]
enabled = true
interfaces = ["lo"]
bpf_filter = "udp and dst host ${probe[$s]}"
[detectors]
trusted_keys = ["$key"]
TOML
  $B/lindi-agent run --config "$work/agent-$s.toml" 2>"$work/agent-$s.err" &
  agent_pid[$s]=$!
  pids+=($!)
  agent_id[$s]=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["agent_id"])' "$work/agent-$s/identity/enrollment.json")
done
sleep 3
rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
declare -A rss_before
for s in sa sb; do rss_before[$s]=$(rss "${agent_pid[$s]}"); done

declare -A api_token
for s in sa sb; do api_token[$s]=$($B/lindi-collector users token bench --config "$work/$s.toml"); done
detections() { # sector
  LINDI_SERVER="http://127.0.0.1:${http[$1]}" LINDI_TOKEN=${api_token[$1]} \
    $B/lindi events search --agent "${agent_id[$1]}" --kind detection --json --limit 10 2>/dev/null | grep -c '"detection"' || true
}

echo "== 1. Propagation of $N indicators: hub import to a detection on each sector's agent"
start=$(date +%s.%N)
$B/lindi-collector indicators import "$work/feed" --format misp --name bench --config "$work/hub.toml" >"$work/import.json"
imported=$(date +%s.%N)
declare -A done_at=([sa]="" [sb]="") received_at=([sa]="" [sb]="")
received() { # sector: the hub's objects it stored
  $B/lindi-collector peer list --json --config "$work/$1.toml" 2>/dev/null |
    python3 -c 'import json,sys; print(sum(p["received_through"] for p in json.load(sys.stdin) if p["name"] == "hub"))' 2>/dev/null || echo 0
}
deadline=$(( $(date +%s) + 900 ))
while { [ -z "${done_at[sa]}" ] || [ -z "${done_at[sb]}" ]; } && [ "$(date +%s)" -lt $deadline ]; do
  for s in sa sb; do
    [ -n "${done_at[$s]}" ] && continue
    if [ -z "${received_at[$s]}" ] && [ "$(received "$s")" -ge "$N" ]; then received_at[$s]=$(date +%s.%N); fi
    python3 -c 'import socket,sys; socket.socket(socket.AF_INET,socket.SOCK_DGRAM).sendto(b"probe",(sys.argv[1],40000))' "${probe[$s]}"
    if [ "$(detections "$s")" -gt 0 ]; then done_at[$s]=$(date +%s.%N); fi
  done
  sleep 1
done
python3 - "$start" "$imported" "${done_at[sa]}" "${done_at[sb]}" "${received_at[sa]}" "${received_at[sb]}" <<'PY'
import sys
start, imported = float(sys.argv[1]), float(sys.argv[2])
print(f"hub import (MISP feed, store, queue for both sectors): {imported - start:.1f} s")
for name, t, r in (("sector A", sys.argv[3], sys.argv[5]), ("sector B", sys.argv[4], sys.argv[6])):
    got = f"all received {float(r) - start:.1f} s, " if r else ""
    print(f"{name}: {got}" + (f"detection {float(t) - start:.1f} s after the import started" if t else "no detection within 15 minutes"))
PY
for s in sa sb; do
  echo "  $s: $(grep -c "intel: published" "$work/$s.err") versions published; the last two:"
  grep -h "intel:" "$work/$s.err" | tail -2 | sed "s/^/    /" || true
done

echo "== 2. Agent memory"
for s in sa sb; do
  echo "sector $s agent: RSS $(( rss_before[$s] / 1024 )) MiB before, $(( $(rss "${agent_pid[$s]}") / 1024 )) MiB with the set"
done

echo "== 3. Per-packet cost of matching $N indicators (replay, one CPU)"
python3 bench/copies.py "$PCAP" "$work/many.pcap" "$COPIES"
run() { # name args...
  local name=$1; shift
  local s e
  s=$(date +%s.%N)
  taskset -c 0 /usr/bin/time -f "%M" -o "$work/$name.rss" "$B/lindi-agent" replay "$@" --no-heuristics >/dev/null 2>"$work/$name.err"
  e=$(date +%s.%N)
  python3 -c "print($e - $s)" >"$work/$name.s"
}
run none_1 "$PCAP"
run none_n "$work/many.pcap"
run iocs_1 "$PCAP" --iocs "$work/iocs.ioc"
run iocs_n "$work/many.pcap" --iocs "$work/iocs.ioc"
python3 - "$work" "$COPIES" "$N" <<'PY'
import re, sys
w, copies, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t = lambda k: float(open(f"{w}/{k}.s").read())
rss = lambda k: int(open(f"{w}/{k}.rss").read().split()[-1]) / 1024
one = int(re.search(r"(\d+) packets", open(f"{w}/none_1.err").read()).group(1))
extra = one * (copies - 1)
per = lambda a, b: (t(b) - t(a)) / extra * 1e6
p0, p1 = per("none_1", "none_n"), per("iocs_1", "iocs_n")
print(f"per packet: {p0:.2f} us without indicators, {p1:.2f} us with {n:,} ({(p1 / p0 - 1) * 100:+.1f}%)")
print(f"load: {t('iocs_1') - p1 * one / 1e6:.1f} s for the indicator file; peak RSS {rss('none_1'):.0f} MiB without, {rss('iocs_1'):.0f} MiB with")
PY
