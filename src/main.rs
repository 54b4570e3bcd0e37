//! `esc` — the EventStreamCore server and its command-line client.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use eventstreamcore::client::{Client, ClientError};
use eventstreamcore::config::Config;
use eventstreamcore::event::{Event, Priority};
use eventstreamcore::ingest::IngestServer;
use eventstreamcore::node::LocalNode;
use eventstreamcore::pipeline::{Dlq, DlqReason, RedriveFilter};
use eventstreamcore::rt::{self, NodeClock};
use eventstreamcore::wire::{AckItem, ErrorCode};
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
    },
    /// Publish events and print where each was stored.
    Publish {
        #[arg(long, default_value = "127.0.0.1:7070")]
        addr: SocketAddr,
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
        Command::Serve { config, set, listen } => serve(config, set, listen).await,
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
        Command::Bench { addr, connections, events, batch, pipeline, payload, legacy, token } => {
            bench(addr, connections, events, batch, pipeline, payload, legacy, token).await
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
) -> Result<(), String> {
    if let Some(addr) = listen {
        set.push(format!("ingest.listen=\"{addr}\""));
    }
    let config = Config::load(file.as_deref(), std::env::vars(), &set).map_err(|e| e.to_string())?;
    init_tracing(&config.log.level);
    let clock = NodeClock::new();
    let node = LocalNode::new(config.node.id, clock.clone(), config.dedup);
    let server = IngestServer::bind(config.ingest.clone(), node, clock, config.node.name.clone())
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.ingest.listen))?;
    let addr = server.local_addr();
    // The one line scripts wait for.
    println!("esc listening on {addr}");
    if let Some(udp) = server.udp_addr() {
        println!("esc udp legacy ingest on {udp}");
    }
    if let Some(m) = server.metrics_addr() {
        println!("esc metrics on http://{m}/metrics");
    }
    let stop = server.shutdown_handle();
    let metrics = server.metrics();
    rt::spawn(async move {
        if rt::terminate_signal().await.is_ok() {
            tracing::info!("signal received: shutting down");
            stop.shutdown();
        }
    });
    server.run().await;
    eprint!("{}", metrics.render_prometheus());
    Ok(())
}

struct PublishOpts {
    addr: SocketAddr,
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
    let mut client = connect(o.addr, &o.token).await?;
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
        let items = publish_with_retry(&mut client, &o, events).await?;
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

/// Publishes one frame, retrying with the same idempotency keys when the server says
/// "overloaded" (after its retry-after) or the connection breaks (after reconnecting).
async fn publish_with_retry(
    client: &mut Client,
    o: &PublishOpts,
    events: Vec<Event>,
) -> Result<Vec<AckItem>, String> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match client.publish(events.clone()).await {
            Ok(items) => return Ok(items),
            Err(ClientError::Server(e)) if e.code == ErrorCode::Overloaded && attempt < 10 => {
                rt::time::sleep(Duration::from_millis(u64::from(e.retry_after_ms.max(10)))).await;
            }
            Err(e @ (ClientError::Io(_) | ClientError::Closed | ClientError::Timeout(_))) if attempt < 5 => {
                eprintln!("publish failed ({e}); reconnecting and retrying with the same keys");
                rt::time::sleep(Duration::from_millis(200 * attempt)).await;
                *client = connect(o.addr, &o.token).await?;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

async fn publish_legacy(o: PublishOpts, message: String) -> Result<(), String> {
    let stream = rt::net::connect_with_retry(o.addr, 5, Duration::from_millis(100), Duration::from_secs(1))
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", o.addr))?;
    let mut client = Client::from_stream(stream);
    for _ in 0..o.count {
        client.send_legacy(o.priority, &o.topic, message.as_bytes()).await.map_err(|e| e.to_string())?;
    }
    println!("sent {} legacy frame(s) to {} (the legacy protocol has no acks)", o.count, o.addr);
    Ok(())
}

async fn fetch(addr: SocketAddr, topic: String, from: u64, max: u32, token: String) -> Result<(), String> {
    let mut client = connect(addr, &token).await?;
    let page = client.fetch(&topic, from, max).await.map_err(|e| e.to_string())?;
    for s in &page.events {
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
) -> Result<(), String> {
    let mut local = None;
    let addr = match addr {
        Some(a) => a,
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
