//! How a `cluster` run is judged once its faults end: liveness (the healed cluster commits a new
//! write in time), convergence (every member applied the leader's commit and the pipeline caught
//! up), the verdict over the history and the converged states, and the run's digest.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use eventstreamcore::client::ClusterClient;
use eventstreamcore::event::{Event, Priority};
use eventstreamcore::node::{ClusterNode, EventLogState};
use eventstreamcore::raft::Role;
use eventstreamcore::rt;
use eventstreamcore::service::EventService;
use eventstreamcore::transport::lossy::LinkStats;

use super::{LIVENESS_BOUND, MemberSlot, Plan, Storms};
use crate::check;
use crate::history::{History, HistoryData};
use crate::raft_watch::RaftWatch;
use crate::timeline::{Event as TimelineEvent, Ms, Recorder};

/// Whether the healed cluster commits a new write within [`LIVENESS_BOUND`] (the failure, also
/// recorded as a violation), and how long it took in ms.
pub(super) async fn check_liveness(
    handle: &madsim::runtime::Handle,
    history: &History,
    addrs: &[SocketAddr],
) -> (Option<String>, u128) {
    let healed = rt::time::now();
    let live_node = handle.create_node().name("liveness").ip(IpAddr::V4(Ipv4Addr::new(10, 3, 0, 1))).build();
    let (lh, laddrs) = (history.clone(), addrs.to_vec());
    let live = live_node
        .spawn(async move {
            let mut c = ClusterClient::new(laddrs, "liveness", "");
            c.timeout = Duration::from_secs(2);
            c.backoff = Duration::from_millis(100);
            c.max_attempts = 1_000;
            let mut e = Event::new("liveness", Priority::High, "ping");
            e.producer_id = 999_999;
            e.sequence = 1;
            lh.published(&e);
            rt::time::timeout(LIVENESS_BOUND, c.publish(vec![e.clone()]))
                .await
                .map(|r| r.map(|items| (items, e)))
        })
        .await;
    let liveness_failed = match live {
        Ok(Ok(Ok((items, e)))) => {
            history.record_acks("liveness", &[e], &items);
            None
        }
        Ok(Ok(Err(e))) => Some(format!("liveness: the healed cluster refused a write: {e}")),
        Ok(Err(_)) => Some(format!("liveness: no write committed within {LIVENESS_BOUND:?} of healing")),
        Err(_) => Some("liveness client task failed".to_string()),
    };
    if let Some(l) = &liveness_failed {
        history.violation(l.clone());
    }
    let liveness_ms = (rt::time::now() - healed).as_millis();
    (liveness_failed, liveness_ms)
}

/// Waits for every task, recording a violation for each that failed.
pub(super) async fn await_tasks<T, E>(
    tasks: Vec<impl Future<Output = Result<T, E>>>,
    history: &History,
    what: &str,
) {
    for t in tasks {
        if t.await.is_err() {
            history.violation(format!("{what} task failed"));
        }
    }
}

/// Waits (up to 20 s) for the members to converge: every member applied the leader's commit
/// index and the leader's pipeline processed every topic to its end. Their states, if they did.
pub(super) async fn await_convergence(slots: &[MemberSlot]) -> Option<Vec<(u64, EventLogState)>> {
    for _ in 0..200 {
        let nodes: Vec<Option<ClusterNode>> =
            slots.iter().map(|s| s.node.lock().unwrap_or_else(|e| e.into_inner()).clone()).collect();
        if nodes.iter().all(Option::is_some) {
            let nodes: Vec<ClusterNode> = nodes.into_iter().flatten().collect();
            let st: Vec<_> = nodes.iter().map(|n| n.status()).collect();
            let leader_commit = st.iter().filter(|s| s.role == Role::Leader).map(|s| s.commit).max();
            let leader = nodes.iter().zip(&st).find(|(_, s)| s.role == Role::Leader).map(|(n, _)| n);
            // Quiescent: every member applied everything, and the leader's pipeline has handled
            // and checkpointed every topic to its end (it resumed after whatever failovers).
            let processed = leader.is_some_and(|l| {
                let state = l.state();
                state
                    .topics()
                    .all(|t| state.processing().positions.get(t).copied().unwrap_or(0) == state.end_offset(t))
            });
            if let Some(lc) = leader_commit
                && st.iter().all(|s| s.applied == lc)
                && processed
            {
                // A copy a checker can keep; a member whose files cannot be read did not converge.
                let copies = nodes.iter().map(|n| n.state().try_clone().map(|s| (n.node_id(), s)));
                return copies.collect::<Result<Vec<_>, _>>().ok();
            }
        }
        rt::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// The run's verdict, first failure first: a Raft invariant broken, no liveness, no
/// convergence, then the checkers over the history and the converged logs.
pub(super) fn judge(
    watch: &RaftWatch,
    liveness_failed: Option<String>,
    converged: bool,
    slots: &[MemberSlot],
    data: &HistoryData,
    states: &[(u64, EventLogState)],
    plan: &Plan,
) -> Option<check::CheckFailure> {
    if let Some(v) = watch.violation() {
        Some(check::CheckFailure {
            checker: "raft_invariants",
            detail: format!(
                "at {:.3}s on n{}: {}\nthe rounds before it (all members):\n  {}",
                v.at_ms as f64 / 1000.0,
                v.node,
                v.what,
                v.excerpt.join("\n  ")
            ),
        })
    } else if let Some(l) = liveness_failed {
        Some(check::CheckFailure { checker: "liveness", detail: l })
    } else if !converged {
        let st: Vec<String> = slots
            .iter()
            .map(|s| match s.node.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                Some(n) => format!("{:?}", n.status()),
                None => "down".into(),
            })
            .collect();
        Some(check::CheckFailure {
            checker: "replicas_converge",
            detail: format!(
                "no convergence (every member applied the leader's commit index, the leader's pipeline \
             processed every topic to its end) 20 s after healing: {st:?}"
            ),
        })
    } else {
        check_logs_recover(slots)
            .and_then(|()| check::check_cluster_run(data, states, min_acks(plan)))
            .and_then(|()| check::retention_within_policy(data, states, plan.retention_max_events))
            .err()
            .map(|mut f| {
                if let Some((_, log)) = states.first() {
                    let excerpt = check::history_excerpt(data, log, &f.detail);
                    if !excerpt.is_empty() {
                        f.detail = format!(
                            "{}\nhistory excerpt (the log of node {}):{excerpt}",
                            f.detail, states[0].0
                        );
                    }
                }
                f
            })
    }
}

/// Every member's Raft log, as a power failure at the end of the run would leave it, is accepted
/// by recovery. A member whose disk never had bit rot injected must never refuse its own writes:
/// a torn tail kept as valid, or writes a failed fsync dropped, show here instead of only when a
/// later restart happens to read them.
pub(super) fn check_logs_recover(slots: &[MemberSlot]) -> Result<(), check::CheckFailure> {
    use eventstreamcore::wal::{RaftStorage, StorageError, StorageOptions};
    for (i, s) in slots.iter().enumerate() {
        let copy = std::sync::Arc::new(s.disk.durable_copy());
        let refused = match RaftStorage::open(copy, StorageOptions::default()) {
            Ok(_) => continue,
            Err(e @ StorageError::Corrupt { .. }) if s.disk.stats().rot_injected == 0 => e,
            Err(StorageError::Corrupt { .. }) => continue, // bit rot was injected: the rot checks judge it
            Err(e) => e,
        };
        return Err(check::CheckFailure {
            checker: "logs_recover",
            detail: format!(
                "member {}'s Raft log, as a power failure now would leave it, is refused by recovery \
                 (no bit rot was injected on its disk): {refused}",
                i + 1
            ),
        });
    }
    Ok(())
}

/// What the members' disks (WAL and DLQ) saw, summed.
pub(super) fn disk_tally(slots: &[MemberSlot]) -> eventstreamcore::rt::disk::SimDiskStats {
    let mut t = eventstreamcore::rt::disk::SimDiskStats::default();
    for s in slots.iter().flat_map(|s| [s.disk.stats(), s.dlq.stats()]) {
        t.add(&s);
    }
    t
}

/// Adds to the run's digest what two runs of one seed must also agree on: every ack in the order
/// received, each member's roles and terms as they changed (and when), the leader of each term,
/// the committed Raft log, and the simulated time at the end.
pub(super) fn digest_the_run(
    d: &mut eventstreamcore::node::state::Fnv64,
    data: &crate::history::HistoryData,
    watch: &RaftWatch,
    end_ms: u64,
) {
    for a in &data.acks {
        d.write(a.client.as_bytes());
        d.write_u64(a.producer);
        d.write_u64(a.sequence);
        d.write(a.topic.as_bytes());
        d.write_u64(a.offset);
        d.write(&[u8::from(a.duplicate)]);
    }
    for c in watch.role_changes() {
        d.write_u64(c.at_ms);
        d.write_u64(c.node);
        d.write(&[c.role as u8]);
        d.write_u64(c.term);
    }
    for (term, node) in watch.leaders() {
        d.write_u64(term);
        d.write_u64(node);
    }
    for (index, e) in watch.committed() {
        d.write_u64(index);
        d.write_u64(e.term);
        d.write_u64(e.digest);
    }
    d.write_u64(end_ms);
}

/// The fewest acked events a run must carry: one per producer (each publishes 5 or more batches
/// over tens of seconds; a run below this checked next to nothing).
pub(super) fn min_acks(plan: &Plan) -> usize {
    plan.producers
}

/// The run's digest: the converged states, the acks and counters, and what [`digest_the_run`]
/// adds.
pub(super) fn run_digest(
    states: &[(u64, EventLogState)],
    data: &HistoryData,
    watch: &RaftWatch,
    end_ms: u64,
) -> u64 {
    let mut d = eventstreamcore::node::state::Fnv64::default();
    for (id, s) in states {
        d.write_u64(*id);
        d.write_u64(s.digest());
    }
    d.write_u64(data.acks.len() as u64);
    for (k, v) in &data.counters {
        d.write(k.as_bytes());
        d.write_u64(*v);
    }
    digest_the_run(&mut d, data, watch, end_ms);
    d.finish()
}

/// The run's readable summary: the plan, what it stored and acked, counters, disks and storms.
pub(super) fn summarize(
    states: &[(u64, EventLogState)],
    data: &HistoryData,
    watch: &RaftWatch,
    liveness_ms: u128,
    (disk, links): (&eventstreamcore::rt::disk::SimDiskStats, &LinkStats),
    plan: &Plan,
    storms: &Storms,
) -> String {
    let stored = states.first().map_or(0, |s| s.1.events_stored());
    let alerts = states.first().map_or(0, |s| s.1.topic_log(eventstreamcore::pipeline::ALERTS_TOPIC).len());
    let description = plan.describe();
    let summary = format!(
        "{description}\nresult: {stored} events stored ({alerts} alerts the pipeline derived), {} acks ({} duplicate), {} consumed, liveness {liveness_ms} ms after healing; {} Raft rounds checked; counters {:?}",
        data.acks.len(),
        data.acks.iter().filter(|a| a.duplicate).count(),
        data.consumed.len(),
        watch.rounds(),
        data.counters,
    );
    let summary = format!(
        "{summary}\ndisks: {} power failures, {} torn writes, {} injected failures, {} crashes inside disk operations, {} repaired tails",
        disk.power_failures,
        disk.torn_writes,
        disk.injected_failures,
        disk.crashes_in_ops,
        disk.repaired_tails
    ) + &if disk.busy_us > 0 {
        format!(
            "; {} writes, {} fsyncs, {:.1} s simulated disk time, {} latency spikes",
            disk.writes,
            disk.syncs,
            disk.busy_us as f64 / 1e6,
            disk.latency_spikes
        )
    } else {
        String::new()
    } + &if disk.rot_injected > 0 {
        format!(
            "; bit rot: {} injected ({} in topic segments), {} detected, {} members wiped, {} cut off as torn tails",
            disk.rot_injected,
            disk.rot_in_topic_segments,
            disk.rot_detected,
            disk.wiped_for_rot,
            disk.rot_cut_off
        )
    } else {
        String::new()
    };
    let summary = if links.windows > 0 { format!("{summary}\n{}", describe_links(links)) } else { summary };
    let summary = if plan.storm_clients > 0 {
        format!("{summary}\n{}", storms.storm_stats.lock().unwrap_or_else(|e| e.into_inner()).describe())
    } else {
        summary
    };
    let summary = if plan.peer_storm_clients > 0 {
        format!("{summary}\n{}", storms.peer_stats.lock().unwrap_or_else(|e| e.into_inner()).describe())
    } else {
        summary
    };
    match (plan.retention_max_events, states.first()) {
        (Some(max), Some((_, s))) => format!(
            "{summary}\nretention: max_events {max}; removed {} of {stored} events; {} out-of-range answers",
            s.topics().map(|t| s.first_offset(t)).sum::<u64>(),
            data.retention_skips.len()
        ),
        _ => summary,
    }
}

/// When the run reached the verdicts judged before the end (ms since the start): the liveness
/// check ended, the wait for convergence ended.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct VerdictTimes {
    pub liveness: Ms,
    pub converged: Ms,
}

/// What the lossy peer links did, in one line (the sweep summary sums the same counters).
pub fn describe_links(l: &LinkStats) -> String {
    format!(
        "peer links: {} lossy/stalled windows, {} frames dropped, {} duplicated, {} delayed, {} connection resets, {} stalled writes; transport: {} write timeouts, {} messages dropped on a full queue",
        l.windows,
        l.dropped,
        l.duplicated,
        l.delayed,
        l.resets,
        l.stalled_writes,
        l.write_timeouts,
        l.queue_full
    )
}

/// Titles the run's timeline (when one is recorded) with its verdict, marks the failure and
/// closes it.
pub(super) fn finish_timeline(
    timeline: Option<&Recorder>,
    plan: &Plan,
    failure: Option<(&check::CheckFailure, Vec<TimelineEvent>)>,
    start: rt::time::Instant,
) {
    if let Some(r) = timeline {
        let base = r.snapshot().title;
        r.set_title(format!(
            "{base} — {} members, {} faults — {}",
            plan.nodes,
            plan.faults.len(),
            failure.as_ref().map_or("passed".to_string(), |(f, _)| format!("FAILED: {}", f.checker))
        ));
        for mark in failure.into_iter().flat_map(|(_, marks)| marks) {
            r.record(mark);
        }
        r.finish((rt::time::now() - start).as_millis() as Ms);
    }
}

/// Where a failure goes on the timeline: where its checker detected it (the round and member
/// of a broken Raft invariant, the end of the liveness or the convergence wait), or, for a
/// verdict over the whole history, the end of the run naming the event the failure concerns,
/// plus a mark at that event's time (see [`check::failure_time`]).
pub(super) fn failure_marks(
    f: &check::CheckFailure,
    watch: &RaftWatch,
    data: &HistoryData,
    times: VerdictTimes,
    end: Ms,
) -> Vec<TimelineEvent> {
    let mark = |at, node, label: String| TimelineEvent::Failure { at, node, label };
    let secs = |ms: Ms| format!("{}.{:03} s", ms / 1000, ms % 1000);
    match (f.checker, watch.violation()) {
        ("raft_invariants", Some(v)) => vec![mark(
            v.at_ms,
            usize::try_from(v.node).ok().and_then(|n| n.checked_sub(1)),
            format!("✗ raft_invariants on n{}: {}", v.node, v.what),
        )],
        ("liveness", _) => vec![mark(
            times.liveness,
            None,
            format!("✗ liveness: no write committed within {} s of healing", LIVENESS_BOUND.as_secs()),
        )],
        ("replicas_converge", _) => {
            vec![mark(times.converged, None, "✗ replicas_converge: no convergence after healing".into())]
        }
        (checker, _) => match check::failure_time(data, &f.detail) {
            Some((at, what)) => vec![
                mark(end, None, format!("✗ {checker} (judged at the end; {what} at {})", secs(at))),
                mark(at, None, format!("✗ {checker}: {what}")),
            ],
            None => vec![mark(end, None, format!("✗ {checker} (judged at the end)"))],
        },
    }
}
