//! Running out of file descriptors (clients can take them all) must not stop storage: the WAL
//! keeps one descriptor in reserve for the segment roll, and an open that still fails is reported
//! as `TooManyOpenFiles` (nothing written) rather than as a broken disk.
//!
//! Alone in its own test binary: it lowers this process's descriptor limit.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real files

use std::sync::Arc;

use bytes::Bytes;
use eventstreamcore::raft::{Entry, EntryKind};
use eventstreamcore::rt::{Disk, FileDisk};
use eventstreamcore::wal::{RaftStorage, StorageOptions};

fn entry(index: u64) -> Entry {
    Entry { term: 1, index, kind: EntryKind::Normal, data: Bytes::from(vec![b'e'; 100]) }
}

/// Opens descriptors until the process has none left; returns them.
fn hog_every_descriptor() -> Vec<std::fs::File> {
    let mut hog = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => hog.push(f),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
                return hog;
            }
        }
    }
}

#[test]
fn a_segment_roll_survives_descriptor_exhaustion_and_storage_recovers_once_they_free() {
    // A low limit so the test opens few files.
    let lim = libc::rlimit { rlim_cur: 128, rlim_max: 128 };
    // SAFETY: setrlimit reads the struct we pass.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    let dir = std::env::temp_dir().join(format!("esc-fd-exhaustion-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let disk = Arc::new(FileDisk::open(&dir).unwrap());
    let (mut st, _) =
        RaftStorage::open(disk.clone(), StorageOptions { segment_bytes: 4096, repair: false }).unwrap();
    st.append(&(1..=30).map(entry).collect::<Vec<_>>()).unwrap();
    st.sync().unwrap();

    let mut hog = hog_every_descriptor();
    // The next append fills the segment and rolls to a new one: the reserve makes the roll succeed.
    let before = st.stats().segments;
    st.append(&(31..=40).map(entry).collect::<Vec<_>>()).expect("the roll uses the reserved descriptor");
    st.sync().expect("a sync of the open segment needs no new descriptor");
    assert!(st.stats().segments > before, "a new segment was started");
    assert!(!st.is_poisoned());
    assert!(!disk.has_reserve(), "the reserve was spent");

    // With the reserve spent and still no descriptor free, an open fails as exhaustion, clearly.
    let err = disk.append("other", b"x").unwrap_err();
    assert!(err.is_fd_exhaustion(), "{err}");
    assert!(err.to_string().contains("too many open files"), "{err}");

    // Descriptors free up: the reserve is re-armed and storage goes on without a restart.
    hog.truncate(hog.len().saturating_sub(8));
    st.append(&(41..=120).map(entry).collect::<Vec<_>>()).unwrap();
    st.sync().unwrap();
    assert!(disk.has_reserve(), "the reserve is back");
    drop(hog);
    drop(st);
    let (st, recovered) =
        RaftStorage::open(disk.clone(), StorageOptions { segment_bytes: 4096, repair: false }).unwrap();
    assert_eq!(st.last_index(), 120);
    assert_eq!(recovered.entries.len(), 120);
    let _ = std::fs::remove_dir_all(&dir);
}
