//! File integrity monitoring: what a set of paths looks like (the [`baseline`]), how it is
//! built and compared ([`scan`]), and how one file's change is described ([`compare`]).
//! The real-time watcher is the `fim` sensor (`crate::sensors::fim`); `lindi-agent fim scan`
//! uses the same scanner without a collector.
//!
//! Constraints:
//! 1. Read-only: files are opened for reading and never changed; the agent's own state
//!    directory is never scanned or watched.
//! 2. Symbolic links are recorded (with their target) and never followed, so link loops
//!    cannot trap a scan.
//! 3. Unreadable files, files that vanish mid-scan and paths that are not UTF-8 are counted
//!    and reported, never fatal.

pub mod baseline;
pub mod scan;

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use lindi_shared::proto::{FileEvent, FileState};

/// How a change was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detection {
    Realtime,
    Rescan,
    Startup,
}

impl Detection {
    fn name(self) -> &'static str {
        match self {
            Detection::Realtime => "realtime",
            Detection::Rescan => "rescan",
            Detection::Startup => "startup",
        }
    }
}

/// The event for a path whose state went from `before` to `after`, or `None` if nothing a
/// user cares about changed.
pub fn compare(
    path: &Path,
    before: Option<&FileState>,
    after: Option<&FileState>,
    how: Detection,
) -> Option<FileEvent> {
    let action = match (before, after) {
        (None, None) => return None,
        (None, Some(_)) => "created",
        (Some(_), None) => "deleted",
        (Some(b), Some(a)) => {
            let content = b.sha256 != a.sha256
                || b.size != a.size
                || b.mtime_ns != a.mtime_ns
                || b.inode != a.inode
                || b.link_target != a.link_target
                || (b.mode & 0o170000) != (a.mode & 0o170000);
            let attributes = b.mode != a.mode || b.uid != a.uid || b.gid != a.gid;
            if content {
                "modified"
            } else if attributes {
                "attributes"
            } else {
                return None;
            }
        }
    };
    Some(file_event(action, path, None, before, after, how))
}

/// Build a file event; `old_path` for renames.
pub fn file_event(
    action: &str,
    path: &Path,
    old_path: Option<&Path>,
    before: Option<&FileState>,
    after: Option<&FileState>,
    how: Detection,
) -> FileEvent {
    let raw = path.as_os_str().as_bytes();
    FileEvent {
        action: action.into(),
        path: path.to_string_lossy().into_owned(),
        old_path: old_path
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default(),
        before: before.cloned(),
        after: after.cloned(),
        path_raw: if std::str::from_utf8(raw).is_ok() {
            vec![]
        } else {
            raw.to_vec()
        },
        detected_by: how.name().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(hash: &str, mode: u32) -> FileState {
        FileState {
            sha256: hash.into(),
            size: 3,
            mode: 0o100000 | mode,
            ..Default::default()
        }
    }

    #[test]
    fn changes_are_classified() {
        let p = Path::new("/x");
        let a = st("aa", 0o644);
        assert_eq!(
            compare(p, None, Some(&a), Detection::Realtime)
                .unwrap()
                .action,
            "created"
        );
        assert_eq!(
            compare(p, Some(&a), None, Detection::Realtime)
                .unwrap()
                .action,
            "deleted"
        );
        assert!(compare(p, Some(&a), Some(&a), Detection::Realtime).is_none());
        assert_eq!(
            compare(p, Some(&a), Some(&st("bb", 0o644)), Detection::Rescan)
                .unwrap()
                .action,
            "modified"
        );
        let e = compare(p, Some(&a), Some(&st("aa", 0o755)), Detection::Startup).unwrap();
        assert_eq!(
            (e.action.as_str(), e.detected_by.as_str()),
            ("attributes", "startup")
        );
        assert_eq!(e.before.unwrap().mode & 0o777, 0o644);
        assert_eq!(e.after.unwrap().mode & 0o777, 0o755);
    }

    #[test]
    fn non_utf8_paths_keep_their_bytes() {
        use std::ffi::OsStr;
        let p = Path::new(OsStr::from_bytes(b"/tmp/bad\xff\xfename"));
        let e = file_event("created", p, None, None, None, Detection::Realtime);
        assert_eq!(e.path_raw, b"/tmp/bad\xff\xfename");
        assert!(e.path.contains('\u{fffd}'));
        let ok = file_event(
            "created",
            Path::new("/tmp/ok"),
            None,
            None,
            None,
            Detection::Realtime,
        );
        assert!(ok.path_raw.is_empty());
    }
}
