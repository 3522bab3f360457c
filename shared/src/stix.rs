//! STIX 2.1 as collectors exchange it: indicators with a pattern for one observable, marked
//! with their TLP 2.0 marking definition. What leaves a collector is built here and what
//! arrives is read back here, so both ends agree on the mapping:
//!
//! | kind          | pattern                                   |
//! |---------------|-------------------------------------------|
//! | `ipv4-addr`   | `[ipv4-addr:value = '198.51.100.7']` (an address or a CIDR) |
//! | `ipv6-addr`   | `[ipv6-addr:value = '2001:db8::1']`       |
//! | `domain-name` | `[domain-name:value = 'example.com']`     |
//! | `url`         | `[url:value = 'http://example.com/a']`    |
//! | `sha256`      | `[file:hashes.'SHA-256' = '…']`           |
//! | `ja3`, `ja4`  | `[x-tls-fingerprint:ja3 = '…']` (STIX has no object for TLS fingerprints; a custom one) |

use serde_json::{Value, json};
use thiserror::Error;

use crate::duration::Civil;
use crate::taxonomy::Tlp;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum StixError {
    #[error("not a STIX 2.1 indicator: {0}")]
    NotIndicator(String),
    #[error("pattern {0:?} is not one Lindi reads (a single comparison of a supported observable)")]
    Pattern(String),
    #[error("bad {kind} value {value:?}: {why}")]
    Value {
        kind: String,
        value: String,
        why: &'static str,
    },
    #[error(
        "unknown indicator kind {0:?} (ipv4-addr, ipv6-addr, domain-name, url, sha256, ja3, ja4)"
    )]
    Kind(String),
}

/// The indicator kinds and their STIX object path.
const KINDS: [(&str, &str); 7] = [
    ("ipv4-addr", "ipv4-addr:value"),
    ("ipv6-addr", "ipv6-addr:value"),
    ("domain-name", "domain-name:value"),
    ("url", "url:value"),
    ("sha256", "file:hashes.'SHA-256'"),
    ("ja3", "x-tls-fingerprint:ja3"),
    ("ja4", "x-tls-fingerprint:ja4"),
];

/// Check and normalise a value of `kind` (lower-case where case does not matter).
pub fn normalise(kind: &str, value: &str) -> Result<String, StixError> {
    let bad = |why| StixError::Value {
        kind: kind.into(),
        value: value.chars().take(200).collect(),
        why,
    };
    let v = value.trim();
    let hex_of = |n: usize| v.len() == n && v.bytes().all(|b| b.is_ascii_hexdigit());
    match kind {
        "ipv4-addr" => {
            let (addr, prefix) = v.split_once('/').unwrap_or((v, "32"));
            addr.parse::<std::net::Ipv4Addr>()
                .map_err(|_| bad("not an IPv4 address"))?;
            match prefix.parse::<u8>() {
                Ok(p) if p <= 32 => Ok(v.to_string()),
                _ => Err(bad("bad prefix length")),
            }
        }
        "ipv6-addr" => {
            let (addr, prefix) = v.split_once('/').unwrap_or((v, "128"));
            let a = addr
                .parse::<std::net::Ipv6Addr>()
                .map_err(|_| bad("not an IPv6 address"))?;
            match prefix.parse::<u8>() {
                Ok(p) if p <= 128 => Ok(if v.contains('/') {
                    format!("{a}/{p}")
                } else {
                    a.to_string()
                }),
                _ => Err(bad("bad prefix length")),
            }
        }
        "domain-name" => {
            let d = v.trim_end_matches('.').to_ascii_lowercase();
            let ok = !d.is_empty()
                && d.len() <= 253
                && d.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                });
            if ok {
                Ok(d)
            } else {
                Err(bad("not a domain name"))
            }
        }
        "url" => {
            let ok = v.contains("://")
                && v.len() <= 8192
                && !v.chars().any(|c| c.is_whitespace() || c.is_control());
            if ok {
                Ok(v.to_string())
            } else {
                Err(bad("not a URL"))
            }
        }
        "sha256" if hex_of(64) => Ok(v.to_ascii_lowercase()),
        "ja3" if hex_of(32) => Ok(v.to_ascii_lowercase()),
        "sha256" => Err(bad("not 64 hex digits")),
        "ja3" => Err(bad("not 32 hex digits (an MD5)")),
        "ja4" => {
            let parts: Vec<&str> = v.split('_').collect();
            let ok = parts.len() == 3
                && parts[0].len() == 10
                && parts[0].is_ascii()
                && parts[1..]
                    .iter()
                    .all(|p| p.len() == 12 && p.bytes().all(|b| b.is_ascii_hexdigit()));
            if ok {
                Ok(v.to_ascii_lowercase())
            } else {
                Err(bad("not a JA4 (a_b_c)"))
            }
        }
        other => Err(StixError::Kind(other.into())),
    }
}

/// `2026-12-05T03:38:07.123Z`.
pub fn timestamp(ns: i64) -> String {
    let c = Civil::from_unix(ns.div_euclid(1_000_000_000));
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        c.year,
        c.month,
        c.day,
        c.hour,
        c.minute,
        c.second,
        ns.rem_euclid(1_000_000_000) / 1_000_000
    )
}

/// Unix nanoseconds of an RFC 3339 UTC timestamp (`Z`, optional fraction).
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || !s.ends_with('Z') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let frac = &s[19..s.len() - 1];
    let nanos = match frac.strip_prefix('.') {
        None if frac.is_empty() => 0,
        Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|c| c.is_ascii_digit()) => {
            f.parse::<i64>().ok()? * 10i64.pow(9 - f.len() as u32)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant), the inverse of Civil::from_unix.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// Like [`parse_timestamp`], also taking a numeric offset (`+00:00`, `-05:00`) and up to
/// nanosecond fractions with more digits cut (as MISP writes `first_seen`).
pub fn parse_timestamp_lax(s: &str) -> Option<i64> {
    if s.ends_with('Z') {
        return parse_timestamp(s);
    }
    let cut = s.len().checked_sub(6)?;
    let (time, offset) = (s.get(..cut)?, s.get(cut..)?);
    let sign = match offset.as_bytes().first()? {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let oh: i64 = offset.get(1..3)?.parse().ok()?;
    let om: i64 = offset.get(4..6)?.parse().ok()?;
    if offset.as_bytes().get(3) != Some(&b':') || oh > 23 || om > 59 {
        return None;
    }
    let (base, frac) = match time.split_once('.') {
        // Digits only (so cutting at nine bytes cuts no character), at most nine kept.
        Some((b, f)) if f.bytes().all(|c| c.is_ascii_digit()) => (b, &f[..f.len().min(9)]),
        Some(_) => return None,
        None => (time, ""),
    };
    let z = if frac.is_empty() {
        format!("{base}Z")
    } else {
        format!("{base}.{frac}Z")
    };
    parse_timestamp(&z)?.checked_sub(sign * (oh * 3600 + om * 60) * 1_000_000_000)
}

/// A STIX id of `object_type` from 16 bytes laid out as a UUID of `version` (4: random,
/// 5: name-based).
fn uuid_id(object_type: &str, mut b: [u8; 16], version: u8) -> String {
    b[6] = (b[6] & 0x0f) | (version << 4);
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{object_type}--{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A new random STIX id of `object_type` (`indicator--` and a version 4 UUID).
pub fn new_id(object_type: &str) -> Option<String> {
    Some(uuid_id(
        object_type,
        crate::token::random_bytes::<16>().ok()?,
        4,
    ))
}

/// A deterministic STIX id of `object_type` from `parts` (the same everywhere for the same
/// parts): a name-based UUID (version 5 layout, SHA-256 truncated).
pub fn stable_id(object_type: &str, parts: &[&str]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        ctx.update(p.as_bytes());
        ctx.update(&[0]);
    }
    let mut b = [0u8; 16];
    b.copy_from_slice(&ctx.finish().as_ref()[..16]);
    uuid_id(object_type, b, 5)
}

/// The strictest TLP marking of an object; TLP:AMBER when it has none (shared with care,
/// not further, rather than taken as free to share).
fn marking_label(o: &Value) -> Tlp {
    o.get("object_marking_refs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(tlp_of_marking)
        .max()
        .unwrap_or(Tlp::Amber)
}

/// Check an object's type (and that it is STIX 2.1); the error names what was expected.
fn expect_type(o: &Value, want: &str) -> Result<(), StixError> {
    let s = |k: &str| o.get(k).and_then(Value::as_str);
    if s("type") != Some(want) || s("spec_version") != Some("2.1") {
        return Err(StixError::NotIndicator(format!(
            "{want}: type must be {want}, spec_version 2.1"
        )));
    }
    Ok(())
}

/// The TLP 2.0 property extension's id (OASIS CTI TC).
pub const TLP2_EXTENSION: &str = "extension-definition--60a3c5c5-0d10-413e-aab3-9e08dde9e88d";

/// The TLP 1.0 markings STIX 2.1 predefines, read as their TLP 2.0 equivalents.
const TLP1_MARKINGS: [(&str, Tlp); 4] = [
    (
        "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9",
        Tlp::Clear,
    ),
    (
        "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da",
        Tlp::Green,
    ),
    (
        "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82",
        Tlp::Amber,
    ),
    (
        "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed",
        Tlp::Red,
    ),
];

/// The label a marking-definition id stands for (TLP 2.0, or TLP 1.0 read as 2.0).
pub fn tlp_of_marking(id: &str) -> Option<Tlp> {
    Tlp::ALL
        .into_iter()
        .find(|t| t.stix_marking_id() == id)
        .or_else(|| {
            TLP1_MARKINGS
                .iter()
                .find(|(m, _)| *m == id)
                .map(|(_, t)| *t)
        })
}

/// Whether the serialised object `text` carries TLP marking `t` and no other TLP marking
/// (what [`set_tlp`] leaves), judged on the text alone, so that a stored object can travel
/// without being parsed and written again. A marking id quoted elsewhere in the object can
/// only make this false (the object then takes the slow path) or leave the object marked
/// stricter than `t`, never weaker.
pub fn marked_exactly(text: &str, t: Tlp) -> bool {
    text.contains(t.stix_marking_id())
        && Tlp::ALL
            .into_iter()
            .filter(|o| *o != t)
            .all(|o| !text.contains(o.stix_marking_id()))
        && TLP1_MARKINGS.iter().all(|(id, _)| !text.contains(id))
}

/// `text` marked `t` alone: as it is when [`marked_exactly`], else parsed, re-marked and
/// written again. `None` when it is not a JSON object.
pub fn with_tlp(text: &str, t: Tlp) -> Option<String> {
    if marked_exactly(text, t) {
        return Some(text.to_string());
    }
    let mut v: Value = serde_json::from_str(text).ok()?;
    v.is_object().then(|| {
        set_tlp(&mut v, t);
        v.to_string()
    })
}

/// The TLP 2.0 marking-definition object for `t`, as OASIS defines it.
pub fn tlp_marking(t: Tlp) -> Value {
    json!({
        "type": "marking-definition",
        "spec_version": "2.1",
        "id": t.stix_marking_id(),
        "created": "2022-10-01T00:00:00.000Z",
        "name": t.label(),
        "extensions": {
            TLP2_EXTENSION: {
                "extension_type": "property-extension",
                "tlp_2_0": t.label()[4..].to_ascii_lowercase(),
            }
        }
    })
}

/// Mark `o` with `t` alone among TLP markings (other markings stay).
pub fn set_tlp(o: &mut Value, t: Tlp) {
    let mut refs: Vec<Value> = o
        .get("object_marking_refs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|m| m.as_str().is_none_or(|m| tlp_of_marking(m).is_none()))
        .cloned()
        .collect();
    refs.push(json!(t.stix_marking_id()));
    if let Some(obj) = o.as_object_mut() {
        obj.insert("object_marking_refs".into(), Value::Array(refs));
    }
}

/// A STIX 2.1 bundle of `objects` with the TLP marking definitions they refer to.
pub fn bundle(objects: Vec<Value>) -> Option<Value> {
    let mut used: Vec<Tlp> = objects
        .iter()
        .filter_map(|o| o.get("object_marking_refs").and_then(Value::as_array))
        .flatten()
        .filter_map(|m| m.as_str().and_then(tlp_of_marking))
        .collect();
    used.sort();
    used.dedup();
    let mut all: Vec<Value> = used.into_iter().map(tlp_marking).collect();
    all.extend(objects);
    Some(json!({"type": "bundle", "id": new_id("bundle")?, "objects": all}))
}

/// What a bundle held: its indicators Lindi can read, and why the others were skipped
/// (object id or type, reason).
#[derive(Debug, Default)]
pub struct BundleContents {
    pub indicators: Vec<(IndicatorFacts, Value)>,
    pub skipped: Vec<(String, String)>,
}

/// Most objects read from one bundle.
pub const MAX_BUNDLE_OBJECTS: usize = 1_000_000;

/// Read a STIX 2.1 bundle's indicators; other objects (marking definitions, identities,
/// relationships) are passed over, and indicators Lindi cannot express are listed.
pub fn read_bundle(v: &Value) -> Result<BundleContents, StixError> {
    if v.get("type").and_then(Value::as_str) != Some("bundle") {
        return Err(StixError::NotIndicator("not a STIX bundle".into()));
    }
    let objects = v
        .get("objects")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut out = BundleContents::default();
    for o in objects.iter().take(MAX_BUNDLE_OBJECTS) {
        let kind = o.get("type").and_then(Value::as_str).unwrap_or("?");
        if kind != "indicator" {
            continue;
        }
        match read_indicator(o) {
            Ok(f) => out.indicators.push((f, o.clone())),
            Err(e) => out.skipped.push((
                o.get("id")
                    .and_then(Value::as_str)
                    .unwrap_or(kind)
                    .chars()
                    .take(100)
                    .collect(),
                e.to_string(),
            )),
        }
    }
    if objects.len() > MAX_BUNDLE_OBJECTS {
        out.skipped.push((
            "bundle".into(),
            format!(
                "{} objects past the first {MAX_BUNDLE_OBJECTS} were not read",
                objects.len() - MAX_BUNDLE_OBJECTS
            ),
        ));
    }
    Ok(out)
}

/// An indicator as this collector describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct IndicatorFacts {
    pub id: String,
    pub kind: String,
    pub value: String,
    pub label: Tlp,
    pub name: String,
    pub confidence: u8,
    pub created_ns: i64,
    pub modified_ns: i64,
    pub valid_until_ns: Option<i64>,
}

fn quote(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\'', "\\'")
}

/// The STIX 2.1 indicator object for `f` (its value already [`normalise`]d).
pub fn indicator(f: &IndicatorFacts) -> Result<Value, StixError> {
    let path = KINDS
        .iter()
        .find(|(k, _)| *k == f.kind)
        .ok_or_else(|| StixError::Kind(f.kind.clone()))?
        .1;
    let mut o = json!({
        "type": "indicator",
        "spec_version": "2.1",
        "id": f.id,
        "created": timestamp(f.created_ns),
        "modified": timestamp(f.modified_ns),
        "name": f.name,
        "description": format!("{} {}", f.kind, f.value),
        "indicator_types": ["malicious-activity"],
        "pattern": format!("[{path} = '{}']", quote(&f.value)),
        "pattern_type": "stix",
        "pattern_version": "2.1",
        "valid_from": timestamp(f.created_ns),
        "confidence": f.confidence,
        "object_marking_refs": [f.label.stix_marking_id()],
    });
    if let Some(until) = f.valid_until_ns {
        o["valid_until"] = json!(timestamp(until));
    }
    Ok(o)
}

/// Read an indicator back: one comparison of a supported observable. Without a TLP marking
/// it is taken as TLP:AMBER (shared with care, not further) rather than as free to share.
pub fn read_indicator(o: &Value) -> Result<IndicatorFacts, StixError> {
    let s = |k: &str| o.get(k).and_then(Value::as_str);
    let not = |why: &str| StixError::NotIndicator(why.to_string());
    expect_type(o, "indicator")?;
    let id = s("id")
        .filter(|i| i.starts_with("indicator--") && i.len() == 47 && i.is_ascii())
        .ok_or_else(|| not("bad id"))?;
    if s("pattern_type") != Some("stix") {
        return Err(not("pattern_type must be stix"));
    }
    let pattern = s("pattern").ok_or_else(|| not("no pattern"))?;
    let (kind, value) = parse_pattern(pattern)?;
    let value = normalise(kind, &value)?;
    let created_ns = s("created")
        .and_then(parse_timestamp)
        .ok_or_else(|| not("bad created"))?;
    let modified_ns = s("modified")
        .and_then(parse_timestamp)
        .unwrap_or(created_ns);
    let valid_until_ns = match s("valid_until") {
        None => None,
        Some(t) => Some(parse_timestamp(t).ok_or_else(|| not("bad valid_until"))?),
    };
    let label = marking_label(o);
    Ok(IndicatorFacts {
        id: id.to_string(),
        kind: kind.to_string(),
        value,
        label,
        name: s("name").unwrap_or_default().chars().take(500).collect(),
        confidence: o
            .get("confidence")
            .and_then(Value::as_u64)
            .map_or(50, |c| c.min(100) as u8),
        created_ns,
        modified_ns,
        valid_until_ns,
    })
}

/// A sighting as collectors exchange it: how often the constituents of one sector (under a
/// pseudonym per link, or by name) matched an indicator, and when.
#[derive(Clone, Debug, PartialEq)]
pub struct SightingFacts {
    /// `sighting--…`, stable per indicator, sector and constituent.
    pub id: String,
    pub indicator_id: String,
    pub count: u64,
    pub first_seen_ns: i64,
    pub last_seen_ns: i64,
    /// The reporting collector's name.
    pub sector: String,
    /// The constituent, or its pseudonym.
    pub constituent: String,
    pub label: Tlp,
    pub modified_ns: i64,
}

/// The STIX 2.1 sighting for `f`. STIX names where it was seen by identity objects; the
/// sector and constituent are also given as `x_lindi_` properties so the receiver need not
/// hold those identities.
pub fn sighting(f: &SightingFacts) -> Value {
    json!({
        "type": "sighting",
        "spec_version": "2.1",
        "id": f.id,
        "created": timestamp(f.first_seen_ns),
        "modified": timestamp(f.modified_ns.max(f.first_seen_ns)),
        "sighting_of_ref": f.indicator_id,
        "count": f.count.min(999_999_999),
        "first_seen": timestamp(f.first_seen_ns),
        "last_seen": timestamp(f.last_seen_ns.max(f.first_seen_ns)),
        "x_lindi_sector": f.sector,
        "x_lindi_constituent": f.constituent,
        "object_marking_refs": [f.label.stix_marking_id()],
    })
}

/// Read a sighting back.
pub fn read_sighting(o: &Value) -> Result<SightingFacts, StixError> {
    let s = |k: &str| o.get(k).and_then(Value::as_str);
    let not = |why: &str| StixError::NotIndicator(format!("sighting: {why}"));
    expect_type(o, "sighting")?;
    let stix_id = |v: Option<&str>, prefix: &str| {
        v.filter(|i| i.starts_with(prefix) && i.len() == prefix.len() + 36 && i.is_ascii())
            .map(str::to_string)
    };
    let text = |k: &str| -> String { s(k).unwrap_or_default().chars().take(128).collect() };
    let first_seen_ns = s("first_seen")
        .and_then(parse_timestamp)
        .ok_or_else(|| not("bad first_seen"))?;
    Ok(SightingFacts {
        id: stix_id(s("id"), "sighting--").ok_or_else(|| not("bad id"))?,
        indicator_id: stix_id(s("sighting_of_ref"), "indicator--")
            .ok_or_else(|| not("sighting_of_ref is not an indicator"))?,
        count: o.get("count").and_then(Value::as_u64).unwrap_or(1),
        first_seen_ns,
        last_seen_ns: s("last_seen")
            .and_then(parse_timestamp)
            .unwrap_or(first_seen_ns),
        sector: text("x_lindi_sector"),
        constituent: text("x_lindi_constituent"),
        label: marking_label(o),
        modified_ns: s("modified")
            .and_then(parse_timestamp)
            .unwrap_or(first_seen_ns),
    })
}

/// An advisory (an alert or warning a team publishes): a STIX 2.1 `report` of type
/// `threat-report` whose `object_refs` are its indicators, with the rest in `x_lindi_`
/// properties.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdvisoryFacts {
    /// `report--…`.
    pub id: String,
    pub title: String,
    pub summary: String,
    pub affected_products: Vec<String>,
    /// Indicator STIX ids.
    pub indicators: Vec<String>,
    pub recommended_actions: String,
    pub label: Tlp,
    /// The publishing team.
    pub publisher: String,
    pub published_ns: i64,
    pub modified_ns: i64,
}

/// Most characters of an advisory's texts and entries.
pub const MAX_ADVISORY_TEXT: usize = 20_000;

pub fn advisory(f: &AdvisoryFacts) -> Value {
    let mut refs: Vec<Value> = f.indicators.iter().map(|i| json!(i)).collect();
    if refs.is_empty() {
        // STIX requires at least one reference: the marking stands in.
        refs.push(json!(f.label.stix_marking_id()));
    }
    json!({
        "type": "report",
        "spec_version": "2.1",
        "id": f.id,
        "created": timestamp(f.published_ns),
        "modified": timestamp(f.modified_ns.max(f.published_ns)),
        "name": f.title,
        "description": f.summary,
        "report_types": ["threat-report"],
        "published": timestamp(f.published_ns),
        "object_refs": refs,
        "x_lindi_affected_products": f.affected_products,
        "x_lindi_recommended_actions": f.recommended_actions,
        "x_lindi_publisher": f.publisher,
        "object_marking_refs": [f.label.stix_marking_id()],
    })
}

pub fn read_advisory(o: &Value) -> Result<AdvisoryFacts, StixError> {
    let s = |k: &str| o.get(k).and_then(Value::as_str);
    let not = |why: &str| StixError::NotIndicator(format!("advisory: {why}"));
    expect_type(o, "report")?;
    let id = s("id")
        .filter(|i| i.starts_with("report--") && i.len() == 44 && i.is_ascii())
        .ok_or_else(|| not("bad id"))?;
    let text = |k: &str| -> String {
        s(k).unwrap_or_default()
            .chars()
            .take(MAX_ADVISORY_TEXT)
            .collect()
    };
    let list = |k: &str, prefix: &str| -> Vec<String> {
        o.get(k)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|v| v.starts_with(prefix))
            .take(10_000)
            .map(|v| v.chars().take(500).collect())
            .collect()
    };
    let published_ns = s("published")
        .and_then(parse_timestamp)
        .ok_or_else(|| not("bad published"))?;
    let title = text("name");
    if title.trim().is_empty() {
        return Err(not("no name"));
    }
    Ok(AdvisoryFacts {
        id: id.to_string(),
        title,
        summary: text("description"),
        affected_products: list("x_lindi_affected_products", ""),
        indicators: list("object_refs", "indicator--"),
        recommended_actions: text("x_lindi_recommended_actions"),
        label: marking_label(o),
        publisher: text("x_lindi_publisher"),
        published_ns,
        modified_ns: s("modified")
            .and_then(parse_timestamp)
            .unwrap_or(published_ns),
    })
}

/// An incident summary: what kind of incident a sector handles, how bad, in what state,
/// since when, and for which constituent (a pseudonym unless the link shares identities).
/// No title, observables or notes: those stay with the ticket.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IncidentFacts {
    /// `incident--…`.
    pub id: String,
    /// RSIT `class/type`.
    pub rsit_type: String,
    pub severity: String,
    pub state: String,
    pub closed: bool,
    pub sector: String,
    pub constituent: String,
    pub label: Tlp,
    pub opened_ns: i64,
    pub resolved_ns: Option<i64>,
    pub modified_ns: i64,
}

pub fn incident(f: &IncidentFacts) -> Value {
    let mut o = json!({
        "type": "incident",
        "spec_version": "2.1",
        "id": f.id,
        "created": timestamp(f.opened_ns),
        "modified": timestamp(f.modified_ns.max(f.opened_ns)),
        "name": format!("{} incident", f.rsit_type),
        "x_lindi_rsit_type": f.rsit_type,
        "x_lindi_severity": f.severity,
        "x_lindi_state": f.state,
        "x_lindi_closed": f.closed,
        "x_lindi_sector": f.sector,
        "x_lindi_constituent": f.constituent,
        "object_marking_refs": [f.label.stix_marking_id()],
    });
    if let Some(r) = f.resolved_ns {
        o["x_lindi_resolved"] = json!(timestamp(r));
    }
    o
}

pub fn read_incident(o: &Value) -> Result<IncidentFacts, StixError> {
    let s = |k: &str| o.get(k).and_then(Value::as_str);
    let not = |why: &str| StixError::NotIndicator(format!("incident: {why}"));
    expect_type(o, "incident")?;
    let id = s("id")
        .filter(|i| i.starts_with("incident--") && i.len() == 46 && i.is_ascii())
        .ok_or_else(|| not("bad id"))?;
    let text = |k: &str| -> String { s(k).unwrap_or_default().chars().take(128).collect() };
    let opened_ns = s("created")
        .and_then(parse_timestamp)
        .ok_or_else(|| not("bad created"))?;
    Ok(IncidentFacts {
        id: id.to_string(),
        rsit_type: text("x_lindi_rsit_type"),
        severity: text("x_lindi_severity"),
        state: text("x_lindi_state"),
        closed: o
            .get("x_lindi_closed")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        sector: text("x_lindi_sector"),
        constituent: text("x_lindi_constituent"),
        label: marking_label(o),
        opened_ns,
        resolved_ns: s("x_lindi_resolved").and_then(parse_timestamp),
        modified_ns: s("modified").and_then(parse_timestamp).unwrap_or(opened_ns),
    })
}

/// A team's RFC 2350 profile as a STIX 2.1 `identity` (an organisation) carrying the whole
/// profile in `x_lindi_rfc2350`.
pub fn team_profile(
    id: &str,
    p: &crate::profile::TeamProfile,
    label: Tlp,
    modified_ns: i64,
) -> Value {
    json!({
        "type": "identity",
        "spec_version": "2.1",
        "id": id,
        "created": timestamp(modified_ns),
        "modified": timestamp(modified_ns),
        "name": p.team_name,
        "identity_class": "organization",
        "contact_information": format!("{} {}", p.email, p.telephone).trim().to_string(),
        "x_lindi_rfc2350": p,
        "object_marking_refs": [label.stix_marking_id()],
    })
}

/// Read a team profile back (checked as a profile is when saved).
pub fn read_team_profile(o: &Value) -> Result<(crate::profile::TeamProfile, Tlp, i64), StixError> {
    let not = |why: String| StixError::NotIndicator(format!("team profile: {why}"));
    expect_type(o, "identity")?;
    let p: crate::profile::TeamProfile = o
        .get("x_lindi_rfc2350")
        .cloned()
        .ok_or_else(|| not("no x_lindi_rfc2350".into()))
        .and_then(|v| serde_json::from_value(v).map_err(|e| not(e.to_string())))?;
    p.validate().map_err(not)?;
    let label = marking_label(o);
    let modified = o
        .get("modified")
        .and_then(Value::as_str)
        .and_then(parse_timestamp)
        .ok_or_else(|| not("bad modified".into()))?;
    Ok((p, label, modified))
}

/// What a team tells a detector bundle's origin about it: whether it declined the bundle,
/// and how many of its agents run each version.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BundleStatusFacts {
    /// The bundle's name.
    pub name: String,
    pub declined: bool,
    /// (version, agents running it), by version.
    pub versions: Vec<(String, u64)>,
    pub modified_ns: i64,
}

/// Most versions a status lists.
const MAX_STATUS_VERSIONS: usize = 100;

/// A bundle status as a STIX 2.1 custom object (`x-lindi-bundle-status`), labelled `label`.
pub fn bundle_status(id: &str, f: &BundleStatusFacts, label: Tlp) -> Value {
    json!({
        "type": "x-lindi-bundle-status",
        "spec_version": "2.1",
        "id": id,
        "created": timestamp(f.modified_ns),
        "modified": timestamp(f.modified_ns),
        "name": f.name,
        "declined": f.declined,
        "versions": f.versions.iter().map(|(v, n)| json!({"version": v, "agents": n})).collect::<Vec<_>>(),
        "object_marking_refs": [label.stix_marking_id()],
    })
}

/// Read a bundle status back; names and versions are bounded as bundle names are.
pub fn read_bundle_status(o: &Value) -> Result<BundleStatusFacts, StixError> {
    let not = |why: &str| StixError::NotIndicator(format!("bundle status: {why}"));
    expect_type(o, "x-lindi-bundle-status")?;
    let short = |s: &str| !s.is_empty() && s.len() <= 64 && !s.chars().any(char::is_control);
    let name = o
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| short(n))
        .ok_or_else(|| not("bad name"))?;
    let declined = o
        .get("declined")
        .and_then(Value::as_bool)
        .ok_or_else(|| not("no declined"))?;
    let list = o
        .get("versions")
        .and_then(Value::as_array)
        .filter(|l| l.len() <= MAX_STATUS_VERSIONS)
        .ok_or_else(|| not("bad versions"))?;
    let mut versions = vec![];
    for v in list {
        let version = v
            .get("version")
            .and_then(Value::as_str)
            .filter(|s| short(s))
            .ok_or_else(|| not("bad version"))?;
        let agents = v
            .get("agents")
            .and_then(Value::as_u64)
            .ok_or_else(|| not("bad agent count"))?;
        versions.push((version.to_string(), agents));
    }
    let modified_ns = o
        .get("modified")
        .and_then(Value::as_str)
        .and_then(parse_timestamp)
        .ok_or_else(|| not("bad modified"))?;
    Ok(BundleStatusFacts {
        name: name.to_string(),
        declined,
        versions,
        modified_ns,
    })
}

/// `[path = 'value']` for one of [`KINDS`].
fn parse_pattern(p: &str) -> Result<(&'static str, String), StixError> {
    let bad = || StixError::Pattern(p.chars().take(200).collect());
    let inner = p
        .trim()
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .ok_or_else(bad)?;
    let (path, rest) = inner.split_once('=').ok_or_else(bad)?;
    let kind = KINDS
        .iter()
        .find(|(_, k)| *k == path.trim())
        .ok_or_else(bad)?
        .0;
    let quoted = rest
        .trim()
        .strip_prefix('\'')
        .and_then(|r| r.strip_suffix('\''))
        .ok_or_else(bad)?;
    let mut value = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ ('\\' | '\'')) => value.push(e),
                _ => return Err(bad()),
            },
            '\'' => return Err(bad()),
            c => value.push(c),
        }
    }
    Ok((kind, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(kind: &str, value: &str, label: Tlp) -> IndicatorFacts {
        IndicatorFacts {
            id: new_id("indicator").unwrap(),
            kind: kind.into(),
            value: normalise(kind, value).unwrap(),
            label,
            name: format!("{kind} {value}"),
            confidence: 80,
            created_ns: 1_796_441_210_485_117_344,
            modified_ns: 1_796_441_210_485_117_344,
            valid_until_ns: Some(1_799_000_000_000_000_000),
        }
    }

    #[test]
    fn every_kind_round_trips_with_its_label() {
        let cases = [
            ("ipv4-addr", "198.51.100.7"),
            ("ipv4-addr", "203.0.113.0/24"),
            ("ipv6-addr", "2001:DB8::1"),
            ("domain-name", "Evil.Example.COM."),
            ("url", "http://example.com/it's\\here"),
            ("sha256", &"AB".repeat(32)),
            ("ja3", &"0f".repeat(16)),
            ("ja4", "t13d1516h2_8daaf6152771_02713d6af862"),
        ];
        for (i, (kind, value)) in cases.iter().enumerate() {
            let label = Tlp::ALL[i % 5];
            let f = facts(kind, value, label);
            let o = indicator(&f).unwrap();
            let back = read_indicator(&o).unwrap();
            // Times keep millisecond precision.
            let ms = |ns: i64| ns / 1_000_000 * 1_000_000;
            assert_eq!(
                back,
                IndicatorFacts {
                    created_ns: ms(f.created_ns),
                    modified_ns: ms(f.modified_ns),
                    ..f.clone()
                },
                "{o}"
            );
        }
    }

    #[test]
    fn values_are_checked() {
        assert!(normalise("ipv4-addr", "300.1.1.1").is_err());
        assert!(normalise("ipv4-addr", "1.2.3.4/33").is_err());
        assert!(normalise("domain-name", "a..b").is_err());
        assert!(normalise("sha256", "abc").is_err());
        assert!(normalise("ja4", "x_y_z").is_err());
        assert!(normalise("url", "no scheme").is_err());
        assert_eq!(normalise("mac", "x"), Err(StixError::Kind("mac".into())));
        assert_eq!(
            normalise("domain-name", "A.Example."),
            Ok("a.example".into())
        );
    }

    #[test]
    fn an_object_marked_as_wanted_passes_as_it_is_and_any_other_is_re_marked() {
        let mut o = json!({"type": "indicator", "id": "indicator--1"});
        set_tlp(&mut o, Tlp::Green);
        let text = o.to_string();
        assert!(marked_exactly(&text, Tlp::Green));
        assert!(!marked_exactly(&text, Tlp::Amber));
        assert_eq!(with_tlp(&text, Tlp::Green).as_deref(), Some(text.as_str()));
        let amber: Value = serde_json::from_str(&with_tlp(&text, Tlp::Amber).unwrap()).unwrap();
        assert_eq!(
            amber["object_marking_refs"],
            json!([Tlp::Amber.stix_marking_id()])
        );
        // Two TLP markings (or a TLP 1.0 one) are not "exactly": re-marked.
        let two = text.replace(']', &format!(",\"{}\"]", Tlp::Red.stix_marking_id()));
        assert!(!marked_exactly(&two, Tlp::Green));
        let red: Value = serde_json::from_str(&with_tlp(&two, Tlp::Red).unwrap()).unwrap();
        assert_eq!(
            red["object_marking_refs"],
            json!([Tlp::Red.stix_marking_id()])
        );
        assert_eq!(with_tlp("[1]", Tlp::Green), None);
    }

    #[test]
    fn bundle_statuses_round_trip_and_bad_ones_are_refused() {
        let f = BundleStatusFacts {
            name: "national".into(),
            declined: false,
            versions: vec![("1.0.0".into(), 3), ("1.0.1".into(), 1)],
            modified_ns: 1_800_000_000_000_000_000,
        };
        let o = bundle_status("x-lindi-bundle-status--1", &f, Tlp::Green);
        assert_eq!(read_bundle_status(&o).unwrap(), f);
        let mut bad = o.clone();
        bad["versions"][0]["agents"] = json!(-1);
        assert!(read_bundle_status(&bad).is_err());
        let mut bad = o;
        bad["name"] = json!("x".repeat(65));
        assert!(read_bundle_status(&bad).is_err());
    }

    #[test]
    fn timestamps_round_trip_and_bad_ones_are_refused() {
        assert_eq!(
            parse_timestamp_lax("2026-12-05T04:38:07.5+01:00"),
            Some(1_796_441_887_500_000_000)
        );
        // A fraction with a multi-byte character is refused, not cut through.
        assert_eq!(
            parse_timestamp_lax("2026-12-05T04:38:07.12345678é+01:00"),
            None
        );
        for ns in [0, 1_796_441_210_485_000_000, 951_782_400_000_000_000] {
            assert_eq!(
                parse_timestamp(&timestamp(ns)),
                Some(ns),
                "{}",
                timestamp(ns)
            );
        }
        assert_eq!(
            timestamp(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            parse_timestamp("2026-12-05T03:38:07Z"),
            Some(1_796_441_887_000_000_000)
        );
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "2026-12-05 03:38:07Z",
            "2026-12-05T03:38:07+01:00",
            "2026-12-05T03:38:07.Z",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn sightings_round_trip_and_bad_ones_are_refused() {
        let f = SightingFacts {
            id: new_id("sighting").unwrap(),
            indicator_id: new_id("indicator").unwrap(),
            count: 7,
            first_seen_ns: 1_796_441_000_000_000_000,
            last_seen_ns: 1_796_442_000_000_000_000,
            sector: "banking".into(),
            constituent: "c-0011223344556677".into(),
            label: Tlp::Green,
            modified_ns: 1_796_443_000_000_000_000,
        };
        let o = sighting(&f);
        assert_eq!(read_sighting(&o).unwrap(), f);
        let mut bad = o.clone();
        bad["sighting_of_ref"] = json!("malware--0b1c1a1e-0000-4000-8000-000000000000");
        assert!(read_sighting(&bad).is_err());
        assert!(read_sighting(&json!({"type": "sighting"})).is_err());
    }

    #[test]
    fn incidents_round_trip() {
        let f = IncidentFacts {
            id: new_id("incident").unwrap(),
            rsit_type: "malicious-code/c2-server".into(),
            severity: "high".into(),
            state: "triage".into(),
            closed: false,
            sector: "banking".into(),
            constituent: "c-0011223344556677".into(),
            label: Tlp::Green,
            opened_ns: 1_796_441_000_000_000_000,
            resolved_ns: Some(1_796_442_000_000_000_000),
            modified_ns: 1_796_442_000_000_000_000,
        };
        assert_eq!(read_incident(&incident(&f)).unwrap(), f);
    }

    #[test]
    fn advisories_round_trip() {
        let f = AdvisoryFacts {
            id: new_id("report").unwrap(),
            title: "Phishing against online banking".into(),
            summary: "A kit imitating three banks' login pages.".into(),
            affected_products: vec!["Online banking".into()],
            indicators: vec![new_id("indicator").unwrap()],
            recommended_actions: "Block the domains; warn customers.".into(),
            label: Tlp::Clear,
            publisher: "CSIRT-NAT".into(),
            published_ns: 1_796_441_000_000_000_000,
            modified_ns: 1_796_441_000_000_000_000,
        };
        assert_eq!(read_advisory(&advisory(&f)).unwrap(), f);
        let none = AdvisoryFacts {
            indicators: vec![],
            ..f.clone()
        };
        assert_eq!(read_advisory(&advisory(&none)).unwrap(), none);
    }

    #[test]
    fn foreign_patterns_and_objects_are_refused_not_guessed() {
        let mut o = indicator(&facts("ipv4-addr", "198.51.100.7", Tlp::Green)).unwrap();
        for p in [
            "[ipv4-addr:value = '1.2.3.4' OR ipv4-addr:value = '5.6.7.8']",
            "[process:name = 'x']",
            "[ipv4-addr:value = 'a'b']",
            "ipv4-addr:value = '1.2.3.4'",
        ] {
            o["pattern"] = json!(p);
            assert!(read_indicator(&o).is_err(), "{p}");
        }
        let mut unlabelled = indicator(&facts("ipv4-addr", "198.51.100.7", Tlp::Clear)).unwrap();
        unlabelled
            .as_object_mut()
            .unwrap()
            .remove("object_marking_refs");
        assert_eq!(read_indicator(&unlabelled).unwrap().label, Tlp::Amber);
        assert!(read_indicator(&json!({"type": "malware"})).is_err());
    }
}
