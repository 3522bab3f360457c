#!/usr/bin/env bash
# Install what building and testing Lindi needs on a fresh Debian or Ubuntu machine.
# Idempotent: packages already present are not installed again. Needs root or sudo.
set -euo pipefail

# postgresql and nats-server: the clustered store's tests run on real servers on loopback.
# nftables: a test blocks the collector inside a network namespace of its own.
packages=(build-essential pkg-config libpcap-dev ca-certificates curl python3 python3-venv adduser iproute2 tcpreplay chromium postgresql nats-server nftables)
# Node.js drives the console tests (playwright-core); take Debian's unless one is installed.
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Suricata: detection bundles' network rules are checked against it in the tests.
"$(dirname "$0")/install-suricata.sh"

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed: install Rust 1.95 or newer (https://rustup.rs), then run this again" >&2
  exit 1
fi

# Schemathesis (PyPI) fuzzes the collector's API against its OpenAPI document in the tests;
# it lives in its own virtual environment, pinned.
SCHEMATHESIS_VENV=${SCHEMATHESIS_VENV:-/opt/lindi-schemathesis}
if [ ! -x "$SCHEMATHESIS_VENV/bin/st" ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing schemathesis into $SCHEMATHESIS_VENV" >&2
  $sudo python3 -m venv "$SCHEMATHESIS_VENV"
  $sudo "$SCHEMATHESIS_VENV/bin/pip" install -q 'schemathesis==4.32.5'
fi

# The OASIS STIX tools (PyPI): the tests validate the STIX 2.1 Lindi writes with
# stix2-validator and import bundles written by the stix2 library. Their own venv, pinned.
STIX_VENV=${STIX_VENV:-/opt/lindi-stix}
if [ ! -x "$STIX_VENV/bin/stix2_validator" ] || [ ! -d "$STIX_VENV/lib" ] || ! "$STIX_VENV/bin/python" -c 'import stix2' 2>/dev/null; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing stix2 and stix2-validator into $STIX_VENV" >&2
  $sudo python3 -m venv "$STIX_VENV"
  $sudo "$STIX_VENV/bin/pip" install -q 'stix2==3.0.2' 'stix2-validator==3.3.2'
fi

# playwright-core, pinned by tests/console/package-lock.json, drives the system chromium.
here=$(cd "$(dirname "$0")/.." && pwd)
if [ ! -d "$here/tests/console/node_modules/playwright-core" ]; then
  echo "installing playwright-core into tests/console" >&2
  (cd "$here/tests/console" && npm ci --no-audit --no-fund --loglevel=error)
fi
