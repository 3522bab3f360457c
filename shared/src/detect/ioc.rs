//! Indicator sets: IP addresses and CIDR blocks, domains (a listed domain matches itself and
//! every subdomain), JA3 and JA4 fingerprints. Flows are matched on their endpoints, DNS on
//! query names, TLS on SNI and fingerprints, HTTP on the host.
//!
//! File format, one indicator per line, `#` starts a comment:
//! `[type:]value [description]` with type `ip`, `cidr`, `domain`, `ja3` or `ja4`; without a
//! type, an address or CIDR block is `ip`, 32 hex digits `ja3`, a JA4 string `ja4`, anything
//! else with a dot `domain`. Bad lines are reported with their number; the rest still load.

use std::collections::HashMap;
use std::net::IpAddr;

/// What kind of indicator matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IocKind {
    Ip,
    Domain,
    Ja3,
    Ja4,
}

impl IocKind {
    pub fn name(self) -> &'static str {
        match self {
            IocKind::Ip => "ip",
            IocKind::Domain => "domain",
            IocKind::Ja3 => "ja3",
            IocKind::Ja4 => "ja4",
        }
    }
}

/// One indicator as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Indicator {
    /// Line number in its file: a stable id (`sid` in EVE alerts).
    pub line: u32,
    pub kind: IocKind,
    pub value: String,
    pub description: String,
}

#[derive(Clone, Debug, Default)]
pub struct IocSet {
    indicators: Vec<Indicator>,
    /// Networks by prefix length, longest first: (bits, network as u128 of the v6 form) -> id.
    nets: Vec<(u8, HashMap<u128, u32>)>,
    domains: HashMap<String, u32>,
    fingerprints: HashMap<(IocKind, String), u32>,
    /// (line, reason) of lines that did not load.
    pub rejected: Vec<(u32, String)>,
}

fn v6(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn mask(bits: u8) -> u128 {
    if bits == 0 {
        0
    } else {
        u128::MAX << (128 - bits as u32)
    }
}

impl IocSet {
    pub fn parse(text: &str) -> IocSet {
        let mut set = IocSet::default();
        for (i, raw) in text.lines().enumerate() {
            let line = (i + 1) as u32;
            let body = raw.split('#').next().unwrap_or("").trim();
            if body.is_empty() {
                continue;
            }
            let (value, description) = match body.split_once(char::is_whitespace) {
                Some((v, d)) => (v, d.trim().to_string()),
                None => (body, String::new()),
            };
            if let Err(e) = set.add(line, value, description) {
                set.rejected.push((line, e));
            }
        }
        set
    }

    fn add(&mut self, line: u32, value: &str, description: String) -> Result<(), String> {
        let (typ, v) = match value.split_once(':') {
            Some((t, v)) if matches!(t, "ip" | "cidr" | "domain" | "ja3" | "ja4") => (Some(t), v),
            _ => (None, value),
        };
        let is_net = |v: &str| {
            let a = v.split('/').next().unwrap_or("");
            a.parse::<IpAddr>().is_ok()
        };
        let typ = match typ {
            Some(t) => t,
            None if is_net(v) => "ip",
            None if v.len() == 32 && v.chars().all(|c| c.is_ascii_hexdigit()) => "ja3",
            None if v.len() == 36 && v.as_bytes().get(10) == Some(&b'_') => "ja4",
            None if v.contains('.') => "domain",
            None => return Err(format!("cannot tell what {v:?} is; prefix it with a type")),
        };
        let id = self.indicators.len() as u32;
        let kind = match typ {
            "ip" | "cidr" => {
                let (addr, bits) = match v.split_once('/') {
                    Some((a, b)) => (a, Some(b)),
                    None => (v, None),
                };
                let ip: IpAddr = addr.parse().map_err(|_| format!("bad address {addr:?}"))?;
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let bits: u8 = match bits {
                    None => max,
                    Some(b) => b
                        .parse()
                        .ok()
                        .filter(|b| *b <= max)
                        .ok_or_else(|| format!("bad prefix length {b:?}"))?,
                };
                let bits = if ip.is_ipv4() { bits + 96 } else { bits };
                let net = v6(ip) & mask(bits);
                match self.nets.iter_mut().find(|(b, _)| *b == bits) {
                    Some((_, m)) => {
                        m.insert(net, id);
                    }
                    None => {
                        self.nets.push((bits, HashMap::from([(net, id)])));
                        self.nets.sort_by_key(|n| std::cmp::Reverse(n.0));
                    }
                }
                IocKind::Ip
            }
            "domain" => {
                let d = v.trim_end_matches('.').to_ascii_lowercase();
                if d.is_empty() || d.len() > 253 {
                    return Err(format!("bad domain {v:?}"));
                }
                self.domains.insert(d, id);
                IocKind::Domain
            }
            "ja3" => {
                if v.len() != 32 || !v.chars().all(|c| c.is_ascii_hexdigit()) {
                    return Err(format!("a JA3 is 32 hex digits, not {v:?}"));
                }
                self.fingerprints
                    .insert((IocKind::Ja3, v.to_ascii_lowercase()), id);
                IocKind::Ja3
            }
            _ => {
                self.fingerprints.insert((IocKind::Ja4, v.to_string()), id);
                IocKind::Ja4
            }
        };
        self.indicators.push(Indicator {
            line,
            kind,
            value: v.to_string(),
            description,
        });
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.indicators.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indicators.is_empty()
    }

    /// The indicator listing this address (the most specific block).
    pub fn ip(&self, ip: IpAddr) -> Option<&Indicator> {
        let a = v6(ip);
        self.nets
            .iter()
            .find_map(|(bits, m)| m.get(&(a & mask(*bits))))
            .map(|id| &self.indicators[*id as usize])
    }

    /// The indicator listing this name or a parent domain of it.
    pub fn domain(&self, name: &str) -> Option<&Indicator> {
        if self.domains.is_empty() {
            return None;
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let mut rest = name.as_str();
        loop {
            if let Some(id) = self.domains.get(rest) {
                return Some(&self.indicators[*id as usize]);
            }
            match rest.split_once('.') {
                Some((_, parent)) => rest = parent,
                None => return None,
            }
        }
    }

    pub fn fingerprint(&self, kind: IocKind, value: &str) -> Option<&Indicator> {
        let v = if kind == IocKind::Ja3 {
            value.to_ascii_lowercase()
        } else {
            value.to_string()
        };
        self.fingerprints
            .get(&(kind, v))
            .map(|id| &self.indicators[*id as usize])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_every_kind_and_matches_the_most_specific() {
        let set = IocSet::parse(
            "# list\n10.0.0.0/8 internal\nip:10.1.2.3 the box\n2001:db8::/32\nevil.example\n\
             domain:Bad.Test.\n0123456789abcdef0123456789ABCDEF\nja4:t13d1516h2_8daaf6152771_e5627efa2ab1\n\
             nonsense\nip:300.1.1.1\n",
        );
        assert_eq!(set.len(), 7, "{:?}", set.rejected);
        assert_eq!(
            set.rejected.iter().map(|r| r.0).collect::<Vec<_>>(),
            vec![9, 10]
        );
        assert_eq!(
            set.ip("10.1.2.3".parse().unwrap()).unwrap().description,
            "the box"
        );
        assert_eq!(set.ip("10.9.9.9".parse().unwrap()).unwrap().line, 2);
        assert!(set.ip("11.0.0.1".parse().unwrap()).is_none());
        assert!(set.ip("2001:db8::5".parse().unwrap()).is_some());
        assert!(set.domain("evil.example").is_some());
        assert!(set.domain("a.b.EVIL.example.").is_some());
        assert!(set.domain("notevil.example").is_none());
        assert!(set.domain("x.bad.test").is_some());
        assert!(
            set.fingerprint(IocKind::Ja3, "0123456789ABCDEF0123456789abcdef")
                .is_some()
        );
        assert!(
            set.fingerprint(IocKind::Ja4, "t13d1516h2_8daaf6152771_e5627efa2ab1")
                .is_some()
        );
    }
}
