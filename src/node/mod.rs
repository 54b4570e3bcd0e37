//! Composition of a server node: the service that ingest calls to publish and fetch.
//!
//! [`EventService`] is the seam between ingest and whatever orders events: today
//! [`LocalNode`] (one node, in memory); the Raft-replicated node implements the same trait.

pub mod cluster;
pub mod command;
pub mod dedup;
pub mod local;
pub mod state;

use std::future::Future;

pub use cluster::{ClusterError, ClusterNode, ClusterOptions, ClusterTask, RaftObserver, RoundView};
pub use dedup::{DedupConfig, DedupWindow};
pub use local::LocalNode;
pub use state::{Appended, EventLogState, FetchReply};

use crate::event::Event;
use crate::wire::{AdminRequest, ErrorCode, ErrorFrame};

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
}

impl ServiceError {
    /// The error frame a client receives.
    pub fn to_error_frame(&self) -> ErrorFrame {
        let mut f = ErrorFrame::new(ErrorCode::Internal, self.to_string());
        match self {
            ServiceError::NotLeader { leader } => {
                f.code = ErrorCode::NotLeader;
                f.leader = leader.clone().unwrap_or_default();
            }
            ServiceError::Overloaded { retry_after_ms } => {
                f.code = ErrorCode::Overloaded;
                f.retry_after_ms = *retry_after_ms;
            }
            ServiceError::ShuttingDown => {
                f.code = ErrorCode::Overloaded;
                f.retry_after_ms = 1000;
            }
            ServiceError::Unavailable { retry_after_ms, .. } => {
                f.code = ErrorCode::Unavailable;
                f.retry_after_ms = *retry_after_ms;
            }
            ServiceError::Unsupported(_) => f.code = ErrorCode::Unsupported,
            ServiceError::Internal(_) => {}
        }
        f
    }
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
        req: AdminRequest,
    ) -> impl Future<Output = Result<String, ServiceError>> + Send + 'static + use<Self> {
        let _ = req;
        std::future::ready(Err(ServiceError::Unsupported("this node is not part of a cluster".into())))
    }

    /// The service's own metrics in the Prometheus text format (appended to `GET /metrics`).
    fn render_metrics(&self) -> String {
        String::new()
    }

    /// This node's id (reported to clients in HELLO).
    fn node_id(&self) -> u64;
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
