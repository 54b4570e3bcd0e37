//! Catching up an installed snapshot's topic data: the driver's side of the store's catch-up
//! protocol (`store/catchup.rs`).
//!
//! A snapshot records only the topic files' metadata. A member that installs one from the leader
//! opens its topic files as they are ([`TopicSet::open_partial`]) and, while data is missing,
//! pulls it in chunks of at most `cluster.catchup_chunk_bytes` by [`Body::RecordsRequest`]: one request in
//! flight, to the leader first, to the next member after a refusal or [`REQUEST_TIMEOUT`] (lossy
//! links drop frames). Meanwhile the core holds back applying and campaigning
//! ([`Raft::set_catching_up`]; it still appends, acks and votes) and fetches are answered
//! "unavailable, catching up". A marker file naming the snapshot's index is written durably
//! before the snapshot is saved and removed once the pulled data is synced: a restart that finds
//! it resumes the pull and never asks again for what is already on disk.
//!
//! Any member answers requests from its own topic files ([`serve_records`]), one bounded chunk
//! per request, except while it is catching up itself.
//!
//! Out of file descriptors (EMFILE/ENFILE) — opening the snapshot's topic files, a segment roll
//! while appending a pulled chunk, the directory sync that completes the pull — is not fatal:
//! a failed open wrote nothing, so the same step is tried again with the backoff of a stalled
//! round (`persist.rs`), reported the same way (`/ready` fails, `esc_storage_stalled` is 1).
//! The chunk whose append failed is asked for again.

use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::metrics::Counter;
use crate::raft::message::{Body, Message, RecordsResult};
use crate::store::{CatchUp, serve_records};

/// The file naming the snapshot whose data is being pulled (its index, as one record).
const MARKER: &str = "catchup.target";
/// Where each member listens, as a snapshot records it.
type Book = BTreeMap<NodeId, Addr>;
/// The pull to do, and each topic's first offset as the snapshot records it.
type Pull = (CatchUp, BTreeMap<String, u64>);

/// An unanswered request is asked again, of the next member, after this long.
const REQUEST_TIMEOUT: Duration = Duration::from_millis(1000);

/// Counters for `/metrics` and the simulator.
#[derive(Debug, Default)]
pub(super) struct CatchUpStats {
    installs: Counter,
    resumed: Counter,
    completed: Counter,
    bytes: Counter,
    chunks: Counter,
    restarts: Counter,
    active: AtomicBool,
}

impl CatchUpStats {
    /// Counters at start: `active` if an interrupted install resumes (reads are refused at once).
    pub(super) fn new(active: bool) -> Self {
        CatchUpStats { active: AtomicBool::new(active), ..CatchUpStats::default() }
    }
}

/// What a member's snapshot installs did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CatchUpCounters {
    /// Snapshots installed from a leader.
    pub installs: u64,
    /// Installs interrupted by a restart and resumed.
    pub resumed: u64,
    /// Installs whose data is complete.
    pub completed: u64,
    /// Record bytes pulled.
    pub bytes: u64,
    /// Chunks pulled.
    pub chunks: u64,
    /// Topic pulls restarted at a source's newer first offset (retention moved it meanwhile).
    pub restarts: u64,
    /// Pulling now.
    pub catching_up: bool,
}

impl CatchUpCounters {
    /// Adds another member's (or incarnation's) counters; `catching_up` if either is.
    pub fn add(&mut self, o: &CatchUpCounters) {
        self.installs += o.installs;
        self.resumed += o.resumed;
        self.completed += o.completed;
        self.bytes += o.bytes;
        self.chunks += o.chunks;
        self.restarts += o.restarts;
        self.catching_up |= o.catching_up;
    }
}

/// An install whose topic data is being pulled.
pub(super) struct Install {
    index: Index,
    plan: CatchUp,
    /// Each topic's first offset as the snapshot records it.
    firsts: BTreeMap<String, u64>,
    /// When this incarnation sent its first request.
    started: Option<Duration>,
    asked: Option<Asked>,
    next_req_id: u64,
    /// Which member to ask (moved on after a refusal or a timeout).
    turn: usize,
    resumed: bool,
    /// A topic file could not be written: the member stops at its next round.
    failed: Option<StoreError>,
    /// Out of descriptors: the pull waits until then (see [`Driver::catch_up_waits`]).
    waiting: Option<persist::FdWait>,
}

/// The request in flight.
struct Asked {
    req_id: u64,
    to: NodeId,
    deadline: Duration,
}

impl Install {
    fn new(index: Index, (plan, firsts): Pull, resumed: bool) -> Self {
        Install {
            index,
            plan,
            firsts,
            started: None,
            asked: None,
            next_req_id: 1,
            turn: 0,
            resumed,
            failed: None,
            waiting: None,
        }
    }
}

/// Records, durably, that the data of the snapshot at `index` is about to be pulled.
pub(super) fn mark(disk: &Arc<dyn Disk>, index: Index) -> Result<(), StoreError> {
    let mut b = Vec::new();
    crate::record::append(&mut b, &index.to_be_bytes());
    Ok(disk.write_atomic(MARKER, &b)?)
}

/// The index a marker names, if there is one that reads back.
fn read_marker(disk: &Arc<dyn Disk>) -> Result<Option<Index>, StoreError> {
    let b = match disk.read(MARKER) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    // Written atomically: anything unreadable is a bug or outside damage; ignored (logged).
    match crate::record::read_at(&b, 0).ok().and_then(|(p, _)| <[u8; 8]>::try_from(p).ok()) {
        Some(ix) => Ok(Some(u64::from_be_bytes(ix))),
        None => {
            tracing::warn!(file = MARKER, "unreadable catch-up marker ignored");
            Ok(None)
        }
    }
}

fn clear_marker(disk: &Arc<dyn Disk>) -> Result<(), StoreError> {
    match disk.remove(MARKER) {
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e.into()),
        Ok(()) => Ok(disk.sync_dir()?),
    }
}

/// A snapshot's address book and state with its topic files opened as they are on `disk`, and
/// the plan to pull what they lack. Out of descriptors is [`RoundError::Topics`] (nothing
/// written: try again), anything else [`RoundError::Snapshot`].
fn decode_partial(
    dedup: DedupConfig,
    data: Bytes,
    disk: &Arc<dyn Disk>,
    cfg: StoreConfig,
) -> Result<(Book, EventLogState, Pull), RoundError> {
    let mut b = data;
    let book = decode_address_book(&mut b).map_err(RoundError::Snapshot)?;
    let (mut plan, mut exhausted) = (None, None);
    let state = EventLogState::decode_snapshot_with(dedup, b, |meta| {
        let (set, p) = TopicSet::open_partial(disk.clone(), cfg, meta).map_err(|e| {
            if !e.is_fd_exhaustion() {
                return e;
            }
            let why = StoreError::Config(e.to_string());
            exhausted = Some(e);
            why
        })?;
        plan = Some((p, meta.topics.iter().map(|t| (t.name.clone(), t.first)).collect()));
        Ok(set)
    });
    let state = match (state, exhausted) {
        (Ok(state), _) => state,
        (Err(_), Some(e)) => return Err(RoundError::Topics(e)),
        (Err(e), None) => return Err(RoundError::Snapshot(e.to_string())),
    };
    let plan = plan.ok_or_else(|| RoundError::Snapshot("no topic metadata in the snapshot".into()))?;
    Ok((book, state, plan))
}

/// At start, with a saved snapshot: its address book and state, and the install to go on with if
/// one was interrupted (the marker names this snapshot).
pub(super) fn recover(
    opts: &ClusterOptions,
    disk: &Arc<dyn Disk>,
    snap: &Snapshot,
) -> Result<(Book, EventLogState, Option<Install>), ClusterError> {
    // A marker naming another snapshot was written before one that was never saved; the files
    // may still lack data of the saved one all the same: its own pull may have been under way
    // when the newer install replaced its marker (seed file cluster-56). So any marker resumes
    // the saved snapshot's pull; with nothing missing it completes at once.
    if let Some(marked) = read_marker(disk)? {
        let index = snap.meta.index;
        if marked != index {
            mark(disk, index)?;
        }
        let (book, state, plan) = decode_partial(opts.dedup, snap.data.clone(), disk, opts.store)
            .map_err(|e| ClusterError::Snapshot(e.to_string()))?;
        tracing::info!(node = opts.node_id, index, marked, "resuming the pull of a snapshot's topic data");
        return Ok((book, state, Some(Install::new(index, plan, true))));
    }
    let (book, state) = decode_snapshot_data(opts.dedup, snap.data.clone(), disk, opts.store)
        .map_err(ClusterError::Snapshot)?;
    Ok((book, state, None))
}

/// Sets the core up for catch-up: every install from a leader starts it, and a resumed one is
/// under way already.
pub(super) fn prepare(raft: &mut Raft, resume: &Option<Install>) {
    raft.set_catch_up_on_install(true);
    raft.set_catching_up(resume.is_some());
}

impl Driver {
    /// Replaces the state by a leader's snapshot (saved already, after [`mark`]): the topic files
    /// are opened as they are and what they lack is pulled before anything after the snapshot is
    /// applied. A snapshot that cannot be read stops the member; a restart resumes it. Out of
    /// descriptors, nothing changed here: the caller keeps the round and tries again.
    pub(super) fn install(&mut self, snap: &Snapshot) -> Result<(), RoundError> {
        let dedup = lock(&self.shared.state).dedup_config();
        let (book, mut state, plan) = decode_partial(dedup, snap.data.clone(), &self.disk, self.store_cfg)
            .inspect_err(|e| {
                if !e.is_fd_exhaustion() {
                    // The leader's own state machine produced it: a bug or a version skew.
                    tracing::error!(node = self.id, error = %e, "cannot install the leader's snapshot");
                }
            })?;
        self.addrs.install(book);
        let mut held = lock(&self.shared.state);
        state.keep_local_limits(&held);
        *held = state;
        drop(held);
        self.last_snapshot = snap.meta.index;
        self.log_bytes_since_snapshot = 0;
        self.shared.catchup.installs.inc();
        tracing::info!(node = self.id, index = snap.meta.index, "installed snapshot from the leader");
        // Nothing proposed here before the snapshot can still be answered from this node's log.
        for (_, p) in std::mem::take(&mut self.pending) {
            let _ = p.reply.send(Err(self.not_leader()));
        }
        // Request ids run on across installs, so an answer to an older one is never taken.
        let next_req_id = self.catchup.as_ref().map_or(1, |i| i.next_req_id);
        self.catchup = Some(Install { next_req_id, ..Install::new(snap.meta.index, plan, false) });
        self.shared.catchup.active.store(true, Ordering::Relaxed);
        self.continue_catch_up();
        Ok(())
    }

    /// Sends the next request if none is in flight (or the last one timed out), or completes
    /// the install when nothing is missing.
    pub(super) fn continue_catch_up(&mut self) {
        let now = self.clock.mono();
        let Some(inst) = &mut self.catchup else { return };
        self.shared.catchup.active.store(true, Ordering::Relaxed);
        if inst.failed.is_some()
            || inst.asked.as_ref().is_some_and(|a| a.deadline > now)
            || inst.waiting.as_ref().is_some_and(|w| w.retry_at() > now)
        {
            return;
        }
        if let Some(a) = inst.asked.take() {
            tracing::debug!(node = self.id, peer = a.to, req = a.req_id, "records request timed out");
            inst.turn += 1;
        }
        if inst.started.is_none() {
            inst.started = Some(now);
            if inst.resumed {
                self.shared.catchup.resumed.inc();
            }
            tracing::info!(
                node = self.id,
                index = inst.index,
                resumed = inst.resumed,
                "pulling the snapshot's topic data"
            );
        }
        if inst.plan.is_done() {
            return self.finish_catch_up();
        }
        let mut sources: Vec<NodeId> = self.raft.leader_id().into_iter().collect();
        sources.extend(self.raft.conf_state().members().filter(|&m| Some(m) != self.raft.leader_id()));
        sources.retain(|&m| m != self.id);
        let Some(&to) = sources.get(inst.turn % sources.len().max(1)) else { return };
        let req_id = inst.next_req_id;
        inst.next_req_id += 1;
        let Some(body) = inst.plan.next_request(req_id, self.catchup_chunk_bytes) else { return };
        inst.asked = Some(Asked { req_id, to, deadline: now + REQUEST_TIMEOUT });
        if let Some(t) = &self.transport {
            t.send(Message { from: self.id, to, term: self.raft.term(), body });
        }
    }

    /// A catch-up message from a peer (the core never sees these).
    pub(super) fn step_records(&mut self, m: Message) {
        match m.body {
            Body::RecordsRequest { .. } => self.serve_records_request(&m),
            Body::Records { req_id, result } => self.on_records(req_id, result),
            _ => {}
        }
    }

    /// Answers from this member's topic files: one bounded chunk, read now. A member that is
    /// catching up itself has none to give.
    fn serve_records_request(&self, m: &Message) {
        let reply = match (&self.catchup, &m.body) {
            (Some(_), Body::RecordsRequest { req_id, topic, .. }) => Some(Message {
                from: m.to,
                to: m.from,
                term: m.term,
                body: Body::Records {
                    req_id: *req_id,
                    result: RecordsResult::NotAvailable { topic: topic.clone() },
                },
            }),
            _ => serve_records(lock(&self.shared.state).store(), m),
        };
        if let (Some(reply), Some(t)) = (reply, &self.transport) {
            t.send(reply);
        }
    }

    /// The answer to the request in flight (any other is stale or duplicated: dropped).
    fn on_records(&mut self, req_id: u64, result: RecordsResult) {
        let Some(inst) = &mut self.catchup else { return };
        if inst.asked.as_ref().map(|a| a.req_id) != Some(req_id) {
            return;
        }
        let asked = inst.asked.take();
        let (bytes, chunks, restarts) = (inst.plan.bytes(), inst.plan.chunks(), inst.plan.restarts());
        let r = inst.plan.on_records(lock(&self.shared.state).store_mut(), result);
        self.shared.catchup.bytes.add(inst.plan.bytes() - bytes);
        self.shared.catchup.chunks.add(inst.plan.chunks() - chunks);
        self.shared.catchup.restarts.add(inst.plan.restarts() - restarts);
        match r {
            Ok(()) => self.catch_up_resumes(),
            Err(e) if e.is_refusal() => {
                let peer = asked.map(|a| a.to);
                tracing::debug!(node = self.id, peer, error = %e, "records answer refused; asking another member");
                inst.turn += 1;
            }
            // Nothing of the chunk was written: it is asked for again after the backoff.
            Err(e) if e.is_fd_exhaustion() => return self.catch_up_waits(&e),
            Err(e) => {
                tracing::error!(node = self.id, error = %e, "cannot write pulled records");
                inst.failed = Some(e);
                return;
            }
        }
        self.continue_catch_up();
        self.release_core();
    }

    /// Every pulled record is durable: the marker goes and applying resumes.
    fn finish_catch_up(&mut self) {
        let Some(inst) = &self.catchup else { return };
        let done = complete_state(&mut lock(&self.shared.state), &inst.firsts)
            .and_then(|()| clear_marker(&self.disk));
        self.catch_up_done(done);
    }

    /// The end of [`Self::finish_catch_up`]: the install is over, or waits for descriptors, or
    /// failed.
    fn catch_up_done(&mut self, done: Result<(), StoreError>) {
        if done.is_ok() {
            self.catch_up_resumes();
        }
        let Some(mut inst) = self.catchup.take() else { return };
        if let Err(e) = done {
            if e.is_fd_exhaustion() {
                // Syncing again is safe: only an open failed, no write or fsync.
                self.catchup = Some(inst);
                return self.catch_up_waits(&e);
            }
            tracing::error!(node = self.id, error = %e, "cannot make pulled records durable");
            inst.failed = Some(e);
            self.catchup = Some(inst);
            return;
        }
        self.shared.catchup.completed.inc();
        self.shared.catchup.active.store(false, Ordering::Relaxed);
        let ms = inst.started.map_or(0, |s| self.clock.mono().saturating_sub(s).as_millis() as u64);
        tracing::info!(
            node = self.id,
            index = inst.index,
            bytes = inst.plan.bytes(),
            chunks = inst.plan.chunks(),
            restarts = inst.plan.restarts(),
            ms,
            "snapshot's topic data complete; applying resumes"
        );
    }

    /// Out of descriptors while pulling (nothing written): the same step is tried again after
    /// the backoff of a stalled round, and `/ready` and `esc_storage_stalled` say so meanwhile.
    fn catch_up_waits(&mut self, e: &StoreError) {
        let now = self.clock.mono();
        let Some(inst) = &mut self.catchup else { return };
        let w = inst.waiting.get_or_insert_with(|| {
            tracing::warn!(
                node = self.id,
                error = %e,
                "out of file descriptors: the pull of the snapshot's records waits and is retried"
            );
            persist::FdWait::new(now)
        });
        w.failed(now);
        self.shared.fd_exhaustion.fetch_add(1, Ordering::Relaxed);
        self.shared.storage_stalled.store(true, Ordering::Relaxed);
    }

    /// A step of the pull went through: a wait for descriptors, if there was one, is over.
    fn catch_up_resumes(&mut self) {
        let Some(w) = self.catchup.as_mut().and_then(|i| i.waiting.take()) else { return };
        self.shared.storage_stalled.store(self.is_stalled(), Ordering::Relaxed);
        let (attempts, waited) = w.waited(self.clock.mono());
        tracing::info!(
            node = self.id,
            attempts,
            waited_ms = waited.as_millis() as u64,
            "file descriptors free again: the pull of the snapshot's records goes on"
        );
    }

    /// True while the pull of a snapshot's records waits for descriptors.
    pub(super) fn catch_up_waiting(&self) -> bool {
        self.catchup.as_ref().is_some_and(|i| i.waiting.is_some())
    }

    /// Lets the core apply again once the install is complete (call while it is idle).
    pub(super) fn release_core(&mut self) {
        if (self.catchup.is_none() || crate::planted!(ApplyDuringCatchUp)) && self.raft.is_catching_up() {
            self.raft.set_catching_up(false);
        }
    }

    /// A topic-file failure during the pull, to stop the member with.
    pub(super) fn catch_up_failure(&mut self) -> Result<(), RoundError> {
        match self.catchup.as_mut().and_then(|i| i.failed.take()) {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

/// Makes the pulled records durable, and counts again the bytes of each topic that a source's
/// retention made start later than the snapshot says.
fn complete_state(state: &mut EventLogState, firsts: &BTreeMap<String, u64>) -> Result<(), StoreError> {
    if !crate::planted!(CatchUpDoneBeforeSync) {
        state.sync_topics()?;
    }
    recount_restarted(state, firsts)
}

/// Counts again the bytes of each topic held from later than the snapshot's first offset
/// (`firsts`): a pull restarted there, and the snapshot's count still holds what it skipped.
pub(super) fn recount_restarted(
    state: &mut EventLogState,
    firsts: &BTreeMap<String, u64>,
) -> Result<(), StoreError> {
    for (topic, first) in firsts {
        if state.first_offset(topic) > *first {
            state.recount_bytes(topic)?;
        }
    }
    Ok(())
}

impl ClusterNode {
    /// What this member's snapshot installs did so far.
    pub fn catch_up_counters(&self) -> CatchUpCounters {
        let s = &self.shared.catchup;
        CatchUpCounters {
            installs: s.installs.get(),
            resumed: s.resumed.get(),
            completed: s.completed.get(),
            bytes: s.bytes.get(),
            chunks: s.chunks.get(),
            restarts: s.restarts.get(),
            catching_up: s.active.load(Ordering::Relaxed),
        }
    }

    /// The answer to a read while this member still pulls a snapshot's data (never partial data).
    pub(super) fn refuse_while_catching_up(&self) -> Result<(), ServiceError> {
        if self.shared.catchup.active.load(Ordering::Relaxed) {
            return Err(unavailable("catching up: this member is still pulling the data of a snapshot"));
        }
        Ok(())
    }
}

/// The catch-up counters and gauge in the Prometheus text format.
pub(super) fn render(s: &CatchUpStats) -> String {
    let mut out = String::new();
    for (name, help, v) in [
        ("esc_catchup_installs_total", "snapshots installed from a leader", s.installs.get()),
        ("esc_catchup_resumed_total", "snapshot installs resumed after a restart", s.resumed.get()),
        ("esc_catchup_completed_total", "snapshot installs whose topic data is complete", s.completed.get()),
        ("esc_catchup_bytes_total", "topic record bytes pulled for snapshot installs", s.bytes.get()),
        ("esc_catchup_chunks_total", "record chunks pulled for snapshot installs", s.chunks.get()),
        (
            "esc_catchup_restarts_total",
            "topic pulls restarted at a newer first offset (retention moved it meanwhile)",
            s.restarts.get(),
        ),
    ] {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"));
    }
    let (name, v) = ("esc_catchup_active", u64::from(s.active.load(Ordering::Relaxed)));
    out.push_str(&format!(
        "# HELP {name} 1 while this member pulls a snapshot's topic data\n# TYPE {name} gauge\n{name} {v}\n"
    ));
    out
}
