//! Applying committed entries to the state machine (and answering their proposers), taking
//! snapshots and compacting (a leader's snapshot is installed in `catchup.rs`).

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
                    Err(ApplyError::Full(full)) => Err(ServiceError::OutOfRange(full.to_string())),
                    Err(ApplyError::Store(err)) => return Err(err),
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

    /// Every `snapshot_entries` applied entries, or once those hold `snapshot_log_bytes`: makes
    /// the topic files durable, records a snapshot of metadata only (nothing here grows with the
    /// stored data), then deletes the topic segments it no longer needs and compacts the log.
    /// Logs how long each step took (`esc serve` at info level shows it).
    pub(super) fn maybe_snapshot(&mut self) -> Result<(), RoundError> {
        let applied = self.raft.applied();
        if !snapshot_due(
            applied.saturating_sub(self.last_snapshot),
            self.log_bytes_since_snapshot,
            self.snapshot_entries,
            self.snapshot_log_bytes,
        ) {
            return Ok(());
        }
        let t0 = self.clock.mono();
        // The core may hold it already: taken when an earlier save found no file descriptor.
        let (sync, encode) = if self.raft.latest_snapshot().map(|s| s.meta.index) != Some(applied) {
            let mut state = lock(&self.shared.state);
            if !crate::planted!(SnapshotBeforeTopicSync) {
                state.sync_topics()?;
            }
            let sync = self.clock.mono();
            let data = encode_snapshot_data(&self.addrs.committed(), &state, false)?;
            drop(state);
            let encode = self.clock.mono();
            if let Err(e) = self.raft.snapshot(applied, data) {
                tracing::warn!(node = self.id, error = %e, "snapshot refused");
                return Ok(());
            }
            (sync, encode)
        } else {
            (t0, t0)
        };
        let mut bytes = 0;
        if let Some(snap) = self.raft.latest_snapshot() {
            bytes = snap.data.len();
            self.storage.save_snapshot(snap)?;
        }
        let save = self.clock.mono();
        // Durable with the next sync; a restart before it finds the files and cuts them back.
        lock(&self.shared.state).delete_trimmed_topics()?;
        self.last_snapshot = applied;
        self.log_bytes_since_snapshot = 0;
        let delete = self.clock.mono();
        self.compact_log(applied)?;
        let ms = |a: Duration, b: Duration| b.saturating_sub(a).as_millis() as u64;
        tracing::info!(
            node = self.id,
            index = applied,
            bytes,
            sync_ms = ms(t0, sync),
            encode_ms = ms(sync, encode),
            save_ms = ms(encode, save),
            delete_ms = ms(save, delete),
            compact_ms = ms(delete, self.clock.mono()),
            "snapshot saved"
        );
        Ok(())
    }

    /// Drops the log up to `snapshot_keep_entries` behind the snapshot at `applied`.
    fn compact_log(&mut self, applied: Index) -> Result<(), RoundError> {
        let keep = applied.saturating_sub(self.snapshot_keep_entries);
        if keep > self.raft.first_index() {
            if let Err(e) = self.raft.compact(keep) {
                tracing::warn!(node = self.id, error = %e, "compaction refused");
            } else {
                self.storage.compact(keep)?;
            }
        }
        Ok(())
    }
}

/// A snapshot is due once this many entries, or bytes of entries, were applied since the last.
fn snapshot_due(entries: u64, bytes: u64, every_entries: u64, every_bytes: u64) -> bool {
    entries >= every_entries || (entries > 0 && bytes >= every_bytes)
}

#[cfg(test)]
mod tests {
    use super::snapshot_due;

    #[test]
    fn a_snapshot_is_due_by_entries_or_by_bytes() {
        assert!(!snapshot_due(0, 0, 100, 1000));
        assert!(!snapshot_due(99, 999, 100, 1000));
        assert!(snapshot_due(100, 0, 100, 1000), "by count");
        assert!(snapshot_due(3, 1000, 100, 1000), "a few big entries");
        assert!(!snapshot_due(0, 5000, 100, 1000), "nothing applied since: nothing to snapshot");
    }
}
