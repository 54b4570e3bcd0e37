//! `esc fetch` (one page) and `esc tail` (follow a topic), from any member of a cluster.

use std::net::SocketAddr;
use std::time::Duration;

use eventstreamcore::client::{ClientError, ClusterClient, Subscription};
use eventstreamcore::event::StoredEvent;
use eventstreamcore::rt;
use serde_json::json;

use super::consumers::Committer;
use super::output::{event_json, event_line};

fn cannot(addrs: &[SocketAddr], e: ClientError) -> String {
    match e {
        ClientError::Io(e) => format!("cannot connect to any of {addrs:?}: {e}"),
        e => e.to_string(),
    }
}

/// Reads one page of `topic` from `from` and prints it; an offset past the end is an error.
pub async fn fetch(
    addrs: Vec<SocketAddr>,
    topic: String,
    from: u64,
    max: u32,
    token: String,
    as_json: bool,
    tls: Option<eventstreamcore::tls::ClientTls>,
) -> Result<(), String> {
    if max == 0 {
        return Err("--max must be at least 1".into());
    }
    let mut client = ClusterClient::new(addrs.clone(), "esc-cli", token);
    client.tls = tls;
    client.max_attempts = (2 * addrs.len() as u32).max(5);
    let page = client.fetch(&topic, from, max).await.map_err(|e| cannot(&addrs, e))?;
    if from > page.end_offset {
        let has = match page.end_offset {
            0 => "has no events (an unknown topic reads as empty)".to_string(),
            end => format!("ends at offset {end} (its events are 0..={})", end - 1),
        };
        return Err(format!(
            "--from {from} is past the end: topic `{topic}` {has} on the member that answered"
        ));
    }
    if as_json {
        let events: Vec<_> = page.events.iter().map(event_json).collect();
        let doc = json!({
            "topic": topic,
            "next_offset": page.next_offset,
            "end_offset": page.end_offset,
            "events": events,
        });
        println!("{doc}");
    } else {
        for s in &page.events {
            println!("{}", event_line(s));
        }
        println!("next={} end={}", page.next_offset, page.end_offset);
    }
    Ok(())
}

/// What `esc tail` was asked to do.
pub struct TailOpts {
    pub addrs: Vec<SocketAddr>,
    pub topic: String,
    pub from: u64,
    pub linearizable: bool,
    pub count: Option<u64>,
    pub to_end: bool,
    pub token: String,
    /// Give up when no member has served a read for this long (None: never).
    pub timeout: Option<Duration>,
    pub json: bool,
    /// `--tls-ca`: connect over TLS.
    pub tls: Option<eventstreamcore::tls::ClientTls>,
    /// A named consumer: resume at its committed position and commit what was printed.
    pub consumer: Option<String>,
    /// Commit after this many events (with `consumer`).
    pub commit_every: u64,
}

/// Follows a topic, printing events as they are committed.
pub async fn tail(o: TailOpts) -> Result<(), String> {
    if let Some(name) = &o.consumer {
        eventstreamcore::consumers::validate_name(name).map_err(|e| e.to_string())?;
    }
    let mut committer = o.consumer.clone().map(|name| {
        let mut c = ClusterClient::new(o.addrs.clone(), "esc-tail-commit", o.token.clone());
        c.tls = o.tls.clone();
        c.max_attempts = (4 * o.addrs.len() as u32).max(10);
        Committer::new(c, name, o.topic.clone(), o.commit_every)
    });
    let from = match &mut committer {
        Some(c) => c.resume_at(o.from).await?,
        None => o.from,
    };
    let outcome = follow(&o, from, &mut committer).await;
    // At exit (count reached, end reached, a signal, or an error): commit what was printed.
    let committed = match &mut committer {
        Some(c) => c.commit().await,
        None => Ok(()),
    };
    outcome.and(committed)
}

/// Prints one event of a tail, as JSON under `--json`, else as a line.
fn print_event(o: &TailOpts, s: &StoredEvent) {
    if o.json {
        println!("{}", event_json(s));
    } else {
        println!("{}", event_line(s));
    }
}

/// The error a tail gives when no member served the read at `at` within `limit`.
fn gave_up(o: &TailOpts, limit: Duration, at: u64) -> String {
    let why = if o.linearizable {
        "a linearizable read needs a leader: is a majority of the cluster up?"
    } else {
        "are the members up?"
    };
    format!(
        "gave up after {} s: no member of {:?} served a read of `{}` at offset {} ({why})",
        limit.as_secs(),
        o.addrs,
        o.topic,
        at
    )
}

async fn follow(o: &TailOpts, from: u64, committer: &mut Option<Committer>) -> Result<(), String> {
    let mut client = ClusterClient::new(o.addrs.clone(), "esc-tail", o.token.clone());
    client.tls = o.tls.clone();
    client.max_attempts = u32::MAX;
    let mut sub = Subscription::new(client, o.topic.clone(), from, o.linearizable);
    // Ctrl-C / SIGTERM end a consumer's tail cleanly (its position is committed on the way out).
    let mut stop = std::pin::pin!(async {
        if o.consumer.is_some() { rt::terminate_signal().await } else { std::future::pending().await }
    });
    if o.to_end {
        sub.wait_ms = 0;
    }
    let poll = Duration::from_millis(u64::from(sub.wait_ms));
    let mut seen = 0u64;
    loop {
        let at = sub.next_offset();
        let batch = sub.next_batch(1000);
        let batch = async {
            rt::select! {
                biased;
                _ = &mut stop => Ok(None),
                r = batch => r.map(Some),
            }
        };
        let result = match o.timeout {
            Some(limit) => rt::time::timeout(limit + poll, batch).await.map_err(|_| gave_up(o, limit, at))?,
            None => batch.await,
        };
        let (events, end) = match result {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()), // stopped by a signal
            // Retention removed the events here: continue at the first one still held (a
            // `--from` below it starts there; a consumer that fell behind is told what it lost).
            Err(e) if e.first_available().is_some_and(|f| f > at) => {
                let first = e.first_available().unwrap_or(at);
                if at != from || seen > 0 {
                    eprintln!(
                        "events {at}..{first} of `{}` were removed by retention; continuing at {first}",
                        o.topic
                    );
                }
                sub.seek(first);
                continue;
            }
            Err(e) => return Err(e.to_string()),
        };
        for s in &events {
            print_event(o, s);
            seen += 1;
            if let Some(c) = committer.as_mut() {
                c.delivered(s.offset).await;
            }
            if o.count.is_some_and(|c| seen >= c) {
                return Ok(());
            }
        }
        if o.to_end && sub.next_offset() >= end {
            if !o.json {
                println!("end={end}");
            }
            return Ok(());
        }
    }
}
