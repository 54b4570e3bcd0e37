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
    for seed in 0..60 {
        let r = runner::run_seed("cluster", seed, default_options());
        assert!(!r.failed(), "{}", r.failure_report());
        if let Ok(o) = &r.outcome {
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
        ] {
            if summary.contains(counter) {
                seen.insert(counter);
            }
        }
    }
    assert_eq!(seen.len(), 21, "fault kinds seen in 60 seeds: {seen:?}");
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

/// `--timeline`: a run records each member's roles and terms, its commits and the faults.
#[test]
fn a_run_draws_its_timeline() {
    use eventstreamcore_sim::timeline::{Event, Recorder, RoleMark, SpanKind};
    let plan = "nodes = 3\nproducers = 2\nbatches = 4\nconsumers = 1\ndrift_ppm = [0, 30000, 0]\n\
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
    let svg = t.to_svg();
    assert!(svg.contains("leader, term"), "the picture shows leaders and terms");
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
