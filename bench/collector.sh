# Sourced by the benchmarks: start a collector on free loopback ports in "$work/c".
# Needs $B (the binaries) and $work; sets $hport, $coll_pid, LINDI_SERVER and LINDI_TOKEN (an
# admin's API token). With $STORE_URL, the store is PostgreSQL at that URL.
start_collector() {
  local ports qport
  ports=$(python3 -c 'import socket
u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); u.bind(("127.0.0.1",0))
t=socket.socket(); t.bind(("127.0.0.1",0))
print(u.getsockname()[1], t.getsockname()[1])')
  read -r qport hport <<<"$ports"
  "$B/lindi-collector" init --data-dir "$work/c" --listen "127.0.0.1:$qport" --http-listen "127.0.0.1:$hport" \
    ${STORE_URL:+--store-url "$STORE_URL"} >/dev/null
  echo "bench password 1234" | "$B/lindi-collector" users add bench --role admin --constituency '*' --data-dir "$work/c" >/dev/null
  LINDI_TOKEN=$("$B/lindi-collector" users token bench --data-dir "$work/c")
  export LINDI_TOKEN
  "$B/lindi-collector" run --data-dir "$work/c" >"$work/c.out" 2>"$work/c.err" &
  coll_pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$hport/healthz" >/dev/null && break; sleep 0.1; done
  export LINDI_SERVER="http://127.0.0.1:$hport"
}
