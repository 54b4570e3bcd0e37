//! Retention and `esc topics` on a real `esc serve`: per-topic limits from the config file trim
//! the oldest events (decided by the leader, replicated as commands), a read below the first
//! retained offset is an "out of range" answer naming the first offset, `esc tail --from 0`
//! starts there, a full `discard = "new"` topic refuses a publish, and SIGHUP reloads the limits.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real processes, files and ports

mod common;

use std::time::{Duration, Instant};

use common::{esc, start_esc, temp_dir};
use serde_json::Value;

const CONFIG: &str = r#"
[topics.default]
max_age_ms = "7d"

[topics."r"]
max_events = 5

[topics."full*"]
max_events = 3
discard = "new"
"#;

fn topics(addr: &str) -> Value {
    let (ok, out, err) = esc(&["topics", "--addr", addr, "--json"]);
    assert!(ok, "{out}{err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn topic<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["topics"].as_array().unwrap().iter().find(|t| t["topic"] == name).unwrap_or(&Value::Null)
}

/// Waits until topic `name` starts at `first` (trims are proposed on the leader's tick).
fn wait_first(addr: &str, name: &str, first: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let doc = topics(addr);
        if topic(&doc, name)["first_offset"].as_u64() == Some(first) {
            return doc;
        }
        assert!(Instant::now() < deadline, "`{name}` never started at {first}: {doc}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn retention_trims_reads_out_of_range_tail_from_zero_discard_new_and_reload() {
    let dir = temp_dir("topics-cli");
    let cfg = dir.join("esc.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let data = format!("cluster.data_dir={:?}", dir.join("data").display().to_string());
    let s = start_esc(&[
        "serve",
        "--config",
        cfg.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--set",
        "cluster.raft_listen=127.0.0.1:0",
        "--set",
        &data,
    ]);
    let a = s.addr.as_str();
    for i in 0..12 {
        let (ok, out, err) = esc(&["publish", "--addr", a, "--topic", "r", &format!("e{i}")]);
        assert!(ok, "{out}{err}");
    }
    let doc = wait_first(a, "r", 7);
    let r = topic(&doc, "r");
    assert_eq!((r["events"].as_u64(), r["end_offset"].as_u64()), (Some(5), Some(12)), "{doc}");
    assert!(r["bytes"].as_u64().unwrap() > 0, "{doc}");
    assert_eq!(r["retention"]["max_events"].as_u64(), Some(5), "{doc}");
    assert_eq!(r["retention"]["max_age_ms"].as_u64(), None, "an exact rule replaces the default: {doc}");

    let (ok, out, err) = esc(&["topics", "--addr", a]);
    assert!(ok && out.contains("TOPIC") && out.contains("max_events=5 discard=old"), "{out}{err}");

    // Below the first retained offset: a clear error naming it.
    let (ok, out, err) = esc(&["fetch", "--addr", a, "--topic", "r", "--from", "0"]);
    assert!(!ok, "{out}");
    assert!(err.contains("out_of_range") && err.contains("first available is 7"), "{err}");
    // tail --from 0 starts at the first retained event.
    let (ok, out, err) =
        esc(&["tail", "--addr", a, "--topic", "r", "--from", "0", "--to-end", "--timeout", "10"]);
    assert!(ok, "{out}{err}");
    let offsets: Vec<&str> =
        out.lines().filter_map(|l| l.split_whitespace().find(|w| w.starts_with("offset="))).collect();
    assert_eq!(offsets, ["offset=7", "offset=8", "offset=9", "offset=10", "offset=11"], "{out}");
    assert!(out.contains("end=12"), "{out}");

    // discard = "new": the fourth event is refused, nothing is trimmed.
    let (ok, out, err) = esc(&["publish", "--addr", a, "--topic", "full.x", "--count", "3", "x"]);
    assert!(ok, "{out}{err}");
    let (ok, out, err) = esc(&["publish", "--addr", a, "--topic", "full.x", "y"]);
    assert!(!ok, "{out}");
    assert!(err.contains("out_of_range") && err.contains("is full"), "{err}");
    let doc = topics(a);
    assert_eq!(topic(&doc, "full.x")["events"].as_u64(), Some(3), "{doc}");
    assert_eq!(topic(&doc, "full.x")["retention"]["discard"], "new", "{doc}");

    // SIGHUP: the new limit is proposed and applied.
    std::fs::write(&cfg, CONFIG.replace("max_events = 5", "max_events = 2")).unwrap();
    let pid = s.child.id().to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let doc = wait_first(a, "r", 10);
    assert_eq!(topic(&doc, "r")["retention"]["max_events"].as_u64(), Some(2), "{doc}");
    let _ = std::fs::remove_dir_all(&dir);
}
