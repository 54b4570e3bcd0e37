//! `esc` — the EventStreamCore server and its command-line client.

mod cmd;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use eventstreamcore::client::ClusterClient;
use eventstreamcore::config::Config;
use eventstreamcore::config::MemberConfig;
use eventstreamcore::event::Priority;
use eventstreamcore::ingest::{IngestServer, ShutdownHandle};
use eventstreamcore::node::{ClusterNode, LocalNode};
use eventstreamcore::pipeline::DlqReason;
use eventstreamcore::rt::{self, NodeClock};
use eventstreamcore::server::{Seams, Server};
use eventstreamcore::wire::AdminRequest;
use rand::Rng;

#[derive(Parser, Debug)]
#[command(
    name = "esc",
    version,
    about = "EventStreamCore: event streaming with a deterministic simulation testbed"
)]
struct Cli {
    /// Connect to the client port over TLS, trusting only the CA certificate(s) in this PEM file
    /// (publish, fetch, tail, admin).
    #[arg(long, global = true, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// With --tls-ca: the name the server's certificate must carry (default: the IP address
    /// connected to).
    #[arg(long, global = true, value_name = "NAME", requires = "tls_ca")]
    tls_server_name: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server (embedded defaults; no file needed).
    Serve {
        /// TOML file overriding the defaults (see config/esc.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Override one key, e.g. --set ingest.max_connections=500 (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
        /// Shorthand for --set ingest.listen=ADDR.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Truncate the write-ahead log at a corrupt record instead of refusing to start
        /// (entries after it are lost on this node; other members still hold committed ones).
        #[arg(long)]
        repair: bool,
    },
    /// Start a local cluster of `esc serve` processes on loopback and print its addresses; a member
    /// that dies is reported at once with its error; `restart N` on stdin restarts node N.
    Cluster {
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// Directory for the members' configs and data (kept after exit).
        #[arg(long, default_value = "esc-cluster")]
        dir: PathBuf,
        /// Client port of node 1; node N uses base+N-1, its Raft port base+100+N-1, its metrics
        /// (/metrics, /health, /ready) port base+200+N-1.
        #[arg(long, default_value_t = 7070)]
        base_port: u16,
    },
    /// Follow a topic from an offset, printing events as they are committed.
    Tail {
        /// Cluster members to read from (comma-separated).
        #[arg(long, default_value = "127.0.0.1:7070", value_delimiter = ',')]
        addr: Vec<SocketAddr>,
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Confirm each read with the leader (linearizable).
        #[arg(long)]
        linearizable: bool,
        /// Stop after this many events (default: follow forever).
        #[arg(long)]
        count: Option<u64>,
        /// Stop once the end of the topic is reached.
        #[arg(long)]
        to_end: bool,
        #[arg(long, default_value = "")]
        token: String,
        /// Give up when no member has served a read for this many seconds (0: keep trying).
        #[arg(long, default_value_t = 30)]
        timeout: u64,
        /// One JSON object per event (JSON Lines).
        #[arg(long)]
        json: bool,
        /// A named consumer: start at its committed position (else at --from) and commit what
        /// was printed every --commit-every events and at exit (at-least-once).
        #[arg(long)]
        consumer: Option<String>,
        /// With --consumer: commit after this many events.
        #[arg(long, default_value_t = 100, requires = "consumer")]
        commit_every: u64,
    },
    /// List named consumers with their topic, committed offset, end offset and lag.
    Consumers {
        /// Cluster members (comma-separated); any member that answers lists them.
        #[arg(long, default_value = "127.0.0.1:7070", value_delimiter = ',')]
        addr: Vec<SocketAddr>,
        /// Only the consumer with this name.
        #[arg(long)]
        consumer: Option<String>,
        #[arg(long, default_value = "")]
        token: String,
        /// Print one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Cluster administration: status, add, remove, transfer.
    Admin {
        /// Cluster members to contact (comma-separated); requests are redirected to the leader.
        #[arg(long, default_value = "127.0.0.1:7070", value_delimiter = ',')]
        addr: Vec<SocketAddr>,
        /// Token of a credential with the admin role (`[[ingest.clients]]` or `ingest.auth_token`):
        /// add, remove and transfer are refused without one; status needs none on an open port.
        #[arg(long, default_value = "")]
        token: String,
        /// Print the result as one JSON document.
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Publish events and print where each was stored.
    Publish {
        /// Cluster members (comma-separated); publishes follow "not leader" redirects.
        #[arg(long, default_value = "127.0.0.1:7070", value_delimiter = ',')]
        addr: Vec<SocketAddr>,
        #[arg(long)]
        topic: String,
        /// BATCH, LOW, MEDIUM, HIGH, CRITICAL or 0-4.
        #[arg(long, default_value = "MEDIUM")]
        priority: Priority,
        /// How many events to send, each carrying MESSAGE (default 1; not with --file).
        #[arg(long)]
        count: Option<u64>,
        /// Send legacy frames (no acks exist in the legacy protocol).
        #[arg(long)]
        legacy: bool,
        /// Producer id for idempotency (default: random). Re-running with the same producer and
        /// sequences returns the original offsets instead of storing copies.
        #[arg(long)]
        producer: Option<u64>,
        /// Sequence number of the first event.
        #[arg(long, default_value_t = 1)]
        first_seq: u64,
        /// Events per frame.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Auth token, if the server requires one.
        #[arg(long, default_value = "")]
        token: String,
        /// Print only a summary, not one line per event.
        #[arg(long)]
        quiet: bool,
        /// Read payloads from a file (`-` = stdin): one per line (blank lines skipped) unless --whole.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// With --file: the whole input is one payload, byte for byte.
        #[arg(long, requires = "file")]
        whole: bool,
        /// Payloads (MESSAGE, or each line / the whole file) are hex, e.g. `00ff 10`.
        #[arg(long)]
        hex: bool,
        /// Key carried by every event (UTF-8 text).
        #[arg(long)]
        key: Option<String>,
        /// Header carried by every event, NAME=VALUE (repeatable).
        #[arg(long = "header", value_name = "NAME=VALUE")]
        headers: Vec<String>,
        /// Print the acks as one JSON document.
        #[arg(long)]
        json: bool,
        /// The payload (or use --file).
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        message: Option<String>,
    },
    /// Read events of a topic from an offset.
    Fetch {
        /// Cluster members (comma-separated); any member that answers serves the read.
        #[arg(long, default_value = "127.0.0.1:7070", value_delimiter = ',')]
        addr: Vec<SocketAddr>,
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long, default_value_t = 100)]
        max: u32,
        #[arg(long, default_value = "")]
        token: String,
        /// Print the page as one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Measure publish throughput and ack latency (starts an in-process server if --addr is not given).
    Bench(BenchArgs),
    /// Show or check configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// List topics with their events, bytes, first/end offset and retention settings.
    Topics {
        /// Cluster members (comma-separated); the member that answers reports its applied state.
        #[arg(long, default_value = "127.0.0.1:7070", value_delimiter = ',')]
        addr: Vec<SocketAddr>,
        #[arg(long, default_value = "")]
        token: String,
        /// Print the server's JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Inspect the dead-letter queue of a server (kept in `<data_dir>/dlq`), or ask for it to be redriven.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
}

#[derive(Subcommand, Debug)]
enum DlqAction {
    /// List dead-lettered events with their reasons.
    List {
        /// The server's data directory (`cluster.data_dir`); the DLQ is in its `dlq` subdirectory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Only entries with this reason (deadline, realtime_overflow, batch_overflow, invalid,
        /// retries_exhausted, shutdown).
        #[arg(long)]
        reason: Option<DlqReason>,
        /// Print the entries as one JSON document.
        #[arg(long)]
        json: bool,
    },
    /// Move entries back into the pipeline. The server owning the data directory applies the
    /// request at its next control-loop tick (or at its next start); entries dead-lettered after
    /// this command are not included.
    Redrive {
        /// The server's data directory (`cluster.data_dir`); the DLQ is in its `dlq` subdirectory.
        #[arg(long)]
        data_dir: PathBuf,
        /// Only entries with this reason.
        #[arg(long)]
        reason: Option<DlqReason>,
    },
}

#[derive(Subcommand, Debug)]
enum AdminAction {
    /// One row per member (id, address, role, term, commit/applied, lag, reachable): asks every
    /// member given and every member their answers name.
    Status,
    /// Add a node (started with cluster.join = true): learner first, voter once caught up.
    Add {
        #[arg(long)]
        id: u64,
        #[arg(long)]
        raft_addr: String,
        #[arg(long)]
        client_addr: String,
    },
    /// Remove a node (the leader included).
    Remove {
        #[arg(long)]
        id: u64,
    },
    /// Hand leadership to another voter.
    Transfer {
        #[arg(long)]
        id: u64,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigAction {
    /// Print the embedded defaults as TOML.
    Defaults,
    /// Validate a config file (and overrides) and print the effective configuration.
    Check {
        file: PathBuf,
        #[arg(long = "set", value_name = "KEY=VALUE")]
        set: Vec<String>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let tls = cmd::tls::client_tls_or_exit(&cli);
    let result = match cli.command {
        Command::Serve { config, set, listen, repair } => serve(config, set, listen, repair).await,
        Command::Cluster { nodes, dir, base_port } => local_cluster(nodes, dir, base_port).await,
        Command::Consumers { addr, consumer, token, json } => {
            cmd::consumers::list(addr, token, consumer, json).await
        }
        Command::Tail {
            addr,
            topic,
            from,
            linearizable,
            count,
            to_end,
            token,
            timeout,
            json,
            consumer,
            commit_every,
        } => {
            cmd::read::tail(cmd::read::TailOpts {
                addrs: addr,
                topic,
                from,
                linearizable,
                count,
                to_end,
                token,
                timeout: (timeout > 0).then(|| Duration::from_secs(timeout)),
                json,
                tls,
                consumer,
                commit_every,
            })
            .await
        }
        Command::Admin { addr, token, json, action } => admin(addr, token, json, action, tls).await,
        Command::Topics { addr, token, json } => cmd::topics::list(addr, token, json).await,
        Command::Publish {
            addr,
            topic,
            priority,
            count,
            legacy,
            producer,
            first_seq,
            batch,
            token,
            quiet,
            file,
            whole,
            hex,
            key,
            headers,
            json,
            message,
        } => {
            let format = cmd::payload::Format { whole, hex };
            match publish_input(file, message, count, format, &headers) {
                Err(e) => Err(e),
                Ok((payloads, headers)) => {
                    let opts = cmd::publish::PublishOpts {
                        addr,
                        topic,
                        priority,
                        producer,
                        first_seq,
                        batch: batch.max(1),
                        token,
                        quiet,
                        json,
                        key: key.map(String::into_bytes),
                        headers,
                        tls,
                    };
                    if legacy {
                        cmd::publish::publish_legacy(opts, payloads).await
                    } else {
                        cmd::publish::publish(opts, payloads).await
                    }
                }
            }
        }
        Command::Fetch { addr, topic, from, max, token, json } => {
            cmd::read::fetch(addr, topic, from, max, token, json, tls).await
        }
        Command::Bench(args) => bench(args).await,
        Command::Dlq { action: DlqAction::List { data_dir, reason, json } } => {
            cmd::dlq::list(&data_dir, reason, json)
        }
        Command::Dlq { action: DlqAction::Redrive { data_dir, reason } } => {
            cmd::dlq::redrive(&data_dir, reason)
        }
        Command::Config { action: ConfigAction::Defaults } => {
            print!("{}", Config::defaults_toml());
            Ok(())
        }
        Command::Config { action: ConfigAction::Check { file, set } } => config_check(file, set),
    };
    exit_code(result)
}

/// The process's exit status for a command's result; an error is printed first.
fn exit_code(result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// One `--header NAME=VALUE` of `esc publish`, parsed.
type Header = (String, Vec<u8>);

/// The payloads and headers `esc publish` sends: MESSAGE `count` times (hex-decoded under
/// `--hex`) or each payload of `--file` once, and every `--header NAME=VALUE` parsed.
fn publish_input(
    file: Option<PathBuf>,
    message: Option<String>,
    count: Option<u64>,
    format: cmd::payload::Format,
    headers: &[String],
) -> Result<(Vec<Vec<u8>>, Vec<Header>), String> {
    let payloads = match (file, message) {
        (Some(_), _) if count.is_some() => {
            Err("--count repeats MESSAGE; with --file each payload is sent once".into())
        }
        (Some(path), _) => cmd::payload::read_file(&path, format),
        (None, Some(m)) if format.hex => {
            cmd::payload::hex(m.as_bytes()).map(|p| vec![p; count.unwrap_or(1) as usize])
        }
        (None, Some(m)) => Ok(vec![m.into_bytes(); count.unwrap_or(1) as usize]),
        (None, None) => Err("give MESSAGE or --file".into()),
    }?;
    let headers = headers.iter().map(|h| cmd::payload::header(h)).collect::<Result<Vec<_>, String>>()?;
    Ok((payloads, headers))
}

/// `esc config check`: validates a file with overrides and prints the effective configuration.
fn config_check(file: PathBuf, set: Vec<String>) -> Result<(), String> {
    Config::load(Some(&file), std::env::vars(), &set)
        .map(|c| {
            println!("config OK\n\n{}", toml::to_string(&c).unwrap_or_default());
        })
        .map_err(|e| e.to_string())
}

fn init_tracing(level: &str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| level.parse::<tracing_subscriber::EnvFilter>().unwrap_or_else(|_| "info".into()));
    // Colour codes only on a terminal: a log file or a pipe gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .try_init();
}

/// How long a leader stopped by a signal waits for another voter to take over.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// On SIGINT/SIGTERM: a leader hands over first (so the cluster need not wait an election
/// timeout), then the server shuts down gracefully.
async fn stop_on_signal(node: ClusterNode, stop: ShutdownHandle) {
    if rt::terminate_signal().await.is_ok() {
        tracing::info!("signal received: shutting down");
        match node.hand_over_leadership(HANDOVER_TIMEOUT).await {
            Ok(Some(to)) => tracing::info!(to, "leadership handed over"),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "leadership not handed over; stopping anyway"),
        }
        stop.shutdown();
    }
}

/// Prints the lines scripts wait for (listening addresses, node id, data directory), in one
/// write: a reader that stops after the first line must not make a later print fail.
fn print_banner(server: &Server, config: &Config) {
    let node = server.node();
    let mut banner = format!("esc listening on {}\n", server.client_addr());
    let raft = match node.raft_addr() {
        Some(a) => format!("raft on {a}"),
        None => "raft port closed (no cluster.secret)".to_string(),
    };
    banner += &format!("esc node {} {raft} data in {}\n", config.node.id, config.cluster.data_dir.display());
    if let Some(udp) = server.udp_addr() {
        banner += &format!("esc udp legacy ingest on {udp}\n");
    }
    if let Some(m) = server.metrics_addr() {
        banner += &format!("esc metrics on http://{m}/metrics\n");
    }
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(banner.as_bytes());
    let _ = out.flush();
}

async fn serve(
    file: Option<PathBuf>,
    mut set: Vec<String>,
    listen: Option<SocketAddr>,
    repair: bool,
) -> Result<(), String> {
    if let Some(addr) = listen {
        set.push(format!("ingest.listen=\"{addr}\""));
    }
    let mut config = Config::load(file.as_deref(), std::env::vars(), &set).map_err(|e| e.to_string())?;
    init_tracing(&config.log.level);
    let (fds, fitted) = eventstreamcore::fdlimit::ensure_or_fit(&mut config).map_err(|e| e.to_string())?;
    if let Some(warning) = fitted {
        tracing::warn!("{warning}");
    }
    tracing::info!(?fds, "file descriptor limit checked against the connection limits");
    let server = Server::start(&config, Seams::production(repair)).await.map_err(|e| e.to_string())?;
    let node = server.node().clone();
    print_banner(&server, &config);
    let stop = server.shutdown_handle();
    let metrics = server.metrics();
    rt::spawn(stop_on_signal(node.clone(), stop));
    // What a burst freed (closed connections, a compacted log) goes back to the system within
    // this long, instead of staying resident at its peak (`rt::mem`).
    rt::spawn(async {
        loop {
            rt::time::sleep(Duration::from_secs(10)).await;
            rt::mem::release_free_memory();
        }
    });
    // SIGHUP re-reads the configuration and applies the pipeline's topic table and the [topics]
    // retention settings (the only parts that change without a restart); a bad file is reported
    // and changes nothing.
    let reload_node = node.clone();
    rt::spawn(async move {
        let mut hups = rt::Hangups::new();
        loop {
            hups.recv().await;
            match Config::load(file.as_deref(), std::env::vars(), &set) {
                Ok(c) => {
                    let n = c.pipeline.topics.len();
                    // Retention settings: proposed by this member while it leads.
                    reload_node.set_topic_settings(c.topic_settings());
                    reload_node.reload_routes(c.pipeline.topics, c.pipeline.default_priority);
                    tracing::info!(entries = n, "SIGHUP: pipeline topic table reloaded");
                }
                Err(e) => tracing::error!(error = %e, "SIGHUP: configuration not reloaded"),
            }
        }
    });
    let result = server.run().await;
    // The same page as `GET /metrics` (ingest, Raft, peers; the pipeline's only while it led).
    eprint!(
        "{}{}",
        metrics.render_prometheus(),
        eventstreamcore::service::EventService::render_metrics(&node)
    );
    result
}

async fn bench(args: BenchArgs) -> Result<(), String> {
    let BenchArgs { addr, connections, events, batch, pipeline, payload, legacy, token, cluster, .. } = args;
    let (report_every, probe) = (args.report_every, args.server_pid.map(rss_probe));
    let mut local = None;
    let mut members = Vec::new();
    let addr = match addr {
        Some(a) => a,
        None if cluster > 0 => {
            let (m, leader) = start_bench_cluster(cluster, batch * pipeline * connections).await?;
            members = m;
            leader
        }
        None => {
            let mut config = Config::default();
            config.ingest.listen = "127.0.0.1:0".parse().expect("valid address");
            config.ingest.max_events_per_frame = config.ingest.max_events_per_frame.max(batch);
            config.ingest.max_inflight_events =
                config.ingest.max_inflight_events.max(batch * pipeline * connections);
            let clock = NodeClock::new();
            let node = LocalNode::new(1, clock.clone(), config.dedup);
            let server = IngestServer::bind(config.ingest, node.clone(), clock, "esc-bench")
                .await
                .map_err(|e| e.to_string())?;
            let a = server.local_addr();
            let stop = server.shutdown_handle();
            let task = rt::spawn(server.run());
            local = Some((node, stop, task));
            a
        }
    };
    let cfg = eventstreamcore::bench::BenchConfig {
        addr,
        connections: connections.max(1),
        events,
        batch: batch.max(1),
        pipeline: pipeline.max(1),
        payload_bytes: payload,
        topic: "bench".to_string(),
        legacy,
        token,
        report_every,
        probe,
    };
    let report = eventstreamcore::bench::run(cfg.clone()).await.map_err(|e| e.to_string())?;
    println!("{}", report.render(&cfg));
    if !members.is_empty() {
        let (stored, caught_up) = stored_per_member(&members).await;
        println!("cluster of {}: events stored per member {stored:?}{caught_up}", members.len());
        let max = stored.iter().copied().max().unwrap_or(0);
        for (_, stop, run) in members {
            // `run` stops the member's node once its listener has shut down.
            stop.shutdown();
            let _ = run.await;
        }
        if !legacy && max != events {
            return Err(format!("expected {events} stored events, found {max}"));
        }
    }
    if let Some((node, stop, task)) = local {
        let stored = node.state().event_count("bench");
        println!("server stored {stored} events");
        stop.shutdown();
        let _ = task.await;
        if stored != events {
            return Err(format!("expected {events} stored events, found {stored}"));
        }
    } else if !legacy && report.acked != events {
        return Err(format!("expected {events} acks, got {}", report.acked));
    }
    Ok(())
}

/// Events each bench member stored, once they agree (bounded wait: followers apply a moment after
/// the leader acked), and a note if they did not catch up.
async fn stored_per_member(members: &[BenchMember]) -> (Vec<u64>, &'static str) {
    let count = || -> Vec<u64> { members.iter().map(|m| m.0.state().event_count("bench")).collect() };
    let mut stored = count();
    for _ in 0..500 {
        if stored.iter().all(|&n| n == stored[0]) {
            return (stored, "");
        }
        rt::time::sleep(Duration::from_millis(20)).await;
        stored = count();
    }
    match stored.iter().all(|&n| n == stored[0]) {
        true => (stored, ""),
        false => (stored, " (applied so far; followers still catching up)"),
    }
}

async fn admin(
    addrs: Vec<SocketAddr>,
    token: String,
    json: bool,
    action: AdminAction,
    tls: Option<eventstreamcore::tls::ClientTls>,
) -> Result<(), String> {
    let req = match action {
        AdminAction::Status => {
            let rows = cmd::status::collect(&addrs, &token, tls.as_ref()).await;
            match json {
                true => println!("{}", cmd::status::json(&rows)),
                false => print!("{}", cmd::status::table(&rows)),
            }
            return match rows.iter().any(|r| r.answer.is_ok()) {
                true => Ok(()),
                false => Err("no member answered".into()),
            };
        }
        AdminAction::Add { id, raft_addr, client_addr } => {
            AdminRequest::AddNode { id, raft_addr, client_addr }
        }
        AdminAction::Remove { id } => AdminRequest::RemoveNode { id },
        AdminAction::Transfer { id } => AdminRequest::TransferLeader { id },
    };
    let mut client = ClusterClient::new(addrs, "esc-admin", token);
    client.tls = tls;
    let text = client.admin(req).await.map_err(|e| e.to_string())?;
    match json {
        true => println!("{}", serde_json::json!({ "result": text.trim_end() })),
        false => println!("{}", text.trim_end()),
    }
    Ok(())
}

/// Starts a local cluster of `esc serve` processes (see `cmd::cluster`).
async fn local_cluster(nodes: u64, dir: PathBuf, base_port: u16) -> Result<(), String> {
    cmd::cluster::run(nodes, dir, base_port).await
}

/// `esc bench` options.
#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// A running server; default: start one in-process on loopback.
    #[arg(long)]
    pub addr: Option<SocketAddr>,
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    #[arg(long, default_value_t = 200_000)]
    pub events: u64,
    /// Events per acked publish frame.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Frames in flight per connection.
    #[arg(long, default_value_t = 8)]
    pub pipeline: usize,
    #[arg(long, default_value_t = 128)]
    pub payload: usize,
    /// Send legacy frames instead of acked publishes.
    #[arg(long)]
    pub legacy: bool,
    #[arg(long, default_value = "")]
    pub token: String,
    /// In-process server: 0 = the in-memory single node (ingest path only); N = a durable
    /// Raft cluster of N members on loopback with their logs in a temp dir (fsync, replication).
    #[arg(long, default_value_t = 0)]
    pub cluster: u64,
    /// Print a progress line (events/s and worst ack latency of the interval) every N acked events.
    #[arg(long, default_value_t = 0)]
    pub report_every: u64,
    /// With --report-every: add this process's resident memory (VmRSS) to each line.
    #[arg(long)]
    pub server_pid: Option<u32>,
}

/// `, server RSS <n> MB` for the progress lines of `esc bench --server-pid`.
#[allow(clippy::disallowed_methods)] // reads /proc of a real process; the bench never runs simulated
fn rss_probe(pid: u32) -> eventstreamcore::bench::Probe {
    eventstreamcore::bench::Probe(std::sync::Arc::new(move || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let kb = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok());
        match kb {
            Some(kb) => format!(", server RSS {} MB", kb / 1024),
            None => format!(", server RSS unknown (pid {pid})"),
        }
    }))
}

type BenchMember = (ClusterNode, ShutdownHandle, rt::JoinHandle<Result<(), String>>);

/// Starts `n` durable members in this process (logs in a fresh temp dir) and returns them with the
/// leader's client address once it has committed an entry of its term.
#[allow(clippy::disallowed_methods)] // the bench's temp dir and free ports are real, not simulated
async fn start_bench_cluster(n: u64, inflight: usize) -> Result<(Vec<BenchMember>, SocketAddr), String> {
    let dir = std::env::temp_dir().join(format!("esc-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = || -> Result<u16, String> {
        let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        Ok(l.local_addr().map_err(|e| e.to_string())?.port())
    };
    let mut cfgs = Vec::new();
    for id in 1..=n {
        cfgs.push(MemberConfig {
            id,
            raft_addr: format!("127.0.0.1:{}", port()?),
            client_addr: format!("127.0.0.1:{}", port()?),
        });
    }
    let bench_secret = format!("{:032x}", rt::node_rng().random::<u128>());
    let mut members = Vec::new();
    for m in &cfgs {
        let mut c = Config::default();
        c.ingest.listen = m.client_addr.parse().map_err(|e| format!("{e}"))?;
        c.ingest.max_events_per_frame = c.ingest.max_events_per_frame.max(inflight);
        c.ingest.max_inflight_events = c.ingest.max_inflight_events.max(inflight);
        c.cluster.raft_listen = m.raft_addr.parse().map_err(|e| format!("{e}"))?;
        c.cluster.data_dir = dir.join(format!("node{}", m.id));
        c.cluster.members = if n > 1 { cfgs.clone() } else { Vec::new() };
        // A fresh random secret: the bench members listen on loopback ports others can reach.
        c.cluster.secret = bench_secret.clone();
        c.cluster.tick_ms = 10;
        c.node.id = m.id;
        c.node.name = format!("esc-bench-{}", m.id);
        c.pipeline.enabled = false;
        let server = Server::start(&c, Seams::production(false)).await.map_err(|e| e.to_string())?;
        let node = server.node().clone();
        let stop = server.shutdown_handle();
        let run = rt::spawn(server.run());
        members.push((node, stop, run));
    }
    for _ in 0..1000 {
        for (node, ..) in &members {
            let st = node.status();
            if st.role == eventstreamcore::raft::Role::Leader && st.commit >= 1 && st.applied == st.commit {
                let i = (st.id - 1) as usize;
                return Ok((members, cfgs[i].client_addr.parse().map_err(|e| format!("{e}"))?));
            }
        }
        rt::time::sleep(Duration::from_millis(10)).await;
    }
    Err("the bench cluster elected no leader within 10 s".into())
}
