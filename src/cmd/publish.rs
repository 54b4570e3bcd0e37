//! `esc publish`: acked publishes with idempotency keys (or legacy frames), printed as lines or JSON.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use eventstreamcore::client::{Client, ClientError, ClusterClient};
use eventstreamcore::event::{Event, Header, Priority};
use eventstreamcore::rt;
use eventstreamcore::wire::AckItem;
use rand::Rng;
use serde_json::json;

/// What `esc publish` was asked to do.
pub struct PublishOpts {
    pub addr: Vec<SocketAddr>,
    pub topic: String,
    pub priority: Priority,
    pub producer: Option<u64>,
    pub first_seq: u64,
    pub batch: usize,
    pub token: String,
    pub quiet: bool,
    pub json: bool,
    pub key: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    /// `--tls-ca`: connect over TLS.
    pub tls: Option<eventstreamcore::tls::ClientTls>,
}

impl PublishOpts {
    fn event(&self, payload: &[u8]) -> Event {
        let mut e = Event::new(self.topic.clone(), self.priority, Bytes::copy_from_slice(payload));
        e.key = self.key.as_deref().map(Bytes::copy_from_slice);
        e.headers = self
            .headers
            .iter()
            .map(|(name, value)| Header { name: name.clone(), value: Bytes::copy_from_slice(value) })
            .collect();
        e
    }
}

/// Publishes one event per payload (sequences from `first_seq`) and prints every ack.
pub async fn publish(o: PublishOpts, payloads: Vec<Vec<u8>>) -> Result<(), String> {
    let producer = o.producer.unwrap_or_else(|| rt::node_rng().random_range(1..u64::MAX));
    let mut client = ClusterClient::new(o.addr.clone(), "esc-cli", o.token.clone());
    client.tls = o.tls.clone();
    client.max_attempts = 20;
    let (mut stored, mut dup, mut rejected) = (0u64, 0u64, 0u64);
    let mut acks = Vec::new();
    for (chunk_no, chunk) in payloads.chunks(o.batch.max(1)).enumerate() {
        let seq0 = o.first_seq + (chunk_no * o.batch.max(1)) as u64;
        let events: Vec<Event> = chunk
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut e = o.event(p);
                e.producer_id = producer;
                e.sequence = seq0 + i as u64;
                e
            })
            .collect();
        // Retries (redirects, failover, overload) reuse the same keys: never a second copy.
        let items = client.publish(events).await.map_err(|e| match e {
            ClientError::Io(e) => format!("cannot connect to any of {:?}: {e}", o.addr),
            e @ ClientError::Server(_) => {
                format!("publish gave up after {} attempts: {e}", client.max_attempts)
            }
            e => format!("publish: {e}"),
        })?;
        for (i, item) in items.iter().enumerate() {
            let seq = seq0 + i as u64;
            let (status, line) = match item {
                AckItem::Stored { topic, offset, duplicate } => {
                    let what = if *duplicate { "duplicate" } else { "stored" };
                    if *duplicate {
                        dup += 1
                    } else {
                        stored += 1
                    }
                    acks.push(json!({"status": what, "topic": topic, "offset": offset, "seq": seq}));
                    (what, format!("{what} topic={topic} offset={offset} producer={producer} seq={seq}"))
                }
                AckItem::Rejected(e) => {
                    rejected += 1;
                    let why = eventstreamcore::client::describe(e);
                    acks.push(json!({"status": "rejected", "seq": seq, "code": e.code.name(), "error": why}));
                    ("rejected", format!("rejected seq={seq}: {why}"))
                }
            };
            if !o.json && (!o.quiet || status == "rejected") {
                println!("{line}");
            }
        }
    }
    if o.json {
        let doc = json!({
            "producer": producer,
            "stored": stored,
            "duplicate": dup,
            "rejected": rejected,
            "acks": if o.quiet { serde_json::Value::Null } else { serde_json::Value::Array(acks) },
        });
        println!("{doc}");
    } else {
        println!("{stored} stored, {dup} duplicate, {rejected} rejected (producer {producer})");
    }
    if rejected > 0 { Err(format!("{rejected} events rejected")) } else { Ok(()) }
}

/// Sends each payload as a legacy frame (no acks, no keys, no headers).
pub async fn publish_legacy(o: PublishOpts, payloads: Vec<Vec<u8>>) -> Result<(), String> {
    if o.key.is_some() || !o.headers.is_empty() {
        return Err("legacy frames carry no key and no headers; drop --key/--header or --legacy".into());
    }
    let addr = o.addr[0];
    let stream = rt::net::connect_with_retry(addr, 5, Duration::from_millis(100), Duration::from_secs(1))
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let mut client = match &o.tls {
        None => Client::from_stream(stream),
        Some(tls) => Client::from_client_stream(
            tls.connect(addr, stream).await.map_err(|e| format!("TLS handshake with {addr}: {e}"))?,
        ),
    };
    for p in &payloads {
        client.send_legacy(o.priority, &o.topic, p).await.map_err(|e| e.to_string())?;
    }
    if o.json {
        println!("{}", json!({"legacy_frames_sent": payloads.len(), "addr": addr.to_string()}));
    } else {
        println!("sent {} legacy frame(s) to {addr} (the legacy protocol has no acks)", payloads.len());
    }
    Ok(())
}
