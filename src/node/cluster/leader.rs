//! The leader's processing stage (the pipeline): started once this leader has applied its first
//! entry, stopped when it no longer leads; its checkpoint is recorded in the replicated log.

use super::*;
use crate::node::handled_keys::HandledKeys;

/// Publishes through this member for its processing stage (alerts become events). It holds the
/// member weakly: the member owns the stage that owns this publisher, and a strong reference
/// would keep a stopped (or simulated-crashed) member alive forever.
#[derive(Debug)]
pub(super) struct MemberPublisher {
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
pub(super) struct ClusterCheckpoint {
    pub(super) cmds: mpsc::UnboundedSender<Cmd>,
    pub(super) inner: Mutex<CheckpointState>,
}

#[derive(Debug, Default)]
pub(super) struct CheckpointState {
    pub(super) positions: BTreeMap<String, u64>,
    /// The newest handled keys, as many as the replicated checkpoint keeps (a new leader knows
    /// no more); unbounded, this set held every key the pipeline ever handled (270 MB by 16 M events).
    pub(super) handled: HandledKeys,
    pub(super) dirty_positions: BTreeMap<String, u64>,
    pub(super) new_keys: Vec<(u64, u64)>,
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
            st.handled.forget_beyond_bound();
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

impl Driver {
    /// Starts the pipeline once this leader has applied its first entry, stops it (without
    /// draining: the next leader resumes from the checkpoint) when it is no longer leader.
    pub(super) fn manage_pipeline(&mut self, role_changed: bool) {
        let leading = self.raft.role() == Role::Leader;
        if role_changed {
            self.leader_since = leading.then(|| self.raft.last_index());
        }
        if !leading {
            self.stop_pipeline();
            return;
        }
        let Some(setup) = &self.pipeline_setup else { return };
        if self.pipeline.is_some() || self.leader_since.is_none_or(|i| self.raft.applied() < i) {
            return;
        }
        let state = lock(&self.shared.state);
        let progress = state.processing();
        // Retention may have removed events the last pipeline had not handled: they are gone for
        // good, so the position moves to the first held offset (and is recorded at the first flush).
        let mut positions = progress.positions.clone();
        let mut skipped = BTreeMap::new();
        for t in state.topics() {
            let (p, first) = (positions.entry(t.to_string()).or_default(), state.first_offset(t));
            if *p < first {
                *p = first;
                skipped.insert(t.to_string(), first);
            }
        }
        let checkpoint = Arc::new(ClusterCheckpoint {
            cmds: self.shared.cmds.clone(),
            inner: Mutex::new(CheckpointState {
                positions,
                handled: progress.handled().clone(),
                dirty_positions: skipped,
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
        let resumed = self.resume(&state, &pipeline);
        drop(state);
        tracing::info!(node = self.id, resumed, "pipeline started on the leader");
        *lock(&self.shared.pipeline) = Some(pipeline.clone());
        self.pipeline = Some(pipeline);
    }

    /// Submits every event stored after the replicated checkpoint to a new pipeline, read from
    /// the files a chunk at a time; returns how many.
    fn resume(&self, state: &EventLogState, pipeline: &Arc<dyn Processing>) -> usize {
        let progress = state.processing();
        let mut resumed = 0;
        for topic in state.topics().map(str::to_string).collect::<Vec<_>>() {
            let from = progress.positions.get(&topic).copied().unwrap_or(0);
            let mut chunk = Vec::with_capacity(1024);
            for e in state.events_from(&topic, from) {
                match e {
                    Ok(e) => chunk.push(e),
                    Err(err) => {
                        // The events stay stored; the next leader (or a restart) resumes them.
                        tracing::error!(node = self.id, topic, error = %err, "cannot read events to resume");
                        break;
                    }
                }
                if chunk.len() == 1024 {
                    resumed += chunk.len();
                    pipeline.submit(std::mem::take(&mut chunk));
                }
            }
            if !chunk.is_empty() {
                resumed += chunk.len();
                pipeline.submit(chunk);
            }
        }
        resumed
    }

    /// Stops this member's pipeline, if one runs: it no longer leads.
    fn stop_pipeline(&mut self) {
        if let Some(p) = self.pipeline.take() {
            *lock(&self.shared.pipeline) = None;
            let left = p.abort();
            tracing::info!(node = self.id, left, "pipeline stopped: no longer leader");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::state::MAX_HANDLED_KEYS;

    /// The leader's set of handled keys stays at the replicated checkpoint's bound: the newest
    /// keys are remembered, the oldest forgotten (it grew with every event before).
    #[test]
    fn the_leaders_handled_keys_are_bounded_like_the_replicated_ones() {
        let (cmds, _rx) = mpsc::unbounded_channel();
        let cp = ClusterCheckpoint { cmds, inner: Mutex::new(CheckpointState::default()) };
        let n = MAX_HANDLED_KEYS as u64 + 10;
        for s in 0..n {
            cp.mark_handled((1, s));
        }
        cp.mark_handled((1, n - 1)); // again: not a new key
        let st = lock(&cp.inner);
        assert_eq!(st.handled.len(), MAX_HANDLED_KEYS);
        assert_eq!(st.new_keys.len() as u64, n, "each new key is still recorded once in the log");
        drop(st);
        assert!(!cp.is_handled((1, 9)) && cp.is_handled((1, 10)) && cp.is_handled((1, n - 1)));
    }
}
