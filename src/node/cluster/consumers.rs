//! Consumer commits on a member: proposed through Raft like a publish and answered once applied,
//! with the position the state machine recorded.

use super::*;

impl ClusterNode {
    /// Commits a consumer position through the leader (see [`EventService::commit_offset`]).
    pub(super) fn commit(
        &self,
        commit: OffsetCommit,
    ) -> impl Future<Output = Result<u64, ServiceError>> + Send + 'static + use<> {
        // Refused before it costs a log entry; apply checks again (deterministically).
        let call = match crate::consumers::validate_commit(&commit) {
            Err(e) => Err(ServiceError::Consumer(e)),
            Ok(()) => {
                let (reply, rx) = oneshot::channel();
                Ok(self.call(Cmd::Commit { commit, reply }, rx))
            }
        };
        async move {
            let applied = call?.await?;
            applied
                .first()
                .map(|a| a.offset)
                .ok_or_else(|| ServiceError::Internal("a commit was applied without a result".into()))
        }
    }
}

impl Driver {
    /// Proposes a consumer commit; the reply waits in `pending` until the entry applies.
    pub(super) fn propose_commit(
        &mut self,
        commit: OffsetCommit,
        reply: Reply<Vec<Appended>>,
        now: Duration,
    ) {
        if self.raft.role() != Role::Leader {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        match self.raft.propose(Command::CommitOffset(commit).encode()) {
            Ok(index) => {
                let term = self.raft.term();
                let deadline = now + self.commit_timeout;
                let old =
                    self.pending.insert(index, PendingPublish { term, admission: None, deadline, reply });
                debug_assert!(old.is_none(), "two proposals at index {index}");
            }
            Err(e) => drop(reply.send(Err(self.propose_error(e)))),
        }
    }
}
