//! The event search index: the observables an event carries (IP addresses, domain names,
//! file and fingerprint hashes, the host it came from), kept as 64-bit term hashes in `event_terms` beside the event
//! row, so that "every event that mentions 198.51.100.7" is an index lookup rather than a
//! decode of every stored event.
//!
//! Terms are written in the same transaction as their event, keyed by (bucket of event rows,
//! term, row): see [`BUCKET_BITS`]. A domain is indexed under
//! itself and each parent with at least two labels (at most [`MAX_ZONE_TERMS`]), so a search
//! for `example.com` finds `www.example.com` too. Lookups verify every hit against the
//! decoded event, so a hash collision can never return an event that does not match.

use std::net::IpAddr;

use lindi_shared::proto::{Event, FlowEvent, event};

/// The most parent-domain terms one name yields (the name itself included).
pub const MAX_ZONE_TERMS: usize = 4;

/// What a search looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observable {
    Ip,
    Domain,
    Hash,
    /// The host name the agent reported (every event has one).
    Host,
}

impl Observable {
    fn prefix(self) -> &'static str {
        match self {
            Observable::Ip => "ip:",
            Observable::Domain => "zone:",
            Observable::Hash => "hash:",
            Observable::Host => "host:",
        }
    }

    /// The canonical form of a searched value, or why it is not one.
    pub fn normalise(self, value: &str) -> Result<String, String> {
        let value = value.trim();
        match self {
            Observable::Ip => value
                .parse::<IpAddr>()
                .map(|ip| ip.to_string())
                .map_err(|_| format!("{value:?} is not an IPv4 or IPv6 address")),
            Observable::Domain => {
                let d = domain(value);
                if d.is_empty() || d.len() > 253 || d.contains(char::is_whitespace) {
                    Err(format!("{value:?} is not a domain name"))
                } else {
                    Ok(d)
                }
            }
            Observable::Hash => {
                let h = value.to_ascii_lowercase();
                let hex = h.bytes().all(|b| b.is_ascii_hexdigit());
                let ja4 =
                    h.contains('_') && h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if (12..=128).contains(&h.len()) && (hex || ja4) {
                    Ok(h)
                } else {
                    Err(format!(
                        "{value:?} is not a hash (12 to 128 hexadecimal digits: SHA-256, SHA-1, MD5, JA3, a JA4 part; or a whole JA4)"
                    ))
                }
            }
            Observable::Host => {
                let h = value.to_ascii_lowercase();
                if h.is_empty() || h.len() > 255 {
                    Err(format!("{value:?} is not a host name"))
                } else {
                    Ok(h)
                }
            }
        }
    }

    /// The index key of a normalised value.
    pub fn key(self, normalised: &str) -> i64 {
        term_key(self.prefix(), normalised)
    }
}

fn domain(s: &str) -> String {
    s.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// FNV-1a, 64 bits: stable across builds and platforms (the index outlives the binary).
fn term_key(prefix: &str, value: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in prefix.bytes().chain(value.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

/// The observables of one event, normalised.
#[derive(Default, Debug, PartialEq, Eq)]
pub struct Observables {
    pub ips: Vec<String>,
    pub domains: Vec<String>,
    pub hashes: Vec<String>,
    pub host: Option<String>,
}

impl Observables {
    pub fn of(e: &Event) -> Observables {
        let mut o = Observables {
            host: Observable::Host.normalise(&e.host_name).ok(),
            ..Default::default()
        };
        let Some(kind) = &e.kind else { return o };
        match kind {
            event::Kind::Flow(f) => o.flow(Some(f)),
            event::Kind::Dns(d) => {
                o.flow(d.flow.as_ref());
                o.domain(&d.query);
                for a in &d.answers {
                    if a.parse::<IpAddr>().is_ok() {
                        o.ip(a);
                    } else {
                        o.domain(a);
                    }
                }
            }
            event::Kind::Tls(t) => {
                o.flow(t.flow.as_ref());
                o.domain(&t.sni);
                o.hash(&t.ja3);
                o.hash(&t.ja3s);
                // JA4 is `a_b_c`: its hash parts are searchable; the whole string too.
                o.hash(&t.ja4);
                for part in t.ja4.split('_').skip(1) {
                    o.hash(part);
                }
            }
            event::Kind::Http(h) => {
                o.flow(h.flow.as_ref());
                // A Host header may carry a port or be a bracketed IPv6 literal.
                let h = h.hostname.trim();
                let host = match h.strip_prefix('[') {
                    Some(rest) => rest.split(']').next().unwrap_or_default(),
                    None if h.matches(':').count() == 1 => h.split(':').next().unwrap_or(h),
                    None => h,
                };
                if host.parse::<IpAddr>().is_ok() {
                    o.ip(host);
                } else {
                    o.domain(host);
                }
            }
            event::Kind::Detection(d) => {
                o.flow(d.flow.as_ref());
                o.domain(&d.domain);
                o.hash(&d.sha256);
            }
            event::Kind::File(f) => {
                for s in [&f.before, &f.after].into_iter().flatten() {
                    o.hash(&s.sha256);
                }
            }
            event::Kind::Process(p) => o.hash(&p.exe_sha256),
            event::Kind::AgentHealth(_) => {}
        }
        o
    }

    fn flow(&mut self, f: Option<&FlowEvent>) {
        if let Some(f) = f {
            self.ip(&f.src_ip);
            self.ip(&f.dest_ip);
        }
    }

    fn ip(&mut self, s: &str) {
        if let Ok(n) = Observable::Ip.normalise(s)
            && !self.ips.contains(&n)
        {
            self.ips.push(n);
        }
    }

    fn domain(&mut self, s: &str) {
        if let Ok(n) = Observable::Domain.normalise(s)
            && !self.domains.contains(&n)
        {
            self.domains.push(n);
        }
    }

    fn hash(&mut self, s: &str) {
        if let Ok(n) = Observable::Hash.normalise(s)
            && !self.hashes.contains(&n)
        {
            self.hashes.push(n);
        }
    }

    /// The index keys of these observables (deduplicated).
    pub fn keys(&self) -> Vec<i64> {
        let mut keys: Vec<i64> = self.ips.iter().map(|v| Observable::Ip.key(v)).collect();
        for d in &self.domains {
            for zone in zones(d) {
                keys.push(Observable::Domain.key(zone));
            }
        }
        keys.extend(self.hashes.iter().map(|v| Observable::Hash.key(v)));
        keys.extend(self.host.iter().map(|v| Observable::Host.key(v)));
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// Whether the event really carries `value` (a normalised search value): the check that
    /// makes a hash collision harmless.
    pub fn matches(&self, what: Observable, value: &str) -> bool {
        match what {
            Observable::Ip => self.ips.iter().any(|v| v == value),
            Observable::Domain => self.domains.iter().any(|d| zones(d).any(|z| z == value)),
            Observable::Hash => self.hashes.iter().any(|v| v == value),
            Observable::Host => self.host.as_deref() == Some(value),
        }
    }
}

/// A name and its parents with at least two labels, nearest first, at most
/// [`MAX_ZONE_TERMS`]: `a.b.example.com` → itself, `b.example.com`, `example.com`.
fn zones(d: &str) -> impl Iterator<Item = &str> {
    let labels = d.split('.').count();
    let mut rest = Some(d);
    std::iter::from_fn(move || {
        let cur = rest?;
        rest = cur
            .split_once('.')
            .map(|(_, r)| r)
            .filter(|r| r.contains('.'));
        Some(cur)
    })
    .take(if labels < 2 { 1 } else { MAX_ZONE_TERMS })
}

/// Event rows per index bucket, as a power of two. The index is keyed (bucket, term, row), so a
/// batch's entries land in the few pages of the newest bucket instead of all over the index
/// (which cost two thirds of the insert rate for flow records, measured with
/// `bench/store.sh`); a lookup seeks once per bucket, newest first.
pub const BUCKET_BITS: u32 = 12;

/// The index bucket of event row `row`.
pub fn bucket(row: i64) -> i64 {
    row >> BUCKET_BITS
}

/// Add the index entries (term, event row) of the event stored as row `row` to `out`.
pub fn terms_of(row: i64, e: &Event, out: &mut Vec<(i64, i64)>) {
    out.extend(Observables::of(e).keys().into_iter().map(|k| (k, row)));
}

/// Rows per multi-row insert (two parameters each, well under SQLite's limit).
const TERMS_PER_STATEMENT: usize = 256;

/// Insert index entries inside the caller's transaction: sorted, so that one batch's entries
/// walk the index in order, and many to a statement.
pub fn insert_terms(
    tx: &super::db::Transaction<'_>,
    terms: &mut [(i64, i64)],
) -> Result<(), super::db::Error> {
    terms.sort_unstable_by_key(|(t, r)| (bucket(*r), *t, *r));
    let sql = |n: usize| {
        format!(
            "INSERT OR IGNORE INTO event_terms (bucket, term, event_row) VALUES {}",
            vec!["(?, ?, ?)"; n].join(", ")
        )
    };
    for chunk in terms.chunks(TERMS_PER_STATEMENT) {
        let mut stmt = tx.prepare_cached(&sql(chunk.len()))?;
        stmt.execute(super::db::params_from_iter(
            chunk
                .iter()
                .flat_map(|(term, row)| [bucket(*row), *term, *row]),
        ))?;
    }
    Ok(())
}

/// Index every stored event (once, when the index is created on a store that has events),
/// a chunk of rows at a time.
pub fn backfill(tx: &super::db::Transaction<'_>) -> Result<u64, super::db::Error> {
    use prost::Message;
    let mut read = tx.prepare("SELECT id, body FROM events ORDER BY id")?;
    let mut rows = read.query([])?;
    let (mut n, mut terms) = (0, Vec::new());
    while let Some(r) = rows.next()? {
        let body: Vec<u8> = r.get(1)?;
        if let Ok(e) = Event::decode(body.as_slice()) {
            terms_of(r.get(0)?, &e, &mut terms);
            n += 1;
        }
        if terms.len() >= 100_000 {
            insert_terms(tx, &mut terms)?;
            terms.clear();
        }
    }
    insert_terms(tx, &mut terms)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lindi_shared::proto::{DnsEvent, FileEvent, FileState, HttpEvent, TlsEvent};

    fn ev(kind: event::Kind) -> Event {
        Event {
            kind: Some(kind),
            ..Default::default()
        }
    }

    fn flow(src: &str, dst: &str) -> Option<FlowEvent> {
        Some(FlowEvent {
            src_ip: src.into(),
            dest_ip: dst.into(),
            ..Default::default()
        })
    }

    #[test]
    fn observables_of_each_kind() {
        let dns = Observables::of(&ev(event::Kind::Dns(DnsEvent {
            flow: flow("10.0.0.2", "10.0.0.1"),
            query: "WWW.Example.COM.".into(),
            answers: vec!["2001:DB8::1".into(), "cdn.example.net".into()],
            ..Default::default()
        })));
        assert_eq!(dns.ips, ["10.0.0.2", "10.0.0.1", "2001:db8::1"]);
        assert_eq!(dns.domains, ["www.example.com", "cdn.example.net"]);
        assert!(dns.matches(Observable::Domain, "example.com"));
        assert!(dns.matches(Observable::Domain, "www.example.com"));
        assert!(!dns.matches(Observable::Domain, "com"));
        assert!(!dns.matches(Observable::Domain, "ample.com"));

        let tls = Observables::of(&ev(event::Kind::Tls(TlsEvent {
            sni: "api.example.org".into(),
            ja3: "E7D705A3286E19EA42F587B344EE6865".into(),
            ja4: "t13d1516h2_8daaf6152771_b186095e22b6".into(),
            ..Default::default()
        })));
        assert!(tls.matches(Observable::Hash, "e7d705a3286e19ea42f587b344ee6865"));
        assert!(tls.matches(Observable::Hash, "8daaf6152771"));
        assert!(tls.matches(Observable::Domain, "example.org"));

        let http = Observables::of(&ev(event::Kind::Http(HttpEvent {
            hostname: "intranet.example.com:8080".into(),
            ..Default::default()
        })));
        assert_eq!(http.domains, ["intranet.example.com"]);
        let http = Observables::of(&ev(event::Kind::Http(HttpEvent {
            hostname: "[2001:db8::5]:80".into(),
            ..Default::default()
        })));
        assert_eq!(http.ips, ["2001:db8::5"]);

        let file = Observables::of(&ev(event::Kind::File(FileEvent {
            after: Some(FileState {
                sha256: "AB".repeat(32),
                ..Default::default()
            }),
            ..Default::default()
        })));
        assert_eq!(file.hashes, ["ab".repeat(32)]);
    }

    #[test]
    fn zones_are_bounded_and_stop_before_the_tld() {
        assert_eq!(
            zones("a.b.c.d.example.com").collect::<Vec<_>>(),
            [
                "a.b.c.d.example.com",
                "b.c.d.example.com",
                "c.d.example.com",
                "d.example.com"
            ]
        );
        assert_eq!(zones("example.com").collect::<Vec<_>>(), ["example.com"]);
        assert_eq!(zones("localhost").collect::<Vec<_>>(), ["localhost"]);
    }

    #[test]
    fn search_values_are_checked() {
        assert!(Observable::Ip.normalise("10.0.0.300").is_err());
        assert_eq!(
            Observable::Ip.normalise(" ::FFFF:10.0.0.1 ").unwrap(),
            "::ffff:10.0.0.1"
        );
        assert!(Observable::Hash.normalise("xyz").is_err());
        assert!(Observable::Domain.normalise("a b").is_err());
        assert_ne!(
            Observable::Ip.key("10.0.0.1"),
            Observable::Domain.key("10.0.0.1")
        );
    }
}
