//! `esc topics`: every topic with its events, bytes, first/end offset and retention settings,
//! as the answering member's applied state holds them (the TOPICS admin request).

use std::net::SocketAddr;

use eventstreamcore::client::ClusterClient;
use eventstreamcore::wire::AdminRequest;
use serde_json::Value;

/// Prints the topics as a table, or the server's JSON document with `--json`.
pub async fn list(addrs: Vec<SocketAddr>, token: String, as_json: bool) -> Result<(), String> {
    let mut client = ClusterClient::new(addrs.clone(), "esc-topics", token);
    client.max_attempts = (2 * addrs.len() as u32).max(5);
    let text = client.admin(AdminRequest::Topics).await.map_err(|e| e.to_string())?;
    if as_json {
        println!("{}", text.trim_end());
        return Ok(());
    }
    let doc: Value = serde_json::from_str(&text).map_err(|e| format!("bad TOPICS reply: {e}"))?;
    let topics = doc["topics"].as_array().cloned().unwrap_or_default();
    println!("{:<24} {:>10} {:>12} {:>10} {:>10}  retention", "TOPIC", "EVENTS", "BYTES", "FIRST", "END");
    for t in &topics {
        println!(
            "{:<24} {:>10} {:>12} {:>10} {:>10}  {}",
            t["topic"].as_str().unwrap_or("?"),
            t["events"],
            t["bytes"],
            t["first_offset"],
            t["end_offset"],
            retention_text(&t["retention"])
        );
    }
    if topics.is_empty() {
        println!("(no topics)");
    }
    Ok(())
}

/// `max_events=100 max_bytes=4096 max_age_ms=60000 discard=old`, or `unlimited discard=old`.
fn retention_text(r: &Value) -> String {
    let mut parts: Vec<String> = ["max_events", "max_bytes", "max_age_ms"]
        .iter()
        .filter_map(|k| r[*k].as_u64().map(|v| format!("{k}={v}")))
        .collect();
    if parts.is_empty() {
        parts.push("unlimited".into());
    }
    parts.push(format!("discard={}", r["discard"].as_str().unwrap_or("old")));
    parts.join(" ")
}
