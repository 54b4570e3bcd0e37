//! Runs `docs/operations.md`: every block after a `<!-- run: … -->` mark, in order — the cluster
//! block as the supervising `esc cluster` process, `type` blocks as lines typed into it, `shell`
//! blocks with bash (`esc` being the binary under test) — then repeats the rolling-restart pair for
//! members 2 and 3 as the page says, and checks that no acknowledged event was lost.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real processes, files, ports and time

mod common;

use common::{ESC, temp_dir};

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// The runnable blocks of the page: (mark, block text).
fn blocks(doc: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut mark: Option<String> = None;
    let mut body: Option<String> = None;
    for line in doc.lines() {
        if let Some(b) = body.as_mut() {
            if line.starts_with("```") {
                out.push((mark.take().unwrap_or_default(), body.take().unwrap_or_default()));
            } else {
                b.push_str(line);
                b.push('\n');
            }
        } else if let Some(m) = line.strip_prefix("<!-- run: ").and_then(|l| l.strip_suffix(" -->")) {
            mark = Some(m.to_string());
        } else if line.starts_with("```") && mark.is_some() {
            body = Some(String::new());
        }
    }
    out
}

fn free_base_port() -> u16 {
    for attempt in 0..200u16 {
        let base = 40_000 + (std::process::id() as u16 % 200) * 100 + attempt * 11 % 5_000;
        let ok = (0..3u16)
            .flat_map(|i| [base + i, base + 100 + i, base + 200 + i])
            .all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if ok {
            return base;
        }
    }
    panic!("no free port range");
}

struct Cluster(Child);

impl Drop for Cluster {
    fn drop(&mut self) {
        // SIGTERM, so it stops its members too; SIGKILL if it does not.
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.0.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines of a child's stream, read by a thread.
fn lines(r: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for l in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_for(rx: &Receiver<String>, what: &str, seen: &mut Vec<String>) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            let done = l.contains(what);
            seen.push(l);
            if done {
                return;
            }
        }
    }
    panic!("no {what:?} within 60 s: {seen:?}");
}

struct Env {
    dir: String,
    base: u16,
    all: String,
}

impl Env {
    fn command(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("ESC_BIN", ESC)
            .env("ESC_DIR", &self.dir)
            .env("BASE", self.base.to_string())
            .env("ALL", &self.all);
        c
    }

    /// Runs a shell block (bounded by 120 s); returns its stdout.
    fn shell(&self, block: &str) -> String {
        let script = format!("set -euo pipefail\nesc() {{ \"$ESC_BIN\" \"$@\"; }}\n{block}");
        let out = self.command("timeout").args(["120", "bash", "-c", &script]).output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(
            out.status.success(),
            "block failed ({}):\n{block}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        );
        stdout.into_owned()
    }
}

#[test]
fn the_operations_page_runs_as_written() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md")).unwrap();
    let blocks = blocks(&doc);
    let marks: Vec<&str> = blocks.iter().map(|(m, _)| m.as_str()).collect();
    assert_eq!(marks.first(), Some(&"setup"), "{marks:?}");
    assert_eq!(marks.iter().filter(|m| **m == "cluster").count(), 1, "{marks:?}");
    let tmp = temp_dir("operations-doc");
    let base = free_base_port();
    let env = Env {
        dir: tmp.join("esc-cluster").display().to_string(),
        base,
        all: (0..3).map(|i| format!("127.0.0.1:{}", base + i)).collect::<Vec<_>>().join(","),
    };
    let mut cluster: Option<(Cluster, Receiver<String>)> = None;
    let mut seen = Vec::new();
    let mut last = String::new();
    let mut restart_pair: Option<(String, String)> = None;
    let mut i = 0;
    while i < blocks.len() {
        let (mark, block) = &blocks[i];
        match mark.as_str() {
            "setup" => {} // replaced by `env`: a temp dir and free ports
            "cluster" => {
                let script = format!("esc() {{ exec \"$ESC_BIN\" \"$@\"; }}\n{block}");
                let mut child = env
                    .command("bash")
                    .args(["-c", &script])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                let out = lines(child.stdout.take().unwrap());
                let err = lines(child.stderr.take().unwrap());
                wait_for(&out, "restart N", &mut seen);
                cluster = Some((Cluster(child), err));
            }
            "type" => {
                let (c, err) = cluster.as_mut().expect("the cluster runs before anything is typed into it");
                let stdin = c.0.stdin.as_mut().unwrap();
                stdin.write_all(block.as_bytes()).unwrap();
                stdin.flush().unwrap();
                let id = block.split_whitespace().nth(1).unwrap();
                wait_for(err, &format!("node {id} restarted"), &mut seen);
                if block.starts_with("restart 1") {
                    restart_pair = Some((block.clone(), blocks[i + 1].1.clone()));
                }
            }
            "shell" => last = env.shell(block),
            other => panic!("unknown run mark {other:?}"),
        }
        i += 1;
        // "Repeat both steps with restart 2 / N=2, then restart 3 / N=3."
        if restart_pair.is_some() && blocks.get(i - 1).is_some_and(|(m, _)| m == "shell") {
            let (typed, wait) = restart_pair.take().unwrap();
            assert!(wait.contains("N=1;"), "{wait}");
            let (c, err) = cluster.as_mut().unwrap();
            for n in 2..=3 {
                let stdin = c.0.stdin.as_mut().unwrap();
                stdin.write_all(typed.replace("restart 1", &format!("restart {n}")).as_bytes()).unwrap();
                stdin.flush().unwrap();
                wait_for(err, &format!("node {n} restarted"), &mut seen);
                env.shell(&wait.replace("N=1;", &format!("N={n};")));
            }
        }
    }
    assert!(cluster.is_some(), "the page never started a cluster");
    assert!(doc.contains("the topic holds 400"), "the page states what the last block prints");
    assert_eq!(last.trim(), "400", "every acked event after the rolling restart");
    drop(cluster);
    let _ = std::fs::remove_dir_all(&tmp);
}
