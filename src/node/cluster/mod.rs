//! `ClusterNode`: one member of a Raft-replicated, durable event log.
//!
//! A driver task owns the Raft core, the durable storage and the peer transport; ingest reaches
//! it through a channel (publish, linearizable read, admin). Each round follows the order in
//! `raft/mod.rs`: install a received snapshot, append entries, one fsync for the whole round
//! (group commit: every proposal that arrived since the last round shares it), hard state, send,
//! apply, serve reads, advance. A publish is acknowledged when its entry is *applied* — committed,
//! so durable on a majority — with the offsets the state machine gave it.
//!
//! Replicated state ([`EventLogState`]) is computed only from committed entries; the leader
//! stamps its wall time into each entry, and dedup expiry follows that stamp. Consumers read the
//! applied state on any node (never an entry that could still be rolled back); a linearizable
//! read first confirms the commit index with the leader (ReadIndex).
//!
//! Here: the member's handle ([`ClusterNode`], the [`EventService`] ingest calls) and the driver's
//! state. The driver's jobs, one file each: `driver.rs` (the loop and one round), `apply.rs`
//! (committed entries, snapshots), `addresses.rs` (the address book), `admin.rs` (membership
//! changes in stages), `leader.rs` (starting and stopping the leader's pipeline).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::command::Command;
use super::state::ApplyError;
use super::{DedupConfig, EventLogState};
use crate::config::ClusterConfig;
use crate::consumers::{ConsumerPosition, OffsetCommit};
use crate::event::Event;
use crate::event::codec::{get_str16, put_str16};
use crate::raft::{
    ConfChange, ConfChangeKind, ConfEntry, ConfState, Entry, EntryKind, Index, InitError, NodeId,
    ProposeError, Raft, RaftConfig, Ready, RestoredState, Role, Snapshot, Term,
};
use crate::rt::sync::{Latch, Notify, mpsc, oneshot};
use crate::rt::{self, Disk, NodeClock, NodeRng};
use crate::service::{
    AdminCommand, Admission, Appended, Checkpoint, EventService, EventSink, FetchReply, Processing,
    ProcessingContext, ReadOptions, Routes, ServiceError, StartProcessing,
};
use crate::store::{StoreConfig, StoreError, TopicSet};
use crate::transport::{Inbox, PeerTransport, StatsReader, TransportConfig};
use crate::wal::{RaftStorage, Recovered, StorageError, StorageOptions};

mod addresses;
mod admin;
mod apply;
mod catchup;
mod consumers;
mod driver;
mod handover;
mod leader;
mod persist;
mod retention;
mod scrub;
mod snapshot;

use addresses::*;
use admin::*;
pub use catchup::CatchUpCounters;
pub use scrub::ScrubCounters;

/// How long an admin change (add / remove a node) may take before it is reported as failed.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Retry-after told to clients when the cluster cannot commit right now.
const UNAVAILABLE_RETRY_MS: u32 = 200;

/// Everything a member needs to start.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub node_id: NodeId,
    pub cluster: ClusterConfig,
    pub dedup: DedupConfig,
    /// This node's client address, told to clients redirected here.
    pub client_addr: String,
    /// Truncate the write-ahead log at a corrupt record instead of refusing to start.
    pub repair: bool,
    /// Starts the processing stage (the event pipeline) run on the leader over committed
    /// events; `None` runs none.
    pub pipeline: Option<Arc<dyn StartProcessing>>,
    /// Sees the Raft state after every driver round (the simulator's invariant checkers); `None`
    /// in production.
    pub observer: Option<Arc<dyn RaftObserver>>,
    /// Sizes of the topic files (on the member's disk, next to the WAL); see
    /// [`ClusterOptions::store_config`].
    pub store: StoreConfig,
    /// Most record bytes one fetch reads.
    pub read_max_bytes: usize,
}

impl ClusterOptions {
    /// The topic store sizes `cluster` asks for.
    pub fn store_config(cluster: &ClusterConfig) -> StoreConfig {
        StoreConfig {
            segment_bytes: cluster.topic_segment_bytes,
            verify_on_open: cluster.verify_topics_at_start,
            ..StoreConfig::default()
        }
    }
}

/// Watches a member's Raft state after every round of its driver. It runs on the driver task, so
/// it must be quick and must not block; the simulator uses it to check Raft's safety properties
/// at every step of every node, not only at the end of a run.
pub trait RaftObserver: Send + Sync + std::fmt::Debug {
    /// Called once per round that did something (`Ready` was non-empty).
    fn round(&self, view: &RoundView<'_>);
}

/// What a [`RaftObserver`] sees of one round.
#[derive(Debug)]
pub struct RoundView<'a> {
    pub node: NodeId,
    pub term: Term,
    /// The vote cast in `term` (persisted before the round's messages went out).
    pub vote: Option<NodeId>,
    pub role: Role,
    pub leader: Option<NodeId>,
    pub commit: Index,
    pub applied: Index,
    /// The log held in memory (after compaction it starts at `first_index`).
    pub first_index: Index,
    pub entries: &'a [Entry],
    /// Entries were appended (or the log was replaced by a snapshot) this round.
    pub log_changed: bool,
    /// The first index appended this round (entries from there on are new or replaced).
    pub appended_from: Option<Index>,
    /// Entries applied to the state machine this round, in order.
    pub applied_entries: &'a [Entry],
    /// A snapshot installed this round: its last included index and term.
    pub snapshot: Option<(Index, Term)>,
    /// The first round since this incarnation started (a restart resets the commit index).
    pub first_round: bool,
}

/// Why a member could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("the snapshot in the data directory cannot be read: {0}")]
    Snapshot(String),
    #[error("the topic files in the data directory cannot be opened: {0}")]
    Topics(#[from] StoreError),
    #[error("raft: {0}")]
    Raft(#[from] InitError),
    #[error("cannot listen for peers on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    /// Peers could not authenticate: set the same `cluster.secret` on every member.
    #[error(
        "cluster.secret is empty but this node {why}: set cluster.secret (the same long random string \
         on every member) and restart"
    )]
    NoSecret { why: &'static str },
    #[error("cluster.tls: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// The next message from a peer; never completes on a member without a peer transport.
async fn next_peer_message(inbox: &mut Option<Inbox>) -> Option<crate::raft::Message> {
    match inbox {
        Some(i) => i.recv().await,
        None => std::future::pending().await,
    }
}

/// Binds the peer transport, or — for a single member without a secret — nothing: nobody could
/// be authenticated, so the port stays closed. A member that has or will have peers needs a
/// secret.
async fn open_peer_transport(
    cfg: &ClusterConfig,
    id: NodeId,
    raft: &Raft,
    clock: NodeClock,
    rng: NodeRng,
) -> Result<Option<(PeerTransport, Inbox)>, ClusterError> {
    if cfg.secret.is_empty() {
        let why = if cfg.join {
            Some("is configured to join a cluster")
        } else if cfg.members.iter().any(|m| m.id != id) {
            Some("has other configured members")
        } else if raft.conf_state().members().any(|m| m != id) {
            Some("has other members in its persisted configuration")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(ClusterError::NoSecret { why });
        }
        tracing::info!(node = id, "no cluster.secret: a single member, not listening for peers");
        return Ok(None);
    }
    if cfg.secret.len() < MIN_SECRET_LEN {
        tracing::warn!(
            node = id,
            len = cfg.secret.len(),
            min = MIN_SECRET_LEN,
            "cluster.secret is short; use a long random string"
        );
    }
    let mut tcfg = TransportConfig::new(id, cfg.cluster_id.clone(), cfg.secret.clone());
    tcfg.queue_per_peer = usize::try_from(cfg.peer_queue).unwrap_or(usize::MAX);
    tcfg.tls = cfg.tls.as_ref().map(crate::tls::PeerTls::load).transpose()?;
    let bound = PeerTransport::bind(tcfg, cfg.raft_listen, clock, rng)
        .await
        .map_err(|source| ClusterError::Listen { addr: cfg.raft_listen, source })?;
    Ok(Some(bound))
}

/// What a member reports before its driver's first round.
fn initial_status(id: NodeId, raft: &Raft) -> ClusterStatus {
    ClusterStatus {
        id,
        role: raft.role(),
        term: raft.term(),
        leader: raft.leader_id(),
        leader_client_addr: None,
        commit: raft.commit_index(),
        applied: raft.applied(),
        last_index: raft.last_index(),
        voters: raft.conf_state().voters.iter().copied().collect(),
        learners: raft.conf_state().learners.iter().copied().collect(),
        failed: None,
    }
}

/// Secrets shorter than this start with a warning: guessing online costs one connection a try.
pub const MIN_SECRET_LEN: usize = 16;

/// What a member looks like from outside (refreshed after every driver round).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterStatus {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub leader: Option<NodeId>,
    /// The leader's client address, when known.
    pub leader_client_addr: Option<String>,
    pub commit: Index,
    pub applied: Index,
    pub last_index: Index,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// Set when the node stopped replicating because its storage failed.
    pub failed: Option<String>,
}

type Reply<T> = oneshot::Sender<Result<T, ServiceError>>;

enum Cmd {
    Publish {
        events: Vec<Event>,
        admission: Option<Admission>,
        reply: Reply<Vec<Appended>>,
    },
    /// The pipeline's checkpoint to record in the log (from [`ClusterCheckpoint::flush`]).
    Checkpoint {
        positions: Vec<(String, u64)>,
        handled: Vec<(u64, u64)>,
    },
    Read {
        reply: Reply<()>,
    },
    /// A consumer position to commit (answered like a publish, with the recorded position).
    Commit {
        commit: OffsetCommit,
        reply: Reply<Vec<Appended>>,
    },
    Admin {
        req: AdminCommand,
        reply: Reply<String>,
    },
    /// Hand leadership to the most caught-up voter (before a planned stop).
    HandOver {
        reply: Reply<Option<NodeId>>,
    },
}

struct Shared {
    id: NodeId,
    raft_addr: Option<SocketAddr>,
    /// The peer transport's counters, for `/metrics`.
    peer_stats: Option<StatsReader>,
    cmds: mpsc::UnboundedSender<Cmd>,
    state: Mutex<EventLogState>,
    status: Mutex<ClusterStatus>,
    /// Woken after every round that applied something (long-poll reads wait on it).
    applied: Notify,
    stop: Latch,
    /// The running pipeline while this member leads (publishes are admitted through it).
    pipeline: Mutex<Option<Arc<dyn Processing>>>,
    /// A topic table loaded after start (SIGHUP), used by every pipeline this member starts.
    routes: Mutex<Option<Routes>>,
    /// Topic settings from this member's config; proposed while it leads.
    topic_config: Mutex<Option<crate::node::TopicSettings>>,
    /// Storage writes that found no free file descriptor (each retried, no restart).
    fd_exhaustion: std::sync::atomic::AtomicU64,
    /// A round waits un-persisted, or applying waits, for file descriptors (clients are told to retry).
    storage_stalled: std::sync::atomic::AtomicBool,
    /// Snapshot installs and the pull of their topic data.
    catchup: catchup::CatchUpStats,
    /// What the background scrub of sealed topic segments read and found.
    scrub: scrub::ScrubStats,
}

/// A member of the replicated log; implements [`EventService`]. Clones share the member.
#[derive(Clone)]
pub struct ClusterNode {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ClusterNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterNode").field("id", &self.shared.id).finish_non_exhaustive()
    }
}

/// The running driver; [`ClusterTask::wait`] returns once it has stopped.
pub struct ClusterTask {
    handle: rt::JoinHandle<()>,
}

impl ClusterTask {
    /// Waits for the driver to stop (after [`ClusterNode::shutdown`], or a storage failure).
    pub async fn wait(self) {
        let _ = self.handle.await;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Holders never panic half-way through an update that matters for safety (the state machine
    // only grows); a poisoned lock still holds the best data there is.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The configured members' addresses, and this member's own.
fn member_addrs(cfg: &ClusterConfig, id: NodeId, client_addr: &str) -> BTreeMap<NodeId, Addr> {
    let mut addrs = BTreeMap::new();
    for m in &cfg.members {
        addrs.insert(m.id, Addr { raft: m.raft_addr.clone(), client: m.client_addr.clone() });
    }
    addrs.insert(id, Addr { raft: cfg.raft_listen.to_string(), client: client_addr.to_string() });
    addrs
}

impl ClusterNode {
    /// Recovers from `disk`, binds the peer listener and starts the driver.
    pub async fn start(
        opts: ClusterOptions,
        disk: Arc<dyn Disk>,
        clock: NodeClock,
        mut rng: NodeRng,
    ) -> Result<(ClusterNode, ClusterTask), ClusterError> {
        let cfg = opts.cluster.clone();
        let id = opts.node_id;
        let store_cfg = opts.store;
        let (storage, recovered, state, resume, mut addrs) = recover(&opts, &disk, &clock)?;
        // Addresses of members added after the snapshot are in the configuration entries.
        for e in &recovered.entries {
            note_conf_entry(&mut addrs, e);
        }
        let fresh = recovered.hard_state == Default::default()
            && recovered.snapshot.is_none()
            && recovered.entries.is_empty();
        let conf_state = if cfg.join {
            ConfState::default()
        } else if cfg.members.is_empty() {
            ConfState::with_voters([id])
        } else {
            ConfState::with_voters(cfg.members.iter().map(|m| m.id))
        };
        tracing::info!(node = id, fresh, entries = recovered.entries.len(), "recovered");
        let replay_to = recovered.entries.last().map(|e| (e.index, clock.mono()));
        let restored = RestoredState {
            hard_state: recovered.hard_state,
            snapshot: recovered.snapshot,
            entries: recovered.entries,
            conf_state,
            applied: 0,
        };
        let mut rcfg = RaftConfig::new(id);
        rcfg.election_tick = cfg.election_ticks;
        rcfg.heartbeat_tick = cfg.heartbeat_ticks;
        rcfg.max_entries_per_append = usize::try_from(cfg.max_entries_per_append).unwrap_or(usize::MAX);
        let raft_rng = rt::rng::split(&mut rng);
        let mut raft = Raft::new(rcfg, restored, raft_rng)?;
        catchup::prepare(&mut raft, &resume);
        let (transport, inbox) = match open_peer_transport(&cfg, id, &raft, clock.clone(), rng).await? {
            Some((transport, inbox)) => {
                // The configured address may be port 0; tell peers the real one.
                if let Some(a) = addrs.get_mut(&id) {
                    a.raft = transport.local_addr().to_string();
                }
                (Some(transport), Some(inbox))
            }
            None => (None, None),
        };

        let (tx, rx) = mpsc::unbounded_channel();
        let status = initial_status(id, &raft);
        let shared = Arc::new(Shared {
            id,
            raft_addr: transport.as_ref().map(PeerTransport::local_addr),
            peer_stats: transport.as_ref().map(PeerTransport::stats_reader),
            cmds: tx,
            state: Mutex::new(state),
            status: Mutex::new(status),
            applied: Notify::new(),
            stop: Latch::new(),
            pipeline: Mutex::new(None),
            routes: Mutex::new(None),
            topic_config: Mutex::new(None),
            fd_exhaustion: Default::default(),
            storage_stalled: Default::default(),
            catchup: catchup::CatchUpStats::new(resume.is_some()),
            scrub: Default::default(),
        });
        let tick = Duration::from_millis(cfg.tick_ms);
        let last_snapshot = raft.latest_snapshot().map_or(0, |s| s.meta.index);
        let mut driver = Driver {
            id,
            // A sole voter campaigns at its first tick: give it that tick now (issue 13).
            next_tick: clock.mono() + if raft.is_sole_committed_voter() { Duration::ZERO } else { tick },
            tick,
            commit_timeout: Duration::from_millis(cfg.commit_timeout_ms),
            snapshot_entries: cfg.snapshot_entries,
            snapshot_keep_entries: cfg.snapshot_keep_entries,
            snapshot_keep_bytes: cfg.snapshot_keep_bytes,
            snapshot_log_bytes: cfg.snapshot_log_bytes,
            log_bytes_since_snapshot: 0,
            raft,
            storage,
            transport,
            inbox,
            cmds: rx,
            shared: shared.clone(),
            clock,
            addrs: AddressBook::new(addrs),
            pending: BTreeMap::new(),
            reads: Vec::new(),
            next_read_ctx: 1,
            admin: Vec::new(),
            last_snapshot,
            replay_to,
            pipeline_setup: opts.pipeline.clone(),
            pipeline: None,
            leader_since: None,
            observer: opts.observer.clone(),
            observed: false,
            retention: Default::default(),
            stalled: None,
            disk,
            store_cfg,
            catchup: resume,
            catchup_chunk_bytes: cfg.catchup_chunk_bytes,
            snapshot_job: None,
            compact_due: None,
        };
        driver.sync_peers();
        driver.publish_status();
        let handle = rt::spawn(driver.run());
        scrub::start(&shared, cfg.scrub_bytes_per_sec);
        Ok((ClusterNode { shared }, ClusterTask { handle }))
    }

    /// Stops the driver (pending requests are answered "shutting down").
    pub fn shutdown(&self) {
        self.shared.stop.set();
    }

    /// Replaces the pipeline's topic table without a restart: the running pipeline (if this member
    /// leads) at once, and any pipeline it starts later.
    pub fn reload_routes(
        &self,
        topics: BTreeMap<String, crate::event::Priority>,
        default: crate::event::Priority,
    ) {
        if let Some(p) = lock(&self.shared.pipeline).as_ref() {
            p.reload_routes(&topics, default);
        }
        *lock(&self.shared.routes) = Some((topics, default));
    }

    /// Where this member listens for its peers; `None` when it does not (no `cluster.secret`).
    pub fn raft_addr(&self) -> Option<SocketAddr> {
        self.shared.raft_addr
    }

    /// The member's current status.
    pub fn status(&self) -> ClusterStatus {
        lock(&self.shared.status).clone()
    }

    /// Locks the applied state (for tests and the simulator's checkers).
    pub fn state(&self) -> MutexGuard<'_, EventLogState> {
        lock(&self.shared.state)
    }

    fn refused(&self) -> ServiceError {
        match lock(&self.shared.status).failed.clone() {
            Some(why) => ServiceError::Internal(why),
            None => ServiceError::ShuttingDown,
        }
    }

    fn call<T: Send + 'static>(
        &self,
        cmd: Cmd,
        rx: oneshot::Receiver<Result<T, ServiceError>>,
    ) -> impl Future<Output = Result<T, ServiceError>> + Send + 'static + use<T> {
        // Sent at call time: the channel's order is the order of calls (the EventService contract).
        let refused = self.shared.cmds.send(cmd).is_err().then(|| self.refused());
        let this = self.clone();
        async move {
            if let Some(e) = refused {
                return Err(e);
            }
            rx.await.unwrap_or_else(|_| Err(this.refused()))
        }
    }
}

/// A publish through the pipeline: admitted at once (its command already sent), or its events
/// waiting for transactional room.
enum Admitted<F> {
    Now(F),
    Waiting(Vec<Event>),
}

impl EventService for ClusterNode {
    fn publish(
        &self,
        events: Vec<Event>,
    ) -> impl Future<Output = Result<Vec<Appended>, ServiceError>> + Send + 'static + use<> {
        let pipeline = lock(&self.shared.pipeline).clone();
        let Some(pipeline) = pipeline else {
            let (reply, rx) = oneshot::channel();
            return futures_util::future::Either::Left(
                self.call(Cmd::Publish { events, admission: None, reply }, rx),
            );
        };
        // Admission into the pipeline comes first (it may shed or ask producers to back off).
        // Admitted at once, the batch keeps its place in call order; one that must wait for
        // transactional room is placed when admitted.
        // The events move into the command (admitted now) or into the wait, never copied.
        let now = match pipeline.try_admit(&events) {
            Err(e) => Err(e),
            Ok(Some(adm)) => {
                let (reply, rx) = oneshot::channel();
                Ok(Admitted::Now(self.call(Cmd::Publish { events, admission: Some(adm), reply }, rx)))
            }
            Ok(None) => Ok(Admitted::Waiting(events)),
        };
        let this = self.clone();
        futures_util::future::Either::Right(async move {
            match now? {
                Admitted::Now(fut) => fut.await,
                Admitted::Waiting(events) => {
                    let adm = pipeline.admit(&events).await?;
                    let (reply, rx) = oneshot::channel();
                    this.call(Cmd::Publish { events, admission: Some(adm), reply }, rx).await
                }
            }
        })
    }

    fn fetch(
        &self,
        topic: String,
        offset: u64,
        max: usize,
    ) -> impl Future<Output = Result<FetchReply, ServiceError>> + Send + 'static + use<> {
        let r = self.refuse_while_catching_up().and_then(|()| Ok(self.state().read(&topic, offset, max)?));
        std::future::ready(r)
    }

    fn read(
        &self,
        topic: String,
        offset: u64,
        max: usize,
        opts: ReadOptions,
    ) -> impl Future<Output = Result<FetchReply, ServiceError>> + Send + 'static + use<> {
        let confirm = opts.linearizable.then(|| {
            let (reply, rx) = oneshot::channel();
            self.call(Cmd::Read { reply }, rx)
        });
        let shared = self.shared.clone();
        let this = self.clone();
        async move {
            if let Some(confirm) = confirm {
                confirm.await?;
            }
            this.refuse_while_catching_up()?;
            let deadline = rt::time::now() + Duration::from_millis(u64::from(opts.wait_ms));
            loop {
                let mut notified = std::pin::pin!(shared.applied.notified());
                // Register before looking, so an apply between the look and the wait is not missed.
                notified.as_mut().enable();
                let r = lock(&shared.state).read(&topic, offset, max).map_err(ServiceError::from)?;
                let now = rt::time::now();
                if !r.events.is_empty() || now >= deadline || shared.stop.is_set() {
                    return Ok(r);
                }
                rt::select! {
                    biased;
                    _ = notified => {}
                    _ = shared.stop.wait() => {}
                    _ = rt::time::sleep(deadline - now) => {}
                }
            }
        }
    }

    fn admin(
        &self,
        req: AdminCommand,
    ) -> impl Future<Output = Result<String, ServiceError>> + Send + 'static + use<> {
        if let AdminCommand::Topics = req {
            // Read-only, from this member's applied state: no need to go through the driver.
            let r = self.refuse_while_catching_up().map(|()| self.state().topics_json());
            return futures_util::future::Either::Left(std::future::ready(r));
        }
        let (reply, rx) = oneshot::channel();
        futures_util::future::Either::Right(self.call(Cmd::Admin { req, reply }, rx))
    }

    fn commit_offset(
        &self,
        commit: OffsetCommit,
    ) -> impl Future<Output = Result<u64, ServiceError>> + Send + 'static + use<> {
        self.commit(commit)
    }

    fn consumers(&self, name: Option<String>) -> Result<Vec<ConsumerPosition>, ServiceError> {
        Ok(self.state().consumers(name.as_deref()))
    }

    fn render_metrics(&self) -> String {
        let st = self.status();
        let mut out = String::new();
        for (name, help, v) in [
            ("esc_raft_term", "current Raft term", st.term),
            ("esc_raft_is_leader", "1 if this member leads", u64::from(st.role == Role::Leader)),
            ("esc_raft_commit_index", "highest committed log index known", st.commit),
            ("esc_raft_applied_index", "highest log index applied to the event log", st.applied),
            ("esc_raft_last_index", "last log index", st.last_index),
            ("esc_raft_voters", "voting members", st.voters.len() as u64),
            (
                "esc_node_storage_failed",
                "1 if this member stopped replicating after a storage error",
                u64::from(st.failed.is_some()),
            ),
        ] {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"));
        }
        out.push_str(&storage_metrics(&self.shared));
        out.push_str(&catchup::render(&self.shared.catchup));
        if let Some(r) = &self.shared.peer_stats {
            let s = r.stats();
            for (name, help, v) in [
                (
                    "esc_peer_handshake_failures_total",
                    "peer handshakes that failed (either direction)",
                    s.handshake_failures,
                ),
                (
                    "esc_peer_invalid_messages_total",
                    "authenticated peer messages with impossible values, refused",
                    s.invalid_messages,
                ),
                ("esc_peer_bad_frames_total", "peer frames refused (length, checksum, codec)", s.bad_frames),
                ("esc_peer_rejected_total", "peer messages whose sender or recipient was wrong", s.rejected),
                ("esc_peer_accepted_total", "inbound peer connections authenticated", s.accepted),
                ("esc_peer_refused_total", "inbound peer connections over the limit", s.refused),
            ] {
                out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"));
            }
        }
        if let Some(p) = lock(&self.shared.pipeline).as_ref() {
            out.push_str(&p.render_metrics());
        }
        out.push_str(&super::consumers::render_lag(&self.state().consumers(None)));
        out
    }

    fn readiness(&self) -> Result<(), String> {
        if self.shared.storage_stalled.load(std::sync::atomic::Ordering::Relaxed) {
            return Err("storage is waiting for free file descriptors".into());
        }
        readiness(&self.status())
    }

    fn node_id(&self) -> u64 {
        self.shared.id
    }
}

/// The storage's exhaustion counter and stall gauge, for `/metrics`.
fn storage_metrics(shared: &Shared) -> String {
    use std::sync::atomic::Ordering::Relaxed;
    let (name, help) = (
        "esc_storage_fd_exhaustion_total",
        "storage writes (WAL or topic files) that found no free file descriptor (nothing written; retried without a restart)",
    );
    let mut out = format!(
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
        shared.fd_exhaustion.load(Relaxed)
    );
    let (name, help) = (
        "esc_storage_stalled",
        "1 while a round waits un-persisted, or applying waits, for file descriptors",
    );
    let v = u64::from(shared.storage_stalled.load(Relaxed));
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"));
    let (name, help) = (
        "esc_topic_corrupt_records_total",
        "bad records (checksum, framing, offset) met reading the topic files: never served; see the error log for file and byte",
    );
    let v = lock(&shared.state).store().corrupt_found();
    out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"));
    out.push_str(&shared.scrub.metrics());
    out
}

/// Ready for traffic: a member (voter or learner) that knows a leader and has applied everything
/// it knows is committed, with working storage.
fn readiness(st: &ClusterStatus) -> Result<(), String> {
    if let Some(why) = &st.failed {
        return Err(format!("storage failed: {why}"));
    }
    if !st.voters.contains(&st.id) && !st.learners.contains(&st.id) {
        return Err(format!("node {} is not a member of the cluster (yet)", st.id));
    }
    if st.leader.is_none() {
        return Err(format!("no leader known (term {})", st.term));
    }
    if st.applied < st.commit {
        return Err(format!("applied index {} behind commit index {}", st.applied, st.commit));
    }
    Ok(())
}

struct PendingPublish {
    term: Term,
    admission: Option<Admission>,
    deadline: Duration,
    reply: Reply<Vec<Appended>>,
}

struct PendingRead {
    ctx: u64,
    /// Known once the leader confirmed the read: serve when applied reaches it.
    index: Option<Index>,
    deadline: Duration,
    reply: Reply<()>,
}

struct Driver {
    id: NodeId,
    raft: Raft,
    storage: RaftStorage,
    /// `None` for a single member without a secret: it does not listen for peers.
    transport: Option<PeerTransport>,
    inbox: Option<Inbox>,
    cmds: mpsc::UnboundedReceiver<Cmd>,
    shared: Arc<Shared>,
    clock: NodeClock,
    tick: Duration,
    next_tick: Duration,
    commit_timeout: Duration,
    snapshot_entries: u64,
    snapshot_keep_entries: u64,
    snapshot_keep_bytes: u64,
    snapshot_log_bytes: u64,
    /// Bytes of the entries applied since the last snapshot (taken or installed).
    log_bytes_since_snapshot: u64,
    /// Where every node listens, and what the transport was told.
    addrs: AddressBook,
    pending: BTreeMap<Index, PendingPublish>,
    reads: Vec<PendingRead>,
    next_read_ctx: u64,
    admin: Vec<PendingAdmin>,
    last_snapshot: Index,
    /// The last entry the WAL held at start, and when the driver started: logged once applied.
    replay_to: Option<(Index, Duration)>,
    pipeline_setup: Option<Arc<dyn StartProcessing>>,
    /// The pipeline, while this member leads and has caught up.
    pipeline: Option<Arc<dyn Processing>>,
    /// Index of this leader's first entry of its term: its pipeline starts once that is applied
    /// (everything committed by earlier leaders is then in the state machine).
    leader_since: Option<Index>,
    observer: Option<Arc<dyn RaftObserver>>,
    /// The observer has seen a round of this incarnation.
    observed: bool,
    /// Topic settings and trims this leader proposed.
    retention: retention::RetentionDuty,
    /// A round whose persistence waits for file descriptors (the core is not driven meanwhile).
    stalled: Option<persist::Stalled>,
    /// The member's disk (the WAL's and the topic files').
    disk: Arc<dyn Disk>,
    store_cfg: StoreConfig,
    /// The install whose topic data is being pulled (see `catchup.rs`).
    catchup: Option<catchup::Install>,
    catchup_chunk_bytes: u32,
    /// The snapshot whose topic fsyncs and file write run in a task (`snapshot.rs`).
    snapshot_job: Option<snapshot::SnapshotJob>,
    /// A snapshot recorded since the last round: the log is to be compacted behind it.
    compact_due: Option<snapshot::SavedLine>,
}

/// Why a member stopped replicating: its WAL or its topic files failed, or a snapshot could not
/// be installed.
#[derive(Debug, thiserror::Error)]
pub(super) enum RoundError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("topic files: {0}")]
    Topics(#[from] StoreError),
    #[error("snapshot: {0}")]
    Snapshot(String),
}

impl RoundError {
    /// Only opening a file failed for want of descriptors: nothing was written, retry later.
    pub(super) fn is_fd_exhaustion(&self) -> bool {
        match self {
            RoundError::Storage(e) => e.is_fd_exhaustion(),
            RoundError::Topics(StoreError::Disk(e)) => e.is_fd_exhaustion(),
            _ => false,
        }
    }
}

/// What a start recovers from `disk`: the WAL, the state at its snapshot, the install to resume
/// and the address book (configured members, then the snapshot's). Logs how long each part took.
#[allow(clippy::type_complexity)]
fn recover(
    opts: &ClusterOptions,
    disk: &Arc<dyn Disk>,
    clock: &NodeClock,
) -> Result<
    (RaftStorage, Recovered, EventLogState, Option<catchup::Install>, BTreeMap<NodeId, Addr>),
    ClusterError,
> {
    let (cfg, id, t0) = (&opts.cluster, opts.node_id, clock.mono());
    let storage_opts = StorageOptions { segment_bytes: cfg.segment_bytes, repair: opts.repair };
    let (storage, recovered) = RaftStorage::open(disk.clone(), storage_opts)?;
    for note in &recovered.repaired {
        tracing::warn!(node = id, "recovery: {note}");
    }
    let wal = clock.mono();
    let mut addrs = member_addrs(cfg, id, &opts.client_addr);
    let (state, resume) = recover_state(opts, disk, recovered.snapshot.as_ref(), &mut addrs)?;
    let ms = |a: Duration, b: Duration| b.saturating_sub(a).as_millis() as u64;
    tracing::debug!(
        node = id,
        wal_ms = ms(t0, wal),
        state_ms = ms(wal, clock.mono()),
        snapshot = recovered.snapshot.as_ref().map_or(0, |s| s.meta.index),
        "restart: WAL and state recovered"
    );
    Ok((storage, recovered, state, resume, addrs))
}

/// The state at the last snapshot (its topic files cut back to it), or empty; the WAL after it
/// is applied again by the driver. With the install of that snapshot to go on with, if a restart
/// interrupted the pull of its topic data.
fn recover_state(
    opts: &ClusterOptions,
    disk: &Arc<dyn Disk>,
    snapshot: Option<&Snapshot>,
    addrs: &mut BTreeMap<NodeId, Addr>,
) -> Result<(EventLogState, Option<catchup::Install>), ClusterError> {
    let (mut state, resume) = match snapshot {
        Some(snap) => {
            let (book, st, resume) = catchup::recover(opts, disk, snap)?;
            addrs.extend(book);
            (st, resume)
        }
        // No snapshot: the WAL from its start rebuilds every topic.
        None => {
            (EventLogState::with_store(opts.dedup, TopicSet::open(disk.clone(), opts.store, None)?), None)
        }
    };
    state.set_read_max_bytes(opts.read_max_bytes);
    state.set_max_topics(usize::try_from(opts.cluster.max_topics).unwrap_or(usize::MAX));
    Ok((state, resume))
}

fn unavailable(reason: impl Into<String>) -> ServiceError {
    ServiceError::Unavailable { retry_after_ms: UNAVAILABLE_RETRY_MS, reason: reason.into() }
}

#[cfg(test)]
mod readiness_tests {
    use super::*;

    #[test]
    fn ready_only_as_a_caught_up_member_with_a_leader() {
        let ok = ClusterStatus {
            id: 2,
            role: Role::Follower,
            term: 3,
            leader: Some(1),
            leader_client_addr: None,
            commit: 10,
            applied: 10,
            last_index: 10,
            voters: vec![1, 2, 3],
            learners: vec![],
            failed: None,
        };
        assert_eq!(readiness(&ok), Ok(()));
        let learner = ClusterStatus { voters: vec![1, 3], learners: vec![2], ..ok.clone() };
        assert_eq!(readiness(&learner), Ok(()));
        let why = |s: ClusterStatus| readiness(&s).unwrap_err();
        assert!(why(ClusterStatus { leader: None, ..ok.clone() }).contains("no leader known"));
        assert!(
            why(ClusterStatus { applied: 9, ..ok.clone() })
                .contains("applied index 9 behind commit index 10")
        );
        assert!(why(ClusterStatus { voters: vec![1, 3], ..ok.clone() }).contains("not a member"));
        assert!(why(ClusterStatus { failed: Some("disk full".into()), ..ok }).contains("disk full"));
    }
}
