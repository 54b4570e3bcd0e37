//! Helpers shared by the tests that run the `esc` binary and real sockets.
#![allow(dead_code, clippy::disallowed_methods)] // each test file uses some; real ports, files, processes

#[cfg(not(madsim))]
pub mod cluster;
#[cfg(target_os = "linux")]
pub mod fd;

use std::path::PathBuf;
use std::process::Command;

/// The `esc` binary under test.
pub const ESC: &str = env!("CARGO_BIN_EXE_esc");

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A base port from `lo` up whose client ports (base..base+n), Raft ports (base+100..) and
/// metrics ports (base+200..) are all free now. Each call in a process starts at another range:
/// tests running at once would otherwise find the same range free before either cluster binds it.
pub fn free_base_port(lo: u16, n: u16) -> u16 {
    static CALLS: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
    let first = CALLS.fetch_add(50, std::sync::atomic::Ordering::Relaxed);
    for attempt in first..first + 200 {
        let base = lo + (std::process::id() as u16 % 250) * 100 + attempt * 13 % 5_000;
        let ok = (0..n)
            .flat_map(|i| [base + i, base + 100 + i, base + 200 + i])
            .all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if ok {
            return base;
        }
    }
    panic!("no free port range");
}

/// A fresh, empty directory under the system temp dir, unique to this process and call.
pub fn temp_dir(what: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let d = std::env::temp_dir().join(format!("esc-test-{what}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Runs `esc ARGS` to completion: (success, stdout, stderr).
pub fn esc(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(ESC).args(args).output().expect("esc runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An `esc` process that serves clients, killed (and reaped) when dropped.
pub struct EscServer {
    pub child: std::process::Child,
    /// The client address from its banner ("esc listening on ADDR").
    pub addr: String,
}

impl Drop for EscServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `esc ARGS` and reads the client address from the first line it prints.
pub fn start_esc(args: &[&str]) -> EscServer {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(ESC)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("esc starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line).expect("banner");
    let addr = match line.trim().strip_prefix("esc listening on ") {
        Some(a) => a.to_string(),
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("unexpected first line {line:?}")
        }
    };
    EscServer { child, addr }
}

/// The configs of an `n`-member cluster on free loopback ports (ids 1..=n, data under `dir`,
/// every member listed, the given secret); the caller adds its own timings, then writes them.
pub fn member_configs(dir: &std::path::Path, n: u64, secret: &str) -> Vec<eventstreamcore::config::Config> {
    use eventstreamcore::config::{Config, MemberConfig};
    let members: Vec<MemberConfig> = (1..=n)
        .map(|id| MemberConfig {
            id,
            raft_addr: format!("127.0.0.1:{}", free_port()),
            client_addr: format!("127.0.0.1:{}", free_port()),
        })
        .collect();
    members
        .iter()
        .map(|m| {
            let mut c = Config::default();
            c.node.id = m.id;
            c.ingest.listen = m.client_addr.parse().unwrap();
            c.cluster.raft_listen = m.raft_addr.parse().unwrap();
            c.cluster.data_dir = dir.join(format!("node{}", m.id));
            c.cluster.members = members.clone();
            c.cluster.secret = secret.into();
            c
        })
        .collect()
}
