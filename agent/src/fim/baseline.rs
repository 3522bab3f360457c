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

/// Known state by path, ordered so that a subtree is a range.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Baseline {
    pub entries: BTreeMap<PathBuf, FileState>,
}

impl Baseline {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, path: &Path) -> Option<&FileState> {
        self.entries.get(path)
    }

    pub fn set(&mut self, path: &Path, state: Option<FileState>) {
        match state {
            Some(s) => {
                self.entries.insert(path.to_path_buf(), s);
            }
            None => {
                self.entries.remove(path);
            }
        }
    }

    /// Paths at or under `dir`.
    pub fn under<'a>(
        &'a self,
        dir: &'a Path,
    ) -> impl Iterator<Item = (&'a PathBuf, &'a FileState)> + 'a {
        self.entries
            .range(dir.to_path_buf()..)
            .take_while(move |(p, _)| p.starts_with(dir))
    }

    /// Replace everything at or under `dir` with `fresh`'s entries there.
    pub fn replace_under(&mut self, dir: &Path, fresh: &Baseline) {
        let old: Vec<PathBuf> = self.under(dir).map(|(p, _)| p.clone()).collect();
        for p in old {
            self.entries.remove(&p);
        }
        for (p, s) in fresh.under(dir) {
            self.entries.insert(p.clone(), s.clone());
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
        let file = BaselineFile::decode(bytes.as_slice()).map_err(|e| BaselineError::Damaged {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        if file.version != 1 {
            return Err(BaselineError::Damaged {
                path: path.to_path_buf(),
                detail: format!("unknown version {}", file.version),
            });
        }
        let entries = file
            .entries
            .into_iter()
            .filter_map(|e| Some((PathBuf::from(OsStr::from_bytes(&e.path)), e.state?)))
            .collect();
        Ok(Some(Baseline { entries }))
    }

    pub fn save(&self, path: &Path) -> Result<(), BaselineError> {
        let io = |source| BaselineError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let file = BaselineFile {
            version: 1,
            entries: self
                .entries
                .iter()
                .map(|(p, s)| BaselineEntry {
                    path: p.as_os_str().as_bytes().to_vec(),
                    state: Some(s.clone()),
                })
                .collect(),
        };
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&file.encode_to_vec()).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(h: &str) -> FileState {
        FileState {
            sha256: h.into(),
            ..Default::default()
        }
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
