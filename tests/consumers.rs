//! Durable consumers against a real `esc serve`: `esc tail --consumer` resumes where it committed
//! after a kill -9 with no gap, commits on SIGTERM, `esc consumers` shows the lag, `/metrics` has
//! the lag gauge, and the Rust client commits, reads back and is refused with typed errors.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real processes, ports and time

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use common::{ESC, EscServer, esc, free_port, start_esc, temp_dir};
use eventstreamcore::client::{ClientError, ClusterClient};
use eventstreamcore::wire::ErrorCode;
use serde_json::Value;

fn serve(metrics: Option<u16>) -> EscServer {
    let data = format!("cluster.data_dir={:?}", temp_dir("consumers").display().to_string());
    let m = metrics.map(|p| format!("ingest.metrics_listen=\"127.0.0.1:{p}\""));
    let mut args =
        vec!["serve", "--listen", "127.0.0.1:0", "--set", "cluster.raft_listen=127.0.0.1:0", "--set", &data];
    if let Some(m) = &m {
        args.extend(["--set", m.as_str()]);
    }
    start_esc(&args)
}

fn publish(addr: &str, topic: &str, n: u64) {
    let (ok, out, err) =
        esc(&["publish", "--addr", addr, "--topic", topic, "--count", &n.to_string(), "--quiet", "m"]);
    assert!(ok, "{out}{err}");
}

/// The offsets in `esc tail` output lines (`offset=N ...`).
fn offsets(out: &str) -> Vec<u64> {
    out.lines().filter_map(|l| l.strip_prefix("offset=")?.split(' ').next()?.parse().ok()).collect()
}

fn consumer(addr: &str, name: &str) -> Value {
    let (ok, out, err) = esc(&["consumers", "--addr", addr, "--consumer", name, "--json"]);
    assert!(ok, "{out}{err}");
    let doc: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    doc["consumers"][0].clone()
}

/// A following `esc tail --consumer` whose printed offsets are read line by line.
fn spawn_tail(addr: &str, name: &str, every: &str) -> (std::process::Child, impl Iterator<Item = u64>) {
    let mut child = Command::new(ESC)
        .args(["tail", "--addr", addr, "--topic", "t", "--consumer", name, "--commit-every", every])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("esc tail starts");
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines.map_while(Result::ok).filter_map(|l| offsets(&l).first().copied()))
}

#[test]
fn a_killed_consumer_resumes_from_its_committed_position_with_no_gap() {
    let s = serve(None);
    let a = s.addr.as_str();
    publish(a, "t", 250);
    // First incarnation: 130 events, committed every 50 and at exit.
    let (ok, out, err) = esc(&[
        "tail",
        "--addr",
        a,
        "--topic",
        "t",
        "--consumer",
        "w",
        "--count",
        "130",
        "--commit-every",
        "50",
    ]);
    assert!(ok, "{out}{err}");
    assert_eq!(offsets(&out), (0..130).collect::<Vec<_>>());
    assert!(err.contains("no position"), "{err}");
    let w = consumer(a, "w");
    assert_eq!(
        (w["topic"].as_str(), w["committed"].as_u64(), w["end_offset"].as_u64(), w["lag"].as_u64()),
        (Some("t"), Some(130), Some(250), Some(120)),
        "{w}"
    );

    // Second incarnation, killed with -9 after 60 events: it committed at least 40 of them.
    let (mut child, mut seen) = spawn_tail(a, "w", "20");
    let got: Vec<u64> = seen.by_ref().take(60).collect();
    assert_eq!(got, (130..190).collect::<Vec<_>>());
    child.kill().unwrap();
    child.wait().unwrap();
    // It may have printed (and committed) more than the 60 read above before the kill landed.
    let printed_end = seen.last().map_or(190, |last| last + 1);

    // Third incarnation: resumes at the committed position — at least the commit after the 40th
    // event (the one after the 60th may still have been in flight at the kill), never past what
    // was printed — and reads on to the end without a gap.
    let (ok, out, err) = esc(&["tail", "--addr", a, "--topic", "t", "--consumer", "w", "--to-end"]);
    assert!(ok, "{out}{err}");
    let resumed: u64 = err
        .split("resumes `t` at its committed offset ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no resume line: {err}"));
    assert!((170..=printed_end).contains(&resumed), "resumed at {resumed}, printed up to {printed_end}");
    assert_eq!(offsets(&out), (resumed..250).collect::<Vec<_>>(), "a gap or a jump");
    assert_eq!(consumer(a, "w")["lag"].as_u64(), Some(0));
}

#[test]
fn sigterm_commits_what_was_printed_and_metrics_show_the_lag() {
    let port = free_port();
    let s = serve(Some(port));
    let a = s.addr.as_str();
    publish(a, "t", 30);
    let (child, mut seen) = spawn_tail(a, "graceful", "1000");
    let got: Vec<u64> = seen.by_ref().take(30).collect();
    assert_eq!(got.len(), 30);
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(consumer(a, "graceful")["committed"].as_u64(), Some(30), "commit at exit");

    publish(a, "t", 5);
    let body = http_get(port, "/metrics");
    assert!(body.contains("esc_consumer_lag{consumer=\"graceful\",topic=\"t\"} 5"), "{body}");

    let (ok, _, err) = esc(&["tail", "--addr", a, "--topic", "t", "--consumer", "has space", "--to-end"]);
    assert!(!ok && err.contains("consumer name `has space` is invalid"), "{err}");
    let (ok, out, _) = esc(&["consumers", "--addr", a]);
    assert!(ok && out.contains("graceful") && out.contains("LAG"), "{out}");
}

fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(c, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut body = String::new();
    c.read_to_string(&mut body).unwrap();
    body
}

#[tokio::test]
async fn the_rust_client_commits_resumes_and_gets_typed_refusals() {
    let s = serve(None);
    let a: SocketAddr = s.addr.parse().unwrap();
    publish(&s.addr, "orders", 10);
    let mut c = ClusterClient::new(vec![a], "test", "");
    assert_eq!(c.committed("billing", "orders").await.unwrap(), None);
    assert_eq!(c.commit("billing", "orders", 4, false).await.unwrap(), 4);
    assert_eq!(c.commit("billing", "orders", 2, false).await.unwrap(), 4, "never moves back");
    assert_eq!(c.committed("billing", "orders").await.unwrap(), Some(4));
    assert_eq!(c.commit("billing", "orders", 1, true).await.unwrap(), 1, "an explicit reset does");
    for (name, offset) in [("billing", 11), ("bad name", 1)] {
        match c.commit(name, "orders", offset, false).await {
            Err(ClientError::Server(f)) => assert_eq!(f.code, ErrorCode::InvalidCommit, "{f}"),
            other => panic!("{name} {offset}: {other:?}"),
        }
    }
    let list = c.consumers("").await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].committed, list[0].end_offset, list[0].lag()), (1, 10, 9));
}
