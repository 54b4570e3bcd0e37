//! `esc bench`: a load generator for the acked and legacy protocols. It drives a running server
//! (or one it starts in-process on loopback) and reports throughput and ack latency. Numbers
//! from it go into BENCHMARKS.md with the command that produced them; tests never time anything.

use std::net::SocketAddr;
use std::time::Duration;

use crate::client::{Client, ClientError};
use crate::event::{Event, Priority};
use crate::metrics::LatencyHistogram;
use crate::rt;
use crate::wire::{AckItem, Request, Response};

/// What to send.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub addr: SocketAddr,
    pub connections: usize,
    /// Events in total, across connections.
    pub events: u64,
    /// Events per publish frame (acked) — ignored for legacy.
    pub batch: usize,
    /// Frames in flight per connection (acked).
    pub pipeline: usize,
    pub payload_bytes: usize,
    pub topic: String,
    pub legacy: bool,
    pub token: String,
    /// Print a progress line every this many acked events (0: none; acked mode only).
    pub report_every: u64,
    /// Called for each progress line; returns extra text (e.g. the server's RSS).
    pub probe: Option<Probe>,
}

/// Extra text for each progress line (the command line's `--server-pid` reads the server's RSS).
#[derive(Clone)]
pub struct Probe(pub std::sync::Arc<dyn Fn() -> String + Send + Sync>);

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Probe")
    }
}

/// Per-interval figures for the progress lines of a long run: events acked, the interval's start
/// and its worst frame latency.
#[derive(Debug)]
struct Progress {
    every: u64,
    acked: std::sync::atomic::AtomicU64,
    max_us: std::sync::atomic::AtomicU64,
    last: std::sync::Mutex<(rt::time::Instant, u64)>,
}

impl Progress {
    fn new(every: u64) -> Self {
        Progress {
            every,
            acked: Default::default(),
            max_us: Default::default(),
            last: std::sync::Mutex::new((rt::time::now(), 0)),
        }
    }

    /// Counts `n` acked events answered after `us` µs; prints a line when a multiple of `every` is crossed.
    fn record(&self, n: u64, us: u64, probe: Option<&Probe>) {
        use std::sync::atomic::Ordering::Relaxed;
        if self.every == 0 {
            return;
        }
        self.max_us.fetch_max(us, Relaxed);
        let before = self.acked.fetch_add(n, Relaxed);
        let after = before + n;
        if before / self.every == after / self.every {
            return;
        }
        let now = rt::time::now();
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let secs = now.duration_since(last.0).as_secs_f64().max(1e-9);
        let rate = (after - last.1) as f64 / secs;
        let max_ms = self.max_us.swap(0, Relaxed) as f64 / 1000.0;
        let extra = probe.map(|p| (p.0)()).unwrap_or_default();
        println!("{:>12} events acked: {rate:>9.0} events/s, max ack latency {max_ms:.1} ms{extra}", after);
        *last = (now, after);
    }
}

/// What was measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    pub events: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    /// Per-frame ack latency (acked mode only): count, p50, p99, max in µs.
    pub latency_us: Option<(u64, u64, u64, u64)>,
    /// Events the server reported stored or duplicate (acked mode).
    pub acked: u64,
}

impl BenchReport {
    /// Events per second.
    pub fn events_per_sec(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A readable summary.
    pub fn render(&self, cfg: &BenchConfig) -> String {
        let mut s = format!(
            "{} {} events ({} B payload) over {} connection(s) in {:.3}s: {:.0} events/s, {:.1} MiB/s",
            if cfg.legacy { "legacy" } else { "acked" },
            self.events,
            cfg.payload_bytes,
            cfg.connections,
            self.elapsed.as_secs_f64(),
            self.events_per_sec(),
            self.bytes as f64 / self.elapsed.as_secs_f64().max(1e-9) / (1024.0 * 1024.0),
        );
        if let Some((n, p50, p99, max)) = self.latency_us {
            s.push_str(&format!(
                "\nack latency per frame ({n} frames of {} events, {} in flight): p50 {p50} µs, p99 {p99} µs, max {max} µs",
                cfg.batch, cfg.pipeline
            ));
        }
        s
    }
}

/// Runs the benchmark.
pub async fn run(cfg: BenchConfig) -> Result<BenchReport, ClientError> {
    let per_conn = cfg.events / cfg.connections.max(1) as u64;
    let hist = std::sync::Arc::new(LatencyHistogram::default());
    let progress = std::sync::Arc::new(Progress::new(if cfg.legacy { 0 } else { cfg.report_every }));
    let started = rt::time::now();
    let mut tasks = Vec::new();
    for c in 0..cfg.connections.max(1) {
        let cfg = cfg.clone();
        let hist = hist.clone();
        let progress = progress.clone();
        let n = if c == 0 { cfg.events - per_conn * (cfg.connections.max(1) as u64 - 1) } else { per_conn };
        tasks.push(rt::spawn(async move { one_connection(&cfg, c as u64 + 1, n, &hist, &progress).await }));
    }
    let mut acked = 0;
    for t in tasks {
        acked += t.await.map_err(|e| ClientError::Io(std::io::Error::other(e.to_string())))??;
    }
    let elapsed = started.elapsed();
    let frame_overhead = if cfg.legacy { 4 + 3 + cfg.topic.len() } else { 30 + cfg.topic.len() };
    Ok(BenchReport {
        events: cfg.events,
        bytes: cfg.events * (cfg.payload_bytes + frame_overhead) as u64,
        elapsed,
        latency_us: (!cfg.legacy).then(|| hist.summary()),
        acked,
    })
}

async fn one_connection(
    cfg: &BenchConfig,
    conn: u64,
    events: u64,
    hist: &LatencyHistogram,
    progress: &Progress,
) -> Result<u64, ClientError> {
    let mut client = Client::connect(cfg.addr).await?;
    let payload = vec![b'x'; cfg.payload_bytes];
    if cfg.legacy {
        let mut sent = 0;
        while sent < events {
            let n = (events - sent).min(1000);
            let mut buf = Vec::with_capacity(n as usize * (payload.len() + 32));
            for _ in 0..n {
                crate::wire::legacy::encode(Priority::Medium, &cfg.topic, &payload, &mut buf);
            }
            client.send_raw(&buf).await?;
            sent += n;
        }
        // The legacy protocol has no acks; a ping round trip proves every frame was read.
        client.ping().await?;
        return Ok(0);
    }
    client.hello("esc-bench", &cfg.token).await?;
    let producer = (std::process::id() as u64) << 32 | conn;
    let mut seq = 0u64;
    let mut inflight = std::collections::VecDeque::new();
    let mut acked = 0u64;
    let mut sent = 0u64;
    while sent < events || !inflight.is_empty() {
        while sent < events && inflight.len() < cfg.pipeline.max(1) {
            let n = (events - sent).min(cfg.batch.max(1) as u64);
            let batch: Vec<Event> = (0..n)
                .map(|_| {
                    seq += 1;
                    let mut e = Event::new(cfg.topic.clone(), Priority::Medium, payload.clone());
                    e.producer_id = producer;
                    e.sequence = seq;
                    e
                })
                .collect();
            let id = client.queue(&Request::Publish(batch))?;
            inflight.push_back((id, rt::time::now()));
            sent += n;
        }
        client.flush().await?;
        let (got, resp) = client.recv().await?;
        let (want, at) = inflight.pop_front().expect("a reply implies a request in flight");
        if got != want {
            return Err(ClientError::OutOfOrder { want, got });
        }
        let us = at.elapsed().as_micros() as u64;
        hist.record(us);
        match resp {
            Response::Ack(items) => {
                acked += items.iter().filter(|i| matches!(i, AckItem::Stored { .. })).count() as u64;
                progress.record(items.len() as u64, us, cfg.probe.as_ref());
            }
            Response::Error(e) => return Err(ClientError::Server(e)),
            other => return Err(ClientError::Unexpected(Box::new(other))),
        }
    }
    Ok(acked)
}
