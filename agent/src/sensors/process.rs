//! Process sensor by polling (sysinfo): a snapshot of running processes at start, then a start
//! event for every new process and an exit event for every process that went, each poll.
//!
//! Processes are keyed by (pid, start time): pids are reused. A process that started and ended
//! between two polls is not seen; the host-sensors issue replaces polling with the kernel's
//! process connector. Health reports `polling` so the collector knows which mode runs.

use std::collections::HashMap;
use std::time::Duration;

use lindi_shared::proto::{ProcessAction, ProcessEvent, event};
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System, UpdateKind};
use tokio::sync::watch;

use super::{EventSink, now_ns};

type Key = (u32, u64);

/// User names from /etc/passwd, read once and again when a uid is unknown.
#[derive(Default)]
struct UserNames {
    by_uid: HashMap<u32, String>,
}

impl UserNames {
    fn load(&mut self) {
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

    fn name(&mut self, uid: u32) -> String {
        if !self.by_uid.contains_key(&uid) {
            self.load();
        }
        self.by_uid.get(&uid).cloned().unwrap_or_default()
    }
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
    let parent_exe = p
        .parent()
        .and_then(|pp| sys.process(pp))
        .and_then(|pp| pp.exe())
        .map(|e| e.display().to_string())
        .unwrap_or_default();
    let exe = p.exe().map(|e| e.display().to_string()).unwrap_or_default();
    Some(ProcessEvent {
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
        ..Default::default()
    })
}

pub async fn run(sink: EventSink, interval: Duration, mut stop: watch::Receiver<bool>) {
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
    sink.stats.set_state("running", "polling");
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
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
                known.insert(key, ev.clone());
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
        first = false;
        if sink.is_closed() {
            return;
        }
    }
}
