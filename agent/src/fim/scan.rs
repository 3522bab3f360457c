//! Scanning: walk the configured roots (never following symbolic links), apply include and
//! exclude globs, and record each file's metadata and SHA-256, with a byte-rate limit on
//! hashing and a bound on the size of files hashed.
//!
//! Walking and hashing are separate: the walk lists files with their metadata, then `threads`
//! workers hash them. Special files (FIFOs, sockets, devices) are recorded but never opened:
//! opening a FIFO would block.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use globset::{Glob, GlobSet, GlobSetBuilder};
use lindi_shared::proto::FileState;

use super::baseline::{Baseline, Entry};
use crate::sensors::proc_connector::sha256_reader;

/// One monitored root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Root {
    pub path: PathBuf,
    pub recursive: bool,
}

/// What to scan and how.
#[derive(Clone, Debug)]
pub struct ScanSpec {
    pub roots: Vec<Root>,
    /// Files must match one of these (all files when empty). Matched on the full path.
    pub include: GlobSet,
    pub include_empty: bool,
    /// Files and directories matching one of these are skipped. Matched on the full path.
    pub exclude: GlobSet,
    /// Never scanned or watched, whatever the globs say (the agent's state directory).
    pub never: Vec<PathBuf>,
    /// Larger files are recorded without a hash. Default 64 MiB.
    pub max_file_bytes: u64,
    /// Most bytes hashed per second over a scan; 0 for no limit.
    pub hash_rate_bytes_per_sec: u64,
    /// Hashing threads for a full scan.
    pub threads: usize,
}

/// Build a glob set; an invalid pattern is an error naming it.
pub fn globs(patterns: &[String]) -> Result<GlobSet, String> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(Glob::new(p).map_err(|e| format!("glob {p:?}: {e}"))?);
    }
    b.build().map_err(|e| e.to_string())
}

/// Counters of one scan.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanStats {
    pub files: u64,
    pub dirs: u64,
    pub bytes_hashed: u64,
    pub unreadable: u64,
    pub vanished: u64,
    pub too_large: u64,
    pub excluded: u64,
    pub non_utf8_paths: u64,
}

pub struct ScanResult {
    pub baseline: Baseline,
    /// Every directory walked (the watcher watches these).
    pub dirs: Vec<PathBuf>,
    pub stats: ScanStats,
}

fn mtime_ns(m: &std::fs::Metadata) -> i64 {
    m.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(m.mtime_nsec())
}

fn meta_state(m: &std::fs::Metadata) -> FileState {
    FileState {
        size: m.len(),
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        mtime_ns: mtime_ns(m),
        inode: m.ino(),
        ..Default::default()
    }
}

struct RateLimit {
    start: Instant,
    bytes: AtomicU64,
    per_sec: u64,
}

impl RateLimit {
    fn account(&self, n: u64) {
        let total = self.bytes.fetch_add(n, Ordering::Relaxed) + n;
        if self.per_sec == 0 {
            return;
        }
        let due = Duration::from_secs_f64(total as f64 / self.per_sec as f64);
        let elapsed = self.start.elapsed();
        if due > elapsed {
            std::thread::sleep(due - elapsed);
        }
    }
}

impl ScanSpec {
    /// Whether `path` (a file, or with `is_dir` a directory) is monitored.
    pub fn is_monitored(&self, path: &Path, is_dir: bool) -> bool {
        if self.never.iter().any(|n| path.starts_with(n)) {
            return false;
        }
        let under_root = self.roots.iter().any(|r| {
            path == r.path
                || (path.starts_with(&r.path)
                    && (r.recursive || path.parent() == Some(r.path.as_path())))
        });
        if !under_root || self.exclude.is_match(path) {
            return false;
        }
        is_dir || self.include_empty || self.include.is_match(path)
    }

    /// The current state of one path, or `None` if it does not exist (or is not monitored).
    pub fn state_of(&self, path: &Path) -> Option<FileState> {
        let meta = std::fs::symlink_metadata(path).ok()?;
        if meta.is_dir() || !self.is_monitored(path, false) {
            return None;
        }
        let limit = RateLimit {
            start: Instant::now(),
            bytes: AtomicU64::new(0),
            per_sec: 0,
        };
        let mut stats = ScanStats::default();
        self.file_state(path, &meta, &limit, &mut stats)
    }

    fn file_state(
        &self,
        path: &Path,
        meta: &std::fs::Metadata,
        limit: &RateLimit,
        stats: &mut ScanStats,
    ) -> Option<FileState> {
        let ft = meta.file_type();
        let mut state = meta_state(meta);
        if ft.is_symlink() {
            state.link_target = std::fs::read_link(path)
                .map(|t| t.to_string_lossy().into_owned())
                .unwrap_or_default();
            state.hash_skipped = "symlink".into();
            return Some(state);
        }
        if ft.is_fifo() || ft.is_socket() || ft.is_block_device() || ft.is_char_device() {
            state.hash_skipped = "special".into();
            return Some(state);
        }
        if meta.len() > self.max_file_bytes {
            stats.too_large += 1;
            state.hash_skipped = "too_large".into();
            return Some(state);
        }
        // What is at the path may have changed since the lstat: open it safely, hash only a
        // regular file.
        let file = match crate::regular_file::open_regular_file(path) {
            Ok(Some(f)) => f,
            Ok(None) => {
                state.hash_skipped = "special".into();
                return Some(state);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                stats.vanished += 1;
                return None;
            }
            Err(_) => {
                stats.unreadable += 1;
                state.hash_skipped = "unreadable".into();
                return Some(state);
            }
        };
        // Metadata of what was opened, so hash and metadata describe the same file.
        if let Ok(m) = file.metadata() {
            state = meta_state(&m);
        }
        let size = state.size;
        match sha256_reader(std::io::Read::take(&file, self.max_file_bytes)) {
            Some(h) => {
                state.sha256 = h;
                stats.bytes_hashed += size;
                limit.account(size);
            }
            None => {
                stats.unreadable += 1;
                state.hash_skipped = "unreadable".into();
            }
        }
        Some(state)
    }

    /// Scan every root.
    pub fn scan(&self) -> ScanResult {
        let roots: Vec<Root> = self.roots.clone();
        self.scan_roots(&roots)
    }

    /// Scan one directory's subtree (as far as the roots say it is monitored).
    pub fn scan_subtree(&self, dir: &Path) -> ScanResult {
        let recursive = self
            .roots
            .iter()
            .any(|r| dir.starts_with(&r.path) && (r.recursive || dir == r.path));
        self.scan_roots(&[Root {
            path: dir.to_path_buf(),
            recursive,
        }])
    }

    fn scan_roots(&self, roots: &[Root]) -> ScanResult {
        let mut stats = ScanStats::default();
        let mut dirs = vec![];
        // Paths only: metadata is read again when each file is hashed (a stat is cheaper than
        // holding a Metadata per file of a million-file tree).
        let mut files: Vec<PathBuf> = vec![];
        for root in roots {
            let Ok(meta) = std::fs::symlink_metadata(&root.path) else {
                stats.vanished += 1;
                continue;
            };
            if !meta.is_dir() {
                if self.is_monitored(&root.path, false) {
                    files.push(root.path.clone());
                    // A single file is watched through its directory (its siblings are not
                    // monitored: is_monitored filters them).
                    if let Some(parent) = root.path.parent() {
                        dirs.push(parent.to_path_buf());
                    }
                }
                continue;
            }
            let mut stack = vec![root.path.clone()];
            while let Some(dir) = stack.pop() {
                if !self.is_monitored(&dir, true) {
                    stats.excluded += 1;
                    continue;
                }
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        stats.vanished += 1;
                        continue;
                    }
                    Err(_) => {
                        stats.unreadable += 1;
                        continue;
                    }
                };
                stats.dirs += 1;
                dirs.push(dir.clone());
                for entry in entries.flatten() {
                    let path = entry.path();
                    if path.to_str().is_none() {
                        stats.non_utf8_paths += 1;
                    }
                    // The directory entry's type needs no stat (symbolic links are not followed).
                    let Ok(ft) = entry.file_type() else {
                        stats.vanished += 1;
                        continue;
                    };
                    if ft.is_dir() {
                        if root.recursive {
                            stack.push(path);
                        }
                    } else if self.is_monitored(&path, false) {
                        files.push(path);
                    } else {
                        stats.excluded += 1;
                    }
                }
            }
        }
        let limit = RateLimit {
            start: Instant::now(),
            bytes: AtomicU64::new(0),
            per_sec: self.hash_rate_bytes_per_sec,
        };
        // Files are hashed in chunks pulled by the workers; each chunk's results keep their
        // order so they pair back with `files` without holding a second copy of every path.
        const CHUNK: usize = 4096;
        let next_chunk = AtomicUsize::new(0);
        let chunks: Mutex<Vec<(usize, Vec<Option<Entry>>)>> = Mutex::new(vec![]);
        let total = Mutex::new(ScanStats::default());
        std::thread::scope(|s| {
            for _ in 0..self.threads.max(1) {
                s.spawn(|| {
                    let mut st = ScanStats::default();
                    loop {
                        let c = next_chunk.fetch_add(1, Ordering::Relaxed);
                        let Some(part) = files.chunks(CHUNK).nth(c) else {
                            break;
                        };
                        let out: Vec<Option<Entry>> = part
                            .iter()
                            .map(|path| {
                                let Ok(meta) = std::fs::symlink_metadata(path) else {
                                    st.vanished += 1;
                                    return None;
                                };
                                self.file_state(path, &meta, &limit, &mut st)
                                    .map(|state| Entry::from(&state))
                            })
                            .collect();
                        chunks
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push((c, out));
                    }
                    let mut t = total.lock().unwrap_or_else(|p| p.into_inner());
                    t.bytes_hashed += st.bytes_hashed;
                    t.unreadable += st.unreadable;
                    t.vanished += st.vanished;
                    t.too_large += st.too_large;
                });
            }
        });
        let t = total.into_inner().unwrap_or_else(|p| p.into_inner());
        stats.bytes_hashed += t.bytes_hashed;
        stats.unreadable += t.unreadable;
        stats.vanished += t.vanished;
        stats.too_large += t.too_large;
        let mut chunks = chunks.into_inner().unwrap_or_else(|p| p.into_inner());
        chunks.sort_by_key(|(c, _)| *c);
        let mut baseline = Baseline::default();
        let entries = chunks.into_iter().flat_map(|(_, v)| v);
        for (path, entry) in files.into_iter().zip(entries) {
            if let Some(e) = entry {
                baseline.insert(path, e);
            }
        }
        stats.files = baseline.len() as u64;
        ScanResult {
            baseline,
            dirs,
            stats,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    fn spec(root: &Path, exclude: &[&str]) -> ScanSpec {
        ScanSpec {
            roots: vec![Root {
                path: root.to_path_buf(),
                recursive: true,
            }],
            include: globs(&[]).unwrap(),
            include_empty: true,
            exclude: globs(&exclude.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap(),
            never: vec![],
            max_file_bytes: 1 << 20,
            hash_rate_bytes_per_sec: 0,
            threads: 2,
        }
    }

    #[test]
    fn scans_hashes_and_survives_odd_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::write(root.join("a.txt"), b"abc").unwrap();
        std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
        std::fs::write(root.join("sub/deeper/b.bin"), vec![0u8; 10]).unwrap();
        std::fs::write(root.join("big"), vec![1u8; 2 << 20]).unwrap();
        std::fs::write(root.join("skip.swp"), b"x").unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        std::os::unix::fs::symlink(root, root.join("sub/up")).unwrap();
        let fifo = root.join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        std::fs::write(root.join(std::ffi::OsStr::from_bytes(b"bad\xffname")), b"z").unwrap();
        let r = spec(root, &["**/*.swp"]).scan();
        let b = &r.baseline;
        assert_eq!(
            b.get(&root.join("a.txt")).unwrap().sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(b.get(&root.join("sub/deeper/b.bin")).is_some());
        assert_eq!(b.get(&root.join("big")).unwrap().hash_skipped, "too_large");
        assert!(b.get(&root.join("skip.swp")).is_none());
        assert_eq!(b.get(&root.join("loop")).unwrap().link_target, "loop");
        assert_eq!(b.get(&root.join("sub/up")).unwrap().hash_skipped, "symlink");
        assert_eq!(b.get(&fifo).unwrap().hash_skipped, "special");
        assert_eq!(r.stats.non_utf8_paths, 1);
        assert_eq!(r.stats.too_large, 1);
        assert_eq!(r.dirs.len(), 3);
    }

    #[test]
    fn unreadable_files_are_recorded_without_a_hash() {
        if unsafe { libc::geteuid() } == 0 {
            eprintln!("skipping: root reads every file");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret");
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o000)).unwrap();
        let r = spec(dir.path(), &[]).scan();
        assert_eq!(r.baseline.get(&f).unwrap().hash_skipped, "unreadable");
        assert_eq!(r.stats.unreadable, 1);
    }

    #[test]
    fn monitored_paths_respect_roots_globs_and_never() {
        let mut s = spec(Path::new("/etc"), &["**/*.bak"]);
        s.never = vec![PathBuf::from("/etc/lindi-state")];
        assert!(s.is_monitored(Path::new("/etc/passwd"), false));
        assert!(s.is_monitored(Path::new("/etc/ssh/sshd_config"), false));
        assert!(!s.is_monitored(Path::new("/etc/x.bak"), false));
        assert!(!s.is_monitored(Path::new("/usr/bin/ls"), false));
        assert!(!s.is_monitored(Path::new("/etc/lindi-state/spool/x"), false));
        s.roots[0].recursive = false;
        assert!(!s.is_monitored(Path::new("/etc/ssh/sshd_config"), false));
        s.include = globs(&["**/*.conf".to_string()]).unwrap();
        s.include_empty = false;
        assert!(s.is_monitored(Path::new("/etc/a.conf"), false));
        assert!(!s.is_monitored(Path::new("/etc/passwd"), false));
        assert!(globs(&["[".to_string()]).is_err());
    }
}
