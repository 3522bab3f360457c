//! The FIM baseline: the last known state of every monitored file, persisted in the agent's
//! state directory so a restart neither re-alerts on everything nor misses what changed while
//! the agent was down.
//!
//! On disk (`STATE_DIR/fim/baseline.pb`, replaced atomically: write, fsync, rename): one
//! protobuf [`BaselineFile`] holding `(path bytes, FileState)` pairs. A file that cannot be
//! decoded is reported and the baseline is rebuilt from a fresh scan.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use lindi_shared::proto::FileState;
use prost::Message;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum BaselineError {
    #[error("baseline {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("baseline {path} is damaged: {detail}")]
    Damaged { path: PathBuf, detail: String },
}

#[derive(Clone, PartialEq, Message)]
pub struct BaselineEntry {
    #[prost(bytes = "vec", tag = "1")]
    pub path: Vec<u8>,
    #[prost(message, optional, tag = "2")]
    pub state: Option<FileState>,
}

#[derive(Clone, PartialEq, Message)]
pub struct BaselineFile {
    #[prost(uint32, tag = "1")]
    pub version: u32,
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<BaselineEntry>,
}

/// One file's state as the baseline holds it: the [`FileState`] fields in fixed-size form
/// (a binary hash, a code for why there is none), about a third of the proto struct's size,
/// so that a million-file baseline fits the agent's memory budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    sha256: Option<[u8; 32]>,
    size: u64,
    mtime_ns: i64,
    inode: u64,
    mode: u32,
    uid: u32,
    gid: u32,
    hash_skipped: u8,
    link_target: Option<Box<str>>,
}

const SKIP_REASONS: &[&str] = &["", "too_large", "unreadable", "symlink", "special"];

impl From<&FileState> for Entry {
    fn from(s: &FileState) -> Self {
        let mut hash = [0u8; 32];
        let sha256 = (hex::decode_to_slice(&s.sha256, &mut hash).is_ok()).then_some(hash);
        Entry {
            sha256,
            size: s.size,
            mtime_ns: s.mtime_ns,
            inode: s.inode,
            mode: s.mode,
            uid: s.uid,
            gid: s.gid,
            hash_skipped: SKIP_REASONS
                .iter()
                .position(|r| *r == s.hash_skipped)
                .unwrap_or(2) as u8,
            link_target: (!s.link_target.is_empty())
                .then(|| s.link_target.clone().into_boxed_str()),
        }
    }
}

impl Entry {
    pub fn state(&self) -> FileState {
        FileState {
            sha256: self.sha256.map(hex::encode).unwrap_or_default(),
            size: self.size,
            mode: self.mode,
            uid: self.uid,
            gid: self.gid,
            mtime_ns: self.mtime_ns,
            inode: self.inode,
            link_target: self.link_target.as_deref().unwrap_or_default().to_string(),
            hash_skipped: SKIP_REASONS[self.hash_skipped as usize % SKIP_REASONS.len()].to_string(),
        }
    }
}

/// Known state by path, ordered so that a subtree is a range.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Baseline {
    entries: BTreeMap<PathBuf, Entry>,
}

impl Baseline {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, path: &Path) -> Option<FileState> {
        self.entries.get(path).map(Entry::state)
    }

    pub fn contains(&self, path: &Path) -> bool {
        self.entries.contains_key(path)
    }

    pub fn set(&mut self, path: &Path, state: Option<FileState>) {
        match state {
            Some(s) => {
                self.entries.insert(path.to_path_buf(), Entry::from(&s));
            }
            None => {
                self.entries.remove(path);
            }
        }
    }

    pub fn insert(&mut self, path: PathBuf, entry: Entry) {
        self.entries.insert(path, entry);
    }

    /// Every path with its state, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&PathBuf, FileState)> + '_ {
        self.entries.iter().map(|(p, e)| (p, e.state()))
    }

    /// Whether the two hold the same state for `path`.
    pub fn same(&self, other: &Baseline, path: &Path) -> bool {
        self.entries.get(path) == other.entries.get(path)
    }

    /// Paths at or under `dir`.
    fn under<'a>(&'a self, dir: &'a Path) -> impl Iterator<Item = (&'a PathBuf, &'a Entry)> + 'a {
        self.entries
            .range(dir.to_path_buf()..)
            .take_while(move |(p, _)| p.starts_with(dir))
    }

    /// Remove `path` and everything under it; returns what was removed.
    pub fn remove_under(&mut self, path: &Path) -> Vec<(PathBuf, FileState)> {
        let gone: Vec<PathBuf> = self.under(path).map(|(p, _)| p.clone()).collect();
        gone.into_iter()
            .filter_map(|p| self.entries.remove(&p).map(|e| (p, e.state())))
            .collect()
    }

    /// Replace everything at or under `dir` with `fresh`'s entries there.
    pub fn replace_under(&mut self, dir: &Path, fresh: &Baseline) {
        let old: Vec<PathBuf> = self.under(dir).map(|(p, _)| p.clone()).collect();
        for p in old {
            self.entries.remove(&p);
        }
        for (p, e) in fresh.under(dir) {
            self.entries.insert(p.clone(), e.clone());
        }
    }

    pub fn load(path: &Path) -> Result<Option<Baseline>, BaselineError> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(BaselineError::Io {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let damaged = |detail: String| BaselineError::Damaged {
            path: path.to_path_buf(),
            detail,
        };
        // Decode entry by entry (the layout of a BaselineFile), so a large baseline is not held
        // twice in memory.
        use prost::encoding::{WireType, decode_key, decode_varint};
        let mut rest = bytes.as_slice();
        let mut version = 0;
        let mut entries = BTreeMap::new();
        while !rest.is_empty() {
            let (tag, wire) = decode_key(&mut rest).map_err(|e| damaged(e.to_string()))?;
            match (tag, wire) {
                (1, WireType::Varint) => {
                    version = decode_varint(&mut rest).map_err(|e| damaged(e.to_string()))?;
                }
                (2, WireType::LengthDelimited) => {
                    let len =
                        decode_varint(&mut rest).map_err(|e| damaged(e.to_string()))? as usize;
                    if len > rest.len() {
                        return Err(damaged("entry runs past the end".into()));
                    }
                    let entry =
                        BaselineEntry::decode(&rest[..len]).map_err(|e| damaged(e.to_string()))?;
                    rest = &rest[len..];
                    if let Some(state) = entry.state {
                        entries.insert(
                            PathBuf::from(OsStr::from_bytes(&entry.path)),
                            Entry::from(&state),
                        );
                    }
                }
                _ => return Err(damaged(format!("unexpected field {tag}"))),
            }
        }
        if version != 1 {
            return Err(damaged(format!("unknown version {version}")));
        }
        Ok(Some(Baseline { entries }))
    }

    /// Write the baseline (as a [`BaselineFile`], one entry at a time).
    pub fn save(&self, path: &Path) -> Result<(), BaselineError> {
        let io = |source| BaselineError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        use prost::encoding::{WireType, encode_key, encode_varint};
        let tmp = path.with_extension("tmp");
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(io)?);
        let mut buf = Vec::with_capacity(512);
        encode_key(1, WireType::Varint, &mut buf);
        encode_varint(1, &mut buf);
        f.write_all(&buf).map_err(io)?;
        for (p, s) in &self.entries {
            let entry = BaselineEntry {
                path: p.as_os_str().as_bytes().to_vec(),
                state: Some(s.state()),
            };
            buf.clear();
            encode_key(2, WireType::LengthDelimited, &mut buf);
            entry.encode_length_delimited(&mut buf).expect("Vec grows");
            f.write_all(&buf).map_err(io)?;
        }
        let f = f.into_inner().map_err(|e| io(e.into_error()))?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(h: &str) -> FileState {
        FileState {
            sha256: h.repeat(64),
            ..Default::default()
        }
    }

    #[test]
    fn compact_entries_keep_every_field() {
        let s = FileState {
            sha256: "ab".repeat(32),
            size: 7,
            mode: 0o100644,
            uid: 1,
            gid: 2,
            mtime_ns: -5,
            inode: 9,
            link_target: "x".into(),
            hash_skipped: "symlink".into(),
        };
        assert_eq!(Entry::from(&s).state(), s);
        let none = FileState {
            hash_skipped: "too_large".into(),
            ..Default::default()
        };
        assert_eq!(Entry::from(&none).state(), none);
    }

    #[test]
    fn save_load_and_subtrees() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Baseline::default();
        b.set(Path::new("/a/x"), Some(st("1")));
        b.set(Path::new("/a/y/z"), Some(st("2")));
        b.set(Path::new("/ab"), Some(st("3")));
        b.set(Path::new(OsStr::from_bytes(b"/a/\xff")), Some(st("4")));
        let path = dir.path().join("fim/baseline.pb");
        b.save(&path).unwrap();
        let back = Baseline::load(&path).unwrap().unwrap();
        assert_eq!(back, b);
        let under: Vec<_> = back
            .under(Path::new("/a"))
            .map(|(p, _)| p.clone())
            .collect();
        assert_eq!(under.len(), 3, "{under:?}");
        let mut fresh = Baseline::default();
        fresh.set(Path::new("/a/new"), Some(st("5")));
        let mut c = back.clone();
        c.replace_under(Path::new("/a"), &fresh);
        assert_eq!(c.len(), 2);
        assert!(c.get(Path::new("/ab")).is_some());
        assert!(Baseline::load(&dir.path().join("none")).unwrap().is_none());
        std::fs::write(&path, b"\xff\xff\xff garbage").unwrap();
        assert!(matches!(
            Baseline::load(&path),
            Err(BaselineError::Damaged { .. })
        ));
    }
}
