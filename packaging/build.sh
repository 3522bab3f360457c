#!/usr/bin/env bash
# Build the Debian and RPM packages of lindi-agent and lindi-collector into target/packages/.
# Installs cargo-deb and cargo-generate-rpm with cargo when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked
command -v cargo-generate-rpm >/dev/null || cargo install cargo-generate-rpm --locked
cargo build --release -p lindi-agent -p lindi-collector
out=target/packages
rm -rf "$out" && mkdir -p "$out"

# The copyright file: our licence, then every third-party crate compiled into the binaries
# with its licence expression and source.
python3 - "$out/LICENSES" <<'PY'
import json, subprocess, sys
meta = json.loads(subprocess.check_output(
    ["cargo", "metadata", "--format-version", "1", "--filter-platform", "x86_64-unknown-linux-gnu"]))
resolve = {n["id"]: n for n in meta["resolve"]["nodes"]}
packages = {p["id"]: p for p in meta["packages"]}
roots = [p["id"] for p in meta["packages"] if p["name"] in ("lindi-agent", "lindi-collector")]
seen, stack = set(), list(roots)
while stack:
    pid = stack.pop()
    if pid in seen:
        continue
    seen.add(pid)
    for dep in resolve[pid]["deps"]:
        if any(k["kind"] in (None, "normal") for k in dep["dep_kinds"]):
            stack.append(dep["pkg"])
third = sorted((packages[p] for p in seen if not packages[p]["name"].startswith("lindi")),
               key=lambda p: (p["name"], p["version"]))
with open(sys.argv[1], "w") as f:
    f.write("Lindi\nCopyright 2026, the Lindi authors.\nLicensed under the Apache License, Version 2.0\n"
            "(https://www.apache.org/licenses/LICENSE-2.0).\n\n"
            f"Third-party components compiled into these binaries ({len(third)} crates):\n\n")
    for p in third:
        f.write(f"{p['name']} {p['version']}: {p.get('license') or 'see ' + str(p.get('license_file'))}"
                f" ({p.get('repository') or 'crates.io'})\n")
PY

cargo deb -p lindi-agent --no-build -o "$out/"
cargo deb -p lindi-collector --no-build -o "$out/"
cargo generate-rpm -p agent -o "$out/"
cargo generate-rpm -p collector -o "$out/"
ls -l "$out"
