//! Persisting a round's `Ready`, and waiting out file-descriptor exhaustion.
//!
//! When the WAL cannot open a file because the process is out of descriptors (a segment roll, a
//! state file), nothing was written and the storage is not poisoned
//! ([`StorageError::is_fd_exhaustion`]). The driver then keeps the `Ready` un-persisted, drives
//! the core no further (peer messages are dropped, ticks only expire waiting requests, clients
//! are told "overloaded, retry"), and retries the same persistence with a backoff. Nothing that
//! depends on the unpersisted state is sent before it is durable: persist-before-send holds.
//! Any other storage error stays fatal (fsyncgate).
//!
//! Applying waits the same way: when a committed entry's topic files cannot be opened, applying
//! stops before it (`apply.rs`, [`ApplyStop`](super::apply::ApplyStop)), the core is told only
//! the entries before it were applied, and once the backoff is over its next `Ready` hands that
//! entry out again.
//!
//! The pull of an installed snapshot's records waits the same way, with the same backoff
//! ([`FdWait`], `catchup.rs`), while the core goes on.

use std::sync::atomic::Ordering;

use super::*;

/// First wait before persisting again; doubled per failed attempt up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A `Ready` taken from the core, with what of it is durable so far.
pub(super) struct Batch {
    /// Its snapshot is taken out once installed, its hard state once written.
    pub(super) ready: Ready,
    /// Its snapshot is saved (marker and WAL); it is taken out once installed.
    snapshot_saved: bool,
    entries_appended: bool,
    entries_synced: bool,
    /// The snapshot this batch installs: its last index and term.
    pub(super) installed: Option<(Index, Term)>,
    pub(super) log_changed: bool,
    pub(super) appended_from: Option<Index>,
}

/// Persistence or applying stopped for want of descriptors and waits for its retry.
pub(super) struct Stalled {
    /// The batch to persist again; `None` while a retry is being attempted, or when applying
    /// stopped (the core hands out the entries not applied again).
    batch: Option<Batch>,
    retry_at: Duration,
    backoff: Duration,
    attempts: u64,
    since: Duration,
}

/// A wait for file descriptors outside a round (the pull of a snapshot's records): the same
/// backoff as a stalled round.
pub(super) struct FdWait {
    retry_at: Duration,
    backoff: Duration,
    attempts: u64,
    since: Duration,
}

impl FdWait {
    pub(super) fn new(now: Duration) -> Self {
        FdWait { retry_at: now, backoff: FIRST_BACKOFF / 2, attempts: 0, since: now }
    }

    /// Another attempt found no descriptor: wait twice as long (up to [`MAX_BACKOFF`]).
    pub(super) fn failed(&mut self, now: Duration) {
        self.attempts += 1;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.retry_at = now + self.backoff;
    }

    /// When to try again.
    pub(super) fn retry_at(&self) -> Duration {
        self.retry_at
    }

    /// Attempts so far, and how long it has waited by `now`.
    pub(super) fn waited(&self, now: Duration) -> (u64, Duration) {
        (self.attempts, now.saturating_sub(self.since))
    }
}

impl Driver {
    /// The batch to handle this round: the stalled one once its retry is due, else the core's
    /// next `Ready` if it has one.
    pub(super) fn next_batch(&mut self) -> Option<Batch> {
        let now = self.clock.mono();
        if let Some(s) = &mut self.stalled {
            if now < s.retry_at {
                return None;
            }
            if let Some(b) = s.batch.take() {
                return Some(b);
            }
            // Applying waits: the core's next `Ready` hands out the entry it stopped at.
        }
        if !self.raft.has_ready() {
            return None;
        }
        let ready = self.raft.ready();
        Some(Batch {
            installed: ready.snapshot.as_ref().map(|s| (s.meta.index, s.meta.term)),
            log_changed: ready.snapshot.is_some() || !ready.entries.is_empty(),
            appended_from: ready.entries.first().map(|e| e.index),
            snapshot_saved: false,
            entries_appended: false,
            entries_synced: false,
            ready,
        })
    }

    /// Makes durable what of `b` is not yet, in the order the core requires: the snapshot, the
    /// entries (one fsync), the hard state. Each step is done once, so a retry resumes. Waits out
    /// the simulated time the disk takes (none on a real disk): the write before its fsync (a
    /// power failure meanwhile tears it), the fsync before anything is sent or acked.
    pub(super) async fn persist(&mut self, b: &mut Batch) -> Result<(), RoundError> {
        if let Some(snap) = &b.ready.snapshot {
            if !b.snapshot_saved {
                // Our own snapshot in flight writes the snapshot file and fsyncs topic files
                // that the install rewrites: it finishes first.
                self.settle_snapshot().await?;
                // Before the snapshot is saved: a restart must know its topic data may be incomplete.
                catchup::mark(&self.disk, snap.meta.index)?;
                self.storage.install_snapshot(snap)?;
                b.snapshot_saved = true;
            }
            // Out of descriptors opening its topic files, it stays in the batch for the retry.
            self.install(snap)?;
            b.ready.snapshot = None;
        }
        if !b.ready.entries.is_empty() {
            if !b.entries_appended {
                for e in &b.ready.entries {
                    self.addrs.note_conf_entry(e);
                }
                self.storage.append(&b.ready.entries)?;
                b.entries_appended = true;
                self.disk_time().await;
            }
            // (The planted bug acks on a follower before its entries are durable.)
            let skip_sync = crate::planted!(AckBeforeDurable) && self.raft.role() != Role::Leader;
            if !b.entries_synced && !skip_sync {
                self.storage.sync()?;
            }
            b.entries_synced = true;
        }
        if let Some(hs) = b.ready.hard_state {
            self.storage.set_hard_state(hs)?;
            b.ready.hard_state = None;
        }
        self.disk_time().await;
        Ok(())
    }

    /// Persisting `batch` found no free descriptor: keep it and retry after a backoff.
    pub(super) fn stall(&mut self, batch: Batch, e: &RoundError) {
        self.stall_for(Some(batch), e, "the round is kept un-persisted");
    }

    /// Applying stopped before the entry at `index` (it changed nothing): the entries from it are
    /// applied after a backoff.
    pub(super) fn stall_apply(&mut self, index: Index, e: &StoreError) {
        self.stall_for(None, e, "applying stops before the next entry");
        tracing::debug!(node = self.id, index, "applying waits for file descriptors");
    }

    fn stall_for(&mut self, batch: Option<Batch>, e: &dyn std::fmt::Display, what: &str) {
        let now = self.clock.mono();
        self.shared.fd_exhaustion.fetch_add(1, Ordering::Relaxed);
        self.shared.storage_stalled.store(true, Ordering::Relaxed);
        let s = self.stalled.get_or_insert_with(|| {
            tracing::warn!(
                node = self.id,
                error = %e,
                "out of file descriptors: {what} and retried; clients are told to retry"
            );
            Stalled { batch: None, retry_at: now, backoff: FIRST_BACKOFF / 2, attempts: 0, since: now }
        });
        s.attempts += 1;
        s.backoff = (s.backoff * 2).min(MAX_BACKOFF);
        s.retry_at = now + s.backoff;
        s.batch = batch;
        tracing::debug!(node = self.id, attempts = s.attempts, error = %e, "still out of file descriptors");
    }

    /// The stalled batch is durable and applied now: drive the core again.
    pub(super) fn unstall(&mut self) {
        if let Some(s) = self.stalled.take() {
            self.shared.storage_stalled.store(self.catch_up_waiting(), Ordering::Relaxed);
            let waited = self.clock.mono().saturating_sub(s.since);
            tracing::info!(
                node = self.id,
                attempts = s.attempts,
                waited_ms = waited.as_millis() as u64,
                "file descriptors free again: storage resumed without a restart"
            );
        }
    }

    /// True while a batch waits for descriptors (the core must not be driven).
    pub(super) fn is_stalled(&self) -> bool {
        self.stalled.is_some()
    }

    /// What a request that would drive the core is told while stalled.
    pub(super) fn stalled_error(&self) -> ServiceError {
        let wait = self.stalled.as_ref().map_or(FIRST_BACKOFF, |s| s.backoff);
        ServiceError::Overloaded { retry_after_ms: u32::try_from(wait.as_millis()).unwrap_or(u32::MAX) }
    }

    /// Saves a snapshot if one is due; one that finds no descriptor is tried again later (the
    /// log still holds everything it covers).
    pub(super) fn snapshot_if_due(&mut self) -> Result<(), RoundError> {
        match self.maybe_snapshot() {
            Err(e) if e.is_fd_exhaustion() => {
                self.shared.fd_exhaustion.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(node = self.id, error = %e, "snapshot not saved for want of file descriptors; retried later");
                Ok(())
            }
            r => r,
        }
    }
}
