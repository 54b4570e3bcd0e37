//! The Python client (`clients/python`) against real `esc` processes: its unittest suite runs
//! against one server (with an auth token) and against a 3-member cluster whose leader it kills.
//! python3 (3.9+) is required: without it these tests fail, they never pass silently.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real processes, files and ports

mod common;

use common::{free_port, temp_dir};

use std::path::{Path, PathBuf};
use std::process::Command;

use eventstreamcore::config::{Config, MemberConfig};

use common::start_esc as start;

fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients/python")
}

/// Checks that python3 3.9+ is there, failing the test with a clear message if not.
fn require_python() {
    let out = Command::new("python3")
        .args(["-c", "import sys; print('%d.%d' % sys.version_info[:2])"])
        .output()
        .unwrap_or_else(|e| panic!("python3 is required for the Python client tests and cannot be run: {e}"));
    let v = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (major, minor) = v.split_once('.').unwrap_or(("0", "0"));
    let ok = major.parse::<u32>().unwrap_or(0) == 3 && minor.parse::<u32>().unwrap_or(0) >= 9;
    assert!(out.status.success() && ok, "the Python client tests need python3 >= 3.9, found {v:?}");
}

/// Runs `python3 -m unittest discover` on the files matching `pattern` with `env`; fails on any
/// failure or skipped test.
fn unittest(pattern: &str, env: &[(&str, String)]) {
    require_python();
    let out = Command::new("python3")
        .args(["-X", "dev", "-m", "unittest", "discover", "-v", "-s", "tests", "-t", ".", "-p", pattern])
        .current_dir(python_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("python3 runs");
    let report = String::from_utf8_lossy(&out.stderr);
    println!("{report}");
    assert!(out.status.success(), "Python client tests failed:\n{report}");
    assert!(
        !report.contains("... skipped") && !report.contains("skipped="),
        "a Python test was skipped (its environment is missing):\n{report}"
    );
    assert!(!report.contains("Ran 0 tests"), "no Python test ran:\n{report}");
}

/// Retention for the topics the Python suite's retention test publishes to.
const RETENTION: &str = "[topics.\"pyret-*\"]\nmax_events = 3\n";

#[test]
fn python_client_suite_against_one_server() {
    let data = temp_dir("py-one");
    let config = data.join("retention.toml");
    std::fs::write(&config, RETENTION).expect("write config");
    let s = start(&[
        "serve",
        "--config",
        config.to_str().expect("utf-8 path"),
        "--listen",
        "127.0.0.1:0",
        "--set",
        "cluster.raft_listen=127.0.0.1:0",
        "--set",
        &format!("cluster.data_dir={:?}", data.display().to_string()),
        "--set",
        "ingest.auth_token=\"py-secret\"",
    ]);
    unittest("test_*.py", &[("ESC_ADDR", s.addr.clone()), ("ESC_TOKEN", "py-secret".into())]);
}

#[test]
fn python_client_follows_the_leader_and_survives_its_death_in_a_three_member_cluster() {
    let dir = temp_dir("py-cluster");
    let members: Vec<MemberConfig> = (1..=3)
        .map(|id| MemberConfig {
            id,
            raft_addr: format!("127.0.0.1:{}", free_port()),
            client_addr: format!("127.0.0.1:{}", free_port()),
        })
        .collect();
    let mut procs = Vec::new();
    for m in &members {
        let mut c = Config::default();
        c.node.id = m.id;
        c.ingest.listen = m.client_addr.parse().expect("address");
        c.cluster.raft_listen = m.raft_addr.parse().expect("address");
        c.cluster.data_dir = dir.join(format!("node{}", m.id));
        c.cluster.members = members.clone();
        c.cluster.secret = "py-cluster-secret".into();
        c.cluster.tick_ms = 20;
        c.cluster.commit_timeout_ms = 2_000;
        let path = dir.join(format!("node{}.toml", m.id));
        std::fs::write(&path, toml::to_string(&c).expect("toml")).expect("write config");
        procs.push(start(&["serve", "--config", path.to_str().expect("utf-8 path")]));
    }
    let addrs: Vec<String> = procs.iter().map(|p| p.addr.clone()).collect();
    let pids: Vec<String> = procs.iter().map(|p| p.child.id().to_string()).collect();
    unittest("cluster_*.py", &[("ESC_CLUSTER", addrs.join(",")), ("ESC_CLUSTER_PIDS", pids.join(","))]);
}

#[path = "common/certs.rs"]
mod certs;

/// A standard TLS client (Python's `ssl` module, through the client's `tls_ca`/`ssl_context`)
/// against a server with `[ingest.tls]`, its certificate made at test time.
#[test]
fn python_client_speaks_tls_to_a_tls_server() {
    let dir = temp_dir("py-tls");
    let pki = certs::make_pki(&dir);
    let mut args: Vec<String> = vec![
        "serve".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--set".into(),
        "cluster.raft_listen=127.0.0.1:0".into(),
        "--set".into(),
        format!("cluster.data_dir={:?}", dir.join("data").display().to_string()),
    ];
    args.extend(certs::tls_sets(&pki));
    let s = start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    unittest("tls_*.py", &[("ESC_TLS_ADDR", s.addr.clone()), ("ESC_TLS_CA", pki.ca.display().to_string())]);
}
