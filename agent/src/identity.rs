//! The agent's identity on disk: its private key, its certificate, the collector CA and what
//! enrollment said, in `STATE_DIR/identity/`.
//!
//! ```text
//! identity/agent.key        PKCS#8 PEM private key, mode 0600; made here, never sent anywhere
//! identity/agent.crt        certificate signed by the collector CA (CN = agent id)
//! identity/ca.crt           the collector CA certificate (pinned by fingerprint at enrollment)
//! identity/enrollment.json  agent id, constituency, group, collector address
//! ```

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum IdentityError {
    #[error("this agent is not enrolled (no {0}); run `lindi-agent enroll --token TOKEN` first")]
    NotEnrolled(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is damaged: {message}")]
    Damaged { path: PathBuf, message: String },
    #[error("private key {path} is readable by others (mode {mode:o}); it must be 0600")]
    KeyMode { path: PathBuf, mode: u32 },
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Enrollment {
    pub agent_id: String,
    pub constituency: String,
    pub group: String,
    pub collector_addr: String,
    pub enrolled_at_unix_s: i64,
}

/// Everything the agent needs to connect as itself.
#[derive(Clone, Debug)]
pub struct Identity {
    pub enrollment: Enrollment,
    pub key_pem: String,
    pub cert_pem: String,
    pub ca_pem: String,
}

pub fn identity_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("identity")
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Identity {
    pub fn exists(state_dir: &Path) -> bool {
        identity_dir(state_dir).join("enrollment.json").exists()
    }

    pub fn load(state_dir: &Path) -> Result<Identity, IdentityError> {
        let dir = identity_dir(state_dir);
        let enrollment_path = dir.join("enrollment.json");
        if !enrollment_path.exists() {
            return Err(IdentityError::NotEnrolled(enrollment_path));
        }
        let read = |name: &str| {
            let p = dir.join(name);
            fs::read_to_string(&p).map_err(io(&p))
        };
        let key_path = dir.join("agent.key");
        let mode = fs::metadata(&key_path)
            .map_err(io(&key_path))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(IdentityError::KeyMode {
                path: key_path,
                mode,
            });
        }
        let enrollment: Enrollment =
            serde_json::from_str(&read("enrollment.json")?).map_err(|e| {
                IdentityError::Damaged {
                    path: enrollment_path.clone(),
                    message: e.to_string(),
                }
            })?;
        Ok(Identity {
            enrollment,
            key_pem: read("agent.key")?,
            cert_pem: read("agent.crt")?,
            ca_pem: read("ca.crt")?,
        })
    }

    /// Write every file into a fresh directory (the key with mode 0600 from its creation),
    /// sync it, then swap it in for the old identity with renames, so a failure part-way
    /// leaves the old identity whole.
    pub fn save(&self, state_dir: &Path) -> Result<(), IdentityError> {
        let dir = identity_dir(state_dir);
        let new = state_dir.join("identity.new");
        let old = state_dir.join("identity.old");
        let _ = fs::remove_dir_all(&new);
        fs::create_dir_all(&new).map_err(io(&new))?;
        fs::set_permissions(&new, fs::Permissions::from_mode(0o700)).map_err(io(&new))?;
        let write = |name: &str, text: &str, mode: u32| -> Result<(), IdentityError> {
            let p = new.join(name);
            let mut f = fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(mode)
                .open(&p)
                .map_err(io(&p))?;
            f.write_all(text.as_bytes()).map_err(io(&p))?;
            f.sync_all().map_err(io(&p))
        };
        write("agent.key", &self.key_pem, 0o600)?;
        write("agent.crt", &self.cert_pem, 0o644)?;
        write("ca.crt", &self.ca_pem, 0o644)?;
        let json = serde_json::to_string_pretty(&self.enrollment).expect("serializes");
        write("enrollment.json", &json, 0o644)?;
        let _ = fs::remove_dir_all(&old);
        if dir.exists() {
            fs::rename(&dir, &old).map_err(io(&dir))?;
        }
        fs::rename(&new, &dir).map_err(io(&dir))?;
        let _ = fs::remove_dir_all(&old);
        fs::File::open(state_dir)
            .and_then(|d| d.sync_all())
            .map_err(io(state_dir))
    }
}

/// When enrolling as root into a state directory that belongs to the service user (the
/// package makes `/var/lib/lindi` owned by `lindi`), give the identity to that user so the
/// service can read its key.
pub fn adopt_owner(state_dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    let meta = fs::metadata(state_dir)?;
    if meta.uid() == 0 {
        return Ok(());
    }
    let dir = identity_dir(state_dir);
    std::os::unix::fs::chown(&dir, Some(meta.uid()), Some(meta.gid()))?;
    for entry in fs::read_dir(&dir)? {
        std::os::unix::fs::chown(entry?.path(), Some(meta.uid()), Some(meta.gid()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_load_round_trip_with_private_key_mode() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Identity::load(dir.path()),
            Err(IdentityError::NotEnrolled(_))
        ));
        let id = Identity {
            enrollment: Enrollment {
                agent_id: "a".into(),
                constituency: "c".into(),
                group: String::new(),
                collector_addr: "127.0.0.1:1".into(),
                enrolled_at_unix_s: 1,
            },
            key_pem: "KEY".into(),
            cert_pem: "CERT".into(),
            ca_pem: "CA".into(),
        };
        id.save(dir.path()).unwrap();
        let key = identity_dir(dir.path()).join("agent.key");
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            Identity::load(dir.path()).unwrap().enrollment,
            id.enrollment
        );
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Identity::load(dir.path()),
            Err(IdentityError::KeyMode { .. })
        ));
    }
}
