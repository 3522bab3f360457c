//! The collector's certificate authority on disk, in the data directory:
//!
//! ```text
//! ca.crt       CA certificate (PEM); its SHA-256 is the fingerprint tokens carry
//! ca.key       CA private key (PEM), mode 0600
//! server.crt   server certificate then the CA certificate (the chain agents are sent)
//! server.key   server private key (PEM), mode 0600
//! ```

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use lindi_shared::pki::{self, CaMaterial, PkiError};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum AuthorityError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("{0} is not initialised (no ca.crt); run `lindi-collector init --data-dir {0}` first")]
    NotInitialised(String),
    #[error(
        "{0} is already initialised; refusing to replace its CA (every enrolled agent would be cut off)"
    )]
    AlreadyInitialised(String),
    #[error("private key {path} is readable by others (mode {mode:o}); it must be 0600")]
    KeyMode { path: PathBuf, mode: u32 },
}

/// The loaded CA and server certificate.
#[derive(Clone, Debug)]
pub struct Authority {
    pub ca: CaMaterial,
    pub ca_fingerprint: String,
    /// Server certificate followed by the CA certificate.
    pub server_chain_pem: String,
    pub server_key_pem: String,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AuthorityError + '_ {
    move |source| AuthorityError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write_private(path: &Path, text: &str) -> Result<(), AuthorityError> {
    let mut f = fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(text.as_bytes()).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// The files of an authority, in the order they are written (ca.crt last: its presence marks
/// a data directory as initialised).
pub const FILES: [&str; 4] = ["ca.key", "server.key", "server.crt", "ca.crt"];

impl Authority {
    /// The authority's files as (name, PEM text): what the nodes of a cluster share through
    /// the store.
    pub fn files(&self) -> Vec<(&'static str, String)> {
        vec![
            ("ca.key", self.ca.key_pem.clone()),
            ("server.key", self.server_key_pem.clone()),
            ("server.crt", self.server_chain_pem.clone()),
            ("ca.crt", self.ca.cert_pem.clone()),
        ]
    }

    /// Write an authority's `files` (from the store) into `dir`, which has none yet: keys
    /// 0600, ca.crt last.
    pub fn restore(dir: &Path, files: &[(String, String)]) -> Result<Authority, AuthorityError> {
        if Self::exists(dir) {
            return Err(AuthorityError::AlreadyInitialised(
                dir.display().to_string(),
            ));
        }
        fs::create_dir_all(dir).map_err(io(dir))?;
        for name in FILES {
            let Some((_, body)) = files.iter().find(|(n, _)| n == name) else {
                return Err(AuthorityError::NotInitialised(format!(
                    "{} (the store lacks {name})",
                    dir.display()
                )));
            };
            let p = dir.join(name);
            if name.ends_with(".key") {
                // A previous attempt may have left it.
                let _ = fs::remove_file(&p);
                write_private(&p, body)?;
            } else {
                fs::write(&p, body).map_err(io(&p))?;
            }
        }
        Self::load(dir)
    }

    pub fn exists(dir: &Path) -> bool {
        dir.join("ca.crt").exists()
    }

    /// Make the CA and server certificate in `dir` (which must not have them yet).
    pub fn create(
        dir: &Path,
        name: &str,
        server_names: &[String],
        now_s: i64,
    ) -> Result<Authority, AuthorityError> {
        if Self::exists(dir) {
            return Err(AuthorityError::AlreadyInitialised(
                dir.display().to_string(),
            ));
        }
        fs::create_dir_all(dir).map_err(io(dir))?;
        let ca = pki::generate_ca(name, now_s, 3650)?;
        let server = pki::issue_server_cert(&ca, server_names, now_s, 825)?;
        write_private(&dir.join("ca.key"), &ca.key_pem)?;
        write_private(&dir.join("server.key"), &server.key_pem)?;
        let chain = format!("{}{}", server.cert_pem, ca.cert_pem);
        fs::write(dir.join("server.crt"), &chain).map_err(io(&dir.join("server.crt")))?;
        // ca.crt last: its presence marks the directory as initialised.
        fs::write(dir.join("ca.crt"), &ca.cert_pem).map_err(io(&dir.join("ca.crt")))?;
        Self::load(dir)
    }

    pub fn load(dir: &Path) -> Result<Authority, AuthorityError> {
        if !Self::exists(dir) {
            return Err(AuthorityError::NotInitialised(dir.display().to_string()));
        }
        let read = |name: &str| {
            let p = dir.join(name);
            fs::read_to_string(&p).map_err(io(&p))
        };
        for key in ["ca.key", "server.key"] {
            use std::os::unix::fs::PermissionsExt;
            let p = dir.join(key);
            let mode = fs::metadata(&p).map_err(io(&p))?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(AuthorityError::KeyMode { path: p, mode });
            }
        }
        let ca = CaMaterial {
            cert_pem: read("ca.crt")?,
            key_pem: read("ca.key")?,
        };
        let ca_der = pki::certs_from_pem(&ca.cert_pem)?;
        Ok(Authority {
            ca_fingerprint: pki::fingerprint(&ca_der[0]),
            ca,
            server_chain_pem: read("server.crt")?,
            server_key_pem: read("server.key")?,
        })
    }
}
