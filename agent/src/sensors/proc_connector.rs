//! Real-time process exec and exit events from the Linux kernel's process connector
//! (netlink, `NETLINK_CONNECTOR` / `CN_IDX_PROC`; needs CAP_NET_ADMIN), enriched from `/proc`
//! the moment the kernel reports them.
//!
//! Constraints:
//! 1. The socket is read on a dedicated OS thread; a receive timeout lets it notice a stop.
//! 2. Only thread-group leaders are processes; thread execs and exits are ignored.
//! 3. Where the process is gone before `/proc` could be read, what is known (pid, and for an
//!    exit what was cached at exec) is emitted with `partial = true`.
//! 4. When the kernel's socket buffer overflowed (`ENOBUFS`), events were lost: that is counted
//!    as dropped and reported, and reading continues.
//! 5. Every cache is bounded: processes seen (by pid) and exe hashes (by device, inode, mtime).
//!
//! Message layout (all host byte order):
//!
//! ```text
//! nlmsghdr  { len u32, type u16, flags u16, seq u32, pid u32 }            16 bytes
//! cn_msg    { idx u32, val u32, seq u32, ack u32, len u16, flags u16 }     20 bytes
//! proc_event{ what u32, cpu u32, timestamp_ns u64, data[...] }            16 bytes + data
//!   exec: { pid i32, tgid i32 }
//!   exit: { pid i32, tgid i32, exit_code u32, exit_signal u32, ppid i32, ptgid i32 }
//! ```

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lindi_shared::proto::{ProcessAction, ProcessEvent, event};

use super::EventSink;
use super::process::UserNames;

const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_EVENT_EXEC: u32 = 0x0000_0002;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;
const NLMSG_HDR: usize = 16;
const CN_MSG_HDR: usize = 20;
const PROC_EVENT_HDR: usize = 16;

/// Most processes remembered between exec and exit.
const MAX_TRACKED: usize = 65_536;
/// Most exe hashes remembered.
const MAX_HASHES: usize = 4096;
/// Executables larger than this are not hashed (reported without a hash).
const MAX_HASH_BYTES: u64 = 64 << 20;
/// Most bytes of a parent's command line read.
const PARENT_CMDLINE_BYTES: u64 = 4096;
/// Most bytes of a command line read.
const MAX_CMDLINE_BYTES: u64 = super::process::MAX_CMDLINE_BYTES as u64;

/// A decoded process connector event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProcMessage {
    Exec {
        pid: u32,
        tgid: u32,
        timestamp_ns: u64,
    },
    Exit {
        pid: u32,
        tgid: u32,
        exit_code: u32,
        timestamp_ns: u64,
    },
    Other,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_ne_bytes(s.try_into().expect("4 bytes")))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8)
        .map(|s| u64::from_ne_bytes(s.try_into().expect("8 bytes")))
}

/// Decode every process event in one datagram. Malformed or foreign messages are skipped.
pub fn parse_datagram(buf: &[u8]) -> Vec<ProcMessage> {
    let mut out = vec![];
    let mut pos = 0;
    while pos + NLMSG_HDR <= buf.len() {
        let Some(len) = u32_at(buf, pos).map(|l| l as usize) else {
            break;
        };
        if len < NLMSG_HDR || pos + len > buf.len() {
            break;
        }
        let msg = &buf[pos..pos + len];
        out.push(parse_cn_msg(&msg[NLMSG_HDR..]));
        pos += (len + 3) & !3;
    }
    out
}

fn parse_cn_msg(cn: &[u8]) -> ProcMessage {
    let (Some(idx), Some(val)) = (u32_at(cn, 0), u32_at(cn, 4)) else {
        return ProcMessage::Other;
    };
    if idx != CN_IDX_PROC || val != CN_VAL_PROC {
        return ProcMessage::Other;
    }
    let ev = match cn.get(CN_MSG_HDR..) {
        Some(e) => e,
        None => return ProcMessage::Other,
    };
    let (Some(what), Some(ts)) = (u32_at(ev, 0), u64_at(ev, 8)) else {
        return ProcMessage::Other;
    };
    let d = PROC_EVENT_HDR;
    match what {
        PROC_EVENT_EXEC => match (u32_at(ev, d), u32_at(ev, d + 4)) {
            (Some(pid), Some(tgid)) => ProcMessage::Exec {
                pid,
                tgid,
                timestamp_ns: ts,
            },
            _ => ProcMessage::Other,
        },
        PROC_EVENT_EXIT => match (u32_at(ev, d), u32_at(ev, d + 4), u32_at(ev, d + 8)) {
            (Some(pid), Some(tgid), Some(code)) => ProcMessage::Exit {
                pid,
                tgid,
                exit_code: code,
                timestamp_ns: ts,
            },
            _ => ProcMessage::Other,
        },
        _ => ProcMessage::Other,
    }
}

/// The subscription request: nlmsghdr + cn_msg + PROC_CN_MCAST_LISTEN.
fn subscribe_message() -> Vec<u8> {
    let total = NLMSG_HDR + CN_MSG_HDR + 4;
    let mut m = Vec::with_capacity(total);
    m.extend_from_slice(&(total as u32).to_ne_bytes());
    m.extend_from_slice(&(libc::NLMSG_DONE as u16).to_ne_bytes());
    m.extend_from_slice(&0u16.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&std::process::id().to_ne_bytes());
    m.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
    m.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&4u16.to_ne_bytes());
    m.extend_from_slice(&0u16.to_ne_bytes());
    m.extend_from_slice(&PROC_CN_MCAST_LISTEN.to_ne_bytes());
    m
}

fn os_err(what: &str) -> std::io::Error {
    let e = std::io::Error::last_os_error();
    std::io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// An open, subscribed process connector socket.
pub struct ProcConnector {
    fd: OwnedFd,
}

impl ProcConnector {
    /// Open and subscribe. Fails without CAP_NET_ADMIN or where the kernel lacks the connector.
    pub fn open() -> std::io::Result<Self> {
        // SAFETY: plain socket(2); the result is checked and owned immediately.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
                libc::NETLINK_CONNECTOR,
            )
        };
        if raw < 0 {
            return Err(os_err("netlink socket"));
        }
        // SAFETY: raw is a valid, fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = CN_IDX_PROC;
        addr.nl_pid = 0;
        // SAFETY: addr is a valid sockaddr_nl of the size given.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if rc < 0 {
            return Err(os_err("bind to the process connector"));
        }
        // A large buffer rides out exec storms; FORCE needs CAP_NET_ADMIN, which we have here.
        let size: libc::c_int = 8 << 20;
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
            // SAFETY: setsockopt with a c_int value.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    &size as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as u32,
                )
            };
            if rc == 0 {
                break;
            }
        }
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 250_000,
        };
        // SAFETY: setsockopt with a timeval value.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &timeout as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        let msg = subscribe_message();
        // SAFETY: msg is a valid buffer of the given length.
        let sent = unsafe {
            libc::send(
                fd.as_raw_fd(),
                msg.as_ptr() as *const libc::c_void,
                msg.len(),
                0,
            )
        };
        if sent < 0 {
            return Err(os_err("subscribe to the process connector"));
        }
        Ok(ProcConnector { fd })
    }

    /// Receive one datagram. `Ok(None)` on timeout; `Err` with `ENOBUFS` when events were lost.
    pub fn recv(&self, buf: &mut [u8]) -> std::io::Result<Option<usize>> {
        // SAFETY: buf is valid for writes of its length.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                0,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(None),
                _ => Err(e),
            };
        }
        Ok(Some(n as usize))
    }
}

/// Reads `/proc` for a process and hashes executables, with bounded caches.
pub struct ProcReader {
    boot_time_s: u64,
    ticks_per_s: u64,
    users: UserNames,
    hashes: HashMap<(u64, u64, i64), String>,
    /// Bytes hashed in the current one-second window, and when it began.
    hash_window: (std::time::Instant, u64),
}

/// Most executable bytes hashed per second on the reader thread: a local user who makes the
/// cache miss on purpose (a large binary touched between runs) cannot stall exec events.
const HASH_BYTES_PER_SEC: u64 = 32 << 20;

impl Default for ProcReader {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcReader {
    pub fn new() -> Self {
        let boot_time_s = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse().ok()))
            })
            .unwrap_or(0);
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        ProcReader {
            boot_time_s,
            ticks_per_s: if ticks > 0 { ticks as u64 } else { 100 },
            users: UserNames::default(),
            hashes: HashMap::new(),
            hash_window: (std::time::Instant::now(), 0),
        }
    }

    /// Describe a running process; `partial` when it vanished before everything was read.
    ///
    /// A process can exit a millisecond after its exec, so what identifies it is read first
    /// (command line, then the executable, held open so it can be hashed after the process is
    /// gone), and the rest after.
    pub fn describe(&mut self, pid: u32, action: ProcessAction) -> ProcessEvent {
        let dir = format!("/proc/{pid}");
        let mut ev = ProcessEvent {
            action: action as i32,
            pid,
            ..Default::default()
        };
        let mut complete = true;
        match read_limited(&format!("{dir}/cmdline"), MAX_CMDLINE_BYTES) {
            Some(raw) => {
                ev.cmdline = raw
                    .split(|b| *b == 0)
                    .filter(|a| !a.is_empty())
                    .map(|a| String::from_utf8_lossy(a).into_owned())
                    .collect();
            }
            None => complete = false,
        }
        let exe_file = std::fs::File::open(format!("{dir}/exe")).ok();
        match std::fs::read_link(format!("{dir}/exe")) {
            Ok(p) => ev.exe = p.to_string_lossy().into_owned(),
            Err(_) => complete = false,
        }
        match std::fs::read_to_string(format!("{dir}/status")) {
            Ok(status) => {
                for line in status.lines() {
                    if let Some(v) = line.strip_prefix("Name:") {
                        ev.name = v.trim().to_string();
                    } else if let Some(v) = line.strip_prefix("PPid:") {
                        ev.ppid = v.trim().parse().unwrap_or(0);
                    } else if let Some(v) = line.strip_prefix("Uid:") {
                        ev.uid = v
                            .split_whitespace()
                            .next()
                            .and_then(|u| u.parse().ok())
                            .unwrap_or(0);
                    }
                }
            }
            Err(_) => complete = false,
        }
        match self.start_time_s(pid) {
            Some(start) => ev.start_time_s = start,
            None => complete = false,
        }
        if let Ok(p) = std::fs::read_link(format!("{dir}/cwd")) {
            ev.cwd = p.to_string_lossy().into_owned();
        }
        if ev.ppid > 0 {
            if let Ok(p) = std::fs::read_link(format!("/proc/{}/exe", ev.ppid)) {
                ev.parent_exe = p.to_string_lossy().into_owned();
            }
            if let Some(raw) =
                read_limited(&format!("/proc/{}/cmdline", ev.ppid), PARENT_CMDLINE_BYTES)
            {
                ev.parent_cmdline = join_args(&raw);
            }
        }
        ev.user = self.users.name(ev.uid);
        if let Some(f) = exe_file {
            ev.exe_sha256 = self.exe_hash(f).unwrap_or_default();
        }
        ev.partial = ev.partial || !complete || ev.exe.is_empty();
        ev
    }

    fn start_time_s(&self, pid: u32) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // Fields after the command name (which may hold spaces and parentheses).
        let rest = &stat[stat.rfind(')')? + 1..];
        let ticks: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
        Some(self.boot_time_s + ticks / self.ticks_per_s)
    }

    /// SHA-256 of an open executable, cached by (device, inode, mtime).
    fn exe_hash(&mut self, file: std::fs::File) -> Option<String> {
        let meta = file.metadata().ok()?;
        let key = (meta.dev(), meta.ino(), meta.mtime());
        if let Some(h) = self.hashes.get(&key) {
            return Some(h.clone());
        }
        if meta.len() > MAX_HASH_BYTES {
            return None;
        }
        let (start, used) = &mut self.hash_window;
        if start.elapsed() >= Duration::from_secs(1) {
            *start = std::time::Instant::now();
            *used = 0;
        }
        if *used + meta.len() > HASH_BYTES_PER_SEC {
            return None;
        }
        *used += meta.len();
        let hash = sha256_reader(file)?;
        if self.hashes.len() >= MAX_HASHES {
            self.hashes.clear();
        }
        self.hashes.insert(key, hash.clone());
        Some(hash)
    }
}

/// NUL-separated arguments as one line joined with spaces.
fn join_args(raw: &[u8]) -> String {
    raw.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

fn read_limited(path: &str, limit: u64) -> Option<Vec<u8>> {
    let f = std::fs::File::open(path).ok()?;
    let mut out = vec![];
    f.take(limit).read_to_end(&mut out).ok()?;
    Some(out)
}

/// SHA-256 of everything a reader yields, streamed, lower-case hex.
pub fn sha256_reader(mut f: impl Read) -> Option<String> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => ctx.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return None,
        }
    }
    Some(hex::encode(ctx.finish()))
}

/// Read the connector until `stop` is set, emitting start and exit events. Runs on its own
/// OS thread.
pub fn read_loop(connector: ProcConnector, sink: EventSink, stop: Arc<AtomicBool>) {
    // A short-lived process is gone within a millisecond of its exec: the sooner this thread
    // runs after the kernel's message, the more of it /proc still shows (see crate::realtime).
    // The thread sleeps in recv and does bounded work per message.
    let priority = crate::realtime::raise_this_thread();
    tracing::info!("process connector reader runs at {priority} priority");
    let mut reader = ProcReader::new();
    let mut tracked: HashMap<u32, ProcessEvent> = HashMap::new();
    let mut buf = vec![0u8; 64 << 10];
    let boot_ns = (reader.boot_time_s as i64).saturating_mul(1_000_000_000);
    while !stop.load(Ordering::Relaxed) {
        let n = match connector.recv(&mut buf) {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                // The kernel dropped events: we cannot know how many; count the overflow.
                sink.stats.dropped.fetch_add(1, Ordering::Relaxed);
                sink.stats.set_state(
                    "degraded",
                    "process connector buffer overflowed; some events were lost",
                );
                continue;
            }
            Err(e) => {
                sink.stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!("process connector: {e}");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        for msg in parse_datagram(&buf[..n]) {
            match msg {
                ProcMessage::Exec {
                    pid,
                    tgid,
                    timestamp_ns,
                } if pid == tgid => {
                    let ev = reader.describe(pid, ProcessAction::Start);
                    if tracked.len() >= MAX_TRACKED {
                        tracked.clear();
                    }
                    tracked.insert(pid, super::process::remembered(&ev));
                    sink.emit(
                        boot_ns.saturating_add(timestamp_ns as i64),
                        event::Kind::Process(ev),
                    );
                }
                ProcMessage::Exit {
                    pid,
                    tgid,
                    exit_code,
                    timestamp_ns,
                } if pid == tgid => {
                    let mut ev = tracked.remove(&pid).unwrap_or_else(|| ProcessEvent {
                        pid,
                        partial: true,
                        ..Default::default()
                    });
                    ev.action = ProcessAction::Exit as i32;
                    // The kernel reports the wait status: exit code in bits 8..16, signal below.
                    ev.exit_code = Some(if exit_code & 0x7f == 0 {
                        ((exit_code >> 8) & 0xff) as i32
                    } else {
                        -((exit_code & 0x7f) as i32)
                    });
                    sink.emit(
                        boot_ns.saturating_add(timestamp_ns as i64),
                        event::Kind::Process(ev),
                    );
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(what: u32, data: &[u32]) -> Vec<u8> {
        let mut ev = vec![];
        ev.extend_from_slice(&what.to_ne_bytes());
        ev.extend_from_slice(&0u32.to_ne_bytes());
        ev.extend_from_slice(&123u64.to_ne_bytes());
        for d in data {
            ev.extend_from_slice(&d.to_ne_bytes());
        }
        let mut cn = vec![];
        for v in [CN_IDX_PROC, CN_VAL_PROC, 0, 0] {
            cn.extend_from_slice(&v.to_ne_bytes());
        }
        cn.extend_from_slice(&(ev.len() as u16).to_ne_bytes());
        cn.extend_from_slice(&0u16.to_ne_bytes());
        cn.extend_from_slice(&ev);
        let mut m = vec![];
        m.extend_from_slice(&((NLMSG_HDR + cn.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&[0u8; 12]);
        m.extend_from_slice(&cn);
        m
    }

    #[test]
    fn decodes_exec_and_exit() {
        assert_eq!(
            parse_datagram(&datagram(PROC_EVENT_EXEC, &[42, 42])),
            vec![ProcMessage::Exec {
                pid: 42,
                tgid: 42,
                timestamp_ns: 123
            }]
        );
        assert_eq!(
            parse_datagram(&datagram(PROC_EVENT_EXIT, &[7, 6, 256, 17, 1, 1])),
            vec![ProcMessage::Exit {
                pid: 7,
                tgid: 6,
                exit_code: 256,
                timestamp_ns: 123
            }]
        );
        assert_eq!(
            parse_datagram(&datagram(1, &[1, 1, 2, 2])),
            vec![ProcMessage::Other]
        );
    }

    #[test]
    fn malformed_datagrams_are_skipped_not_fatal() {
        let good = datagram(PROC_EVENT_EXEC, &[42, 42]);
        for cut in 0..good.len() {
            let _ = parse_datagram(&good[..cut]);
        }
        let mut lying = good.clone();
        lying[0..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(parse_datagram(&lying).is_empty());
        assert!(parse_datagram(&[0xff; 7]).is_empty());
        // Truncated event data: decodes as Other, never out of bounds.
        let mut short = datagram(PROC_EVENT_EXIT, &[1]);
        let len = short.len() as u32;
        short[0..4].copy_from_slice(&len.to_ne_bytes());
        assert_eq!(parse_datagram(&short), vec![ProcMessage::Other]);
    }

    #[test]
    fn describes_a_running_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        // Let it get past exec.
        std::thread::sleep(Duration::from_millis(200));
        let mut r = ProcReader::new();
        let ev = r.describe(child.id(), ProcessAction::Snapshot);
        let _ = child.kill();
        let _ = child.wait();
        assert!(!ev.partial, "{ev:?}");
        assert!(ev.exe.ends_with("sleep"), "{ev:?}");
        assert_eq!(ev.cmdline, vec!["sleep", "30"]);
        assert_eq!(ev.exe_sha256.len(), 64);
        assert_eq!(ev.ppid, std::process::id());
        assert!(ev.start_time_s > 1_600_000_000);
        // A pid that does not exist: partial, no panic.
        let gone = r.describe(u32::MAX - 1, ProcessAction::Start);
        assert!(gone.partial);
    }

    #[test]
    fn short_lived_processes_are_seen_with_exe_and_command_line() {
        let connector = match ProcConnector::open() {
            Ok(c) => c,
            Err(e) => {
                eprintln!(
                    "skipping: process connector unavailable here ({e}); it needs CAP_NET_ADMIN"
                );
                return;
            }
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel(100_000);
        let stats = super::super::SensorStats::new("process");
        let sink = EventSink::new(
            tx,
            stats.clone(),
            Arc::new(super::super::EventIds::new()),
            "a",
            "h",
        );
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let stop = stop.clone();
            std::thread::spawn(move || read_loop(connector, sink, stop))
        };
        let marker = format!("lindi-test-{}", std::process::id());
        let runs = 300;
        let mut pids = std::collections::HashSet::new();
        for i in 0..runs {
            let mut child = std::process::Command::new("/bin/true")
                .arg(&marker)
                .arg(i.to_string())
                .spawn()
                .unwrap();
            pids.insert(child.id());
            assert!(child.wait().unwrap().success());
        }
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        reader.join().unwrap();
        let mut started = std::collections::HashSet::new();
        let mut complete = 0;
        let mut exited = std::collections::HashSet::new();
        while let Ok(e) = rx.try_recv() {
            let Some(event::Kind::Process(p)) = e.kind else {
                continue;
            };
            if !pids.contains(&p.pid) {
                continue;
            }
            if p.action == ProcessAction::Start as i32 {
                started.insert(p.pid);
                if p.cmdline.get(1) == Some(&marker)
                    && p.exe.ends_with("true")
                    && p.exe_sha256.len() == 64
                {
                    complete += 1;
                }
            }
            if p.action == ProcessAction::Exit as i32 {
                assert_eq!(p.exit_code, Some(0), "{p:?}");
                exited.insert(p.pid);
            }
        }
        // Every exec and every exit is delivered, whatever the machine's load.
        assert_eq!(started.len(), runs, "execs reported");
        assert_eq!(exited.len(), runs, "exits reported");
        // How many still showed their exe and command line in /proc when read depends on how
        // soon the reader runs, so on how loaded the machine is (other tests run beside this
        // one): that figure is measured by bench/host.sh against the 99% goal, not asserted
        // here. Here: as root (real-time priority) nearly all, without it most.
        eprintln!("{complete} of {runs} short-lived processes reported with exe and command line");
        let goal = if unsafe { libc::geteuid() } == 0 {
            90
        } else {
            75
        };
        assert!(
            complete * 100 >= runs * goal,
            "{complete} of {runs} complete, goal {goal}%"
        );
    }
}
