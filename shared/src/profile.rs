//! The team profile: the description RFC 2350 asks every incident response team to publish,
//! kept as structured fields and laid out as the RFC's Appendix D outline (every heading in
//! its place, "None available." where a field is empty), for the console, a public page and
//! plain text.

use serde::{Deserialize, Serialize};

use crate::taxonomy::Tlp;

/// The longest text one field may hold.
pub const MAX_FIELD_CHARS: usize = 8_000;
/// The most list entries (URLs, keys, members) one field may hold.
pub const MAX_LIST: usize = 50;

/// A PGP key the team publishes (2.8).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct PgpKey {
    pub key_id: String,
    pub fingerprint: String,
    /// Where to fetch the key.
    pub url: String,
    /// The address the key belongs to.
    pub user_id: String,
}

/// The fields of the profile, by RFC 2350 section.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct TeamProfile {
    // 1. Document information
    pub version: String,
    /// `YYYY-MM-DD`.
    pub last_update: String,
    pub update_notifications: String,
    pub document_urls: Vec<String>,
    // 2. Contact information
    pub team_name: String,
    pub team_short_name: String,
    pub postal_address: String,
    /// An IANA zone name, with its UTC offset and daylight-saving rule if wanted
    /// (`Europe/Oslo, UTC+1, UTC+2 in summer`).
    pub time_zone: String,
    pub telephone: String,
    pub emergency_telephone: String,
    pub fax: String,
    pub other_telecom: String,
    pub email: String,
    pub pgp_keys: Vec<PgpKey>,
    /// Head of team and members; empty with `members_public = false` says the list is not
    /// public.
    pub members: Vec<String>,
    pub members_public: bool,
    pub other_information: String,
    pub customer_contact: String,
    pub business_hours: String,
    pub out_of_hours: String,
    // 3. Charter
    pub mission: String,
    pub constituency: String,
    pub sponsorship: String,
    pub authority: String,
    // 4. Policies
    pub incident_types_and_support: String,
    pub cooperation_and_disclosure: String,
    pub communication_and_authentication: String,
    // 5. Services
    pub triage: String,
    pub coordination: String,
    pub resolution: String,
    pub proactive: String,
    // 6, 7
    pub reporting_forms: String,
    pub disclaimer: String,
    /// The label of the document itself; RFC 2350 descriptions are usually TLP:CLEAR.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, example = "TLP:CLEAR"))]
    pub tlp_label: Option<Tlp>,
}

/// A heading of the outline and what is under it.
#[derive(Debug, PartialEq, Eq)]
pub struct Section {
    pub number: &'static str,
    pub heading: &'static str,
    /// The text under the heading ("None available." when empty); none for a heading that
    /// only has subsections.
    pub text: Option<String>,
    pub subsections: Vec<Section>,
}

const NONE: &str = "None available.";

fn leaf(number: &'static str, heading: &'static str, text: String) -> Section {
    let text = if text.trim().is_empty() {
        NONE.to_string()
    } else {
        text
    };
    Section {
        number,
        heading,
        text: Some(text),
        subsections: vec![],
    }
}

fn parent(number: &'static str, heading: &'static str, subsections: Vec<Section>) -> Section {
    Section {
        number,
        heading,
        text: None,
        subsections,
    }
}

/// Lines of the non-empty parts, labelled: `Emergency: +47 …`.
fn labelled(parts: &[(&str, &str)]) -> String {
    parts
        .iter()
        .filter(|(_, v)| !v.trim().is_empty())
        .map(|(k, v)| {
            if k.is_empty() {
                v.to_string()
            } else {
                format!("{k}: {v}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `YYYY-MM-DD` with a month and day that exist.
fn is_date(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let num = |p: &str, len: usize| {
        (p.len() == len && p.bytes().all(|b| b.is_ascii_digit()))
            .then(|| p.parse::<u32>().ok())
            .flatten()
    };
    match parts.as_slice() {
        [y, m, d] => match (num(y, 4), num(m, 2), num(d, 2)) {
            (Some(y), Some(m), Some(d)) => time::Month::try_from(m as u8)
                .is_ok_and(|m| d >= 1 && d <= u32::from(time::util::days_in_month(m, y as i32))),
            _ => false,
        },
        _ => false,
    }
}

impl TeamProfile {
    /// Check every field: lengths, list sizes, the date, the e-mail address and URLs.
    pub fn validate(&self) -> Result<(), String> {
        let texts: [(&str, &str); 29] = [
            ("version", &self.version),
            ("last_update", &self.last_update),
            ("update_notifications", &self.update_notifications),
            ("team_name", &self.team_name),
            ("team_short_name", &self.team_short_name),
            ("postal_address", &self.postal_address),
            ("time_zone", &self.time_zone),
            ("telephone", &self.telephone),
            ("emergency_telephone", &self.emergency_telephone),
            ("fax", &self.fax),
            ("other_telecom", &self.other_telecom),
            ("email", &self.email),
            ("other_information", &self.other_information),
            ("customer_contact", &self.customer_contact),
            ("business_hours", &self.business_hours),
            ("out_of_hours", &self.out_of_hours),
            ("mission", &self.mission),
            ("constituency", &self.constituency),
            ("sponsorship", &self.sponsorship),
            ("authority", &self.authority),
            (
                "incident_types_and_support",
                &self.incident_types_and_support,
            ),
            (
                "cooperation_and_disclosure",
                &self.cooperation_and_disclosure,
            ),
            (
                "communication_and_authentication",
                &self.communication_and_authentication,
            ),
            ("triage", &self.triage),
            ("coordination", &self.coordination),
            ("resolution", &self.resolution),
            ("proactive", &self.proactive),
            ("reporting_forms", &self.reporting_forms),
            ("disclaimer", &self.disclaimer),
        ];
        for (name, v) in texts {
            if v.chars().count() > MAX_FIELD_CHARS {
                return Err(format!(
                    "{name} is longer than {MAX_FIELD_CHARS} characters"
                ));
            }
            if v.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
                return Err(format!("{name} holds control characters"));
            }
        }
        if self.team_name.trim().is_empty() {
            return Err("team_name is required".into());
        }
        for (name, n) in [
            ("document_urls", self.document_urls.len()),
            ("pgp_keys", self.pgp_keys.len()),
            ("members", self.members.len()),
        ] {
            if n > MAX_LIST {
                return Err(format!("{name} holds more than {MAX_LIST} entries"));
            }
        }
        if !self.last_update.is_empty() && !is_date(&self.last_update) {
            return Err("last_update is a date, YYYY-MM-DD".into());
        }
        if !self.email.is_empty() {
            let ok = self.email.split_once('@').is_some_and(|(l, d)| {
                !l.is_empty() && d.contains('.') && !self.email.contains(char::is_whitespace)
            });
            if !ok {
                return Err(format!("email {:?} is not an e-mail address", self.email));
            }
        }
        let urls = self.document_urls.iter().chain(
            self.pgp_keys
                .iter()
                .map(|k| &k.url)
                .filter(|u| !u.is_empty()),
        );
        for u in urls {
            if !(u.starts_with("https://") || u.starts_with("http://"))
                || u.len() > 2_000
                || u.contains(char::is_whitespace)
            {
                return Err(format!("{u:?} is not an http(s) URL"));
            }
        }
        for list in [&self.document_urls, &self.members] {
            if list.iter().any(|s| s.chars().count() > 2_000) {
                return Err("a list entry is longer than 2000 characters".into());
            }
        }
        for k in &self.pgp_keys {
            for v in [&k.key_id, &k.fingerprint, &k.user_id] {
                if v.chars().count() > 2_000 || v.chars().any(char::is_control) {
                    return Err("a PGP key field is too long or holds control characters".into());
                }
            }
        }
        Ok(())
    }

    /// The outline of RFC 2350 Appendix D with this profile's text under each heading.
    pub fn outline(&self) -> Vec<Section> {
        let keys = self
            .pgp_keys
            .iter()
            .map(|k| {
                labelled(&[
                    ("Key id", &k.key_id),
                    ("Fingerprint", &k.fingerprint),
                    ("User id", &k.user_id),
                    ("Available from", &k.url),
                ])
            })
            .collect::<Vec<_>>()
            .join("\n\n");
        let members = if !self.members.is_empty() {
            self.members.join("\n")
        } else if self.members_public {
            String::new()
        } else {
            "The list of team members is not public.".to_string()
        };
        let name = if self.team_short_name.is_empty() {
            self.team_name.clone()
        } else {
            format!("{} ({})", self.team_name, self.team_short_name)
        };
        vec![
            parent(
                "1",
                "Document Information",
                vec![
                    leaf(
                        "1.1",
                        "Date of Last Update",
                        labelled(&[("Version", &self.version), ("Date", &self.last_update)]),
                    ),
                    leaf(
                        "1.2",
                        "Distribution List for Notifications",
                        self.update_notifications.clone(),
                    ),
                    leaf(
                        "1.3",
                        "Locations where this Document May Be Found",
                        self.document_urls.join("\n"),
                    ),
                ],
            ),
            parent(
                "2",
                "Contact Information",
                vec![
                    leaf("2.1", "Name of the Team", name),
                    leaf("2.2", "Address", self.postal_address.clone()),
                    leaf("2.3", "Time Zone", self.time_zone.clone()),
                    leaf(
                        "2.4",
                        "Telephone Number",
                        labelled(&[
                            ("", &self.telephone),
                            ("Emergency", &self.emergency_telephone),
                        ]),
                    ),
                    leaf("2.5", "Facsimile Number", self.fax.clone()),
                    leaf("2.6", "Other Telecommunication", self.other_telecom.clone()),
                    leaf("2.7", "Electronic Mail Address", self.email.clone()),
                    leaf("2.8", "Public Keys and Encryption Information", keys),
                    leaf("2.9", "Team Members", members),
                    leaf("2.10", "Other Information", self.other_information.clone()),
                    leaf(
                        "2.11",
                        "Points of Customer Contact",
                        labelled(&[
                            ("", &self.customer_contact),
                            ("Business hours", &self.business_hours),
                            ("Outside business hours", &self.out_of_hours),
                        ]),
                    ),
                ],
            ),
            parent(
                "3",
                "Charter",
                vec![
                    leaf("3.1", "Mission Statement", self.mission.clone()),
                    leaf("3.2", "Constituency", self.constituency.clone()),
                    leaf(
                        "3.3",
                        "Sponsorship and/or Affiliation",
                        self.sponsorship.clone(),
                    ),
                    leaf("3.4", "Authority", self.authority.clone()),
                ],
            ),
            parent(
                "4",
                "Policies",
                vec![
                    leaf(
                        "4.1",
                        "Types of Incidents and Level of Support",
                        self.incident_types_and_support.clone(),
                    ),
                    leaf(
                        "4.2",
                        "Co-operation, Interaction and Disclosure of Information",
                        self.cooperation_and_disclosure.clone(),
                    ),
                    leaf(
                        "4.3",
                        "Communication and Authentication",
                        self.communication_and_authentication.clone(),
                    ),
                ],
            ),
            parent(
                "5",
                "Services",
                vec![
                    parent(
                        "5.1",
                        "Incident Response",
                        vec![
                            leaf("5.1.1", "Incident Triage", self.triage.clone()),
                            leaf("5.1.2", "Incident Coordination", self.coordination.clone()),
                            leaf("5.1.3", "Incident Resolution", self.resolution.clone()),
                        ],
                    ),
                    leaf("5.2", "Proactive Activities", self.proactive.clone()),
                ],
            ),
            leaf(
                "6",
                "Incident Reporting Forms",
                self.reporting_forms.clone(),
            ),
            leaf("7", "Disclaimers", self.disclaimer.clone()),
        ]
    }

    /// The profile as a plain-text document, the form teams usually publish.
    pub fn to_text(&self) -> String {
        fn walk(out: &mut String, s: &Section) {
            out.push_str(&format!("{}. {}\n", s.number, s.heading));
            if let Some(t) = &s.text {
                for line in t.lines() {
                    out.push_str("   ");
                    out.push_str(line);
                    out.push('\n');
                }
            }
            out.push('\n');
            for sub in &s.subsections {
                walk(out, sub);
            }
        }
        let mut out = format!(
            "Description of {} according to RFC 2350\n",
            if self.team_name.is_empty() {
                "the team"
            } else {
                &self.team_name
            }
        );
        if let Some(t) = self.tlp_label {
            out.push_str(&format!("{}\n", t.label()));
        }
        out.push('\n');
        for s in self.outline() {
            walk(&mut out, &s);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbers(s: &[Section], out: &mut Vec<&'static str>) {
        for x in s {
            out.push(x.number);
            numbers(&x.subsections, out);
        }
    }

    #[test]
    fn the_outline_keeps_every_heading_of_appendix_d_in_order() {
        let p = TeamProfile {
            team_name: "Example CSIRT".into(),
            ..Default::default()
        };
        let mut got = vec![];
        numbers(&p.outline(), &mut got);
        assert_eq!(
            got,
            [
                "1", "1.1", "1.2", "1.3", "2", "2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "2.7",
                "2.8", "2.9", "2.10", "2.11", "3", "3.1", "3.2", "3.3", "3.4", "4", "4.1", "4.2",
                "4.3", "5", "5.1", "5.1.1", "5.1.2", "5.1.3", "5.2", "6", "7"
            ]
        );
        let text = p.to_text();
        assert!(text.contains("2.5. Facsimile Number\n   None available."));
        assert!(text.contains("2.9. Team Members\n   The list of team members is not public."));
    }

    #[test]
    fn fields_are_checked() {
        let ok = TeamProfile {
            team_name: "Example CSIRT".into(),
            last_update: "2026-12-05".into(),
            email: "csirt@example.org".into(),
            document_urls: vec!["https://example.org/rfc2350.txt".into()],
            ..Default::default()
        };
        assert_eq!(ok.validate(), Ok(()));
        for bad in [
            TeamProfile {
                team_name: String::new(),
                ..ok.clone()
            },
            TeamProfile {
                last_update: "5 Dec".into(),
                ..ok.clone()
            },
            TeamProfile {
                last_update: "2026-02-30".into(),
                ..ok.clone()
            },
            TeamProfile {
                email: "nobody".into(),
                ..ok.clone()
            },
            TeamProfile {
                document_urls: vec!["javascript:alert(1)".into()],
                ..ok.clone()
            },
            TeamProfile {
                mission: "x".repeat(MAX_FIELD_CHARS + 1),
                ..ok.clone()
            },
            TeamProfile {
                members: vec!["a".into(); MAX_LIST + 1],
                ..ok.clone()
            },
            TeamProfile {
                authority: "a\u{1b}[2J".into(),
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
