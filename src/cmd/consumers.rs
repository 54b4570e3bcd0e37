//! `esc consumers` (list named consumers with their lag) and the durable side of
//! `esc tail --consumer NAME`: where to resume, and committing what was printed.

use std::net::SocketAddr;

use eventstreamcore::client::{ClientError, ClusterClient};
use serde_json::json;

/// Lists consumers (all, or those called `name`) with topic, committed offset, end and lag.
pub async fn list(
    addrs: Vec<SocketAddr>,
    token: String,
    name: Option<String>,
    as_json: bool,
) -> Result<(), String> {
    let mut client = ClusterClient::new(addrs.clone(), "esc-consumers", token);
    client.max_attempts = (2 * addrs.len() as u32).max(5);
    let list = client.consumers(name.as_deref().unwrap_or("")).await.map_err(|e| match e {
        ClientError::Io(e) => format!("cannot connect to any of {addrs:?}: {e}"),
        e => e.to_string(),
    })?;
    if as_json {
        let rows: Vec<_> = list
            .iter()
            .map(|c| {
                json!({"consumer": c.name, "topic": c.topic, "committed": c.committed,
                       "end_offset": c.end_offset, "lag": c.lag()})
            })
            .collect();
        println!("{}", json!({ "consumers": rows }));
        return Ok(());
    }
    if list.is_empty() {
        println!("no consumers have committed a position (esc tail --consumer NAME creates one)");
        return Ok(());
    }
    let wn = list.iter().map(|c| c.name.len()).max().unwrap_or(0).max("CONSUMER".len());
    let wt = list.iter().map(|c| c.topic.len()).max().unwrap_or(0).max("TOPIC".len());
    println!("{:wn$}  {:wt$}  {:>12}  {:>12}  {:>12}", "CONSUMER", "TOPIC", "COMMITTED", "END", "LAG");
    for c in &list {
        println!(
            "{:wn$}  {:wt$}  {:>12}  {:>12}  {:>12}",
            c.name,
            c.topic,
            c.committed,
            c.end_offset,
            c.lag()
        );
    }
    Ok(())
}

/// Commits a named consumer's progress on one topic: every `every` delivered events and at exit.
pub struct Committer {
    client: ClusterClient,
    name: String,
    topic: String,
    every: u64,
    /// One past the last delivered (printed) event.
    delivered: Option<u64>,
    /// Delivered since the last commit.
    since: u64,
}

impl Committer {
    /// A committer for `name` on `topic`; `client` should give up after a bounded number of tries.
    pub fn new(client: ClusterClient, name: String, topic: String, every: u64) -> Self {
        Committer { client, name, topic, every: every.max(1), delivered: None, since: 0 }
    }

    /// Where to start: the committed position, else `from` (a new consumer). Says which on stderr.
    pub async fn resume_at(&mut self, from: u64) -> Result<u64, String> {
        let committed =
            self.client.committed(&self.name, &self.topic).await.map_err(|e| {
                format!("cannot read the committed position of consumer `{}`: {e}", self.name)
            })?;
        match committed {
            Some(at) => {
                eprintln!("consumer `{}` resumes `{}` at its committed offset {at}", self.name, self.topic);
                Ok(at)
            }
            None => {
                eprintln!("consumer `{}` has no position on `{}`: starting at {from}", self.name, self.topic);
                Ok(from)
            }
        }
    }

    /// Notes that the event at `offset` was delivered; commits when `every` have piled up (a
    /// failed periodic commit is reported and retried at the next one: delivery is at-least-once).
    pub async fn delivered(&mut self, offset: u64) {
        self.delivered = Some(offset + 1);
        self.since += 1;
        if self.since >= self.every
            && let Err(e) = self.commit().await
        {
            eprintln!("warning: {e} (will retry)");
        }
    }

    /// Commits everything delivered so far (nothing to do if nothing was delivered).
    pub async fn commit(&mut self) -> Result<(), String> {
        let Some(next) = self.delivered else {
            return Ok(());
        };
        if self.since == 0 {
            return Ok(());
        }
        let at = self
            .client
            .commit(&self.name, &self.topic, next, false)
            .await
            .map_err(|e| format!("commit of consumer `{}` at {next} failed: {e}", self.name))?;
        self.since = 0;
        if at != next {
            eprintln!("consumer `{}` was already at {at} (a position never moves back)", self.name);
        }
        Ok(())
    }
}
