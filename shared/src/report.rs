//! Incident reports constituents file themselves: what every report needs, and what each
//! kind of incident needs on top (by RSIT class), checked before a ticket is opened.

use serde::{Deserialize, Serialize};

use crate::taxonomy::{RsitClass, Tlp};
use crate::triage::Level;

/// A report as the constituent sends it.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct IncidentReport {
    /// The reporting constituency (one of the reporter's).
    pub constituency: String,
    /// RSIT `class/type`, e.g. `fraud/phishing`.
    pub rsit_type: String,
    /// What was seen, in the reporter's words.
    pub what: String,
    /// When it was first seen (RFC 3339, e.g. `2026-12-05T08:30:00Z`).
    pub seen_at: String,
    /// Hosts, addresses, accounts or services affected.
    #[serde(default)]
    pub affected_assets: Vec<String>,
    pub contact: ReportContact,
    /// How bad the reporter thinks it is. Default `medium`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "high"))]
    pub severity: Option<Level>,
    /// Default `TLP:AMBER`.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "TLP:AMBER"))]
    pub tlp: Option<Tlp>,
    /// Links to evidence (URLs of phishing pages, samples' hashes, ...).
    #[serde(default)]
    pub evidence: Vec<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReportContact {
    pub name: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub phone: String,
}

/// A report that passed its checks.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckedReport {
    pub rsit: RsitClass,
    pub seen_at_ns: i64,
    pub severity: Level,
    pub tlp: Tlp,
}

/// RSIT classes whose reports must name the affected assets.
const NEED_ASSETS: [&str; 5] = [
    "intrusions",
    "intrusion-attempts",
    "malicious-code",
    "availability",
    "vulnerable",
];
/// RSIT classes whose reports must carry evidence (the lure, the page, the content).
const NEED_EVIDENCE: [&str; 2] = ["fraud", "abusive-content"];

const MAX_TEXT: usize = 20_000;
const MAX_ITEMS: usize = 200;

impl IncidentReport {
    /// Check the report; an error names the field and what it needs.
    pub fn check(&self, now_ns: i64) -> Result<CheckedReport, String> {
        let rsit = RsitClass::parse(&self.rsit_type).ok_or_else(|| {
            format!(
                "rsit_type: {:?} is not an RSIT class/type (e.g. fraud/phishing, malicious-code/infected-system)",
                self.rsit_type
            )
        })?;
        if self.what.trim().chars().count() < 10 {
            return Err("what: describe what was seen (at least 10 characters)".into());
        }
        let seen_at_ns = crate::stix::parse_timestamp_lax(self.seen_at.trim())
            .ok_or("seen_at: an RFC 3339 time, e.g. 2026-12-05T08:30:00Z")?;
        if seen_at_ns > now_ns + 300_000_000_000 {
            return Err("seen_at: in the future".into());
        }
        if self.contact.name.trim().is_empty()
            || (self.contact.email.trim().is_empty() && self.contact.phone.trim().is_empty())
        {
            return Err("contact: a name and an e-mail address or a phone number".into());
        }
        if !self.contact.email.is_empty() && !self.contact.email.contains('@') {
            return Err("contact.email: not an e-mail address".into());
        }
        let blank = |v: &[String]| v.iter().all(|a| a.trim().is_empty());
        if NEED_ASSETS.contains(&rsit.class.as_str()) && blank(&self.affected_assets) {
            return Err(format!(
                "affected_assets: a {} report names the hosts, addresses or services affected",
                rsit.class
            ));
        }
        if NEED_EVIDENCE.contains(&rsit.class.as_str()) && blank(&self.evidence) {
            return Err(format!(
                "evidence: a {} report carries the evidence (the URL of the page, the message, the content)",
                rsit.class
            ));
        }
        let texts = [
            &self.what,
            &self.contact.name,
            &self.contact.email,
            &self.contact.phone,
        ];
        if texts.iter().any(|t| t.chars().count() > MAX_TEXT)
            || self.affected_assets.len() > MAX_ITEMS
            || self.evidence.len() > MAX_ITEMS
            || self
                .affected_assets
                .iter()
                .chain(&self.evidence)
                .any(|a| a.chars().count() > 2000)
        {
            return Err(format!(
                "too long: texts up to {MAX_TEXT} characters, at most {MAX_ITEMS} assets and evidence items of 2,000"
            ));
        }
        Ok(CheckedReport {
            rsit,
            seen_at_ns,
            severity: self.severity.unwrap_or(Level::Medium),
            tlp: self.tlp.unwrap_or(Tlp::Amber),
        })
    }

    /// The report as the ticket's first comment.
    pub fn as_text(&self, reporter: &str) -> String {
        let list = |v: &[String]| {
            if v.is_empty() {
                "none given".to_string()
            } else {
                v.join("; ")
            }
        };
        format!(
            "Reported by {reporter} for {} ({}).\nFirst seen: {}\nWhat was seen: {}\nAffected assets: {}\nEvidence: {}\nContact: {} {} {}",
            self.constituency,
            self.rsit_type,
            self.seen_at,
            self.what.trim(),
            list(&self.affected_assets),
            list(&self.evidence),
            self.contact.name,
            self.contact.email,
            self.contact.phone
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_441_000_000_000_000;

    fn report(rsit: &str) -> IncidentReport {
        IncidentReport {
            constituency: "bank-a".into(),
            rsit_type: rsit.into(),
            what: "Customers got mails linking to a fake login page".into(),
            seen_at: "2026-12-05T03:00:00Z".into(),
            affected_assets: vec![],
            contact: ReportContact {
                name: "Ana".into(),
                email: "soc@bank-a.example".into(),
                phone: String::new(),
            },
            severity: None,
            tlp: None,
            evidence: vec![],
        }
    }

    #[test]
    fn required_fields_follow_the_incident_type() {
        let mut r = report("fraud/phishing");
        assert!(r.check(NOW).unwrap_err().starts_with("evidence:"));
        r.evidence = vec!["https://login-bank.example/".into()];
        let ok = r.check(NOW).unwrap();
        assert_eq!((ok.severity, ok.tlp), (Level::Medium, Tlp::Amber));
        let mut m = report("malicious-code/infected-system");
        assert!(m.check(NOW).unwrap_err().starts_with("affected_assets:"));
        m.affected_assets = vec!["ws-042".into()];
        assert!(m.check(NOW).is_ok());
        assert!(report("information-gathering/scanner").check(NOW).is_ok());
    }

    /// What a case expects the error to start with, and how it spoils the report.
    type Case = (&'static str, fn(&mut IncidentReport));

    #[test]
    fn bad_reports_name_the_field() {
        let cases: [Case; 6] = [
            ("rsit_type:", |r| r.rsit_type = "fraud/nonsense".into()),
            ("what:", |r| r.what = "hm".into()),
            ("seen_at:", |r| r.seen_at = "yesterday".into()),
            ("seen_at:", |r| r.seen_at = "2030-01-01T00:00:00Z".into()),
            ("contact:", |r| r.contact.email.clear()),
            ("contact.email:", |r| r.contact.email = "nobody".into()),
        ];
        for (want, change) in cases {
            let mut r = report("information-gathering/scanner");
            change(&mut r);
            let e = r.check(NOW).unwrap_err();
            assert!(e.starts_with(want), "{want}: {e}");
        }
    }
}
