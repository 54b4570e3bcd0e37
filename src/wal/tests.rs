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
fn a_bad_last_record_the_hard_state_says_was_committed_is_corruption_not_a_torn_tail() {
    // Bit rot in the last record looks exactly like a torn write; but the hard state's commit
    // index was written after that record's fsync, so the record was durable: refuse, never cut
    // (cutting silently removed a committed entry in the simulator, seed 508).
    let name = segment_name(1);
    for (commit, refused) in [(6, true), (5, false)] {
        let d = SimDisk::new();
        let (mut st, _) = open(&d, small(1 << 20));
        st.append(&ents(1..=6, 1)).unwrap();
        st.sync().unwrap();
        st.set_hard_state(HardState { term: 1, vote: Some(1), commit }).unwrap();
        st.flush_hard_state().unwrap();
        drop(st);
        let size = d.size(&name).unwrap().unwrap() as usize;
        d.corrupt(&name, size - 1).unwrap();
        if refused {
            match open_err(&d, small(1 << 20)) {
                StorageError::Corrupt { file, .. } => assert_eq!(file, name),
                other => panic!("expected Corrupt, got {other:?}"),
            }
        } else {
            let (_, rec) = open(&d, small(1 << 20));
            assert_eq!(rec.entries, ents(1..=5, 1), "an uncommitted bad tail is a torn write: cut");
            assert!(rec.repaired.iter().any(|n| n.contains("torn")), "{:?}", rec.repaired);
        }
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
    assert_eq!(segments(&d), before, "compaction does not fsync the directory");
    let (mut st, rec) = open(&d, small(150));
    assert_eq!(rec.snapshot, Some(snap(25, 1)));
    assert_eq!(rec.entries, ents(26..=40, 1));
    // The removals were not fsynced: the power failure brought the files back, covered by the
    // durable snapshot, and recovery removed them again.
    assert_eq!(segments(&d), after);
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

/// `compact_later` takes the segments out of the log at once and leaves the unlinks to run
/// later (off the driver's round): the log keeps working with the files still there, and a
/// crash before, during (after any prefix of the unlinks) or after them converges to the same
/// recovered log, with the covered files gone.
#[test]
fn deferred_compaction_unlinks_later_and_a_crash_at_any_point_converges() {
    let build = |d: &SimDisk| {
        let (mut st, _) = open(d, small(150));
        st.append(&ents(1..=40, 1)).unwrap();
        st.sync().unwrap();
        st.save_snapshot(&snap(25, 1)).unwrap();
        st
    };
    let reference = SimDisk::new();
    let mut st = build(&reference);
    st.compact(25).unwrap();
    let compacted = segments(&reference);
    let probe = SimDisk::new();
    let freed = build(&probe).compact_later(25).unwrap();
    let n = freed.names.len();
    assert!(n >= 2, "several segments freed: {:?}", freed.names);
    for done in 0..=n {
        for power_fail in [false, true] {
            let d = SimDisk::new();
            let mut st = build(&d);
            let before = segments(&d);
            let mut freed = st.compact_later(25).unwrap();
            assert_eq!(segments(&d), before, "nothing unlinked yet");
            assert_eq!((st.first_index(), st.stats().segments), (26, compacted.len()));
            // The log goes on while the files wait.
            st.append(&ents(41..=42, 1)).unwrap();
            st.sync().unwrap();
            let (unlinked, left) = freed.names.split_at(done);
            let (unlinked, left) = (unlinked.to_vec(), left.to_vec());
            freed.names.truncate(done);
            freed.run();
            let on_disk = segments(&d);
            assert!(
                unlinked.iter().all(|u| !on_disk.contains(u)) && left.iter().all(|l| on_disk.contains(l))
            );
            drop(st);
            if power_fail {
                d.power_fail(None);
            }
            let (_, rec) = open(&d, small(150));
            assert_eq!(rec.snapshot, Some(snap(25, 1)), "done {done}, power fail {power_fail}");
            assert_eq!(rec.entries, ents(26..=42, 1), "done {done}, power fail {power_fail}");
            assert!(
                segments(&d)
                    .iter()
                    .all(|name| parse_segment_name(name).unwrap()
                        >= parse_segment_name(&compacted[0]).unwrap()),
                "covered segments removed: {:?}",
                segments(&d)
            );
        }
    }
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
    assert!(matches!(st.append(&ents(53..=54, 3)), Err(StorageError::AppendOutOfRange { index: 53, .. })));
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
            (DiskFault::FailWrites(1), |st| st.set_hard_state(HardState { term: 5, vote: None, commit: 0 })),
        ),
        (
            "hard state fsync fails",
            (DiskFault::FailSyncs(1), |st| st.set_hard_state(HardState { term: 5, vote: None, commit: 0 })),
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
                // Like Raft, overwrite only entries above the commit index: the storage asserts
                // that a conflict never truncates committed entries.
                let uncommitted = m.last().saturating_sub(m.hs.commit);
                let back = u64::from(back).min(m.current.len() as u64).min(uncommitted);
                let start = m.last() + 1 - back;
                let es: Vec<Entry> = (0..u64::from(n))
                    .map(|k| {
                        after.counter += 1;
                        let data = format!("{} {}", after.counter, "y".repeat((after.counter % 50) as usize));
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
                let snapshot = Snapshot { data: Bytes::from(format!("leader {s}")), ..snap(s, m.hs.term) };
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
                prop_assert!(on_disk == m.written || on_disk == after.written, "hard state {:?}", on_disk);
                let last =
                    rec.entries.last().map_or(rec.snapshot.as_ref().map_or(0, |s| s.meta.index), |e| e.index);
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
        (vec![(SNAPSHOT_FILE.into(), encode_snapshot(&snap(u64::MAX, 1)))], SNAPSHOT_FILE.into(), "index"),
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

#[test]
fn a_conflict_above_the_commit_index_truncates() {
    let d = SimDisk::new();
    let (mut st, _) = open(&d, small(200));
    st.append(&ents(1..=10, 1)).unwrap();
    st.set_hard_state(HardState { term: 2, vote: None, commit: 5 }).unwrap();
    st.append(&ents(6..=8, 2)).unwrap();
    assert_eq!(st.last_index(), 8);
}

#[test]
#[should_panic(expected = "would drop committed entries")]
fn truncating_committed_entries_is_a_bug_that_panics() {
    let d = SimDisk::new();
    let (mut st, _) = open(&d, small(200));
    st.append(&ents(1..=10, 1)).unwrap();
    st.set_hard_state(HardState { term: 2, vote: None, commit: 5 }).unwrap();
    let _ = st.append(&ents(5..=6, 2));
}

/// A disk whose appends misbehave without an error: the debug re-read must catch it.
#[derive(Debug)]
struct SilentlyBadAppends {
    inner: SimDisk,
    /// Drop the append (else: flip its last byte).
    drop: bool,
}

impl Disk for SilentlyBadAppends {
    fn read(&self, name: &str) -> Result<Vec<u8>, DiskError> {
        self.inner.read(name)
    }
    fn size(&self, name: &str) -> Result<Option<u64>, DiskError> {
        self.inner.size(name)
    }
    fn append(&self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        if self.drop {
            return self.inner.append(name, &[]);
        }
        let mut bad = data.to_vec();
        if let Some(b) = bad.last_mut() {
            *b ^= 0x20;
        }
        self.inner.append(name, &bad)
    }
    fn write(&self, name: &str, data: &[u8]) -> Result<(), DiskError> {
        self.inner.write(name, data)
    }
    fn truncate(&self, name: &str, len: u64) -> Result<(), DiskError> {
        self.inner.truncate(name, len)
    }
    fn sync(&self, name: &str) -> Result<(), DiskError> {
        self.inner.sync(name)
    }
    fn rename(&self, from: &str, to: &str) -> Result<(), DiskError> {
        self.inner.rename(from, to)
    }
    fn remove(&self, name: &str) -> Result<(), DiskError> {
        self.inner.remove(name)
    }
    fn list(&self, prefix: &str) -> Result<Vec<String>, DiskError> {
        self.inner.list(prefix)
    }
    fn sync_dir(&self) -> Result<(), DiskError> {
        self.inner.sync_dir()
    }
}

fn append_through(drop: bool) {
    let disk = SilentlyBadAppends { inner: SimDisk::new(), drop };
    let (mut st, _) = RaftStorage::open(Arc::new(disk), small(1 << 20)).unwrap();
    let _ = st.append(&ents(1..=3, 1));
}

#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "the segment's bookkeeping says")]
fn debug_builds_catch_an_append_that_did_not_land() {
    append_through(true);
}

#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "do not read back")]
fn debug_builds_catch_appended_bytes_that_read_back_differently() {
    append_through(false);
}

#[test]
fn read_range_reads_a_slice_or_less() {
    let d = SimDisk::new();
    d.write("f", b"0123456789").unwrap();
    assert_eq!(d.read_range("f", 3, 4).unwrap(), b"3456");
    assert_eq!(d.read_range("f", 8, 4).unwrap(), b"89");
    assert_eq!(d.read_range("f", 20, 4).unwrap(), b"");
    #[cfg(not(madsim))]
    {
        #[allow(clippy::disallowed_methods)]
        let dir = std::env::temp_dir().join(format!("esc-read-range-{}", std::process::id()));
        let fd = crate::rt::FileDisk::open(&dir).unwrap();
        fd.write("f", b"0123456789").unwrap();
        assert_eq!(fd.read_range("f", 3, 4).unwrap(), b"3456");
        assert_eq!(fd.read_range("f", 8, 4).unwrap(), b"89");
        assert_eq!(fd.read_range("f", 20, 4).unwrap(), b"");
        drop(fd);
        #[allow(clippy::disallowed_methods)]
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn an_append_whose_segment_roll_finds_no_descriptor_is_not_poisoned_and_a_retry_completes_it() {
    let d = SimDisk::new();
    let (mut st, _) = open(&d, small(150));
    st.append(&ents(1..=2, 1)).unwrap();
    st.sync().unwrap();
    let before = segments(&d).len();
    // This batch fills the active segment and needs new ones: the first roll cannot open its file.
    let batch = ents(3..=30, 1);
    d.inject(DiskFault::TooManyOpenFiles(1));
    let err = st.append(&batch).unwrap_err();
    assert!(err.is_fd_exhaustion(), "{err}");
    assert!(!st.is_poisoned(), "nothing was written to the file that could not be opened");
    let kept = st.last_index();
    assert!((2..30).contains(&kept), "the entries before the roll stay written: {kept}");
    assert_eq!(segments(&d).len(), before, "no segment file was created");
    // A retry that again finds no descriptor writes nothing more and loses nothing.
    d.inject(DiskFault::TooManyOpenFiles(1));
    assert!(st.append(&batch).unwrap_err().is_fd_exhaustion());
    assert_eq!(st.last_index(), kept);
    // The driver retries the very same batch: it goes on from where it stopped, nothing doubled
    // and nothing truncated and rewritten.
    st.append(&batch).unwrap();
    st.sync().unwrap();
    assert_eq!(st.last_index(), 30);
    assert_eq!(st.stats().truncations, 0);
    assert!(segments(&d).len() > before);
    drop(st);
    d.power_fail(None);
    let (st, rec) = open(&d, small(150));
    assert_eq!(rec.entries, [ents(1..=2, 1), batch].concat(), "every entry once, in order");
    assert_eq!(st.last_index(), 30);
}

#[test]
fn a_hard_state_or_snapshot_write_without_a_descriptor_changes_nothing_and_can_be_retried() {
    let d = SimDisk::new();
    let (mut st, _) = open(&d, small(1 << 20));
    st.append(&ents(1..=10, 1)).unwrap();
    st.sync().unwrap();
    let hs = HardState { term: 4, vote: Some(2), commit: 8 };
    d.inject(DiskFault::TooManyOpenFiles(1));
    assert!(st.set_hard_state(hs).unwrap_err().is_fd_exhaustion());
    assert_eq!(st.hard_state(), HardState::default(), "not taken until it is durable");
    d.inject(DiskFault::TooManyOpenFiles(1));
    assert!(st.save_snapshot(&snap(8, 1)).unwrap_err().is_fd_exhaustion());
    assert_eq!(st.snapshot_meta(), None);
    d.inject(DiskFault::TooManyOpenFiles(1));
    assert!(st.install_snapshot(&snap(20, 2)).unwrap_err().is_fd_exhaustion());
    assert_eq!((st.snapshot_meta(), st.last_index()), (None, 10), "the log was not replaced");
    assert!(!st.is_poisoned());
    st.set_hard_state(hs).unwrap();
    st.save_snapshot(&snap(8, 1)).unwrap();
    drop(st);
    d.power_fail(None);
    let (_, rec) = open(&d, small(1 << 20));
    assert_eq!(rec.hard_state, hs);
    assert_eq!(rec.snapshot.map(|s| s.meta.index), Some(8));
    assert_eq!(rec.entries.last().map(|e| e.index), Some(10));
}

#[test]
fn a_retried_append_that_conflicts_with_what_the_interrupted_one_wrote_still_truncates() {
    let d = SimDisk::new();
    let (mut st, _) = open(&d, small(150));
    st.append(&ents(1..=2, 1)).unwrap();
    d.inject(DiskFault::TooManyOpenFiles(1));
    assert!(st.append(&ents(3..=30, 1)).unwrap_err().is_fd_exhaustion());
    let kept = st.last_index();
    // A new leader's entries replace the ones written before the interruption.
    st.append(&ents(3..=5, 2)).unwrap();
    st.sync().unwrap();
    assert_eq!(st.last_index(), 5);
    drop(st);
    d.power_fail(None);
    let (_, rec) = open(&d, small(150));
    assert_eq!(rec.entries, [ents(1..=2, 1), ents(3..=5, 2)].concat(), "had kept up to {kept}");
}

/// A log of entries 1..=6 in one segment (two write batches) and a hard state at `commit`.
fn log_of_six(commit: Index) -> SimDisk {
    let d = SimDisk::new();
    let (mut st, _) = open(&d, small(1 << 20));
    st.append(&ents(1..=3, 1)).unwrap();
    st.sync().unwrap();
    st.append(&ents(4..=6, 1)).unwrap();
    st.sync().unwrap();
    st.set_hard_state(HardState { term: 1, vote: Some(1), commit }).unwrap();
    st.flush_hard_state().unwrap();
    d
}

#[test]
fn rot_in_the_newest_segment_is_refused_except_in_its_unvouched_last_record() {
    // Issue 15: the bit-rot fault now hits the newest segment too, sparing only what
    // `unvouched_tail` names. At every byte before it a flipped bit must be refused at the start
    // with the file and the record's byte; at and after it, recovery takes it for a torn write
    // and cuts the last entry (the trade-off the fault must not hit).
    let name = segment_name(1);
    let all = ents(1..=6, 1);
    let offs = offsets(&all);
    for commit in [0, 3, 5, 6] {
        let d = log_of_six(commit);
        let size = d.size(&name).unwrap().unwrap();
        let tail = unvouched_tail(&d).unwrap().expect("a segment");
        let expected = if commit >= 6 { size } else { offs[5] as u64 };
        assert_eq!(tail, UnvouchedTail { segment: name.clone(), from: expected }, "commit {commit}");
        for byte in 0..size as usize {
            let d = log_of_six(commit);
            d.corrupt(&name, byte).unwrap();
            let record = *offs.iter().rfind(|&&o| o <= byte).unwrap() as u64;
            match RaftStorage::open(Arc::new(d.clone()), small(1 << 20)) {
                Err(StorageError::Corrupt { file, offset, .. }) => {
                    assert!((byte as u64) < tail.from, "commit {commit}, byte {byte}: refused in the tail");
                    assert_eq!(
                        (file.as_str(), offset),
                        (name.as_str(), record),
                        "commit {commit}, byte {byte}"
                    );
                }
                Ok((_, rec)) => {
                    assert!(byte as u64 >= tail.from, "commit {commit}, byte {byte}: rot accepted");
                    assert_eq!(rec.entries, ents(1..=5, 1), "commit {commit}, byte {byte}: cut as torn");
                    assert!(rec.repaired.iter().any(|n| n.contains("torn")), "{:?}", rec.repaired);
                }
                Err(e) => panic!("commit {commit}, byte {byte}: {e}"),
            }
        }
    }
    assert_eq!(unvouched_tail(&SimDisk::new()).unwrap(), None, "no segment, nothing to spare");
}
