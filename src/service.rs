//! The seam between ingest, node and pipeline: what ingest asks of a node ([`EventService`]),
//! what a node runs over its committed events while it leads ([`Processing`], started through a
//! [`StartProcessing`]), and the types they exchange. `ingest`, `node` and `pipeline` depend on this
//! module, never on each other: ingest builds error frames from [`ServiceError`], the wire's admin
//! request converts to [`AdminCommand`], and the server assembly (`server.rs`) plugs the pipeline
//! into the node.

use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::consumers::{ConsumerError, ConsumerPosition, OffsetCommit};
use crate::event::{Event, Priority, StoredEvent};
use crate::rt::NodeClock;

/// Why a whole publish or fetch could not be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    #[error("not the leader{}", leader.as_deref().map(|l| format!(" (leader at {l})")).unwrap_or_default())]
    NotLeader { leader: Option<String> },
    #[error("overloaded, retry after {retry_after_ms} ms")]
    Overloaded { retry_after_ms: u32 },
    #[error("shutting down")]
    ShuttingDown,
    #[error("unavailable: {reason}; retry after {retry_after_ms} ms with the same idempotency key")]
    Unavailable { retry_after_ms: u32, reason: String },
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("internal error: {0}")]
    Internal(String),
    /// A consumer commit was refused (bad name or topic, past the end, too many consumers).
    #[error("{0}")]
    Consumer(#[from] ConsumerError),
    /// A read below the first retained offset, or a publish into a full `discard = "new"` topic
    /// (the message says which; a read's says "first available is N").
    #[error("{0}")]
    OutOfRange(String),
}

/// Where one published event ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub topic: Arc<str>,
    pub offset: u64,
    /// True if an earlier publish with the same idempotency key stored it (at `offset`).
    pub duplicate: bool,
}

/// A slice of a topic log.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchReply {
    pub events: Vec<StoredEvent>,
    /// Offset to fetch next.
    pub next_offset: u64,
    /// One past the last stored offset of the topic.
    pub end_offset: u64,
}

/// Options of [`EventService::read`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Confirm with the leader (ReadIndex) that the answer includes everything committed before
    /// the read began.
    pub linearizable: bool,
    /// If nothing is at `offset` yet, wait up to this long for it (long poll).
    pub wait_ms: u32,
}

/// A cluster administration command (the wire's admin request, converted by ingest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    /// Role, term and members, as text.
    Status,
    /// Add a node: learner first, voter once caught up.
    AddNode { id: u64, raft_addr: String, client_addr: String },
    /// Remove a node (the leader included).
    RemoveNode { id: u64 },
    /// Hand leadership to another voter.
    TransferLeader { id: u64 },
    /// Topics with their sizes, offsets and retention settings, as JSON.
    Topics,
}

/// What ingest needs from a node: order and store events, read them back.
pub trait EventService: Send + Sync + 'static {
    /// Stores `events` in order and says where each went; the future resolves only once they are
    /// stored (durably, for a durable node). All events succeed or the call fails as a whole.
    ///
    /// Ordering contract: the batch's place in the log is fixed when `publish` is *called*, not
    /// when the future is first polled — batches from one connection are stored in call order.
    fn publish(
        &self,
        events: Vec<Event>,
    ) -> impl Future<Output = Result<Vec<Appended>, ServiceError>> + Send + 'static + use<Self>;

    /// Reads up to `max` committed events of `topic` from `offset`. Sees every batch whose
    /// `publish` was called before this call and has completed.
    fn fetch(
        &self,
        topic: String,
        offset: u64,
        max: usize,
    ) -> impl Future<Output = Result<FetchReply, ServiceError>> + Send + 'static + use<Self>;

    /// A fetch with options (see [`ReadOptions`]). The default ignores them: a single node's
    /// reads are always current, and it answers at once instead of waiting.
    fn read(
        &self,
        topic: String,
        offset: u64,
        max: usize,
        opts: ReadOptions,
    ) -> impl Future<Output = Result<FetchReply, ServiceError>> + Send + 'static + use<Self> {
        let _ = opts;
        self.fetch(topic, offset, max)
    }

    /// Cluster administration; a node without a cluster does not support it.
    fn admin(
        &self,
        cmd: AdminCommand,
    ) -> impl Future<Output = Result<String, ServiceError>> + Send + 'static + use<Self> {
        let _ = cmd;
        std::future::ready(Err(ServiceError::Unsupported("this node is not part of a cluster".into())))
    }

    /// Records a named consumer's position once it is committed (durable on a majority);
    /// resolves to the position now recorded. A node without consumers does not support it.
    fn commit_offset(
        &self,
        commit: OffsetCommit,
    ) -> impl Future<Output = Result<u64, ServiceError>> + Send + 'static + use<Self> {
        let _ = commit;
        std::future::ready(Err(ServiceError::Unsupported("this node keeps no consumer positions".into())))
    }

    /// Named consumers (all, or those called `name`) with their committed positions, as this
    /// node has applied them.
    fn consumers(&self, name: Option<String>) -> Result<Vec<ConsumerPosition>, ServiceError> {
        let _ = name;
        Err(ServiceError::Unsupported("this node keeps no consumer positions".into()))
    }

    /// The service's own metrics in the Prometheus text format (appended to `GET /metrics`).
    fn render_metrics(&self) -> String {
        String::new()
    }

    /// Whether this member should receive traffic (`GET /ready`): `Err` says why not. The default
    /// (a node without a cluster) is always ready.
    fn readiness(&self) -> Result<(), String> {
        Ok(())
    }

    /// This node's id (reported to clients in HELLO).
    fn node_id(&self) -> u64;
}

/// Processed positions and handled idempotency keys: where processing has got to, so a new
/// leader resumes there. The Raft node records them as replicated entries.
pub trait Checkpoint: Send + Sync + std::fmt::Debug {
    /// Per topic, the offset to resume from: every event below it has been fully handled.
    fn positions(&self) -> BTreeMap<String, u64>;
    /// Records that every event of `topic` below `next_offset` has been handled (never moves back).
    fn record_position(&self, topic: &str, next_offset: u64);
    /// True if the transactional effect of this idempotency key already happened.
    fn is_handled(&self, key: (u64, u64)) -> bool;
    /// Records that the transactional effect of this key happened.
    fn mark_handled(&self, key: (u64, u64));
    /// Makes what was recorded so far durable (called on every control-loop tick and at shutdown).
    fn flush(&self) {}
}

/// Publishes events without waiting for the outcome (a processing stage's alerts go back into the
/// log through it). The place in the log is fixed when it is called.
pub trait EventSink: Send + Sync + std::fmt::Debug {
    fn publish_detached(&self, events: Vec<Event>);
}

/// Room a processing stage reserved for a publish before it was stored; given back when dropped
/// unless its events were submitted with it.
pub struct Admission(Box<dyn Any + Send>);

impl Admission {
    pub fn new<T: Any + Send>(reservation: T) -> Self {
        Admission(Box::new(reservation))
    }

    /// The reservation, if it is a `T` (the stage that made it knows its type).
    pub fn downcast<T: Any>(self) -> Result<T, Admission> {
        self.0.downcast::<T>().map(|b| *b).map_err(Admission)
    }
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Admission")
    }
}

/// A pipeline topic table and its default priority.
pub type Routes = (BTreeMap<String, Priority>, Priority);

/// What a leader runs over its committed events (the event pipeline): admission before a publish
/// is proposed, then every newly committed event in commit order.
pub trait Processing: Send + Sync + std::fmt::Debug {
    /// Admission without waiting: `Ok(None)` if the publish would have to wait for room.
    fn try_admit(&self, events: &[Event]) -> Result<Option<Admission>, ServiceError>;
    /// Admission, waiting for room up to the stage's own limit.
    fn admit<'a>(&'a self, events: &'a [Event]) -> BoxFuture<'a, Result<Admission, ServiceError>>;
    /// Committed events that were admitted here, with their admission.
    fn submit_admitted(&self, events: Vec<StoredEvent>, admission: Admission);
    /// Committed events that were not admitted here (resumed, or published elsewhere).
    fn submit(&self, events: Vec<StoredEvent>);
    /// Replaces the topic table without a restart.
    fn reload_routes(&self, topics: &BTreeMap<String, Priority>, default: Priority);
    /// The stage's metrics in the Prometheus text format.
    fn render_metrics(&self) -> String;
    /// Stops at once without draining (leadership lost); returns how many events were queued.
    fn abort(&self) -> usize;
    /// Stops admitting, drains, and waits for the stage's tasks.
    fn shutdown(&self) -> BoxFuture<'_, ()>;
}

/// What a node hands a [`StartProcessing`] when it starts leading.
#[derive(Debug, Clone)]
pub struct ProcessingContext {
    /// The node's id (for logs).
    pub node: u64,
    pub clock: NodeClock,
    /// Where the new stage resumes from, and records its progress.
    pub checkpoint: Arc<dyn Checkpoint>,
    /// Publishes through this node (alerts become events on a topic).
    pub publisher: Arc<dyn EventSink>,
    /// A topic table loaded after start, overriding the configured one.
    pub routes: Option<Routes>,
}

/// Starts the processing stage of a member each time it becomes leader.
pub trait StartProcessing: Send + Sync + std::fmt::Debug {
    fn start(&self, ctx: ProcessingContext) -> Result<Arc<dyn Processing>, String>;
}
