//! MISP feeds (the format `misp-feed` and MISP's "feed" export write): `manifest.json`, an
//! object keyed by event UUID, and one `UUID.json` per event holding `{"Event": {…}}` with its
//! `Attribute`s and the attributes of its `Object`s. Attributes marked `to_ids` whose type
//! maps to an indicator kind become indicators; the TLP comes from the attribute's tags, else
//! the event's, else the feed's default.

use serde_json::Value;

use crate::stix::{self, IndicatorFacts};
use crate::taxonomy::Tlp;

/// MISP attribute types Lindi reads, and the indicator kind each becomes (`None`: an IP,
/// whose kind follows from the address). For `a|b` types the part used is given.
fn kind_of(misp_type: &str) -> Option<(Option<&'static str>, Part)> {
    Some(match misp_type {
        "ip-dst" | "ip-src" => (None, Part::Whole),
        "ip-dst|port" | "ip-src|port" => (None, Part::First),
        "domain" | "hostname" => (Some("domain-name"), Part::Whole),
        "domain|ip" | "hostname|port" => (Some("domain-name"), Part::First),
        "url" | "link" => (Some("url"), Part::Whole),
        "sha256" => (Some("sha256"), Part::Whole),
        "filename|sha256" => (Some("sha256"), Part::Second),
        "ja3-fingerprint-md5" => (Some("ja3"), Part::Whole),
        _ => return None,
    })
}

#[derive(Clone, Copy)]
enum Part {
    Whole,
    First,
    Second,
}

/// The label of MISP tags (`tlp:green`, `tlp:white`, `tlp:amber+strict`, …), strictest wins.
pub fn tlp_of_tags(tags: Option<&Value>) -> Option<Tlp> {
    tags?
        .as_array()?
        .iter()
        .filter_map(|t| t.get("name")?.as_str())
        .filter_map(|n| {
            let n = n.trim().to_ascii_lowercase();
            let l = n.strip_prefix("tlp:")?;
            if l == "white" {
                Some(Tlp::Clear)
            } else {
                Tlp::parse(l)
            }
        })
        .max()
}

/// What a feed's events held.
#[derive(Debug, Default)]
pub struct FeedContents {
    pub indicators: Vec<(IndicatorFacts, Value)>,
    /// (attribute uuid or event, why it was not taken).
    pub skipped: Vec<(String, String)>,
}

fn unix_ns(v: Option<&Value>) -> Option<i64> {
    let s = match v? {
        Value::String(s) => s.parse::<i64>().ok()?,
        Value::Number(n) => n.as_i64()?,
        _ => return None,
    };
    s.checked_mul(1_000_000_000)
}

fn uuid_ok(u: &str) -> bool {
    u.len() == 36
        && u.char_indices().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// Read one event file (`{"Event": {…}}`) into `out`. `default` labels attributes with no TLP
/// tag on them or on the event; `confidence` and `valid_for_ns` come from the feed's settings.
pub fn read_event(
    v: &Value,
    default: Tlp,
    confidence: u8,
    valid_for_ns: Option<i64>,
    out: &mut FeedContents,
) {
    let Some(event) = v.get("Event") else {
        out.skipped
            .push(("event".into(), "no \"Event\" object".into()));
        return;
    };
    let info: String = event
        .get("info")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect();
    let event_tlp = tlp_of_tags(event.get("Tag"));
    let event_ts = unix_ns(event.get("timestamp"));
    let direct = event
        .get("Attribute")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    let in_objects = event
        .get("Object")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|o| o.get("Attribute").and_then(Value::as_array))
        .flatten();
    for a in direct.chain(in_objects) {
        let s = |k: &str| a.get(k).and_then(Value::as_str);
        let uuid = s("uuid").unwrap_or_default();
        let skip = |why: String| (uuid.chars().take(36).collect::<String>(), why);
        if a.get("deleted").and_then(Value::as_bool) == Some(true)
            || a.get("to_ids").and_then(Value::as_bool) != Some(true)
        {
            continue;
        }
        if !uuid_ok(uuid) {
            out.skipped.push(skip("no attribute uuid".into()));
            continue;
        }
        let misp_type = s("type").unwrap_or_default();
        let Some((kind, part)) = kind_of(misp_type) else {
            out.skipped.push(skip(format!(
                "type {misp_type:?} is not an indicator Lindi matches"
            )));
            continue;
        };
        let raw = s("value").unwrap_or_default();
        let value = match (part, raw.split_once('|')) {
            (Part::Whole, _) => raw,
            (Part::First, Some((a, _))) => a,
            (Part::Second, Some((_, b))) => b,
            _ => {
                out.skipped
                    .push(skip(format!("{misp_type} value without '|'")));
                continue;
            }
        };
        let kind = kind.unwrap_or(if value.contains(':') {
            "ipv6-addr"
        } else {
            "ipv4-addr"
        });
        let value = match stix::normalise(kind, value) {
            Ok(v) => v,
            Err(e) => {
                out.skipped.push(skip(e.to_string()));
                continue;
            }
        };
        let modified = unix_ns(a.get("timestamp")).or(event_ts).unwrap_or(0);
        let first_seen = s("first_seen").and_then(stix::parse_timestamp_lax);
        let last_seen = s("last_seen").and_then(stix::parse_timestamp_lax);
        let created = first_seen.unwrap_or(modified);
        let facts = IndicatorFacts {
            id: format!("indicator--{}", uuid.to_ascii_lowercase()),
            kind: kind.into(),
            value,
            label: tlp_of_tags(a.get("Tag")).or(event_tlp).unwrap_or(default),
            name: if info.is_empty() {
                format!("{kind} from MISP")
            } else {
                info.clone()
            },
            confidence,
            created_ns: created,
            modified_ns: modified.max(created),
            valid_until_ns: valid_for_ns
                .map(|d| last_seen.unwrap_or(modified).max(created).saturating_add(d)),
        };
        match stix::indicator(&facts) {
            Ok(body) => out.indicators.push((facts, body)),
            Err(e) => out.skipped.push(skip(e.to_string())),
        }
    }
}

/// The event UUIDs a feed's `manifest.json` lists (each names `UUID.json` beside it).
pub fn manifest_events(manifest: &Value) -> Result<Vec<String>, String> {
    let events = manifest
        .as_object()
        .ok_or("manifest.json is not an object keyed by event UUID")?;
    let mut ids: Vec<String> = events.keys().filter(|k| uuid_ok(k)).cloned().collect();
    ids.sort();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> Value {
        json!({"Event": {
            "uuid": "5e4b3c2a-1111-4aaa-8bbb-000000000001",
            "info": "Phishing wave against banks",
            "timestamp": "1796400000",
            "Tag": [{"name": "tlp:amber"}, {"name": "type:OSINT"}],
            "Attribute": [
                {"uuid": "5e4b3c2a-1111-4aaa-8bbb-000000000010", "type": "ip-dst", "value": "198.51.100.7", "to_ids": true, "timestamp": "1796400100"},
                {"uuid": "5e4b3c2a-1111-4aaa-8bbb-000000000011", "type": "domain", "value": "Login-Bank.Example", "to_ids": true, "Tag": [{"name": "TLP:GREEN"}]},
                {"uuid": "5e4b3c2a-1111-4aaa-8bbb-000000000012", "type": "comment", "value": "seen in mails", "to_ids": false},
                {"uuid": "5e4b3c2a-1111-4aaa-8bbb-000000000013", "type": "mutex", "value": "x", "to_ids": true},
                {"uuid": "5e4b3c2a-1111-4aaa-8bbb-000000000014", "type": "ip-src|port", "value": "2001:db8::9|443", "to_ids": true,
                 "first_seen": "2026-12-01T00:00:00.000000+00:00", "last_seen": "2026-12-03T00:00:00Z"},
                {"uuid": "5e4b3c2a-1111-4aaa-8bbb-000000000015", "type": "ip-dst", "value": "not an ip", "to_ids": true},
                {"uuid": "5e4b3c2a-1111-4aaa-8bbb-000000000016", "type": "ip-dst", "value": "203.0.113.1", "to_ids": true, "deleted": true}
            ],
            "Object": [{"name": "file", "Attribute": [
                {"uuid": "5e4b3c2a-1111-4aaa-8bbb-000000000020", "type": "sha256", "value": "AB".repeat(32), "to_ids": true, "Tag": [{"name": "tlp:white"}]}
            ]}]
        }})
    }

    #[test]
    fn ids_attributes_become_indicators_with_their_tlp() {
        let mut out = FeedContents::default();
        read_event(
            &event(),
            Tlp::Red,
            70,
            Some(30 * 86_400 * 1_000_000_000),
            &mut out,
        );
        let got: Vec<(&str, &str, Tlp)> = out
            .indicators
            .iter()
            .map(|(f, _)| (f.kind.as_str(), f.value.as_str(), f.label))
            .collect();
        let ab = "ab".repeat(32);
        assert_eq!(
            got,
            vec![
                ("ipv4-addr", "198.51.100.7", Tlp::Amber),
                ("domain-name", "login-bank.example", Tlp::Green),
                ("ipv6-addr", "2001:db8::9", Tlp::Amber),
                ("sha256", ab.as_str(), Tlp::Clear),
            ]
        );
        let skipped: Vec<&str> = out.skipped.iter().map(|(_, why)| why.as_str()).collect();
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        let (v6, body) = &out.indicators[2];
        assert_eq!(v6.id, "indicator--5e4b3c2a-1111-4aaa-8bbb-000000000014");
        assert_eq!(
            Some(v6.created_ns),
            stix::parse_timestamp("2026-12-01T00:00:00Z")
        );
        assert_eq!(
            v6.valid_until_ns,
            stix::parse_timestamp("2027-01-02T00:00:00Z"),
            "30 days after last_seen"
        );
        assert_eq!(
            stix::read_indicator(body).unwrap(),
            IndicatorFacts {
                created_ns: v6.created_ns / 1_000_000 * 1_000_000,
                modified_ns: v6.modified_ns / 1_000_000 * 1_000_000,
                ..v6.clone()
            }
        );
        assert_eq!(out.indicators[0].0.confidence, 70);
    }

    #[test]
    fn a_damaged_event_or_manifest_is_reported_not_fatal() {
        let mut out = FeedContents::default();
        read_event(&json!({"nope": 1}), Tlp::Amber, 50, None, &mut out);
        read_event(
            &json!({"Event": {"Attribute": "x"}}),
            Tlp::Amber,
            50,
            None,
            &mut out,
        );
        assert!(out.indicators.is_empty());
        assert_eq!(out.skipped.len(), 1);
        assert!(manifest_events(&json!([1, 2])).is_err());
        assert_eq!(
            manifest_events(&json!({"5e4b3c2a-1111-4aaa-8bbb-000000000001": {}, "../etc": {}}))
                .unwrap(),
            vec!["5e4b3c2a-1111-4aaa-8bbb-000000000001".to_string()]
        );
    }
}
