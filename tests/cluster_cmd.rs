//! `esc cluster` as an operator uses it: a member that cannot start is reported at once with its
//! error; the files it writes (and the members' data files) are owner-only; logs carry no colour
//! codes; `restart N` on stdin restarts one member.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real processes, files and ports

mod common;

use common::{ESC, esc, temp_dir};

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cluster(dir: &Path, base: u16) -> Proc {
    Proc(
        Command::new(ESC)
            .args(["cluster", "--nodes", "3", "--base-port", &base.to_string(), "--dir"])
            .arg(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    )
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_member_that_cannot_listen_is_reported_at_once_with_its_error() {
    let dir = temp_dir("cluster-port-in-use");
    let base = common::free_base_port(30_000, 3);
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", base + 1)).unwrap();
    let started = Instant::now();
    let mut c = cluster(&dir, base);
    let status = loop {
        if let Some(st) = c.0.try_wait().unwrap() {
            break st;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "esc cluster kept running with a dead member");
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut c.0.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(err.contains("node 2 exited at once"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{}", base + 1)) && err.contains("listen"), "{err}");
    // Node 1, already started, was stopped again.
    let pid = std::fs::read_to_string(dir.join("node1.pid")).unwrap();
    let alive =
        Command::new("kill").args(["-0", pid.trim()]).stderr(Stdio::null()).status().unwrap().success();
    assert!(!alive, "node 1 left running");
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(unix)]
#[test]
fn files_are_owner_only_logs_plain_and_a_member_restarts_on_request() {
    let dir = temp_dir("cluster-restart");
    // An older esc left the secret world-readable: it is closed too.
    std::fs::write(dir.join("secret"), "0123456789abcdef0123456789abcdef").unwrap();
    let base = common::free_base_port(30_000, 3);
    let mut c = cluster(&dir, base);
    let mut out = BufReader::new(c.0.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    for line in out.by_ref() {
        let line = line.unwrap();
        let done = line.contains("restart N");
        printed.push(line);
        if done {
            break;
        }
    }
    assert!(printed.iter().any(|l| l.contains("restart N")), "{printed:?}");
    for f in ["secret", "node1.toml", "node2.toml", "node1.log", "node1.pid"] {
        assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&dir.join("node1")), 0o700);
    let data: Vec<_> = std::fs::read_dir(dir.join("node1")).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(!data.is_empty());
    for f in data.iter().filter(|p| p.is_file()) {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }

    let all = (0..3).map(|i| format!("127.0.0.1:{}", base + i)).collect::<Vec<_>>().join(",");
    let old_pid = std::fs::read_to_string(dir.join("node2.pid")).unwrap();
    let mut stdin = c.0.stdin.take().unwrap();
    stdin.write_all(b"restart 2\n").unwrap();
    stdin.flush().unwrap();
    let mut err = BufReader::new(c.0.stderr.take().unwrap()).lines();
    let mut said = Vec::new();
    for line in err.by_ref() {
        let line = line.unwrap();
        let done = line.contains("node 2 restarted");
        said.push(line);
        if done {
            break;
        }
    }
    assert!(said.iter().any(|l| l.contains("node 2 restarted")), "{said:?}");
    let new_pid = std::fs::read_to_string(dir.join("node2.pid")).unwrap();
    assert_ne!(old_pid, new_pid);
    let (ok, status, e) = esc(&["admin", "--addr", &all, "status"]);
    assert!(ok, "{status}{e}");
    assert_eq!(status.lines().filter(|l| l.ends_with(" yes")).count(), 3, "{status}");

    drop(stdin);
    assert!(Command::new("kill").args(["-TERM", &c.0.id().to_string()]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "esc cluster did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    for i in 1..=3 {
        let log = std::fs::read_to_string(dir.join(format!("node{i}.log"))).unwrap();
        assert!(log.contains("INFO"), "{log}");
        assert!(!log.contains('\u{1b}'), "colour codes in node{i}.log:\n{log}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
