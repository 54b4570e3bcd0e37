//! The `esc` binary as a user runs it: serve on embedded defaults, publish, fetch, stop.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real processes and files

mod common;

use common::{ESC, esc, temp_dir};

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::EscServer as Server;

fn serve(extra: &[&str]) -> Server {
    let data = format!("cluster.data_dir={}", temp_dir("serve").display());
    let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--set", "cluster.raft_listen=127.0.0.1:0"];
    args.extend(["--set", &data]);
    args.extend_from_slice(extra);
    common::start_esc(&args)
}

#[test]
fn serve_publish_fetch_and_stop_with_sigterm() {
    let mut s = serve(&[]);
    let a = s.addr.clone();
    let (ok, out, err) = esc(&[
        "publish",
        "--addr",
        &a,
        "--topic",
        "sensor/t",
        "--priority",
        "HIGH",
        "--count",
        "3",
        "--producer",
        "42",
        "hello",
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("stored topic=sensor/t offset=0 producer=42 seq=1"), "{out}");
    assert!(out.contains("stored topic=sensor/t offset=2 producer=42 seq=3"), "{out}");
    // Same producer and sequences again: original offsets, no copies.
    let (ok, out, _) =
        esc(&["publish", "--addr", &a, "--topic", "sensor/t", "--count", "3", "--producer", "42", "hello"]);
    assert!(ok);
    assert!(out.contains("0 stored, 3 duplicate"), "{out}");
    let (ok, out, _) = esc(&[
        "publish",
        "--legacy",
        "--addr",
        &a,
        "--topic",
        "sensor/t",
        "--priority",
        "critical",
        "legacy!",
    ]);
    assert!(ok, "{out}");
    // Legacy frames have no ack: wait until the event is committed and readable.
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let (ok, out, _) = esc(&["fetch", "--addr", &a, "--topic", "sensor/t"]);
        assert!(ok);
        if out.contains("offset=3") || Instant::now() > deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        out.contains("offset=3") && out.contains("priority=CRITICAL") && out.contains("payload=legacy!"),
        "{out}"
    );
    assert!(out.contains("next=4 end=4"), "{out}");
    // SIGTERM: graceful shutdown, exit 0.
    let pid = s.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = s.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn bad_configuration_is_refused_with_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("esc-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[ingest]\nmax_conections = 5\n").unwrap();
    let (ok, _, err) = esc(&["serve", "--config", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("unknown field `max_conections`") && err.contains("bad.toml"), "{err}");
    let (ok, _, err) = esc(&["serve", "--set", "ingest.read_timeout_ms=0"]);
    assert!(!ok);
    assert!(err.contains("ingest.read_timeout_ms"), "{err}");
    let (ok, _, err) = esc(&["serve", "--config", dir.join("missing.toml").to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("missing.toml"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn printed_defaults_are_a_valid_config_file() {
    let (ok, out, _) = esc(&["config", "defaults"]);
    assert!(ok);
    let dir = std::env::temp_dir().join(format!("esc-defaults-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("d.toml");
    std::fs::write(&f, &out).unwrap();
    let (ok, out, err) = esc(&["config", "check", f.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn publish_to_a_server_that_is_not_there_fails_cleanly() {
    let (ok, _, err) = esc(&["publish", "--addr", "127.0.0.1:1", "--topic", "t", "x"]);
    assert!(!ok);
    assert!(err.contains("cannot connect"), "{err}");
}

#[test]
fn metrics_are_served_over_http_for_prometheus() {
    let mut child = Command::new(ESC)
        .args(["serve", "--listen", "127.0.0.1:0", "--set", "ingest.metrics_listen=\"127.0.0.1:0\""])
        .args(["--set", "cluster.raft_listen=127.0.0.1:0", "--set"])
        .arg(format!("cluster.data_dir={}", temp_dir("metrics").display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines: Vec<String> =
        BufReader::new(child.stdout.take().unwrap()).lines().take(3).map(|l| l.unwrap()).collect();
    let find = |prefix: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("{prefix}: {lines:?}"))
            .to_string()
    };
    let addr = find("esc listening on ");
    let maddr = find("esc metrics on http://").trim_end_matches("/metrics").to_string();
    let (ok, _, _) = esc(&["publish", "--addr", &addr, "--topic", "m", "--count", "2", "x"]);
    assert!(ok);
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(&maddr).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    conn.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    assert!(body.contains("esc_events_stored_total 2"), "{body}");
    // The node's own metrics follow: Raft state and, on the leader, the pipeline's.
    assert!(body.contains("esc_raft_is_leader 1"), "{body}");
    assert!(body.contains("esc_raft_commit_index "), "{body}");
    assert!(body.contains("esc_pipeline_"), "{body}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_second_server_on_the_same_data_dir_is_refused() {
    let dir = temp_dir("lock");
    let data = format!("cluster.data_dir={}", dir.display());
    let _first = serve(&["--set", &data]);
    let (ok, _, err) = esc(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--set",
        "cluster.raft_listen=127.0.0.1:0",
        "--set",
        &data,
    ]);
    assert!(!ok, "two servers must never write one log");
    assert!(err.contains("in use by another esc process"), "{err}");
}

/// Issue 11: a data directory whose `hardstate` holds a term no node can reach (well-formed, its
/// checksum right) stops `esc serve` at once with an error naming the file. Before, the node
/// started, overflowed the term on its first campaign and stayed up refusing every publish.
#[test]
fn a_hand_made_hardstate_with_an_impossible_term_is_a_clear_startup_error() {
    let dir = temp_dir("bad-hardstate");
    let mut hs = b"ESH1".to_vec();
    hs.extend_from_slice(&u64::MAX.to_le_bytes()); // term
    hs.push(0); // no vote
    hs.extend_from_slice(&0u64.to_le_bytes()); // vote
    hs.extend_from_slice(&0u64.to_le_bytes()); // commit
    let crc = crc32c::crc32c(&hs);
    hs.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(dir.join("hardstate"), &hs).unwrap();
    let mut child = Command::new(ESC)
        .args(["serve", "--listen", "127.0.0.1:0", "--set", "cluster.raft_listen=127.0.0.1:0", "--set"])
        .arg(format!("cluster.data_dir={}", dir.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("esc starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    let status = status.unwrap_or_else(|| panic!("esc serve kept running on an impossible hardstate: {err}"));
    assert!(!status.success());
    assert!(err.contains("hardstate") && err.contains("term"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 11: `esc serve` on its defaults (no `cluster.secret`) opens no peer port at all: the
/// banner says so and nothing accepts on the configured Raft address.
#[test]
fn a_default_serve_has_no_peer_port_open() {
    let raft = format!("127.0.0.1:{}", common::free_port());
    let mut child = Command::new(ESC)
        .args(["serve", "--listen", "127.0.0.1:0", "--set"])
        .arg(format!("cluster.raft_listen={raft}"))
        .arg("--set")
        .arg(format!("cluster.data_dir={}", temp_dir("no-peer-port").display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("esc starts");
    let s = Server {
        addr: String::new(),
        child: {
            let mut out = BufReader::new(child.stdout.take().unwrap());
            let (mut first, mut second) = (String::new(), String::new());
            out.read_line(&mut first).unwrap();
            out.read_line(&mut second).unwrap();
            assert!(first.starts_with("esc listening on "), "{first}");
            assert!(second.contains("raft port closed (no cluster.secret)"), "{second}");
            child
        },
    };
    assert!(std::net::TcpStream::connect(&raft).is_err(), "nothing listens on {raft}");
    drop(s);
}
