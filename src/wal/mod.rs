//! Durable storage for the Raft core on the [`Disk`] seam: a segmented write-ahead log, the hard
//! state and the latest snapshot.
//!
//! # Files
//!
//! * `wal-<first index, 20 digits>.seg` — log segments. Each record is `u32 LE length`,
//!   `u32 LE CRC32C` (over the four length bytes, then the payload), then the payload: one
//!   [`Entry`] in the codec's binary form. Entries are contiguous within a segment, starting at the
//!   index in the name. A new segment starts once the current one reaches `segment_bytes` (so a
//!   segment may overshoot by one record), or when the next entry does not follow the last one
//!   (after a snapshot that jumped past the log).
//! * `hardstate` — `"ESH1"`, term `u64 LE`, vote flag `u8` + vote `u64 LE`, commit `u64 LE`,
//!   CRC32C `u32 LE` of everything before it; 33 bytes, replaced with [`Disk::write_atomic`].
//! * `snapshot` — `"ESS1"`, index `u64 LE`, term `u64 LE`, conf-state length `u32 LE` + the
//!   codec's [`ConfState`] bytes, data length `u64 LE` + data, CRC32C `u32 LE` of everything
//!   before it; replaced with [`Disk::write_atomic`].
//! * `snapshot.install` — the same format: an [`RaftStorage::install_snapshot`] in progress.
//!   Its durable creation is the commit point; recovery rolls it forward (drops every segment,
//!   renames it to `snapshot`), so a crash never leaves the new snapshot next to the old log.
//!
//! The storage owns these names on its [`Disk`]; give it a disk (directory) of its own.
//!
//! # Durability
//!
//! A driver handles a `Ready` as: `install_snapshot` (if any), `append` the entries, `sync`,
//! then `set_hard_state` — so a persisted commit index never runs ahead of the durable log.
//!
//! * [`RaftStorage::append`] writes but does not fsync; [`RaftStorage::sync`] fsyncs the active
//!   segment once, and the directory if segments were created. Only the last segment can hold
//!   unsynced data: before a new segment is started, the previous one is fsynced (so a crash can
//!   never leave a hole before a later segment).
//! * Overwriting a persisted suffix (a conflict) removes the later segments (newest first, each
//!   removal made durable) and truncates and fsyncs the segment it starts in *before* the new
//!   entries are written, so a crash never mixes old and new bytes in one file.
//! * A term or vote change is durable when [`RaftStorage::set_hard_state`] returns. A commit-only
//!   change is kept in memory and written with the next term/vote change, snapshot, or
//!   [`RaftStorage::flush_hard_state`]: a restarted node re-learns its commit index from the
//!   leader, and recovery clamps a persisted commit to the recovered log.
//! * [`RaftStorage::open`] fsyncs the recovered last segment and the directory, so what it
//!   returns is durable even after a process crash that left data only in the page cache.
//! * After any failed write or fsync the storage is poisoned (fsyncgate): every later mutation
//!   returns [`StorageError::Poisoned`]; the node must restart and recover from what is on disk.
//! * Except when the process is out of file descriptors ([`StorageError::is_fd_exhaustion`]):
//!   then only an open failed, nothing was written or lost, and the storage is not poisoned.
//!   Calling the same operation again with the same arguments is safe and goes on from where it
//!   stopped (an append that wrote part of its entries before a segment roll failed skips them).
//!
//! # Recovery
//!
//! Segments are read in order; entries must follow the snapshot without gaps. Segments wholly
//! covered by the snapshot are removed. In the last segment a torn tail is truncated and noted in
//! [`Recovered::repaired`]: a zero-filled record header (an unsynced write that never landed,
//! whatever follows it), or a partial record running past the end or a checksum-bad record with
//! no valid record after it (the last write, partly landed). Any other bad record — a
//! checksum failure followed by valid records, a bad record in an earlier segment, an entry out of
//! sequence, a missing segment — is [`StorageError::Corrupt`] unless [`StorageOptions::repair`]
//! is set, which truncates the log there (dropping the later segments) and notes it. A corrupt
//! `hardstate` or `snapshot` is always refused: truncating the log cannot repair those.
//!
//! The trade-off: a checksum-bad record followed by valid ones is refused even in the last
//! segment. A real file system that persists an unsynced write's pages out of order can leave
//! that shape after a power failure (then `--repair` drops only unsynced data); treating it as
//! torn instead would silently drop *synced* entries after a bit flip. [`crate::rt::SimDisk`]
//! tears only a prefix of the last write, which recovery always repairs on its own.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use crate::raft::types::{
    ConfState, Entry, HardState, Index, MAX_INDEX, MAX_TERM, RestoredState, Snapshot, SnapshotMeta,
};
use crate::rt::{Disk, DiskError};

const HARD_STATE_FILE: &str = "hardstate";
const SNAPSHOT_FILE: &str = "snapshot";
const INSTALL_FILE: &str = "snapshot.install";
const SEGMENT_PREFIX: &str = "wal-";
const SEGMENT_SUFFIX: &str = ".seg";
const HARD_STATE_MAGIC: &[u8; 4] = b"ESH1";
const SNAPSHOT_MAGIC: &[u8; 4] = b"ESS1";
const HARD_STATE_LEN: usize = 33;
const RECORD_HEADER: usize = crate::record::HEADER;
/// Largest entry payload a record takes (its encoded length must fit the record's `u32`).
const MAX_ENTRY_DATA: usize = u32::MAX as usize - 64;

/// How [`RaftStorage`] lays out and recovers its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageOptions {
    /// A segment is closed (and a new one started) once it holds at least this many bytes.
    pub segment_bytes: u64,
    /// Truncate the log at the first corrupt record instead of refusing to start (`--repair`).
    pub repair: bool,
}

impl Default for StorageOptions {
    fn default() -> Self {
        StorageOptions { segment_bytes: 8 << 20, repair: false }
    }
}

/// What [`RaftStorage::open`] found on disk: exactly what a restarted core is rebuilt from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Last durable hard state (commit clamped to the recovered log; term raised to the
    /// snapshot's term, vote cleared, if it was behind it).
    pub hard_state: HardState,
    /// The latest durable snapshot, with its data.
    pub snapshot: Option<Snapshot>,
    /// The durable entries after the snapshot, contiguous.
    pub entries: Vec<Entry>,
    /// Human-readable notes of what recovery truncated, removed or adjusted.
    pub repaired: Vec<String>,
}

impl Recovered {
    /// What to rebuild the core from ([`crate::raft::Raft::new`]): `conf_state` is the initial
    /// configuration, used only when there is no snapshot; the state machine is rebuilt from
    /// the snapshot (`applied` 0).
    pub fn into_restored_state(self, conf_state: ConfState) -> RestoredState {
        RestoredState {
            hard_state: self.hard_state,
            snapshot: self.snapshot,
            entries: self.entries,
            conf_state,
            applied: 0,
        }
    }
}

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The disk failed (the storage is poisoned if this happened while writing).
    #[error("disk: {0}")]
    Disk(#[from] DiskError),
    /// A file holds bytes that cannot be what this storage wrote.
    #[error("{}", corrupt_message(file, *offset, reason))]
    Corrupt {
        /// File name.
        file: String,
        /// Byte offset of the bad record or field.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },
    /// An earlier write or fsync failed: the on-disk state is unknown, so the storage refuses
    /// every further write. Restart the node and recover.
    #[error("storage is poisoned by an earlier failed write or fsync; restart the node to recover")]
    Poisoned,
    /// `append` was given entries that do not follow one another.
    #[error("appended entries are not contiguous: index {got} follows {prev}")]
    NotContiguous {
        /// Index of the entry before.
        prev: Index,
        /// Index that followed it.
        got: Index,
    },
    /// `append` would leave a gap or overwrite entries covered by the snapshot.
    #[error("cannot append at index {index}: the writable range is {first}..={next}")]
    AppendOutOfRange {
        /// First index given.
        index: Index,
        /// First index the log may hold (after the snapshot).
        first: Index,
        /// One past the last index.
        next: Index,
    },
    /// A snapshot older than the one already saved.
    #[error("snapshot at index {index} is older than the saved snapshot at {current}")]
    SnapshotBehind {
        /// Index of the snapshot given.
        index: Index,
        /// Index of the saved snapshot.
        current: Index,
    },
    /// `compact` past what the saved snapshot covers.
    #[error("cannot compact up to {upto}: the saved snapshot only covers up to {snapshot}")]
    CompactBeyondSnapshot {
        /// Index asked for.
        upto: Index,
        /// Index of the saved snapshot (0 if none).
        snapshot: Index,
    },
    /// An entry too large for a record's 32-bit length.
    #[error("entry {index} carries {bytes} bytes; a record holds less than 4 GiB")]
    EntryTooLarge {
        /// The entry's index.
        index: Index,
        /// Its encoded size.
        bytes: usize,
    },
}

impl StorageError {
    /// True if an open failed because the process is out of file descriptors: nothing was
    /// written, the storage is not poisoned, and the same call may be retried once some free.
    pub fn is_fd_exhaustion(&self) -> bool {
        matches!(self, StorageError::Disk(e) if e.is_fd_exhaustion())
    }
}

fn corrupt_message(file: &str, offset: u64, reason: &str) -> String {
    if is_segment_name(file) {
        format!("{file} is corrupt at byte {offset}: {reason}; start with --repair to truncate the log there")
    } else {
        format!(
            "{file} is corrupt at byte {offset}: {reason}; --repair only truncates the log and cannot fix \
             this file: restore this node's data from a peer"
        )
    }
}

/// Counters of what a [`RaftStorage`] has done since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StorageStats {
    /// File fsyncs (segments, hard state, snapshots).
    pub fsyncs: u64,
    /// Directory fsyncs.
    pub dir_fsyncs: u64,
    /// Bytes handed to the disk (records and state files).
    pub bytes_written: u64,
    /// Entries appended.
    pub entries_appended: u64,
    /// Conflicting suffixes truncated by `append`.
    pub truncations: u64,
    /// Log segments on disk now.
    pub segments: usize,
    /// Bytes in log segments now.
    pub log_bytes: u64,
}

/// One log segment: its file and the entries it holds.
#[derive(Clone, Debug)]
struct Segment {
    name: String,
    first: Index,
    /// Last entry held; `first - 1` if empty.
    last: Index,
    bytes: u64,
}

/// Durable Raft storage: owns the disk, writes the log, hard state and snapshots. See the module
/// docs for the file formats and what is durable when.
pub struct RaftStorage {
    disk: Arc<dyn Disk>,
    opts: StorageOptions,
    /// Segments in index order; only the last may hold unsynced data.
    segments: Vec<Segment>,
    snapshot: Option<SnapshotMeta>,
    last_index: Index,
    /// The latest hard state given (its commit may not be on disk yet).
    hard_state: HardState,
    /// The hard state in the `hardstate` file.
    written_hard_state: HardState,
    /// The last segment has appends not yet fsynced.
    active_dirty: bool,
    /// Segments were created since the last directory fsync.
    dir_dirty: bool,
    poisoned: bool,
    /// The last entry (index, term) written by an append that stopped for want of file
    /// descriptors: a retry of that append skips the entries up to it (already written).
    interrupted_append: Option<(Index, u64)>,
    stats: StorageStats,
}

impl fmt::Debug for RaftStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RaftStorage")
            .field("first_index", &self.first_index())
            .field("last_index", &self.last_index)
            .field("segments", &self.segments.len())
            .field("snapshot", &self.snapshot.as_ref().map(|m| (m.index, m.term)))
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl RaftStorage {
    /// Opens the storage on `disk`, recovering (and repairing a torn tail of) what is there.
    pub fn open(disk: Arc<dyn Disk>, opts: StorageOptions) -> Result<(RaftStorage, Recovered), StorageError> {
        let mut rec =
            Recovery { disk: disk.as_ref(), opts: &opts, notes: Vec::new(), stats: StorageStats::default() };
        rec.remove_temporaries()?;
        rec.finish_interrupted_install()?;
        let written_hard_state = rec.read_hard_state()?;
        let snapshot = rec.read_snapshot()?;
        let snap_index = snapshot.as_ref().map_or(0, |s| s.meta.index);
        let (segments, entries) = rec.read_log(snap_index, written_hard_state.commit)?;
        let last_index = entries.last().map_or(snap_index, |e| e.index);
        let snap_term = snapshot.as_ref().map_or(0, |s| s.meta.term);
        check_terms_never_decrease(&segments, &entries, snap_term)?;

        let mut hard_state = written_hard_state;
        if let Some(last) = entries.last()
            && hard_state.term < last.term
        {
            // The driver syncs entries before the hard state: a crash in between leaves entries
            // of a term the hard state does not know yet. No message depended on that term. Not
            // a repair (nothing was lost), so not a note.
            tracing::info!(
                persisted = hard_state.term,
                log = last.term,
                "hard state term behind the log's last term (crash before it was written): raised to it, vote cleared"
            );
            hard_state.term = last.term;
            hard_state.vote = None;
        }
        if let Some(s) = &snapshot
            && hard_state.term < s.meta.term
        {
            rec.note(format!(
                "hard state term {} is behind the snapshot's term {}: raised to it, vote cleared",
                hard_state.term, s.meta.term
            ));
            hard_state.term = s.meta.term;
            hard_state.vote = None;
        }
        if hard_state.commit > last_index {
            rec.note(format!(
                "persisted commit index {} is beyond the recovered log (last index {last_index}): clamped",
                hard_state.commit
            ));
            hard_state.commit = last_index;
        }

        let (mut stats, repaired) = (rec.stats, rec.notes);
        stats.segments = segments.len();
        stats.log_bytes = segments.iter().map(|s| s.bytes).sum();
        let storage = RaftStorage {
            disk,
            opts,
            segments,
            snapshot: snapshot.as_ref().map(|s| s.meta.clone()),
            last_index,
            hard_state,
            written_hard_state,
            active_dirty: false,
            dir_dirty: false,
            poisoned: false,
            interrupted_append: None,
            stats,
        };
        tracing::debug!(
            first_index = storage.first_index(),
            last_index,
            segments = storage.segments.len(),
            repairs = repaired.len(),
            "raft storage recovered"
        );
        Ok((storage, Recovered { hard_state, snapshot, entries, repaired }))
    }

    /// Appends contiguous entries; if `entries[0].index <= last_index()`, the persisted suffix
    /// from there is truncated first (durably). Not durable until [`RaftStorage::sync`].
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        self.check_writable()?;
        let Some(head) = entries.first() else { return Ok(()) };
        for w in entries.windows(2) {
            if w[1].index != w[0].index + 1 {
                return Err(StorageError::NotContiguous { prev: w[0].index, got: w[1].index });
            }
        }
        let (first, next) = (self.first_index(), self.last_index + 1);
        if head.index < first || head.index > next {
            return Err(StorageError::AppendOutOfRange { index: head.index, first, next });
        }
        if let Some(e) = entries.iter().find(|e| e.data.len() > MAX_ENTRY_DATA) {
            return Err(StorageError::EntryTooLarge { index: e.index, bytes: e.data.len() });
        }
        let entries = self.skip_interrupted(entries);
        let Some(head) = entries.first() else { return Ok(()) };
        self.mutate(|s| {
            if head.index <= s.last_index {
                s.truncate_from(head.index)?;
            }
            s.write_records(entries)
        })
    }

    /// `entries` without the prefix an append interrupted by descriptor exhaustion already wrote:
    /// the entry it wrote last is there with the same index and term, so (log matching) the
    /// entries before it are the same too.
    fn skip_interrupted<'a>(&self, entries: &'a [Entry]) -> &'a [Entry] {
        let Some((index, term)) = self.interrupted_append else { return entries };
        match entries.iter().position(|e| e.index == index && e.term == term) {
            Some(k) if index == self.last_index => &entries[k + 1..],
            _ => entries,
        }
    }

    /// Sets the hard state: durable on return if the term or vote changed; a commit-only change
    /// is deferred (see the module docs).
    pub fn set_hard_state(&mut self, hs: HardState) -> Result<(), StorageError> {
        self.check_writable()?;
        let old = self.hard_state;
        assert!(hs.term >= old.term, "term went back from {} to {}", old.term, hs.term);
        assert!(
            hs.term > old.term || old.vote.is_none() || hs.vote == old.vote,
            "vote changed within term {}: {:?} -> {:?}",
            hs.term,
            old.vote,
            hs.vote
        );
        if (hs.term != self.written_hard_state.term && !crate::planted!(TermNotPersisted))
            || hs.vote != self.written_hard_state.vote
        {
            self.mutate(|s| s.write_hard_state(hs))?;
        }
        self.hard_state = hs;
        Ok(())
    }

    /// Makes a deferred commit-only hard state change durable.
    pub fn flush_hard_state(&mut self) -> Result<(), StorageError> {
        self.check_writable()?;
        let hs = self.hard_state;
        if hs != self.written_hard_state {
            self.mutate(|s| s.write_hard_state(hs))?;
        }
        Ok(())
    }

    /// The hard state last given to [`RaftStorage::set_hard_state`] (or recovered).
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Group commit: makes every append so far durable with one fsync of the active segment (one
    /// more per segment started since, done when it was closed) and, if segments were created, one
    /// directory fsync.
    pub fn sync(&mut self) -> Result<(), StorageError> {
        self.check_writable()?;
        self.mutate(|s| {
            s.sync_active()?;
            if s.dir_dirty {
                s.sync_dir()?;
            }
            Ok(())
        })
    }

    /// Saves the application's own snapshot (taken after applying up to `snap.meta.index`),
    /// durably; the log is kept until [`RaftStorage::compact`]. A commit-only hard state change
    /// is flushed with it.
    pub fn save_snapshot(&mut self, snap: &Snapshot) -> Result<(), StorageError> {
        self.check_writable()?;
        self.check_not_behind(snap)?;
        let bytes = encode_snapshot(snap);
        self.mutate(|s| {
            s.write_atomic(SNAPSHOT_FILE, &bytes)?;
            s.snapshot = Some(snap.meta.clone());
            s.last_index = s.last_index.max(snap.meta.index);
            Ok(())
        })?;
        self.flush_hard_state()
    }

    /// [`RaftStorage::save_snapshot`] in two halves, so that the file is written off the
    /// driver's round: this checks the snapshot may be saved and encodes it; the returned
    /// [`SnapshotWrite`] writes it (temporary, fsync, rename, directory fsync) when run, e.g. in
    /// a task; [`RaftStorage::snapshot_written`] then records it. Nothing else may write the
    /// snapshot file meanwhile (the driver waits for the write before installing a leader's).
    /// The commit index is not flushed with it: a restart takes the snapshot's index as
    /// committed, and re-learns the rest from the leader.
    pub fn snapshot_writer(&self, snap: &Snapshot) -> Result<SnapshotWrite, StorageError> {
        self.check_writable()?;
        self.check_not_behind(snap)?;
        Ok(SnapshotWrite { disk: self.disk.clone(), bytes: encode_snapshot(snap) })
    }

    /// Records the snapshot of `meta` as saved, once its [`SnapshotWrite`] ran successfully.
    /// After a failed write call [`RaftStorage::poison`] instead (the file's state is unknown).
    pub fn snapshot_written(&mut self, meta: &SnapshotMeta, bytes: u64) -> Result<(), StorageError> {
        self.check_writable()?;
        if self.snapshot.as_ref().is_some_and(|m| meta.index < m.index) {
            let current = self.snapshot.as_ref().map_or(0, |m| m.index);
            return Err(StorageError::SnapshotBehind { index: meta.index, current });
        }
        self.snapshot = Some(meta.clone());
        self.last_index = self.last_index.max(meta.index);
        self.stats.fsyncs += 1;
        self.stats.dir_fsyncs += 1;
        self.stats.bytes_written += bytes;
        Ok(())
    }

    /// Refuses every later write: a write done outside the storage (a [`SnapshotWrite`]) failed.
    pub fn poison(&mut self) {
        tracing::warn!("raft storage write failed; poisoned until restart");
        self.poisoned = true;
    }

    /// Installs a snapshot received from the leader, durably: it replaces the whole persisted log
    /// (the entries after it arrive by later appends).
    pub fn install_snapshot(&mut self, snap: &Snapshot) -> Result<(), StorageError> {
        self.check_writable()?;
        self.check_not_behind(snap)?;
        let bytes = encode_snapshot(snap);
        self.mutate(|s| {
            // Commit point: once `snapshot.install` is durable, recovery finishes the install.
            s.write_atomic(INSTALL_FILE, &bytes)?;
            for seg in std::mem::take(&mut s.segments) {
                s.disk.remove(&seg.name)?;
            }
            s.active_dirty = false;
            s.sync_dir()?;
            s.disk.rename(INSTALL_FILE, SNAPSHOT_FILE)?;
            s.sync_dir()?;
            s.snapshot = Some(snap.meta.clone());
            s.last_index = snap.meta.index;
            s.update_segment_stats();
            Ok(())
        })?;
        tracing::debug!(index = snap.meta.index, term = snap.meta.term, "snapshot installed");
        self.flush_hard_state()
    }

    /// Frees the log segments whose entries are all `<= upto` (`upto` must not exceed the saved
    /// snapshot's index). The removals are not fsynced here (a directory fsync in every
    /// snapshot's round cost 30-100 ms under load): they become durable with the next directory
    /// sync, and a crash before it finds the files again, wholly covered by the durable snapshot,
    /// and recovery removes them.
    pub fn compact(&mut self, upto: Index) -> Result<(), StorageError> {
        let freed = self.compact_later(upto)?;
        self.mutate(|s| freed.names.iter().try_for_each(|name| Ok(s.disk.remove(name)?)))
    }

    /// [`RaftStorage::compact`] without the unlinks: the segments leave the log at once and the
    /// returned [`FreedSegments`] unlinks them when run, e.g. in a task off the driver's round
    /// (unlinking a 64 MiB segment took up to 160 ms under load). Crash-safe for the same reason
    /// as the unsynced removals: a segment still on disk at a restart is wholly covered by the
    /// durable snapshot, and recovery removes it. No later segment reuses a freed name (names
    /// are first indexes, and the log only grows past `upto`).
    pub fn compact_later(&mut self, upto: Index) -> Result<FreedSegments, StorageError> {
        self.check_writable()?;
        let snapshot = self.snapshot.as_ref().map_or(0, |m| m.index);
        if upto > snapshot {
            return Err(StorageError::CompactBeyondSnapshot { upto, snapshot });
        }
        let n = self.segments.iter().take_while(|seg| seg.last <= upto).count();
        if n == self.segments.len() {
            self.active_dirty = false;
        }
        let names = self.segments.drain(..n).map(|seg| seg.name).collect();
        self.update_segment_stats();
        Ok(FreedSegments { disk: self.disk.clone(), names })
    }

    /// First index the log may hold: one past the snapshot (1 without one).
    pub fn first_index(&self) -> Index {
        self.snapshot.as_ref().map_or(0, |m| m.index) + 1
    }

    /// Last index appended (the snapshot's index if the log after it is empty).
    pub fn last_index(&self) -> Index {
        self.last_index
    }

    /// Metadata of the saved snapshot.
    pub fn snapshot_meta(&self) -> Option<&SnapshotMeta> {
        self.snapshot.as_ref()
    }

    /// Counters so far.
    pub fn stats(&self) -> StorageStats {
        self.stats
    }

    /// True once a failed write or fsync has poisoned the storage.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// The simulated time the disk operations since the last call cost ([`Disk::take_latency`];
    /// zero on a real disk), for the driver to wait out.
    pub fn take_disk_latency(&self) -> std::time::Duration {
        self.disk.take_latency()
    }

    // ---- internals -------------------------------------------------------------------------

    fn check_writable(&self) -> Result<(), StorageError> {
        if self.poisoned { Err(StorageError::Poisoned) } else { Ok(()) }
    }

    fn check_not_behind(&self, snap: &Snapshot) -> Result<(), StorageError> {
        match &self.snapshot {
            Some(m) if snap.meta.index < m.index => {
                Err(StorageError::SnapshotBehind { index: snap.meta.index, current: m.index })
            }
            _ => Ok(()),
        }
    }

    /// Runs a mutation; a failure in it poisons the storage (the disk state is unknown), unless
    /// only an open failed for want of descriptors (nothing written; the state is consistent).
    /// A mutation that succeeds ends any interrupted append (the log may have changed since).
    fn mutate<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, StorageError>) -> Result<T, StorageError> {
        let r = f(self);
        match &r {
            Err(e) if e.is_fd_exhaustion() => {
                tracing::debug!(error = %e, "raft storage out of file descriptors; nothing written, retry")
            }
            Err(e) => {
                tracing::warn!(error = %e, "raft storage write failed; poisoned until restart");
                self.poisoned = true;
            }
            Ok(_) => self.interrupted_append = None,
        }
        r
    }

    fn sync_active(&mut self) -> Result<(), StorageError> {
        if self.active_dirty
            && let Some(seg) = self.segments.last()
        {
            if let Err(e) = self.disk.sync(&seg.name)
                && !crate::planted!(FsyncErrorIgnored)
            {
                return Err(e.into());
            }
            self.stats.fsyncs += 1;
        }
        self.active_dirty = false;
        Ok(())
    }

    fn sync_dir(&mut self) -> Result<(), StorageError> {
        self.disk.sync_dir()?;
        self.stats.dir_fsyncs += 1;
        self.dir_dirty = false;
        Ok(())
    }

    fn write_atomic(&mut self, name: &str, bytes: &[u8]) -> Result<(), StorageError> {
        self.disk.write_atomic(name, bytes)?;
        self.stats.fsyncs += 1;
        self.stats.dir_fsyncs += 1;
        self.stats.bytes_written += bytes.len() as u64;
        // write_atomic fsyncs the directory, making new segment names durable too.
        self.dir_dirty = false;
        Ok(())
    }

    fn write_hard_state(&mut self, hs: HardState) -> Result<(), StorageError> {
        let hs_on_disk = if crate::planted!(VoteNotPersisted) { HardState { vote: None, ..hs } } else { hs };
        self.write_atomic(HARD_STATE_FILE, &encode_hard_state(&hs_on_disk))?;
        self.written_hard_state = hs;
        Ok(())
    }

    fn update_segment_stats(&mut self) {
        self.stats.segments = self.segments.len();
        self.stats.log_bytes = self.segments.iter().map(|s| s.bytes).sum();
    }

    /// Removes the persisted entries from `index` on, durably, before anything overwrites them.
    fn truncate_from(&mut self, index: Index) -> Result<(), StorageError> {
        assert!(
            index >= self.first_index() && index <= self.last_index,
            "truncate from {index} outside the log {}..={}",
            self.first_index(),
            self.last_index
        );
        // Raft never overwrites a committed entry, and the commit index known here trails the
        // core's (the driver sets the hard state after appending): our bug, never input to refuse.
        assert!(
            index > self.hard_state.commit,
            "truncate from {index} would drop committed entries (commit index {})",
            self.hard_state.commit
        );
        self.stats.truncations += 1;
        // Newest first, each removal durable: a crash never leaves a hole before a later segment.
        while let Some(seg) = self.segments.last()
            && seg.first >= index
        {
            let name = seg.name.clone();
            self.disk.remove(&name)?;
            self.segments.pop();
            self.active_dirty = false;
            self.sync_dir()?;
        }
        if let Some(seg) = self.segments.last()
            && seg.last >= index
        {
            let name = seg.name.clone();
            let offset = offset_of(self.disk.as_ref(), seg, index)?;
            self.disk.truncate(&name, offset)?;
            self.disk.sync(&name)?;
            self.stats.fsyncs += 1;
            self.active_dirty = false;
            let seg = self.segments.last_mut().expect("checked above");
            seg.bytes = offset;
            seg.last = index - 1;
        }
        self.last_index = index - 1;
        self.update_segment_stats();
        Ok(())
    }

    fn write_records(&mut self, entries: &[Entry]) -> Result<(), StorageError> {
        let mut pos = 0;
        let mut buf = Vec::new();
        while pos < entries.len() {
            let index = entries[pos].index;
            let roll = match self.segments.last() {
                None => true,
                Some(seg) => seg.last + 1 != index || seg.bytes >= self.opts.segment_bytes,
            };
            if roll {
                // Close the current segment durably first: only the last segment may be unsynced.
                self.sync_active()?;
                let name = segment_name(index);
                self.segments.push(Segment { name, first: index, last: index - 1, bytes: 0 });
                self.dir_dirty = true;
            }
            let seg_bytes = self.segments.last().map_or(0, |s| s.bytes);
            buf.clear();
            let chunk = pos;
            loop {
                encode_record(&entries[pos], &mut buf);
                pos += 1;
                if pos == entries.len() || seg_bytes + buf.len() as u64 >= self.opts.segment_bytes {
                    break;
                }
            }
            let seg = self.segments.last_mut().expect("a segment was ensured above");
            if let Err(e) = self.disk.append(&seg.name, &buf) {
                if e.is_fd_exhaustion() {
                    self.stopped_before(&entries[..chunk], roll);
                }
                return Err(e.into());
            }
            #[cfg(debug_assertions)]
            verify_appended(self.disk.as_ref(), seg, &buf);
            seg.bytes += buf.len() as u64;
            seg.last = entries[pos - 1].index;
            self.active_dirty = true;
            self.stats.bytes_written += buf.len() as u64;
        }
        self.stats.entries_appended += entries.len() as u64;
        self.last_index = entries[entries.len() - 1].index;
        self.update_segment_stats();
        Ok(())
    }

    /// An append could not open its file (out of descriptors; nothing of that chunk written):
    /// keeps the entries `written` before it, forgets the segment it was starting (`rolled`; its
    /// file was never created) and remembers where a retry of the same append resumes (an
    /// earlier interruption's mark stays if this attempt wrote nothing).
    fn stopped_before(&mut self, written: &[Entry], rolled: bool) {
        if rolled {
            self.segments.pop();
        }
        if let Some(last) = written.last() {
            self.stats.entries_appended += written.len() as u64;
            self.last_index = last.index;
            self.interrupted_append = Some((last.index, last.term));
        }
        self.update_segment_stats();
    }
}

mod recovery;
mod segment;
mod state_files;
#[cfg(test)]
mod tests;

/// A snapshot file to write, from [`RaftStorage::snapshot_writer`].
#[must_use = "the snapshot is saved only once this has run"]
pub struct SnapshotWrite {
    disk: Arc<dyn Disk>,
    bytes: Vec<u8>,
}

impl SnapshotWrite {
    /// Writes the snapshot file atomically and durably (after a crash it holds the old or the
    /// new snapshot).
    pub fn run(&self) -> Result<(), DiskError> {
        self.disk.write_atomic(SNAPSHOT_FILE, &self.bytes)
    }

    /// Bytes of the file.
    pub fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Never true (a snapshot file has a header).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// Log segments [`RaftStorage::compact_later`] took out of the log, still to unlink.
#[must_use = "the segments stay on disk until run"]
pub struct FreedSegments {
    disk: Arc<dyn Disk>,
    names: Vec<String>,
}

impl FreedSegments {
    /// True if there is nothing to unlink.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Unlinks the segments oldest first, stopping at the first failure (so the files left are
    /// a contiguous run that recovery removes, covered by the snapshot).
    pub fn run(self) {
        for name in &self.names {
            if let Err(e) = self.disk.remove(name) {
                tracing::warn!(segment = %name, error = %e, "unlinking a compacted log segment failed; a restart removes it");
                return;
            }
        }
    }
}

use recovery::*;
pub use recovery::{UnvouchedTail, unvouched_tail};
use segment::*;
use state_files::*;
