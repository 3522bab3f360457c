# Set-up the benchmarks share (sourced): a release build in $B, a scratch directory $work,
# and the processes started for the run in $pids, all stopped and the directory removed on
# exit (KEEP=1 keeps it, for a look afterwards).
bench_start() {
  cargo build --release --workspace --bins >&2
  B=$PWD/target/release
  work=$(mktemp -d)
  pids=()
  trap bench_cleanup EXIT
}

bench_cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "${KEEP:-}" ]; then echo "kept $work" >&2; else rm -rf "$work"; fi
}
