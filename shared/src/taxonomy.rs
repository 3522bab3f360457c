//! Incident classification: the Reference Security Incident Taxonomy (RSIT), the mapping
//! table that gives every detection an RSIT class and type, and the TLP 2.0 labels.
//!
//! Constraints:
//! 1. The taxonomy is data (`data/rsit.json`, a byte-for-byte copy of ENISA's machine-readable
//!    list, CC0); a test checks it against the reference copy when that is present.
//! 2. Classification never fails: a detection no entry maps gets `other/undetermined`, and the
//!    caller counts it so the table can be improved.
//! 3. The mapping table is TOML (`data/classification.toml` is the built-in one). Extension
//!    tables are tried before it, so a detection developer's entry wins over ours.
//!
//! Table format (first matching entry wins; every field an entry names must match):
//!
//! ```toml
//! [[map]]
//! rule = "sigma:8f5d…"          # engine:rule_id, exact
//! tag = "attack.t1110"          # a detection tag, exact or as a dotted prefix
//! classtype = "trojan-activity" # the rule's classtype
//! engine = "heuristic"          # the detecting engine
//! rsit = "intrusion-attempts/brute-force"
//! ```
//!
//! A detection may also carry its class itself, as a tag `rsit:<class>="<type>"` (the RSIT
//! machine-tag form) or `rsit.<class>.<type>` (the Sigma tag form); that beats every table.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::proto::DetectionEvent;

static RSIT_JSON: &str = include_str!("../data/rsit.json");
static BUILTIN_TABLE: &str = include_str!("../data/classification.toml");

#[derive(Debug, Error)]
pub enum TaxonomyError {
    #[error("classification table {origin}: {message}")]
    Table { origin: String, message: String },
    #[error("classification table {origin}, entry {index}: {message}")]
    Entry {
        origin: String,
        index: usize,
        message: String,
    },
}

/// One RSIT type with its class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RsitType {
    pub class: String,
    pub class_name: String,
    pub value: String,
    pub name: String,
    pub description: String,
}

/// The taxonomy: every (class, type) pair, in the order of the source file.
#[derive(Debug)]
pub struct Rsit {
    pub version: u64,
    pub types: Vec<RsitType>,
}

#[derive(Deserialize)]
struct RawRsit {
    version: u64,
    predicates: Vec<RawEntry>,
    values: Vec<RawValues>,
}

#[derive(Deserialize)]
struct RawEntry {
    value: String,
    expanded: String,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
struct RawValues {
    predicate: String,
    entry: Vec<RawEntry>,
}

impl Rsit {
    /// Parse the MISP machine-tag form of the taxonomy.
    pub fn parse(json: &str) -> Result<Rsit, serde_json::Error> {
        let raw: RawRsit = serde_json::from_str(json)?;
        let class_names: BTreeMap<&str, &str> = raw
            .predicates
            .iter()
            .map(|p| (p.value.as_str(), p.expanded.as_str()))
            .collect();
        let mut types = Vec::new();
        for v in &raw.values {
            for e in &v.entry {
                types.push(RsitType {
                    class: v.predicate.clone(),
                    class_name: class_names
                        .get(v.predicate.as_str())
                        .copied()
                        .unwrap_or(&v.predicate)
                        .to_string(),
                    value: e.value.clone(),
                    name: e.expanded.clone(),
                    description: e.description.clone(),
                });
            }
        }
        Ok(Rsit {
            version: raw.version,
            types,
        })
    }

    /// The taxonomy built into this binary.
    pub fn builtin() -> &'static Rsit {
        static RSIT: LazyLock<Rsit> =
            LazyLock::new(|| Rsit::parse(RSIT_JSON).expect("data/rsit.json is valid (tested)"));
        &RSIT
    }

    pub fn get(&self, class: &str, value: &str) -> Option<&RsitType> {
        self.types
            .iter()
            .find(|t| t.class == class && t.value == value)
    }
}

/// A classification: RSIT class and type (machine values).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub struct RsitClass {
    pub class: String,
    #[serde(rename = "type")]
    pub kind: String,
}

impl RsitClass {
    pub fn undetermined() -> RsitClass {
        RsitClass {
            class: "other".into(),
            kind: "undetermined".into(),
        }
    }

    /// `class/type`, checked against the taxonomy.
    pub fn parse(s: &str) -> Option<RsitClass> {
        let (class, kind) = s.split_once('/')?;
        Rsit::builtin().get(class, kind)?;
        Some(RsitClass {
            class: class.into(),
            kind: kind.into(),
        })
    }

    /// From a detection tag in either tag form.
    fn from_tag(tag: &str) -> Option<RsitClass> {
        if let Some(rest) = tag.strip_prefix("rsit:") {
            let (class, kind) = rest.split_once('=')?;
            return RsitClass::parse(&format!("{class}/{}", kind.trim_matches('"')));
        }
        let rest = tag.strip_prefix("rsit.")?;
        let (class, kind) = rest.split_once('.')?;
        RsitClass::parse(&format!("{class}/{kind}"))
    }
}

impl fmt::Display for RsitClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.class, self.kind)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    #[serde(default)]
    map: Vec<RawMapping>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    rule: Option<String>,
    tag: Option<String>,
    classtype: Option<String>,
    engine: Option<String>,
    rsit: String,
}

#[derive(Clone, Debug)]
struct Mapping {
    rule: Option<String>,
    tag: Option<String>,
    classtype: Option<String>,
    engine: Option<String>,
    class: RsitClass,
}

impl Mapping {
    fn matches(&self, d: &DetectionEvent) -> bool {
        if let Some(rule) = &self.rule {
            let Some((engine, id)) = rule.split_once(':') else {
                return false;
            };
            if engine != d.engine || id != d.rule_id {
                return false;
            }
        }
        if let Some(tag) = &self.tag
            && !d.tags.iter().any(|t| tag_matches(tag, t))
        {
            return false;
        }
        if self.classtype.as_ref().is_some_and(|c| *c != d.classtype) {
            return false;
        }
        if self.engine.as_ref().is_some_and(|e| *e != d.engine) {
            return false;
        }
        true
    }
}

/// `attack.t1053` matches `attack.t1053` and `attack.t1053.003`, case-insensitively.
fn tag_matches(pattern: &str, tag: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), tag.as_bytes());
    t.len() >= p.len()
        && t[..p.len()].eq_ignore_ascii_case(p)
        && (t.len() == p.len() || t[p.len()] == b'.')
}

/// How a classification was reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClassifiedBy {
    /// The detection's own `rsit` tag.
    Tag,
    /// An entry of the mapping table.
    Table,
    /// Nothing matched: `other/undetermined`.
    Unmapped,
}

/// The mapping table: extensions first, then the built-in entries.
#[derive(Clone, Debug)]
pub struct Classifier {
    entries: Vec<Mapping>,
}

impl Classifier {
    /// The built-in table alone.
    pub fn builtin() -> Classifier {
        Classifier::with_extensions(&[]).expect("data/classification.toml is valid (tested)")
    }

    /// Extension tables (origin name, TOML text), tried in order before the built-in one.
    pub fn with_extensions(tables: &[(String, String)]) -> Result<Classifier, TaxonomyError> {
        let mut entries = Vec::new();
        for (origin, text) in tables {
            entries.extend(parse_table(origin, text)?);
        }
        entries.extend(parse_table("built-in", BUILTIN_TABLE)?);
        Ok(Classifier { entries })
    }

    pub fn classify(&self, d: &DetectionEvent) -> (RsitClass, ClassifiedBy) {
        if let Some(c) = d.tags.iter().find_map(|t| RsitClass::from_tag(t)) {
            return (c, ClassifiedBy::Tag);
        }
        match self.entries.iter().find(|m| m.matches(d)) {
            Some(m) => (m.class.clone(), ClassifiedBy::Table),
            None => (RsitClass::undetermined(), ClassifiedBy::Unmapped),
        }
    }
}

fn parse_table(origin: &str, text: &str) -> Result<Vec<Mapping>, TaxonomyError> {
    let raw: RawTable = toml::from_str(text).map_err(|e| TaxonomyError::Table {
        origin: origin.into(),
        message: e.to_string(),
    })?;
    raw.map
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            let err = |message: String| TaxonomyError::Entry {
                origin: origin.into(),
                index: i + 1,
                message,
            };
            let class = RsitClass::parse(&m.rsit)
                .ok_or_else(|| err(format!("{:?} is not an RSIT class/type", m.rsit)))?;
            if m.rule.is_none() && m.tag.is_none() && m.classtype.is_none() && m.engine.is_none() {
                return Err(err(
                    "names nothing to match (rule, tag, classtype or engine)".into(),
                ));
            }
            if m.rule.as_ref().is_some_and(|r| !r.contains(':')) {
                return Err(err("rule is written engine:rule_id".into()));
            }
            Ok(Mapping {
                rule: m.rule,
                tag: m.tag,
                classtype: m.classtype,
                engine: m.engine,
                class,
            })
        })
        .collect()
}

/// TLP 2.0 labels, from least to most restricted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Tlp {
    #[serde(rename = "TLP:CLEAR")]
    Clear,
    #[serde(rename = "TLP:GREEN")]
    Green,
    #[serde(rename = "TLP:AMBER")]
    Amber,
    #[serde(rename = "TLP:AMBER+STRICT")]
    AmberStrict,
    #[serde(rename = "TLP:RED")]
    Red,
}

impl Tlp {
    pub const ALL: [Tlp; 5] = [
        Tlp::Clear,
        Tlp::Green,
        Tlp::Amber,
        Tlp::AmberStrict,
        Tlp::Red,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Tlp::Clear => "TLP:CLEAR",
            Tlp::Green => "TLP:GREEN",
            Tlp::Amber => "TLP:AMBER",
            Tlp::AmberStrict => "TLP:AMBER+STRICT",
            Tlp::Red => "TLP:RED",
        }
    }

    /// Accepts the label as written (`TLP:AMBER+STRICT`) or without the prefix, any case.
    pub fn parse(s: &str) -> Option<Tlp> {
        let s = s.trim();
        let bare = s
            .get(..4)
            .filter(|p| p.eq_ignore_ascii_case("tlp:"))
            .map_or(s, |_| &s[4..]);
        Tlp::ALL
            .into_iter()
            .find(|t| t.label()[4..].eq_ignore_ascii_case(bare))
    }

    /// The STIX 2.1 marking-definition id of the TLP 2.0 extension.
    pub fn stix_marking_id(self) -> &'static str {
        match self {
            Tlp::Clear => "marking-definition--94868c89-83c2-464b-929b-a1a8aa3c8487",
            Tlp::Green => "marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb",
            Tlp::Amber => "marking-definition--55d920b0-5e8b-4f79-9ee9-91f868d9b421",
            Tlp::AmberStrict => "marking-definition--939a9414-2ddd-4d32-a0cd-375ea402b003",
            Tlp::Red => "marking-definition--e828b379-4e03-4974-9ac4-e53a884c97c1",
        }
    }
}

impl fmt::Display for Tlp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(engine: &str, rule: &str, classtype: &str, tags: &[&str]) -> DetectionEvent {
        DetectionEvent {
            engine: engine.into(),
            rule_id: rule.into(),
            classtype: classtype.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn taxonomy_has_the_eleven_classes_and_39_types() {
        let r = Rsit::builtin();
        assert_eq!(r.types.len(), 39);
        let classes: std::collections::BTreeSet<_> = r.types.iter().map(|t| &t.class).collect();
        assert_eq!(classes.len(), 11);
        assert_eq!(
            r.get("intrusion-attempts", "brute-force").unwrap().name,
            "Login Attempts"
        );
    }

    #[test]
    fn taxonomy_matches_the_reference_copy() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/reference/rsit.json");
        let Ok(reference) = std::fs::read_to_string(&path) else {
            eprintln!("skipped: {} is absent", path.display());
            return;
        };
        assert_eq!(
            reference, RSIT_JSON,
            "data/rsit.json differs from the reference"
        );
        let r = Rsit::parse(&reference).unwrap();
        assert_eq!(r.types, Rsit::builtin().types);
    }

    #[test]
    fn builtin_table_maps_only_to_real_types_and_covers_our_engines() {
        let c = Classifier::builtin();
        let cases = [
            (
                det("suricata", "1:1", "trojan-activity", &[]),
                "malicious-code/infected-system",
            ),
            (
                det("suricata", "1:2", "attempted-recon", &[]),
                "information-gathering/scanner",
            ),
            (
                det("heuristic", "9002:3", "attempted-dos", &[]),
                "availability/dos",
            ),
            (
                det(
                    "sigma",
                    "x",
                    "process_creation",
                    &["attack.persistence", "attack.t1053.003"],
                ),
                "intrusions/system-compromise",
            ),
            (
                det(
                    "sigma",
                    "y",
                    "process_creation",
                    &["attack.credential-access", "attack.t1110"],
                ),
                "intrusion-attempts/brute-force",
            ),
        ];
        for (d, want) in cases {
            let (got, by) = c.classify(&d);
            assert_eq!(got.to_string(), want, "{d:?}");
            assert_eq!(by, ClassifiedBy::Table);
        }
        let (got, by) = c.classify(&det("suricata", "1:3", "no-such-classtype", &[]));
        assert_eq!(
            (got, by),
            (RsitClass::undetermined(), ClassifiedBy::Unmapped)
        );
    }

    #[test]
    fn own_tags_beat_tables_and_extensions_beat_builtin() {
        let ext = Classifier::with_extensions(&[(
            "team.toml".into(),
            "[[map]]\nclasstype = \"trojan-activity\"\nrsit = \"malicious-code/c2-server\"\n"
                .into(),
        )])
        .unwrap();
        let d = det("suricata", "1:1", "trojan-activity", &[]);
        assert_eq!(ext.classify(&d).0.to_string(), "malicious-code/c2-server");
        let tagged = det("sigma", "z", "", &["rsit:fraud=\"phishing\""]);
        assert_eq!(
            ext.classify(&tagged),
            (
                RsitClass::parse("fraud/phishing").unwrap(),
                ClassifiedBy::Tag
            )
        );
        let sigma_form = det("sigma", "z", "", &["rsit.availability.outage"]);
        assert_eq!(
            ext.classify(&sigma_form).0.to_string(),
            "availability/outage"
        );
    }

    #[test]
    fn bad_tables_are_refused_with_the_entry() {
        for (text, needle) in [
            (
                "[[map]]\nclasstype = \"x\"\nrsit = \"other/nope\"\n",
                "entry 1",
            ),
            ("[[map]]\nrsit = \"other/other\"\n", "names nothing"),
            (
                "[[map]]\nrule = \"123\"\nrsit = \"other/other\"\n",
                "engine:rule_id",
            ),
            ("[[map]]\nfoo = 1\n", "unknown field"),
        ] {
            let e = Classifier::with_extensions(&[("t.toml".into(), text.into())]).unwrap_err();
            assert!(e.to_string().contains(needle), "{e}");
        }
    }

    #[test]
    fn tlp_labels_parse_and_order() {
        assert_eq!(Tlp::parse("TLP:AMBER+STRICT"), Some(Tlp::AmberStrict));
        assert_eq!(Tlp::parse("amber"), Some(Tlp::Amber));
        assert_eq!(Tlp::parse("tlp:clear"), Some(Tlp::Clear));
        assert_eq!(Tlp::parse("WHITE"), None);
        assert!(Tlp::Red > Tlp::AmberStrict && Tlp::AmberStrict > Tlp::Amber);
        assert_eq!(
            serde_json::to_string(&Tlp::AmberStrict).unwrap(),
            "\"TLP:AMBER+STRICT\""
        );
    }
}
