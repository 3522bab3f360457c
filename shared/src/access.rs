//! Who may see and do what: roles, their permissions, constituency scopes and TLP.
//!
//! Constraints:
//! 1. Every principal is scoped: to all constituencies (`*`, for the coordinating team's
//!    staff) or to a named set. Nothing outside the scope is visible, in any role.
//! 2. TLP limits what a role may read, whatever its scope: the CSIRT's own staff up to
//!    `TLP:AMBER+STRICT`, a constituent (the CSIRT's client) up to `TLP:AMBER`, a partner team
//!    up to `TLP:GREEN`. `TLP:RED` is for the named participants of that ticket only, admins
//!    included.
//! 3. The store filters by a [`Viewer`] in its queries; handlers check [`Permission`]s. Both,
//!    so a handler that forgets a check still cannot read across constituencies.

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::taxonomy::Tlp;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Admin,
    DetectionDeveloper,
    Responder,
    ConstituentViewer,
    Partner,
}

/// What a request wants to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Permission {
    ReadEvents,
    ReadAlerts,
    ReadTickets,
    /// Acknowledge, assign, transition, comment, label, tasks, merge, participants.
    WriteTickets,
    ReadSuppressions,
    ManageSuppressions,
    ReadAgents,
    ReadMetrics,
    ReadAudit,
    ManageUsers,
    /// Edit the team's RFC 2350 profile.
    ManageProfile,
    /// Constituencies with their assets and contacts, escalation policies, rotas, SLAs.
    ReadDirectory,
    /// Detection bundles: versions and rollout.
    ReadDetectors,
    /// Push bundles, roll them out and back.
    ManageDetectors,
    /// File an incident report for one's own constituencies (it becomes a ticket there).
    ReportIncidents,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::DetectionDeveloper,
        Role::Responder,
        Role::ConstituentViewer,
        Role::Partner,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::DetectionDeveloper => "detection_developer",
            Role::Responder => "responder",
            Role::ConstituentViewer => "constituent_viewer",
            Role::Partner => "partner",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }

    pub fn allows(self, p: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Admin => true,
            Role::Responder => {
                !matches!(p, ManageUsers | ReadAudit | ManageProfile | ManageDetectors)
            }
            Role::DetectionDeveloper => !matches!(
                p,
                ManageUsers | ReadAudit | WriteTickets | ManageProfile | ReportIncidents
            ),
            Role::ConstituentViewer => {
                matches!(
                    p,
                    ReadAlerts
                        | ReadTickets
                        | ReadAgents
                        | ReadMetrics
                        | ReadDirectory
                        | ReportIncidents
                )
            }
            Role::Partner => matches!(p, ReadTickets | ReadMetrics),
        }
    }

    /// The most restricted label this role may read (RED aside: participants only).
    pub fn max_tlp(self) -> Tlp {
        match self {
            Role::Admin | Role::DetectionDeveloper | Role::Responder => Tlp::AmberStrict,
            Role::ConstituentViewer => Tlp::Amber,
            Role::Partner => Tlp::Green,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The constituencies a principal serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Scope {
    /// Every constituency (`*`).
    All,
    Only(BTreeSet<String>),
}

impl Scope {
    /// From a list where `*` means all; an empty list is refused.
    pub fn from_list(list: &[String]) -> Option<Scope> {
        if list.is_empty() || list.iter().any(|c| c.is_empty()) {
            return None;
        }
        if list.iter().any(|c| c == "*") {
            return Some(Scope::All);
        }
        Some(Scope::Only(list.iter().cloned().collect()))
    }

    pub fn to_list(&self) -> Vec<String> {
        match self {
            Scope::All => vec!["*".into()],
            Scope::Only(s) => s.iter().cloned().collect(),
        }
    }

    pub fn contains(&self, constituency: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(s) => s.contains(constituency),
        }
    }

    /// Whether everything in `other` is inside this scope.
    pub fn covers(&self, other: &Scope) -> bool {
        match (self, other) {
            (Scope::All, _) => true,
            (Scope::Only(_), Scope::All) => false,
            (Scope::Only(a), Scope::Only(b)) => b.is_subset(a),
        }
    }
}

/// An authenticated user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Principal {
    pub user: String,
    pub role: Role,
    pub scope: Scope,
}

impl Principal {
    pub fn may(&self, p: Permission) -> bool {
        self.role.allows(p)
    }

    /// May do `p` in `constituency`.
    pub fn may_in(&self, p: Permission, constituency: &str) -> bool {
        self.role.allows(p) && self.scope.contains(constituency)
    }

    /// What the store filters by.
    pub fn viewer(&self) -> Viewer {
        Viewer {
            user: self.user.clone(),
            constituencies: match &self.scope {
                Scope::All => None,
                Scope::Only(s) => Some(s.iter().cloned().collect()),
            },
            max_tlp: self.role.max_tlp(),
        }
    }
}

/// The read filter of one principal, as the store applies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Viewer {
    pub user: String,
    /// None: every constituency.
    pub constituencies: Option<Vec<String>>,
    pub max_tlp: Tlp,
}

impl Viewer {
    /// The collector itself (pipelines, local commands): everything except other people's
    /// TLP:RED.
    pub fn system() -> Viewer {
        Viewer {
            user: "lindi".into(),
            constituencies: None,
            max_tlp: Tlp::AmberStrict,
        }
    }

    pub fn sees_constituency(&self, c: &str) -> bool {
        self.constituencies
            .as_ref()
            .is_none_or(|l| l.iter().any(|x| x == c))
    }

    /// Whether a ticket with this label is readable; `participant` says whether this viewer
    /// is named on it.
    pub fn sees_tlp(&self, tlp: Tlp, participant: bool) -> bool {
        if tlp == Tlp::Red {
            return participant;
        }
        tlp <= self.max_tlp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(role: Role, scope: &[&str]) -> Principal {
        Principal {
            user: "u".into(),
            role,
            scope: Scope::from_list(&scope.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap(),
        }
    }

    #[test]
    fn roles_permissions_and_scopes() {
        let r = p(Role::Responder, &["bank-a"]);
        assert!(r.may_in(Permission::WriteTickets, "bank-a"));
        assert!(!r.may_in(Permission::WriteTickets, "bank-b"));
        assert!(!r.may(Permission::ManageUsers));
        let v = p(Role::ConstituentViewer, &["bank-a"]);
        assert!(v.may_in(Permission::ReadTickets, "bank-a"));
        assert!(!v.may(Permission::WriteTickets) && !v.may(Permission::ReadEvents));
        let partner = p(Role::Partner, &["*"]);
        assert!(!partner.may(Permission::ReadAlerts));
        assert!(p(Role::Admin, &["*"]).may_in(Permission::ManageUsers, "anything"));
        assert!(Scope::from_list(&[]).is_none());
        assert!(Scope::All.covers(&r.scope));
        assert!(!r.scope.covers(&Scope::All));
    }

    #[test]
    fn tlp_by_role_and_red_for_participants_only() {
        let staff = p(Role::Admin, &["*"]).viewer();
        assert!(staff.sees_tlp(Tlp::AmberStrict, false));
        assert!(!staff.sees_tlp(Tlp::Red, false), "admins too");
        assert!(staff.sees_tlp(Tlp::Red, true));
        let client = p(Role::ConstituentViewer, &["bank-a"]).viewer();
        assert!(client.sees_tlp(Tlp::Amber, false));
        assert!(!client.sees_tlp(Tlp::AmberStrict, false));
        let partner = p(Role::Partner, &["*"]).viewer();
        assert!(partner.sees_tlp(Tlp::Green, false) && !partner.sees_tlp(Tlp::Amber, false));
        assert!(!client.sees_constituency("bank-b") && staff.sees_constituency("bank-b"));
    }
}
