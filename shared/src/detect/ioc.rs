//! Indicator sets: IP addresses and CIDR blocks, domains (a listed domain matches itself and
//! every subdomain), JA3 and JA4 fingerprints. Flows are matched on their endpoints, DNS on
//! query names, TLS on SNI and fingerprints, HTTP on the host.
//!
//! File format, one indicator per line, `#` starts a comment:
//! `[type:]value [description]` with type `ip`, `cidr`, `domain`, `ja3` or `ja4`; without a
//! type, an address or CIDR block is `ip`, 32 hex digits `ja3`, a JA4 string `ja4`, anything
//! else with a dot `domain`. Bad lines are reported with their number; the rest still load.
//!
//! A set is built to hold millions of indicators in little memory (the national feeds a
//! collector publishes to its agents run to a million and more): each indicator is a 16-byte
//! entry, addresses are integer keys of one hash map per prefix length, and names and
//! fingerprints live in one text arena indexed by a table of entry numbers. An address's
//! value is not stored at all: a match rebuilds it from the key it matched (in canonical
//! form, the network of a block). Sets combine without copying ([`IocSet::union`]): the
//! agent runs its own list and every bundle's, each compiled once.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

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

/// One indicator, as a match reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Indicator {
    /// Line number in its file: a stable id (`sid` in EVE alerts).
    pub line: u32,
    pub kind: IocKind,
    /// Canonical: an address as `IpAddr` prints it, a block as its network and prefix
    /// length, a domain or JA3 in lower case without a trailing dot.
    pub value: String,
    pub description: String,
}

/// An indicator as held: where its text is in the arena (names and fingerprints have their
/// value there, addresses only their description).
#[derive(Clone, Copy, Debug)]
struct Entry {
    line: u32,
    text_at: u32,
    value_len: u16,
    description_len: u16,
    kind: IocKind,
}

/// One compiled list.
#[derive(Debug, Default)]
struct Table {
    /// Indicators held, with or without an entry.
    count: usize,
    entries: Vec<Entry>,
    text: String,
    /// IPv4 blocks by prefix length, longest first: network -> entry, or the line itself
    /// (with [`NO_ENTRY`] set) for an address without a description.
    v4: Vec<(u8, U32Map)>,
    /// IPv6 blocks likewise.
    v6: Vec<(u8, HashMap<u128, u32, ahash::RandomState>)>,
    /// Names and fingerprints: entry numbers, found by the hash of (kind, value).
    strings: hashbrown::HashTable<u32>,
    hasher: ahash::RandomState,
}

/// A set of indicators: one or more compiled lists, matched together.
#[derive(Clone, Debug, Default)]
pub struct IocSet {
    parts: Vec<Arc<Table>>,
    /// (line, reason) of lines that did not load.
    pub rejected: Vec<(u32, String)>,
}

/// Longest description kept (longer ones are cut at a character boundary).
const MAX_DESCRIPTION: usize = 1_000;
/// In an address map's value: not an entry number but the line (an address without a
/// description needs nothing else: a million shared addresses are one map).
const NO_ENTRY: u32 = 1 << 31;

/// A map from `u32` to `u32` in 8 bytes a slot, open addressing with linear probing, kept
/// at most 80% full (a general hash map rounds up to a power of two and holds a million
/// keys in two million slots).
#[derive(Debug, Default)]
struct U32Map {
    /// (key, value); a value of `u32::MAX` marks a free slot.
    slots: Vec<(u32, u32)>,
    len: usize,
    seed: u64,
}

impl U32Map {
    const FREE: u32 = u32::MAX;

    fn slot(&self, key: u32) -> usize {
        // Multiply-shift hashing, then a multiply to map onto any table size.
        let h = (u64::from(key) ^ self.seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (((h >> 32) * self.slots.len() as u64) >> 32) as usize
    }

    fn get(&self, key: u32) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mut i = self.slot(key);
        loop {
            let (k, v) = self.slots[i];
            if v == Self::FREE {
                return None;
            }
            if k == key {
                return Some(v);
            }
            i = if i + 1 == self.slots.len() { 0 } else { i + 1 };
        }
    }

    /// Insert when `key` is new; false when it is held already.
    fn insert_new(&mut self, key: u32, value: u32) -> bool {
        if (self.len + 1) * 5 > self.slots.len() * 4 {
            self.resize((self.len + 1) * 5 / 4 + 8);
        }
        let mut i = self.slot(key);
        loop {
            let (k, v) = self.slots[i];
            if v == Self::FREE {
                self.slots[i] = (key, value);
                self.len += 1;
                return true;
            }
            if k == key {
                return false;
            }
            i = if i + 1 == self.slots.len() { 0 } else { i + 1 };
        }
    }

    fn resize(&mut self, min_slots: usize) {
        self.rehash(min_slots.max(self.slots.len() * 3 / 2));
    }

    /// Shrink to the smallest table that holds what is in it at 80%.
    fn shrink_to_fit(&mut self) {
        let want = self.len * 5 / 4 + 8;
        if want < self.slots.len() {
            self.rehash(want);
        }
    }

    /// Move every key into a table of `size` slots.
    fn rehash(&mut self, size: usize) {
        if self.seed == 0 {
            self.seed = ahash::RandomState::new().hash_one(0u8) | 1;
        }
        let old = std::mem::replace(&mut self.slots, vec![(0, Self::FREE); size]);
        self.len = 0;
        for (k, v) in old.into_iter().filter(|(_, v)| *v != Self::FREE) {
            self.insert_new(k, v);
        }
    }
}

fn mask4(bits: u8) -> u32 {
    u32::MAX.checked_shl(32 - bits as u32).unwrap_or(0)
}

fn mask6(bits: u8) -> u128 {
    u128::MAX.checked_shl(128 - bits as u32).unwrap_or(0)
}

fn block_text(ip: IpAddr, bits: u8) -> String {
    let full = if ip.is_ipv4() { 32 } else { 128 };
    if bits == full {
        ip.to_string()
    } else {
        format!("{ip}/{bits}")
    }
}

impl Table {
    fn hash(&self, kind: IocKind, value: &str) -> u64 {
        self.hasher.hash_one((kind, value))
    }

    fn value_of(&self, e: &Entry) -> &str {
        let at = e.text_at as usize;
        &self.text[at..at + e.value_len as usize]
    }

    fn indicator(&self, id: u32, value: Option<String>) -> Indicator {
        if id & NO_ENTRY != 0 {
            return Indicator {
                line: id & !NO_ENTRY,
                kind: IocKind::Ip,
                value: value.unwrap_or_default(),
                description: String::new(),
            };
        }
        let e = &self.entries[id as usize];
        let at = e.text_at as usize + e.value_len as usize;
        Indicator {
            line: e.line,
            kind: e.kind,
            value: value.unwrap_or_else(|| self.value_of(e).to_string()),
            description: self.text[at..at + e.description_len as usize].to_string(),
        }
    }

    fn push(&mut self, line: u32, kind: IocKind, value: &str, description: &str) -> u32 {
        let mut cut = description.len().min(MAX_DESCRIPTION);
        while !description.is_char_boundary(cut) {
            cut -= 1;
        }
        let id = self.entries.len() as u32;
        self.count += 1;
        self.entries.push(Entry {
            line,
            text_at: self.text.len() as u32,
            value_len: value.len() as u16,
            description_len: cut as u16,
            kind,
        });
        self.text.push_str(value);
        self.text.push_str(&description[..cut]);
        id
    }

    /// Add a name or fingerprint; a value listed twice keeps its first line.
    fn add_string(&mut self, line: u32, kind: IocKind, value: &str, description: &str) {
        let hash = self.hash(kind, value);
        let found = self.strings.find(hash, |&id| {
            let e = &self.entries[id as usize];
            e.kind == kind && self.value_of(e) == value
        });
        if found.is_some() {
            return;
        }
        let id = self.push(line, kind, value, description);
        let Table {
            strings,
            entries,
            text,
            hasher,
            ..
        } = self;
        strings.insert_unique(hash, id, |&other| {
            let e = &entries[other as usize];
            let at = e.text_at as usize;
            hasher.hash_one((e.kind, &text[at..at + e.value_len as usize]))
        });
    }

    fn add_block(&mut self, line: u32, ip: IpAddr, bits: u8, description: &str) {
        // An address without a description is its line; one with, an entry.
        let bare = description.is_empty() && line < NO_ENTRY - 1;
        let id = if bare {
            line | NO_ENTRY
        } else {
            self.entries.len() as u32
        };
        let fresh = match ip {
            IpAddr::V4(a) => map_for(&mut self.v4, bits).insert_new(u32::from(a) & mask4(bits), id),
            IpAddr::V6(a) => match map_for(&mut self.v6, bits).entry(u128::from(a) & mask6(bits)) {
                std::collections::hash_map::Entry::Occupied(_) => false,
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(id);
                    true
                }
            },
        };
        match (fresh, bare) {
            (true, true) => self.count += 1,
            (true, false) => {
                self.push(line, IocKind::Ip, "", description);
            }
            (false, _) => {}
        }
    }

    /// The most specific block holding `ip`: (prefix length, entry).
    fn ip(&self, ip: IpAddr) -> Option<(u8, u32)> {
        match ip {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                self.v4
                    .iter()
                    .find_map(|(bits, m)| m.get(a & mask4(*bits)).map(|id| (*bits, id)))
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6
                    .iter()
                    .find_map(|(bits, m)| m.get(&(a & mask6(*bits))).map(|id| (*bits, *id)))
            }
        }
    }

    fn string(&self, kind: IocKind, value: &str) -> Option<u32> {
        self.strings
            .find(self.hash(kind, value), |&id| {
                let e = &self.entries[id as usize];
                e.kind == kind && self.value_of(e) == value
            })
            .copied()
    }
}

/// The map for prefix length `bits` among `maps` (longest first), made when missing.
fn map_for<M: Default>(maps: &mut Vec<(u8, M)>, bits: u8) -> &mut M {
    let i = match maps.iter().position(|(b, _)| *b == bits) {
        Some(i) => i,
        None => {
            maps.push((bits, M::default()));
            maps.sort_by_key(|n| std::cmp::Reverse(n.0));
            maps.iter().position(|(b, _)| *b == bits).unwrap_or(0)
        }
    };
    &mut maps[i].1
}

impl IocSet {
    pub fn parse(text: &str) -> IocSet {
        let mut table = Table::default();
        let mut rejected = vec![];
        for (i, raw) in text.lines().enumerate() {
            let line = (i + 1) as u32;
            let body = raw.split('#').next().unwrap_or("").trim();
            if body.is_empty() {
                continue;
            }
            let (value, description) = match body.split_once(char::is_whitespace) {
                Some((v, d)) => (v, d.trim()),
                None => (body, ""),
            };
            if let Err(e) = add(&mut table, line, value, description) {
                rejected.push((line, e));
            }
        }
        table.entries.shrink_to_fit();
        table.text.shrink_to_fit();
        for (_, m) in &mut table.v4 {
            m.shrink_to_fit();
        }
        for (_, m) in &mut table.v6 {
            m.shrink_to_fit();
        }
        IocSet {
            parts: if table.count == 0 {
                vec![]
            } else {
                vec![Arc::new(table)]
            },
            rejected,
        }
    }

    /// Every indicator of `sets`, matched together, without copying them. (Their rejected
    /// lines are not carried: each set reported its own.)
    pub fn union<'a>(sets: impl IntoIterator<Item = &'a IocSet>) -> IocSet {
        IocSet {
            parts: sets
                .into_iter()
                .flat_map(|s| s.parts.iter().cloned())
                .collect(),
            rejected: vec![],
        }
    }

    pub fn len(&self) -> usize {
        self.parts.iter().map(|t| t.count).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Bytes the set holds (its tables' capacity, roughly).
    pub fn heap_bytes(&self) -> usize {
        self.parts
            .iter()
            .map(|t| {
                t.entries.capacity() * std::mem::size_of::<Entry>()
                    + t.text.capacity()
                    + t.v4
                        .iter()
                        .map(|(_, m)| m.slots.capacity() * 8)
                        .sum::<usize>()
                    + t.v6.iter().map(|(_, m)| m.capacity() * 33).sum::<usize>()
                    + t.strings.capacity() * 5
            })
            .sum()
    }

    /// The indicator listing this address (the most specific block).
    pub fn ip(&self, ip: IpAddr) -> Option<Indicator> {
        let (bits, table, id) = self
            .parts
            .iter()
            .filter_map(|t| t.ip(ip).map(|(bits, id)| (bits, t, id)))
            .max_by_key(|(bits, _, _)| *bits)?;
        let net = match ip {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask4(bits))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask6(bits))),
        };
        Some(table.indicator(id, Some(block_text(net, bits))))
    }

    /// The indicator listing this name or a parent domain of it.
    pub fn domain(&self, name: &str) -> Option<Indicator> {
        if self.parts.iter().all(|t| t.strings.is_empty()) {
            return None;
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let mut rest = name.as_str();
        loop {
            for t in &self.parts {
                if let Some(id) = t.string(IocKind::Domain, rest) {
                    return Some(t.indicator(id, None));
                }
            }
            match rest.split_once('.') {
                Some((_, parent)) => rest = parent,
                None => return None,
            }
        }
    }

    pub fn fingerprint(&self, kind: IocKind, value: &str) -> Option<Indicator> {
        let v = if kind == IocKind::Ja3 {
            value.to_ascii_lowercase()
        } else {
            value.to_string()
        };
        self.parts
            .iter()
            .find_map(|t| t.string(kind, &v).map(|id| t.indicator(id, None)))
    }
}

/// An address or `address/prefix-length`.
fn parse_block(v: &str) -> Result<(IpAddr, u8), String> {
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
    Ok((ip, bits))
}

/// The value of an indicator of type `typ` (`ip`, `domain`, `ja3`, `ja4`) as a set holding it
/// reports it in a match ([`Indicator::value`]), or `None` when it does not read.
pub fn canonical(typ: &str, v: &str) -> Option<String> {
    match typ {
        "ip" | "cidr" => {
            let (ip, bits) = parse_block(v).ok()?;
            let net = match ip {
                IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask4(bits))),
                IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask6(bits))),
            };
            Some(block_text(net, bits))
        }
        "domain" => {
            let d = v.trim_end_matches('.').to_ascii_lowercase();
            (!d.is_empty() && d.len() <= 253).then_some(d)
        }
        "ja3" => (v.len() == 32 && v.chars().all(|c| c.is_ascii_hexdigit()))
            .then(|| v.to_ascii_lowercase()),
        "ja4" => (!v.is_empty() && v.len() <= 255).then(|| v.to_string()),
        _ => None,
    }
}

/// Read one line's indicator into `table`.
fn add(table: &mut Table, line: u32, value: &str, description: &str) -> Result<(), String> {
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
    match typ {
        "ip" | "cidr" => {
            let (ip, bits) = parse_block(v)?;
            table.add_block(line, ip, bits, description);
        }
        typ => {
            let kind = match typ {
                "domain" => IocKind::Domain,
                "ja3" => IocKind::Ja3,
                _ => IocKind::Ja4,
            };
            let value = canonical(kind.name(), v).ok_or_else(|| match kind {
                IocKind::Domain => format!("bad domain {v:?}"),
                IocKind::Ja3 => format!("a JA3 is 32 hex digits, not {v:?}"),
                _ => format!("bad JA4 {v:?}"),
            })?;
            table.add_string(line, kind, &value, description);
        }
    }
    Ok(())
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

    #[test]
    fn values_are_canonical_and_the_first_line_listing_one_wins() {
        let set = IocSet::parse(
            "10.1.2.3/8 wide\nip:10.1.2.3\nEvil.Example. first\nevil.example second\n2001:DB8:0:0::1\n",
        );
        assert_eq!(set.len(), 4, "{:?}", set.rejected);
        let wide = set.ip("10.200.0.1".parse().unwrap()).unwrap();
        assert_eq!(
            (wide.value.as_str(), wide.description.as_str()),
            ("10.0.0.0/8", "wide")
        );
        assert_eq!(
            set.ip("10.1.2.3".parse().unwrap()).unwrap().value,
            "10.1.2.3"
        );
        let d = set.domain("www.EVIL.example").unwrap();
        assert_eq!(
            (d.value.as_str(), d.description.as_str(), d.line),
            ("evil.example", "first", 3)
        );
        assert_eq!(
            set.ip("2001:db8::1".parse().unwrap()).unwrap().value,
            "2001:db8::1"
        );
        assert!(set.ip("2001:db8::2".parse().unwrap()).is_none());
        // What a match reports is what `canonical` makes of the listed value.
        assert_eq!(canonical("ip", "10.1.2.3/8").as_deref(), Some("10.0.0.0/8"));
        assert_eq!(
            canonical("ip", "2001:DB8:0:0::1").as_deref(),
            Some("2001:db8::1")
        );
        assert_eq!(
            canonical("domain", "Evil.Example.").as_deref(),
            Some("evil.example")
        );
        assert_eq!(canonical("ip", "10.1.2.3/33"), None);
    }

    #[test]
    fn sets_combine_and_the_most_specific_block_wins_across_them() {
        let a = IocSet::parse("10.0.0.0/8 a\nbad.example a\n");
        let b = IocSet::parse("10.1.0.0/16 b\nja3:0123456789abcdef0123456789abcdef b\n");
        let both = IocSet::union([&a, &b, &IocSet::parse("")]);
        assert_eq!(both.len(), 4);
        assert_eq!(
            both.ip("10.1.2.3".parse().unwrap()).unwrap().description,
            "b"
        );
        assert_eq!(
            both.ip("10.2.2.3".parse().unwrap()).unwrap().description,
            "a"
        );
        assert!(both.domain("x.bad.example").is_some());
        assert!(
            both.fingerprint(IocKind::Ja3, "0123456789ABCDEF0123456789ABCDEF")
                .is_some()
        );
        assert!(IocSet::union([&IocSet::parse("# nothing\n")]).is_empty());
        // The whole space is a block too (its key is 0).
        let all = IocSet::parse("0.0.0.0/0\n");
        assert_eq!(
            all.ip("203.0.113.9".parse().unwrap()).unwrap().value,
            "0.0.0.0/0"
        );
    }

    #[test]
    fn a_million_addresses_take_little_memory() {
        // The size of what is held, not a timing: at most 12 bytes an address without a
        // description (the goal for a million shared indicators on an agent is 50 MB in
        // all).
        let n = 1_000_000u32;
        let mut text = String::with_capacity(n as usize * 16);
        for k in 0..n {
            let [_, b, c, d] = k.to_be_bytes();
            text.push_str(&format!("ip:10.{b}.{c}.{d}\n"));
        }
        let set = IocSet::parse(&text);
        assert_eq!(set.len(), n as usize);
        let per = set.heap_bytes() as f64 / f64::from(n);
        assert!(per <= 12.0, "{per:.1} bytes an address");
        assert_eq!(set.ip("10.0.0.7".parse().unwrap()).unwrap().line, 8);
        assert!(set.ip("10.15.66.63".parse().unwrap()).is_some());
        assert!(set.ip("10.16.0.0".parse().unwrap()).is_none());
    }
}
