//! `esc` — the EventStreamCore server and its command-line client.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use eventstreamcore::client::{Client, ClientError};
use eventstreamcore::client::{ClusterClient, Subscription};
use eventstreamcore::config::Config;
use eventstreamcore::config::MemberConfig;
use eventstreamcore::event::{Event, Priority};
use eventstreamcore::ingest::{IngestServer, ShutdownHandle};
use eventstreamcore::node::{ClusterNode, LocalNode};
use eventstreamcore::pipeline::{Dlq, DlqReason, RedriveFilter};
use eventstreamcore::rt::{self, NodeClock};
use eventstreamcore::server::{Seams, Server};
use eventstreamcore::wire::AckItem;
use eventstreamcore::wire::AdminRequest;
use rand::Rng;

#[derive(Parser, Debug)]
#[command(
    name = "esc",
    version,
    about = "EventStreamCore: event streaming with a deterministic simulation testbed"
)]
struct Cli {
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
    /// Start a local cluster of `esc serve` processes on loopback and print its addresses.
    Cluster {
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// Directory for the members' configs and data (kept after exit).
        #[arg(long, default_value = "esc-cluster")]
        dir: PathBuf,
        /// Client port of node 1; node N uses base+N-1, its Raft port base+100+N-1.
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
    },
    /// Cluster administration: status, add, remove, transfer.
    Admin {
        /// Cluster members to contact (comma-separated); requests are redirected to the leader.
        #[arg(long, default_value = "127.0.0.1:7070", value_delimiter = ',')]
        addr: Vec<SocketAddr>,
        #[arg(long, default_value = "")]
        token: String,
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
        /// How many events to send (each carries MESSAGE).
        #[arg(long, default_value_t = 1)]
        count: u64,
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
        message: String,
    },
    /// Read events of a topic from an offset.
    Fetch {
        #[arg(long, default_value = "127.0.0.1:7070")]
        addr: SocketAddr,
        #[arg(long)]
        topic: String,
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long, default_value_t = 100)]
        max: u32,
        #[arg(long, default_value = "")]
        token: String,
    },
    /// Measure publish throughput and ack latency (starts an in-process server if --addr is not given).
    Bench {
        /// A running server; default: start one in-process on loopback.
        #[arg(long)]
        addr: Option<SocketAddr>,
        #[arg(long, default_value_t = 4)]
        connections: usize,
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        /// Events per acked publish frame.
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Frames in flight per connection.
        #[arg(long, default_value_t = 8)]
        pipeline: usize,
        #[arg(long, default_value_t = 128)]
        payload: usize,
        /// Send legacy frames instead of acked publishes.
        #[arg(long)]
        legacy: bool,
        #[arg(long, default_value = "")]
        token: String,
        /// In-process server: 0 = the in-memory single node (ingest path only); N = a durable
        /// Raft cluster of N members on loopback with their logs in a temp dir (fsync, replication).
        #[arg(long, default_value_t = 0)]
        cluster: u64,
    },
    /// Show or check configuration.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Inspect the dead-letter queue in a data directory, or ask for it to be redriven.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
}

#[derive(Subcommand, Debug)]
enum DlqAction {
    /// List dead-lettered events with their reasons.
    List {
        /// The server's data directory (holds `dlq.log`).
        #[arg(long)]
        data_dir: PathBuf,
        /// Only entries with this reason (deadline, realtime_overflow, batch_overflow, invalid,
        /// retries_exhausted, shutdown).
        #[arg(long)]
        reason: Option<DlqReason>,
    },
    /// Move entries back into the pipeline. The server owning the data directory applies the
    /// request at its next control-loop tick (or at its next start); entries dead-lettered after
    /// this command are not included.
    Redrive {
        #[arg(long)]
        data_dir: PathBuf,
        /// Only entries with this reason.
        #[arg(long)]
        reason: Option<DlqReason>,
    },
}

#[derive(Subcommand, Debug)]
enum AdminAction {
    /// Role, term, commit index and members of the node answering.
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
    let result = match cli.command {
        Command::Serve { config, set, listen, repair } => serve(config, set, listen, repair).await,
        Command::Cluster { nodes, dir, base_port } => local_cluster(nodes, dir, base_port).await,
        Command::Tail { addr, topic, from, linearizable, count, to_end, token } => {
            tail(addr, topic, from, linearizable, count, to_end, token).await
        }
        Command::Admin { addr, token, action } => admin(addr, token, action).await,
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
            message,
        } => {
            let opts = PublishOpts {
                addr,
                topic,
                priority,
                count,
                producer,
                first_seq,
                batch: batch.max(1),
                token,
                quiet,
            };
            if legacy { publish_legacy(opts, message).await } else { publish(opts, message).await }
        }
        Command::Fetch { addr, topic, from, max, token } => fetch(addr, topic, from, max, token).await,
        Command::Bench { addr, connections, events, batch, pipeline, payload, legacy, token, cluster } => {
            bench(addr, connections, events, batch, pipeline, payload, legacy, token, cluster).await
        }
        Command::Dlq { action } => dlq(action),
        Command::Config { action: ConfigAction::Defaults } => {
            print!("{}", Config::defaults_toml());
            Ok(())
        }
        Command::Config { action: ConfigAction::Check { file, set } } => {
            Config::load(Some(&file), std::env::vars(), &set)
                .map(|c| {
                    println!("config OK\n\n{}", toml::to_string(&c).unwrap_or_default());
                })
                .map_err(|e| e.to_string())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn dlq(action: DlqAction) -> Result<(), String> {
    let open = |dir: &PathBuf| -> Result<(std::sync::Arc<rt::FileDisk>, Dlq), String> {
        if !dir.is_dir() {
            return Err(format!("{} is not a directory", dir.display()));
        }
        let disk = std::sync::Arc::new(rt::FileDisk::open(dir).map_err(|e| e.to_string())?);
        // A look from outside the server: no bound applies.
        let dlq = Dlq::open(disk.clone(), usize::MAX).map_err(|e| e.to_string())?;
        Ok((disk, dlq))
    };
    match action {
        DlqAction::List { data_dir, reason } => {
            let (_, dlq) = open(&data_dir)?;
            let entries: Vec<_> =
                dlq.entries().into_iter().filter(|e| reason.is_none_or(|r| r == e.reason)).collect();
            println!(
                "{:>6}  {:<17}  {:>13}  {:<28}  {:<8}  {:>16}  {:>6}  detail",
                "id", "reason", "at_ms", "topic@offset", "priority", "producer/seq", "bytes"
            );
            for e in &entries {
                let ev = &e.event.event;
                println!(
                    "{:>6}  {:<17}  {:>13}  {:<28}  {:<8}  {:>16}  {:>6}  {}",
                    e.id,
                    e.reason.code(),
                    e.at_ms,
                    format!("{}@{}", ev.topic, e.event.offset),
                    ev.priority.name(),
                    format!("{}/{}", ev.producer_id, ev.sequence),
                    ev.payload.len(),
                    e.detail
                );
            }
            println!(
                "{} entries listed, {} stored, {} overflowed (not stored)",
                entries.len(),
                dlq.len(),
                dlq.overflow()
            );
            Ok(())
        }
        DlqAction::Redrive { data_dir, reason } => {
            let (disk, dlq) = open(&data_dir)?;
            let entries = dlq.entries();
            let filter = RedriveFilter { reason, up_to_id: entries.last().map(|e| e.id) };
            let n = entries.iter().filter(|e| filter.matches(e)).count();
            Dlq::request_redrive(disk.as_ref(), &filter).map_err(|e| e.to_string())?;
            println!(
                "redrive of {n} entries requested; the server owning {} applies it at its next control tick (or next start)",
                data_dir.display()
            );
            Ok(())
        }
    }
}

fn init_tracing(level: &str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| level.parse::<tracing_subscriber::EnvFilter>().unwrap_or_else(|_| "info".into()));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
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
    let config = Config::load(file.as_deref(), std::env::vars(), &set).map_err(|e| e.to_string())?;
    init_tracing(&config.log.level);
    let data_dir = &config.cluster.data_dir;
    let server = Server::start(&config, Seams::production(repair)).await.map_err(|e| e.to_string())?;
    let node = server.node().clone();
    let addr = server.client_addr();
    // The lines scripts wait for, in one write (a reader that stops after the first line must
    // not make a later print fail).
    let mut banner = format!("esc listening on {addr}\n");
    banner +=
        &format!("esc node {} raft on {} data in {}\n", config.node.id, node.raft_addr(), data_dir.display());
    if let Some(udp) = server.udp_addr() {
        banner += &format!("esc udp legacy ingest on {udp}\n");
    }
    if let Some(m) = server.metrics_addr() {
        banner += &format!("esc metrics on http://{m}/metrics\n");
    }
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(banner.as_bytes());
        let _ = out.flush();
    }
    let stop = server.shutdown_handle();
    let metrics = server.metrics();
    rt::spawn(async move {
        if rt::terminate_signal().await.is_ok() {
            tracing::info!("signal received: shutting down");
            stop.shutdown();
        }
    });
    // SIGHUP re-reads the configuration and applies the pipeline's topic table (the only part
    // that changes without a restart); a bad file is reported and changes nothing.
    let reload_node = node.clone();
    rt::spawn(async move {
        let mut hups = rt::Hangups::new();
        loop {
            hups.recv().await;
            match Config::load(file.as_deref(), std::env::vars(), &set) {
                Ok(c) => {
                    let n = c.pipeline.topics.len();
                    reload_node.reload_routes(c.pipeline.topics, c.pipeline.default_priority);
                    tracing::info!(entries = n, "SIGHUP: pipeline topic table reloaded");
                }
                Err(e) => tracing::error!(error = %e, "SIGHUP: configuration not reloaded"),
            }
        }
    });
    let result = server.run().await;
    eprint!("{}", metrics.render_prometheus());
    result
}

struct PublishOpts {
    addr: Vec<SocketAddr>,
    topic: String,
    priority: Priority,
    count: u64,
    producer: Option<u64>,
    first_seq: u64,
    batch: usize,
    token: String,
    quiet: bool,
}

async fn connect(addr: SocketAddr, token: &str) -> Result<Client, String> {
    let stream = rt::net::connect_with_retry(addr, 5, Duration::from_millis(100), Duration::from_secs(1))
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let mut client = Client::from_stream(stream);
    client.hello("esc-cli", token).await.map_err(|e| format!("hello to {addr}: {e}"))?;
    Ok(client)
}

async fn publish(o: PublishOpts, message: String) -> Result<(), String> {
    let producer = o.producer.unwrap_or_else(|| rt::node_rng().random_range(1..u64::MAX));
    let mut client = ClusterClient::new(o.addr.clone(), "esc-cli", o.token.clone());
    client.max_attempts = 20;
    let (mut stored, mut dup, mut rejected) = (0u64, 0u64, 0u64);
    let mut seq = o.first_seq;
    let last = o.first_seq + o.count;
    while seq < last {
        let n = (last - seq).min(o.batch as u64);
        let events: Vec<Event> = (seq..seq + n)
            .map(|s| {
                let mut e = Event::new(o.topic.clone(), o.priority, message.clone().into_bytes());
                e.producer_id = producer;
                e.sequence = s;
                e
            })
            .collect();
        // Retries (redirects, failover, overload) reuse the same keys: never a second copy.
        let items = client.publish(events).await.map_err(|e| match e {
            ClientError::Io(e) => format!("cannot connect to any of {:?}: {e}", o.addr),
            e => format!("publish: {e}"),
        })?;
        for (i, item) in items.iter().enumerate() {
            let s = seq + i as u64;
            match item {
                AckItem::Stored { topic, offset, duplicate } => {
                    if *duplicate {
                        dup += 1
                    } else {
                        stored += 1
                    }
                    if !o.quiet {
                        let what = if *duplicate { "duplicate" } else { "stored" };
                        println!("{what} topic={topic} offset={offset} producer={producer} seq={s}");
                    }
                }
                AckItem::Rejected(e) => {
                    rejected += 1;
                    println!("rejected seq={s}: {e}");
                }
            }
        }
        seq += n;
    }
    println!("{stored} stored, {dup} duplicate, {rejected} rejected (producer {producer})");
    if rejected > 0 { Err(format!("{rejected} events rejected")) } else { Ok(()) }
}

async fn publish_legacy(o: PublishOpts, message: String) -> Result<(), String> {
    let addr = o.addr[0];
    let stream = rt::net::connect_with_retry(addr, 5, Duration::from_millis(100), Duration::from_secs(1))
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let mut client = Client::from_stream(stream);
    for _ in 0..o.count {
        client.send_legacy(o.priority, &o.topic, message.as_bytes()).await.map_err(|e| e.to_string())?;
    }
    println!("sent {} legacy frame(s) to {addr} (the legacy protocol has no acks)", o.count);
    Ok(())
}

async fn fetch(addr: SocketAddr, topic: String, from: u64, max: u32, token: String) -> Result<(), String> {
    let mut client = connect(addr, &token).await?;
    let page = client.fetch(&topic, from, max).await.map_err(|e| e.to_string())?;
    for s in &page.events {
        print_event(s);
    }
    println!("next={} end={}", page.next_offset, page.end_offset);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn bench(
    addr: Option<SocketAddr>,
    connections: usize,
    events: u64,
    batch: usize,
    pipeline: usize,
    payload: usize,
    legacy: bool,
    token: String,
    cluster: u64,
) -> Result<(), String> {
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
    };
    let report = eventstreamcore::bench::run(cfg.clone()).await.map_err(|e| e.to_string())?;
    println!("{}", report.render(&cfg));
    if !members.is_empty() {
        let stored: Vec<usize> = members.iter().map(|m| m.0.state().topic_log("bench").len()).collect();
        println!("cluster of {}: events stored per member {stored:?}", members.len());
        let max = stored.iter().copied().max().unwrap_or(0) as u64;
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
        let stored = node.state().topic_log("bench").len() as u64;
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

#[allow(clippy::too_many_arguments)]
async fn tail(
    addrs: Vec<SocketAddr>,
    topic: String,
    from: u64,
    linearizable: bool,
    count: Option<u64>,
    to_end: bool,
    token: String,
) -> Result<(), String> {
    let mut client = ClusterClient::new(addrs, "esc-tail", token);
    client.max_attempts = u32::MAX;
    let mut sub = Subscription::new(client, topic, from, linearizable);
    if to_end {
        sub.wait_ms = 0;
    }
    let mut seen = 0u64;
    loop {
        let (events, end) = sub.next_batch(1000).await.map_err(|e| e.to_string())?;
        for s in &events {
            print_event(s);
            seen += 1;
            if count.is_some_and(|c| seen >= c) {
                return Ok(());
            }
        }
        if to_end && sub.next_offset() >= end {
            println!("end={end}");
            return Ok(());
        }
    }
}

async fn admin(addrs: Vec<SocketAddr>, token: String, action: AdminAction) -> Result<(), String> {
    let req = match action {
        AdminAction::Status => AdminRequest::Status,
        AdminAction::Add { id, raft_addr, client_addr } => {
            AdminRequest::AddNode { id, raft_addr, client_addr }
        }
        AdminAction::Remove { id } => AdminRequest::RemoveNode { id },
        AdminAction::Transfer { id } => AdminRequest::TransferLeader { id },
    };
    let mut client = ClusterClient::new(addrs, "esc-admin", token);
    let text = client.admin(req).await.map_err(|e| e.to_string())?;
    println!("{}", text.trim_end());
    Ok(())
}

/// Writes one config per member, starts `esc serve` for each, prints the addresses, and stops
/// them all on Ctrl-C / SIGTERM. Not on the simulated path: it manages real processes and files.
#[allow(clippy::disallowed_methods)]
async fn local_cluster(nodes: u64, dir: PathBuf, base_port: u16) -> Result<(), String> {
    if !(1..=9).contains(&nodes) {
        return Err("--nodes must be between 1 and 9".into());
    }
    if u32::from(base_port) + 100 + nodes as u32 > u32::from(u16::MAX) {
        return Err("--base-port too high".into());
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let secret_path = dir.join("secret");
    let secret = match std::fs::read_to_string(&secret_path) {
        Ok(s) if !s.trim().is_empty() => s.trim().to_string(),
        _ => {
            let s = format!("{:032x}", rt::node_rng().random::<u128>());
            std::fs::write(&secret_path, &s).map_err(|e| format!("{}: {e}", secret_path.display()))?;
            s
        }
    };
    let members: Vec<MemberConfig> = (1..=nodes)
        .map(|id| MemberConfig {
            id,
            raft_addr: format!("127.0.0.1:{}", base_port + 100 + (id - 1) as u16),
            client_addr: format!("127.0.0.1:{}", base_port + (id - 1) as u16),
        })
        .collect();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut children = Vec::new();
    for m in &members {
        let mut c = Config::default();
        c.node.id = m.id;
        c.node.name = format!("esc-{}", m.id);
        c.ingest.listen = m.client_addr.parse().map_err(|e| format!("{e}"))?;
        c.cluster.raft_listen = m.raft_addr.parse().map_err(|e| format!("{e}"))?;
        c.cluster.data_dir = dir.join(format!("node{}", m.id));
        c.cluster.members = members.clone();
        c.cluster.secret = secret.clone();
        c.cluster.cluster_id = "esc-local".into();
        let text = toml::to_string(&c).map_err(|e| e.to_string())?;
        let path = dir.join(format!("node{}.toml", m.id));
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        let log = std::fs::File::create(dir.join(format!("node{}.log", m.id))).map_err(|e| e.to_string())?;
        let child = std::process::Command::new(&exe)
            .arg("serve")
            .arg("--config")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start node {}: {e}", m.id))?;
        let pid_path = dir.join(format!("node{}.pid", m.id));
        std::fs::write(&pid_path, format!("{}\n", child.id()))
            .map_err(|e| format!("{}: {e}", pid_path.display()))?;
        children.push((m.id, child));
    }
    for m in &members {
        println!(
            "node {} client {} raft {} config {}/node{}.toml",
            m.id,
            m.client_addr,
            m.raft_addr,
            dir.display(),
            m.id
        );
    }
    let all: Vec<&str> = members.iter().map(|m| m.client_addr.as_str()).collect();
    println!("publish: esc publish --addr {} --topic demo hello", all.join(","));
    println!("logs in {0}/node*.log, process ids in {0}/node*.pid; Ctrl-C stops the cluster", dir.display());
    let _ = rt::terminate_signal().await;
    for (id, child) in &mut children {
        // SIGTERM lets each node finish in-flight requests and stop cleanly.
        let _ = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        match child.wait() {
            Ok(st) => eprintln!("node {id} exited: {st}"),
            Err(e) => eprintln!("node {id}: {e}"),
        }
    }
    Ok(())
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
    let mut members = Vec::new();
    for m in &cfgs {
        let mut c = Config::default();
        c.ingest.listen = m.client_addr.parse().map_err(|e| format!("{e}"))?;
        c.ingest.max_events_per_frame = c.ingest.max_events_per_frame.max(inflight);
        c.ingest.max_inflight_events = c.ingest.max_inflight_events.max(inflight);
        c.cluster.raft_listen = m.raft_addr.parse().map_err(|e| format!("{e}"))?;
        c.cluster.data_dir = dir.join(format!("node{}", m.id));
        c.cluster.members = if n > 1 { cfgs.clone() } else { Vec::new() };
        c.cluster.secret = "bench".into();
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

/// One line per event, as `esc fetch` and `esc tail` print them.
fn print_event(s: &eventstreamcore::event::StoredEvent) {
    println!(
        "offset={} ts={} priority={} producer={} seq={} payload={}",
        s.offset,
        s.timestamp_ms,
        s.event.priority,
        s.event.producer_id,
        s.event.sequence,
        String::from_utf8_lossy(&s.event.payload)
    );
}
