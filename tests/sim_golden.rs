//! Golden runs: five short cluster scripts (a seed plus an explicit fault plan each) whose
//! committed Raft log — the leader of each term, the log by term with entry kinds and payload
//! digests, how each member got its state — is kept as an insta snapshot in `tests/snapshots/`.
//!
//! A change in behaviour (who leads, what commits in which term, a member catching up by
//! snapshot instead of by entries) shows up as a small diff; review it with `cargo insta review`
//! (see the README). Random seeds in bulk are for invariant checking, not for snapshots: these
//! plans are hand-written so they stay put when plan generation changes.
#![cfg(madsim)]

use eventstreamcore_sim::runner::{self, default_options};
use eventstreamcore_sim::scenarios::{Options, RunReport};

/// Runs one golden script and snapshots its committed log summary.
fn golden(name: &str, seed: u64, plan: &str) {
    golden_with(name, seed, plan, |_| String::new());
}

/// [`golden`], with `more` of the run's report appended to the snapshot.
fn golden_with(name: &str, seed: u64, plan: &str, more: impl Fn(&RunReport) -> String) {
    let opts = Options { plan: Some(plan.to_string()), ..default_options() };
    let r = runner::run_seed("cluster", seed, opts);
    assert!(!r.failed(), "{}", r.failure_report());
    let report = r.outcome.expect("passed");
    let extra = more(&report);
    let log = report.raft_log.expect("the cluster scenario summarizes its Raft log");
    insta::assert_snapshot!(name, format!("plan: {}\n{log}{extra}", r.plan.unwrap_or_default()));
}

const CLIENTS: &str = "producers = 3\nbatches = 6\nconsumers = 1\nthink_ms = 300\n";

#[test]
fn golden_leader_crash() {
    let plan = format!(
        "nodes = 3\ndrift_ppm = [0, 0, 0]\n{CLIENTS}\
         faults = [{{ at_ms = 3000, kind = \"isolate_leader\" }}, {{ at_ms = 3500, kind = \"crash\", node = 0, down_ms = 1500 }}, {{ at_ms = 7000, kind = \"heal\" }}]\n"
    );
    golden("leader_crash", 1, &plan);
}

#[test]
fn golden_minority_partition_with_bridge() {
    let plan = format!(
        "nodes = 5\ndrift_ppm = [0, 20000, 0, -20000, 0]\n{CLIENTS}\
         faults = [{{ at_ms = 2000, kind = \"split\", side = [0, 1] }}, {{ at_ms = 5000, kind = \"heal\" }}, {{ at_ms = 6000, kind = \"bridge\", bridge = 2, side = [0, 1] }}]\n"
    );
    golden("minority_partition_with_bridge", 2, &plan);
}

#[test]
fn golden_membership_change() {
    let plan = format!(
        "nodes = 3\ndrift_ppm = [0, 0, 0]\n{CLIENTS}\
         faults = [{{ at_ms = 2500, kind = \"rejoin\", node = 2, down_ms = 1000 }}, {{ at_ms = 6000, kind = \"packet_loss\", pct = 20, ms = 2000 }}]\n"
    );
    golden("membership_change", 3, &plan);
}

#[test]
fn golden_full_disk() {
    let plan = format!(
        "nodes = 3\ndrift_ppm = [0, 0, 0]\n{CLIENTS}\
         faults = [{{ at_ms = 2000, kind = \"disk\", node = 1, error = \"full\", down_ms = 2000 }}, {{ at_ms = 5000, kind = \"step_clock\", node = 0, ms = -3000 }}]\n"
    );
    golden("full_disk", 4, &plan);
}

#[test]
fn golden_power_cut_of_every_member() {
    let plan = format!(
        "nodes = 5\ndrift_ppm = [0, 0, 0, 0, 0]\n{CLIENTS}\
         faults = [{{ at_ms = 4000, kind = \"crash_many\", nodes = [0, 1, 2, 3, 4], down_ms = 800 }}, {{ at_ms = 8000, kind = \"slow\", min_ms = 50, max_ms = 200, ms = 2000 }}]\n"
    );
    golden("power_cut_of_every_member", 5, &plan);
}

#[test]
fn golden_catch_up_by_snapshot() {
    // Small snapshots, topic segments and catch-up chunks: the member that is down while the
    // others commit and compact comes back behind the log and installs a snapshot, then pulls
    // its topic records in chunks before it applies anything after it.
    let plan = "nodes = 3\ndrift_ppm = [0, 0, 0]\nproducers = 3\nbatches = 10\nconsumers = 1\nthink_ms = 300\n\
         snapshot_entries = 16\ntopic_segment_bytes = 4096\ncatchup_chunk_bytes = 4096\n\
         faults = [{ at_ms = 1500, kind = \"crash\", node = 2, down_ms = 6000 }]\n";
    golden_with("catch_up_by_snapshot", 6, plan, |r| {
        assert!(r.installs.chunks > 1, "the install pulled its records in chunks: {:?}", r.installs);
        format!("{}\n", eventstreamcore_sim::scenarios::cluster::describe_installs(&r.installs))
    });
}
