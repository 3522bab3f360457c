#!/usr/bin/env bash
# Host sensors, measured in one run (loopback only, every loop bounded):
#  1. FIM baseline of a generated tree of FILES files (mixed sizes): Lindi vs AIDE (Debian,
#     `aide --init`, SHA-256 only plus the same metadata), warm page cache for both.
#  2. Change detection latency: modify 1,000 watched files, p50 and p99 from write to event.
#  3. Short-lived processes: 1,000 runs of /bin/true, how many the process sensor reports
#     with exe and command line, with the process connector and with polling alone.
#  4. Footprint: an idle agent with every host sensor on and SigmaHQ's Linux rules loaded.
#
# Usage: bench/host.sh [FILES]   (default 100000). Installs aide with apt if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
FILES=${1:-100000}
command -v aide >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq aide >/dev/null; }
. bench/lib.sh
bench_start

echo "== 1. FIM baseline: $FILES files"
python3 - "$work/tree" "$FILES" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(42)
blob = os.urandom(1 << 20)
for i in range(n):
    d = os.path.join(root, f"d{i // 1000:03d}")
    if i % 1000 == 0:
        os.makedirs(d, exist_ok=True)
    r = rng.random()
    size = rng.randint(0, 4096) if r < 0.80 else rng.randint(4096, 65536) if r < 0.99 else rng.randint(65536, 1 << 20)
    with open(os.path.join(d, f"f{i:06d}"), "wb") as f:
        f.write(blob[:size])
PY
du -sh "$work/tree" | awk '{print "tree size: " $1}'
cat >"$work/aide.conf" <<CONF
database_out=file:$work/aide.db
gzip_dbout=no
report_url=stdout
Lindi = p+i+n+u+g+s+m+sha256
$work/tree Lindi
CONF
timeit() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1; e=$(date +%s.%N); python3 -c "print(f'{$e - $s:.2f}')"; }
# Warm the page cache so both read from memory.
$B/lindi-agent fim scan "$work/tree" >/dev/null 2>&1
lindi1=$(timeit $B/lindi-agent fim scan "$work/tree" --threads 1 --baseline "$work/l1.pb")
lindi2=$(timeit $B/lindi-agent fim scan "$work/tree" --baseline "$work/l2.pb")
aide1=$(timeit aide --init --config "$work/aide.conf")
python3 - "$lindi1" "$lindi2" "$aide1" <<'PY'
import sys
l1, l2, a = map(float, sys.argv[1:])
print(f"lindi (1 thread):   {l1:.2f} s")
print(f"lindi (all cores):  {l2:.2f} s")
print(f"aide --init:        {a:.2f} s (num_workers default 1)")
print(f"ratio aide/lindi:   {a / l1:.1f}x with 1 thread, {a / l2:.1f}x with all cores")
PY
rm -rf "$work/tree"

# A collector for the live measurements.
source bench/collector.sh
start_collector
pids+=("$coll_pid")

# start_agent NAME CONFIG-BODY: enroll (once) and run an agent; its pid is in $agent_pid.
start_agent() {
  local name=$1 body=$2
  if [ ! -d "$work/$name" ]; then
    $B/lindi-agent enroll --token "$($B/lindi-collector token create --data-dir "$work/c" --constituency bench)" --state-dir "$work/$name" >/dev/null
  fi
  printf 'state_dir = "%s"\n[shipper]\nflush_interval_ms = 100\n%s\n' "$work/$name" "$body" >"$work/$name.toml"
  $B/lindi-agent run --config "$work/$name.toml" 2>"$work/$name.err" &
  agent_pid=$!
  pids+=($agent_pid)
}
agent_id() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["agent_id"])' "$work/$1/identity/enrollment.json"; }
stop_agent() { kill -TERM "$1"; wait "$1" 2>/dev/null || true; }

echo "== 2. Change detection latency: 1,000 files"
mkdir -p "$work/watched"
for i in $(seq 1000); do echo init >"$work/watched/f$i"; done
start_agent fim "[sensors.process]
enabled = false
[sensors.fim]
paths = [{ path = \"$work/watched\" }]"
fim_pid=$agent_pid
id=$(agent_id fim)
for _ in $(seq 300); do
  echo probe >"$work/watched/probe"; sleep 0.2
  $B/lindi events search --agent "$id" --kind file --json --limit 10 | grep -q probe && break
done
python3 - "$work/watched" "$work/writes.json" <<'PY'
import json, os, sys, time
d, out = sys.argv[1], sys.argv[2]
t = {}
for i in range(1, 1001):
    p = os.path.join(d, f"f{i}")
    with open(p, "w") as f:
        f.write(f"changed {i}\n")
    t[p] = time.time_ns()
    time.sleep(0.002)
json.dump(t, open(out, "w"))
PY
for _ in $(seq 300); do
  n=$($B/lindi events search --agent "$id" --kind file --json --limit 10000 | grep -c '"modified"' || true)
  [ "$n" -ge 1000 ] && break; sleep 0.2
done
$B/lindi events search --agent "$id" --kind file --json --limit 10000 >"$work/fim-events.jsonl"
python3 - "$work/writes.json" "$work/fim-events.jsonl" <<'PY'
import json, sys
writes = json.load(open(sys.argv[1]))
lat = []
for line in open(sys.argv[2]):
    e = json.loads(line)
    f = e["kind"]["file"]
    if f["action"] == "modified" and f["path"] in writes:
        lat.append((e["timestamp_ns"] - writes[f["path"]]) / 1e6)
lat.sort()
if not lat:
    print("no modified events"); sys.exit(0)
q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print(f"events: {len(lat)} of 1000; latency p50 {q(0.50):.0f} ms, p99 {q(0.99):.0f} ms, max {lat[-1]:.0f} ms (debounce 500 ms included)")
PY
stop_agent "$fim_pid"

echo "== 3. Short-lived processes: 1,000 runs of /bin/true"
for mode in connector poll; do
  start_agent "proc-$mode" "[sensors.process]
mode = \"$mode\"
[sensors.fim]
enabled = false"
  p=$agent_pid
  id=$(agent_id "proc-$mode")
  sleep 2
  marker="lindi-bench-$mode-$$"
  for i in $(seq 1000); do /bin/true "$marker" "$i"; done
  sleep 3
  n=$($B/lindi events search --agent "$id" --kind process --json --limit 10000 \
      | python3 -c 'import json,sys
m=sys.argv[1]; s=set()
for l in sys.stdin:
    p=json.loads(l)["kind"]["process"]
    if p["action"]=="start" and m in p["cmdline"] and p["exe"].endswith("true"): s.add(p["cmdline"][-1])
print(len(s))' "$marker")
  echo "$mode: $n of 1000 reported with exe and command line"
  stop_agent "$p"
done

echo "== 4. Footprint: idle agent, all host sensors, SigmaHQ Linux rules"
rules=../shared/corpus/sigma/rules/linux
sigma=""
[ -d "$rules" ] && sigma="[detectors]
sigma_rules = [\"$(cd "$rules" && pwd)\"]"
start_agent idle "$sigma"
p=$agent_pid
sleep 20
read -r t0 < <(awk '{print $14+$15}' /proc/$p/stat)
sleep 30
read -r t1 < <(awk '{print $14+$15}' /proc/$p/stat)
rss=$(awk '/VmRSS/ {print $2}' /proc/$p/status)
hz=$(getconf CLK_TCK)
python3 - "$rss" "$t0" "$t1" "$hz" <<'PY'
import sys
rss, t0, t1, hz = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
print(f"RSS {rss / 1024:.1f} MiB; CPU {(t1 - t0) / hz / 30 * 100:.2f}% of one core over 30 s idle")
PY
grep -o 'detectors: .*' "$work/idle.err" | head -1 || true
stop_agent "$p"
