//! Durable (named) consumers in the cluster scenario: each lives for a while, committing its
//! position every few events, then crashes — drops its connection and forgets everything — and a
//! new incarnation resumes from the position the cluster committed. Two properties are checked
//! against the converged state:
//!
//! * [`no_consumer_skips`]: every offset between a consumer's first position and its final
//!   committed position was delivered to some incarnation (at-least-once, no gap);
//! * [`acked_commits_are_durable`]: the final position is at least every position a commit was
//!   acknowledged with (an acknowledged commit survives crashes, elections and snapshots).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventstreamcore::client::ClusterClient;
use eventstreamcore::node::EventLogState;
use eventstreamcore::rt::{self, NodeRng};
use rand::Rng;

use crate::check::CheckFailure;

/// The ChaCha stream durable consumers draw from, so the run's other draws stay as they were.
pub const DURABLE_STREAM: u64 = 0x6475_7261;
/// Offsets asked for per read.
const PAGE: u32 = 50;

/// What one durable consumer did, across its incarnations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsumerTrace {
    pub topic: String,
    /// Per incarnation: where it started and one past the last offset delivered to it (it reads
    /// contiguously, so it saw exactly `start..reached`).
    pub incarnations: Vec<(u64, u64)>,
    /// Positions commits were acknowledged with.
    pub acked: Vec<u64>,
}

/// Every durable consumer's trace, by name.
pub type Traces = Arc<Mutex<BTreeMap<String, ConsumerTrace>>>;

fn with<R>(traces: &Traces, f: impl FnOnce(&mut BTreeMap<String, ConsumerTrace>) -> R) -> R {
    f(&mut traces.lock().unwrap_or_else(|e| e.into_inner()))
}

/// How a durable consumer runs.
#[derive(Debug, Clone)]
pub struct DurableRun {
    pub name: String,
    pub topic: &'static str,
    pub until: rt::time::Instant,
}

/// Runs incarnations of one named consumer until `how.until`; records into `traces`. Returns a
/// description of an out-of-order delivery, if one happened.
pub async fn durable_consumer(
    addrs: Vec<SocketAddr>,
    how: DurableRun,
    mut rng: NodeRng,
    traces: Traces,
) -> Result<(), String> {
    with(&traces, |t| t.entry(how.name.clone()).or_default().topic = how.topic.to_string());
    while rt::time::now() < how.until {
        let life = Duration::from_millis(rng.random_range(500..6_000));
        let every = rng.random_range(1..=20u64);
        incarnation(&addrs, &how, rt::time::now() + life, every, &traces).await?;
        // Crashed: down for a while, then a new incarnation with nothing but its name.
        rt::time::sleep(Duration::from_millis(rng.random_range(50..1_500))).await;
    }
    Ok(())
}

/// One life: resume at the committed position, read and commit every `every` events, then stop
/// without a final commit (a crash).
async fn incarnation(
    addrs: &[SocketAddr],
    how: &DurableRun,
    dies: rt::time::Instant,
    every: u64,
    traces: &Traces,
) -> Result<(), String> {
    let mut client = ClusterClient::new(addrs.to_vec(), how.name.clone(), "");
    client.timeout = Duration::from_secs(3);
    client.max_attempts = 5;
    let Ok(committed) = client.committed(&how.name, how.topic).await else {
        return Ok(()); // no member answered: died before it started
    };
    let start = committed.unwrap_or(0);
    let slot = with(traces, |t| {
        let tr = t.entry(how.name.clone()).or_default();
        tr.incarnations.push((start, start));
        tr.incarnations.len() - 1
    });
    let (mut next, mut since) = (start, 0);
    while rt::time::now() < dies.min(how.until) {
        let Ok(page) = client.read(how.topic, next, PAGE, false, 500).await else {
            continue;
        };
        for s in &page.events {
            if s.offset != next {
                return Err(format!(
                    "{}: asked for offset {next} of {}, got {}",
                    how.name, how.topic, s.offset
                ));
            }
            next += 1;
            since += 1;
            with(traces, |t| t.entry(how.name.clone()).or_default().incarnations[slot].1 = next);
            if since >= every {
                since = 0;
                if let Ok(at) = client.commit(&how.name, how.topic, next, false).await {
                    with(traces, |t| t.entry(how.name.clone()).or_default().acked.push(at));
                }
            }
        }
    }
    Ok(())
}

/// The final committed position of every traced consumer in a converged replica's state.
pub fn final_positions(
    traces: &BTreeMap<String, ConsumerTrace>,
    state: &EventLogState,
) -> BTreeMap<String, u64> {
    traces
        .iter()
        .filter_map(|(name, tr)| {
            let pos = state.consumers(Some(name)).into_iter().find(|p| p.topic == tr.topic)?;
            Some((name.clone(), pos.committed))
        })
        .collect()
}

/// Every offset from a consumer's first position up to its final committed one was delivered to
/// at least one incarnation.
pub fn no_consumer_skips(
    traces: &BTreeMap<String, ConsumerTrace>,
    finals: &BTreeMap<String, u64>,
) -> Result<(), CheckFailure> {
    for (name, tr) in traces {
        let (Some(&(first, _)), Some(&last)) = (tr.incarnations.first(), finals.get(name)) else {
            continue;
        };
        let mut seen = tr.incarnations.clone();
        seen.sort_unstable();
        let mut covered = first;
        for (start, reached) in seen {
            if covered >= last {
                break;
            }
            if start > covered {
                return fail(
                    "no_consumer_skips",
                    format!(
                        "consumer {name} on {}: offsets {covered}..{start} were never delivered to any \
                         incarnation (first position {first}, final committed {last}; incarnations {:?})",
                        tr.topic, tr.incarnations
                    ),
                );
            }
            covered = covered.max(reached);
        }
        if covered < last {
            return fail(
                "no_consumer_skips",
                format!(
                    "consumer {name} on {}: committed {last} but offsets {covered}..{last} were never \
                     delivered (incarnations {:?})",
                    tr.topic, tr.incarnations
                ),
            );
        }
    }
    Ok(())
}

/// A consumer's final position is at least every position one of its commits was acknowledged with.
pub fn acked_commits_are_durable(
    traces: &BTreeMap<String, ConsumerTrace>,
    finals: &BTreeMap<String, u64>,
) -> Result<(), CheckFailure> {
    for (name, tr) in traces {
        let Some(&acked) = tr.acked.iter().max() else {
            continue;
        };
        match finals.get(name) {
            Some(&last) if last >= acked => {}
            last => {
                return fail(
                    "acked_commits_are_durable",
                    format!(
                        "consumer {name} on {}: a commit at {acked} was acknowledged, final position {last:?}",
                        tr.topic
                    ),
                );
            }
        }
    }
    Ok(())
}

/// Both properties over the traces and the first converged replica.
pub fn check(traces: &Traces, states: &[(u64, EventLogState)]) -> Result<(), CheckFailure> {
    let traces = traces.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let Some((_, state)) = states.first() else {
        return Ok(());
    };
    let finals = final_positions(&traces, state);
    acked_commits_are_durable(&traces, &finals)?;
    no_consumer_skips(&traces, &finals)
}

/// For the run summary: consumers, incarnations, acknowledged commits.
pub fn describe(traces: &Traces) -> String {
    let t = traces.lock().unwrap_or_else(|e| e.into_inner());
    let lives: usize = t.values().map(|c| c.incarnations.len()).sum();
    let acked: usize = t.values().map(|c| c.acked.len()).sum();
    format!("durable consumers: {} named, {lives} incarnations, {acked} commits acknowledged", t.len())
}

fn fail(checker: &'static str, detail: String) -> Result<(), CheckFailure> {
    Err(CheckFailure { checker, detail })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(incarnations: &[(u64, u64)], acked: &[u64]) -> BTreeMap<String, ConsumerTrace> {
        let tr =
            ConsumerTrace { topic: "t".into(), incarnations: incarnations.to_vec(), acked: acked.to_vec() };
        BTreeMap::from([("w".to_string(), tr)])
    }

    fn finals(at: u64) -> BTreeMap<String, u64> {
        BTreeMap::from([("w".to_string(), at)])
    }

    #[test]
    fn overlapping_incarnations_reaching_the_final_position_pass() {
        // Resumed at 5 after reading to 8 (commit at 5, crash): 5..8 delivered twice, fine.
        let t = trace(&[(0, 8), (5, 12), (12, 12), (10, 20)], &[5, 12]);
        assert_eq!(no_consumer_skips(&t, &finals(20)), Ok(()));
        assert_eq!(acked_commits_are_durable(&t, &finals(20)), Ok(()));
    }

    #[test]
    fn a_resume_past_what_was_delivered_is_a_skip() {
        let t = trace(&[(0, 8), (10, 20)], &[]);
        let e = no_consumer_skips(&t, &finals(20)).unwrap_err();
        assert!(e.detail.contains("offsets 8..10 were never delivered"), "{}", e.detail);
    }

    #[test]
    fn a_final_position_beyond_every_delivery_is_a_skip() {
        let e = no_consumer_skips(&trace(&[(0, 8)], &[]), &finals(9)).unwrap_err();
        assert_eq!(e.checker, "no_consumer_skips");
    }

    #[test]
    fn a_lost_acknowledged_commit_is_caught() {
        let t = trace(&[(0, 8)], &[6]);
        assert!(acked_commits_are_durable(&t, &finals(4)).is_err());
        assert!(acked_commits_are_durable(&t, &BTreeMap::new()).is_err());
        assert_eq!(acked_commits_are_durable(&t, &finals(6)), Ok(()));
    }
}
