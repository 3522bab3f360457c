//! The escalator and the notifier: two threads that turn tickets into pages.
//!
//! The escalator sets up each new (or reopened) ticket's SLA clocks and climb, moves due
//! climbs up their policy's levels, and records SLA breaches; every page becomes one
//! notification per contact and channel in the store's outbox, in the same transaction as the
//! move. The notifier delivers the outbox with retries and exponential backoff and logs every
//! attempt.
//!
//! Constraints:
//! 1. Both take `now` as an argument in [`Escalator::run_once`] and [`Notifier::run_once`], so
//!    tests drive them with a simulated clock; the threads only feed them the wall clock.
//! 2. A climb in progress keeps the policy version it started with (stored by digest); a
//!    changed configuration applies to climbs that start after it.
//! 3. Delivery is at least once: a crash between a send and its record resends that one
//!    notification, with the same delivery id, after the restart; nothing else is resent.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use lindi_shared::escalation::{
    Climb, EscalationError, EscalationPolicy, EscalationPolicyConfig, Page, RotaConfig, Rotas,
    SlaConfig,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::monitor::Monitor;
use crate::notify::{self, ChannelConfig, ChannelKind, Message};
use crate::pipeline::PipelineHandle;
use crate::scheduler::SchedulerLease;
use crate::store::escalation::{
    DueClimb, EscalationTx, NewNotification, SlaDue, TicketBrief, Unstarted,
};
use crate::store::{SqlStore, StoreError};

/// One escalator step on some rows, in a transaction: (rows handled, notifications queued).
type ApplyFn<'a> = dyn Fn(&EscalationTx<'_>) -> Result<(usize, usize), StoreError> + 'a;

/// Rows handled per step.
const STEP_LIMIT: u32 = 500;
/// Longest wait between two delivery attempts.
const MAX_BACKOFF_NS: i64 = 3600 * 1_000_000_000;

/// `[[escalation.contacts]]`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ContactConfig {
    pub name: String,
    /// E-mail address, sent through `email_channel` (default: the only smtp channel).
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub email_channel: Option<String>,
    /// Webhook and Slack channels this contact is paged on.
    #[serde(default)]
    pub channels: Vec<String>,
}

/// `[escalation]` in collector.toml.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EscalationSection {
    /// How often the escalator looks at its clocks, milliseconds. Default 1000.
    pub tick_ms: u64,
    /// Delivery attempts before a notification is given up (and shown as failed). Default 8.
    pub max_attempts: u32,
    /// First retry after this many milliseconds, doubling up to an hour. Default 2000.
    pub retry_base_ms: u64,
    pub channels: Vec<ChannelConfig>,
    pub contacts: Vec<ContactConfig>,
    pub rotas: Vec<RotaConfig>,
    /// Chosen per ticket by constituency and severity: the first that serves it.
    pub policies: Vec<EscalationPolicyConfig>,
    /// Time to acknowledge and to resolve, per severity.
    pub sla: SlaConfig,
}

impl Default for EscalationSection {
    fn default() -> Self {
        EscalationSection {
            tick_ms: 1000,
            max_attempts: 8,
            retry_base_ms: 2000,
            channels: vec![],
            contacts: vec![],
            rotas: vec![],
            policies: vec![],
            sla: SlaConfig::default(),
        }
    }
}

/// A contact's ways to be reached: (channel name, address) pairs.
type Routes = Vec<(String, String)>;

/// Validated escalation settings.
#[derive(Debug)]
pub struct EscalationSettings {
    pub tick: Duration,
    pub max_attempts: u32,
    pub retry_base_ns: i64,
    pub channels: BTreeMap<String, ChannelConfig>,
    routes: BTreeMap<String, Routes>,
    pub rotas: Rotas,
    pub policies: Vec<EscalationPolicy>,
    pub sla: SlaConfig,
}

impl EscalationSettings {
    pub fn new(s: &EscalationSection) -> Result<EscalationSettings, String> {
        let mut channels = BTreeMap::new();
        for c in &s.channels {
            c.validate()?;
            if channels.insert(c.name.clone(), c.clone()).is_some() {
                return Err(format!("channel {} named twice", c.name));
            }
        }
        let smtp: Vec<&String> = channels
            .values()
            .filter(|c| c.kind == ChannelKind::Smtp)
            .map(|c| &c.name)
            .collect();
        let mut routes = BTreeMap::new();
        for c in &s.contacts {
            let mut r: Routes = Vec::new();
            if let Some(email) = &c.email {
                let ch = match (&c.email_channel, smtp.as_slice()) {
                    (Some(ch), _) => ch.clone(),
                    (None, [only]) => (*only).clone(),
                    (None, _) => {
                        return Err(format!(
                            "contact {}: has an e-mail address; name its email_channel (there is not exactly one smtp channel)",
                            c.name
                        ));
                    }
                };
                if channels.get(&ch).map(|c| c.kind) != Some(ChannelKind::Smtp) {
                    return Err(format!("contact {}: {ch} is not an smtp channel", c.name));
                }
                if email.contains(['\r', '\n', '<', '>']) || !email.contains('@') {
                    return Err(format!("contact {}: bad e-mail address", c.name));
                }
                r.push((ch, email.clone()));
            }
            for ch in &c.channels {
                match channels.get(ch).map(|c| c.kind) {
                    Some(ChannelKind::Webhook | ChannelKind::Slack) => {
                        r.push((ch.clone(), String::new()))
                    }
                    Some(ChannelKind::Smtp) => {
                        return Err(format!(
                            "contact {}: {ch} is smtp; give an email instead",
                            c.name
                        ));
                    }
                    None => return Err(format!("contact {}: no channel {ch}", c.name)),
                }
            }
            if r.is_empty() {
                return Err(format!(
                    "contact {}: no e-mail and no channel: unreachable",
                    c.name
                ));
            }
            if routes.insert(c.name.clone(), r).is_some() {
                return Err(format!("contact {} named twice", c.name));
            }
        }
        let contact_names: BTreeSet<String> = routes.keys().cloned().collect();
        let rotas = Rotas::new(&s.rotas, &contact_names).map_err(|e| e.to_string())?;
        let rota_names = rotas.names();
        let mut names = BTreeSet::new();
        let policies = s
            .policies
            .iter()
            .map(|p| {
                if !names.insert(p.name.clone()) {
                    return Err(EscalationError::Policy {
                        policy: p.name.clone(),
                        message: "named twice".into(),
                    });
                }
                EscalationPolicy::new(p, &contact_names, &rota_names)
            })
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;
        s.sla.validate().map_err(|e| e.to_string())?;
        if s.tick_ms == 0 || s.max_attempts == 0 || s.retry_base_ms == 0 {
            return Err("tick_ms, max_attempts and retry_base_ms must be above 0".into());
        }
        Ok(EscalationSettings {
            tick: Duration::from_millis(s.tick_ms.min(60_000)),
            max_attempts: s.max_attempts,
            retry_base_ns: s.retry_base_ms.min(3_600_000) as i64 * 1_000_000,
            channels,
            routes,
            rotas,
            policies,
            sla: s.sla.clone(),
        })
    }
}

/// What the escalator and notifier have done.
#[derive(Debug, Default, Serialize)]
pub struct EscalationStats {
    pub climbs_started: AtomicU64,
    pub pages: AtomicU64,
    pub sla_breaches: AtomicU64,
    pub notifications_queued: AtomicU64,
    pub delivered: AtomicU64,
    pub delivery_failures: AtomicU64,
    pub given_up: AtomicU64,
    pub errors: AtomicU64,
}

fn bump(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

pub struct Escalator {
    store: Arc<SqlStore>,
    settings: Arc<EscalationSettings>,
    pub stats: Arc<EscalationStats>,
}

impl Escalator {
    pub fn new(store: Arc<SqlStore>, settings: Arc<EscalationSettings>) -> Escalator {
        Escalator {
            store,
            settings,
            stats: Arc::default(),
        }
    }

    /// Start new climbs, move due ones, record SLA breaches. Returns how much it did.
    pub fn run_once(&self, now_ns: i64) -> Result<usize, StoreError> {
        let unstarted = self.store.unstarted_escalations(STEP_LIMIT)?;
        let due = self.store.due_climbs(now_ns, STEP_LIMIT)?;
        let sla = self.store.sla_due(now_ns, STEP_LIMIT)?;
        if unstarted.is_empty() && due.is_empty() && sla.is_empty() {
            return Ok(0);
        }
        let applied = self
            .store
            .write_escalation(|tx| self.apply(tx, &unstarted, &due, &sla, now_ns));
        let (work, queued) = match applied {
            Ok(done) => done,
            Err(e) => {
                // One ticket that cannot be moved must not stall every other one: apply each
                // on its own, and set aside (state `error`, logged) those that still fail.
                bump(&self.stats.errors, 1);
                tracing::error!("escalator: {e}; retrying ticket by ticket");
                let mut total = (0, 0);
                let mut one = |id: i64, f: &ApplyFn<'_>| match self.store.write_escalation(f) {
                    Ok((w, q)) => {
                        total.0 += w;
                        total.1 += q;
                    }
                    Err(e) => {
                        bump(&self.stats.errors, 1);
                        tracing::error!("escalator: ticket {id} set aside: {e}");
                        if let Err(e) = self.store.set_escalation_error(id) {
                            tracing::error!("escalator: ticket {id}: {e}");
                        }
                    }
                };
                for u in &unstarted {
                    one(u.ticket.id, &|tx| {
                        self.apply(tx, std::slice::from_ref(u), &[], &[], now_ns)
                    });
                }
                for d in &due {
                    one(d.ticket.id, &|tx| {
                        self.apply(tx, &[], std::slice::from_ref(d), &[], now_ns)
                    });
                }
                for b in &sla {
                    one(b.ticket.id, &|tx| {
                        self.apply(tx, &[], &[], std::slice::from_ref(b), now_ns)
                    });
                }
                total
            }
        };
        bump(&self.stats.notifications_queued, queued as u64);
        Ok(work)
    }

    /// The escalator's work on these rows, in the caller's transaction: (rows handled,
    /// notifications queued).
    fn apply(
        &self,
        tx: &EscalationTx<'_>,
        unstarted: &[Unstarted],
        due: &[DueClimb],
        sla: &[SlaDue],
        now_ns: i64,
    ) -> Result<(usize, usize), StoreError> {
        let s = &self.settings;
        let now_s = now_ns.div_euclid(1_000_000_000);
        let mut work = 0;
        let mut queued = 0;
        for u in unstarted {
            let t = &u.ticket;
            let dues = s.sla.due(t.severity, u.clock_start_ns);
            let policy = s
                .policies
                .iter()
                .find(|p| p.serves(&t.constituency, t.severity));
            match (u.state.as_str(), policy) {
                ("pending", Some(p)) => {
                    let pid = tx.policy_id(&p.config, &p.digest(), now_ns)?;
                    let (climb, page) = p.start(u.epoch, now_ns);
                    tx.start(t.id, Some(pid), Some(&climb), "climbing", dues)?;
                    bump(&self.stats.climbs_started, 1);
                    queued += self.page(tx, t, &page, "escalation", now_ns, now_s)?;
                }
                ("pending", None) => tx.start(t.id, None, None, "no_policy", dues)?,
                (state, _) => tx.start(t.id, None, None, state, dues)?,
            }
            work += 1;
        }
        for d in due {
            // The version the climb started with, as stored (validated when first used).
            let p = EscalationPolicy {
                config: d.policy.clone(),
            };
            queued += self.climb(tx, &p, d.climb, &d.ticket, now_ns, now_s)?;
            work += 1;
        }
        for b in sla {
            tx.breach(b.ticket.id, b.kind, b.due_ns)?;
            bump(&self.stats.sla_breaches, 1);
            work += 1;
            let Some(p) = &b.policy else {
                tracing::warn!(
                    "ticket {}: {} SLA breached; no escalation policy to notify",
                    b.ticket.id,
                    b.kind
                );
                continue;
            };
            // Everyone paged so far in this climb hears of the breach.
            let reached = if b.climb.round > 0 {
                p.levels.len() - 1
            } else {
                b.climb.level.min(p.levels.len() - 1)
            };
            let targets: Vec<String> = p.levels[..=reached]
                .iter()
                .flat_map(|l| l.contacts.iter().cloned())
                .collect();
            let page = Page {
                epoch: b.climb.epoch,
                round: 0,
                level: 0,
                targets,
            };
            let reason = if b.kind == "ack" {
                "sla_ack_breach"
            } else {
                "sla_resolve_breach"
            };
            queued += self.page(tx, &b.ticket, &page, reason, now_ns, now_s)?;
        }
        Ok((work, queued))
    }

    fn climb(
        &self,
        tx: &EscalationTx<'_>,
        p: &EscalationPolicy,
        mut climb: Climb,
        t: &TicketBrief,
        now_ns: i64,
        now_s: i64,
    ) -> Result<usize, StoreError> {
        let pages = climb.advance(p, now_ns);
        let mut queued = 0;
        for page in &pages {
            queued += self.page(tx, t, page, "escalation", now_ns, now_s)?;
        }
        tx.save_climb(t.id, &climb)?;
        Ok(queued)
    }

    /// Queue one page: every target resolved (rotas at `now_s`) to each of its routes.
    fn page(
        &self,
        tx: &EscalationTx<'_>,
        t: &TicketBrief,
        page: &Page,
        reason: &str,
        now_ns: i64,
        now_s: i64,
    ) -> Result<usize, StoreError> {
        bump(&self.stats.pages, 1);
        let what = match reason {
            "escalation" => format!("escalation level {}", page.level + 1),
            "sla_ack_breach" => "SLA breached: not acknowledged in time".into(),
            _ => "SLA breached: not resolved in time".into(),
        };
        let subject = format!(
            "[Lindi] {} {} ticket #{} ({}): {} — {what}",
            t.tlp,
            t.severity.name().to_uppercase(),
            t.id,
            t.constituency,
            t.title
        );
        let text = format!(
            "{subject}\n\nTicket #{id}: {title}\nConstituency: {c}\nIncident type (RSIT): {rsit}\nSeverity: {sev}\nState: {state}\nAssignee: {who}\n\nAcknowledge it to stop the escalation: lindi tickets ack {id}\n\n{tlp}: share only as {tlp} allows.",
            id = t.id,
            title = t.title,
            c = t.constituency,
            rsit = t.rsit_type,
            sev = t.severity,
            state = t.state,
            who = t.assignee.as_deref().unwrap_or("nobody"),
            tlp = t.tlp,
        );
        let mut queued = 0;
        for contact in self.settings.rotas.resolve(&page.targets, now_s) {
            let Some(routes) = self.settings.routes.get(&contact) else {
                tracing::warn!("ticket {}: contact {contact} is no longer configured", t.id);
                continue;
            };
            for (channel, address) in routes {
                let payload = json!({
                    "reason": reason,
                    "level": page.level + 1,
                    "round": page.round,
                    "contact": contact,
                    "subject": subject,
                    "text": text,
                    "ticket": t,
                });
                let created = tx.notify(
                    &NewNotification {
                        ticket_id: t.id,
                        reason,
                        epoch: page.epoch,
                        round: page.round,
                        level: page.level,
                        contact: &contact,
                        channel,
                        address,
                        subject: &subject,
                        payload: &payload,
                    },
                    now_ns,
                )?;
                queued += created as usize;
            }
        }
        Ok(queued)
    }

    /// Run on its own thread until `stop`, with the monitors every their interval; `wake`
    /// makes it look at once. Alarms wake the pipeline, pages wake the notifier.
    /// Run on its own thread until `stop`, while this node holds the scheduler `lease` (it
    /// renews it every tick), with the monitors every their interval; `wake` makes it look
    /// at once. Alarms wake the pipeline, pages wake the notifier. On a clean stop the lease
    /// is given up.
    #[allow(clippy::too_many_arguments)]
    pub fn spawn(
        self,
        monitor: Monitor,
        lease: Arc<SchedulerLease>,
        pipeline: Arc<PipelineHandle>,
        stop: Arc<AtomicBool>,
        wake: std::sync::mpsc::Receiver<()>,
        notifier: std::sync::mpsc::SyncSender<()>,
    ) -> std::thread::JoinHandle<()> {
        std::thread::Builder::new()
            .name("lindi-escalator".into())
            .spawn(move || {
                let mut next_monitor = std::time::Instant::now();
                while !stop.load(Ordering::Acquire) {
                    match lease.hold(crate::now_ns()) {
                        Ok(Some(_)) => {}
                        Ok(None) => {
                            let _ = wake.recv_timeout(self.settings.tick);
                            continue;
                        }
                        Err(e) => {
                            bump(&self.stats.errors, 1);
                            tracing::error!("scheduler lease: {e}; retrying");
                            let _ = wake.recv_timeout(self.settings.tick);
                            continue;
                        }
                    }
                    if std::time::Instant::now() >= next_monitor {
                        next_monitor += monitor.interval();
                        match monitor.run_once(crate::now_ns()) {
                            Ok(0) => {}
                            Ok(_) => pipeline.wake(),
                            Err(e) => {
                                bump(&self.stats.errors, 1);
                                tracing::error!("monitors: {e}");
                            }
                        }
                    }
                    match self.run_once(crate::now_ns()) {
                        Ok(n) if n > 0 => {
                            let _ = notifier.try_send(());
                            continue;
                        }
                        Ok(_) => {}
                        Err(e) => {
                            bump(&self.stats.errors, 1);
                            tracing::error!("escalator: {e}; retrying");
                        }
                    }
                    let _ = wake.recv_timeout(self.settings.tick);
                }
                lease.release();
            })
            .expect("spawn the escalator thread")
    }
}

pub struct Notifier {
    store: Arc<SqlStore>,
    settings: Arc<EscalationSettings>,
    stats: Arc<EscalationStats>,
    sender_name: String,
    lease: Arc<SchedulerLease>,
}

impl Notifier {
    pub fn new(
        store: Arc<SqlStore>,
        settings: Arc<EscalationSettings>,
        stats: Arc<EscalationStats>,
        sender_name: String,
        lease: Arc<SchedulerLease>,
    ) -> Notifier {
        Notifier {
            store,
            settings,
            stats,
            sender_name,
            lease,
        }
    }

    /// Deliver what is due while this node holds the scheduler lease; returns how many it
    /// tried. Each is claimed first under the lease's epoch, so a node that lost the lease
    /// sends nothing.
    pub fn run_once(&self, now_ns: i64) -> Result<usize, StoreError> {
        let Some(epoch) = self.lease.hold(now_ns)? else {
            return Ok(0);
        };
        let due = self.store.due_notifications(now_ns, STEP_LIMIT)?;
        let mut tried = 0;
        for n in &due {
            if !self.lease.claim(n.id, epoch, now_ns)? {
                continue;
            }
            tried += 1;
            let outcome = match self.settings.channels.get(&n.channel) {
                None => Err(format!("channel {} is no longer configured", n.channel)),
                Some(ch) => notify::send(
                    ch,
                    &Message {
                        delivery_id: &n.dedup,
                        to: &n.address,
                        subject: &n.subject,
                        text: n.payload["text"].as_str().unwrap_or(&n.subject),
                        json: &n.payload,
                        sender_name: &self.sender_name,
                    },
                )
                .map_err(|e| e.to_string()),
            };
            let attempts = n.attempts + 1;
            let next = match &outcome {
                Ok(()) => {
                    bump(&self.stats.delivered, 1);
                    None
                }
                Err(e) => {
                    bump(&self.stats.delivery_failures, 1);
                    tracing::warn!("notification {} via {}: {e}", n.id, n.channel);
                    if attempts >= self.settings.max_attempts {
                        bump(&self.stats.given_up, 1);
                        None
                    } else {
                        let backoff = self
                            .settings
                            .retry_base_ns
                            .saturating_mul(1 << (attempts - 1).min(20))
                            .min(MAX_BACKOFF_NS);
                        Some(now_ns.saturating_add(backoff))
                    }
                }
            };
            self.store.record_attempt(
                n.id,
                now_ns,
                outcome.as_ref().map(|_| ()).map_err(String::as_str),
                next,
            )?;
        }
        Ok(tried)
    }

    pub fn spawn(
        self,
        stop: Arc<AtomicBool>,
        wake: std::sync::mpsc::Receiver<()>,
    ) -> std::thread::JoinHandle<()> {
        std::thread::Builder::new()
            .name("lindi-notifier".into())
            .spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    match self.run_once(crate::now_ns()) {
                        Ok(n) if n > 0 => continue,
                        Ok(_) => {}
                        Err(e) => {
                            bump(&self.stats.errors, 1);
                            tracing::error!("notifier: {e}; retrying");
                        }
                    }
                    let _ = wake.recv_timeout(self.settings.tick);
                }
            })
            .expect("spawn the notifier thread")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::TriageSection;
    use crate::store::escalation::NotificationRecord;
    use crate::testutil::{Fixture, as_user, drain_at};
    use lindi_shared::access::Viewer;
    use lindi_shared::escalation::EscalationLevelConfig;
    use std::collections::HashMap;

    const S: i64 = 1_000_000_000;
    const T0: i64 = 1_800_000_000 * S;

    fn section(hook_url: &str) -> EscalationSection {
        let contact = |name: &str| ContactConfig {
            name: name.into(),
            email: Some(format!("{name}@example.org")),
            email_channel: None,
            channels: vec!["hook".into()],
        };
        EscalationSection {
            channels: vec![
                ChannelConfig {
                    name: "mail".into(),
                    kind: ChannelKind::Smtp,
                    url: String::new(),
                    headers: Default::default(),
                    server: "127.0.0.1:9".into(),
                    from: "lindi@example.org".into(),
                },
                ChannelConfig {
                    name: "hook".into(),
                    kind: ChannelKind::Webhook,
                    url: hook_url.into(),
                    headers: Default::default(),
                    server: String::new(),
                    from: String::new(),
                },
            ],
            contacts: ["oncall", "desk", "manager", "ciso"].map(contact).to_vec(),
            policies: vec![EscalationPolicyConfig {
                name: "default".into(),
                constituencies: vec!["*".into()],
                severities: lindi_shared::triage::Level::ALL.to_vec(),
                levels: vec![
                    EscalationLevelConfig {
                        contacts: vec!["oncall".into(), "desk".into()],
                        delay_secs: 600,
                    },
                    EscalationLevelConfig {
                        contacts: vec!["manager".into(), "ciso".into()],
                        delay_secs: 1800,
                    },
                ],
                repeat: 0,
            }],
            max_attempts: 3,
            ..Default::default()
        }
    }

    /// A store with one open ticket (high: a severity-1 trojan detection).
    fn with_ticket() -> (Fixture, i64) {
        let mut f = Fixture::new();
        f.detect("bank-a", "ag1", "1:100", "10.0.0.1", &[0]);
        drain_at(&mut f.pipeline(&TriageSection::default()), T0);
        let id = f.tickets("bank-a")[0].id;
        (f, id)
    }

    fn lease(f: &Fixture) -> Arc<SchedulerLease> {
        Arc::new(SchedulerLease::new(
            f.store.clone(),
            "test",
            crate::scheduler::LEASE_TTL_NS,
        ))
    }

    fn escalator(f: &Fixture, s: &EscalationSection) -> Escalator {
        Escalator::new(
            f.store.clone(),
            Arc::new(EscalationSettings::new(s).unwrap()),
        )
    }

    /// (reason, level, contact, channel) of every notification of a ticket.
    fn sent(f: &Fixture, ticket: i64) -> Vec<(String, u32, String, String)> {
        f.store
            .escalation(ticket)
            .unwrap()
            .unwrap()
            .notifications
            .into_iter()
            .map(|n| (n.reason, n.level, n.contact, n.channel))
            .collect()
    }

    fn ack(f: &Fixture, ticket: i64, at: i64) {
        f.store
            .change_ticket(&as_user("ana"), ticket, "acknowledge", at, &mut |e| {
                e.ticket.acknowledged_at_ns = Some(at);
                Ok(())
            })
            .unwrap()
            .unwrap()
            .unwrap();
    }

    #[test]
    fn levels_climb_on_a_simulated_clock_and_an_ack_stops_them() {
        let (f, t) = with_ticket();
        let e = escalator(&f, &section("http://127.0.0.1:9/hook"));
        e.run_once(T0).unwrap();
        let level1 = sent(&f, t);
        assert_eq!(
            level1.len(),
            4,
            "two contacts, each by mail and webhook: {level1:?}"
        );
        assert!(level1.iter().all(|n| n.1 == 0));
        e.run_once(T0 + 599 * S).unwrap();
        assert_eq!(sent(&f, t).len(), 4, "not before the delay");
        e.run_once(T0 + 600 * S).unwrap();
        let after = sent(&f, t);
        assert_eq!(after.len(), 8);
        assert!(
            after[4..]
                .iter()
                .all(|n| n.1 == 1 && (n.2 == "manager" || n.2 == "ciso"))
        );
        e.run_once(T0 + 600 * S).unwrap();
        assert_eq!(sent(&f, t).len(), 8, "once per level");
        ack(&f, t, T0 + 700 * S);
        e.run_once(T0 + 80_000 * S).unwrap();
        let esc = f.store.escalation(t).unwrap().unwrap();
        assert_eq!(esc.state, "acknowledged");
        assert_eq!(
            esc.ack_breach_ns,
            Some(0),
            "acknowledged within the high SLA (1 h)"
        );
        assert!(
            sent(&f, t).iter().all(|n| n.0 == "escalation"),
            "no further pages (the resolve SLA, 1 day, has not run out)"
        );
    }

    #[test]
    fn tickets_no_policy_serves_get_their_sla_clocks_and_do_not_block_the_rest() {
        // Regression: a ticket without a policy once failed its update (NULL round) and the
        // escalator retried that transaction forever, paging nobody for any ticket.
        let (f, t) = with_ticket();
        let mut s = section("http://127.0.0.1:9/hook");
        s.policies[0].constituencies = vec!["someone-else".into()];
        let e = escalator(&f, &s);
        e.run_once(T0).unwrap();
        let esc = f.store.escalation(t).unwrap().unwrap();
        assert_eq!(esc.state, "no_policy");
        assert_eq!(
            esc.ack_due_ns,
            Some(T0 + 3600 * S),
            "high: an hour to acknowledge"
        );
        assert!(esc.notifications.is_empty());
        e.run_once(T0 + 3601 * S).unwrap();
        let esc = f.store.escalation(t).unwrap().unwrap();
        assert!(
            esc.ack_breach_ns.is_some(),
            "the breach is recorded, with nobody to tell"
        );
    }

    #[test]
    fn a_ticket_that_cannot_be_moved_is_set_aside_and_the_others_are_paged() {
        let mut f = Fixture::new();
        f.detect("bank-a", "ag1", "1:100", "10.0.0.1", &[0]);
        f.detect("bank-a", "ag1", "1:100", "10.0.0.2", &[0]);
        drain_at(&mut f.pipeline(&TriageSection::default()), T0);
        let mut ids: Vec<i64> = f.tickets("bank-a").iter().map(|t| t.id).collect();
        ids.sort();
        // The store refuses to start the first ticket's climb (as a corrupt row would).
        f.refuse(
            "UPDATE",
            "escalations",
            &format!("NEW.ticket_id = {} AND NEW.state = 'climbing'", ids[0]),
        );
        let e = escalator(&f, &section("http://127.0.0.1:9/hook"));
        e.run_once(T0).unwrap();
        assert_eq!(f.store.escalation(ids[0]).unwrap().unwrap().state, "error");
        assert_eq!(sent(&f, ids[1]).len(), 4, "the other ticket is paged");
        assert!(e.stats.errors.load(Ordering::Relaxed) >= 2);
        // Set aside: not picked again.
        assert_eq!(e.run_once(T0 + 1).unwrap(), 0);
    }

    /// A webhook receiver on loopback that answers 200 and counts each delivery id.
    fn webhook_sink() -> (String, Arc<std::sync::Mutex<HashMap<String, u32>>>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", l.local_addr().unwrap());
        let seen: Arc<std::sync::Mutex<HashMap<String, u32>>> = Arc::default();
        let counts = seen.clone();
        std::thread::spawn(move || {
            for conn in l.incoming().take(200) {
                let Ok(mut s) = conn else { continue };
                let mut r = BufReader::new(s.try_clone().unwrap());
                let (mut id, mut length) = (String::new(), 0usize);
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("x-lindi-delivery:") {
                        id = v.trim().to_string();
                    }
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length.min(1 << 20)];
                let _ = r.read_exact(&mut body);
                *counts.lock().unwrap().entry(id).or_default() += 1;
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        (url, seen)
    }

    /// One collector node's scheduler duties, as its escalator thread runs them each tick.
    struct Node {
        escalator: Escalator,
        notifier: Notifier,
        lease: Arc<SchedulerLease>,
    }

    impl Node {
        fn new(f: &Fixture, name: &str, settings: &Arc<EscalationSettings>) -> Node {
            let lease = Arc::new(SchedulerLease::new(
                f.store.clone(),
                name,
                crate::scheduler::LEASE_TTL_NS,
            ));
            let escalator = Escalator::new(f.store.clone(), settings.clone());
            let notifier = Notifier::new(
                f.store.clone(),
                settings.clone(),
                escalator.stats.clone(),
                name.into(),
                lease.clone(),
            );
            Node {
                escalator,
                notifier,
                lease,
            }
        }

        /// Returns whether this node held the lease and did the work.
        fn tick(&self, now: i64) -> bool {
            if self.lease.hold(now).unwrap().is_none() {
                return false;
            }
            self.escalator.run_once(now).unwrap();
            self.notifier.run_once(now).unwrap();
            true
        }
    }

    #[test]
    fn the_scheduler_fails_over_and_the_next_level_is_paged_once_on_time() {
        let (f, t) = with_ticket();
        let (url, deliveries) = webhook_sink();
        let settings = Arc::new(EscalationSettings::new(&section(&url)).unwrap());
        let a = Node::new(&f, "node-a", &settings);
        let b = Node::new(&f, "node-b", &settings);
        // A holds the scheduler and pages level 1; B, beside it, does nothing.
        assert!(a.tick(T0));
        assert!(!b.tick(T0 + S));
        let hook = |level: u32| -> Vec<NotificationRecord> {
            f.store
                .escalation(t)
                .unwrap()
                .unwrap()
                .notifications
                .into_iter()
                .filter(|n| n.channel == "hook" && n.level == level)
                .collect()
        };
        assert_eq!(hook(0).len(), 2);
        assert!(hook(0).iter().all(|n| n.state == "delivered"));
        // A claims an e-mail retry, then dies before sending it (no more ticks from A).
        let retry = f
            .store
            .escalation(t)
            .unwrap()
            .unwrap()
            .notifications
            .into_iter()
            .find(|n| n.channel == "mail" && n.state == "pending")
            .expect("a failed e-mail waits for its retry");
        assert!(a.lease.claim(retry.id, 1, T0 + 2 * S).unwrap());
        // Within the lease B still waits; once it has expired, B takes over between levels.
        assert!(!b.tick(T0 + 5 * S));
        assert!(b.tick(T0 + 13 * S));
        assert_eq!(b.lease.takeovers.load(Ordering::Relaxed), 1);
        assert_eq!(b.lease.orphaned_claims.load(Ordering::Relaxed), 1);
        let settled = f.store.escalation(t).unwrap().unwrap();
        let orphan = settled
            .notifications
            .iter()
            .find(|n| n.id == retry.id)
            .unwrap();
        assert_eq!(orphan.state, "uncertain", "{orphan:?}");
        // Level 2 is due at +600 s: B pages it at its first tick after, once.
        assert!(b.tick(T0 + 599 * S));
        assert!(hook(1).is_empty());
        assert!(b.tick(T0 + 601 * S));
        let level2 = hook(1);
        assert_eq!(level2.len(), 2);
        for n in &level2 {
            assert_eq!(n.state, "delivered");
            assert_eq!(n.created_at_ns, T0 + 601 * S, "on time");
        }
        // A comes back (it was paused, not dead): it no longer holds the lease, and a claim
        // under its old epoch is refused, so it cannot send anything twice.
        assert!(!a.tick(T0 + 602 * S));
        for n in &level2 {
            assert!(!a.lease.claim(n.id, 1, T0 + 602 * S).unwrap());
        }
        assert!(b.tick(T0 + 700 * S));
        let counts = deliveries.lock().unwrap().clone();
        assert_eq!(counts.len(), 4, "{counts:?}");
        assert!(
            counts.values().all(|&n| n == 1),
            "each delivered once: {counts:?}"
        );
        // The orphaned e-mail was never retried.
        let log = f.store.escalation(t).unwrap().unwrap();
        let orphan = log.notifications.iter().find(|n| n.id == retry.id).unwrap();
        assert_eq!(
            (orphan.state.as_str(), orphan.attempts),
            ("uncertain", retry.attempts)
        );
        // B restarted (the same node, a new process) takes its lease back at once, in a new
        // epoch, without waiting for the old one to expire.
        let b_again = Node::new(&f, "node-b", &settings);
        assert!(b_again.tick(T0 + 701 * S));
        assert_eq!(b_again.lease.takeovers.load(Ordering::Relaxed), 1);
        // (A process re-reads the lease a quarter-lease after its last write, before any
        // other node could have taken it over; the same node runs one process at a time.)
        assert!(!b.tick(T0 + 710 * S), "the old process no longer holds it");
        assert_eq!(
            f.store
                .lease(crate::scheduler::LEASE)
                .unwrap()
                .unwrap()
                .epoch,
            3
        );
    }

    #[test]
    fn a_restarted_escalator_continues_on_time_without_resending() {
        let (f, t) = with_ticket();
        let s = section("http://127.0.0.1:9/hook");
        escalator(&f, &s).run_once(T0).unwrap();
        // "Restart": a new escalator over the same store, between levels.
        let e = escalator(&f, &s);
        e.run_once(T0 + 300 * S).unwrap();
        assert_eq!(sent(&f, t).len(), 4);
        e.run_once(T0 + 601 * S).unwrap();
        assert_eq!(sent(&f, t).len(), 8);
    }

    #[test]
    fn a_climb_keeps_the_policy_version_it_started_with() {
        let (f, t) = with_ticket();
        let s = section("http://127.0.0.1:9/hook");
        escalator(&f, &s).run_once(T0).unwrap();
        let mut changed = s.clone();
        changed.policies[0].levels[1].contacts = vec!["oncall".into(), "desk".into()];
        escalator(&f, &changed).run_once(T0 + 600 * S).unwrap();
        let level2: Vec<_> = sent(&f, t).into_iter().filter(|n| n.1 == 1).collect();
        assert!(
            level2.iter().all(|n| n.2 == "manager" || n.2 == "ciso"),
            "{level2:?}"
        );
    }

    #[test]
    fn sla_breaches_notify_once_and_a_reopened_ticket_climbs_again() {
        let (f, t) = with_ticket();
        let mut s = section("http://127.0.0.1:9/hook");
        s.policies[0].levels[0].delay_secs = 86_400;
        let e = escalator(&f, &s);
        e.run_once(T0).unwrap();
        // High: acknowledge within an hour.
        e.run_once(T0 + 3601 * S).unwrap();
        e.run_once(T0 + 3700 * S).unwrap();
        let breaches: Vec<_> = sent(&f, t)
            .into_iter()
            .filter(|n| n.0 == "sla_ack_breach")
            .collect();
        assert_eq!(breaches.len(), 4, "level-1 contacts, once: {breaches:?}");
        let esc = f.store.escalation(t).unwrap().unwrap();
        assert_eq!(esc.ack_breach_ns, esc.ack_due_ns);
        // Close, then reopen: a new epoch pages level 1 again.
        let close_at = T0 + 4000 * S;
        f.store
            .change_ticket(&as_user("ana"), t, "transition", close_at, &mut |e| {
                e.ticket.closed = true;
                e.ticket.acknowledged_at_ns = Some(close_at);
                Ok(())
            })
            .unwrap()
            .unwrap()
            .unwrap();
        f.store
            .change_ticket(&as_user("ana"), t, "transition", close_at + S, &mut |e| {
                e.ticket.closed = false;
                e.ticket.acknowledged_at_ns = None;
                Ok(())
            })
            .unwrap()
            .unwrap()
            .unwrap();
        e.run_once(close_at + 2 * S).unwrap();
        let esc = f.store.escalation(t).unwrap().unwrap();
        assert_eq!((esc.epoch, esc.state.as_str()), (1, "climbing"));
        let epoch1 = esc.notifications.iter().filter(|n| n.epoch == 1).count();
        assert_eq!(epoch1, 4);
    }

    #[test]
    fn failed_deliveries_back_off_then_give_up_and_delivered_ones_are_not_resent() {
        let (f, t) = with_ticket();
        let s = section("http://127.0.0.1:9/hook");
        let settings = Arc::new(EscalationSettings::new(&s).unwrap());
        let e = Escalator::new(f.store.clone(), settings.clone());
        e.run_once(T0).unwrap();
        let n = Notifier::new(
            f.store.clone(),
            settings,
            e.stats.clone(),
            "lindi".into(),
            lease(&f),
        );
        // Port 9 on loopback refuses: every attempt fails.
        assert_eq!(n.run_once(T0).unwrap(), 4);
        assert_eq!(n.run_once(T0 + S).unwrap(), 0, "backing off (2 s)");
        assert_eq!(n.run_once(T0 + 2 * S).unwrap(), 4);
        assert_eq!(n.run_once(T0 + 5 * S).unwrap(), 0, "backing off (4 s)");
        assert_eq!(n.run_once(T0 + 6 * S).unwrap(), 4);
        assert_eq!(
            n.run_once(T0 + 10_000 * S).unwrap(),
            0,
            "given up after 3 attempts"
        );
        let esc = f.store.escalation(t).unwrap().unwrap();
        assert!(
            esc.notifications
                .iter()
                .all(|n| n.state == "failed" && n.attempts == 3)
        );
        assert!(esc.notifications.iter().all(|n| n.last_error.is_some()));
        assert_eq!(e.stats.given_up.load(Ordering::Relaxed), 4);
        let (ticket, log) = f
            .store
            .delivery_log(&Viewer::system(), esc.notifications[0].id)
            .unwrap()
            .unwrap();
        assert_eq!(ticket, t);
        assert_eq!(log.len(), 3, "every attempt is logged");
        assert!(log.iter().all(|a| !a.delivered && !a.detail.is_empty()));
    }
}
