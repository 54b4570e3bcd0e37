//! Recovery at open: finish an interrupted snapshot install, read the hard state, the snapshot and
//! every segment, cut a torn tail, refuse (or, asked to, repair) corruption.

use super::*;

pub(super) struct Recovery<'a> {
    pub(super) disk: &'a dyn Disk,
    pub(super) opts: &'a StorageOptions,
    pub(super) notes: Vec<String>,
    pub(super) stats: StorageStats,
}

impl Recovery<'_> {
    pub(super) fn note(&mut self, note: String) {
        tracing::warn!(repair = %note, "raft storage recovery");
        self.notes.push(note);
    }

    pub(super) fn sync_dir(&mut self) -> Result<(), StorageError> {
        self.disk.sync_dir()?;
        self.stats.dir_fsyncs += 1;
        Ok(())
    }

    /// Leftovers of interrupted `write_atomic`s: never renamed, so never in effect.
    pub(super) fn remove_temporaries(&mut self) -> Result<(), StorageError> {
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

    pub(super) fn finish_interrupted_install(&mut self) -> Result<(), StorageError> {
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

    pub(super) fn read_hard_state(&mut self) -> Result<HardState, StorageError> {
        match self.disk.read(HARD_STATE_FILE) {
            Ok(b) => decode_hard_state(HARD_STATE_FILE, &b),
            Err(e) if e.is_not_found() => Ok(HardState::default()),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) fn read_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        match self.disk.read(SNAPSHOT_FILE) {
            Ok(b) => decode_snapshot(SNAPSHOT_FILE, &b).map(Some),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub(super) fn segment_names(&self) -> Result<Vec<(Index, String)>, StorageError> {
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
    /// kept and the entries after the snapshot. Everything returned is durable. Entries up to
    /// `synced_through` (the written hard state's commit index) were durable before that hard state
    /// was written, so a bad record among them is corruption (bit rot), never a torn tail.
    pub(super) fn read_log(
        &mut self,
        snap: Index,
        synced_through: Index,
    ) -> Result<(Vec<Segment>, Vec<Entry>), StorageError> {
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
                let torn = is_last && is_torn_tail(&data, &bad, next_index, synced_through);
                let what = format!("{name} byte {}: {}", bad.offset, bad.reason);
                if torn && crate::planted!(TornTailKept) {
                    segments.last_mut().expect("pushed above").bytes = data.len() as u64;
                } else if torn {
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
            self.cut_log(&names, &segments, k, offset, &why)?;
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

    /// Cuts the log at segment `k` of `names`: drops every segment after it, newest first (each
    /// removal durable), then truncates segment `k` at `offset` (the last of `segments`), or drops
    /// it too when `offset` is `None`; notes `why`.
    fn cut_log(
        &mut self,
        names: &[(Index, String)],
        segments: &[Segment],
        k: usize,
        offset: Option<u64>,
        why: &str,
    ) -> Result<(), StorageError> {
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
        Ok(())
    }

    /// Refuses to start on corruption unless repairing, in which case the caller cuts the log.
    pub(super) fn refuse_or_note(
        &mut self,
        file: &str,
        offset: usize,
        reason: &str,
    ) -> Result<(), StorageError> {
        if self.opts.repair { Ok(()) } else { Err(corrupt(file, offset, reason)) }
    }
}

/// Whether a bad record in the last segment, at the position of entry `next_index`, is the torn
/// tail of an unsynced write (cut) rather than corruption (refused). Not when the entry was synced
/// (`next_index <= synced_through`: the hard state that says so was written after its fsync) —
/// found by the simulator: bit rot in the last record of a member's log looked torn and silently
/// removed a committed entry (seed 508). Otherwise a zeroed or partial record, or a bad checksum
/// with no valid record after it, is torn.
fn is_torn_tail(data: &[u8], bad: &BadRecord, next_index: Index, synced_through: Index) -> bool {
    if next_index <= synced_through {
        return false;
    }
    match bad.kind {
        BadKind::Zero => true,
        BadKind::Partial | BadKind::Checksum => !valid_record_after(data, bad.offset + 1, next_index),
        BadKind::Hard => false,
    }
}

/// The newest log segment on a disk, and where in it the bytes begin that recovery cannot tell
/// from a torn write ([`unvouched_tail`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnvouchedTail {
    /// The newest segment's file name.
    pub segment: String,
    /// Bytes at and after this offset are unvouched; the segment's length when none are.
    pub from: u64,
}

/// Where recovery would take damage in the newest segment for a torn write and cut it instead of
/// refusing to start: its last record, when that holds an entry past the written hard state's
/// commit index. A bad record anywhere else is refused (a valid record follows it, or the hard
/// state, written after its fsync, vouches for it); nothing on disk vouches for the last record
/// of an uncommitted batch ("The trade-off" above). `None` without a segment. Read `disk` as a
/// power failure would leave it (the simulator's bit-rot fault spares these bytes).
pub fn unvouched_tail(disk: &dyn Disk) -> Result<Option<UnvouchedTail>, StorageError> {
    let mut names: Vec<(Index, String)> = disk
        .list(SEGMENT_PREFIX)?
        .into_iter()
        .filter_map(|n| parse_segment_name(&n).map(|i| (i, n)))
        .collect();
    names.sort();
    let Some((first, segment)) = names.pop() else { return Ok(None) };
    let commit = match disk.read(HARD_STATE_FILE) {
        Ok(b) => decode_hard_state(HARD_STATE_FILE, &b)?.commit,
        Err(e) if e.is_not_found() => 0,
        Err(e) => return Err(e.into()),
    };
    let data = disk.read(&segment)?;
    let mut last: Option<(usize, Index)> = None;
    let (end, _) = scan_records(&data, first, |off, e| {
        last = Some((off, e.index));
        true
    });
    let from = match last {
        Some((off, index)) if index > commit => off as u64,
        // No valid record: whatever bytes there are, recovery reads them as a torn tail.
        None => 0,
        Some(_) => end as u64,
    };
    Ok(Some(UnvouchedTail { segment, from: from.min(data.len() as u64) }))
}
