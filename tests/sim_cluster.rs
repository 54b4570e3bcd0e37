//! Seed sweeps of the cluster scenarios: 3- and 5-member Raft clusters under every fault kind
//! (partitions of every shape, packet loss, latency, power-fail crashes, disk errors, pauses,
//! clock skew, membership changes, TCP storms), with retrying producers and long-poll consumers.
//!
//! `ESC_SIM_CLUSTER_SEEDS` (default 1500) sets how many fixed seeds of `cluster`,
//! `ESC_SIM_CLUSTER3_SEEDS` / `ESC_SIM_CLUSTER5_SEEDS` (default 24 each) of the 60-second,
//! 50-client `cluster3` / `cluster5`, `ESC_SIM_SEED_BASE` (default 0) the first seed. Besides
//! them, `ESC_SIM_CLUSTER_EXPLORE_SEEDS` (default 500) and `ESC_SIM_CLUSTER3_EXPLORE_SEEDS` /
//! `ESC_SIM_CLUSTER5_EXPLORE_SEEDS` (default 6 each) exploring seeds run from a base that changes
//! with the commit and the day (printed; `ESC_SIM_EXPLORE_BASE` pins it). A failure
//! prints the seed, the fault plan, the failed checker with its history excerpt and the replay
//! command.
#![cfg(madsim)]

use eventstreamcore::rt::disk::SimDiskStats;
use eventstreamcore_sim::runner::{self, default_options};

#[test]
fn sweep_cluster_seeds() {
    runner::sweep_from_env("cluster", "ESC_SIM_CLUSTER_SEEDS", 1500);
}

#[test]
fn explore_cluster_seeds() {
    runner::explore_from_env("cluster", "ESC_SIM_CLUSTER_EXPLORE_SEEDS", 500);
}

#[test]
fn explore_cluster3_and_cluster5_seeds() {
    runner::explore_from_env("cluster3", "ESC_SIM_CLUSTER3_EXPLORE_SEEDS", 6);
    runner::explore_from_env("cluster5", "ESC_SIM_CLUSTER5_EXPLORE_SEEDS", 6);
}

#[test]
fn sweep_cluster3_seeds() {
    runner::sweep_from_env("cluster3", "ESC_SIM_CLUSTER3_SEEDS", 24);
}

#[test]
fn sweep_cluster5_seeds() {
    runner::sweep_from_env("cluster5", "ESC_SIM_CLUSTER5_SEEDS", 24);
}

/// Every fault kind is drawn and happens, over a modest number of seeds (a kind the plans never
/// draw, or one that is always skipped, tests nothing).
#[test]
fn every_fault_kind_happens() {
    let mut seen = std::collections::BTreeSet::new();
    let (mut power_failures, mut torn) = (0, 0);
    let mut links = eventstreamcore::transport::lossy::LinkStats::default();
    for seed in 0..60 {
        let r = runner::run_seed("cluster", seed, default_options());
        assert!(!r.failed(), "{}", r.failure_report());
        if let Ok(o) = &r.outcome {
            links.add(&o.links);
            power_failures += o.disk.power_failures;
            torn += o.disk.torn_writes;
            assert!(o.summary.contains(&format!("{} torn writes", o.disk.torn_writes)), "{}", o.summary);
        }
        let summary = r.outcome.map(|o| o.summary).unwrap_or_default();
        for kind in [
            "Isolate {",
            "IsolateLeader",
            "Split {",
            "Bridge {",
            "OneWay {",
            "PacketLoss {",
            "Slow {",
            "Crash {",
            "CrashMany {",
            "Disk {",
            "Rejoin {",
            "DiskCrash {",
            "BitRot {",
            "LossyLinks {",
            "StallLink {",
            "CutLeaderPeers {",
            "Pause {",
            "StepClock {",
            "storm:",
            "peer-port storm:",
        ] {
            if summary.contains(kind) {
                seen.insert(kind);
            }
        }
        for counter in [
            "\"crashes\"",
            "\"disk_faults\"",
            "\"members_added_back\"",
            "\"leader_isolated\"",
            "\"crashes_inside_disk_ops\"",
            "\"bit_rot_detected\"",
            // The targeted faults for the zoo's rare catches (faults/rare.rs).
            "\"held_leader_frames\"",
            "\"stale_leader_reads\"",
            "\"snapshot_copies_late\"",
        ] {
            if summary.contains(counter) {
                seen.insert(counter);
            }
        }
    }
    assert_eq!(seen.len(), 29, "fault kinds seen in 60 seeds: {seen:?}");
    // The fault layer under the peer transport really drops, duplicates, delays and resets.
    assert!(
        links.dropped > 0 && links.duplicated > 0 && links.delayed > 0 && links.resets > 0,
        "lossy links did nothing in 60 seeds: {links:?}"
    );
    // Issue 15: seeds that draw a small per-peer queue (`peer_queue`) fill it behind stalled and
    // slow links, so the transport's full-queue path runs (Raft retransmits what it dropped).
    assert!(links.queue_full > 0, "no message dropped on a full peer queue in 60 seeds: {links:?}");
    // The disks' power failures are counted (the sweep summary sums them, with the torn writes).
    assert!(power_failures > 0, "no power failure counted in 60 seeds ({torn} torn writes)");
}

/// Issue 15: the power fails inside a disk operation of a member (between two writes of a round,
/// or in the middle of one, which then lands in part): the member dies there, its recovery cuts
/// the torn tail, and the run's checkers pass (no acked event lost, replicas equal).
#[test]
fn a_power_failure_inside_a_disk_operation_tears_the_wal_and_recovery_repairs_it() {
    let (mut struck, mut torn, mut repaired) = (0, 0, 0);
    for after_ops in [0, 1, 2, 3, 5, 8, 13, 21] {
        let plan = format!(
            "nodes = 3\ndrift_ppm = [0, 0, 0]\nproducers = 4\nbatches = 20\nconsumers = 1\nthink_ms = 300\n\
             faults = [{{ at_ms = 1500, kind = \"disk_crash\", node = {}, after_ops = {after_ops}, down_ms = 800 }}]\n",
            after_ops % 3
        );
        let opts = eventstreamcore_sim::scenarios::Options { plan: Some(plan), ..default_options() };
        let r = runner::run_seed("cluster", after_ops, opts);
        assert!(!r.failed(), "{}", r.failure_report());
        let o = r.outcome.expect("passed");
        assert!(o.summary.contains("crashes inside disk operations"), "{}", o.summary);
        struck += o.disk.crashes_in_ops;
        torn += o.disk.torn_writes;
        repaired += o.disk.repaired_tails;
    }
    assert_eq!(struck, 8, "every armed crash strikes inside a disk operation of its member");
    assert!(torn > 0 && repaired > 0, "{torn} torn writes, {repaired} repaired tails in 8 runs");
}

/// Six runs with one bit rot each (`files`: only files with that prefix; `extra`: plan lines),
/// each run's checkers passing; returns (injected, detected, wiped) summed.
fn bit_rot_runs(files: Option<&str>, extra: &str, first_ms: u64) -> (u64, u64, u64) {
    let d = bit_rot_disks(files, extra, first_ms, 300);
    (d.rot_injected, d.rot_detected, d.wiped_for_rot)
}

/// Six runs of [`bit_rot_runs`] with the reboot `restart_ms` after the rot; their disks' counts.
fn bit_rot_disks(files: Option<&str>, extra: &str, first_ms: u64, restart_ms: u64) -> SimDiskStats {
    let mut total = SimDiskStats::default();
    let files = files.map(|f| format!(", files = \"{f}\"")).unwrap_or_default();
    for k in 0..6 {
        let at_ms = first_ms + 1_000 * k;
        let plan = format!(
            "nodes = 3\ndrift_ppm = [0, 0, 0]\nproducers = 4\nbatches = 20\nconsumers = 2\nthink_ms = 300\n{extra}\
             faults = [{{ at_ms = {at_ms}, kind = \"bit_rot\", node = {}, restart_ms = {restart_ms}{files} }}]\n",
            k % 3
        );
        let opts = eventstreamcore_sim::scenarios::Options { plan: Some(plan), ..default_options() };
        let r = runner::run_seed("cluster", k, opts);
        assert!(!r.failed(), "{}", r.failure_report());
        let o = r.outcome.expect("passed");
        println!(
            "rot at {at_ms} ms: {} detected; {}",
            o.disk.rot_detected,
            o.summary.lines().last().unwrap_or("")
        );
        if o.disk.rot_detected > 0 {
            assert!(o.summary.contains("\"members_added_back\": 1"), "{}", o.summary);
        }
        if !files.is_empty() {
            // Only topic segments rot here, and the summary says so.
            let d = &o.disk;
            assert_eq!((d.rot_in_topic_segments, d.topic_rot_detected), (d.rot_injected, d.rot_detected));
        }
        total.add(&o.disk);
    }
    total
}

/// Issue 15, bit rot at rest: a bit flips in a synced file of one member (a WAL segment, the
/// snapshot, the hard state, a topic segment); when the operator reboots it, recovery's checksums
/// reject the file and the member refuses to start; the simulator removes, wipes and re-adds it,
/// and the run's checkers pass (no consumer ever got a payload nobody published, no acked event
/// lost).
#[test]
fn bit_rot_at_rest_is_detected_and_the_member_is_wiped_and_re_added() {
    let (injected, detected, wiped) = bit_rot_runs(None, "", 2_500);
    assert_eq!(injected, 6, "every rot finds synced data to flip");
    assert!(detected >= 5, "{detected} of 6 rots detected at the reboot");
    assert_eq!(wiped, detected, "every member that refused to start was wiped and re-added");
}

/// Issue 15, bit rot in topic segments (small ones, so most are sealed): until the reboot the
/// member never serves the rotted record (a read answers `unavailable`, the consumer asks another
/// member); at the reboot its start verifies every retained segment and refuses — before, a
/// sealed segment was trusted by its length and the member started on it — and it is wiped and
/// re-added. Rot past the last snapshot's point is cut and replayed from the Raft log instead.
#[test]
fn bit_rot_in_topic_segments_is_refused_at_the_reboot_and_the_member_re_added() {
    let (injected, detected, wiped) =
        bit_rot_runs(Some("topic-"), "topic_segment_bytes = 4096\nsnapshot_entries = 8\n", 4_000);
    assert_eq!(injected, 6, "every rot finds a synced topic segment to flip");
    assert!(detected >= 5, "{detected} of 6 topic rots detected at the reboot");
    assert_eq!(wiped, detected, "every member that refused to start was wiped and re-added");
}

/// Issue 15, the background scrub: with the reboot 3 s after the rot (longer than a scrub pass
/// and its 1 s pause), rot in a sealed topic segment is found while the member runs, by the scrub
/// alone (its own error counter, which a read that meets rot does not touch), before the
/// operator's reboot refuses the start and the member is wiped and re-added.
#[test]
fn the_background_scrub_finds_topic_rot_before_any_read_or_reboot() {
    let extra = "topic_segment_bytes = 4096\nsnapshot_entries = 8\n";
    let d = bit_rot_disks(Some("topic-"), extra, 4_000, 3_000);
    println!("{d:?}");
    assert_eq!(d.rot_in_topic_segments, 6, "every rot finds a synced topic segment to flip");
    assert!(d.topic_rot_found_by_scrub >= 3, "{} of 6 found by the scrub", d.topic_rot_found_by_scrub);
    assert_eq!(d.wiped_for_rot, d.rot_detected, "every member that refused to start was re-added");
}

/// Issue 15, disk latency: with slow fsyncs (a networked volume) the driver waits each round's
/// disk time out, requests pile up meanwhile and the next round's one fsync covers them all —
/// group commit shows: the same events take far fewer fsyncs than on instant disks.
#[test]
fn slow_fsyncs_make_group_commit_show() {
    let run = |latency: &str| {
        let plan = format!(
            "nodes = 3\ndrift_ppm = [0, 0, 0]\nproducers = 40\nbatches = 20\nconsumers = 1\nthink_ms = 10\n{latency}"
        );
        let opts = eventstreamcore_sim::scenarios::Options { plan: Some(plan), ..default_options() };
        let r = runner::run_seed("cluster", 5, opts);
        assert!(!r.failed(), "{}", r.failure_report());
        let d = r.outcome.expect("passed").disk;
        (d.syncs, d.appended_bytes, d.busy_us)
    };
    let slow = "disk_latency = [\
        { write_us = 100, fsync_us = 8000, spike_per_mille = 10, spike_ms = 100, seed = 1 },\
        { write_us = 100, fsync_us = 8000, spike_per_mille = 10, spike_ms = 100, seed = 2 },\
        { write_us = 100, fsync_us = 8000, spike_per_mille = 10, spike_ms = 100, seed = 3 }]\n";
    let (instant, bytes, no_time) = run("");
    let (grouped, grouped_bytes, disk_time) = run(slow);
    println!(
        "fsyncs: {instant} on instant disks ({} bytes appended per fsync), {grouped} with 8 ms fsyncs ({})",
        bytes / instant.max(1),
        grouped_bytes / grouped.max(1)
    );
    assert_eq!(no_time, 0, "instant disks take no simulated time");
    assert!(disk_time > 0);
    assert!(
        grouped * 3 < instant * 2,
        "{grouped} fsyncs with slow disks vs {instant} on instant ones: no group commit"
    );
}

/// Issue 11: a peer-port storm — garbage, wrong secrets, replayed handshakes, and an insider's
/// frames with impossible terms and indexes — changes nothing: no handshake completes without
/// the secret, every impossible frame closes its connection, no member takes an absurd term
/// (the RaftWatch check), and the run's checkers pass (every acked event kept, replicas equal).
#[test]
fn a_peer_port_storm_changes_nothing() {
    let plan = "nodes = 3\ndrift_ppm = [0, 0, 0]\nproducers = 3\nbatches = 8\nconsumers = 1\nthink_ms = 300\n\
                peer_storm_clients = 8\n\
                faults = [{ at_ms = 4000, kind = \"crash\", node = 1, down_ms = 1000 }]\n";
    let opts =
        || eventstreamcore_sim::scenarios::Options { plan: Some(plan.to_string()), ..default_options() };
    let r = runner::run_seed("cluster", 11, opts());
    assert!(!r.failed(), "{}", r.failure_report());
    let again = runner::run_seed("cluster", 11, opts());
    let digest = |r: &runner::SeedResult| r.outcome.as_ref().ok().map(|o| o.digest);
    assert_eq!(digest(&r), digest(&again), "the peer storm replays from the seed");
    let summary = r.outcome.map(|o| o.summary).unwrap_or_default();
    let line = summary.lines().find(|l| l.starts_with("peer-port storm:")).expect("a peer-port storm line");
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|w| !w.is_empty())
        .map(|w| w.parse().unwrap())
        .collect();
    // connects, refused, garbage, wrong secret refused, replays refused, frames, closed, violations
    let [_, _, garbage, wrong, replays, frames, closed, violations] = numbers[..] else {
        panic!("unexpected line {line}")
    };
    println!("{line}");
    assert!(garbage > 0 && wrong > 0 && replays > 0 && frames > 0, "{line}");
    assert!(closed * 10 >= frames * 9, "impossible frames must close their connection: {line}");
    assert_eq!(violations, 0, "{line}");
}

/// `--timeline`: a run records each member's roles and terms, its commits, the faults and the
/// storms (a lane each, with their clients).
#[test]
fn a_run_draws_its_timeline() {
    use eventstreamcore_sim::timeline::{Event, Recorder, RoleMark, SpanKind};
    let plan = "nodes = 3\nproducers = 2\nbatches = 4\nconsumers = 1\ndrift_ppm = [0, 30000, 0]\n\
                storm_clients = 7\nstorm_at_ms = 1000\nstorm_ms = 3000\npeer_storm_clients = 2\n\
                faults = [{ at_ms = 2000, kind = \"crash\", node = 1, down_ms = 1000 }, \
                { at_ms = 4000, kind = \"packet_loss\", pct = 10, ms = 1000 }, \
                { at_ms = 5000, kind = \"isolate\", node = 2 }]\n";
    let rec = Recorder::new("cluster seed 9", vec![]);
    let opts = eventstreamcore_sim::scenarios::Options {
        plan: Some(plan.into()),
        timeline: Some(rec.clone()),
        ..default_options()
    };
    let r = runner::run_seed("cluster", 9, opts);
    assert!(!r.failed(), "{}", r.failure_report());
    let t = rec.snapshot();
    assert_eq!(t.nodes, ["n1", "n2", "n3"]);
    assert!(t.title.contains("cluster seed 9") && t.title.contains("passed"), "{}", t.title);
    let has = |f: &dyn Fn(&Event) -> bool| t.events.iter().any(f);
    assert!(has(&|e| matches!(e, Event::Role { role: RoleMark::Leader, .. })));
    for node in 0..3 {
        assert!(
            has(&|e| matches!(e, Event::Commit { node: n, .. } if *n == node)),
            "commits of n{}",
            node + 1
        );
    }
    assert!(has(&|e| matches!(
        e,
        Event::Span { node: 1, kind: SpanKind::Down, from: 2000, to: Some(3000), .. }
    )));
    assert!(has(&|e| matches!(e, Event::Span { node: 2, kind: SpanKind::Isolated, from: 5000, .. })));
    assert!(has(&|e| matches!(e, Event::NetSpan { label, .. } if label == "10% packet loss")));
    assert!(has(&|e| matches!(e, Event::Drift { node: 1, ppm: 30000 })));
    let storm =
        "7 clients: 2 connect_flood, 1 half_frame, 1 malformed, 1 slow_reader, 1 vanisher, 1 timeout_retrier";
    assert!(has(&|e| matches!(
        e,
        Event::Phase { lane, from: 1000, to: Some(4000), label } if lane == "client storm" && label == storm
    )));
    assert!(has(&|e| matches!(
        e,
        Event::Phase { lane, from: 0, label, .. } if lane == "peer storm" && label == "2 clients: 1 insider, 1 wrong_secret"
    )));
    assert!(!has(&|e| matches!(e, Event::Failure { .. })), "a passing run marks no failure");
    let svg = t.to_svg();
    assert!(svg.contains("leader, term"), "the picture shows leaders and terms");
    assert!(svg.contains(r#"data-lane="client storm""#), "the storm has its lane");
}

/// The failing checker is marked on the timeline where it detected the failure: the liveness
/// check when it gave up, the convergence check when it stopped waiting; a verdict over the
/// whole history at the end of the run, naming the event it concerns, and at that event's time.
#[test]
fn the_timeline_marks_where_a_checker_failed() {
    use eventstreamcore_sim::scenarios::Mutant;
    use eventstreamcore_sim::timeline::{Event, Recorder};
    let plan = "nodes = 3\nproducers = 3\nbatches = 5\nconsumers = 1\ndrift_ppm = [0, 0, 0]\n";
    let failures = |mutant, seed, plan: Option<&str>| {
        let rec = Recorder::new("t", vec![]);
        let opts = eventstreamcore_sim::scenarios::Options {
            plan: plan.map(Into::into),
            mutant: Some(mutant),
            timeline: Some(rec.clone()),
            ..default_options()
        };
        let r = runner::run_seed("cluster", seed, opts);
        assert!(r.failed(), "the mutant must fail seed {seed}");
        let t = rec.snapshot();
        let marks: Vec<(u64, String)> = t
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Failure { at, label, .. } => Some((*at, label.clone())),
                _ => None,
            })
            .collect();
        (marks, t.end)
    };
    let (lost, end) = failures(Mutant::LostQuorum, 4, Some(plan));
    let [(at, label)] = &lost[..] else { panic!("one liveness mark: {lost:?}") };
    assert!(label.starts_with("✗ liveness:"), "{label}");
    // The liveness client gives up 20 s after healing, before the convergence wait ends the run.
    assert!(*at >= 20_000 && *at < end, "at {at} of {end}");
    let (stranded, end) = failures(Mutant::StrandedMember, 4, Some(plan));
    let [(at, label)] = &stranded[..] else { panic!("one convergence mark: {stranded:?}") };
    assert!(label.starts_with("✗ replicas_converge"), "{label}");
    assert!(*at <= end && *at > 20_000, "at {at} of {end}");
    // Seed 1234 with stale reads fails at the end (the README's shrink example): the mark names
    // the read, and a second mark sits at the time that read began.
    let (stale, end) = failures(Mutant::StaleReads, 1234, None);
    let [(at_end, judged), (at, concerns)] = &stale[..] else { panic!("two marks: {stale:?}") };
    assert_eq!(*at_end, end, "{judged}");
    assert!(judged.contains("(judged at the end; the read started at operation "), "{judged}");
    assert!(concerns.starts_with("✗ linearizable_reads: the read started at operation "), "{concerns}");
    assert!(*at < end, "the read began before the end: {at} of {end}");
}

#[test]
fn the_same_seed_gives_the_same_digest() {
    for seed in [2, 11, 777] {
        let a = runner::run_seed("cluster", seed, default_options());
        let b = runner::run_seed("cluster", seed, default_options());
        assert!(!a.failed(), "{}", a.failure_report());
        assert_eq!(a.digest(), b.digest(), "seed {seed} is not deterministic");
        assert_eq!(a.plan, b.plan);
    }
    let x = runner::run_seed("cluster", 5, default_options()).digest();
    let y = runner::run_seed("cluster", 6, default_options()).digest();
    assert_ne!(x, y, "different seeds must give different runs");
}

#[test]
fn madsim_determinism_check_passes() {
    // One fixed seed and a rotating sample of the exploring range.
    for seed in [1].into_iter().chain(runner::explore_sample(2)) {
        runner::check_determinism("cluster", seed).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
}

#[test]
fn disks_that_lie_about_fsync_are_caught_and_the_seed_replays_alone() {
    use eventstreamcore_sim::scenarios::Mutant;
    let mutant = || {
        let mut o = default_options();
        o.mutant = Some(Mutant::LyingFsync);
        o
    };
    let report = runner::sweep("cluster", 0..40, runner::default_jobs(), mutant, |_| {});
    let first = report.failures.first().expect("the sweep must catch acked writes lost to lying fsyncs");
    let text = first.failure_report();
    assert!(
        text.contains(&format!("cargo sim -- replay --scenario cluster --seed {}", first.seed)),
        "{text}"
    );
    let again = runner::run_seed("cluster", first.seed, mutant());
    assert_eq!(again.failure(), first.failure(), "the failing seed replays alone, identically");
    let good = runner::run_seed("cluster", first.seed, default_options());
    assert!(!good.failed(), "{}", good.failure_report());
    // The per-round Raft checkers see it first in some seeds: a vote or a log entry the disk
    // "forgot" lets two members lead one term, or a new leader lack a committed entry.
    let raft: Vec<_> = report
        .failures
        .iter()
        .filter(|r| r.failure().is_some_and(|f| f.contains("checker `raft_invariants` failed")))
        .collect();
    let r = raft.first().expect("a Raft invariant broken at some step of some seed");
    let text = r.failure_report();
    assert!(text.contains("the rounds before it"), "the report shows the history excerpt: {text}");
}

/// A checker that cannot fail is a defect: with consumers' linearizable reads served stale, the
/// linearizable-read checker must catch it in some seed.
#[test]
fn stale_linearizable_reads_are_caught() {
    use eventstreamcore_sim::scenarios::Mutant;
    let mutant = || {
        let mut o = default_options();
        o.mutant = Some(Mutant::StaleReads);
        o
    };
    let report = runner::sweep("cluster", 0..100, runner::default_jobs(), mutant, |_| {});
    let stale = report
        .failures
        .iter()
        // Any seed whose failure is a stale read (others may catch the same mutant as reads going
        // back in time first; which seed fails first shifts whenever the workload changes).
        .find(|r| {
            r.failure().is_some_and(|f| f.contains("checker `linearizable_reads` failed"))
                && r.failure_report().contains("a stale read")
        })
        .expect("a stale read caught in 100 seeds");
    assert!(stale.failure_report().contains("a stale read"), "{}", stale.failure_report());
}

/// The liveness and convergence checks can fail: a cluster whose members all stay cut off after
/// the faults end commits nothing (liveness), and one whose last member stays cut off never
/// converges. A quiet plan, so only the mutant can break the run.
#[test]
fn liveness_and_convergence_checks_fail_when_the_cluster_cannot_recover() {
    use eventstreamcore_sim::scenarios::Mutant;
    let plan = "nodes = 3\nproducers = 3\nbatches = 5\nconsumers = 1\ndrift_ppm = [0, 0, 0]\n";
    let with = |mutant| eventstreamcore_sim::scenarios::Options {
        plan: Some(plan.into()),
        mutant,
        ..default_options()
    };
    let ok = runner::run_seed("cluster", 4, with(None));
    assert!(!ok.failed(), "{}", ok.failure_report());
    let lost = runner::run_seed("cluster", 4, with(Some(Mutant::LostQuorum)));
    let f = lost.failure().expect("no quorum after the faults: the liveness check fails");
    assert!(f.contains("checker `liveness` failed: liveness: no write committed within"), "{f}");
    let stranded = runner::run_seed("cluster", 4, with(Some(Mutant::StrandedMember)));
    let f = stranded.failure().expect("a member left cut off: the replicas do not converge");
    assert!(f.contains("checker `replicas_converge` failed"), "{f}");
}

/// A publish to an idle single-member cluster is acked at once in simulated time (well under a
/// millisecond; the simulator charges nanoseconds per poll):
/// the driver goes round again when `advance()` made more ready (its own durable append commits
/// the entry) instead of waiting for the next tick. Regression: acks waited up to one tick.
#[test]
fn an_idle_single_member_acks_without_waiting_for_a_tick() {
    use std::sync::Arc;
    use std::time::Duration;

    use eventstreamcore::config::ClusterConfig;
    use eventstreamcore::event::{Event, Priority};
    use eventstreamcore::node::{ClusterNode, ClusterOptions, DedupConfig};
    use eventstreamcore::raft::Role;
    use eventstreamcore::rt::{self, NodeClock, SimDisk};
    use eventstreamcore::service::EventService;

    let runtime = madsim::runtime::Runtime::with_seed_and_config(7, madsim::Config::default());
    runtime.block_on(async {
        let handle = madsim::runtime::Handle::current();
        let host = handle.create_node().name("single").ip("10.0.0.1".parse().unwrap()).build();
        host.spawn(async {
            let cluster = ClusterConfig {
                raft_listen: "10.0.0.1:7170".parse().unwrap(),
                tick_ms: 1_000,
                election_ticks: 2,
                heartbeat_ticks: 1,
                ..ClusterConfig::default()
            };
            let opts = ClusterOptions {
                node_id: 1,
                cluster,
                dedup: DedupConfig::default(),
                client_addr: "10.0.0.1:7070".into(),
                repair: false,
                pipeline: None,
                observer: None,
                store: Default::default(),
                read_max_bytes: 1 << 20,
            };
            let (node, task) =
                ClusterNode::start(opts, Arc::new(SimDisk::new()), NodeClock::new(), rt::node_rng())
                    .await
                    .unwrap();
            // Steps of 137 ms never line up with the 1 s ticks.
            while !(node.status().role == Role::Leader && node.status().applied >= 1) {
                rt::time::sleep(Duration::from_millis(137)).await;
            }
            for seq in 1..=5 {
                rt::time::sleep(Duration::from_millis(137)).await;
                let mut e = Event::new("t", Priority::Medium, "x");
                e.producer_id = 1;
                e.sequence = seq;
                let t0 = rt::time::now();
                node.publish(vec![e]).await.unwrap();
                let waited = rt::time::now() - t0;
                assert!(waited < Duration::from_millis(1), "publish {seq} waited {waited:?} (for a tick?)");
            }
            node.shutdown();
            task.wait().await;
        })
        .await
        .unwrap();
    });
}

/// The three-member plan of the descriptor tests: small, snapshots every 8 entries, a reader.
fn descriptor_plan(
    faults: Vec<eventstreamcore_sim::scenarios::cluster::Step>,
) -> eventstreamcore_sim::scenarios::cluster::Plan {
    use eventstreamcore_sim::scenarios::cluster::Plan;
    Plan {
        nodes: 3,
        producers: 3,
        batches: 8,
        consumers: 1,
        drift_ppm: vec![0, 0, 0],
        faults,
        fault_window_ms: 12_000,
        deadline_ms: 40_000,
        think_ms: 100,
        storm_clients: 0,
        storm_at_ms: 0,
        storm_ms: None,
        snapshot_entries: 8,
        peer_storm_clients: 0,
        linearizable_reader: true,
        durable_consumers: 0,
        retention_max_events: None,
        disk_latency: Vec::new(),
        legacy_clients: 0,
        topic_segment_bytes: None,
        catchup_chunk_bytes: None,
        max_entries_per_append: None,
        dedup_window_ms: None,
        peer_queue: None,
    }
}

/// Two of three members run out of file descriptors while the producers' first batches create
/// their topics: applying an entry that needs a new topic file stops before it (nothing of it
/// applied), waits, and goes on from that entry once the fault ends — no restart, every checker
/// passes. (Seed 11 of this plan: `esc-sim replay --plan` logs "applying stops before the next
/// entry" on n1 and n2 for `topic-00000002-…`.)
#[test]
fn members_out_of_descriptors_for_new_topic_files_wait_to_apply_without_a_restart() {
    use eventstreamcore_sim::scenarios::cluster::{DiskErrorKind, Fault, Step};
    let faults: Vec<Step> = (0..2)
        .map(|node| Step {
            at_ms: 900,
            fault: Fault::Disk { node, error: DiskErrorKind::Descriptors, down_ms: 4_000 },
        })
        .collect();
    let plan = descriptor_plan(faults);
    let mut opts = default_options();
    opts.plan = Some(toml::to_string(&plan).unwrap());
    let r = runner::run_seed("cluster", 11, opts);
    assert!(!r.failed(), "{}", r.failure_report());
    let report = r.outcome.as_ref().unwrap();
    assert!(report.disk.injected_failures > 0, "no open ever failed\n{}", report.summary);
    assert_eq!(report.disk.power_failures, 0, "no member was power-cycled\n{}", report.summary);
}

/// Members that run out of file descriptors (every open fails, nothing is written) wait with
/// their round un-persisted and go on by themselves once the fault ends: every checker passes
/// and no member was restarted or marked failed.
#[test]
fn members_out_of_file_descriptors_wait_and_go_on_without_a_restart() {
    use eventstreamcore_sim::scenarios::cluster::{DiskErrorKind, Fault, Step};
    // Every member at once, and the leader cut off meanwhile: the election that follows needs
    // hard-state writes that cannot open their file until the fault ends.
    let mut faults: Vec<Step> = (0..3)
        .map(|node| Step {
            at_ms: 1_000,
            fault: Fault::Disk { node, error: DiskErrorKind::Descriptors, down_ms: 2_500 },
        })
        .collect();
    faults.push(Step { at_ms: 1_200, fault: Fault::IsolateLeader });
    faults.push(Step { at_ms: 2_000, fault: Fault::Heal });
    let plan = descriptor_plan(faults);
    let mut opts = default_options();
    opts.plan = Some(toml::to_string(&plan).unwrap());
    let r = runner::run_seed("cluster", 11, opts);
    assert_eq!(r.plan, Some(plan.describe()), "ran this plan");
    assert!(!r.failed(), "{}", r.failure_report());
    let report = r.outcome.as_ref().unwrap();
    assert!(
        report.disk.injected_failures > 0,
        "no open ever failed: the fault tested nothing\n{}",
        report.summary
    );
    assert_eq!(report.disk.power_failures, 0, "no member was power-cycled\n{}", report.summary);
}

/// Members catch up by snapshot in a small sweep: installs happen and pull their topic data by
/// records (the plans keep only a short log tail behind each snapshot).
#[test]
fn a_small_sweep_installs_snapshots_and_pulls_their_data() {
    let mut installs = eventstreamcore::node::CatchUpCounters::default();
    for seed in 0..16 {
        let r = runner::run_seed("cluster", seed, default_options());
        assert!(!r.failed(), "{}", r.failure_report());
        if let Ok(o) = &r.outcome {
            installs.add(&o.installs);
            assert!(o.summary.contains("snapshot installs: "), "{}", o.summary);
        }
    }
    let line = eventstreamcore_sim::scenarios::cluster::describe_installs(&installs);
    println!("{line}");
    assert!(installs.installs > 0 && installs.completed > 0, "{line}");
    assert!(installs.chunks > 0 && installs.bytes > 0, "no install pulled any records: {line}");
}
