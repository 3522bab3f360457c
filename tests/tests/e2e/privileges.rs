//! The agent as the packaged service runs it: an unprivileged user holding only CAP_NET_RAW,
//! CAP_NET_ADMIN and CAP_DAC_READ_SEARCH. It still captures packets on a veth pair it is given
//! and hashes files only root may read, and it writes nothing outside its state directory.
//! Its process sensor sees every process but not the executables of other users' processes,
//! and says so in its health, until CAP_SYS_PTRACE is added (docs/process-exe.md).
//! Started as the unit starts it, only the process connector's reader runs at real-time
//! priority. Needs root (to make the user switch, the veth pair and root-only files), setpriv
//! and chrt.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lindi_shared::proto::{ProcessAction, ProcessEvent, event};
use lindi_tests::netns::{LoopbackNamespace, Veth, sample_frames, write_pcap};
use lindi_tests::{Agent, Collector, FAST_AGENT, wait_until};

const NOBODY: u32 = 65534;
const CAPS: &str = "+net_raw,+net_admin,+dac_read_search";
const CAPS_WITH_PTRACE: &str = "+net_raw,+net_admin,+dac_read_search,+sys_ptrace";

fn setpriv(caps: &str) -> Vec<String> {
    vec![
        "setpriv".into(),
        "--reuid=65534".into(),
        "--regid=65534".into(),
        "--clear-groups".into(),
        format!("--inh-caps={caps}"),
        format!("--ambient-caps={caps}"),
        format!("--bounding-set=-all,{caps}"),
    ]
}

/// Run `/bin/true MARKER` as root (again until the agent, which may still be starting,
/// reports it) and return the process event the agent reported for it.
fn root_process_event(c: &Collector, agent_id: &str, marker: &str) -> ProcessEvent {
    let mut found = None;
    wait_until(Duration::from_secs(20), || {
        let ok = Command::new("/bin/true")
            .arg(marker)
            .status()
            .unwrap()
            .success();
        assert!(ok);
        found = c
            .events_of_kind(agent_id, "process")
            .into_iter()
            .find_map(|e| match e.kind {
                Some(event::Kind::Process(p))
                    if p.action == ProcessAction::Start as i32
                        && p.cmdline.iter().any(|a| a == marker) =>
                {
                    Some(p)
                }
                _ => None,
            });
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("no start event for /bin/true {marker}"))
}

/// The threads of `pid` that run under a real-time policy (FIFO or round-robin).
fn realtime_threads(pid: u32) -> Vec<u32> {
    let mut out = vec![];
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let Ok(stat) = std::fs::read_to_string(t.path().join("stat")) else {
            continue;
        };
        // After the command name, in parentheses: fields 3 onwards; the policy is field 41.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let policy: u32 = rest.split(' ').nth(41 - 3).unwrap().parse().unwrap();
        if policy == 1 || policy == 2 {
            out.push(t.file_name().to_str().unwrap().parse().unwrap());
        }
    }
    out.sort();
    out
}

fn snapshot(dir: &Path, skip: &[PathBuf], out: &mut BTreeMap<PathBuf, (u64, i64)>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if skip.iter().any(|s| p.starts_with(s)) {
            continue;
        }
        let m = std::fs::symlink_metadata(&p).unwrap();
        out.insert(
            p.clone(),
            (m.len(), m.mtime_nsec() + m.mtime() * 1_000_000_000),
        );
        if m.is_dir() {
            snapshot(&p, skip, out);
        }
    }
}

fn chown_tree(p: &Path, uid: u32) {
    std::os::unix::fs::lchown(p, Some(uid), Some(uid)).unwrap();
    if std::fs::symlink_metadata(p).unwrap().is_dir() {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            chown_tree(&e.path(), uid);
        }
    }
}

#[test]
fn unprivileged_agent_with_three_capabilities_captures_and_hashes() {
    let Some(veth) = Veth::for_test() else { return };
    if Command::new("setpriv").arg("--version").output().is_err() {
        eprintln!("skipping: setpriv (util-linux) is not installed");
        return;
    }
    let mut c = Collector::init();
    c.start();
    let mut a = Agent::enroll(&c.token("bank-a"));
    // Files only root may read.
    let secret = a.tmp.path().join("root-only");
    std::fs::create_dir(&secret).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o700)).unwrap();
    let pcap_path = a.tmp.path().join("frames.pcap");
    write_pcap(&pcap_path, &sample_frames());
    a.configure(
        &FAST_AGENT
            .replace(
                "[sensors.process]\nenabled = false",
                "[sensors.process]\nenabled = true\nmode = \"connector\"",
            )
            .replace(
                "[sensors.net]\nenabled = false",
                &format!("[sensors.net]\nenabled = true\ninterfaces = [{:?}]\nbpf_filter = \"udp or tcp\"", veth.host_end),
            )
            .replace(
                "[sensors.fim]\nenabled = false",
                &format!(
                    "[sensors.fim]\nenabled = true\ndebounce_ms = 200\n[[sensors.fim.paths]]\npath = {:?}\n",
                    secret.display().to_string()
                ),
            ),
    );
    // The agent's directory belongs to the unprivileged user, so a stray write there would
    // succeed: the test sees it if it happens.
    let sandbox = a.tmp.path().to_path_buf();
    chown_tree(&sandbox, NOBODY);
    chown_tree(&secret, 0);
    std::fs::set_permissions(&sandbox, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = sandbox.join("agent.log");
    // The state directory and log are the agent's; the root-only directory is written by this test.
    let skip = vec![a.state_dir.clone(), log.clone(), secret.clone()];
    let mut before = BTreeMap::new();
    snapshot(&sandbox, &skip, &mut before);

    let wrapper = setpriv(CAPS);
    a.start_with(&wrapper.iter().map(String::as_str).collect::<Vec<_>>());
    std::thread::sleep(Duration::from_secs(2));
    let pid = a.pid().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_string();
    assert!(uid_line.contains("65534"), "the agent runs as {uid_line}");
    let caps = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    // CAP_DAC_READ_SEARCH (2), CAP_NET_ADMIN (12), CAP_NET_RAW (13): 0x3004.
    assert!(
        caps.ends_with("0000000000003004"),
        "effective capabilities {caps}"
    );

    veth.inject(&pcap_path);
    std::fs::write(secret.join("key.pem"), b"root secret").unwrap();
    std::fs::set_permissions(
        secret.join("key.pem"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let agent_id = a.agent_id.clone();
    let hashed = wait_until(Duration::from_secs(20), || {
        c.file_events(&agent_id).iter().any(|f| {
            f.path.ends_with("key.pem")
                && f.after
                    .as_ref()
                    .is_some_and(|s| s.sha256 == lindi_shared::pki::fingerprint(b"root secret"))
        })
    });
    assert!(
        hashed,
        "no hash of the root-only file; agent log:\n{}",
        a.log_text()
    );
    // Without CAP_SYS_PTRACE a root process is seen, its executable is not, and the sensor
    // says why.
    let blind = root_process_event(&c, &agent_id, "lindi-blind");
    assert!(
        blind.exe.is_empty() && blind.exe_sha256.is_empty() && blind.partial,
        "{blind:?}"
    );
    assert!(
        a.log_text().contains("needs CAP_SYS_PTRACE"),
        "the degraded process sensor is not reported; agent log:\n{}",
        a.log_text()
    );
    a.stop();
    let flows = c
        .events_of_kind(&agent_id, "flow")
        .into_iter()
        .filter(|e| matches!(e.kind, Some(event::Kind::Flow(_))))
        .count();
    assert_eq!(
        flows,
        6,
        "flows captured without root; agent log:\n{}",
        a.log_text()
    );

    // With CAP_SYS_PTRACE added (the drop-in in docs/process-exe.md) it is whole again.
    // Started as the unit starts it: at the lowest real-time priority, reset for every
    // thread it makes (CPUSchedulingPolicy=fifo, CPUSchedulingResetOnFork=yes), so only the
    // process connector's reader, on the main thread, keeps it.
    let mut wrapper = vec!["chrt", "--fifo", "--reset-on-fork", "1"];
    let dropped = setpriv(CAPS_WITH_PTRACE);
    wrapper.extend(dropped.iter().map(String::as_str));
    a.start_with(&wrapper);
    let seen = root_process_event(&c, &agent_id, "lindi-seen");
    assert!(
        seen.exe.ends_with("/true") && seen.exe_sha256.len() == 64,
        "{seen:?}"
    );
    let pid = a.pid().unwrap();
    assert_eq!(
        realtime_threads(pid),
        vec![pid],
        "threads at real-time priority; agent log:\n{}",
        a.log_text()
    );
    assert!(
        a.log_text()
            .contains("process connector reader runs at real-time (given at start) priority"),
        "{}",
        a.log_text()
    );
    a.stop();

    let mut after = BTreeMap::new();
    snapshot(&sandbox, &skip, &mut after);
    assert_eq!(before, after, "the agent wrote outside its state directory");
    chown_tree(&sandbox, 0);
}

#[test]
fn enrollment_allows_the_collector_and_a_host_that_refuses_it_is_named() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: a network namespace needs root");
        return;
    }
    if Command::new("nft").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").is_err(),
            "CI: nft (nftables) is missing; packaging/dev-setup.sh installs it"
        );
        eprintln!("skipping: nft (nftables) is not installed");
        return;
    }
    let mut c = Collector::init();
    c.start();
    // Enrollment writes the unit's allow list: the collector's address.
    let dir = tempfile::tempdir().unwrap();
    let dropin = dir
        .path()
        .join("lindi-agent.service.d/50-collector-addresses.conf");
    let a = Agent::enroll_with(
        &c.token("bank-a"),
        &["--ip-allow-dropin", dropin.to_str().unwrap()],
    );
    let text = std::fs::read_to_string(&dropin).unwrap();
    assert!(
        text.contains(
            "[Service]\nIPAddressDeny=any\nIPAddressAllow=localhost\nIPAddressAllow=127.0.0.1\n"
        ),
        "{text}"
    );
    // `ip-allow` prints the same for the same addresses.
    let out = Command::new(lindi_tests::bin("lindi-agent"))
        .args(["ip-allow", "--state-dir"])
        .arg(&a.state_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), text);

    // On a host that drops what the agent sends to its collector (as the unit does for an
    // address missing from the list), the agent says so and how to fix it.
    let ns = match LoopbackNamespace::new() {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!("skipping: cannot make a network namespace here: {e}");
            return;
        }
    };
    let port = c.quic_addr().rsplit_once(':').unwrap().1.to_string();
    ns.nft("add table inet lindi");
    ns.nft("add chain inet lindi out { type filter hook output priority 0 ; policy accept ; }");
    ns.nft(&format!(
        "add rule inet lindi out ip daddr 127.0.0.1 udp dport {port} drop"
    ));
    let mut a = a;
    a.start_with(&["ip", "netns", "exec", &ns.name]);
    let named = wait_until(Duration::from_secs(20), || {
        a.log_text()
            .contains("this host refuses to send to 127.0.0.1 (EPERM): the service's IP allow list")
    });
    a.stop();
    assert!(named, "agent log:\n{}", a.log_text());
}
