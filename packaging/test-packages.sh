#!/usr/bin/env bash
# Package test (CI, as root): build the .deb packages, install them, check files, owners and
# modes, run the installed binaries on the installed configs, check the service units with
# systemd-analyze where it exists, check that an upgrade keeps local config edits, purge, and
# check that nothing is left. Changes the machine it runs on: meant for CI and throwaway hosts.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "packaging test: needs root (it installs packages); skipped"; exit 0; }
packaging/build.sh >/dev/null
agent_deb=$(ls target/packages/lindi-agent_*.deb)
collector_deb=$(ls target/packages/lindi-collector_*.deb)
ls target/packages/lindi-agent-*.rpm target/packages/lindi-collector-*.rpm >/dev/null

fail() { echo "packaging test FAILED: $*" >&2; exit 1; }
check_file() { # path mode owner
  [ -e "$1" ] || fail "$1 missing"
  local got
  got=$(stat -c '%a %U' "$1")
  [ "$got" = "$2 $3" ] || fail "$1 is '$got', expected '$2 $3'"
}

dpkg --purge lindi-agent lindi-collector >/dev/null 2>&1 || true
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "./$agent_deb" "./$collector_deb" >/dev/null
dpkg-deb -f "$agent_deb" Depends | grep -qx 'libpcap0.8' || fail "agent depends on: $(dpkg-deb -f "$agent_deb" Depends)"

check_file /usr/bin/lindi-agent 755 root
check_file /usr/bin/lindi-collector 755 root
check_file /usr/bin/lindi 755 root
check_file /etc/lindi/agent.toml 644 root
check_file /etc/lindi/collector.toml 644 root
check_file /var/lib/lindi 700 lindi
check_file /var/lib/lindi-collector 700 lindi-collector
unitdir=$(dpkg -L lindi-agent | grep -m1 'systemd/system/lindi-agent.service$' | xargs dirname)
check_file "$unitdir/lindi-agent.service" 644 root
check_file "$unitdir/lindi-agent-tap@.service" 644 root
check_file "$(dpkg -L lindi-collector | grep -m1 'lindi-collector.service$')" 644 root
grep -q 'Apache License' /usr/share/doc/lindi-agent/copyright || fail "no licence in the copyright file"
grep -q '^quinn ' /usr/share/doc/lindi-agent/copyright || fail "third-party licences missing from the copyright file"
dpkg-query -W -f='${Conffiles}\n' lindi-agent | grep -q /etc/lindi/agent.toml || fail "agent.toml is not a conffile"
getent passwd lindi >/dev/null || fail "no lindi user"
getent passwd lindi-collector >/dev/null || fail "no lindi-collector user"
# Enabled, not started: the enable symlink exists (systemd need not be running here).
[ -L /etc/systemd/system/multi-user.target.wants/lindi-agent.service ] || fail "lindi-agent.service not enabled"

lindi-agent --version | grep -q lindi-agent || fail "lindi-agent --version"
lindi-agent check-config --config /etc/lindi/agent.toml >/dev/null || fail "agent check-config"
lindi-collector check-config --config /etc/lindi/collector.toml >/dev/null || fail "collector check-config"
lindi-agent --help | grep -q enroll || fail "lindi-agent --help"

# Initialise and enroll as root the way the README says: what is made belongs to lindi.
lindi-collector init --config /etc/lindi/collector.toml >/dev/null
check_file /var/lib/lindi-collector/ca.key 600 lindi-collector

if command -v systemd-analyze >/dev/null; then
  for u in lindi-agent.service lindi-collector.service; do
    out=$(systemd-analyze verify "$unitdir/$u" 2>&1 || true)
    [ -z "$out" ] || fail "systemd-analyze verify $u: $out"
  done
  for u in lindi-agent.service lindi-agent-tap@.service; do
    exposure=$(systemd-analyze security --offline=true "$unitdir/$u" 2>/dev/null | sed -n 's/.*exposure level for .*: \([0-9.]*\).*/\1/p')
    echo "systemd-analyze security $u: exposure $exposure (goal 2.0; see the unit's comments)"
    python3 -c "import sys; sys.exit(0 if float('$exposure') <= 2.0 else 1)" || fail "$u: exposure $exposure above 2.0"
  done
  # The collector's addresses as `lindi-agent enroll` adds them: the unit stays at the goal.
  merged=$(mktemp -d)
  printf 'collector_addr = "127.0.0.1:4700"\n' >"$merged/agent.toml"
  lindi-agent ip-allow --config "$merged/agent.toml" --write "$merged/collector.conf" >/dev/null ||
    fail "lindi-agent ip-allow --write"
  grep -qx 'IPAddressAllow=127.0.0.1' "$merged/collector.conf" || fail "ip-allow: $(cat "$merged/collector.conf")"
  cat "$unitdir/lindi-agent.service" "$merged/collector.conf" >"$merged/lindi-agent.service"
  out=$(systemd-analyze verify "$merged/lindi-agent.service" 2>&1 || true)
  [ -z "$out" ] || fail "systemd-analyze verify with the collector's addresses: $out"
  exposure=$(systemd-analyze security --offline=true "$merged/lindi-agent.service" 2>/dev/null | sed -n 's/.*exposure level for .*: \([0-9.]*\).*/\1/p')
  python3 -c "import sys; sys.exit(0 if float('$exposure') <= 2.0 else 1)" || fail "with the collector's addresses: exposure $exposure"
  rm -rf "$merged"
  # The CAP_SYS_PTRACE drop-in (docs/process-exe.md), checked merged into the unit.
  dropin=/usr/share/doc/lindi-agent/examples/process-exe.conf
  [ -f "$dropin" ] || fail "$dropin missing"
  merged=$(mktemp -d)
  cat "$unitdir/lindi-agent.service" "$dropin" >"$merged/lindi-agent.service"
  out=$(systemd-analyze verify "$merged/lindi-agent.service" 2>&1 || true)
  [ -z "$out" ] || fail "systemd-analyze verify with process-exe.conf: $out"
  out=$(systemd-analyze security --offline=true "$merged/lindi-agent.service" 2>/dev/null || true)
  grep -q '✗ CapabilityBoundingSet=~CAP_SYS_PTRACE' <<<"$out" || fail "drop-in not read"
  rm -rf "$merged"
else
  echo "systemd-analyze is not installed: unit checks skipped"
fi

# An upgrade (here: the same package again) keeps local edits to the configuration.
echo '# local edit' >>/etc/lindi/agent.toml
DEBIAN_FRONTEND=noninteractive dpkg -i --force-confold "$agent_deb" >/dev/null
grep -q '# local edit' /etc/lindi/agent.toml || fail "reinstall overwrote a local config edit"

dpkg --purge lindi-agent lindi-collector >/dev/null
for p in /usr/bin/lindi-agent /usr/bin/lindi-collector /usr/bin/lindi /etc/lindi /var/lib/lindi \
         /var/lib/lindi-collector "$unitdir/lindi-agent.service" /etc/systemd/system/multi-user.target.wants/lindi-agent.service; do
  if [ -e "$p" ] || [ -L "$p" ]; then fail "$p left after purge"; fi
done
# RPM packages: dependencies and config files read with rpm, the files installed into a
# scratch root (modes and owners checked) and erased again, and the maintainer scripts run on
# this machine as rpm would run them on first install and on erase.
command -v rpm >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rpm >/dev/null
agent_rpm=$(ls target/packages/lindi-agent-*.rpm)
collector_rpm=$(ls target/packages/lindi-collector-*.rpm)
requires=$(rpm -qp --requires "$agent_rpm" 2>/dev/null)
grep -q '^libpcap' <<<"$requires" || fail "agent rpm requires: $requires"
flags=$(rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$agent_rpm" "$collector_rpm" 2>/dev/null)
grep -qx 'cn /etc/lindi/agent.toml' <<<"$flags" || fail "agent.toml is not %config(noreplace): $flags"
grep -qx 'cn /etc/lindi/collector.toml' <<<"$flags" || fail "collector.toml is not %config(noreplace): $flags"
rroot=$(mktemp -d)
rpm="rpm --root $rroot --dbpath /rpmdb"
$rpm --initdb
$rpm -i --nodeps --noscripts --nosignature "$agent_rpm" "$collector_rpm" 2>/dev/null || fail "rpm -i into a scratch root"
check_file "$rroot/usr/bin/lindi-agent" 755 root
check_file "$rroot/usr/bin/lindi-collector" 755 root
check_file "$rroot/etc/lindi/agent.toml" 644 root
check_file "$rroot/etc/lindi/collector.toml" 644 root
check_file "$rroot/usr/lib/systemd/system/lindi-agent.service" 644 root
check_file "$rroot/usr/lib/systemd/system/lindi-agent-tap@.service" 644 root
check_file "$rroot/usr/lib/systemd/system/lindi-collector.service" 644 root
check_file "$rroot/usr/share/doc/lindi-agent/examples/process-exe.conf" 644 root
grep -q '^quinn ' "$rroot/usr/share/licenses/lindi-agent/LICENSES" || fail "third-party licences missing from the rpm"
"$rroot/usr/bin/lindi-agent" check-config --config "$rroot/etc/lindi/agent.toml" >/dev/null || fail "rpm agent check-config"
$rpm -e --nodeps --noscripts lindi-agent lindi-collector 2>/dev/null || fail "rpm -e"
left=$(find "$rroot" -path "$rroot/rpmdb" -prune -o -type f -print)
[ -z "$left" ] || fail "files left after rpm -e: $left"
rm -rf "$rroot"
for pkg in agent collector; do
  for s in post preun postun; do bash -n "packaging/rpm/$pkg-$s.sh" || fail "$pkg-$s.sh"; done
done
sh packaging/rpm/agent-post.sh 1
check_file /var/lib/lindi 700 lindi
sh packaging/rpm/agent-preun.sh 0 && sh packaging/rpm/agent-postun.sh 0
[ ! -e /var/lib/lindi ] || fail "/var/lib/lindi left after the rpm erase scripts"
echo "packaging: 1 passed, 0 failed"
