#!/usr/bin/env bash
# Install Suricata (and tcpdump) where they are missing: the peers Lindi's network engine is
# compared with in tests and benchmarks. Debian bookworm takes Suricata 7 from
# bookworm-backports; other Debian and Ubuntu releases from their own archive. Needs root or
# sudo. Idempotent.
set -euo pipefail
command -v suricata >/dev/null 2>&1 && command -v tcpdump >/dev/null 2>&1 && exit 0
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
. /etc/os-release
target=()
if [ "${ID:-}" = debian ] && [ "${VERSION_CODENAME:-}" = bookworm ]; then
    if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
        echo "deb http://deb.debian.org/debian bookworm-backports main" |
            $sudo tee /etc/apt/sources.list.d/lindi-backports.list >/dev/null
    fi
    target=(-t bookworm-backports)
fi
echo "installing suricata and tcpdump" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends tcpdump >/dev/null
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${target[@]}" suricata >/dev/null
