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

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::command::Command;
use super::{DedupConfig, EventLogState};
use crate::config::ClusterConfig;
use crate::event::Event;
use crate::event::codec::{get_str16, put_str16};
use crate::wal::{RaftStorage, StorageError, StorageOptions};
use crate::transport::{Inbox, PeerTransport, TransportConfig};
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
    #[error("raft: {0}")]
    Raft(#[from] InitError),
    #[error("cannot listen for peers on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

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

/// Where a member listens.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Addr {
    raft: String,
    client: String,
}

impl Addr {
    fn to_context(&self) -> Bytes {
        Bytes::from(format!("{}\n{}", self.raft, self.client))
    }

    fn from_context(ctx: &[u8]) -> Option<Addr> {
        let text = std::str::from_utf8(ctx).ok()?;
        let (raft, client) = text.split_once('\n')?;
        Some(Addr { raft: raft.to_string(), client: client.to_string() })
    }
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
    Admin {
        req: AdminCommand,
        reply: Reply<String>,
    },
}

struct Shared {
    id: NodeId,
    raft_addr: SocketAddr,
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
        let storage_opts = StorageOptions { segment_bytes: cfg.segment_bytes, repair: opts.repair };
        let (storage, recovered) = RaftStorage::open(disk, storage_opts)?;
        for note in &recovered.repaired {
            tracing::warn!(node = id, "recovery: {note}");
        }
        let mut addrs = BTreeMap::new();
        for m in &cfg.members {
            addrs.insert(m.id, Addr { raft: m.raft_addr.clone(), client: m.client_addr.clone() });
        }
        addrs.insert(id, Addr { raft: cfg.raft_listen.to_string(), client: opts.client_addr.clone() });
        let mut state = EventLogState::new(opts.dedup);
        if let Some(snap) = &recovered.snapshot {
            let (book, st) =
                decode_snapshot_data(opts.dedup, snap.data.clone()).map_err(ClusterError::Snapshot)?;
            addrs.extend(book);
            state = st;
        }
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
        let raft_rng = rt::rng::split(&mut rng);
        let raft = Raft::new(rcfg, restored, raft_rng)?;
        let tcfg = TransportConfig::new(id, cfg.cluster_id.clone(), cfg.secret.clone());
        let (transport, inbox) = PeerTransport::bind(tcfg, cfg.raft_listen, clock.clone(), rng)
            .await
            .map_err(|source| ClusterError::Listen { addr: cfg.raft_listen, source })?;
        // The configured address may be port 0; tell peers the real one.
        if let Some(a) = addrs.get_mut(&id) {
            a.raft = transport.local_addr().to_string();
        }

        let (tx, rx) = mpsc::unbounded_channel();
        let status = ClusterStatus {
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
        };
        let shared = Arc::new(Shared {
            id,
            raft_addr: transport.local_addr(),
            cmds: tx,
            state: Mutex::new(state),
            status: Mutex::new(status),
            applied: Notify::new(),
            stop: Latch::new(),
            pipeline: Mutex::new(None),
            routes: Mutex::new(None),
        });
        let tick = Duration::from_millis(cfg.tick_ms);
        let last_snapshot = raft.latest_snapshot().map_or(0, |s| s.meta.index);
        let mut driver = Driver {
            id,
            next_tick: clock.mono() + tick,
            tick,
            commit_timeout: Duration::from_millis(cfg.commit_timeout_ms),
            snapshot_entries: cfg.snapshot_entries,
            snapshot_keep_entries: cfg.snapshot_keep_entries,
            raft,
            storage,
            transport,
            inbox,
            cmds: rx,
            shared: shared.clone(),
            clock,
            committed_addrs: addrs.clone(),
            departed_addrs: BTreeMap::new(),
            addrs,
            peers: BTreeMap::new(),
            pending: BTreeMap::new(),
            reads: Vec::new(),
            next_read_ctx: 1,
            admin: Vec::new(),
            last_snapshot,
            pipeline_setup: opts.pipeline.clone(),
            pipeline: None,
            leader_since: None,
            observer: opts.observer.clone(),
            observed: false,
        };
        driver.sync_peers();
        driver.publish_status();
        let handle = rt::spawn(driver.run());
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

    /// Where this member listens for its peers.
    pub fn raft_addr(&self) -> SocketAddr {
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
        let now = match pipeline.try_admit(&events) {
            Err(e) => Err(e),
            Ok(Some(adm)) => {
                let (reply, rx) = oneshot::channel();
                Ok(Some(self.call(Cmd::Publish { events: events.clone(), admission: Some(adm), reply }, rx)))
            }
            Ok(None) => Ok(None),
        };
        let this = self.clone();
        futures_util::future::Either::Right(async move {
            match now? {
                Some(fut) => fut.await,
                None => {
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
        std::future::ready(Ok(self.state().fetch(&topic, offset, max)))
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
        async move {
            if let Some(confirm) = confirm {
                confirm.await?;
            }
            let deadline = rt::time::now() + Duration::from_millis(u64::from(opts.wait_ms));
            loop {
                let mut notified = std::pin::pin!(shared.applied.notified());
                // Register before looking, so an apply between the look and the wait is not missed.
                notified.as_mut().enable();
                let r = lock(&shared.state).fetch(&topic, offset, max);
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
        let (reply, rx) = oneshot::channel();
        self.call(Cmd::Admin { req, reply }, rx)
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
        if let Some(p) = lock(&self.shared.pipeline).as_ref() {
            out.push_str(&p.render_metrics());
        }
        out
    }

    fn node_id(&self) -> u64 {
        self.shared.id
    }
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

enum AdminStage {
    /// Waiting for the learner entry at this index to apply.
    Learner(Index),
    /// Learner in place; promote once it has caught up.
    Promote,
    /// Waiting for the change at this index to apply.
    Applying(Index),
}

struct PendingAdmin {
    node: NodeId,
    addr: Option<Addr>,
    stage: AdminStage,
    deadline: Duration,
    reply: Reply<String>,
}

struct Driver {
    id: NodeId,
    raft: Raft,
    storage: RaftStorage,
    transport: PeerTransport,
    inbox: Inbox,
    cmds: mpsc::UnboundedReceiver<Cmd>,
    shared: Arc<Shared>,
    clock: NodeClock,
    tick: Duration,
    next_tick: Duration,
    commit_timeout: Duration,
    snapshot_entries: u64,
    snapshot_keep_entries: u64,
    /// Addresses of every node seen in the log (including uncommitted configuration entries).
    addrs: BTreeMap<NodeId, Addr>,
    /// Addresses as of the applied configuration (what a snapshot records).
    committed_addrs: BTreeMap<NodeId, Addr>,
    /// Addresses of nodes removed from `addrs`, kept so that a removed node that is added back
    /// and then talks to this node (a leader this node lags behind, say) can be answered before
    /// this node has caught up with the entry that re-added it.
    departed_addrs: BTreeMap<NodeId, Addr>,
    /// Peers the transport currently knows, with the address it was given.
    peers: BTreeMap<NodeId, String>,
    pending: BTreeMap<Index, PendingPublish>,
    reads: Vec<PendingRead>,
    next_read_ctx: u64,
    admin: Vec<PendingAdmin>,
    last_snapshot: Index,
    pipeline_setup: Option<Arc<dyn StartProcessing>>,
    /// The pipeline, while this member leads and has caught up.
    pipeline: Option<Arc<dyn Processing>>,
    /// Index of this leader's first entry of its term: its pipeline starts once that is applied
    /// (everything committed by earlier leaders is then in the state machine).
    leader_since: Option<Index>,
    observer: Option<Arc<dyn RaftObserver>>,
    /// The observer has seen a round of this incarnation.
    observed: bool,
}

/// Publishes through this member for its processing stage (alerts become events). It holds the
/// member weakly: the member owns the stage that owns this publisher, and a strong reference
/// would keep a stopped (or simulated-crashed) member alive forever.
#[derive(Debug)]
struct MemberPublisher {
    node: std::sync::Weak<Shared>,
}

impl EventSink for MemberPublisher {
    fn publish_detached(&self, events: Vec<Event>) {
        let Some(shared) = self.node.upgrade() else { return };
        let fut = ClusterNode { shared }.publish(events);
        rt::spawn(async move {
            if let Err(err) = fut.await {
                tracing::warn!(%err, "could not publish the processing stage's events");
            }
        });
    }
}

/// The pipeline's [`Checkpoint`] on a cluster member: kept in memory as the pipeline reports
/// progress, and recorded in the replicated log (a [`Command::Checkpoint`] entry) at each flush —
/// every control-loop tick and at shutdown — so the next leader resumes from there.
#[derive(Debug)]
struct ClusterCheckpoint {
    cmds: mpsc::UnboundedSender<Cmd>,
    inner: Mutex<CheckpointState>,
}

#[derive(Debug, Default)]
struct CheckpointState {
    positions: BTreeMap<String, u64>,
    handled: std::collections::HashSet<(u64, u64)>,
    dirty_positions: BTreeMap<String, u64>,
    new_keys: Vec<(u64, u64)>,
}

impl Checkpoint for ClusterCheckpoint {
    fn positions(&self) -> BTreeMap<String, u64> {
        lock(&self.inner).positions.clone()
    }

    fn record_position(&self, topic: &str, next_offset: u64) {
        let mut st = lock(&self.inner);
        let p = st.positions.entry(topic.to_string()).or_default();
        if next_offset > *p {
            *p = next_offset;
            st.dirty_positions.insert(topic.to_string(), next_offset);
        }
    }

    fn is_handled(&self, key: (u64, u64)) -> bool {
        lock(&self.inner).handled.contains(&key)
    }

    fn mark_handled(&self, key: (u64, u64)) {
        let mut st = lock(&self.inner);
        if st.handled.insert(key) {
            st.new_keys.push(key);
        }
    }

    fn flush(&self) {
        let mut st = lock(&self.inner);
        if st.dirty_positions.is_empty() && st.new_keys.is_empty() {
            return;
        }
        let positions = std::mem::take(&mut st.dirty_positions).into_iter().collect();
        let handled = std::mem::take(&mut st.new_keys);
        let _ = self.cmds.send(Cmd::Checkpoint { positions, handled });
    }
}

/// Records the address carried by a configuration entry.
fn note_conf_entry(addrs: &mut BTreeMap<NodeId, Addr>, e: &Entry) {
    if e.kind != EntryKind::ConfChange {
        return;
    }
    if let Ok(ce) = ConfEntry::decode(&e.data)
        && ce.change.kind != ConfChangeKind::Remove
        && let Some(a) = Addr::from_context(&ce.change.context)
    {
        addrs.insert(ce.change.node, a);
    }
}

fn unavailable(reason: impl Into<String>) -> ServiceError {
    ServiceError::Unavailable { retry_after_ms: UNAVAILABLE_RETRY_MS, reason: reason.into() }
}

impl Driver {
    async fn run(mut self) {
        tracing::info!(node = self.id, "raft driver started");
        let outcome = loop {
            rt::select! {
                biased;
                _ = self.shared.stop.wait() => break Ok(()),
                _ = self.clock.sleep_until(self.next_tick) => {
                    self.raft.tick();
                    self.next_tick = self.clock.mono() + self.tick;
                    self.on_tick();
                }
                m = self.inbox.recv() => match m {
                    Some(m) => self.step(m),
                    None => break Ok(()),
                },
                c = self.cmds.recv() => match c {
                    Some(c) => self.handle(c),
                    None => break Ok(()),
                },
            }
            // Take everything else that is already here, so one round (one fsync) covers it.
            for _ in 0..4096 {
                match self.inbox.try_recv() {
                    Some(m) => self.step(m),
                    None => break,
                }
            }
            for _ in 0..4096 {
                match self.cmds.try_recv() {
                    Ok(c) => self.handle(c),
                    Err(_) => break,
                }
            }
            for id in self.transport.take_unreachable() {
                self.raft.report_unreachable(id);
            }
            // `advance()` can make more ready at once — a single member commits its own entry only
            // once the round that made it durable has advanced — so go round again rather than
            // wait for the next tick or message.
            let mut failed = None;
            for _ in 0..8 {
                if let Err(e) = self.round() {
                    failed = Some(e);
                    break;
                }
                // Under load new requests are already queued and the next iteration comes at once
                // (and batches more into one fsync); go round again only when nothing else would.
                if !self.raft.has_ready() || !self.cmds.is_empty() {
                    break;
                }
            }
            if let Some(e) = failed {
                break Err(e);
            }
        };
        match outcome {
            Ok(()) => self.stop(ServiceError::ShuttingDown),
            Err(e) => {
                let why = format!("node {} stopped replicating: storage failed: {e}; restart it", self.id);
                tracing::error!(node = self.id, error = %e, "storage failed; the node stops replicating");
                lock(&self.shared.status).failed = Some(why.clone());
                self.stop(ServiceError::Internal(why));
            }
        }
        self.cmds.close();
        while let Ok(c) = self.cmds.try_recv() {
            self.refuse(c, &ServiceError::ShuttingDown);
        }
        if let Some(p) = self.pipeline.take() {
            *lock(&self.shared.pipeline) = None;
            p.shutdown().await;
        }
        self.transport.shutdown().await;
        self.shared.applied.notify_waiters();
        tracing::info!(node = self.id, "raft driver stopped");
    }

    fn stop(&mut self, err: ServiceError) {
        for (_, p) in std::mem::take(&mut self.pending) {
            let _ = p.reply.send(Err(err.clone()));
        }
        for r in self.reads.drain(..) {
            let _ = r.reply.send(Err(err.clone()));
        }
        for a in self.admin.drain(..) {
            let _ = a.reply.send(Err(err.clone()));
        }
        self.shared.stop.set();
    }

    fn refuse(&self, c: Cmd, err: &ServiceError) {
        match c {
            Cmd::Publish { reply, .. } => drop(reply.send(Err(err.clone()))),
            Cmd::Checkpoint { .. } => {}
            Cmd::Read { reply } => drop(reply.send(Err(err.clone()))),
            Cmd::Admin { reply, .. } => drop(reply.send(Err(err.clone()))),
        }
    }

    fn step(&mut self, m: crate::raft::Message) {
        if !self.addrs.contains_key(&m.from)
            && let Some(a) = self.departed_addrs.remove(&m.from)
        {
            // A removed node is talking again: it was added back, or it does not know yet that
            // it is out. Either way the answer must be able to reach it.
            tracing::info!(node = self.id, peer = m.from, "a removed node talks again; dialling it");
            self.addrs.insert(m.from, a);
            self.sync_peers();
        }
        if let Err(e) = self.raft.step(m) {
            tracing::debug!(node = self.id, error = %e, "message ignored");
        }
    }

    fn not_leader(&self) -> ServiceError {
        match self.raft.leader_id() {
            Some(l) if l != self.id => {
                ServiceError::NotLeader { leader: self.addrs.get(&l).map(|a| a.client.clone()) }
            }
            _ => unavailable("no leader elected yet"),
        }
    }

    fn propose_error(&self, e: ProposeError) -> ServiceError {
        match e {
            ProposeError::NotLeader { .. } | ProposeError::TransferInProgress { .. } => self.not_leader(),
            other => unavailable(other.to_string()),
        }
    }

    fn handle(&mut self, c: Cmd) {
        let now = self.clock.mono();
        match c {
            Cmd::Checkpoint { positions, handled } => {
                // Only the leader's pipeline runs; a late flush after a step-down is dropped (the
                // next leader re-handles from the last recorded checkpoint: at-least-once).
                if self.raft.role() == Role::Leader {
                    let _ = self.raft.propose(Command::Checkpoint { positions, handled }.encode());
                }
            }
            Cmd::Publish { events, admission, reply } => {
                if self.raft.role() != Role::Leader {
                    let _ = reply.send(Err(self.not_leader()));
                    return;
                }
                if events.is_empty() {
                    let _ = reply.send(Ok(Vec::new()));
                    return;
                }
                // The leader stamps its time into the entry; replicas apply that, never their own clock.
                let cmd = Command::Publish { stamped_ms: self.clock.wall_unix_ms(), events };
                match self.raft.propose(cmd.encode()) {
                    Ok(index) => {
                        let term = self.raft.term();
                        let old = self.pending.insert(
                            index,
                            PendingPublish { term, admission, deadline: now + self.commit_timeout, reply },
                        );
                        debug_assert!(old.is_none(), "two proposals at index {index}");
                    }
                    Err(e) => drop(reply.send(Err(self.propose_error(e)))),
                }
            }
            Cmd::Read { reply } => {
                let ctx = self.next_read_ctx;
                self.next_read_ctx += 1;
                match self.raft.read_index(ctx) {
                    Ok(()) => self.reads.push(PendingRead {
                        ctx,
                        index: None,
                        deadline: now + self.commit_timeout,
                        reply,
                    }),
                    Err(e) => drop(reply.send(Err(self.propose_error(e)))),
                }
            }
            Cmd::Admin { req, reply } => self.admin_request(req, reply, now),
        }
    }

    fn admin_request(&mut self, req: AdminCommand, reply: Reply<String>, now: Duration) {
        if let AdminCommand::Status = req {
            let _ = reply.send(Ok(self.status_text()));
            return;
        }
        if self.raft.role() != Role::Leader {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        let deadline = now + ADMIN_TIMEOUT;
        match req {
            AdminCommand::Status => unreachable!("answered above"),
            AdminCommand::AddNode { id, raft_addr, client_addr } => {
                if id == 0 {
                    let _ = reply.send(Err(ServiceError::Unsupported("node id 0 is reserved".into())));
                    return;
                }
                let addr = Addr { raft: raft_addr, client: client_addr };
                let conf = self.raft.conf_state();
                if conf.voters.contains(&id) {
                    let _ = reply.send(Ok(format!("node {id} is already a voter")));
                    return;
                }
                let stage = if conf.learners.contains(&id) {
                    AdminStage::Promote
                } else {
                    let cc =
                        ConfChange { kind: ConfChangeKind::AddLearner, node: id, context: addr.to_context() };
                    match self.raft.propose_conf_change(cc) {
                        Ok(index) => AdminStage::Learner(index),
                        Err(e) => {
                            let _ = reply.send(Err(self.propose_error(e)));
                            return;
                        }
                    }
                };
                self.admin.push(PendingAdmin { node: id, addr: Some(addr), stage, deadline, reply });
            }
            AdminCommand::RemoveNode { id } => {
                if !self.raft.conf_state().contains(id) {
                    let _ = reply.send(Ok(format!("node {id} is not a member")));
                    return;
                }
                let cc = ConfChange { kind: ConfChangeKind::Remove, node: id, context: Bytes::new() };
                match self.raft.propose_conf_change(cc) {
                    Ok(index) => self.admin.push(PendingAdmin {
                        node: id,
                        addr: None,
                        stage: AdminStage::Applying(index),
                        deadline,
                        reply,
                    }),
                    Err(e) => drop(reply.send(Err(self.propose_error(e)))),
                }
            }
            AdminCommand::TransferLeader { id } => match self.raft.transfer_leader(id) {
                Ok(()) => drop(reply.send(Ok(format!("leadership transfer to node {id} started")))),
                Err(e) => drop(reply.send(Err(self.propose_error(e)))),
            },
        }
    }

    fn status_text(&self) -> String {
        let s = self.raft.status();
        let conf = self.raft.conf_state();
        let mut out = format!(
            "node {} role {:?} term {} leader {} commit {} applied {} last {}\n",
            s.id,
            s.role,
            s.term,
            s.leader.map_or("none".to_string(), |l| l.to_string()),
            s.commit,
            s.applied,
            s.last_index
        );
        for id in conf.members() {
            let kind = if conf.voters.contains(&id) { "voter" } else { "learner" };
            let (raft, client) =
                self.addrs.get(&id).map_or(("?", "?"), |a| (a.raft.as_str(), a.client.as_str()));
            out.push_str(&format!("member {id} {kind} raft {raft} client {client}"));
            if let Some(&(_, matched, _, state)) = s.progress.iter().find(|p| p.0 == id) {
                out.push_str(&format!(" match {matched} {state:?}"));
            }
            out.push('\n');
        }
        out
    }

    /// Timeouts and membership progress, once per tick.
    fn on_tick(&mut self) {
        let now = self.clock.mono();
        let expired: Vec<Index> =
            self.pending.iter().filter(|(_, p)| p.deadline <= now).map(|(&i, _)| i).collect();
        for i in expired {
            if let Some(p) = self.pending.remove(&i) {
                let _ = p.reply.send(Err(unavailable("not committed in time")));
            }
        }
        let mut i = 0;
        while i < self.reads.len() {
            if self.reads[i].deadline <= now {
                let r = self.reads.swap_remove(i);
                let _ = r.reply.send(Err(unavailable("read not confirmed in time")));
            } else {
                i += 1;
            }
        }
        self.advance_admin(now);
    }

    fn advance_admin(&mut self, now: Duration) {
        let applied = self.raft.applied();
        let mut i = 0;
        while i < self.admin.len() {
            let a = &mut self.admin[i];
            let mut done: Option<Result<String, ServiceError>> = None;
            if let AdminStage::Learner(index) = a.stage
                && applied >= index
            {
                a.stage = AdminStage::Promote;
            }
            if let AdminStage::Promote = a.stage {
                let context = a.addr.as_ref().map(Addr::to_context).unwrap_or_default();
                let cc = ConfChange { kind: ConfChangeKind::AddVoter, node: a.node, context };
                match self.raft.propose_conf_change(cc) {
                    Ok(index) => a.stage = AdminStage::Applying(index),
                    Err(
                        ProposeError::LearnerNotCaughtUp { .. }
                        | ProposeError::ConfChangeInProgress { .. }
                        | ProposeError::FirstCommitPending,
                    ) => {}
                    Err(e) => done = Some(Err(unavailable(e.to_string()))),
                }
            }
            if let AdminStage::Applying(index) = a.stage
                && applied >= index
            {
                let conf = self.raft.conf_state();
                done = Some(if conf.voters.contains(&a.node) {
                    Ok(format!("node {} is a voter", a.node))
                } else if !conf.contains(a.node) {
                    Ok(format!("node {} removed", a.node))
                } else {
                    Err(unavailable("the membership change was superseded; retry"))
                });
            }
            if done.is_none() && a.deadline <= now {
                done = Some(Err(unavailable("membership change did not finish in time")));
            }
            match done {
                Some(result) => {
                    let a = self.admin.swap_remove(i);
                    let _ = a.reply.send(result);
                }
                None => i += 1,
            }
        }
    }

    /// One Ready, in the order the core requires.
    fn round(&mut self) -> Result<(), StorageError> {
        if !self.raft.has_ready() {
            return Ok(());
        }
        let Ready { hard_state, entries, snapshot, messages, committed_entries, read_states, soft_state } =
            self.raft.ready();
        let installed = snapshot.as_ref().map(|s| (s.meta.index, s.meta.term));
        let log_changed = installed.is_some() || !entries.is_empty();
        let appended_from = entries.first().map(|e| e.index);
        if let Some(snap) = snapshot {
            self.storage.install_snapshot(&snap)?;
            self.install(&snap);
        }
        if !entries.is_empty() {
            for e in &entries {
                note_conf_entry(&mut self.addrs, e);
            }
            self.storage.append(&entries)?;
            self.storage.sync()?;
        }
        if let Some(hs) = hard_state {
            self.storage.set_hard_state(hs)?;
        }
        self.sync_peers();
        for m in messages {
            self.transport.send(m);
        }
        let observed_entries = if self.observer.is_some() { committed_entries.clone() } else { Vec::new() };
        if !committed_entries.is_empty() {
            self.apply(committed_entries);
        }
        for rs in read_states {
            if let Some(r) = self.reads.iter_mut().find(|r| r.ctx == rs.ctx) {
                r.index = Some(rs.index);
            }
        }
        self.raft.advance();
        let applied = self.raft.applied();
        let mut i = 0;
        while i < self.reads.len() {
            if self.reads[i].index.is_some_and(|ix| ix <= applied) {
                let _ = self.reads.swap_remove(i).reply.send(Ok(()));
            } else {
                i += 1;
            }
        }
        self.manage_pipeline(soft_state.is_some());
        // Changes that just applied are answered before a step-down fails the rest (removing the
        // leader itself commits and then steps it down in the same round).
        self.advance_admin(self.clock.mono());
        if soft_state.is_some() && self.raft.role() != Role::Leader {
            // The outcome of an uncommitted proposal is unknown now; the client retries with the
            // same idempotency key and the dedup window gives it the original offset if it did commit.
            let err = self.not_leader();
            for (_, p) in std::mem::take(&mut self.pending) {
                let _ = p.reply.send(Err(err.clone()));
            }
            for a in self.admin.drain(..) {
                let _ = a.reply.send(Err(err.clone()));
            }
        }
        self.maybe_snapshot()?;
        self.publish_status();
        if let Some(o) = &self.observer {
            o.round(&RoundView {
                node: self.id,
                term: self.raft.term(),
                role: self.raft.role(),
                leader: self.raft.leader_id(),
                commit: self.raft.commit_index(),
                applied: self.raft.applied(),
                first_index: self.raft.first_index(),
                entries: self.raft.entries(),
                log_changed: log_changed || !self.observed,
                appended_from,
                applied_entries: &observed_entries,
                snapshot: installed,
                first_round: !self.observed,
            });
            self.observed = true;
        }
        Ok(())
    }

    /// Starts the pipeline once this leader has applied its first entry, stops it (without
    /// draining: the next leader resumes from the checkpoint) when it is no longer leader.
    fn manage_pipeline(&mut self, role_changed: bool) {
        let leading = self.raft.role() == Role::Leader;
        if role_changed {
            self.leader_since = leading.then(|| self.raft.last_index());
        }
        if !leading {
            if let Some(p) = self.pipeline.take() {
                *lock(&self.shared.pipeline) = None;
                let left = p.abort();
                tracing::info!(node = self.id, left, "pipeline stopped: no longer leader");
            }
            return;
        }
        let Some(setup) = &self.pipeline_setup else { return };
        if self.pipeline.is_some() || self.leader_since.is_none_or(|i| self.raft.applied() < i) {
            return;
        }
        let state = lock(&self.shared.state);
        let progress = state.processing();
        let checkpoint = Arc::new(ClusterCheckpoint {
            cmds: self.shared.cmds.clone(),
            inner: Mutex::new(CheckpointState {
                positions: progress.positions.clone(),
                handled: progress.handled_keys().collect(),
                ..CheckpointState::default()
            }),
        });
        // What the stage publishes (alerts) goes through this node, so it is replicated like any
        // other event.
        let ctx = ProcessingContext {
            node: self.id,
            clock: self.clock.clone(),
            checkpoint,
            publisher: Arc::new(MemberPublisher { node: Arc::downgrade(&self.shared) }),
            routes: lock(&self.shared.routes).clone(),
        };
        let pipeline = match setup.start(ctx) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(node = self.id, error = %e, "the pipeline cannot start; events are stored but not processed");
                self.pipeline_setup = None;
                return;
            }
        };
        // Resume: everything committed after the replicated checkpoint.
        let mut resumed = 0;
        for topic in state.topics().map(str::to_string).collect::<Vec<_>>() {
            let from = progress.positions.get(&topic).copied().unwrap_or(0) as usize;
            let log = state.topic_log(&topic);
            for chunk in log.get(from..).unwrap_or(&[]).chunks(1024) {
                resumed += chunk.len();
                pipeline.submit(chunk.to_vec());
            }
        }
        drop(state);
        tracing::info!(node = self.id, resumed, "pipeline started on the leader");
        *lock(&self.shared.pipeline) = Some(pipeline.clone());
        self.pipeline = Some(pipeline);
    }

    fn install(&mut self, snap: &Snapshot) {
        let dedup = lock(&self.shared.state).dedup_config();
        match decode_snapshot_data(dedup, snap.data.clone()) {
            Ok((book, state)) => {
                self.committed_addrs.extend(book.clone());
                self.addrs.extend(book);
                *lock(&self.shared.state) = state;
                self.last_snapshot = snap.meta.index;
                tracing::info!(node = self.id, index = snap.meta.index, "installed snapshot from the leader");
            }
            Err(e) => {
                // The leader's own state machine produced it; a decode failure is a bug or a
                // version skew. Keep the old state rather than serving a broken one.
                tracing::error!(node = self.id, error = %e, "cannot decode the leader's snapshot");
            }
        }
        // Nothing proposed here before the snapshot can still be answered from this node's log.
        for (_, p) in std::mem::take(&mut self.pending) {
            let _ = p.reply.send(Err(self.not_leader()));
        }
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        let mut to_process: Vec<(Index, Vec<crate::event::StoredEvent>)> = Vec::new();
        let mut state = lock(&self.shared.state);
        for e in entries {
            let result = match e.kind {
                EntryKind::Normal => match Command::decode(e.data.clone()) {
                    Ok(Command::Publish { stamped_ms, events }) => {
                        let appended = state.apply_batch(events, stamped_ms);
                        if self.pipeline.is_some() {
                            // Newly stored events (not duplicates) go to the leader's pipeline.
                            let fresh: Vec<crate::event::StoredEvent> = appended
                                .iter()
                                .filter(|a| !a.duplicate)
                                .filter_map(|a| state.topic_log(&a.topic).get(a.offset as usize).cloned())
                                .collect();
                            to_process.push((e.index, fresh));
                        }
                        Ok(appended)
                    }
                    Ok(Command::Checkpoint { positions, handled }) => {
                        state.apply_checkpoint(&positions, &handled);
                        Err(unavailable("superseded by a pipeline checkpoint"))
                    }
                    Err(err) => {
                        // Every replica skips it the same way, so the replicas stay equal.
                        tracing::error!(node = self.id, index = e.index, error = %err, "undecodable entry skipped");
                        Err(ServiceError::Internal(format!("entry {} could not be applied: {err}", e.index)))
                    }
                },
                EntryKind::Noop => Err(unavailable("superseded by a new leader")),
                EntryKind::ConfChange => {
                    if let Ok(ce) = ConfEntry::decode(&e.data) {
                        match ce.change.kind {
                            ConfChangeKind::Remove => {
                                self.committed_addrs.remove(&ce.change.node);
                                if ce.change.node != self.id
                                    && let Some(a) = self.addrs.remove(&ce.change.node)
                                {
                                    self.departed_addrs.insert(ce.change.node, a);
                                }
                            }
                            _ => {
                                if let Some(a) = Addr::from_context(&ce.change.context) {
                                    // Also where to reach it: a node removed and added back is
                                    // dropped from `addrs` by the removal when a restarted
                                    // member re-applies both entries.
                                    self.addrs.insert(ce.change.node, a.clone());
                                    self.committed_addrs.insert(ce.change.node, a);
                                }
                            }
                        }
                    }
                    Err(unavailable("superseded by a membership change"))
                }
            };
            if let Some(mut p) = self.pending.remove(&e.index) {
                // Another leader's entry at this index means ours was truncated.
                let ours = p.term == e.term;
                if let (true, Some(adm)) = (ours, p.admission.take())
                    && let Some(pos) = to_process.iter().position(|(i, _)| *i == e.index)
                    && let Some(pipeline) = &self.pipeline
                {
                    let (_, events) = to_process.swap_remove(pos);
                    pipeline.submit_admitted(events, adm);
                }
                let out = if ours { result } else { Err(unavailable("superseded by a new leader")) };
                let _ = p.reply.send(out);
            }
        }
        drop(state);
        if let Some(pipeline) = &self.pipeline {
            for (_, events) in to_process {
                if !events.is_empty() {
                    pipeline.submit(events);
                }
            }
        }
        self.shared.applied.notify_waiters();
    }

    fn maybe_snapshot(&mut self) -> Result<(), StorageError> {
        let applied = self.raft.applied();
        if applied < self.last_snapshot + self.snapshot_entries {
            return Ok(());
        }
        let data = encode_snapshot_data(&self.committed_addrs, &lock(&self.shared.state));
        if let Err(e) = self.raft.snapshot(applied, data) {
            tracing::warn!(node = self.id, error = %e, "snapshot refused");
            return Ok(());
        }
        if let Some(snap) = self.raft.latest_snapshot() {
            self.storage.save_snapshot(snap)?;
        }
        self.last_snapshot = applied;
        let keep = applied.saturating_sub(self.snapshot_keep_entries);
        if keep > self.raft.first_index() {
            if let Err(e) = self.raft.compact(keep) {
                tracing::warn!(node = self.id, error = %e, "compaction refused");
            } else {
                self.storage.compact(keep)?;
            }
        }
        tracing::info!(node = self.id, index = applied, "snapshot saved");
        Ok(())
    }

    /// Points the transport at every node whose address is known: the members of the current
    /// configuration, and the configured members while joining (a node that is not yet in the
    /// configuration must still answer the leader that replicates to it).
    fn sync_peers(&mut self) {
        for (id, a) in &self.addrs {
            if *id != self.id && self.peers.get(id) != Some(&a.raft) {
                self.transport.set_peer(*id, a.raft.clone());
                self.peers.insert(*id, a.raft.clone());
            }
        }
        let gone: Vec<NodeId> = self.peers.keys().copied().filter(|p| !self.addrs.contains_key(p)).collect();
        for p in gone {
            self.transport.remove_peer(p);
            self.peers.remove(&p);
        }
    }

    fn publish_status(&self) {
        let conf = self.raft.conf_state();
        let leader = self.raft.leader_id();
        let mut st = lock(&self.shared.status);
        st.role = self.raft.role();
        st.term = self.raft.term();
        st.leader = leader;
        st.leader_client_addr = leader.and_then(|l| self.addrs.get(&l)).map(|a| a.client.clone());
        st.commit = self.raft.commit_index();
        st.applied = self.raft.applied();
        st.last_index = self.raft.last_index();
        st.voters = conf.voters.iter().copied().collect();
        st.learners = conf.learners.iter().copied().collect();
    }
}

/// Snapshot payload: the address book of the applied configuration, then the event-log state.
fn encode_snapshot_data(addrs: &BTreeMap<NodeId, Addr>, state: &EventLogState) -> Bytes {
    let body = state.encode_snapshot();
    let mut out = BytesMut::with_capacity(body.len() + 64 * addrs.len() + 4);
    out.put_u32(addrs.len() as u32);
    for (id, a) in addrs {
        out.put_u64(*id);
        for s in [&a.raft, &a.client] {
            put_str16(&mut out, s);
        }
    }
    out.put_slice(&body);
    out.freeze()
}

fn decode_snapshot_data(
    dedup: DedupConfig,
    mut b: Bytes,
) -> Result<(BTreeMap<NodeId, Addr>, EventLogState), String> {
    let short = || "truncated address book".to_string();
    if b.remaining() < 4 {
        return Err(short());
    }
    let n = b.get_u32();
    let mut book = BTreeMap::new();
    for _ in 0..n {
        if b.remaining() < 8 {
            return Err(short());
        }
        let id = b.get_u64();
        let mut parts = [String::new(), String::new()];
        for p in &mut parts {
            *p = get_str16(&mut b, "address").map_err(|e| format!("address book: {e}"))?;
        }
        let [raft, client] = parts;
        book.insert(id, Addr { raft, client });
    }
    let state = EventLogState::decode_snapshot(dedup, b).map_err(|e| e.to_string())?;
    Ok((book, state))
}
