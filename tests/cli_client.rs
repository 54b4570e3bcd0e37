//! The `esc` client commands as a user runs them: payloads from files, stdin and hex with keys
//! and headers, JSON output, readable timestamps, member lists, and clear errors where the CLI
//! used to mislead (an offset past the end, no leader, a doubled error text).
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real processes, files and ports

mod common;

use common::{ESC, esc, free_port, temp_dir};

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use eventstreamcore::config::{Config, MemberConfig};
use serde_json::Value;

use common::{EscServer as Server, start_esc as start};

fn serve() -> Server {
    let data = format!("cluster.data_dir={:?}", temp_dir("cli-client").display().to_string());
    start(&["serve", "--listen", "127.0.0.1:0", "--set", "cluster.raft_listen=127.0.0.1:0", "--set", &data])
}

/// Runs `esc ARGS` with `stdin` piped in.
fn esc_stdin(args: &[&str], stdin: &[u8]) -> (bool, String, String) {
    let mut child = Command::new(ESC)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("esc runs");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn payloads_from_files_stdin_and_hex_with_key_headers_json_and_readable_times() {
    let s = serve();
    let a = s.addr.as_str();
    let dir = temp_dir("cli-payloads");
    let lines = dir.join("lines.txt");
    std::fs::write(&lines, "a\n\nb\r\n").unwrap();
    let f = lines.to_str().unwrap();
    let pubs = ["publish", "--addr", a, "--topic", "p", "--producer", "5"];
    let (ok, out, err) =
        esc(&[&pubs[..], &["--file", f, "--key", "k1", "--header", "src=cli", "--header", "n=1", "--json"]]
            .concat());
    assert!(ok, "{out}{err}");
    let doc: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!((doc["stored"].as_u64(), doc["producer"].as_u64()), (Some(2), Some(5)), "{doc}");
    assert_eq!(doc["acks"][1]["offset"], 1, "{doc}");
    assert_eq!(doc["acks"][1]["seq"], 2, "{doc}");
    let (ok, out, err) =
        esc_stdin(&[&pubs[..], &["--first-seq", "3", "--file", "-", "--hex"]].concat(), b"00ff\n0a\n");
    assert!(ok && out.contains("2 stored"), "{out}{err}");
    let whole = dir.join("whole.bin");
    std::fs::write(&whole, "x\ny\n").unwrap();
    let (ok, out, err) =
        esc(&[&pubs[..], &["--first-seq", "5", "--file", whole.to_str().unwrap(), "--whole"]].concat());
    assert!(ok && out.contains("1 stored"), "{out}{err}");
    let (ok, out, err) = esc(&[&pubs[..], &["--first-seq", "6", "--hex", "c0 ff ee"]].concat());
    assert!(ok && out.contains("1 stored"), "{out}{err}");

    let (ok, out, err) = esc(&["fetch", "--addr", a, "--topic", "p", "--json"]);
    assert!(ok, "{out}{err}");
    let page: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let payloads: Vec<&Value> = page["events"].as_array().unwrap().iter().map(|e| &e["payload"]).collect();
    let want: Vec<Value> =
        serde_json::from_str(r#"["a", "b", {"hex": "00ff"}, "\n", "x\ny\n", {"hex": "c0ffee"}]"#).unwrap();
    assert_eq!(payloads, want.iter().collect::<Vec<_>>(), "{page}");
    let first = &page["events"][0];
    assert_eq!(first["key"], "k1", "{first}");
    assert_eq!(first["headers"]["src"], "cli", "{first}");
    assert_eq!(first["headers"]["n"], "1", "{first}");
    let time = first["time"].as_str().unwrap();
    assert!(time.len() == 24 && &time[10..11] == "T" && time.ends_with('Z'), "{time}");
    assert_eq!((page["next_offset"].as_u64(), page["end_offset"].as_u64()), (Some(6), Some(6)));

    let (ok, out, _) = esc(&["fetch", "--addr", a, "--topic", "p", "--max", "3"]);
    assert!(ok, "{out}");
    let line0 = out.lines().next().unwrap();
    assert!(line0.contains(&format!(" time={time} ")), "{line0}");
    assert!(line0.contains("key=k1 header.src=cli header.n=1 payload=a"), "{line0}");
    assert!(out.contains("payload=0x00ff"), "{out}");

    let (ok, _, err) = esc(&[&pubs[..], &["--file", f, "--count", "2"]].concat());
    assert!(!ok && err.contains("--count repeats MESSAGE"), "{err}");
    let (ok, _, err) = esc(&[&pubs[..], &["--hex", "abc"]].concat());
    assert!(!ok && err.contains("odd number of hex digits"), "{err}");
    let (ok, _, err) = esc(&[&pubs[..], &["--header", "novalue", "x"]].concat());
    assert!(!ok && err.contains("expected NAME=VALUE"), "{err}");
}

#[test]
fn fetch_takes_the_member_list_and_refuses_an_offset_past_the_end() {
    let s = serve();
    let a = s.addr.as_str();
    let (ok, out, _) = esc(&["publish", "--addr", a, "--topic", "f", "--count", "4", "x"]);
    assert!(ok, "{out}");
    let members = format!("127.0.0.1:{},{a}", free_port());
    let (ok, out, err) = esc(&["fetch", "--addr", &members, "--topic", "f"]);
    assert!(ok && out.contains("offset=3") && out.contains("next=4 end=4"), "{out}{err}");
    let (ok, out, err) = esc(&["fetch", "--addr", a, "--topic", "f", "--from", "99"]);
    assert!(!ok, "{out}");
    assert!(err.contains("--from 99 is past the end") && err.contains("ends at offset 4"), "{err}");
    let (ok, _, err) = esc(&["fetch", "--addr", a, "--topic", "nothing-here", "--from", "1"]);
    assert!(!ok && err.contains("has no events"), "{err}");
    let (ok, out, _) = esc(&["fetch", "--addr", a, "--topic", "f", "--from", "4"]);
    assert!(ok && out.contains("next=4 end=4"), "at the end is not an error: {out}");
}

#[test]
fn without_a_leader_publish_says_unavailable_once_and_tail_gives_up_in_bounded_time() {
    // One member of a three-member cluster: it can never elect a leader.
    let dir = temp_dir("cli-noleader");
    let members: Vec<MemberConfig> = (1..=3)
        .map(|id| MemberConfig {
            id,
            raft_addr: format!("127.0.0.1:{}", free_port()),
            client_addr: format!("127.0.0.1:{}", free_port()),
        })
        .collect();
    let mut c = Config::default();
    c.node.id = 1;
    c.ingest.listen = members[0].client_addr.parse().unwrap();
    c.cluster.raft_listen = members[0].raft_addr.parse().unwrap();
    c.cluster.data_dir = dir.join("node1");
    c.cluster.members = members.clone();
    c.cluster.secret = "cli-secret".into();
    let cfg = dir.join("node1.toml");
    std::fs::write(&cfg, toml::to_string(&c).unwrap()).unwrap();
    let s = start(&["serve", "--config", cfg.to_str().unwrap()]);

    let (ok, _, err) = esc(&["publish", "--addr", &s.addr, "--topic", "t", "x"]);
    assert!(!ok);
    assert!(err.contains("publish gave up after 20 attempts: unavailable"), "{err}");
    assert_eq!(err.matches("unavailable").count(), 1, "said once: {err}");
    assert!(err.matches("retry after").count() <= 1, "said once: {err}");

    let started = Instant::now();
    let (ok, out, err) =
        esc(&["tail", "--addr", &s.addr, "--topic", "t", "--linearizable", "--to-end", "--timeout", "2"]);
    assert!(!ok, "{out}");
    assert!(err.contains("gave up after 2 s") && err.contains("needs a leader"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30), "bounded: {:?}", started.elapsed());
}

#[test]
fn bench_cluster_reports_every_member_caught_up() {
    let (ok, out, err) = esc(&["bench", "--cluster", "3", "--events", "3000", "--connections", "2"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("events stored per member [3000, 3000, 3000]"), "{out}");
    assert!(!out.contains("applied so far"), "{out}");
}

#[test]
fn bench_prints_a_progress_line_per_interval_with_the_servers_rss() {
    let pid = std::process::id().to_string();
    let args = ["bench", "--events", "3000", "--batch", "10", "--report-every", "1000", "--server-pid", &pid];
    let (ok, out, err) = esc(&args);
    assert!(ok, "{out}{err}");
    let lines: Vec<&str> = out.lines().filter(|l| l.contains("events acked:")).collect();
    assert_eq!(lines.len(), 3, "one line per 1000 acked events: {out}");
    for (i, l) in lines.iter().enumerate() {
        assert!(l.trim_start().starts_with(&format!("{}", (i + 1) * 1000)), "{l}");
        assert!(l.contains("events/s, max ack latency") && l.contains("server RSS"), "{l}");
        assert!(!l.contains("unknown"), "this test process's RSS is readable: {l}");
    }
}
