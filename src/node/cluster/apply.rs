//! Applying committed entries to the state machine (and answering their proposers), and
//! compacting the log behind a snapshot (taken in `snapshot.rs`; a leader's is installed in
//! `catchup.rs`).

use super::*;

/// Applying stopped before the entry at `index` because a topic file could not be opened for
/// want of descriptors; that entry changed nothing and is applied again after a backoff.
pub(super) struct ApplyStop {
    pub(super) index: Index,
    pub(super) error: StoreError,
}

/// An applied entry's answer to its proposer: index, term, result.
type Answer = (Index, Term, Result<Vec<Appended>, ServiceError>);

impl Driver {
    /// Applies committed entries in order, answering their proposers.
    ///
    /// An entry whose topic files cannot be opened for want of descriptors stops applying there
    /// ([`ApplyStop`]): the state machine is left exactly as after the entry before it
    /// (`EventLogState` appends all or nothing in that case, `store/append.rs`), and the driver
    /// hands that entry to apply again once its backoff is over — never skipped, never applied
    /// twice. This is safe to retry because nothing was written: an open that fails with
    /// EMFILE/ENFILE has no file to leave half-written and no page cache to lose. Every other
    /// topic-file failure (a write, an fsync) is fatal for the member, as for the WAL: after a
    /// failed fsync the kernel may have dropped the dirty pages and reports success the next
    /// time (fsyncgate), so such data is never retried blindly — the store is poisoned and the
    /// entries from here are applied again from the WAL after a restart.
    pub(super) fn apply(&mut self, entries: Vec<Entry>) -> Result<Option<ApplyStop>, StoreError> {
        let mut to_process: Vec<(Index, Vec<crate::event::StoredEvent>)> = Vec::new();
        let (answers, stop) = self.apply_entries(entries, &mut to_process)?;
        for (index, term, result) in answers {
            let Some(mut p) = self.pending.remove(&index) else { continue };
            // Another leader's entry at this index means ours was truncated.
            let ours = p.term == term;
            if let (true, Some(adm)) = (ours, p.admission.take())
                && let Some(pos) = to_process.iter().position(|(i, _)| *i == index)
                && let Some(pipeline) = &self.pipeline
            {
                let (_, events) = to_process.swap_remove(pos);
                pipeline.submit_admitted(events, adm);
            }
            let out = if ours { result } else { Err(unavailable("superseded by a new leader")) };
            let _ = p.reply.send(out);
        }
        if let Some(pipeline) = &self.pipeline {
            for (_, events) in to_process {
                if !events.is_empty() {
                    pipeline.submit(events);
                }
            }
        }
        self.shared.applied.notify_waiters();
        Ok(stop)
    }

    /// The state-machine side of [`Self::apply`]: each entry's effect and answer, up to an entry
    /// that cannot open its files.
    fn apply_entries(
        &mut self,
        entries: Vec<Entry>,
        to_process: &mut Vec<(Index, Vec<crate::event::StoredEvent>)>,
    ) -> Result<(Vec<Answer>, Option<ApplyStop>), StoreError> {
        let mut answers = Vec::with_capacity(entries.len());
        let mut state = lock(&self.shared.state);
        for e in entries {
            self.log_bytes_since_snapshot += e.data.len() as u64;
            let result = match e.kind {
                EntryKind::Normal => match self.apply_command(&mut state, &e, to_process) {
                    Ok(result) => result,
                    Err(error) if error.is_fd_exhaustion() => {
                        return Ok((answers, Some(ApplyStop { index: e.index, error })));
                    }
                    Err(error) => return Err(error),
                },
                EntryKind::Noop => Err(unavailable("superseded by a new leader")),
                EntryKind::ConfChange => {
                    if let Ok(ce) = ConfEntry::decode(&e.data) {
                        match ce.change.kind {
                            ConfChangeKind::Remove => self.addrs.applied_remove(ce.change.node, self.id),
                            _ => {
                                if let Some(a) = Addr::from_context(&ce.change.context) {
                                    self.addrs.applied_add(ce.change.node, a);
                                }
                            }
                        }
                    }
                    Err(unavailable("superseded by a membership change"))
                }
            };
            answers.push((e.index, e.term, result));
        }
        Ok((answers, None))
    }

    /// One committed command: its effect on the state machine and the answer to its proposer.
    fn apply_command(
        &self,
        state: &mut EventLogState,
        e: &Entry,
        to_process: &mut Vec<(Index, Vec<crate::event::StoredEvent>)>,
    ) -> Result<Result<Vec<Appended>, ServiceError>, StoreError> {
        Ok(match Command::decode(e.data.clone()) {
            Ok(Command::Publish { stamped_ms, events }) => {
                if crate::planted!(DedupExpiryLocalClock) {
                    state.expire_dedup_at(self.clock.wall_unix_ms());
                }
                // Newly stored events (not duplicates) go to the leader's pipeline.
                let mut fresh = Vec::new();
                let keep = self.pipeline.is_some().then_some(&mut fresh);
                // A full `discard = "new"` topic refuses the batch here, the same on every replica.
                match state.apply_publish_keeping(events, stamped_ms, keep) {
                    Ok(appended) => {
                        if self.pipeline.is_some() {
                            to_process.push((e.index, fresh));
                        }
                        Ok(appended)
                    }
                    Err(ApplyError::Store(err)) => return Err(err),
                    // A full `discard = "new"` topic: refused the same on every replica.
                    Err(refused) => Err(ServiceError::from(refused)),
                }
            }
            Ok(Command::CommitOffset(c)) => state
                .commit_offset(&c)
                .map(|next| vec![Appended { topic: c.topic.as_str().into(), offset: next, duplicate: false }])
                .map_err(ServiceError::Consumer),
            Ok(Command::Checkpoint { positions, handled }) => {
                state.apply_checkpoint(&positions, &handled);
                Err(unavailable("superseded by a pipeline checkpoint"))
            }
            Ok(Command::TopicSettings(settings)) => {
                state.apply_topic_settings(settings);
                Err(unavailable("superseded by topic settings"))
            }
            Ok(Command::Trim { topic, before }) => {
                state.apply_trim(&topic, before)?;
                Err(unavailable("superseded by a retention trim"))
            }
            Err(err) => {
                // Every replica skips it the same way, so the replicas stay equal.
                tracing::error!(node = self.id, index = e.index, error = %err, "undecodable entry skipped");
                Err(ServiceError::Internal(format!("entry {} could not be applied: {err}", e.index)))
            }
        })
    }

    /// Drops the log up to `snapshot_keep_entries` behind the snapshot at `applied`, or fewer
    /// if those hold more than `snapshot_keep_bytes`: the log in memory stays within about
    /// `snapshot_log_bytes` + `snapshot_keep_bytes` + one round, whatever an entry carries. The
    /// freed segment files are unlinked by a task off the round (see [`RaftStorage::compact_later`]).
    pub(super) fn compact_log(&mut self, applied: Index) -> Result<(), RoundError> {
        let sizes = self.raft.entries().iter().map(|e| (e.index, e.data.len() as u64));
        let keep = compaction_point(sizes, applied, self.snapshot_keep_entries, self.snapshot_keep_bytes);
        if keep > self.raft.first_index() {
            if let Err(e) = self.raft.compact(keep) {
                tracing::warn!(node = self.id, error = %e, "compaction refused");
            } else {
                let freed = self.storage.compact_later(keep)?;
                if !freed.is_empty() {
                    drop(crate::rt::spawn(async move { freed.run() }));
                }
            }
        }
        Ok(())
    }
}

/// Where to compact the log behind a snapshot at `applied`: the entries after it are at most
/// `keep_entries` and hold at most `keep_bytes` (`sizes`: each entry in memory, index and bytes).
fn compaction_point(
    sizes: impl DoubleEndedIterator<Item = (Index, u64)>,
    applied: Index,
    keep_entries: u64,
    keep_bytes: u64,
) -> Index {
    let mut point = applied.saturating_sub(keep_entries);
    let mut held = 0u64;
    for (index, bytes) in sizes.rev().skip_while(|&(i, _)| i > applied) {
        if index <= point {
            break;
        }
        held = held.saturating_add(bytes);
        if held > keep_bytes {
            point = index;
            break;
        }
    }
    point
}

/// A snapshot is due once this many entries, or bytes of entries, were applied since the last.
pub(super) fn snapshot_due(entries: u64, bytes: u64, every_entries: u64, every_bytes: u64) -> bool {
    entries >= every_entries || (entries > 0 && bytes >= every_bytes)
}

#[cfg(test)]
mod tests {
    use super::{compaction_point, snapshot_due};

    #[test]
    fn the_log_kept_behind_a_snapshot_is_bounded_in_entries_and_in_bytes() {
        // Entries 1..=100 of 10 bytes, then 101..=110 of 1,000.
        let sizes = || (1..=110u64).map(|i| (i, if i > 100 { 1_000 } else { 10 }));
        assert_eq!(compaction_point(sizes(), 90, 20, 1 << 20), 70, "by entries: 20 kept");
        assert_eq!(compaction_point(sizes(), 90, 20, 100), 80, "by bytes: 10 entries of 10 kept");
        assert_eq!(compaction_point(sizes(), 110, 1_000, 2_500), 108, "two big entries kept, not 1,000");
        assert_eq!(compaction_point(sizes(), 110, 1_000, 0), 110, "nothing kept");
        assert_eq!(compaction_point(sizes(), 5, 1_000, 1 << 20), 0, "short log: nothing to drop");
        // Entries after `applied` (not covered by the snapshot) are never counted.
        assert_eq!(compaction_point(sizes(), 100, 1_000, 150), 85);
    }

    #[test]
    fn a_snapshot_is_due_by_entries_or_by_bytes() {
        assert!(!snapshot_due(0, 0, 100, 1000));
        assert!(!snapshot_due(99, 999, 100, 1000));
        assert!(snapshot_due(100, 0, 100, 1000), "by count");
        assert!(snapshot_due(3, 1000, 100, 1000), "a few big entries");
        assert!(!snapshot_due(0, 5000, 100, 1000), "nothing applied since: nothing to snapshot");
    }
}
