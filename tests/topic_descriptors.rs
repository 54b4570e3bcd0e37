//! A topic keeps a descriptor for its active segment only: a sealed segment gives its back, so a
//! long-lived topic that rolled many segments does not use up the process's descriptors.
//!
//! Alone in its own test binary: it lowers this process's descriptor limit.
#![cfg(all(target_os = "linux", not(madsim)))]
#![allow(clippy::disallowed_methods)] // real files

use std::sync::Arc;

use eventstreamcore::event::{Event, Priority};
use eventstreamcore::rt::FileDisk;
use eventstreamcore::store::{StoreConfig, TopicStore};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn sealed_topic_segments_give_their_descriptors_back() {
    let dir = std::env::temp_dir().join(format!("esc-topic-fds-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let disk = Arc::new(FileDisk::open(&dir).unwrap());
    // One event per 1 KiB segment: every append rolls.
    let cfg = StoreConfig {
        segment_bytes: 1024,
        index_interval_bytes: 4096,
        read_cache_bytes: 0,
        verify_on_open: false,
    };
    let mut s = TopicStore::open(disk, "topic-00000000-", cfg, 0).unwrap();
    let before = open_fds();
    // Fewer descriptors than segments: a store that kept one per segment runs out.
    let limit = before as u64 + 32;
    let lim = libc::rlimit { rlim_cur: limit, rlim_max: limit };
    // SAFETY: setrlimit reads the struct we pass.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    let e = Event::new("t", Priority::Low, vec![b'x'; 900]);
    for i in 0..300u64 {
        assert_eq!(s.append([(i, &e)]).unwrap(), i + 1);
    }
    assert!(s.segments().len() >= 299, "it rolled: {}", s.segments().len());
    assert!(open_fds() <= before + 2, "{} descriptors open, {before} before", open_fds());
    s.sync().unwrap();
    assert_eq!(s.read(0, 1000, usize::MAX).unwrap().len(), 300);
    let _ = std::fs::remove_dir_all(&dir);
}
