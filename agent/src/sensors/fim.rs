//! File integrity sensor: a persisted baseline, real-time changes through inotify (notify, one
//! non-recursive watch per directory), debounced so one save is one event, periodic full
//! rescans, and scheduled scans of subtrees that could not be watched.
//!
//! Life of the sensor:
//! 1. Load the baseline from the state directory, scan, and report what changed while the
//!    agent was not running (`detected_by = startup`). Without a baseline, the first scan is
//!    the baseline and reports nothing.
//! 2. Watch every scanned directory. A directory that cannot be watched (the kernel's or our
//!    `max_watches` limit) is reported with its subtree, which falls back to a scan every
//!    `fallback_rescan_interval`.
//! 3. Each path touched by an inotify event is looked at again once it has been quiet for
//!    `debounce`; renames inside the watched area are one `renamed` event.
//! 4. A full rescan every `rescan_interval`, and at once when the kernel's event queue (or
//!    ours) overflowed.
//! 5. The baseline is saved after scans and, when changed, every few seconds.
//!
//! Hashing and scanning run on blocking threads, never on the async workers.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lindi_shared::proto::{FileEvent, event};
use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use super::{EventSink, now_ns};
use crate::fim::baseline::Baseline;
use crate::fim::scan::ScanSpec;
use crate::fim::{Detection, compare, file_event};

/// Settings of the FIM sensor.
#[derive(Clone, Debug)]
pub struct FimSettings {
    pub spec: ScanSpec,
    pub baseline_path: PathBuf,
    pub rescan_interval: Duration,
    pub fallback_rescan_interval: Duration,
    pub debounce: Duration,
    pub max_watches: usize,
}

/// Events per inotify channel before it counts as overflowed (then: a full rescan).
const WATCH_CHANNEL: usize = 16_384;
const PERSIST_EVERY: Duration = Duration::from_secs(10);

/// Every difference between two baselines, limited to `scope` when given.
pub fn diff(
    old: &Baseline,
    new: &Baseline,
    scope: Option<&Path>,
    how: Detection,
) -> Vec<FileEvent> {
    let mut out = vec![];
    let in_scope = |p: &Path| scope.is_none_or(|s| p.starts_with(s));
    for (path, before) in old.iter().filter(|(p, _)| in_scope(p)) {
        if old.same(new, path) {
            continue;
        }
        if let Some(e) = compare(path, Some(&before), new.get(path).as_ref(), how) {
            out.push(e);
        }
    }
    for (path, after) in new.iter().filter(|(p, _)| in_scope(p)) {
        if !old.contains(path)
            && let Some(e) = compare(path, None, Some(&after), how)
        {
            out.push(e);
        }
    }
    out
}

struct State {
    settings: FimSettings,
    baseline: Baseline,
    dirty: bool,
}

type Shared = Arc<Mutex<State>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// Watches and what could not be watched.
struct Watches {
    watcher: notify::RecommendedWatcher,
    watched: HashSet<PathBuf>,
    max: usize,
    /// Roots of subtrees that fall back to scheduled scans.
    unwatched: BTreeSet<PathBuf>,
}

impl Watches {
    /// Watch `dirs`; returns the directories that could not be watched.
    fn add(&mut self, dirs: &[PathBuf]) -> Vec<PathBuf> {
        let mut failed = vec![];
        for d in dirs {
            if self.watched.contains(d) || self.unwatched.iter().any(|u| d.starts_with(u)) {
                continue;
            }
            if self.watched.len() >= self.max {
                failed.push(d.clone());
                continue;
            }
            match self.watcher.watch(d, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched.insert(d.clone());
                }
                Err(e) => match e.kind {
                    notify::ErrorKind::MaxFilesWatch => failed.push(d.clone()),
                    notify::ErrorKind::Io(ref io) if io.raw_os_error() == Some(libc::ENOSPC) => {
                        failed.push(d.clone())
                    }
                    // Gone already, or unreadable: its parent's events still cover its name.
                    _ => {}
                },
            }
        }
        for d in &failed {
            // Keep only the top of each failed subtree.
            if !self.unwatched.iter().any(|u| d.starts_with(u)) {
                self.unwatched.insert(d.clone());
            }
        }
        failed
    }

    /// Forget `dir` and every watched directory under it (it was deleted or moved away).
    fn forget(&mut self, dir: &Path) {
        let gone: Vec<PathBuf> = self
            .watched
            .iter()
            .filter(|w| w.starts_with(dir))
            .cloned()
            .collect();
        for w in gone {
            self.watched.remove(&w);
            let _ = self.watcher.unwatch(&w);
        }
        self.unwatched.retain(|u| !u.starts_with(dir));
    }
}

fn emit_all(sink: &EventSink, events: Vec<FileEvent>) {
    let now = now_ns();
    for e in events {
        sink.emit(now, event::Kind::File(e));
    }
}

fn report_unwatched(sink: &EventSink, watches: &Watches, fallback: Duration) {
    if let Some(first) = watches.unwatched.iter().next() {
        let detail = format!(
            "{} subtree(s) could not be watched (inotify watches exhausted), e.g. {}; they are scanned every {}s",
            watches.unwatched.len(),
            first.display(),
            fallback.as_secs()
        );
        tracing::warn!("fim: {detail}");
        sink.stats.set_state("degraded", detail);
    }
}

pub async fn run(sink: EventSink, settings: FimSettings, mut stop: watch::Receiver<bool>) {
    sink.stats.set_state("starting", "building the baseline");
    let shared: Shared = Arc::new(Mutex::new(State {
        settings: settings.clone(),
        baseline: Baseline::default(),
        dirty: false,
    }));
    // 1. Baseline and changes while the agent was down.
    let start = {
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || {
            let mut st = lock(&shared);
            let old = match Baseline::load(&st.settings.baseline_path) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!("fim: {e}; building a new baseline");
                    None
                }
            };
            let scan = st.settings.spec.scan();
            let events = match &old {
                Some(old) => diff(old, &scan.baseline, None, Detection::Startup),
                None => vec![],
            };
            st.baseline = scan.baseline;
            if let Err(e) = st.baseline.save(&st.settings.baseline_path) {
                tracing::error!("fim: cannot save the baseline: {e}");
            }
            (events, scan.dirs, scan.stats)
        })
        .await
    };
    let Ok((events, dirs, stats)) = start else {
        sink.stats.set_state("failed", "the initial scan failed");
        return;
    };
    emit_all(&sink, events);
    // 2. Watches.
    let (tx, mut rx) = mpsc::channel::<notify::Result<notify::Event>>(WATCH_CHANNEL);
    let overflowed = Arc::new(AtomicBool::new(false));
    let watcher = {
        let overflowed = overflowed.clone();
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // Opens and reads (every exec opens files under /usr/bin) change nothing: drop
            // them here, before they can fill the channel. A close after writing stays.
            if let Ok(ev) = &res
                && let EventKind::Access(kind) = ev.kind
                && kind != AccessKind::Close(AccessMode::Write)
            {
                return;
            }
            if tx.try_send(res).is_err() {
                overflowed.store(true, Ordering::Relaxed);
            }
        })
    };
    let watcher = match watcher {
        Ok(w) => w,
        Err(e) => {
            sink.stats.set_state(
                "degraded",
                format!(
                    "no inotify ({e}); scanning every {}s only",
                    settings.rescan_interval.as_secs()
                ),
            );
            return scans_only(sink, shared, settings, stop).await;
        }
    };
    let mut watches = Watches {
        watcher,
        watched: HashSet::new(),
        max: settings.max_watches,
        unwatched: BTreeSet::new(),
    };
    watches.add(&dirs);
    sink.stats.set_state(
        "running",
        format!(
            "{} files in the baseline, {} directories watched",
            stats.files,
            watches.watched.len()
        ),
    );
    report_unwatched(&sink, &watches, settings.fallback_rescan_interval);

    // 3..5. Events, debounce, rescans, persistence.
    // Path -> (first event, last event) since it was last looked at.
    let mut pending: HashMap<PathBuf, (Instant, Instant)> = HashMap::new();
    // A path that never goes quiet is looked at anyway after this long.
    let max_delay = (settings.debounce * 5).max(Duration::from_secs(2));
    let mut renames: Vec<(PathBuf, PathBuf, Instant)> = vec![];
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_rescan = Instant::now() + settings.rescan_interval;
    let mut next_fallback = Instant::now() + settings.fallback_rescan_interval;
    let mut next_persist = Instant::now() + PERSIST_EVERY;
    loop {
        tokio::select! {
            got = rx.recv() => {
                let Some(res) = got else { break };
                match res {
                    Ok(ev) => note_event(ev, &mut pending, &mut renames, &overflowed),
                    Err(e) => {
                        sink.stats.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!("fim: watcher error: {e}");
                    }
                }
                continue;
            }
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        let now = Instant::now();
        if overflowed.swap(false, Ordering::Relaxed) {
            tracing::warn!("fim: the inotify event queue overflowed; rescanning everything");
            pending.clear();
            renames.clear();
            next_rescan = now;
        }
        if now >= next_rescan {
            next_rescan = now + settings.rescan_interval;
            // A full scan can take minutes on a large tree: keep draining inotify meanwhile so
            // the queue does not overflow into yet another rescan. What arrives stays pending
            // and is looked at after the scan.
            let scan = rescan_collect(&shared, None, Detection::Rescan);
            tokio::pin!(scan);
            let (events, dirs) = loop {
                tokio::select! {
                    done = &mut scan => break done,
                    got = rx.recv() => match got {
                        Some(Ok(ev)) => note_event(ev, &mut pending, &mut renames, &overflowed),
                        Some(Err(_)) => {
                            sink.stats.errors.fetch_add(1, Ordering::Relaxed);
                        }
                        None => break (&mut scan).await,
                    },
                }
            };
            emit_all(&sink, events);
            watches.add(&dirs);
            report_unwatched(&sink, &watches, settings.fallback_rescan_interval);
            continue;
        }
        if now >= next_fallback {
            next_fallback = now + settings.fallback_rescan_interval;
            let subtrees: Vec<PathBuf> = watches.unwatched.iter().cloned().collect();
            for dir in subtrees {
                rescan(&sink, &shared, Some(dir), Detection::Rescan).await;
            }
        }
        let quiet = |t: &Instant| now.duration_since(*t) >= settings.debounce;
        let ready_renames: Vec<(PathBuf, PathBuf)> = {
            let (ready, waiting): (Vec<_>, Vec<_>) =
                renames.drain(..).partition(|(_, _, t)| quiet(t));
            renames = waiting;
            ready.into_iter().map(|(a, b, _)| (a, b)).collect()
        };
        let ready: Vec<PathBuf> = pending
            .iter()
            .filter(|(_, (first, last))| quiet(last) || now.duration_since(*first) >= max_delay)
            .map(|(p, _)| p.clone())
            .collect();
        // Saved on its own clock, whether or not changes keep coming.
        if now >= next_persist {
            next_persist = now + PERSIST_EVERY;
            persist(&shared).await;
        }
        if ready.is_empty() && ready_renames.is_empty() {
            continue;
        }
        for p in &ready {
            pending.remove(p);
        }
        let shared2 = shared.clone();
        let outcome =
            tokio::task::spawn_blocking(move || reconcile(&shared2, ready_renames, ready)).await;
        if let Ok((events, new_dirs, gone_dirs)) = outcome {
            emit_all(&sink, events);
            for d in gone_dirs {
                watches.forget(&d);
            }
            // An event on a directory already watched (a chmod, a touch) is not a new one.
            let new_dirs: Vec<PathBuf> = new_dirs
                .into_iter()
                .filter(|d| !watches.watched.contains(d))
                .collect();
            if !new_dirs.is_empty() {
                // A directory that appeared: watch it first (so nothing written while it is
                // scanned is missed), then scan everything already inside it and watch the
                // directories found there.
                watches.add(&new_dirs);
                let mut all = vec![];
                for d in new_dirs {
                    let (events, dirs) =
                        rescan_collect(&shared, Some(d), Detection::Realtime).await;
                    emit_all(&sink, events);
                    all.extend(dirs);
                }
                watches.add(&all);
                report_unwatched(&sink, &watches, settings.fallback_rescan_interval);
            }
        }
    }
    persist(&shared).await;
}

/// Without inotify: scheduled full scans only.
async fn scans_only(
    sink: EventSink,
    shared: Shared,
    settings: FimSettings,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(settings.rescan_interval) => {}
            _ = stop.changed() => return,
        }
        rescan(&sink, &shared, None, Detection::Rescan).await;
    }
}

fn note_event(
    ev: notify::Event,
    pending: &mut HashMap<PathBuf, (Instant, Instant)>,
    renames: &mut Vec<(PathBuf, PathBuf, Instant)>,
    overflowed: &AtomicBool,
) {
    let now = Instant::now();
    if ev.need_rescan() {
        overflowed.store(true, Ordering::Relaxed);
        return;
    }
    match ev.kind {
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) if ev.paths.len() == 2 => {
            renames.push((ev.paths[0].clone(), ev.paths[1].clone(), now));
        }
        EventKind::Access(_) => {}
        _ => {
            for p in ev.paths {
                pending
                    .entry(p)
                    .and_modify(|(_, last)| *last = now)
                    .or_insert((now, now));
            }
        }
    }
}

/// Look again at settled paths; returns (events, new directories, vanished directories).
fn reconcile(
    shared: &Shared,
    renames: Vec<(PathBuf, PathBuf)>,
    paths: Vec<PathBuf>,
) -> (Vec<FileEvent>, Vec<PathBuf>, Vec<PathBuf>) {
    let mut st = lock(shared);
    let mut events = vec![];
    let mut new_dirs = vec![];
    let mut gone_dirs = vec![];
    let mut done: HashSet<PathBuf> = HashSet::new();
    for (old, new) in renames {
        let before = st.baseline.get(&old);
        let after = st.settings.spec.state_of(&new);
        let old_gone = std::fs::symlink_metadata(&old).is_err();
        match (&before, &after) {
            (Some(b), Some(a)) if old_gone => {
                events.push(file_event(
                    "renamed",
                    &new,
                    Some(&old),
                    Some(b),
                    Some(a),
                    Detection::Realtime,
                ));
                st.baseline.set(&old, None);
                st.baseline.set(&new, after.clone());
                st.dirty = true;
                done.insert(old);
                done.insert(new);
            }
            _ => {
                // Not a plain file rename we track (a directory, or out of scope on one side):
                // look at both paths on their own.
                for p in [old, new] {
                    if !paths.contains(&p) {
                        events.extend(reconcile_one(&mut st, &p, &mut new_dirs, &mut gone_dirs));
                        done.insert(p);
                    }
                }
            }
        }
    }
    for p in paths {
        if !done.contains(&p) {
            events.extend(reconcile_one(&mut st, &p, &mut new_dirs, &mut gone_dirs));
        }
    }
    (events, new_dirs, gone_dirs)
}

fn reconcile_one(
    st: &mut State,
    path: &Path,
    new_dirs: &mut Vec<PathBuf>,
    gone_dirs: &mut Vec<PathBuf>,
) -> Vec<FileEvent> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            if st.settings.spec.is_monitored(path, true) {
                new_dirs.push(path.to_path_buf());
            }
            vec![]
        }
        Ok(_) => {
            let after = st.settings.spec.state_of(path);
            let before = st.baseline.get(path);
            let ev = compare(path, before.as_ref(), after.as_ref(), Detection::Realtime);
            if ev.is_some() {
                st.baseline.set(path, after);
                st.dirty = true;
            }
            ev.into_iter().collect()
        }
        Err(_) => {
            // Gone: a file, or a whole directory moved away or deleted (then everything the
            // baseline knows under it is gone too).
            gone_dirs.push(path.to_path_buf());
            let removed = st.baseline.remove_under(path);
            if !removed.is_empty() {
                st.dirty = true;
            }
            removed
                .iter()
                .filter_map(|(p, before)| compare(p, Some(before), None, Detection::Realtime))
                .collect()
        }
    }
}

/// Scan everything (or one subtree), report differences, take the scan as the baseline there.
async fn rescan(
    sink: &EventSink,
    shared: &Shared,
    subtree: Option<PathBuf>,
    how: Detection,
) -> Vec<PathBuf> {
    let (events, dirs) = rescan_collect(shared, subtree, how).await;
    emit_all(sink, events);
    dirs
}

async fn rescan_collect(
    shared: &Shared,
    subtree: Option<PathBuf>,
    how: Detection,
) -> (Vec<FileEvent>, Vec<PathBuf>) {
    let shared = shared.clone();
    tokio::task::spawn_blocking(move || {
        let spec = lock(&shared).settings.spec.clone();
        // Scan without holding the lock: reconciling other paths goes on meanwhile.
        let scan = match &subtree {
            Some(d) => spec.scan_subtree(d),
            None => spec.scan(),
        };
        let mut st = lock(&shared);
        let events = match &subtree {
            Some(d) => {
                let events = diff(&st.baseline, &scan.baseline, Some(d), how);
                st.baseline.replace_under(d, &scan.baseline);
                events
            }
            None => {
                let events = diff(&st.baseline, &scan.baseline, None, how);
                st.baseline = scan.baseline;
                events
            }
        };
        st.dirty = true;
        (events, scan.dirs)
    })
    .await
    .unwrap_or_default()
}

async fn persist(shared: &Shared) {
    let shared = shared.clone();
    let _ = tokio::task::spawn_blocking(move || {
        let mut st = lock(&shared);
        if st.dirty {
            match st.baseline.save(&st.settings.baseline_path) {
                Ok(()) => st.dirty = false,
                Err(e) => tracing::error!("fim: cannot save the baseline: {e}"),
            }
        }
    })
    .await;
}
