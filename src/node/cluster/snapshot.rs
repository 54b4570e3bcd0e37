//! Taking a snapshot without blocking a round on work that grows with the stored data (issue 13).
//!
//! At index I the round encodes the snapshot (metadata only), gives it to the core and lists the
//! topic fsyncs it needs ([`TopicSet::begin_sync`]). A task off the round then fsyncs those topic
//! files and only after that writes the snapshot file (temporary, fsync, rename, directory fsync),
//! so a snapshot is never recorded before the topic data it covers is durable; the round goes on
//! applying meanwhile. A later round takes the task's answer: it records the snapshot in the WAL,
//! takes the segments retention trimmed below the snapshot's first offsets out of the topic set
//! (a task unlinks them) and compacts the log. One snapshot at a time: none is begun while one
//! is in flight. Before a leader's snapshot is installed (which rewrites the snapshot file and
//! the topic files) and when the driver stops, the driver waits for the task.
//!
//! A failed fsync or write poisons the topic set or the WAL and stops the member: the snapshot
//! is not recorded and the fsync not retried (fsyncgate); `/ready` and
//! `esc_node_storage_failed` show it. Out of descriptors, nothing is poisoned and the snapshot is
//! taken again later.

use super::apply::snapshot_due;
use super::*;
use crate::raft::SnapshotMeta;
use crate::rt::DiskError;
use crate::store::TopicSync;
use crate::wal::SnapshotWrite;

/// A snapshot whose topic fsyncs and file write run in a task.
pub(super) struct SnapshotJob {
    meta: SnapshotMeta,
    bytes: u64,
    /// Milliseconds the round spent encoding it.
    encode_ms: u64,
    /// Time the rounds spent on it (begun, finished).
    in_round: Duration,
    done: oneshot::Receiver<JobDone>,
}

/// A recorded snapshot, for the line logged once the log is compacted behind it.
pub(super) struct SavedLine {
    index: Index,
    bytes: u64,
    topic_files: usize,
    sync_ms: u64,
    encode_ms: u64,
    save_ms: u64,
    delete_ms: u64,
    deleted_segments: usize,
    /// Time the rounds spent on it before the compaction.
    in_round: Duration,
}

/// What the task did.
pub(super) struct JobDone {
    sync: TopicSync,
    result: Result<(), JobFailed>,
    sync_ms: u64,
    save_ms: u64,
}

/// The step of the task that failed.
enum JobFailed {
    Topics(DiskError),
    Save(DiskError),
}

/// The task: the topic fsyncs first, the snapshot file only once they succeeded. Waits out the
/// simulated time the disk takes (none on a real disk).
async fn run_job(sync: TopicSync, write: SnapshotWrite, disk: Arc<dyn Disk>, clock: NodeClock) -> JobDone {
    let disk_time = || {
        let t = disk.take_latency();
        async move {
            if !t.is_zero() {
                rt::time::sleep(t).await;
            }
        }
    };
    let ms = |a: Duration, b: Duration| b.saturating_sub(a).as_millis() as u64;
    let t0 = clock.mono();
    let topics = sync.run();
    disk_time().await;
    let t1 = clock.mono();
    let result = match topics {
        Err(e) => Err(JobFailed::Topics(e)),
        Ok(()) => {
            let saved = write.run().map_err(JobFailed::Save);
            disk_time().await;
            saved
        }
    };
    JobDone { sync, result, sync_ms: ms(t0, t1), save_ms: ms(t1, clock.mono()) }
}

/// The answer of the snapshot task in flight (`None`: it ended without one); pending forever
/// while there is none, for the driver's `select!`.
pub(super) async fn job_done(job: &mut Option<SnapshotJob>) -> Option<JobDone> {
    match job {
        Some(job) => (&mut job.done).await.ok(),
        None => std::future::pending().await,
    }
}

impl Driver {
    /// Every `snapshot_entries` applied entries, or once those hold `snapshot_log_bytes`: begins
    /// a snapshot (see the module docs); while one is in flight, takes its answer once there.
    pub(super) fn maybe_snapshot(&mut self) -> Result<(), RoundError> {
        self.compact_after_snapshot()?;
        if self.snapshot_job.is_some() {
            return self.poll_snapshot();
        }
        let applied = self.raft.applied();
        if !snapshot_due(
            applied.saturating_sub(self.last_snapshot),
            self.log_bytes_since_snapshot,
            self.snapshot_entries,
            self.snapshot_log_bytes,
        ) {
            return Ok(());
        }
        self.begin_snapshot(applied)
    }

    /// A clean stop records a snapshot of everything applied, so the next start replays nothing
    /// after it (issue 13: the replay was most of a restart's time once the snapshot decoded).
    /// It costs what any snapshot costs (metadata and the dedup window, never the stored data),
    /// here waited for: the driver has stopped. Not while applying waits for descriptors or a
    /// snapshot install pulls its data; a failure only means the next start replays the log, as
    /// after a crash. Call after [`Self::settle_snapshot`].
    pub(super) async fn snapshot_at_shutdown(&mut self) {
        let applied = self.raft.applied();
        if applied <= self.last_snapshot || self.is_stalled() || self.catchup.is_some() {
            return;
        }
        let t0 = self.clock.mono();
        let taken = match self.begin_snapshot(applied) {
            Ok(()) => self.settle_snapshot().await.and_then(|()| self.compact_after_snapshot()),
            Err(e) => Err(e),
        };
        match taken {
            Ok(()) if self.last_snapshot == applied => {
                let ms = self.clock.mono().saturating_sub(t0).as_millis() as u64;
                tracing::info!(
                    node = self.id,
                    index = applied,
                    ms,
                    "snapshot saved at shutdown: a restart replays nothing"
                );
            }
            Ok(()) => tracing::warn!(node = self.id, "no snapshot at shutdown: a restart replays the log"),
            Err(e) => {
                tracing::warn!(node = self.id, error = %e, "no snapshot at shutdown: a restart replays the log");
            }
        }
    }

    /// Takes the snapshot at `applied` and starts the task that makes it durable.
    fn begin_snapshot(&mut self, applied: Index) -> Result<(), RoundError> {
        let t0 = self.clock.mono();
        let mut state = lock(&self.shared.state);
        // The core may hold it already: taken when an earlier save found no file descriptor
        // (nothing was applied since, so the state is the one it was taken from).
        if self.raft.latest_snapshot().map(|s| s.meta.index) != Some(applied) {
            let data = encode_snapshot_data(&self.addrs.committed(), &state);
            if let Err(e) = self.raft.snapshot(applied, data) {
                tracing::warn!(node = self.id, error = %e, "snapshot refused");
                return Ok(());
            }
        }
        // The planted bug lists no topic file: the snapshot is recorded before its data is durable.
        let sync = state.store_mut().begin_sync(crate::planted!(SnapshotBeforeTopicSync))?;
        drop(state);
        let encode = self.clock.mono();
        let Some(snap) = self.raft.latest_snapshot() else { return Ok(()) };
        let write = match self.storage.snapshot_writer(snap) {
            Ok(w) => w,
            Err(e) => {
                lock(&self.shared.state).store_mut().sync_not_done(&sync);
                return Err(e.into());
            }
        };
        let (meta, bytes) = (snap.meta.clone(), write.len());
        let (tx, rx) = oneshot::channel();
        let job = run_job(sync, write, self.disk.clone(), self.clock.clone());
        drop(rt::spawn(async move { drop(tx.send(job.await)) }));
        self.log_bytes_since_snapshot = 0;
        let encode_ms = encode.saturating_sub(t0).as_millis() as u64;
        let in_round = self.clock.mono().saturating_sub(t0);
        self.snapshot_job = Some(SnapshotJob { meta, bytes, encode_ms, in_round, done: rx });
        Ok(())
    }

    /// Finishes the snapshot in flight if its task has answered.
    fn poll_snapshot(&mut self) -> Result<(), RoundError> {
        let Some(job) = &mut self.snapshot_job else { return Ok(()) };
        let done = match job.done.try_recv() {
            Err(oneshot::error::TryRecvError::Empty) => return Ok(()),
            Err(oneshot::error::TryRecvError::Closed) => None,
            Ok(done) => Some(done),
        };
        let job = self.snapshot_job.take().expect("checked above");
        self.finish_snapshot(job, done)
    }

    /// The answer [`job_done`] waited for: finishes the snapshot in flight. Out of descriptors
    /// it is simply not recorded (taken again later).
    pub(super) fn snapshot_done(&mut self, done: Option<JobDone>) -> Result<(), RoundError> {
        let Some(job) = self.snapshot_job.take() else { return Ok(()) };
        match self.finish_snapshot(job, done) {
            Err(e) if e.is_fd_exhaustion() => {
                self.shared.fd_exhaustion.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::warn!(node = self.id, error = %e, "snapshot not saved for want of file descriptors; retried later");
                Ok(())
            }
            r => r,
        }
    }

    /// Waits for the snapshot in flight, if any, and finishes it (before a leader's snapshot is
    /// installed: nothing else may write the snapshot or the topic files meanwhile, and when
    /// the driver stops).
    pub(super) async fn settle_snapshot(&mut self) -> Result<(), RoundError> {
        if self.snapshot_job.is_none() {
            return Ok(());
        }
        let done = job_done(&mut self.snapshot_job).await;
        self.snapshot_done(done)
    }

    /// Records the snapshot the task made durable, or poisons what failed (`None`: the task
    /// ended without an answer, which only a bug does). The log is compacted behind it by the
    /// next round ([`Self::compact_after_snapshot`]): this may run while the core waits between
    /// `ready()` and `advance()` (a stalled round, an install), when it must not be driven.
    fn finish_snapshot(&mut self, job: SnapshotJob, done: Option<JobDone>) -> Result<(), RoundError> {
        let t0 = self.clock.mono();
        let Some(JobDone { sync, result, sync_ms, save_ms }) = done else {
            self.storage.poison();
            return Err(RoundError::Snapshot("the snapshot task ended without an answer".into()));
        };
        self.check_job(&sync, result)?;
        self.storage.snapshot_written(&job.meta, job.bytes)?;
        self.storage.flush_hard_state()?;
        let index = job.meta.index;
        let trimmed = {
            let mut state = lock(&self.shared.state);
            state.store_mut().synced(&sync);
            state.store_mut().take_trimmed(&sync)
        };
        let deleted = trimmed.len();
        if !trimmed.is_empty() {
            drop(rt::spawn(async move { trimmed.run() }));
        }
        self.last_snapshot = index;
        let ms = |d: Duration| d.as_millis() as u64;
        let line = SavedLine {
            index,
            bytes: job.bytes,
            topic_files: sync.file_count(),
            sync_ms,
            encode_ms: job.encode_ms,
            save_ms,
            delete_ms: ms(self.clock.mono().saturating_sub(t0)),
            deleted_segments: deleted,
            in_round: job.in_round + self.clock.mono().saturating_sub(t0),
        };
        self.compact_due = Some(line);
        Ok(())
    }

    /// Compacts the log behind the snapshot recorded since the last round, if any, and logs
    /// how long each of its steps took (`esc serve` at info level shows it).
    fn compact_after_snapshot(&mut self) -> Result<(), RoundError> {
        let Some(line) = self.compact_due.take() else { return Ok(()) };
        let t0 = self.clock.mono();
        self.compact_log(line.index)?;
        // The compacted entries (tens of MB under load) go back to the system now.
        rt::mem::release_free_memory();
        let compact = self.clock.mono().saturating_sub(t0);
        let ms = |d: Duration| d.as_millis() as u64;
        tracing::info!(
            node = self.id,
            index = line.index,
            bytes = line.bytes,
            topic_files = line.topic_files,
            sync_ms = line.sync_ms,
            encode_ms = line.encode_ms,
            save_ms = line.save_ms,
            delete_ms = line.delete_ms,
            deleted_segments = line.deleted_segments,
            compact_ms = ms(compact),
            in_round_ms = ms(line.in_round + compact),
            "snapshot saved"
        );
        Ok(())
    }

    /// The task's failure as the round's error: a failed fsync or write poisons the topic set or
    /// the WAL (never retried); out of descriptors, nothing is poisoned.
    fn check_job(&mut self, sync: &TopicSync, result: Result<(), JobFailed>) -> Result<(), RoundError> {
        match result {
            Ok(()) => Ok(()),
            Err(JobFailed::Topics(e)) => {
                let mut state = lock(&self.shared.state);
                if e.is_fd_exhaustion() {
                    state.store_mut().sync_not_done(sync);
                } else {
                    tracing::error!(node = self.id, error = %e, "fsync of topic files failed; snapshot not recorded");
                    state.store_mut().poison();
                }
                Err(RoundError::Topics(StoreError::Disk(e)))
            }
            Err(JobFailed::Save(e)) => {
                // The topic fsyncs succeeded.
                lock(&self.shared.state).store_mut().synced(sync);
                if !e.is_fd_exhaustion() {
                    tracing::error!(node = self.id, error = %e, "writing the snapshot file failed; not recorded");
                    self.storage.poison();
                }
                Err(RoundError::Storage(StorageError::Disk(e)))
            }
        }
    }
}
