//! `esc cluster`: a local cluster of `esc serve` processes on loopback. It writes one config per
//! member and the shared secret (owner-only), starts the members, reports one that dies (at once
//! or later) with the error from its log, restarts one on `restart N` typed on stdin, and stops
//! them all on Ctrl-C / SIGTERM. Not on the simulated path: it manages real processes and files.
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use eventstreamcore::config::{Config, MemberConfig};
use eventstreamcore::rt;
use rand::Rng;

/// How long a member may take to print its banner before it counts as failed to start.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a member may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Writes `data` to `path`, readable and writable by its owner only (0600), also when it existed.
pub fn write_owner_only(path: &Path, data: &[u8]) -> Result<(), String> {
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut o = std::fs::OpenOptions::new();
    o.create(true).truncate(true).write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    let mut f = o.open(path).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    }
    f.write_all(data).map_err(err)
}

/// Opens a member's log for appending, owner-only.
fn open_log(path: &Path) -> Result<std::fs::File, String> {
    let mut o = std::fs::OpenOptions::new();
    o.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The last `error`/`ERROR` line of a member's log (what it died of), else its last line.
fn last_error(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let pick = lines.iter().rev().find(|l| l.contains("error") || l.contains("ERROR")).or(lines.last());
    pick.map_or_else(|| "(its log is empty)".to_string(), |l| l.trim().to_string())
}

/// One running member.
struct Member {
    id: u64,
    config: PathBuf,
    log: PathBuf,
    pid_file: PathBuf,
    child: Option<Child>,
}

impl Member {
    /// Starts the member and waits until it listens, or reports what it died of.
    fn start(&mut self, exe: &Path) -> Result<(), String> {
        let log = open_log(&self.log)?;
        let mut child = Command::new(exe)
            .arg("serve")
            .arg("--config")
            .arg(&self.config)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start node {}: {e}", self.id))?;
        write_owner_only(&self.pid_file, format!("{}\n", child.id()).as_bytes())?;
        // The banner's first line says it listens; a thread reads it (and drains the rest).
        let (tx, rx) = std::sync::mpsc::channel();
        let out = child.stdout.take().ok_or("no stdout")?;
        std::thread::spawn(move || {
            let mut lines = BufReader::new(out).lines();
            let first = lines.next().and_then(Result::ok).unwrap_or_default();
            let _ = tx.send(first);
            for _ in lines {}
        });
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("node {} exited at once ({st}): {}", self.id, last_error(&self.log)));
            }
            match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(line) if line.starts_with("esc listening on ") => break,
                Ok(_) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    // Stdout closed without the banner: it is exiting; report why.
                    let _ = child.wait();
                    return Err(format!("node {} exited at once: {}", self.id, last_error(&self.log)));
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if Instant::now() > deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "node {} did not start within {} s",
                        self.id,
                        START_TIMEOUT.as_secs()
                    ));
                }
                Err(_) => {}
            }
        }
        self.child = Some(child);
        Ok(())
    }

    /// SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]; returns how it ended.
    fn stop(&mut self) -> Option<String> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(Some(st)) => return Some(st.to_string()),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                _ => {
                    let _ = child.kill();
                    return Some(child.wait().map_or_else(|e| e.to_string(), |s| format!("killed ({s})")));
                }
            }
        }
    }

    /// If the member has exited since the last look: how, with the error from its log.
    fn exited(&mut self) -> Option<String> {
        let st = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(format!("node {} exited ({st}): {}", self.id, last_error(&self.log)))
    }
}

/// Node `id`'s metrics, health and readiness port: base+200+id-1.
fn metrics_addr(base_port: u16, id: u64) -> String {
    format!("127.0.0.1:{}", base_port + 200 + (id - 1) as u16)
}

/// Writes the configs and secret, starts every member and supervises them until a signal.
pub async fn run(nodes: u64, dir: PathBuf, base_port: u16) -> Result<(), String> {
    if !(1..=9).contains(&nodes) {
        return Err("--nodes must be between 1 and 9".into());
    }
    if u32::from(base_port) + 200 + nodes as u32 > u32::from(u16::MAX) {
        return Err("--base-port too high".into());
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let secret_path = dir.join("secret");
    let secret = match std::fs::read_to_string(&secret_path) {
        Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
        _ => format!("{:032x}", rt::node_rng().random::<u128>()),
    };
    // Rewritten every time, so a secret left world-readable by an older esc is closed too.
    write_owner_only(&secret_path, secret.as_bytes())?;
    let members: Vec<MemberConfig> = (1..=nodes)
        .map(|id| MemberConfig {
            id,
            raft_addr: format!("127.0.0.1:{}", base_port + 100 + (id - 1) as u16),
            client_addr: format!("127.0.0.1:{}", base_port + (id - 1) as u16),
        })
        .collect();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut running = Vec::new();
    for m in &members {
        let mut member = write_member(&dir, m, &members, &secret, base_port)?;
        if let Err(e) = member.start(&exe) {
            for r in &mut running {
                Member::stop(r);
            }
            return Err(e);
        }
        running.push(member);
    }
    print_banner(&members, &dir, base_port);
    supervise(&mut running, &exe).await;
    for m in &mut running {
        // SIGTERM lets each node finish in-flight requests (and a leader hand over) and stop cleanly.
        if let Some(how) = m.stop() {
            eprintln!("node {} exited: {how}", m.id);
        }
    }
    Ok(())
}

/// Writes member `m`'s config (owner-only) and returns it, not started.
fn write_member(
    dir: &Path,
    m: &MemberConfig,
    members: &[MemberConfig],
    secret: &str,
    base_port: u16,
) -> Result<Member, String> {
    {
        let mut c = Config::default();
        c.node.id = m.id;
        c.node.name = format!("esc-{}", m.id);
        c.ingest.listen = m.client_addr.parse().map_err(|e| format!("{e}"))?;
        c.ingest.metrics_listen = Some(metrics_addr(base_port, m.id).parse().map_err(|e| format!("{e}"))?);
        c.cluster.raft_listen = m.raft_addr.parse().map_err(|e| format!("{e}"))?;
        c.cluster.data_dir = dir.join(format!("node{}", m.id));
        c.cluster.members = members.to_vec();
        c.cluster.secret = secret.to_string();
        c.cluster.cluster_id = "esc-local".into();
        let text = toml::to_string(&c).map_err(|e| e.to_string())?;
        let config = dir.join(format!("node{}.toml", m.id));
        write_owner_only(&config, text.as_bytes())?;
        Ok(Member {
            id: m.id,
            config,
            log: dir.join(format!("node{}.log", m.id)),
            pid_file: dir.join(format!("node{}.pid", m.id)),
            child: None,
        })
    }
}

/// The members' addresses and how to use the cluster.
fn print_banner(members: &[MemberConfig], dir: &Path, base_port: u16) {
    for m in members {
        println!(
            "node {} client {} raft {} metrics http://{}/metrics config {}/node{}.toml",
            m.id,
            m.client_addr,
            m.raft_addr,
            metrics_addr(base_port, m.id),
            dir.display(),
            m.id
        );
    }
    let all: Vec<&str> = members.iter().map(|m| m.client_addr.as_str()).collect();
    println!("publish: esc publish --addr {} --topic demo hello", all.join(","));
    println!("logs in {0}/node*.log, process ids in {0}/node*.pid", dir.display());
    println!("type `restart N` (Enter) to restart node N; Ctrl-C stops the cluster");
    let _ = std::io::stdout().flush();
}

/// Until a signal: reports members that exit, and restarts one on `restart N` from stdin.
async fn supervise(running: &mut [Member], exe: &Path) {
    let (tx, mut lines) = rt::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut signal = std::pin::pin!(rt::terminate_signal());
    let mut stdin_open = true;
    loop {
        rt::select! {
            biased;
            _ = &mut signal => return,
            line = lines.recv(), if stdin_open => match line {
                Some(line) => command(running, exe, line.trim()),
                None => stdin_open = false,
            },
            _ = rt::time::sleep(Duration::from_millis(200)) => {
                for m in running.iter_mut() {
                    if let Some(why) = m.exited() {
                        eprintln!("{why}");
                    }
                }
            }
        }
    }
}

/// One line typed on stdin.
fn command(running: &mut [Member], exe: &Path, line: &str) {
    let mut words = line.split_whitespace();
    match (words.next(), words.next().and_then(|n| n.parse::<u64>().ok())) {
        (None, _) => {}
        (Some("restart"), Some(id)) => match running.iter_mut().find(|m| m.id == id) {
            Some(m) => {
                if let Some(how) = m.stop() {
                    eprintln!("node {id} stopped: {how}");
                }
                match m.start(exe) {
                    Ok(()) => {
                        eprintln!("node {id} restarted (pid {})", m.child.as_ref().map_or(0, Child::id))
                    }
                    Err(e) => eprintln!("{e}"),
                }
            }
            None => eprintln!("no node {id}"),
        },
        _ => eprintln!("unknown command {line:?}: type `restart N`"),
    }
}
