//! The addresses the agent's service may reach, as a systemd drop-in.
//!
//! The packaged unit lets the agent reach only localhost (`IPAddressDeny=any`,
//! `IPAddressAllow=localhost`): a sensor has one peer, its collector, and a security team
//! can read that from the unit. The collector's addresses are the site's, so `lindi-agent
//! enroll` (and `lindi-agent ip-allow --write` when they change) adds them in a drop-in,
//! together with the name servers that resolve them when they are given by name. Capture
//! (AF_PACKET) and the process connector (AF_NETLINK) are not IP sockets and are not
//! affected.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};

/// Where the drop-in goes.
pub const DEFAULT_DROPIN: &str =
    "/etc/systemd/system/lindi-agent.service.d/50-collector-addresses.conf";

#[derive(Debug, thiserror::Error)]
pub enum IpAllowError {
    #[error("collector address {0:?} is not host:port")]
    NotHostPort(String),
    #[error("cannot resolve collector address {addr:?}: {detail}")]
    Resolve { addr: String, detail: String },
    #[error("{path}: {detail}")]
    Write { path: String, detail: String },
}

/// What the drop-in allows and why.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AllowList {
    /// The collector addresses as configured (`host:port`).
    pub collectors: Vec<String>,
    /// Their IP addresses.
    pub addresses: Vec<IpAddr>,
    /// Name servers, when a collector is given by name (outside loopback, which the unit
    /// allows anyway).
    pub name_servers: Vec<IpAddr>,
}

/// The host part of `host:port` (`[v6]:port` too).
fn host_of(addr: &str) -> Option<&str> {
    let (host, port) = addr.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some(host)
}

/// The `nameserver` lines of a resolv.conf.
pub fn name_servers(resolv_conf: &str) -> Vec<IpAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
                // A scoped IPv6 address (fe80::1%eth0) has no place in IPAddressAllow: drop
                // the scope.
                .and_then(|a| a.split('%').next()?.parse().ok())
        })
        .collect()
}

/// Resolve the collectors' addresses; name servers come from `resolv_conf` when any is a
/// name.
pub fn allow_list(collectors: &[String], resolv_conf: &str) -> Result<AllowList, IpAllowError> {
    let mut list = AllowList {
        collectors: collectors.to_vec(),
        ..AllowList::default()
    };
    let mut by_name = false;
    for c in collectors {
        let host = host_of(c).ok_or_else(|| IpAllowError::NotHostPort(c.clone()))?;
        if let Ok(ip) = host.parse::<IpAddr>() {
            list.addresses.push(ip);
            continue;
        }
        by_name = true;
        let resolved: Vec<SocketAddr> = c
            .to_socket_addrs()
            .map_err(|e| IpAllowError::Resolve {
                addr: c.clone(),
                detail: e.to_string(),
            })?
            .collect();
        list.addresses.extend(resolved.iter().map(SocketAddr::ip));
    }
    if by_name {
        list.name_servers = name_servers(resolv_conf)
            .into_iter()
            .filter(|ip| !ip.is_loopback())
            .collect();
    }
    for v in [&mut list.addresses, &mut list.name_servers] {
        v.sort();
        v.dedup();
    }
    Ok(list)
}

impl AllowList {
    /// The drop-in's text.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# Written by `lindi-agent enroll` or `lindi-agent ip-allow --write`: run the latter\n\
             # again when the collector's addresses change. The unit lets the agent reach only\n\
             # localhost; these are the addresses of its collectors",
        );
        out.push_str(&format!(" ({})", self.collectors.join(", ")));
        if self.name_servers.is_empty() {
            out.push_str(".\n");
        } else {
            out.push_str("\n# and the name servers that resolve them.\n");
        }
        // Self-contained: the same drop-in restricts a unit that does not deny by itself
        // (lindi-agent-tap@.service).
        out.push_str("[Service]\nIPAddressDeny=any\nIPAddressAllow=localhost\n");
        for ip in self.addresses.iter().chain(&self.name_servers) {
            out.push_str(&format!("IPAddressAllow={ip}\n"));
        }
        out
    }

    /// Whether `ip` may be reached under this list and the unit's own `localhost`.
    pub fn allows(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || self.addresses.contains(&ip) || self.name_servers.contains(&ip)
    }
}

/// Write the drop-in (atomically) and, where systemd runs, reload it so that the next start
/// of the service sees it. Returns what happened to the reload.
pub fn write(list: &AllowList, path: &Path) -> Result<String, IpAllowError> {
    let err = |e: std::io::Error| IpAllowError::Write {
        path: path.display().to_string(),
        detail: e.to_string(),
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = PathBuf::from(format!("{}.tmp", path.display()));
    std::fs::write(&tmp, list.render()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    if !systemd_runs() {
        return Ok("systemd is not running here: nothing to reload".into());
    }
    match std::process::Command::new("systemctl")
        .arg("daemon-reload")
        .status()
    {
        Ok(s) if s.success() => Ok("systemd reloaded".into()),
        Ok(s) => Ok(format!(
            "`systemctl daemon-reload` failed ({s}): run it before starting the service"
        )),
        Err(e) => Ok(format!(
            "cannot run `systemctl daemon-reload` ({e}): run it before starting the service"
        )),
    }
}

/// Whether systemd is the init system here (sd_booted's test).
pub fn systemd_runs() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// The state directory of the packaged `lindi-agent.service`.
pub const UNIT_STATE_DIR: &str = "/var/lib/lindi";

/// Whether `lindi-agent enroll` writes the drop-in without being asked: as root, for the
/// packaged unit's state directory (a tap instance has its own, and its own unit), where
/// systemd runs and the packaged unit is installed.
pub fn enroll_writes_by_default(state_dir: &Path) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root && state_dir == Path::new(UNIT_STATE_DIR)
        && systemd_runs()
        && [
            "/lib/systemd/system",
            "/usr/lib/systemd/system",
            "/etc/systemd/system",
        ]
        .iter()
        .any(|d| Path::new(d).join("lindi-agent.service").exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_addresses_need_no_name_servers() {
        let list = allow_list(
            &["192.0.2.10:4433".into(), "[2001:db8::5]:4433".into()],
            "nameserver 192.0.2.53\n",
        )
        .unwrap();
        assert_eq!(
            list.addresses,
            vec![
                "192.0.2.10".parse::<IpAddr>().unwrap(),
                "2001:db8::5".parse().unwrap()
            ]
        );
        assert!(list.name_servers.is_empty());
        let text = list.render();
        assert!(text.contains(
            "[Service]\nIPAddressDeny=any\nIPAddressAllow=localhost\nIPAddressAllow=192.0.2.10\nIPAddressAllow=2001:db8::5\n"
        ));
        assert!(list.allows("127.0.0.1".parse().unwrap()));
        assert!(!list.allows("192.0.2.11".parse().unwrap()));
    }

    #[test]
    fn names_bring_their_name_servers_except_loopback_ones() {
        let resolv = "# comment\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nnameserver fe80::1%eth0\nsearch example\n";
        let list = allow_list(&["localhost:4433".into()], resolv).unwrap();
        assert!(list.addresses.iter().all(IpAddr::is_loopback), "{list:?}");
        assert_eq!(
            list.name_servers,
            vec![
                "192.0.2.53".parse::<IpAddr>().unwrap(),
                "fe80::1".parse().unwrap()
            ]
        );
        assert!(list.render().contains("IPAddressAllow=192.0.2.53\n"));
    }

    #[test]
    fn bad_addresses_are_refused_with_the_reason() {
        for bad in ["collector", "collector:http", ":4433"] {
            let e = allow_list(&[bad.into()], "").unwrap_err();
            assert!(matches!(e, IpAllowError::NotHostPort(_)), "{bad}: {e}");
        }
        let e = allow_list(&["no-such-host.invalid:4433".into()], "").unwrap_err();
        assert!(e.to_string().contains("no-such-host.invalid"), "{e}");
    }

    #[test]
    fn the_drop_in_is_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir
            .path()
            .join("lindi-agent.service.d/50-collector-addresses.conf");
        let list = allow_list(&["127.0.0.1:4433".into()], "").unwrap();
        write(&list, &path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), list.render());
        assert!(!PathBuf::from(format!("{}.tmp", path.display())).exists());
    }
}
