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

use super::types::{
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
const RECORD_HEADER: usize = 8;
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
        let (segments, entries) = rec.read_log(snap_index)?;
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

        let mut stats = rec.stats;
        let repaired = rec.notes;
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
        self.mutate(|s| {
            if head.index <= s.last_index {
                s.truncate_from(head.index)?;
            }
            s.write_records(entries)
        })
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
        if hs.term != self.written_hard_state.term || hs.vote != self.written_hard_state.vote {
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
    /// snapshot's index); the removals are durable on return.
    pub fn compact(&mut self, upto: Index) -> Result<(), StorageError> {
        self.check_writable()?;
        let snapshot = self.snapshot.as_ref().map_or(0, |m| m.index);
        if upto > snapshot {
            return Err(StorageError::CompactBeyondSnapshot { upto, snapshot });
        }
        let n = self.segments.iter().take_while(|seg| seg.last <= upto).count();
        if n == 0 {
            return Ok(());
        }
        self.mutate(|s| {
            if n == s.segments.len() {
                s.active_dirty = false;
            }
            for seg in s.segments.drain(..n).collect::<Vec<_>>() {
                s.disk.remove(&seg.name)?;
            }
            s.sync_dir()?;
            s.update_segment_stats();
            Ok(())
        })
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

    /// Runs a mutation; any failure in it poisons the storage (the disk state is unknown).
    fn mutate<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T, StorageError>) -> Result<T, StorageError> {
        let r = f(self);
        if let Err(e) = &r {
            tracing::warn!(error = %e, "raft storage write failed; poisoned until restart");
            self.poisoned = true;
        }
        r
    }

    fn sync_active(&mut self) -> Result<(), StorageError> {
        if self.active_dirty
            && let Some(seg) = self.segments.last()
        {
            self.disk.sync(&seg.name)?;
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
        self.write_atomic(HARD_STATE_FILE, &encode_hard_state(&hs))?;
        self.written_hard_state = hs;
        Ok(())
    }

    fn update_segment_stats(&mut self) {
        self.stats.segments = self.segments.len();
        self.stats.log_bytes = self.segments.iter().map(|s| s.bytes).sum();
    }

    /// Removes the persisted entries from `index` on, durably, before anything overwrites them.
    fn truncate_from(&mut self, index: Index) -> Result<(), StorageError> {
        debug_assert!(index > self.first_index() - 1 && index <= self.last_index);
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
            loop {
                encode_record(&entries[pos], &mut buf);
                pos += 1;
                if pos == entries.len() || seg_bytes + buf.len() as u64 >= self.opts.segment_bytes {
                    break;
                }
            }
            let seg = self.segments.last_mut().expect("a segment was ensured above");
            self.disk.append(&seg.name, &buf)?;
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
}

// ---------------------------------------------------------------------------------------------
// Encodings
// ---------------------------------------------------------------------------------------------

fn segment_name(first: Index) -> String {
    format!("{SEGMENT_PREFIX}{first:020}{SEGMENT_SUFFIX}")
}

fn is_segment_name(name: &str) -> bool {
    parse_segment_name(name).is_some()
}

fn parse_segment_name(name: &str) -> Option<Index> {
    let digits = name.strip_prefix(SEGMENT_PREFIX)?.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn record_crc(len: [u8; 4], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&len), payload)
}

/// Appends one record for `e` to `buf` (its data is at most [`MAX_ENTRY_DATA`] bytes).
fn encode_record(e: &Entry, buf: &mut Vec<u8>) {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; RECORD_HEADER]);
    e.encode(buf);
    let len = u32::try_from(buf.len() - start - RECORD_HEADER).expect("entry size checked by append");
    let len = len.to_le_bytes();
    let crc = record_crc(len, &buf[start + RECORD_HEADER..]);
    buf[start..start + 4].copy_from_slice(&len);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn encode_hard_state(hs: &HardState) -> Vec<u8> {
    let mut b = Vec::with_capacity(HARD_STATE_LEN);
    b.extend_from_slice(HARD_STATE_MAGIC);
    b.extend_from_slice(&hs.term.to_le_bytes());
    b.push(u8::from(hs.vote.is_some()));
    b.extend_from_slice(&hs.vote.unwrap_or(0).to_le_bytes());
    b.extend_from_slice(&hs.commit.to_le_bytes());
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(b.len(), HARD_STATE_LEN);
    b
}

/// Terms in a log never decrease (from the snapshot's on); a file where they do was not written
/// by this storage.
fn check_terms_never_decrease(
    segments: &[Segment],
    entries: &[Entry],
    snap_term: u64,
) -> Result<(), StorageError> {
    let mut prev = snap_term;
    for e in entries {
        if e.term < prev {
            let file =
                segments.iter().find(|s| s.first <= e.index && e.index <= s.last).map_or("", |s| &s.name);
            return Err(corrupt(
                file,
                0,
                format!(
                    "entry {} has term {} after term {prev}: terms in a log never decrease",
                    e.index, e.term
                ),
            ));
        }
        prev = e.term;
    }
    Ok(())
}

fn corrupt(file: &str, offset: usize, reason: impl Into<String>) -> StorageError {
    StorageError::Corrupt { file: file.to_string(), offset: offset as u64, reason: reason.into() }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn decode_hard_state(file: &str, b: &[u8]) -> Result<HardState, StorageError> {
    if b.len() != HARD_STATE_LEN {
        return Err(corrupt(
            file,
            b.len().min(HARD_STATE_LEN),
            format!("{} bytes, expected {HARD_STATE_LEN}", b.len()),
        ));
    }
    if &b[..4] != HARD_STATE_MAGIC {
        return Err(corrupt(file, 0, "bad magic"));
    }
    if crc32c::crc32c(&b[..29]) != u32_at(b, 29) {
        return Err(corrupt(file, 29, "checksum mismatch"));
    }
    let vote = match b[12] {
        0 => None,
        1 => Some(u64_at(b, 13)),
        tag => return Err(corrupt(file, 12, format!("invalid vote flag {tag}"))),
    };
    let (term, commit) = (u64_at(b, 4), u64_at(b, 21));
    if term > MAX_TERM {
        return Err(corrupt(file, 4, format!("term {term} is beyond the ceiling {MAX_TERM}")));
    }
    if commit > MAX_INDEX {
        return Err(corrupt(file, 21, format!("commit index {commit} is beyond the ceiling {MAX_INDEX}")));
    }
    if vote == Some(0) {
        return Err(corrupt(file, 13, "vote for node 0"));
    }
    Ok(HardState { term, vote, commit })
}

fn encode_snapshot(s: &Snapshot) -> Vec<u8> {
    let mut conf = Vec::new();
    s.meta.conf_state.encode(&mut conf);
    let mut b = Vec::with_capacity(4 + 8 + 8 + 4 + conf.len() + 8 + s.data.len() + 4);
    b.extend_from_slice(SNAPSHOT_MAGIC);
    b.extend_from_slice(&s.meta.index.to_le_bytes());
    b.extend_from_slice(&s.meta.term.to_le_bytes());
    b.extend_from_slice(&(conf.len() as u32).to_le_bytes());
    b.extend_from_slice(&conf);
    b.extend_from_slice(&(s.data.len() as u64).to_le_bytes());
    b.extend_from_slice(&s.data);
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

fn decode_snapshot(file: &str, b: &[u8]) -> Result<Snapshot, StorageError> {
    const FIXED: usize = 4 + 8 + 8 + 4;
    if b.len() < FIXED + 8 + 4 {
        return Err(corrupt(file, b.len(), "file too short for a snapshot"));
    }
    if &b[..4] != SNAPSHOT_MAGIC {
        return Err(corrupt(file, 0, "bad magic"));
    }
    let body = b.len() - 4;
    if crc32c::crc32c(&b[..body]) != u32_at(b, body) {
        return Err(corrupt(file, body, "checksum mismatch"));
    }
    let index = u64_at(b, 4);
    let term = u64_at(b, 12);
    if index > MAX_INDEX {
        return Err(corrupt(file, 4, format!("index {index} is beyond the ceiling {MAX_INDEX}")));
    }
    if term > MAX_TERM {
        return Err(corrupt(file, 12, format!("term {term} is beyond the ceiling {MAX_TERM}")));
    }
    let conf_len = u32_at(b, 20) as usize;
    let conf_end = FIXED.checked_add(conf_len).filter(|&e| e + 8 <= body);
    let Some(conf_end) = conf_end else {
        return Err(corrupt(file, 20, format!("configuration length {conf_len} runs past the end")));
    };
    let conf_state = ConfState::decode(&b[FIXED..conf_end])
        .map_err(|e| corrupt(file, FIXED, format!("configuration: {e}")))?;
    let data_len = u64_at(b, conf_end);
    let data_start = conf_end + 8;
    if usize::try_from(data_len).ok().and_then(|n| data_start.checked_add(n)) != Some(body) {
        return Err(corrupt(file, conf_end, format!("data length {data_len} does not match the file size")));
    }
    Ok(Snapshot {
        meta: SnapshotMeta { index, term, conf_state },
        data: Bytes::copy_from_slice(&b[data_start..body]),
    })
}

// ---------------------------------------------------------------------------------------------
// Reading segments
// ---------------------------------------------------------------------------------------------

/// Why reading a segment stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BadKind {
    /// A record header of zeros: an unsynced write that never landed (a hole), always torn.
    Zero,
    /// A record running past the end of the file: torn, unless a valid record follows.
    Partial,
    /// A checksum mismatch: torn (the last record) if nothing valid follows.
    Checksum,
    /// Cannot come from a crash: a record that checks out but is not the entry expected there.
    Hard,
}

#[derive(Debug)]
struct BadRecord {
    offset: usize,
    kind: BadKind,
    reason: String,
}

/// Reads records from `data`, expecting indexes from `first`; calls `f(offset, entry)` for each
/// good one until `f` returns false. Returns the offset reached and, if it stopped early on bad
/// bytes, why.
fn scan_records(
    data: &[u8],
    first: Index,
    mut f: impl FnMut(usize, Entry) -> bool,
) -> (usize, Option<BadRecord>) {
    let mut off = 0;
    let mut expected = first;
    while off < data.len() {
        match read_record(data, off) {
            Ok((entry, next)) => {
                if entry.index != expected {
                    let reason = format!("entry index {} where {expected} was expected", entry.index);
                    return (off, Some(BadRecord { offset: off, kind: BadKind::Hard, reason }));
                }
                if entry.term > MAX_TERM {
                    let reason = format!(
                        "entry {} has term {}, beyond the ceiling {MAX_TERM}",
                        entry.index, entry.term
                    );
                    return (off, Some(BadRecord { offset: off, kind: BadKind::Hard, reason }));
                }
                if !f(off, entry) {
                    return (off, None);
                }
                off = next;
                expected += 1;
            }
            Err(bad) => return (off, Some(bad)),
        }
    }
    (off, None)
}

/// Reads one record at `off`: the entry and the offset after it.
fn read_record(data: &[u8], off: usize) -> Result<(Entry, usize), BadRecord> {
    let bad = |kind, reason: &str| BadRecord { offset: off, kind, reason: reason.to_string() };
    let rest = &data[off..];
    if rest.len() < RECORD_HEADER {
        if rest.iter().all(|&b| b == 0) {
            return Err(bad(BadKind::Zero, "zero-filled tail"));
        }
        return Err(bad(BadKind::Partial, "partial record header at the end of the file"));
    }
    let len_bytes = [rest[0], rest[1], rest[2], rest[3]];
    let len = u32::from_le_bytes(len_bytes) as usize;
    if len == 0 && u32_at(rest, 4) == 0 {
        return Err(bad(BadKind::Zero, "zero-filled record header (a write that never landed)"));
    }
    if len == 0 {
        return Err(bad(BadKind::Checksum, "zero record length"));
    }
    if len > rest.len() - RECORD_HEADER {
        return Err(bad(BadKind::Partial, "record runs past the end of the file"));
    }
    let payload = &rest[RECORD_HEADER..RECORD_HEADER + len];
    if record_crc(len_bytes, payload) != u32_at(rest, 4) {
        return Err(bad(BadKind::Checksum, "record checksum mismatch"));
    }
    let entry = Entry::decode(payload).map_err(|e| BadRecord {
        offset: off,
        kind: BadKind::Hard,
        reason: format!("record checks out but does not decode: {e}"),
    })?;
    Ok((entry, off + RECORD_HEADER + len))
}

/// True if a record with a good checksum holding an entry at or after `index` starts anywhere
/// after `from`: the bad bytes before it are not a torn tail.
fn valid_record_after(data: &[u8], from: usize, index: Index) -> bool {
    // Every entry takes more than 8 bytes, so a real later record has an index in this window.
    let max_index = index.saturating_add((data.len() / RECORD_HEADER) as u64);
    (from..data.len().saturating_sub(RECORD_HEADER)).any(|p| {
        plausible_record(&data[p..], index, max_index)
            && matches!(read_record(data, p), Ok((e, _)) if e.index >= index)
    })
}

/// A cheap check (no checksum, no copy) that `rest` starts with a record whose entry has an
/// index in `min..=max` and whose encoding fills the record exactly, so the scan for a valid
/// record over garbage costs O(n), not O(n²) checksummed bytes.
fn plausible_record(rest: &[u8], min: Index, max: Index) -> bool {
    fn varint(b: &[u8], at: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let byte = *b.get(*at)?;
            *at += 1;
            v |= u64::from(byte & 0x7f).checked_shl(7 * i)?;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    if rest.len() < RECORD_HEADER {
        return false;
    }
    let len = u32_at(rest, 0) as usize;
    let Some(payload) = rest.get(RECORD_HEADER..RECORD_HEADER.saturating_add(len)) else { return false };
    let mut at = 0;
    let (Some(_term), Some(index)) = (varint(payload, &mut at), varint(payload, &mut at)) else {
        return false;
    };
    if index < min || index > max || payload.get(at).is_none_or(|&k| k > 2) {
        return false;
    }
    at += 1;
    varint(payload, &mut at).is_some_and(|n| usize::try_from(n).ok() == payload.len().checked_sub(at))
}

/// Offset of the record holding `index` in `seg` (which holds it).
fn offset_of(disk: &dyn Disk, seg: &Segment, index: Index) -> Result<u64, StorageError> {
    let data = disk.read(&seg.name)?;
    let mut found = None;
    let (_, bad) = scan_records(&data, seg.first, |off, e| {
        if e.index == index {
            found = Some(off as u64);
            false
        } else {
            true
        }
    });
    match (found, bad) {
        (Some(off), _) => Ok(off),
        (None, Some(bad)) => Err(corrupt(&seg.name, bad.offset, bad.reason)),
        (None, None) => Err(corrupt(&seg.name, data.len(), format!("entry {index} is missing"))),
    }
}

// ---------------------------------------------------------------------------------------------
// Recovery
// ---------------------------------------------------------------------------------------------

struct Recovery<'a> {
    disk: &'a dyn Disk,
    opts: &'a StorageOptions,
    notes: Vec<String>,
    stats: StorageStats,
}

impl Recovery<'_> {
    fn note(&mut self, note: String) {
        tracing::warn!(repair = %note, "raft storage recovery");
        self.notes.push(note);
    }

    fn sync_dir(&mut self) -> Result<(), StorageError> {
        self.disk.sync_dir()?;
        self.stats.dir_fsyncs += 1;
        Ok(())
    }

    /// Leftovers of interrupted `write_atomic`s: never renamed, so never in effect.
    fn remove_temporaries(&mut self) -> Result<(), StorageError> {
        let ours = [HARD_STATE_FILE, SNAPSHOT_FILE, INSTALL_FILE].map(|f| format!("{f}.tmp"));
        let tmps: Vec<String> = self.disk.list("")?.into_iter().filter(|n| ours.contains(n)).collect();
        for name in &tmps {
            self.disk.remove(name)?;
        }
        if !tmps.is_empty() {
            self.sync_dir()?;
        }
        Ok(())
    }

    fn finish_interrupted_install(&mut self) -> Result<(), StorageError> {
        let bytes = match self.disk.read(INSTALL_FILE) {
            Ok(b) => b,
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let snap = decode_snapshot(INSTALL_FILE, &bytes)?;
        for name in self.segment_names()? {
            self.disk.remove(&name.1)?;
        }
        self.sync_dir()?;
        self.disk.rename(INSTALL_FILE, SNAPSHOT_FILE)?;
        self.sync_dir()?;
        self.note(format!(
            "finished an interrupted snapshot install at index {}: the log before it was dropped",
            snap.meta.index
        ));
        Ok(())
    }

    fn read_hard_state(&mut self) -> Result<HardState, StorageError> {
        match self.disk.read(HARD_STATE_FILE) {
            Ok(b) => decode_hard_state(HARD_STATE_FILE, &b),
            Err(e) if e.is_not_found() => Ok(HardState::default()),
            Err(e) => Err(e.into()),
        }
    }

    fn read_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        match self.disk.read(SNAPSHOT_FILE) {
            Ok(b) => decode_snapshot(SNAPSHOT_FILE, &b).map(Some),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn segment_names(&self) -> Result<Vec<(Index, String)>, StorageError> {
        let mut out: Vec<(Index, String)> = self
            .disk
            .list(SEGMENT_PREFIX)?
            .into_iter()
            .filter_map(|n| parse_segment_name(&n).map(|i| (i, n)))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Reads the log after the snapshot at `snap`, repairing what it may; returns the segments
    /// kept and the entries after the snapshot. Everything returned is durable.
    fn read_log(&mut self, snap: Index) -> Result<(Vec<Segment>, Vec<Entry>), StorageError> {
        let names = self.segment_names()?;
        let mut segments: Vec<Segment> = Vec::new();
        let mut entries = Vec::new();
        let mut removed_any = false;
        // Where the log is cut: the position in `names` of the first segment not kept whole, the
        // byte offset to truncate it at (`None`: drop it too), and why.
        let mut cut: Option<(usize, Option<u64>, String)> = None;

        for (k, (first, name)) in names.iter().enumerate() {
            let (first, is_last) = (*first, k + 1 == names.len());
            if first == 0 || first > MAX_INDEX {
                return Err(corrupt(
                    name,
                    0,
                    format!("segment name gives first index {first}, outside 1..={MAX_INDEX}"),
                ));
            }
            // Wholly covered by the snapshot: the next segment starts at or before snap + 1.
            if names.get(k + 1).is_some_and(|(next, _)| *next <= snap + 1) {
                self.disk.remove(name)?;
                removed_any = true;
                continue;
            }
            let prev_last = segments.last().map_or(snap, |s| s.last);
            let gap = match segments.last() {
                Some(_) => first != prev_last + 1,
                None => first > snap + 1,
            };
            if gap {
                let reason =
                    format!("segment starts at index {first} but the log before it ends at {prev_last}");
                self.refuse_or_note(name, 0, &reason)?;
                cut = Some((k, None, format!("{name}: {reason}")));
                break;
            }
            let data = self.disk.read(name)?;
            let mut seg = Segment { name: name.clone(), first, last: first - 1, bytes: 0 };
            let (end, bad) = scan_records(&data, first, |_, e| {
                seg.last = e.index;
                if e.index > snap {
                    entries.push(e);
                }
                true
            });
            seg.bytes = end as u64;
            let next_index = seg.last + 1;
            segments.push(seg);
            if let Some(bad) = bad {
                let torn = is_last
                    && match bad.kind {
                        BadKind::Zero => true,
                        BadKind::Partial | BadKind::Checksum => {
                            !valid_record_after(&data, bad.offset + 1, next_index)
                        }
                        BadKind::Hard => false,
                    };
                let what = format!("{name} byte {}: {}", bad.offset, bad.reason);
                if torn {
                    let n = data.len() - bad.offset;
                    cut = Some((k, Some(bad.offset as u64), format!("{what} (torn tail of {n} bytes)")));
                } else {
                    self.refuse_or_note(name, bad.offset, &bad.reason)?;
                    cut = Some((k, Some(bad.offset as u64), what));
                }
                break;
            }
        }

        if let Some((k, offset, why)) = cut {
            // Drop every segment after the cut, newest first (each removal durable), then
            // truncate the cut one.
            let first_dropped = if offset.is_some() { k + 1 } else { k };
            let mut dropped = Vec::new();
            for (_, name) in names[first_dropped..].iter().rev() {
                self.disk.remove(name)?;
                self.sync_dir()?;
                dropped.push(name.clone());
            }
            if let Some(offset) = offset {
                let seg = segments.last().expect("the cut segment was kept");
                self.disk.truncate(&seg.name, offset)?;
                self.disk.sync(&seg.name)?;
                self.stats.fsyncs += 1;
            }
            let mut note = format!("truncated the log at {why}");
            if !dropped.is_empty() {
                dropped.reverse();
                note.push_str(&format!("; removed the later segments {}", dropped.join(", ")));
            }
            self.note(note);
        }

        // An empty last segment (cut at its start, or created but never written) is dropped, and
        // so are segments wholly covered by the snapshot.
        if segments.last().is_some_and(|s| s.bytes == 0) {
            let seg = segments.pop().expect("checked above");
            self.disk.remove(&seg.name)?;
            removed_any = true;
        }
        let covered = segments.iter().take_while(|s| s.last <= snap).count();
        for seg in segments.drain(..covered) {
            self.disk.remove(&seg.name)?;
            removed_any = true;
        }
        // Make what is returned durable (a process crash may have left it only in the page cache).
        if let Some(seg) = segments.last() {
            self.disk.sync(&seg.name)?;
            self.stats.fsyncs += 1;
        }
        if removed_any || !segments.is_empty() {
            self.sync_dir()?;
        }
        Ok((segments, entries))
    }

    /// Refuses to start on corruption unless repairing, in which case the caller cuts the log.
    fn refuse_or_note(&mut self, file: &str, offset: usize, reason: &str) -> Result<(), StorageError> {
        if self.opts.repair { Ok(()) } else { Err(corrupt(file, offset, reason)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::types::EntryKind;
    use crate::rt::{DiskFault, SimDisk, rng_from_seed};
    use proptest::prelude::*;

    fn ent(index: Index, term: u64) -> Entry {
        let data = Bytes::from(format!("entry {index} of term {term} {}", "x".repeat((index % 7) as usize)));
        Entry { term, index, kind: EntryKind::Normal, data }
    }

    fn ents(range: std::ops::RangeInclusive<Index>, term: u64) -> Vec<Entry> {
        range.map(|i| ent(i, term)).collect()
    }

    fn small(segment_bytes: u64) -> StorageOptions {
        StorageOptions { segment_bytes, repair: false }
    }

    fn open(d: &SimDisk, opts: StorageOptions) -> (RaftStorage, Recovered) {
        RaftStorage::open(Arc::new(d.clone()), opts).expect("open")
    }

    fn open_err(d: &SimDisk, opts: StorageOptions) -> StorageError {
        RaftStorage::open(Arc::new(d.clone()), opts).expect_err("open must refuse")
    }

    fn snap(index: Index, term: u64) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta { index, term, conf_state: ConfState::with_voters([1, 2, 3]) },
            data: Bytes::from(format!("state machine at {index}")),
        }
    }

    fn segments(d: &SimDisk) -> Vec<String> {
        d.list(SEGMENT_PREFIX).unwrap()
    }

    /// Byte offset of each record in a segment written from `es` in one go.
    fn offsets(es: &[Entry]) -> Vec<usize> {
        let mut off = 0;
        es.iter()
            .map(|e| {
                let at = off;
                let mut buf = Vec::new();
                encode_record(e, &mut buf);
                off += buf.len();
                at
            })
            .collect()
    }

    #[test]
    fn round_trip_across_restart() {
        let d = SimDisk::new();
        let (mut st, rec) = open(&d, small(200));
        assert_eq!(rec, Recovered::default());
        assert_eq!((st.first_index(), st.last_index()), (1, 0));
        let all = ents(1..=50, 1);
        for chunk in all.chunks(7) {
            st.append(chunk).unwrap();
        }
        let hs = HardState { term: 1, vote: Some(2), commit: 0 };
        st.set_hard_state(hs).unwrap();
        st.sync().unwrap();
        assert!(segments(&d).len() > 3, "small segments roll over: {:?}", segments(&d));
        assert_eq!(st.stats().segments, segments(&d).len());
        drop(st);

        let (mut st, rec) = open(&d, small(200));
        assert_eq!(rec.entries, all);
        assert_eq!(rec.hard_state, hs);
        assert!(rec.repaired.is_empty(), "{:?}", rec.repaired);
        assert_eq!((st.first_index(), st.last_index()), (1, 50));
        // Appending after a restart continues the last segment or starts the next one.
        st.append(&ents(51..=60, 2)).unwrap();
        st.sync().unwrap();
        d.power_fail(None);
        let (_, rec) = open(&d, small(200));
        assert_eq!(rec.entries.len(), 60);
        assert_eq!(rec.entries[50..], ents(51..=60, 2)[..]);
    }

    #[test]
    fn recovered_state_restores_a_raft_core() {
        use crate::raft::{Raft, RaftConfig};
        let d = SimDisk::new();
        let (mut st, _) = open(&d, small(200));
        st.append(&ents(1..=30, 1)).unwrap();
        st.sync().unwrap();
        st.set_hard_state(HardState { term: 1, vote: Some(1), commit: 20 }).unwrap();
        st.save_snapshot(&snap(10, 1)).unwrap();
        drop(st);
        d.power_fail(None);
        let (_, rec) = open(&d, small(200));
        let restored = rec.into_restored_state(ConfState::with_voters([1, 2, 3]));
        let raft = Raft::new(RaftConfig::new(1), restored, rng_from_seed(1)).expect("the core accepts it");
        assert_eq!(raft.commit_index(), 20);
    }

    #[test]
    fn unsynced_appends_are_lost_on_power_failure_synced_ones_kept() {
        let d = SimDisk::new();
        let (mut st, _) = open(&d, small(300));
        st.append(&ents(1..=10, 1)).unwrap();
        st.sync().unwrap();
        st.append(&ents(11..=20, 1)).unwrap();
        drop(st);
        d.power_fail(None);
        let (_, rec) = open(&d, small(300));
        assert_eq!(rec.entries, ents(1..=10, 1));

        // With a torn last write, the synced entries survive and at most a prefix of the rest.
        let mut saw_extra = false;
        for seed in 0..40 {
            let d = SimDisk::new();
            let (mut st, _) = open(&d, small(1 << 20));
            st.append(&ents(1..=10, 1)).unwrap();
            st.sync().unwrap();
            if seed % 2 == 0 {
                st.append(&ents(11..=20, 1)).unwrap();
            } else {
                // The earlier unsynced write is dropped whole: a zero-filled hole before the torn one.
                st.append(&ents(11..=15, 1)).unwrap();
                st.append(&ents(16..=20, 1)).unwrap();
            }
            drop(st);
            d.power_fail(Some(&mut rng_from_seed(seed)));
            let (_, rec) = open(&d, small(1 << 20));
            assert!(rec.entries.len() >= 10, "seed {seed}: lost synced entries");
            assert_eq!(rec.entries[..], ents(1..=20, 1)[..rec.entries.len()], "seed {seed}");
            saw_extra |= rec.entries.len() > 10;
        }
        assert!(saw_extra, "some tear keeps part of the unsynced write");
    }

    #[test]
    fn torn_tail_at_every_byte_of_the_last_record_is_truncated() {
        let base_entries = ents(1..=5, 1);
        let record = |e: &Entry| {
            let mut buf = Vec::new();
            encode_record(e, &mut buf);
            buf
        };
        let base: Vec<u8> = base_entries.iter().flat_map(record).collect();
        let last = record(&ent(6, 1));
        let name = segment_name(1);
        let mut tails: Vec<(String, Vec<u8>)> =
            (1..last.len()).map(|k| (format!("prefix {k}"), last[..k].to_vec())).collect();
        tails.push(("zero tail".into(), vec![0; 37]));
        tails.push(("hole then a landed record".into(), [vec![0; last.len()], record(&ent(7, 1))].concat()));
        let mut bad_crc = last.clone();
        *bad_crc.last_mut().unwrap() ^= 1;
        tails.push(("checksum-bad last record".into(), bad_crc));
        for (what, tail) in tails {
            let d = SimDisk::new();
            d.write(&name, &[base.clone(), tail].concat()).unwrap();
            d.sync(&name).unwrap();
            d.sync_dir().unwrap();
            let (mut st, rec) = open(&d, small(1 << 20));
            assert_eq!(rec.entries, base_entries, "{what}");
            assert_eq!(rec.repaired.len(), 1, "{what}: {:?}", rec.repaired);
            assert!(
                rec.repaired[0].contains(&name) && rec.repaired[0].contains("torn"),
                "{what}: {:?}",
                rec.repaired
            );
            assert_eq!(d.size(&name).unwrap(), Some(base.len() as u64), "{what}: truncated at the tear");
            // The log continues cleanly after the repair, and the repair was durable.
            st.append(&ents(6..=7, 2)).unwrap();
            st.sync().unwrap();
            d.power_fail(None);
            let (_, rec) = open(&d, small(1 << 20));
            assert!(rec.repaired.is_empty(), "{what}");
            assert_eq!(rec.entries[5..], ents(6..=7, 2)[..], "{what}");
        }
    }

    #[test]
    fn a_flipped_byte_mid_segment_is_refused_and_repair_truncates_there() {
        let all = ents(1..=10, 1);
        let offs = offsets(&all);
        let name = segment_name(1);
        // A payload byte, and a length byte, of record 4.
        for flip in [offs[3] + 12, offs[3]] {
            let d = SimDisk::new();
            let (mut st, _) = open(&d, small(1 << 20));
            st.append(&all).unwrap();
            st.sync().unwrap();
            drop(st);
            d.corrupt(&name, flip).unwrap();
            let err = open_err(&d, small(1 << 20));
            match &err {
                StorageError::Corrupt { file, offset, .. } => {
                    assert_eq!((file.as_str(), *offset), (name.as_str(), offs[3] as u64), "flip at {flip}")
                }
                other => panic!("expected Corrupt, got {other:?}"),
            }
            let msg = err.to_string();
            assert!(msg.contains(&name) && msg.contains(&format!("byte {}", offs[3])), "{msg}");
            assert!(msg.contains("start with --repair to truncate the log there"), "{msg}");

            let (_, rec) = open(&d, StorageOptions { repair: true, ..small(1 << 20) });
            assert_eq!(rec.entries, ents(1..=3, 1));
            assert_eq!(rec.repaired.len(), 1);
            assert!(rec.repaired[0].contains(&name), "{:?}", rec.repaired);
            let (_, rec) = open(&d, small(1 << 20));
            assert_eq!(rec.entries, ents(1..=3, 1), "the repair was durable");
            assert!(rec.repaired.is_empty());
        }
    }

    #[test]
    fn a_bad_record_in_an_earlier_segment_is_refused_and_repair_drops_later_segments() {
        let d = SimDisk::new();
        let (mut st, _) = open(&d, small(150));
        st.append(&ents(1..=20, 1)).unwrap();
        st.sync().unwrap();
        drop(st);
        let segs = segments(&d);
        assert!(segs.len() >= 3);
        // Flip the last byte of the first segment: its last record, but not the log's.
        let first_len = d.size(&segs[0]).unwrap().unwrap() as usize;
        d.corrupt(&segs[0], first_len - 1).unwrap();
        let err = open_err(&d, small(150));
        assert!(matches!(&err, StorageError::Corrupt { file, .. } if file == &segs[0]), "{err}");
        let (st, rec) = open(&d, StorageOptions { repair: true, ..small(150) });
        let kept = rec.entries.len() as u64;
        assert_eq!(rec.entries, ents(1..=kept, 1));
        assert_eq!(st.last_index(), kept);
        assert_eq!(segments(&d), vec![segs[0].clone()]);
        assert!(rec.repaired[0].contains(&segs[1]), "notes the dropped segments: {:?}", rec.repaired);
    }

    #[test]
    fn a_missing_middle_segment_is_refused() {
        let d = SimDisk::new();
        let (mut st, _) = open(&d, small(150));
        st.append(&ents(1..=20, 1)).unwrap();
        st.sync().unwrap();
        drop(st);
        let segs = segments(&d);
        d.remove(&segs[1]).unwrap();
        d.sync_dir().unwrap();
        let err = open_err(&d, small(150));
        assert!(matches!(&err, StorageError::Corrupt { file, offset: 0, .. } if file == &segs[2]), "{err}");
        let (_, rec) = open(&d, StorageOptions { repair: true, ..small(150) });
        let first_seg_last = parse_segment_name(&segs[1]).unwrap() - 1;
        assert_eq!(rec.entries, ents(1..=first_seg_last, 1));
        assert_eq!(segments(&d), vec![segs[0].clone()]);
    }

    #[test]
    fn conflicting_suffix_is_truncated_across_a_segment_boundary() {
        for at in ["boundary", "middle"] {
            let d = SimDisk::new();
            let (mut st, _) = open(&d, small(150));
            st.append(&ents(1..=30, 1)).unwrap();
            st.sync().unwrap();
            let segs = segments(&d);
            assert!(segs.len() >= 4);
            let third = parse_segment_name(&segs[2]).unwrap();
            let from = if at == "boundary" { third } else { third - 1 };
            let new = ents(from..=from + 4, 2);
            st.append(&new).unwrap();
            assert_eq!(st.last_index(), from + 4);
            assert_eq!(st.stats().truncations, 1);
            let now = segments(&d);
            assert!(now.len() <= 4, "{at}: later segments removed: {now:?}");
            for s in &segs[3..] {
                assert!(
                    !now.contains(s) || parse_segment_name(s).unwrap() <= from + 4,
                    "{at}: {s} should be gone"
                );
            }
            // The truncation is durable even before the new entries are synced.
            drop(st);
            d.power_fail(None);
            let (mut st, rec) = open(&d, small(150));
            let old = ents(1..=from - 1, 1);
            assert_eq!(rec.entries[..old.len()], old[..], "{at}");
            // Closing a segment may have made some of the new entries durable, never old ones.
            assert_eq!(rec.entries[old.len()..], new[..rec.entries.len() - old.len()], "{at}");
            st.append(&new).unwrap();
            st.sync().unwrap();
            drop(st);
            d.power_fail(None);
            let (_, rec) = open(&d, small(150));
            let mut want = ents(1..=from - 1, 1);
            want.extend(new.clone());
            assert_eq!(rec.entries, want, "{at}");
        }
    }

    #[test]
    fn compaction_removes_files_and_restart_still_works() {
        let d = SimDisk::new();
        let (mut st, _) = open(&d, small(150));
        st.append(&ents(1..=40, 1)).unwrap();
        st.sync().unwrap();
        let before = segments(&d);
        assert!(matches!(st.compact(5), Err(StorageError::CompactBeyondSnapshot { upto: 5, snapshot: 0 })));
        st.save_snapshot(&snap(25, 1)).unwrap();
        assert_eq!(st.first_index(), 26);
        st.compact(25).unwrap();
        let after = segments(&d);
        assert!(after.len() < before.len(), "{before:?} -> {after:?}");
        assert!(parse_segment_name(&after[0]).unwrap() <= 26, "the segment holding 26 is kept: {after:?}");
        assert_eq!(st.stats().segments, after.len());
        assert!(matches!(st.compact(26), Err(StorageError::CompactBeyondSnapshot { .. })));
        assert!(!st.is_poisoned(), "a refused call changes nothing");
        drop(st);
        d.power_fail(None);
        let (mut st, rec) = open(&d, small(150));
        assert_eq!(rec.snapshot, Some(snap(25, 1)));
        assert_eq!(rec.entries, ents(26..=40, 1));
        st.append(&ents(41..=45, 1)).unwrap();
        st.sync().unwrap();
        // Compacting everything (the active segment included) and appending again.
        st.save_snapshot(&snap(45, 1)).unwrap();
        st.compact(45).unwrap();
        assert!(segments(&d).is_empty());
        st.append(&ents(46..=47, 2)).unwrap();
        st.sync().unwrap();
        drop(st);
        d.power_fail(None);
        let (_, rec) = open(&d, small(150));
        assert_eq!(rec.snapshot, Some(snap(45, 1)));
        assert_eq!(rec.entries, ents(46..=47, 2));
    }

    #[test]
    fn restart_drops_segments_covered_by_the_snapshot() {
        let d = SimDisk::new();
        let (mut st, _) = open(&d, small(150));
        st.append(&ents(1..=40, 1)).unwrap();
        st.sync().unwrap();
        st.save_snapshot(&snap(30, 1)).unwrap();
        let before = segments(&d).len();
        drop(st);
        let (st, rec) = open(&d, small(150));
        assert_eq!(rec.entries, ents(31..=40, 1));
        assert!(segments(&d).len() < before);
        assert_eq!((st.first_index(), st.last_index()), (31, 40));
    }

    #[test]
    fn install_snapshot_replaces_the_log() {
        let d = SimDisk::new();
        let (mut st, _) = open(&d, small(150));
        st.append(&ents(1..=30, 1)).unwrap();
        st.sync().unwrap();
        st.install_snapshot(&snap(50, 3)).unwrap();
        assert!(segments(&d).is_empty());
        assert_eq!((st.first_index(), st.last_index()), (51, 50));
        assert!(matches!(
            st.append(&ents(53..=54, 3)),
            Err(StorageError::AppendOutOfRange { index: 53, .. })
        ));
        st.append(&ents(51..=55, 3)).unwrap();
        st.sync().unwrap();
        drop(st);
        d.power_fail(None);
        let (mut st, rec) = open(&d, small(150));
        assert_eq!(rec.snapshot, Some(snap(50, 3)));
        assert_eq!(rec.entries, ents(51..=55, 3));
        // A snapshot behind the log's end still replaces all of it.
        st.install_snapshot(&snap(52, 3)).unwrap();
        assert!(matches!(st.install_snapshot(&snap(51, 3)), Err(StorageError::SnapshotBehind { .. })));
        drop(st);
        d.power_fail(None);
        let (_, rec) = open(&d, small(150));
        assert_eq!(rec.snapshot, Some(snap(52, 3)));
        assert!(rec.entries.is_empty());
    }

    #[test]
    fn an_interrupted_install_is_finished_by_recovery() {
        let d = SimDisk::new();
        let (mut st, _) = open(&d, small(150));
        st.append(&ents(1..=30, 1)).unwrap();
        st.sync().unwrap();
        st.save_snapshot(&snap(10, 1)).unwrap();
        drop(st);
        // The crash came right after the commit point.
        d.write_atomic(INSTALL_FILE, &encode_snapshot(&snap(20, 2))).unwrap();
        d.power_fail(None);
        let (st, rec) = open(&d, small(150));
        assert_eq!(rec.snapshot, Some(snap(20, 2)));
        assert!(rec.entries.is_empty(), "the old log after the installed snapshot is gone");
        assert!(segments(&d).is_empty());
        assert!(rec.repaired.iter().any(|n| n.contains("install")), "{:?}", rec.repaired);
        assert_eq!(st.last_index(), 20);
        assert!(d.size(INSTALL_FILE).unwrap().is_none());
    }

    #[test]
    fn hard_state_survives_a_crash_only_once_set() {
        let d = SimDisk::new();
        let (mut st, rec) = open(&d, small(1 << 20));
        assert_eq!(rec.hard_state, HardState::default());
        st.append(&ents(1..=5, 1)).unwrap();
        st.sync().unwrap();
        let hs = HardState { term: 1, vote: Some(1), commit: 0 };
        st.set_hard_state(hs).unwrap();
        drop(st);
        d.power_fail(None);
        let (mut st, rec) = open(&d, small(1 << 20));
        assert_eq!(rec.hard_state, hs);
        // A commit-only change is deferred ...
        st.set_hard_state(HardState { commit: 5, ..hs }).unwrap();
        assert_eq!(st.hard_state().commit, 5);
        drop(st);
        d.power_fail(None);
        let (mut st, rec) = open(&d, small(1 << 20));
        assert_eq!(rec.hard_state, hs, "commit-only change is not yet durable");
        // ... until flushed.
        st.set_hard_state(HardState { commit: 5, ..hs }).unwrap();
        st.flush_hard_state().unwrap();
        drop(st);
        d.power_fail(None);
        let (mut st, rec) = open(&d, small(1 << 20));
        assert_eq!(rec.hard_state.commit, 5);
        // A vote change is durable at once, and a commit beyond the log is clamped on recovery.
        let hs2 = HardState { term: 2, vote: Some(3), commit: 9 };
        st.set_hard_state(hs2).unwrap();
        drop(st);
        d.power_fail(None);
        let (_, rec) = open(&d, small(1 << 20));
        assert_eq!(rec.hard_state, HardState { commit: 5, ..hs2 });
        assert!(rec.repaired.iter().any(|n| n.contains("clamped")), "{:?}", rec.repaired);
    }

    #[test]
    fn corrupt_hard_state_or_snapshot_is_refused() {
        for (file, offset) in [(HARD_STATE_FILE, 6), (SNAPSHOT_FILE, 30)] {
            let d = SimDisk::new();
            let (mut st, _) = open(&d, small(1 << 20));
            st.append(&ents(1..=5, 1)).unwrap();
            st.sync().unwrap();
            st.set_hard_state(HardState { term: 1, vote: Some(1), commit: 5 }).unwrap();
            st.save_snapshot(&snap(5, 1)).unwrap();
            drop(st);
            d.corrupt(file, offset).unwrap();
            for repair in [false, true] {
                let err = open_err(&d, StorageOptions { repair, ..small(1 << 20) });
                assert!(matches!(&err, StorageError::Corrupt { file: f, .. } if f == file), "{err}");
                assert!(err.to_string().contains(file), "{err}");
            }
        }
    }

    #[test]
    fn injected_faults_return_errors_and_poison_further_writes() {
        type Fault = (DiskFault, fn(&mut RaftStorage) -> Result<(), StorageError>);
        let cases: Vec<(&str, Fault)> = vec![
            ("append fails", (DiskFault::FailWrites(1), |st| st.append(&ents(11..=12, 1)))),
            (
                "fsync fails",
                (DiskFault::FailSyncs(1), |st| {
                    st.append(&ents(11..=12, 1))?;
                    st.sync()
                }),
            ),
            ("disk full", (DiskFault::Capacity(0), |st| st.append(&ents(11..=12, 1)))),
            (
                "hard state write fails",
                (DiskFault::FailWrites(1), |st| {
                    st.set_hard_state(HardState { term: 5, vote: None, commit: 0 })
                }),
            ),
            (
                "hard state fsync fails",
                (DiskFault::FailSyncs(1), |st| {
                    st.set_hard_state(HardState { term: 5, vote: None, commit: 0 })
                }),
            ),
            ("snapshot fails", (DiskFault::FailSyncs(1), |st| st.save_snapshot(&snap(8, 1)))),
            ("install fails", (DiskFault::FailWrites(1), |st| st.install_snapshot(&snap(20, 2)))),
        ];
        for (what, (fault, op)) in cases {
            let d = SimDisk::new();
            let (mut st, _) = open(&d, small(150));
            st.append(&ents(1..=10, 1)).unwrap();
            st.sync().unwrap();
            let d_used = d.used_bytes();
            let fault = match fault {
                DiskFault::Capacity(_) => DiskFault::Capacity(d_used + 10),
                f => f,
            };
            d.inject(fault);
            let err = op(&mut st).expect_err(what);
            assert!(matches!(err, StorageError::Disk(_)), "{what}: {err:?}");
            assert!(st.is_poisoned(), "{what}");
            d.clear_faults();
            assert!(matches!(st.append(&ents(11..=11, 1)), Err(StorageError::Poisoned)), "{what}");
            assert!(matches!(st.sync(), Err(StorageError::Poisoned)), "{what}");
            assert!(matches!(
                st.set_hard_state(HardState { term: 9, vote: None, commit: 0 }),
                Err(StorageError::Poisoned)
            ));
            assert!(matches!(st.compact(0), Err(StorageError::Poisoned)), "{what}");
            drop(st);
            // Restart and recover: what was synced before the fault is all there.
            d.power_fail(None);
            let (mut st, rec) = open(&d, small(150));
            assert!(rec.entries.len() >= 10 || rec.snapshot.is_some(), "{what}");
            st.append(&[ent(st.last_index() + 1, 3)]).unwrap();
            st.sync().unwrap();
        }
    }

    #[test]
    fn append_validates_its_input() {
        let d = SimDisk::new();
        let (mut st, _) = open(&d, small(1 << 20));
        st.append(&[]).unwrap();
        assert!(matches!(
            st.append(&ents(2..=3, 1)),
            Err(StorageError::AppendOutOfRange { index: 2, first: 1, next: 1 })
        ));
        let gap = vec![ent(1, 1), ent(3, 1)];
        assert!(matches!(st.append(&gap), Err(StorageError::NotContiguous { prev: 1, got: 3 })));
        assert!(!st.is_poisoned());
        st.append(&ents(1..=3, 1)).unwrap();
    }

    #[test]
    fn sync_is_one_fsync_per_segment_touched() {
        let d = SimDisk::new();
        let (mut st, _) = open(&d, small(1 << 20));
        let base = st.stats();
        st.append(&ents(1..=100, 1)).unwrap();
        st.append(&ents(101..=200, 1)).unwrap();
        st.sync().unwrap();
        let s = st.stats();
        assert_eq!(s.fsyncs - base.fsyncs, 1);
        assert_eq!(s.dir_fsyncs - base.dir_fsyncs, 1, "the new segment's name");
        st.append(&ents(201..=300, 1)).unwrap();
        st.sync().unwrap();
        st.sync().unwrap();
        assert_eq!(st.stats().fsyncs - s.fsyncs, 1);
        assert_eq!(st.stats().dir_fsyncs, s.dir_fsyncs);
    }

    // ---- model-based property test ---------------------------------------------------------

    #[derive(Clone, Debug)]
    enum Op {
        Append { back: u8, n: u8 },
        Sync,
        Term { vote: Option<u64> },
        Commit,
        Flush,
        Snapshot { back: u8, compact: bool },
        Install { ahead: u8 },
        PowerFail { tear: Option<u64> },
        Reopen,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u8..6, 1u8..12).prop_map(|(back, n)| Op::Append { back, n }),
            4 => Just(Op::Sync),
            1 => proptest::option::of(1u64..4).prop_map(|vote| Op::Term { vote }),
            1 => Just(Op::Commit),
            1 => Just(Op::Flush),
            1 => (0u8..8, any::<bool>()).prop_map(|(back, compact)| Op::Snapshot { back, compact }),
            1 => (0u8..6).prop_map(|ahead| Op::Install { ahead }),
            2 => proptest::option::of(any::<u64>()).prop_map(|tear| Op::PowerFail { tear }),
            1 => Just(Op::Reopen),
        ]
    }

    /// What must be on disk: the snapshot and hard state written, the log as appended
    /// (`current`), and the part of it that is surely durable (`durable`).
    #[derive(Clone, Debug, Default)]
    struct Model {
        snap: Option<Snapshot>,
        current: Vec<Entry>,
        durable: Vec<Entry>,
        hs: HardState,
        written: HardState,
        counter: u64,
    }

    impl Model {
        fn snap_index(&self) -> Index {
            self.snap.as_ref().map_or(0, |s| s.meta.index)
        }
        fn last(&self) -> Index {
            self.current.last().map_or(self.snap_index(), |e| e.index)
        }
        fn after(log: &mut Vec<Entry>, index: Index) {
            log.retain(|e| e.index > index);
        }
        /// Checks a recovery against the model and adopts it.
        fn recovered(&mut self, rec: Recovered, crashed: bool) -> Result<(), TestCaseError> {
            prop_assert_eq!(&rec.snapshot, &self.snap);
            let n = rec.entries.len();
            prop_assert!(
                n <= self.current.len() && rec.entries[..] == self.current[..n],
                "not a prefix of the log"
            );
            prop_assert!(
                n >= self.durable.len() && rec.entries[..self.durable.len()] == self.durable[..],
                "lost durable entries"
            );
            if !crashed {
                prop_assert_eq!(n, self.current.len(), "a restart without power failure loses nothing");
            }
            let last = rec.entries.last().map_or(self.snap_index(), |e| e.index);
            prop_assert_eq!(rec.hard_state.term, self.written.term);
            prop_assert_eq!(rec.hard_state.vote, self.written.vote);
            prop_assert_eq!(rec.hard_state.commit, self.written.commit.min(last));
            let restored = rec.clone().into_restored_state(ConfState::with_voters([1, 2, 3]));
            let core = crate::raft::Raft::new(crate::raft::RaftConfig::new(1), restored, rng_from_seed(1));
            prop_assert!(core.is_ok(), "the core refuses the recovered state: {:?}", core.err());
            self.current = rec.entries.clone();
            self.durable = rec.entries;
            self.hs = rec.hard_state;
            Ok(())
        }
    }

    /// A disk that fails the n-th mutating call (write, truncate, fsync, rename, remove) from
    /// when it is armed, doing nothing for it: a crash at any step of an operation.
    #[derive(Clone, Debug)]
    struct FlakyDisk {
        inner: SimDisk,
        countdown: Arc<std::sync::atomic::AtomicI64>,
    }

    impl FlakyDisk {
        fn arm(&self, nth: Option<u8>) {
            self.countdown.store(nth.map_or(-1, i64::from), std::sync::atomic::Ordering::SeqCst);
        }
        fn step(&self, op: &'static str, name: &str) -> Result<(), DiskError> {
            if self.countdown.fetch_sub(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                let source = std::io::Error::other("injected crash point");
                return Err(DiskError::Io { op, path: name.to_string(), source });
            }
            Ok(())
        }
    }

    impl Disk for FlakyDisk {
        fn read(&self, name: &str) -> Result<Vec<u8>, DiskError> {
            self.inner.read(name)
        }
        fn size(&self, name: &str) -> Result<Option<u64>, DiskError> {
            self.inner.size(name)
        }
        fn append(&self, name: &str, data: &[u8]) -> Result<(), DiskError> {
            self.step("append", name)?;
            self.inner.append(name, data)
        }
        fn write(&self, name: &str, data: &[u8]) -> Result<(), DiskError> {
            self.step("write", name)?;
            self.inner.write(name, data)
        }
        fn truncate(&self, name: &str, len: u64) -> Result<(), DiskError> {
            self.step("truncate", name)?;
            self.inner.truncate(name, len)
        }
        fn sync(&self, name: &str) -> Result<(), DiskError> {
            self.step("fsync", name)?;
            self.inner.sync(name)
        }
        fn rename(&self, from: &str, to: &str) -> Result<(), DiskError> {
            self.step("rename", from)?;
            self.inner.rename(from, to)
        }
        fn remove(&self, name: &str) -> Result<(), DiskError> {
            self.step("remove", name)?;
            self.inner.remove(name)
        }
        fn list(&self, prefix: &str) -> Result<Vec<String>, DiskError> {
            self.inner.list(prefix)
        }
        fn sync_dir(&self) -> Result<(), DiskError> {
            self.step("fsync_dir", "")?;
            self.inner.sync_dir()
        }
    }

    fn is_prefix(short: &[Entry], long: &[Entry]) -> bool {
        short.len() <= long.len() && short[..] == long[..short.len()]
    }

    /// Runs `ops`, each optionally with a crash at its n-th disk step (then power failure and
    /// recovery), checking every recovery against the model.
    fn run(ops: Vec<(Op, Option<u8>)>) -> Result<(), TestCaseError> {
        let d = FlakyDisk { inner: SimDisk::new(), countdown: Arc::new((-1).into()) };
        let opts = small(256);
        let reopen = |d: &FlakyDisk| RaftStorage::open(Arc::new(d.clone()), opts.clone());
        let (mut st, _) = reopen(&d).unwrap();
        let mut m = Model::default();
        for (op, crash_at) in ops {
            let mut after = m.clone();
            // Disarmed again after the operation (or at the next one, if it was skipped).
            d.arm(crash_at);
            let result: Result<(), StorageError> = match op {
                Op::Append { back, n } => {
                    let back = u64::from(back).min(m.current.len() as u64);
                    let start = m.last() + 1 - back;
                    let es: Vec<Entry> = (0..u64::from(n))
                        .map(|k| {
                            after.counter += 1;
                            let data =
                                format!("{} {}", after.counter, "y".repeat((after.counter % 50) as usize));
                            Entry {
                                term: m.hs.term,
                                index: start + k,
                                kind: EntryKind::Normal,
                                data: data.into(),
                            }
                        })
                        .collect();
                    let keep = (start - m.snap_index() - 1) as usize;
                    if back > 0 {
                        after.durable.truncate(keep);
                    }
                    after.current.truncate(keep);
                    after.current.extend(es.iter().cloned());
                    st.append(&es)
                }
                Op::Sync => {
                    after.durable = after.current.clone();
                    st.sync()
                }
                Op::Term { vote } => {
                    after.hs.term += 1;
                    after.hs.vote = vote;
                    after.written = after.hs;
                    st.set_hard_state(after.hs)
                }
                Op::Commit => {
                    let durable_last = m.durable.last().map_or(m.snap_index(), |e| e.index);
                    after.hs.commit = m.hs.commit.max(durable_last);
                    st.set_hard_state(after.hs)
                }
                Op::Flush => {
                    after.written = after.hs;
                    st.flush_hard_state()
                }
                Op::Snapshot { back, compact } => {
                    let s = m.last().saturating_sub(u64::from(back));
                    if s <= m.snap_index() {
                        d.arm(None);
                        continue;
                    }
                    let term = m.current[(s - m.snap_index() - 1) as usize].term;
                    let snapshot = Snapshot { data: Bytes::from(format!("sm {s}")), ..snap(s, term) };
                    after.snap = Some(snapshot.clone());
                    after.written = after.hs;
                    Model::after(&mut after.current, s);
                    Model::after(&mut after.durable, s);
                    st.save_snapshot(&snapshot).and_then(|()| if compact { st.compact(s) } else { Ok(()) })
                }
                Op::Install { ahead } => {
                    let s = m.last() + u64::from(ahead);
                    if s == 0 {
                        d.arm(None);
                        continue;
                    }
                    let snapshot =
                        Snapshot { data: Bytes::from(format!("leader {s}")), ..snap(s, m.hs.term) };
                    after.snap = Some(snapshot.clone());
                    after.written = after.hs;
                    after.current.clear();
                    after.durable.clear();
                    st.install_snapshot(&snapshot)
                }
                Op::PowerFail { tear } => {
                    drop(st);
                    d.arm(None);
                    d.inner.power_fail(tear.map(rng_from_seed).as_mut());
                    let (s, rec) = reopen(&d)
                        .map_err(|e| TestCaseError::fail(format!("recovery after a power failure: {e}")))?;
                    st = s;
                    m.recovered(rec, true)?;
                    continue;
                }
                Op::Reopen => {
                    drop(st);
                    d.arm(None);
                    let (s, rec) = reopen(&d).unwrap();
                    st = s;
                    m.recovered(rec, false)?;
                    continue;
                }
            };
            d.arm(None);
            match result {
                Ok(()) => m = after,
                Err(e) => {
                    prop_assert!(crash_at.is_some(), "unexpected error {e}");
                    prop_assert!(st.is_poisoned() && matches!(st.sync(), Err(StorageError::Poisoned)));
                    // The node crashes here: power fails and it recovers either state, or a
                    // mixture the model allows (a conflicting suffix partly removed).
                    drop(st);
                    d.inner.power_fail(None);
                    let (s, rec) = reopen(&d)
                        .map_err(|e| TestCaseError::fail(format!("recovery after a crash in {op:?}: {e}")))?;
                    st = s;
                    let lower_before = if after.snap == m.snap {
                        let n = m.durable.iter().zip(&after.durable).take_while(|(a, b)| a == b).count();
                        &m.durable[..n]
                    } else {
                        &m.durable[..]
                    };
                    let as_before = rec.snapshot == m.snap
                        && is_prefix(lower_before, &rec.entries)
                        && is_prefix(&rec.entries, &m.current);
                    let as_after = rec.snapshot == after.snap
                        && is_prefix(&after.durable, &rec.entries)
                        && is_prefix(&rec.entries, &after.current);
                    prop_assert!(
                        as_before || as_after,
                        "crash in {:?} at step {:?}: recovered {:?}",
                        op,
                        crash_at,
                        rec
                    );
                    // The hard state file holds one of the two; the model adopts the one it holds.
                    let on_disk = match d.inner.read(HARD_STATE_FILE) {
                        Ok(b) => decode_hard_state(HARD_STATE_FILE, &b).unwrap(),
                        Err(_) => HardState::default(),
                    };
                    prop_assert!(
                        on_disk == m.written || on_disk == after.written,
                        "hard state {:?}",
                        on_disk
                    );
                    let last = rec
                        .entries
                        .last()
                        .map_or(rec.snapshot.as_ref().map_or(0, |s| s.meta.index), |e| e.index);
                    prop_assert_eq!((rec.hard_state.term, rec.hard_state.vote), (on_disk.term, on_disk.vote));
                    prop_assert_eq!(rec.hard_state.commit, on_disk.commit.min(last));
                    m = if as_after { after } else { m };
                    m.snap = rec.snapshot.clone();
                    m.written = on_disk;
                    m.current = rec.entries.clone();
                    m.durable = rec.entries;
                    m.hs = rec.hard_state;
                }
            }
            prop_assert_eq!(st.last_index(), m.last());
            prop_assert_eq!(st.first_index(), m.snap_index() + 1);
        }
        drop(st);
        d.arm(None);
        d.inner.power_fail(None);
        let (_, rec) = reopen(&d).unwrap();
        m.recovered(rec, true)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn recovery_matches_a_model_of_what_was_durable(ops in proptest::collection::vec(op(), 1..60)) {
            run(ops.into_iter().map(|op| (op, None)).collect())?;
        }

        #[test]
        fn a_crash_at_any_disk_step_recovers_a_state_the_model_allows(
            ops in proptest::collection::vec((op(), proptest::option::weighted(0.2, 0u8..8)), 1..60),
        ) {
            run(ops)?;
        }
    }

    proptest! {
        /// Whatever bytes are on disk, recovery returns a result (Ok or Corrupt), never panics,
        /// and what it returns is contiguous.
        #[test]
        fn recovery_never_panics_on_arbitrary_bytes(
            tail in proptest::collection::vec(any::<u8>(), 0..600),
            flips in proptest::collection::vec((0usize..2000, any::<u8>()), 0..4),
            state in proptest::collection::vec(any::<u8>(), 0..64),
            which in 0u8..3,
        ) {
            let d = SimDisk::new();
            let (mut st, _) = open(&d, small(1 << 20));
            st.append(&ents(1..=20, 1)).unwrap();
            st.sync().unwrap();
            drop(st);
            let name = segment_name(1);
            let mut seg = d.read(&name).unwrap();
            seg.extend_from_slice(&tail);
            for (at, x) in flips {
                let n = seg.len();
                seg[at % n] ^= x;
            }
            d.write(&name, &seg).unwrap();
            match which {
                0 => d.write(HARD_STATE_FILE, &state).unwrap(),
                1 => d.write(SNAPSHOT_FILE, &state).unwrap(),
                _ => {}
            }
            for repair in [false, true] {
                match RaftStorage::open(Arc::new(d.clone()), StorageOptions { repair, ..small(1 << 20) }) {
                    Ok((st, rec)) => {
                        prop_assert!(rec.entries.windows(2).all(|w| w[1].index == w[0].index + 1));
                        prop_assert_eq!(st.last_index(), rec.entries.last().map_or(0, |e| e.index));
                    }
                    Err(StorageError::Corrupt { .. }) => prop_assert!(!repair || which < 2),
                    Err(e) => prop_assert!(false, "unexpected error {e}"),
                }
            }
        }
    }

    #[test]
    fn a_large_garbage_tail_is_handled_quickly() {
        let d = SimDisk::new();
        let (mut st, _) = open(&d, small(64 << 20));
        st.append(&ents(1..=10, 1)).unwrap();
        st.sync().unwrap();
        drop(st);
        let name = segment_name(1);
        let mut rng = rng_from_seed(3);
        let mut garbage = vec![0u8; 4 << 20];
        rand::RngCore::fill_bytes(&mut rng, &mut garbage);
        d.append(&name, &garbage).unwrap();
        d.sync(&name).unwrap();
        let (_, rec) = open(&d, small(64 << 20));
        assert_eq!(rec.entries, ents(1..=10, 1));
        assert_eq!(rec.repaired.len(), 1);
    }

    // ---- hand-made files with impossible values ------------------------------------------

    /// Issue 11: nothing a file says may panic a restart. Each hand-made file with a value no
    /// node writes (well-formed, checksums right) is a typed error naming that file.
    #[test]
    fn impossible_persisted_values_are_typed_errors_naming_the_file() {
        let hs = |term, vote, commit| encode_hard_state(&HardState { term, vote, commit });
        let seg = |first: Index, es: &[Entry]| {
            let mut b = Vec::new();
            for e in es {
                encode_record(e, &mut b);
            }
            (segment_name(first), b)
        };
        // (files to write, the file the error must name, a word its reason must contain)
        type Case = (Vec<(String, Vec<u8>)>, String, &'static str);
        let cases: Vec<Case> = vec![
            (vec![(HARD_STATE_FILE.into(), hs(u64::MAX, None, 0))], HARD_STATE_FILE.into(), "term"),
            (vec![(HARD_STATE_FILE.into(), hs(1, None, u64::MAX))], HARD_STATE_FILE.into(), "commit"),
            (vec![(HARD_STATE_FILE.into(), hs(1, Some(0), 0))], HARD_STATE_FILE.into(), "node 0"),
            (
                vec![(SNAPSHOT_FILE.into(), encode_snapshot(&snap(u64::MAX, 1)))],
                SNAPSHOT_FILE.into(),
                "index",
            ),
            (vec![(SNAPSHOT_FILE.into(), encode_snapshot(&snap(5, u64::MAX)))], SNAPSHOT_FILE.into(), "term"),
            (vec![(INSTALL_FILE.into(), encode_snapshot(&snap(u64::MAX, 1)))], INSTALL_FILE.into(), "index"),
            (vec![seg(0, &[])], segment_name(0), "first index 0"),
            (
                vec![seg(u64::MAX - 1, &ents(u64::MAX - 1..=u64::MAX - 1, 1))],
                segment_name(u64::MAX - 1),
                "outside",
            ),
            (vec![seg(1, &ents(1..=3, u64::MAX))], segment_name(1), "ceiling"),
            (vec![seg(1, &[ent(1, 5), ent(2, 3)])], segment_name(1), "never decrease"),
        ];
        for (files, file, what) in cases {
            let d = SimDisk::new();
            for (name, bytes) in &files {
                d.write_atomic(name, bytes).unwrap();
            }
            let err = open_err(&d, small(1 << 20));
            let StorageError::Corrupt { file: f, reason, .. } = &err else { panic!("{file}: {err:?}") };
            assert_eq!(f, &file, "{err}");
            assert!(reason.contains(what), "{file}: {err}");
        }
    }

    /// A crash after the entries of a new term were synced but before the hard state naming that
    /// term was written leaves the log ahead of the hard state: recovery raises the term (no
    /// message depended on it) instead of handing the core a state it refuses.
    #[test]
    fn entries_newer_than_the_hard_state_term_raise_it() {
        use crate::raft::{Raft, RaftConfig};
        let d = SimDisk::new();
        let (mut st, _) = open(&d, small(1 << 20));
        st.set_hard_state(HardState { term: 2, vote: Some(1), commit: 0 }).unwrap();
        st.append(&[ent(1, 2), ent(2, 3)]).unwrap();
        st.sync().unwrap();
        drop(st);
        let (_, rec) = open(&d, small(1 << 20));
        assert_eq!(rec.hard_state, HardState { term: 3, vote: None, commit: 0 });
        let restored = rec.into_restored_state(ConfState::with_voters([1, 2, 3]));
        Raft::new(RaftConfig::new(1), restored, rng_from_seed(1)).expect("the core accepts it");
    }

    // ---- real files -------------------------------------------------------------------------

    #[cfg(not(madsim))]
    #[test]
    #[allow(clippy::disallowed_methods)]
    fn file_disk_round_trip() {
        use crate::rt::FileDisk;
        let dir = std::env::temp_dir().join(format!("esc-raft-storage-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let opts = small(1024);
        let reopen = || RaftStorage::open(Arc::new(FileDisk::open(&dir).unwrap()), opts.clone()).unwrap();
        let (mut st, rec) = reopen();
        assert_eq!(rec, Recovered::default());
        st.append(&ents(1..=100, 1)).unwrap();
        st.append(&ents(90..=120, 2)).unwrap();
        st.sync().unwrap();
        st.set_hard_state(HardState { term: 2, vote: Some(1), commit: 50 }).unwrap();
        st.save_snapshot(&snap(50, 1)).unwrap();
        st.compact(50).unwrap();
        let segs = st.stats().segments;
        drop(st);
        let (st, rec) = reopen();
        let mut want = ents(51..=89, 1);
        want.extend(ents(90..=120, 2));
        assert_eq!(rec.entries, want);
        assert_eq!(rec.snapshot, Some(snap(50, 1)));
        assert_eq!(rec.hard_state, HardState { term: 2, vote: Some(1), commit: 50 });
        assert_eq!(st.stats().segments, segs);
        drop(st);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
