//! What may leave a collector, and to whom: TLP 2.0 enforced by the sender, before anything
//! leaves, in one place. Every path that sends an object to a peer or publishes it asks
//! [`decide`]; a receiver keeps the strictest label it has seen ([`label_on_receipt`]).
//!
//! The rules, by label:
//! - `TLP:RED` never leaves the collector that holds it;
//! - `TLP:AMBER+STRICT` never leaves the constituency's own organisation: only to a peer that
//!   is that organisation;
//! - `TLP:AMBER` only to peers that serve the object's constituency (an object of no
//!   constituency cannot prove that, so it stays);
//! - `TLP:GREEN` to the peer community, not to the public;
//! - `TLP:CLEAR` anywhere, the public advisories feed included.
//!
//! On top of the label, each link's policy (per direction) says which labels, object kinds
//! and incident types go out at all; it can only narrow what the label allows.

use crate::taxonomy::Tlp;

/// What a peer collector is to this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerRole {
    /// The national hub.
    Hub,
    /// A sector team's collector.
    Sector,
    /// A partner team outside the network's hierarchy: reads what its link allows.
    Partner,
}

impl PeerRole {
    pub const ALL: [PeerRole; 3] = [PeerRole::Hub, PeerRole::Sector, PeerRole::Partner];
}

/// What is shared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    Indicator,
    Sighting,
    IncidentSummary,
    Advisory,
    DetectorBundle,
    /// The team's RFC 2350 profile.
    TeamProfile,
    /// Which versions of a relayed detector bundle a team's agents run, or that it declined
    /// the bundle: told to the bundle's origin.
    BundleStatus,
}

impl ObjectKind {
    pub const ALL: [ObjectKind; 7] = [
        ObjectKind::Indicator,
        ObjectKind::Sighting,
        ObjectKind::IncidentSummary,
        ObjectKind::Advisory,
        ObjectKind::DetectorBundle,
        ObjectKind::TeamProfile,
        ObjectKind::BundleStatus,
    ];
}

/// Where an object would go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination<'a> {
    Peer {
        role: PeerRole,
        /// The constituencies the peer serves.
        serves: &'a [String],
        /// The peer is the constituency's own organisation (its own collector).
        organisation: Option<&'a str>,
    },
    /// The public advisories page and feed.
    Public,
}

/// An object about to leave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing<'a> {
    pub label: Tlp,
    pub kind: ObjectKind,
    /// The constituency the object is about, if any.
    pub constituency: Option<&'a str>,
    /// The RSIT type, for the link policy (`class/type`), if any.
    pub rsit_type: Option<&'a str>,
}

/// A link's sharing policy in one direction.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinkPolicy {
    /// The most restricted label that may go out on this link. Default `TLP:AMBER`.
    pub max_label: Tlp,
    /// Object kinds that go out. Default: every kind.
    pub kinds: Vec<ObjectKind>,
    /// RSIT types (`class/type`) whose objects go out; empty: every type.
    pub rsit_types: Vec<String>,
}

impl Default for LinkPolicy {
    fn default() -> Self {
        LinkPolicy {
            max_label: Tlp::Amber,
            kinds: ObjectKind::ALL.to_vec(),
            rsit_types: vec![],
        }
    }
}

/// Why an object stays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// TLP:RED never leaves.
    Red,
    /// TLP:AMBER+STRICT to anyone but the constituency's own organisation.
    NotTheOrganisation,
    /// TLP:AMBER to a peer that does not serve the constituency (or of no constituency).
    NotServed,
    /// TLP:GREEN or above to the public.
    NotPublic,
    /// The link's policy does not send this label, kind or type.
    Policy,
}

/// May `obj` go to `dest` on a link with `policy`? The label first, then the policy.
pub fn decide(
    obj: &Outgoing<'_>,
    dest: &Destination<'_>,
    policy: &LinkPolicy,
) -> Result<(), Refusal> {
    match (obj.label, dest) {
        (Tlp::Red, _) => return Err(Refusal::Red),
        (Tlp::Clear, Destination::Public) => return Ok(()),
        (_, Destination::Public) => return Err(Refusal::NotPublic),
        (Tlp::AmberStrict, Destination::Peer { organisation, .. }) => {
            if obj.constituency.is_none() || *organisation != obj.constituency {
                return Err(Refusal::NotTheOrganisation);
            }
        }
        (Tlp::Amber, Destination::Peer { serves, .. }) => {
            let served = obj
                .constituency
                .is_some_and(|c| serves.iter().any(|s| s == c));
            if !served {
                return Err(Refusal::NotServed);
            }
        }
        (Tlp::Green | Tlp::Clear, Destination::Peer { .. }) => {}
    }
    let type_ok = policy.rsit_types.is_empty()
        || obj
            .rsit_type
            .is_some_and(|t| policy.rsit_types.iter().any(|p| p == t));
    if obj.label > policy.max_label || !policy.kinds.contains(&obj.kind) || !type_ok {
        return Err(Refusal::Policy);
    }
    Ok(())
}

/// The label a receiver stores: what it got, never below what it already had.
pub fn label_on_receipt(stored: Option<Tlp>, received: Tlp) -> Tlp {
    stored.map_or(received, |s| s.max(received))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The destinations every label is tried against.
    #[derive(Clone, Copy, Debug)]
    enum To {
        /// A peer that serves the object's constituency.
        Serving,
        /// A peer that does not.
        Other,
        /// The constituency's own organisation.
        Own,
        Public,
    }

    /// Where a label may go: each destination and the decision.
    type Row = [(To, Result<(), Refusal>); 4];

    /// The table: for each label, whether it may go to each destination (under a policy
    /// that lets everything through), whatever the peer's role and the object's kind.
    const TABLE: [(Tlp, Row); 5] = [
        (
            Tlp::Red,
            [
                (To::Serving, Err(Refusal::Red)),
                (To::Other, Err(Refusal::Red)),
                (To::Own, Err(Refusal::Red)),
                (To::Public, Err(Refusal::Red)),
            ],
        ),
        (
            Tlp::AmberStrict,
            [
                (To::Serving, Err(Refusal::NotTheOrganisation)),
                (To::Other, Err(Refusal::NotTheOrganisation)),
                (To::Own, Ok(())),
                (To::Public, Err(Refusal::NotPublic)),
            ],
        ),
        (
            Tlp::Amber,
            [
                (To::Serving, Ok(())),
                (To::Other, Err(Refusal::NotServed)),
                (To::Own, Ok(())),
                (To::Public, Err(Refusal::NotPublic)),
            ],
        ),
        (
            Tlp::Green,
            [
                (To::Serving, Ok(())),
                (To::Other, Ok(())),
                (To::Own, Ok(())),
                (To::Public, Err(Refusal::NotPublic)),
            ],
        ),
        (
            Tlp::Clear,
            [
                (To::Serving, Ok(())),
                (To::Other, Ok(())),
                (To::Own, Ok(())),
                (To::Public, Ok(())),
            ],
        ),
    ];

    fn open_policy() -> LinkPolicy {
        LinkPolicy {
            max_label: Tlp::AmberStrict,
            ..Default::default()
        }
    }

    #[test]
    fn every_label_role_and_kind_goes_exactly_where_tlp_allows() {
        let bank = vec!["bank-a".to_string(), "bank-b".to_string()];
        let elsewhere = vec!["gov-x".to_string()];
        let mut cases = 0;
        for (label, row) in TABLE {
            for role in PeerRole::ALL {
                for kind in ObjectKind::ALL {
                    let obj = Outgoing {
                        label,
                        kind,
                        constituency: Some("bank-a"),
                        rsit_type: Some("malicious-code/infected-system"),
                    };
                    for (to, want) in row {
                        let dest = match to {
                            To::Serving => Destination::Peer {
                                role,
                                serves: &bank,
                                organisation: None,
                            },
                            To::Other => Destination::Peer {
                                role,
                                serves: &elsewhere,
                                organisation: None,
                            },
                            To::Own => Destination::Peer {
                                role,
                                serves: &bank,
                                organisation: Some("bank-a"),
                            },
                            To::Public => Destination::Public,
                        };
                        assert_eq!(
                            decide(&obj, &dest, &open_policy()),
                            want,
                            "{label} {kind:?} to {to:?} ({role:?})"
                        );
                        cases += 1;
                    }
                }
            }
        }
        assert_eq!(cases, 5 * 3 * 7 * 4);
    }

    #[test]
    fn objects_of_no_constituency_stay_unless_green_or_clear() {
        let serves = vec!["bank-a".to_string()];
        let dest = Destination::Peer {
            role: PeerRole::Hub,
            serves: &serves,
            organisation: None,
        };
        for (label, want) in [
            (Tlp::AmberStrict, Err(Refusal::NotTheOrganisation)),
            (Tlp::Amber, Err(Refusal::NotServed)),
            (Tlp::Green, Ok(())),
        ] {
            let obj = Outgoing {
                label,
                kind: ObjectKind::Advisory,
                constituency: None,
                rsit_type: None,
            };
            assert_eq!(decide(&obj, &dest, &open_policy()), want, "{label}");
        }
    }

    #[test]
    fn a_link_policy_only_narrows() {
        let serves = vec!["bank-a".to_string()];
        let dest = Destination::Peer {
            role: PeerRole::Partner,
            serves: &serves,
            organisation: None,
        };
        let obj = |label, kind, rsit_type| Outgoing {
            label,
            kind,
            constituency: Some("bank-a"),
            rsit_type,
        };
        let green_indicators = LinkPolicy {
            max_label: Tlp::Green,
            kinds: vec![ObjectKind::Indicator],
            rsit_types: vec!["phishing/phishing".into()],
        };
        let ok = obj(Tlp::Green, ObjectKind::Indicator, Some("phishing/phishing"));
        assert_eq!(decide(&ok, &dest, &green_indicators), Ok(()));
        for refused in [
            obj(Tlp::Amber, ObjectKind::Indicator, Some("phishing/phishing")),
            obj(Tlp::Green, ObjectKind::Sighting, Some("phishing/phishing")),
            obj(Tlp::Green, ObjectKind::Indicator, Some("fraud/masquerade")),
            obj(Tlp::Green, ObjectKind::Indicator, None),
        ] {
            assert_eq!(
                decide(&refused, &dest, &green_indicators),
                Err(Refusal::Policy),
                "{refused:?}"
            );
        }
        // No policy lets RED out.
        let everything = LinkPolicy {
            max_label: Tlp::Red,
            ..Default::default()
        };
        assert_eq!(
            decide(
                &obj(Tlp::Red, ObjectKind::Indicator, None),
                &dest,
                &everything
            ),
            Err(Refusal::Red)
        );
    }

    #[test]
    fn a_receiver_never_downgrades_a_label() {
        for stored in Tlp::ALL {
            for got in Tlp::ALL {
                let kept = label_on_receipt(Some(stored), got);
                assert!(kept >= stored && kept >= got, "{stored} then {got}: {kept}");
            }
        }
        assert_eq!(label_on_receipt(None, Tlp::Green), Tlp::Green);
    }
}
