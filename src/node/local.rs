//! `LocalNode`: a single node that orders events itself and keeps them in memory.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::consumers::{ConsumerPosition, OffsetCommit};
use crate::event::Event;
use crate::rt::NodeClock;

use super::{DedupConfig, EventLogState};
use crate::service::{Appended, EventService, FetchReply, ServiceError};

/// A single-node, in-memory event log. Clones share one log.
#[derive(Debug, Clone)]
pub struct LocalNode {
    id: u64,
    clock: NodeClock,
    state: Arc<Mutex<EventLogState>>,
}

impl LocalNode {
    /// An empty node that stamps events with `clock`'s wall time.
    pub fn new(id: u64, clock: NodeClock, dedup: DedupConfig) -> Self {
        LocalNode { id, clock, state: Arc::new(Mutex::new(EventLogState::new(dedup))) }
    }

    /// Locks the state (for inspection by tests and the simulator's checkers).
    pub fn state(&self) -> MutexGuard<'_, EventLogState> {
        // The state is only mutated inside `apply_batch`, which does not panic on any input;
        // a poisoned lock would mean a bug there, and the data is still the best we have.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl EventService for LocalNode {
    /// Stores the batch at the call (not when the future is polled), so call order is log order.
    fn publish(
        &self,
        events: Vec<Event>,
    ) -> impl Future<Output = Result<Vec<Appended>, ServiceError>> + Send + 'static + use<> {
        let stamp = self.clock.wall_unix_ms();
        let r = self.state().apply_publish(events, stamp);
        std::future::ready(r.map_err(ServiceError::from))
    }

    fn fetch(
        &self,
        topic: String,
        offset: u64,
        max: usize,
    ) -> impl Future<Output = Result<FetchReply, ServiceError>> + Send + 'static + use<> {
        let r = self.state().read(&topic, offset, max);
        std::future::ready(r.map_err(ServiceError::from))
    }

    fn commit_offset(
        &self,
        commit: OffsetCommit,
    ) -> impl Future<Output = Result<u64, ServiceError>> + Send + 'static + use<> {
        std::future::ready(self.state().commit_offset(&commit).map_err(ServiceError::Consumer))
    }

    fn consumers(&self, name: Option<String>) -> Result<Vec<ConsumerPosition>, ServiceError> {
        Ok(self.state().consumers(name.as_deref()))
    }

    fn node_id(&self) -> u64 {
        self.id
    }
}
