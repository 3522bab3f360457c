//! Peering: collectors of the network of teams (a national hub, sector teams, partners) send
//! each other what their TLP labels and link policies allow, store-and-forward.
//!
//! - **Transport**: QUIC with mutual TLS on its own listener and ALPN `lindi-peer/1`. Each
//!   collector presents its server certificate with its CA; the dialling side pins the other's
//!   CA by the fingerprint it learnt from the invitation, the listening side identifies the
//!   caller by its CA's fingerprint on every request (an invitation secret, once, or an active
//!   peer).
//! - **Invitation**: `peer invite` stores the SHA-256 of a one-time secret and prints a token
//!   (name, address, CA fingerprint, secret); `peer join --token` on the other collector dials
//!   with it, and the inviter pins the joiner's CA. Both sides then hold an active peer.
//! - **Store-and-forward**: what the sharing rules ([`lindi_shared::sharing::decide`]) let go
//!   to a peer is queued in that peer's outbox in the transaction that creates it, numbered
//!   per peer. A sender task delivers each outbox in order and deletes what the peer
//!   acknowledges; the receiver stores an object only if its number follows the last it
//!   stored from that peer, in the same transaction. So an object arrives once, in order,
//!   after any outage of either side; a revoked peer's outbox is emptied and it is refused.
//! - **Requests**: one JSON request per bidirectional stream, answered with one JSON response.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lindi_shared::sharing::{Destination, ObjectKind, Outgoing, PeerRole, Refusal, decide};
use lindi_shared::stix;
use lindi_shared::taxonomy::Tlp;
use lindi_shared::token::{PeerToken, random_hex, secret_hash};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::authority::Authority;
use crate::config::PeeringSettings;
use crate::store::peers::{
    Indicator, JoinRefusal, OutboxItem, Peer, PeerState, Received, Sighting,
};
use crate::store::{SqlStore, StoreError};

/// Largest request a peer may send: a delivery of up to [`MAX_ITEMS`] objects, or one
/// relayed detection bundle at its largest (base64 of 64 MiB).
const MAX_REQUEST_BYTES: usize = 96 << 20;
/// Bodies the sender puts in one delivery, about (one object always goes, whatever its
/// size).
const DELIVERY_BYTES: usize = 24 << 20;
/// Largest response read back.
const MAX_RESPONSE_BYTES: usize = 64 << 10;
/// Most objects in one delivery (each delivery is one transaction at the receiver).
const MAX_ITEMS: u32 = 20_000;
/// How long one request may take, either side (a peer that vanished mid-connection is
/// noticed by this).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the sender looks at the outboxes (new objects are queued by other processes
/// too: the CLI writes the same store).
const SEND_POLL: Duration = Duration::from_secs(1);
/// Longest pause between attempts to reach a peer that is down.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Invitations expire after this long.
pub const INVITE_TTL: Duration = Duration::from_secs(86_400);

#[derive(Debug, thiserror::Error)]
pub enum PeeringError {
    #[error("peering is not configured: set [peering] listen_addr in collector.toml")]
    NotConfigured,
    #[error("bad peer name {0:?} (1-64 letters, digits, '-', '_', '.')")]
    BadName(String),
    #[error("a peer named {0:?} exists already")]
    Exists(String),
    #[error(transparent)]
    Token(#[from] lindi_shared::token::TokenError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot reach {addr}: {detail}")]
    Connect { addr: String, detail: String },
    #[error("{addr} answered: {code}: {message}")]
    Refused {
        addr: String,
        code: String,
        message: String,
    },
    #[error("cannot listen on {addr} for peers: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the system's random number generator failed")]
    Random,
    #[error("a store task failed: {0}")]
    Task(String),
}

/// Run a store call off the async threads.
async fn on_store<T: Send + 'static>(
    store: &Arc<SqlStore>,
    f: impl FnOnce(&SqlStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, PeeringError> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store))
        .await
        .map_err(|e| PeeringError::Task(e.to_string()))?
        .map_err(PeeringError::from)
}

/// A request from one collector to another.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Redeem an invitation: `name` and `address` are the joiner's.
    Join {
        secret: String,
        name: String,
        address: String,
    },
    /// Objects from the sender's outbox for this peer, in order.
    Deliver { items: Vec<OutboxItem> },
}

/// Read a request. A delivery is read as a plain struct: serde cannot hand the raw JSON of
/// each object through an internally tagged enum (it buffers the content first), and the
/// objects are to pass through as text.
fn read_request(bytes: &[u8]) -> Result<Request, serde_json::Error> {
    #[derive(Deserialize)]
    struct Tag<'a> {
        #[serde(rename = "type", borrow)]
        kind: std::borrow::Cow<'a, str>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum DeliverTag {
        Deliver,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Delivery {
        #[serde(rename = "type")]
        _kind: DeliverTag,
        items: Vec<OutboxItem>,
    }
    if serde_json::from_slice::<Tag<'_>>(bytes)?.kind == "deliver" {
        let d: Delivery = serde_json::from_slice(bytes)?;
        Ok(Request::Deliver { items: d.items })
    } else {
        serde_json::from_slice(bytes)
    }
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// The invitation was accepted; `name` and `role` are the inviter's.
    Joined {
        name: String,
        role: PeerRole,
    },
    /// Everything through `through` is stored.
    Ack {
        through: u64,
    },
    Error {
        code: String,
        message: String,
    },
}

fn refuse(code: &str, message: impl Into<String>) -> Response {
    Response::Error {
        code: code.into(),
        message: message.into(),
    }
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// What peering counted since the collector started.
#[derive(Debug, Default, Serialize)]
pub struct PeeringStats {
    pub objects_sent: AtomicU64,
    pub objects_received: AtomicU64,
    /// Objects a peer sent that could not be read; counted, logged and skipped.
    pub objects_rejected: AtomicU64,
    pub requests_refused: AtomicU64,
}

/// Make an invitation for a peer to be known here as `name` with `role`.
pub fn invite(
    store: &SqlStore,
    authority: &Authority,
    settings: &PeeringSettings,
    collector_name: &str,
    name: &str,
    role: PeerRole,
    now_ns: i64,
) -> Result<PeerToken, PeeringError> {
    if !valid_name(name) {
        return Err(PeeringError::BadName(name.into()));
    }
    let secret = random_hex::<32>().map_err(|_| PeeringError::Random)?;
    let expires = now_ns.saturating_add(INVITE_TTL.as_nanos() as i64);
    if !store.invite_peer(name, role, &secret_hash(&secret), expires, "cli", now_ns)? {
        return Err(PeeringError::Exists(name.into()));
    }
    Ok(PeerToken {
        v: 1,
        name: collector_name.into(),
        addr: settings.advertise_addr.clone(),
        ca: authority.ca_fingerprint.clone(),
        secret,
    })
}

/// A client endpoint that dials peers presenting this collector's certificate and trusting
/// only the CA with `peer_ca`.
fn dial_config(authority: &Authority, peer_ca: &str) -> Result<quinn::ClientConfig, PeeringError> {
    let tls = lindi_shared::tls::peer_client_config(
        peer_ca,
        &authority.server_chain_pem,
        &authority.server_key_pem,
    )
    .map_err(|e| PeeringError::Tls(e.to_string()))?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| PeeringError::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(Duration::from_secs(10)));
    transport.max_idle_timeout(Some(Duration::from_secs(60).try_into().expect("60 s fits")));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

async fn connect(
    endpoint: &quinn::Endpoint,
    config: quinn::ClientConfig,
    addr: &str,
) -> Result<quinn::Connection, PeeringError> {
    let fail = |detail: String| PeeringError::Connect {
        addr: addr.into(),
        detail,
    };
    let remote = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| fail(e.to_string()))?
        .next()
        .ok_or_else(|| fail("no addresses".into()))?;
    let connecting = endpoint
        .connect_with(config, remote, lindi_shared::COLLECTOR_SERVER_NAME)
        .map_err(|e| fail(e.to_string()))?;
    tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| fail("handshake timed out".into()))?
        .map_err(|e| fail(e.to_string()))
}

fn client_endpoint() -> Result<quinn::Endpoint, PeeringError> {
    let bind: SocketAddr = "[::]:0".parse().expect("valid");
    quinn::Endpoint::client(bind)
        .or_else(|_| quinn::Endpoint::client("0.0.0.0:0".parse().expect("valid")))
        .map_err(|e| PeeringError::Connect {
            addr: "local endpoint".into(),
            detail: e.to_string(),
        })
}

/// Send one request on its own stream and read the answer.
async fn call(
    conn: &quinn::Connection,
    addr: &str,
    req: &Request,
) -> Result<Response, PeeringError> {
    let fail = |detail: String| PeeringError::Connect {
        addr: addr.into(),
        detail,
    };
    let exchange = async {
        let (mut send, mut recv) = conn.open_bi().await.map_err(|e| fail(e.to_string()))?;
        let body = serde_json::to_vec(req).expect("requests serialize");
        send.write_all(&body)
            .await
            .map_err(|e| fail(e.to_string()))?;
        send.finish().map_err(|e| fail(e.to_string()))?;
        let answer = recv
            .read_to_end(MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| fail(e.to_string()))?;
        serde_json::from_slice::<Response>(&answer)
            .map_err(|e| fail(format!("unreadable answer: {e}")))
    };
    let resp = tokio::time::timeout(REQUEST_TIMEOUT, exchange)
        .await
        .map_err(|_| fail("no answer in time".into()))??;
    match resp {
        Response::Error { code, message } => Err(PeeringError::Refused {
            addr: addr.into(),
            code,
            message,
        }),
        ok => Ok(ok),
    }
}

/// Redeem an invitation from another collector: dial it with the pinned CA, present the
/// secret, and record it as an active peer under `local_name` (default: its own name).
pub async fn join(
    store: &SqlStore,
    authority: &Authority,
    settings: &PeeringSettings,
    collector_name: &str,
    token: &PeerToken,
    local_name: Option<&str>,
    now_ns: i64,
) -> Result<Peer, PeeringError> {
    let name = local_name.unwrap_or(&token.name);
    if !valid_name(name) {
        return Err(PeeringError::BadName(name.into()));
    }
    if store.peers()?.iter().any(|p| p.name == name) {
        return Err(PeeringError::Exists(name.into()));
    }
    let endpoint = client_endpoint()?;
    let conn = connect(&endpoint, dial_config(authority, &token.ca)?, &token.addr).await?;
    let resp = call(
        &conn,
        &token.addr,
        &Request::Join {
            secret: token.secret.clone(),
            name: collector_name.into(),
            address: settings.advertise_addr.clone(),
        },
    )
    .await;
    conn.close(0u32.into(), b"joined");
    endpoint.wait_idle().await;
    let role = match resp? {
        Response::Joined { role, .. } => role,
        other => {
            return Err(PeeringError::Refused {
                addr: token.addr.clone(),
                code: "protocol".into(),
                message: format!("unexpected answer {other:?}"),
            });
        }
    };
    if !store.add_joined_peer(name, role, &token.ca, &token.addr, "cli", now_ns)? {
        return Err(PeeringError::Exists(name.into()));
    }
    store
        .peers()?
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| PeeringError::Exists(name.into()))
}

/// For each active peer, by name: whether an object may go to it.
pub type Decisions = Vec<(String, Result<(), Refusal>)>;

/// For each active peer: whether an object may go to it.
pub fn recipients(
    store: &SqlStore,
    settings: &PeeringSettings,
    obj: &Outgoing<'_>,
) -> Result<Decisions, StoreError> {
    Ok(recipients_among(&store.peers()?, settings, obj))
}

/// [`recipients`] among `peers` (as `store.peers()` lists them).
pub fn recipients_among(
    peers: &[Peer],
    settings: &PeeringSettings,
    obj: &Outgoing<'_>,
) -> Decisions {
    peers
        .iter()
        .filter(|p| p.state == PeerState::Active)
        .map(|p| {
            let link = settings.link(&p.name);
            let dest = Destination::Peer {
                role: p.role,
                serves: &link.serves,
                organisation: link.organisation.as_deref(),
            };
            (p.name.clone(), decide(obj, &dest, &link.out))
        })
        .collect()
}

/// The peers in `decisions` an object may go to.
pub fn allowed(decisions: &Decisions) -> Vec<String> {
    decisions
        .iter()
        .filter(|(_, d)| d.is_ok())
        .map(|(p, _)| p.clone())
        .collect()
}

/// A local indicator to create.
pub struct NewIndicator<'a> {
    pub kind: &'a str,
    pub value: &'a str,
    pub label: Tlp,
    pub constituency: Option<&'a str>,
    pub rsit_type: Option<&'a str>,
    pub name: Option<&'a str>,
    pub confidence: u8,
    pub valid_for: Option<Duration>,
}

/// Why an indicator was not created.
#[derive(Debug, thiserror::Error)]
pub enum IndicatorError {
    #[error(transparent)]
    Stix(#[from] stix::StixError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the system's random number generator failed")]
    Random,
}

/// Create a local indicator and queue it for every active peer the sharing rules allow.
/// Returns it with the decision for each peer.
pub fn add_indicator(
    store: &SqlStore,
    settings: Option<&PeeringSettings>,
    new: &NewIndicator<'_>,
    actor: &str,
    now_ns: i64,
) -> Result<(Indicator, Decisions), IndicatorError> {
    let value = stix::normalise(new.kind, new.value)?;
    let facts = stix::IndicatorFacts {
        id: stix::new_id("indicator").ok_or(IndicatorError::Random)?,
        kind: new.kind.into(),
        value: value.clone(),
        label: new.label,
        name: new
            .name
            .map_or_else(|| format!("{} {value}", new.kind), str::to_string),
        confidence: new.confidence.min(100),
        created_ns: now_ns,
        modified_ns: now_ns,
        valid_until_ns: new
            .valid_for
            .map(|d| now_ns.saturating_add(d.as_nanos().min(i64::MAX as u128) as i64)),
    };
    let body = stix::indicator(&facts)?;
    let decisions = match settings {
        Some(s) => recipients(
            store,
            s,
            &Outgoing {
                label: new.label,
                kind: ObjectKind::Indicator,
                constituency: new.constituency,
                rsit_type: new.rsit_type,
            },
        )?,
        None => vec![],
    };
    let ind = indicator_of(&facts, new.constituency, new.rsit_type, "local");
    store.add_indicator(&ind, &body, &allowed(&decisions), actor)?;
    Ok((ind, decisions))
}

/// What the store keeps of an indicator from `source`.
pub fn indicator_of(
    f: &stix::IndicatorFacts,
    constituency: Option<&str>,
    rsit_type: Option<&str>,
    source: &str,
) -> Indicator {
    Indicator {
        id: f.id.clone(),
        kind: f.kind.clone(),
        value: f.value.clone(),
        label: f.label,
        constituency: constituency.map(str::to_string),
        rsit_type: rsit_type.map(str::to_string),
        source: source.into(),
        confidence: f.confidence,
        valid_until_ns: f.valid_until_ns,
        created_at_ns: f.created_ns,
        updated_at_ns: f.modified_ns,
    }
}

/// The running peering service: the listener and the sender.
pub struct Peering {
    store: Arc<SqlStore>,
    authority: Authority,
    settings: Arc<PeeringSettings>,
    collector_name: String,
    pseudonym_key: [u8; 32],
    /// Keys whose detection bundles this collector runs (relayed ones included).
    bundle_keys: Arc<Vec<lindi_shared::bundle::PublicKey>>,
    /// Bumped when a relayed bundle is stored, or bundles are declined or taken again.
    bundle_generation: Arc<watch::Sender<u64>>,
    /// The bundles declined when last looked (the command line declines them in the store).
    declined: std::sync::Mutex<Vec<String>>,
    pub stats: Arc<PeeringStats>,
}

/// What a collector's bundles are to peering: the keys it trusts and the signal that wakes
/// its agents.
pub struct BundlePath {
    pub keys: Arc<Vec<lindi_shared::bundle::PublicKey>>,
    pub generation: Arc<watch::Sender<u64>>,
}

impl Peering {
    pub fn new(
        store: Arc<SqlStore>,
        authority: Authority,
        settings: Arc<PeeringSettings>,
        collector_name: String,
        pseudonym_key: [u8; 32],
        bundles: BundlePath,
    ) -> Arc<Peering> {
        Arc::new(Peering {
            store,
            authority,
            settings,
            collector_name,
            pseudonym_key,
            bundle_keys: bundles.keys,
            bundle_generation: bundles.generation,
            declined: Default::default(),
            stats: Arc::default(),
        })
    }

    /// Offer this collector's RFC 2350 profile to every active peer that has not had its
    /// latest version, as its label (default TLP:CLEAR: the RFC means it to be published)
    /// and the link's policy allow.
    fn share_profile(&self) -> Result<(), StoreError> {
        let Some(rec) = self.store.profile()? else {
            return Ok(());
        };
        let due = self.store.peers_without_profile(rec.updated_at_ns)?;
        if due.is_empty() {
            return Ok(());
        }
        let label = rec.profile.tlp_label.unwrap_or(Tlp::Clear);
        let body = stix::team_profile(
            &crate::store::peers::stable_id("identity", &[&self.collector_name]),
            &rec.profile,
            label,
            rec.updated_at_ns,
        );
        let obj = Outgoing {
            label,
            kind: ObjectKind::TeamProfile,
            constituency: None,
            rsit_type: None,
        };
        let now = crate::now_ns();
        for (peer, verdict) in recipients_among(&due, &self.settings, &obj) {
            let send = verdict.is_ok().then_some((label, &body));
            self.store
                .offer_profile(&peer, send, rec.updated_at_ns, now)?;
        }
        Ok(())
    }

    /// Tell the origin of each relayed detector bundle which versions this collector's
    /// agents run (from their latest health reports) and whether it declined the bundle, when
    /// that changed since it was last told. The status is TLP:GREEN (counts of agents, no
    /// constituent), and goes only to the bundle's origin, as its link's policy allows.
    fn share_bundle_status(&self) -> Result<(), StoreError> {
        // A bundle declined or taken again (from the command line) changes what agents run:
        // they are woken to ask.
        let declined = self.store.declined_bundles()?;
        {
            let mut last = self.declined.lock().unwrap_or_else(|p| p.into_inner());
            if *last != declined {
                *last = declined.clone();
                self.bundle_generation.send_modify(|g| *g += 1);
            }
        }
        let relayed = self.store.relayed_bundles()?;
        if relayed.is_empty() {
            return Ok(());
        }
        let obj = Outgoing {
            label: Tlp::Green,
            kind: ObjectKind::BundleStatus,
            constituency: None,
            rsit_type: None,
        };
        let allowed = allowed(&recipients_among(
            &self.store.peers()?,
            &self.settings,
            &obj,
        ));
        let agents = self.store.monitored_agents()?;
        let now = crate::now_ns();
        for (name, origin) in relayed {
            if !allowed.contains(&origin) {
                continue;
            }
            let prefix = format!("{name}@");
            let mut versions: std::collections::BTreeMap<String, u64> = Default::default();
            for (_, health) in &agents {
                let running = health.iter().flat_map(|(_, h)| h.bundles.iter());
                for v in running.filter_map(|b| b.strip_prefix(&prefix)) {
                    *versions.entry(v.to_string()).or_default() += 1;
                }
            }
            let declined = declined.contains(&name);
            let digest = format!("{declined}:{versions:?}");
            let facts = stix::BundleStatusFacts {
                name: name.clone(),
                declined,
                versions: versions.into_iter().collect(),
                modified_ns: now,
            };
            let body = stix::bundle_status(
                &crate::store::peers::stable_id(
                    "x-lindi-bundle-status",
                    &[&self.collector_name, &name],
                ),
                &facts,
                Tlp::Green,
            );
            self.store
                .queue_bundle_status(&origin, &name, &digest, &body, now)?;
        }
        Ok(())
    }

    /// Queue summaries of changed tickets for every active peer their label (the ticket's)
    /// and the link's policy allow, constituents pseudonymised unless the link says otherwise.
    fn share_incidents(&self) -> Result<(), StoreError> {
        let pending = self.store.unshared_tickets(500)?;
        if pending.is_empty() {
            return Ok(());
        }
        let peers = self.store.peers()?;
        let now = crate::now_ns();
        let mut queued = Vec::with_capacity(pending.len());
        for t in pending {
            let obj = Outgoing {
                label: t.tlp,
                kind: ObjectKind::IncidentSummary,
                constituency: Some(&t.constituency),
                rsit_type: Some(&t.rsit_type),
            };
            let mut to = vec![];
            for (peer, verdict) in recipients_among(&peers, &self.settings, &obj) {
                if verdict.is_err() {
                    continue;
                }
                let link = self.settings.link(&peer);
                let constituent = if link.share_identities {
                    t.constituency.clone()
                } else {
                    pseudonym(&self.pseudonym_key, &peer, &t.constituency)
                };
                let body = stix::incident(&stix::IncidentFacts {
                    id: crate::store::peers::stable_id(
                        "incident",
                        &[&self.collector_name, &t.id.to_string()],
                    ),
                    rsit_type: t.rsit_type.clone(),
                    severity: t.severity.clone(),
                    state: t.state.clone(),
                    closed: t.closed,
                    sector: self.collector_name.clone(),
                    constituent,
                    label: t.tlp,
                    opened_ns: t.opened_at_ns,
                    resolved_ns: t.resolved_at_ns,
                    modified_ns: t.updated_at_ns,
                });
                to.push((peer, body));
            }
            queued.push((t, to));
        }
        self.store.queue_ticket_summaries(&queued, now)
    }

    /// Queue own sightings of indicators that came from peers for those peers, as the
    /// sighting's label (the indicator's) and the link's policy allow, with the constituent
    /// pseudonymised unless the link says otherwise.
    fn share_sightings(&self) -> Result<(), StoreError> {
        let pending = self.store.unshared_sightings(1000)?;
        if pending.is_empty() {
            return Ok(());
        }
        let peers = self.store.peers()?;
        let now = crate::now_ns();
        let mut queued = Vec::with_capacity(pending.len());
        for (s, ind) in pending {
            let origin = ind.source.as_str();
            let link = self.settings.link(origin);
            let obj = Outgoing {
                label: ind.label,
                kind: ObjectKind::Sighting,
                constituency: Some(&s.constituent),
                rsit_type: ind.rsit_type.as_deref(),
            };
            let to = peers
                .iter()
                .find(|p| p.name == origin && p.state == PeerState::Active)
                .filter(|p| {
                    let dest = Destination::Peer {
                        role: p.role,
                        serves: &link.serves,
                        organisation: link.organisation.as_deref(),
                    };
                    decide(&obj, &dest, &link.out).is_ok()
                })
                .map(|p| p.name.clone());
            let constituent = if link.share_identities {
                s.constituent.clone()
            } else {
                pseudonym(&self.pseudonym_key, origin, &s.constituent)
            };
            let body = stix::sighting(&stix::SightingFacts {
                // Own sighting ids are per indicator and constituency; what leaves names
                // this collector too, so two sectors' reports never share an id.
                id: crate::store::peers::stable_id("sighting", &[&self.collector_name, &s.id]),
                indicator_id: s.indicator_id.clone(),
                count: s.count,
                first_seen_ns: s.first_seen_ns,
                last_seen_ns: s.last_seen_ns,
                sector: self.collector_name.clone(),
                constituent,
                label: ind.label,
                modified_ns: now,
            });
            queued.push((s.id, to, ind.label, body));
        }
        self.store.queue_sightings(&queued, now)
    }

    /// Bind the peering listener.
    pub fn bind(&self) -> Result<quinn::Endpoint, PeeringError> {
        let a = &self.authority;
        let tls = lindi_shared::tls::peer_server_config(&a.server_chain_pem, &a.server_key_pem)
            .map_err(|e| PeeringError::Tls(e.to_string()))?;
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| PeeringError::Tls(e.to_string()))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport.max_concurrent_bidi_streams(4u32.into());
        transport.max_concurrent_uni_streams(0u32.into());
        transport.max_idle_timeout(Some(Duration::from_secs(60).try_into().expect("60 s fits")));
        config.transport_config(Arc::new(transport));
        let addr = self.settings.listen_addr;
        quinn::Endpoint::server(config, addr).map_err(|source| PeeringError::Bind { addr, source })
    }

    /// Serve peers and deliver outboxes until `stop` changes.
    pub async fn run(self: Arc<Self>, endpoint: quinn::Endpoint, stop: watch::Receiver<bool>) {
        let sender = tokio::spawn(self.clone().send_loop(stop.clone()));
        self.serve(endpoint, stop).await;
        let _ = sender.await;
    }

    async fn serve(self: &Arc<Self>, endpoint: quinn::Endpoint, mut stop: watch::Receiver<bool>) {
        // Peers are few; a flood of handshakes is capped all the same.
        let live = Arc::new(tokio::sync::Semaphore::new(64));
        loop {
            let incoming = tokio::select! {
                i = endpoint.accept() => match i { Some(i) => i, None => break },
                _ = stop.changed() => break,
            };
            let Ok(permit) = live.clone().try_acquire_owned() else {
                self.stats.requests_refused.fetch_add(1, Ordering::Relaxed);
                incoming.refuse();
                continue;
            };
            let me = self.clone();
            tokio::spawn(async move {
                me.connection(incoming).await;
                drop(permit);
            });
        }
        endpoint.close(0u32.into(), b"collector stopping");
    }

    async fn connection(&self, incoming: quinn::Incoming) {
        let remote = incoming.remote_address();
        let conn = match tokio::time::timeout(CONNECT_TIMEOUT, incoming).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                self.stats.requests_refused.fetch_add(1, Ordering::Relaxed);
                tracing::info!("peering handshake from {remote} failed: {e}");
                return;
            }
            Err(_) => {
                self.stats.requests_refused.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let ca = conn
            .peer_identity()
            .and_then(|i| {
                i.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                    .ok()
            })
            .and_then(|chain| lindi_shared::tls::chain_ca_fingerprint(&chain));
        let Some(ca) = ca else {
            conn.close(1u32.into(), b"no certificate chain");
            return;
        };
        // One request at a time per connection: deliveries from one peer stay in order.
        while let Ok((mut send, mut recv)) = conn.accept_bi().await {
            let answer =
                match tokio::time::timeout(REQUEST_TIMEOUT, recv.read_to_end(MAX_REQUEST_BYTES))
                    .await
                {
                    Ok(Ok(bytes)) => match read_request(&bytes) {
                        Ok(req) => self.handle(&ca, req).await,
                        Err(e) => refuse("bad_request", e.to_string()),
                    },
                    Ok(Err(e)) => refuse("bad_request", e.to_string()),
                    Err(_) => refuse("timeout", "the request did not arrive in time"),
                };
            if let Response::Error { code, message } = &answer {
                self.stats.requests_refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!("peering: refused a request from {remote}: {code}: {message}");
            }
            let body = serde_json::to_vec(&answer).expect("responses serialize");
            let _ = send.write_all(&body).await;
            let _ = send.finish();
            if matches!(answer, Response::Error { ref code, .. } if code == "unknown_peer") {
                // Let the answer reach the caller before the connection goes.
                let _ = tokio::time::timeout(Duration::from_secs(5), send.stopped()).await;
                conn.close(2u32.into(), b"unknown_peer");
                return;
            }
        }
    }

    async fn handle(&self, ca: &str, req: Request) -> Response {
        let ca = ca.to_string();
        let now = crate::now_ns();
        match req {
            Request::Join {
                secret,
                name,
                address,
            } => {
                let hash = secret_hash(&secret);
                let address: String = address.chars().take(300).collect();
                let done = on_store(&self.store, move |s| {
                    s.accept_join(&hash, &ca, &address, now)
                })
                .await;
                match done {
                    Ok(Ok((local, _))) => {
                        tracing::info!("peering: {name:?} joined as {local}");
                        Response::Joined {
                            name: self.collector_name.clone(),
                            role: self.settings.role,
                        }
                    }
                    Ok(Err(JoinRefusal::BadInvitation)) => refuse(
                        "bad_invitation",
                        "no such invitation, or it expired or was used",
                    ),
                    Ok(Err(JoinRefusal::CaInUse(other))) => {
                        refuse("ca_in_use", format!("this CA is already the peer {other}"))
                    }
                    Err(e) => refuse("internal", e.to_string()),
                }
            }
            Request::Deliver { items } => {
                if items.len() > MAX_ITEMS as usize {
                    return refuse("too_many", format!("at most {MAX_ITEMS} objects"));
                }
                let stats = self.stats.clone();
                let settings = self.settings.clone();
                let keys = self.bundle_keys.clone();
                let generation = self.bundle_generation.clone();
                let done = on_store(&self.store, move |store| {
                    let mut bundles_changed = false;
                    let Some(peer) = store.active_peer_by_ca(&ca)? else {
                        return Ok(None);
                    };
                    let link = settings.link(&peer.name);
                    // Read every new object first (relayed bundles go through the bundle
                    // path, idempotent), then store them all in one transaction.
                    let mut read_objects = Vec::with_capacity(items.len());
                    for item in items.iter().filter(|i| i.seq > peer.received_through) {
                        if item.withdrawn() {
                            // Withdrawn by the sender after it was queued: only its
                            // number advances.
                            read_objects.push((item.seq, None));
                            continue;
                        }
                        let read = if link.accepts(peer.role, item.kind) {
                            read_item(item, &peer.name, &keys)
                        } else {
                            Err(format!(
                                "{:?} objects are not accepted from this peer ([peering.links.in])",
                                item.kind
                            ))
                        };
                        if let Err(why) = &read {
                            stats.objects_rejected.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(
                                "peering: object {} from {} skipped: {why}",
                                item.seq,
                                peer.name
                            );
                        }
                        let mut object = read.ok();
                        if let Some(ReadObject::Bundle(relayed)) = &object
                            && store.is_declined(&relayed.0.manifest.name)?
                        {
                            // Declined here: acknowledged, not kept.
                            object = None;
                        }
                        if let Some(ReadObject::Bundle(relayed)) = &object {
                            let (b, key, signed) = relayed.as_ref();
                            let pushed = store.push_verified(
                                b,
                                key,
                                signed,
                                &keys,
                                None,
                                &[],
                                &format!("peer:{}", peer.name),
                                now,
                            )?;
                            // A version held already (a resend) is no news.
                            bundles_changed |= pushed.is_ok();
                        }
                        read_objects.push((item.seq, object));
                    }
                    let batch: Vec<(u64, Option<Received<'_>>)> = read_objects
                        .iter()
                        .map(|(seq, o)| (*seq, o.as_ref().map(ReadObject::received)))
                        .collect();
                    let through = store.receive_from_peer(&peer.name, &batch, now)?;
                    stats.objects_received.fetch_add(
                        through.saturating_sub(peer.received_through),
                        Ordering::Relaxed,
                    );
                    if bundles_changed {
                        // Agents waiting for bundle changes wake up.
                        generation.send_modify(|g| *g += 1);
                    }
                    Ok(Some(through))
                })
                .await;
                match done {
                    Ok(Some(through)) => Response::Ack { through },
                    Ok(None) => refuse("unknown_peer", "not an active peer of this collector"),
                    Err(e) => refuse("internal", e.to_string()),
                }
            }
        }
    }

    /// Deliver every active peer's outbox, in order, until `stop` changes. Each peer has its
    /// own task and connection, so one slow or large link does not hold up the others.
    async fn send_loop(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let endpoint = match client_endpoint() {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("peering: cannot make a client endpoint: {e}");
                return;
            }
        };
        type Done = (String, Option<quinn::Connection>, Result<(), PeeringError>);
        let mut conns: HashMap<String, quinn::Connection> = HashMap::new();
        let mut backoff: HashMap<String, (Instant, Duration)> = HashMap::new();
        let mut busy: std::collections::HashSet<String> = Default::default();
        let mut running: tokio::task::JoinSet<Done> = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(SEND_POLL) => {}
                Some(done) = running.join_next() => {
                    let Ok((name, conn, result)) = done else { continue };
                    busy.remove(&name);
                    match result {
                        Ok(()) => {
                            backoff.remove(&name);
                            if let Some(c) = conn {
                                conns.insert(name, c);
                            }
                        }
                        Err(e) => {
                            let pause = backoff
                                .get(&name)
                                .map_or(SEND_POLL, |(_, d)| (*d * 2).min(MAX_BACKOFF));
                            backoff.insert(name.clone(), (Instant::now() + pause, pause));
                            tracing::warn!("peering: cannot deliver to {name}: {e}");
                            let msg = e.to_string();
                            let _ = on_store(&self.store, move |s| s.peer_error(&name, &msg)).await;
                        }
                    }
                    continue;
                }
                _ = stop.changed() => break,
            }
            let me = self.clone();
            let shared = on_store(&self.store, move |_| {
                me.share_sightings()?;
                me.share_incidents()?;
                me.share_bundle_status()?;
                me.share_profile()
            })
            .await;
            if let Err(e) = shared {
                tracing::warn!("peering: cannot queue sightings or incident summaries: {e}");
            }
            let Ok(peers) = on_store(&self.store, |s| s.peers()).await else {
                continue;
            };
            conns.retain(|name, _| {
                peers
                    .iter()
                    .any(|p| &p.name == name && p.state == PeerState::Active)
            });
            for p in peers {
                if p.state != PeerState::Active
                    || p.pending == 0
                    || p.address.is_empty()
                    || busy.contains(&p.name)
                {
                    continue;
                }
                if backoff
                    .get(&p.name)
                    .is_some_and(|(at, _)| Instant::now() < *at)
                {
                    continue;
                }
                busy.insert(p.name.clone());
                let conn = conns.remove(&p.name);
                let (me, endpoint) = (self.clone(), endpoint.clone());
                running.spawn(async move {
                    let mut conn = conn;
                    let result = me.deliver(&endpoint, &mut conn, &p).await;
                    (p.name.clone(), conn, result)
                });
            }
        }
        running.abort_all();
        for c in conns.values() {
            c.close(0u32.into(), b"collector stopping");
        }
    }

    /// Send `peer`'s outbox until it is empty, over `conn` (made when there is none or it
    /// closed). Two deliveries overlap: the next is read from the outbox and sent while the
    /// peer stores the one before (the peer takes them in the order the streams were
    /// opened, and stores only what follows what it holds, so nothing is stored out of
    /// order even if one fails).
    async fn deliver(
        &self,
        endpoint: &quinn::Endpoint,
        conn: &mut Option<quinn::Connection>,
        peer: &Peer,
    ) -> Result<(), PeeringError> {
        type Flight = (
            u64,
            u64,
            tokio::task::JoinHandle<Result<Response, PeeringError>>,
        );
        let mut in_flight: Option<Flight> = None;
        let mut after = 0;
        loop {
            let name = peer.name.clone();
            let items = on_store(&self.store, move |s| {
                s.outbox(&name, after, MAX_ITEMS, DELIVERY_BYTES)
            })
            .await?;
            if let Some((first, last, call)) = in_flight.take() {
                let answer = call
                    .await
                    .map_err(|e| PeeringError::Task(e.to_string()))??;
                self.acknowledged(peer, first, last, answer).await?;
            }
            let (Some(first), Some(last)) = (items.first(), items.last()) else {
                return Ok(());
            };
            let (first, last) = (first.seq, last.seq);
            after = last;
            let c = match conn {
                Some(c) if c.close_reason().is_none() => c.clone(),
                _ => {
                    *conn = None;
                    let config = dial_config(&self.authority, &peer.ca_fingerprint)?;
                    let c = connect(endpoint, config, &peer.address).await?;
                    *conn = Some(c.clone());
                    c
                }
            };
            let addr = peer.address.clone();
            in_flight = Some((
                first,
                last,
                tokio::spawn(async move { call(&c, &addr, &Request::Deliver { items }).await }),
            ));
        }
    }

    /// The peer answered a delivery of `first..=last`: drop what it stored from the outbox.
    async fn acknowledged(
        &self,
        peer: &Peer,
        first: u64,
        last: u64,
        answer: Response,
    ) -> Result<(), PeeringError> {
        let through = match answer {
            Response::Ack { through } => through,
            other => {
                return Err(PeeringError::Refused {
                    addr: peer.address.clone(),
                    code: "protocol".into(),
                    message: format!("unexpected answer {other:?}"),
                });
            }
        };
        let name = peer.name.clone();
        let now = crate::now_ns();
        on_store(&self.store, move |s| s.outbox_acked(&name, through, now)).await?;
        if through >= first {
            self.stats
                .objects_sent
                .fetch_add(through.min(last) - first + 1, Ordering::Relaxed);
            Ok(())
        } else {
            // The peer stored nothing of this delivery: it expects an earlier number than
            // this outbox holds, or it failed to store. Try again later.
            Err(PeeringError::Refused {
                addr: peer.address.clone(),
                code: "out_of_order".into(),
                message: format!(
                    "{} has stored through {through}; this delivery starts at {first}",
                    peer.name
                ),
            })
        }
    }
}

/// A delivered object, read.
enum ReadObject<'a> {
    /// An indicator and its STIX object as the peer sent it (JSON text).
    Indicator(Indicator, &'a str),
    Sighting(Sighting),
    Advisory(stix::AdvisoryFacts),
    Incident(stix::IncidentFacts),
    /// A detection bundle checked against this collector's trusted keys: stored through the
    /// bundle path, not by `receive_from_peer`.
    Bundle(
        Box<(
            lindi_shared::bundle::Bundle,
            lindi_shared::bundle::PublicKey,
            Vec<u8>,
        )>,
    ),
    Profile(Box<lindi_shared::profile::TeamProfile>, Tlp, i64),
    BundleStatus(stix::BundleStatusFacts),
}

impl ReadObject<'_> {
    fn received(&self) -> Received<'_> {
        match self {
            ReadObject::Indicator(i, body) => Received::Indicator(i, body),
            ReadObject::Sighting(s) => Received::Sighting(s),
            ReadObject::Advisory(a) => Received::Advisory(a),
            ReadObject::Incident(f) => Received::Incident(f),
            ReadObject::Bundle(_) => Received::Nothing,
            ReadObject::Profile(p, label, modified) => Received::Profile(p, *label, *modified),
            ReadObject::BundleStatus(f) => Received::BundleStatus(f),
        }
    }
}

/// Read a delivered object into what the store keeps; an error says why it was skipped.
/// Detection bundles must be signed by one of `keys` (this collector's trusted keys).
fn read_item<'a>(
    item: &'a OutboxItem,
    peer: &str,
    keys: &[lindi_shared::bundle::PublicKey],
) -> Result<ReadObject<'a>, String> {
    let body: serde_json::Value =
        serde_json::from_str(item.body.get()).map_err(|e| format!("not JSON: {e}"))?;
    match item.kind {
        ObjectKind::DetectorBundle => {
            use base64::Engine as _;
            let signed = body
                .get("signed")
                .and_then(|v| v.as_str())
                .filter(|s| {
                    s.len() <= (lindi_shared::bundle::MAX_BUNDLE_BYTES as usize) * 4 / 3 + 4
                })
                .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
                .ok_or("a detection bundle without its signed bytes")?;
            let (b, key) = lindi_shared::bundle::verify(&signed, keys).map_err(|e| {
                format!("detection bundle declined: {e} ([detectors] trusted_keys)")
            })?;
            Ok(ReadObject::Bundle(Box::new((b, key, signed))))
        }
        ObjectKind::Indicator => {
            let mut f = stix::read_indicator(&body).map_err(|e| e.to_string())?;
            // The strictest of the two labels the sender gave.
            f.label = f.label.max(item.label);
            Ok(ReadObject::Indicator(
                indicator_of(&f, None, None, peer),
                item.body.get(),
            ))
        }
        ObjectKind::Sighting => {
            let f = stix::read_sighting(&body).map_err(|e| e.to_string())?;
            Ok(ReadObject::Sighting(Sighting {
                // Kept per sender: a peer can only ever update its own reports.
                id: crate::store::peers::stable_id("sighting", &[peer, &f.id]),
                indicator_id: f.indicator_id,
                sector: peer.to_string(),
                constituent: f.constituent,
                count: f.count,
                first_seen_ns: f.first_seen_ns,
                last_seen_ns: f.last_seen_ns,
            }))
        }
        ObjectKind::Advisory => {
            let mut f = stix::read_advisory(&body).map_err(|e| e.to_string())?;
            f.label = f.label.max(item.label);
            Ok(ReadObject::Advisory(f))
        }
        ObjectKind::BundleStatus => Ok(ReadObject::BundleStatus(
            stix::read_bundle_status(&body).map_err(|e| e.to_string())?,
        )),
        ObjectKind::TeamProfile => {
            let (p, label, modified) = stix::read_team_profile(&body).map_err(|e| e.to_string())?;
            Ok(ReadObject::Profile(
                Box::new(p),
                label.max(item.label),
                modified,
            ))
        }
        ObjectKind::IncidentSummary => {
            let mut f = stix::read_incident(&body).map_err(|e| e.to_string())?;
            f.label = f.label.max(item.label);
            // Kept per sender, and named by the link, whatever the sender wrote.
            f.id = crate::store::peers::stable_id("incident", &[peer, &f.id]);
            f.sector = peer.to_string();
            Ok(ReadObject::Incident(f))
        }
    }
}

/// The key of this collector's constituent pseudonyms (`pseudonym.key` in the data
/// directory, 32 random bytes, made on first use).
pub fn pseudonym_key(data_dir: &std::path::Path) -> Result<[u8; 32], PeeringError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = data_dir.join("pseudonym.key");
    let io = |e: std::io::Error| PeeringError::Task(format!("{}: {e}", path.display()));
    if !path.exists() {
        let key = lindi_shared::token::random_bytes::<32>().map_err(|_| PeeringError::Random)?;
        let mut f = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        f.write_all(hex::encode(key).as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        crate::adopt_owner(data_dir).map_err(io)?;
    }
    let text = std::fs::read_to_string(&path).map_err(io)?;
    hex::decode(text.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| PeeringError::Task(format!("{}: not 64 hex digits", path.display())))
}

/// A constituent's stable pseudonym on the link to `peer`: a keyed hash, different on every
/// link, so peers cannot join their pictures to name it.
pub fn pseudonym(key: &[u8; 32], peer: &str, constituent: &str) -> String {
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let mut ctx = ring::hmac::Context::with_key(&k);
    ctx.update(peer.as_bytes());
    ctx.update(&[0]);
    ctx.update(constituent.as_bytes());
    format!("c-{}", hex::encode(&ctx.sign().as_ref()[..8]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_passes_its_objects_through_as_text_and_garbage_is_refused() {
        let body = r#"{"type":"indicator","id":"indicator--1","name":"x"}"#;
        let req = Request::Deliver {
            items: vec![OutboxItem {
                seq: 7,
                kind: ObjectKind::Indicator,
                label: Tlp::Green,
                body: serde_json::value::RawValue::from_string(body.into()).unwrap(),
            }],
        };
        let bytes = serde_json::to_vec(&req).unwrap();
        let Request::Deliver { items } = read_request(&bytes).unwrap() else {
            panic!("not a delivery")
        };
        assert_eq!((items[0].seq, items[0].body.get()), (7, body));
        let join = br#"{"type":"join","secret":"s","name":"n","address":"a:1"}"#;
        assert!(matches!(read_request(join), Ok(Request::Join { .. })));
        for bad in [
            &b"not json"[..],
            br#"{"type":"deliver","items":[{"seq":1}]}"#,
            br#"{"type":"deliver","items":[],"extra":1}"#,
            br#"{"type":"other"}"#,
        ] {
            assert!(
                read_request(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn pseudonyms_are_stable_per_link_and_differ_between_links() {
        let key = [7u8; 32];
        let a = pseudonym(&key, "hub", "bank-a");
        assert_eq!(a, pseudonym(&key, "hub", "bank-a"));
        assert_ne!(a, pseudonym(&key, "partner", "bank-a"));
        assert_ne!(a, pseudonym(&key, "hub", "bank-b"));
        assert_ne!(a, pseudonym(&[8u8; 32], "hub", "bank-a"));
        assert!(a.starts_with("c-") && a.len() == 18 && !a.contains("bank"));
    }
}
