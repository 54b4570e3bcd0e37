//! The leader's retention duty: it proposes its configured topic settings (when it leads and they
//! differ from the replicated ones) and a `Trim` for every topic the replicated settings say is
//! over its limits. Followers' configs never decide: they only apply what the leader proposed.

use super::*;
use crate::node::TopicSettings;

/// What this leader has proposed and not yet seen applied (reset with each new term).
#[derive(Debug, Default)]
pub(super) struct RetentionDuty {
    term: Term,
    /// Index of a proposed `TopicSettings` entry not yet applied.
    settings_at: Option<Index>,
    /// Per topic the highest `before` proposed in this term.
    trims: BTreeMap<String, u64>,
}

impl ClusterNode {
    /// The topic settings from this member's config (at start and on reload). They take effect
    /// when this member leads: it proposes them, and every replica applies them.
    pub fn set_topic_settings(&self, settings: TopicSettings) {
        *lock(&self.shared.topic_config) = Some(settings);
    }
}

impl Driver {
    /// Once per tick, on a leader that has applied its first entry of the term.
    pub(super) fn retention_duty(&mut self) {
        let term = self.raft.term();
        if self.raft.role() != Role::Leader || self.leader_since.is_none_or(|i| self.raft.applied() < i) {
            return;
        }
        if self.retention.term != term {
            self.retention = RetentionDuty { term, ..RetentionDuty::default() };
        }
        let applied = self.raft.applied();
        if self.retention.settings_at.is_some_and(|i| i <= applied) {
            self.retention.settings_at = None;
        }
        let configured = lock(&self.shared.topic_config).clone();
        let (differs, due) = {
            let state = lock(&self.shared.state);
            let differs = configured.filter(|c| c != state.topic_settings());
            // A read failure only delays trims (a proposal, not state): retried next time.
            let due = state.trims_due().unwrap_or_else(|e| {
                tracing::warn!(node = self.id, error = %e, "cannot read the topics to find retention trims");
                Vec::new()
            });
            (differs, due)
        };
        if let Some(settings) = differs
            && self.retention.settings_at.is_none()
        {
            match self.raft.propose(Command::TopicSettings(settings).encode()) {
                Ok(index) => self.retention.settings_at = Some(index),
                Err(e) => tracing::debug!(node = self.id, error = %e, "topic settings not proposed"),
            }
        }
        for (topic, before) in due {
            if self.retention.trims.get(&topic).is_some_and(|b| *b >= before) {
                continue;
            }
            match self.raft.propose(Command::Trim { topic: topic.clone(), before }.encode()) {
                Ok(_) => {
                    tracing::debug!(node = self.id, topic, before, "retention trim proposed");
                    self.retention.trims.insert(topic, before);
                }
                Err(e) => tracing::debug!(node = self.id, error = %e, "retention trim not proposed"),
            }
        }
    }
}
