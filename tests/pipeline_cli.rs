//! `esc dlq list` and `esc dlq redrive` on a real data directory.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real processes and files

use std::process::Command;
use std::sync::Arc;

use eventstreamcore::event::{Event, Priority, StoredEvent};
use eventstreamcore::pipeline::{Dlq, DlqReason, RedriveFilter};
use eventstreamcore::rt::FileDisk;

const ESC: &str = env!("CARGO_BIN_EXE_esc");

fn esc(args: &[&str]) -> (bool, String) {
    let out = Command::new(ESC).args(args).output().expect("esc runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn dlq_list_and_redrive() {
    let dir = std::env::temp_dir().join(format!("esc-dlq-cli-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // Where a server keeps it: `<data_dir>/dlq`.
    let disk = Arc::new(FileDisk::open(dir.join("dlq")).unwrap());
    let dlq = Dlq::open(disk.clone(), 100).unwrap();
    let ev = |topic: &str, offset| StoredEvent {
        offset,
        timestamp_ms: 1,
        event: Event::new(topic, Priority::High, "p"),
    };
    dlq.push(DlqReason::Deadline, "9 ms after commit, deadline 5 ms".into(), 10, ev("sensor/a", 3)).unwrap();
    dlq.push(DlqReason::Invalid, "payment amount 0 outside 1..=1000000".into(), 11, ev("payment", 4))
        .unwrap();
    let d = dir.to_str().unwrap();

    let (ok, out) = esc(&["dlq", "list", "--data-dir", d]);
    assert!(ok, "{out}");
    assert!(out.contains("deadline") && out.contains("sensor/a@3") && out.contains("deadline 5 ms"), "{out}");
    assert!(out.contains("invalid") && out.contains("payment@4"), "{out}");
    assert!(out.contains("2 entries listed, 2 stored, 0 overflowed"), "{out}");
    let (ok, out) = esc(&["dlq", "list", "--data-dir", d, "--json"]);
    assert!(ok, "{out}");
    assert!(out.starts_with("{\"entries\":[{"), "one JSON document: {out}");
    assert!(out.contains("\"reason\":\"invalid\"") && out.contains("\"topic\":\"payment\""), "{out}");
    assert!(out.contains("\"at\":\"1970-01-01T00:00:00.011Z\""), "readable time: {out}");
    let (ok, out) = esc(&["dlq", "list", "--data-dir", d, "--reason", "invalid"]);
    assert!(ok && out.contains("1 entries listed") && !out.contains("sensor/a@3"), "{out}");
    let (ok, out) = esc(&["dlq", "list", "--data-dir", d, "--reason", "nonsense"]);
    assert!(!ok && out.contains("unknown DLQ reason"), "{out}");

    let (ok, out) = esc(&["dlq", "redrive", "--data-dir", d, "--reason", "invalid"]);
    assert!(ok && out.contains("redrive of 1 entries requested"), "{out}");
    // The owner of the DLQ picks the request up.
    let owner = Dlq::open(disk, 100).unwrap();
    assert_eq!(
        owner.take_redrive_request().unwrap(),
        Some(RedriveFilter { reason: Some(DlqReason::Invalid), up_to_id: Some(2) })
    );
    let (ok, out) = esc(&["dlq", "list", "--data-dir", dir.join("missing").to_str().unwrap()]);
    assert!(!ok && out.contains("not a directory"), "{out}");
    // The DLQ directory itself, or a data directory without one, is an error — never "0 entries".
    let (ok, out) = esc(&["dlq", "list", "--data-dir", dir.join("dlq").to_str().unwrap()]);
    assert!(!ok && out.contains("no dead-letter queue in") && out.contains("<data_dir>/dlq"), "{out}");
    let (ok, out) = esc(&["dlq", "redrive", "--data-dir", dir.join("dlq").to_str().unwrap()]);
    assert!(!ok && out.contains("<data_dir>/dlq"), "{out}");
    let (ok, out) = esc(&["dlq", "list", "--help"]);
    assert!(ok && out.contains("`dlq` subdirectory"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
