//! Process sensor: a snapshot of running processes at start, then a start event for every new
//! process and an exit event for every process that ends.
//!
//! Two modes, chosen by `sensors.process.mode`:
//! - `connector`: real time from the kernel's process connector ([`super::proc_connector`]),
//!   which sees processes that live for a millisecond. Needs CAP_NET_ADMIN.
//! - `poll`: sysinfo polling every `poll_interval`; a process that starts and ends between two
//!   polls is not seen.
//!
//! `auto` (the default) uses the connector and falls back to polling where it is unavailable,
//! saying so in the sensor's health detail. Processes are keyed by (pid, start time): pids are
//! reused.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lindi_shared::proto::{ProcessAction, ProcessEvent, event};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};
use tokio::sync::watch;

use super::{EventSink, now_ns};

type Key = (u32, u64);

/// User names from /etc/passwd, read once and again when a uid is unknown (at most once a
/// minute, so a flood of unknown uids does not reread the file for each).
#[derive(Default)]
pub struct UserNames {
    by_uid: HashMap<u32, String>,
    loaded_at: Option<std::time::Instant>,
}

impl UserNames {
    fn load(&mut self) {
        self.loaded_at = Some(std::time::Instant::now());
        if let Ok(text) = std::fs::read_to_string("/etc/passwd") {
            for line in text.lines() {
                let mut f = line.split(':');
                if let (Some(name), _, Some(uid)) = (f.next(), f.next(), f.next())
                    && let Ok(uid) = uid.parse()
                {
                    self.by_uid.insert(uid, name.to_string());
                }
            }
        }
    }

    pub fn name(&mut self, uid: u32) -> String {
        let stale = self
            .loaded_at
            .is_none_or(|t| t.elapsed() > std::time::Duration::from_secs(60));
        if !self.by_uid.contains_key(&uid) && stale {
            self.load();
        }
        self.by_uid.get(&uid).cloned().unwrap_or_default()
    }
}

/// Most bytes of command line an event carries; a longer one is cut and marked partial.
pub const MAX_CMDLINE_BYTES: usize = 64 << 10;
/// Most bytes of command line remembered per process until its exit.
const REMEMBERED_CMDLINE_BYTES: usize = 1024;

/// Cut an event's command line to `max` bytes in all (marking it partial when cut), so that
/// no process, however it was started, makes an event or a batch arbitrarily large.
pub fn cap_cmdline(ev: &mut ProcessEvent, max: usize) {
    let mut used = 0;
    let mut keep = 0;
    for arg in &mut ev.cmdline {
        if used + arg.len() > max {
            let mut cut = max - used;
            while !arg.is_char_boundary(cut) {
                cut -= 1;
            }
            arg.truncate(cut);
            keep += 1;
            ev.partial = true;
            break;
        }
        used += arg.len();
        keep += 1;
    }
    if keep < ev.cmdline.len() {
        ev.cmdline.truncate(keep);
        ev.partial = true;
    }
}

/// What is kept of a process between its start and its exit.
pub fn remembered(ev: &ProcessEvent) -> ProcessEvent {
    let mut r = ev.clone();
    cap_cmdline(&mut r, REMEMBERED_CMDLINE_BYTES);
    r
}

fn refresh_kind() -> ProcessRefreshKind {
    ProcessRefreshKind::nothing()
        .without_tasks()
        .with_exe(UpdateKind::OnlyIfNotSet)
        .with_cmd(UpdateKind::OnlyIfNotSet)
        .with_cwd(UpdateKind::OnlyIfNotSet)
        .with_user(UpdateKind::OnlyIfNotSet)
}

fn describe(
    sys: &System,
    pid: Pid,
    users: &mut UserNames,
    action: ProcessAction,
) -> Option<ProcessEvent> {
    let p = sys.process(pid)?;
    let uid = p.user_id().map(|u| **u).unwrap_or(0);
    let ppid = p.parent().map(|p| p.as_u32()).unwrap_or(0);
    let parent = p.parent().and_then(|pp| sys.process(pp));
    let parent_exe = parent
        .and_then(|pp| pp.exe())
        .map(|e| e.display().to_string())
        .unwrap_or_default();
    let mut parent_cmdline: String = parent
        .map(|pp| {
            pp.cmd()
                .iter()
                .map(|a| a.to_string_lossy())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    if parent_cmdline.len() > 4096 {
        let mut cut = 4096;
        while !parent_cmdline.is_char_boundary(cut) {
            cut -= 1;
        }
        parent_cmdline.truncate(cut);
    }
    let exe = p.exe().map(|e| e.display().to_string()).unwrap_or_default();
    let mut ev = ProcessEvent {
        action: action as i32,
        pid: pid.as_u32(),
        ppid,
        name: p.name().to_string_lossy().into_owned(),
        partial: exe.is_empty() && p.cmd().is_empty(),
        exe,
        cmdline: p
            .cmd()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect(),
        cwd: p.cwd().map(|c| c.display().to_string()).unwrap_or_default(),
        uid,
        user: if p.user_id().is_some() {
            users.name(uid)
        } else {
            String::new()
        },
        start_time_s: p.start_time(),
        parent_exe,
        parent_cmdline,
        ..Default::default()
    };
    cap_cmdline(&mut ev, MAX_CMDLINE_BYTES);
    Some(ev)
}

/// How the process sensor learns about processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProcessMode {
    /// The process connector where available, else polling.
    Auto,
    /// Only the process connector; the sensor fails if it is unavailable.
    Connector,
    /// Only polling.
    Poll,
}

/// Why exe paths, hashes and working directories of other users' processes stay empty, if
/// they do: reading `/proc/PID/exe` of a process another user owns needs CAP_SYS_PTRACE (or
/// root), which the packaged service does not hold by default. Probed on PID 1 (root's).
pub fn other_users_exe_blind() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return None;
    }
    match std::fs::read_link("/proc/1/exe") {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Some(
            "exe, exe_sha256 and cwd of other users' processes are empty: reading \
             /proc/PID/exe needs CAP_SYS_PTRACE (see docs/process-exe.md)"
                .to_string(),
        ),
        _ => None,
    }
}

/// The sensor's state once it runs: `running` with `how`, or `degraded` when it cannot see
/// other users' executables.
fn set_running(sink: &EventSink, how: String) {
    match other_users_exe_blind() {
        Some(why) => {
            tracing::warn!("process sensor: {why}");
            sink.stats.set_state("degraded", format!("{how}; {why}"));
        }
        None => sink.stats.set_state("running", how),
    }
}

pub async fn run(
    sink: EventSink,
    mode: ProcessMode,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    if mode != ProcessMode::Poll {
        match super::proc_connector::ProcConnector::open() {
            Ok(connector) => {
                set_running(&sink, "process connector (real time)".into());
                let flag = Arc::new(AtomicBool::new(false));
                let reader = {
                    let sink = sink.clone();
                    let flag = flag.clone();
                    crate::realtime::spawn("lindi-proc-connector", move || {
                        super::proc_connector::read_loop(connector, sink, flag)
                    })
                };
                let reader = match reader {
                    Ok((r, placement)) => {
                        tracing::debug!("process connector reader: {placement:?}");
                        r
                    }
                    Err(e) => {
                        sink.stats
                            .set_state("failed", format!("cannot start the reader thread: {e}"));
                        return;
                    }
                };
                // Subscribed first, then the snapshot: a process that starts in between is
                // reported twice (snapshot and start) rather than never.
                let snapshot_sink = sink.clone();
                let _ =
                    tokio::task::spawn_blocking(move || snapshot_from_proc(&snapshot_sink)).await;
                let _ = stop.changed().await;
                flag.store(true, Ordering::Relaxed);
                let _ = tokio::task::spawn_blocking(move || reader.join()).await;
                return;
            }
            Err(e) if mode == ProcessMode::Connector => {
                sink.stats.errors.fetch_add(1, Ordering::Relaxed);
                sink.stats
                    .set_state("failed", format!("process connector unavailable: {e}"));
                tracing::error!("process sensor: process connector unavailable: {e}");
                return;
            }
            Err(e) => {
                tracing::warn!(
                    "process sensor: process connector unavailable ({e}); polling instead"
                );
                sink.stats.set_state(
                    "degraded",
                    format!("polling every {interval:?}: process connector unavailable ({e})"),
                );
                return poll(sink, interval, stop, true).await;
            }
        }
    }
    poll(sink, interval, stop, false).await
}

/// Every process in /proc now, as snapshot events.
fn snapshot_from_proc(sink: &EventSink) {
    let mut reader = super::proc_connector::ProcReader::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        sink.stats.errors.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let now = now_ns();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let ev = reader.describe(pid, ProcessAction::Snapshot);
        // Kernel threads have no exe and no command line: not processes users run.
        if ev.exe.is_empty() && ev.cmdline.is_empty() {
            continue;
        }
        sink.emit(now, event::Kind::Process(ev));
    }
}

async fn poll(
    sink: EventSink,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
    degraded: bool,
) {
    let mut sys = match System::new() {
        Ok(s) => s,
        Err(e) => {
            sink.stats
                .errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            sink.stats
                .set_state("failed", format!("cannot read the process table: {e}"));
            tracing::error!("process sensor: cannot read the process table: {e}");
            return;
        }
    };
    let mut users = UserNames::default();
    let mut known: HashMap<Key, ProcessEvent> = HashMap::new();
    let mut first = true;
    if !degraded {
        set_running(&sink, format!("polling every {interval:?}"));
    }
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        // Reading all of /proc is blocking work.
        crate::run_blocking(|| {
            sys.refresh_processes_specifics(ProcessesToUpdate::All, true, refresh_kind());
            let now = now_ns();
            let mut seen: HashMap<Key, ()> = HashMap::with_capacity(known.len() + 16);
            let action = if first {
                ProcessAction::Snapshot
            } else {
                ProcessAction::Start
            };
            let pids: Vec<Pid> = sys.processes().keys().copied().collect();
            for pid in pids {
                let Some(p) = sys.process(pid) else { continue };
                // Kernel threads have no command line and no exe; they are not processes users run.
                if p.thread_kind().is_some() {
                    continue;
                }
                let key = (pid.as_u32(), p.start_time());
                seen.insert(key, ());
                if known.contains_key(&key) {
                    continue;
                }
                if let Some(ev) = describe(&sys, pid, &mut users, action) {
                    known.insert(key, remembered(&ev));
                    sink.emit(now, event::Kind::Process(ev));
                }
            }
            let gone: Vec<Key> = known
                .keys()
                .filter(|k| !seen.contains_key(k))
                .copied()
                .collect();
            for key in gone {
                if let Some(mut ev) = known.remove(&key) {
                    ev.action = ProcessAction::Exit as i32;
                    sink.emit(now, event::Kind::Process(ev));
                }
            }
        });
        first = false;
        if sink.is_closed() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_command_lines_are_cut_on_char_boundaries() {
        let mut ev = ProcessEvent {
            cmdline: vec!["ab".into(), "é".repeat(100), "tail".into()],
            ..Default::default()
        };
        cap_cmdline(&mut ev, 51);
        assert!(ev.partial);
        assert_eq!(ev.cmdline.len(), 2);
        assert_eq!(ev.cmdline[1].len(), 48, "cut to whole characters");
        let mut short = ProcessEvent {
            cmdline: vec!["ls".into(), "-l".into()],
            ..Default::default()
        };
        cap_cmdline(&mut short, 100);
        assert!(!short.partial);
        assert_eq!(short.cmdline.len(), 2);
        assert_eq!(remembered(&short), short);
    }
}
