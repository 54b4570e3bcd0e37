//! Named simulation scenarios. Each derives its whole plan from the simulator's seeded RNG, so a
//! seed replays the same run bit for bit.

pub mod cluster;
pub mod durable;
pub mod ingest;
pub mod pipeline;

use std::sync::{Arc, Mutex};

use crate::check::CheckFailure;

/// Knobs a caller may set on a run (the defaults are what sweeps use).
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Deliberately break the server, to prove the checkers catch it.
    pub mutant: Option<Mutant>,
    /// A bug of the zoo to switch on in the server for this run (see `eventstreamcore::zoo`).
    pub bug: Option<eventstreamcore::zoo::Bug>,
    /// Where the run writes its readable plan as soon as it is drawn (survives a panic).
    pub plan_slot: PlanSlot,
    /// Run this plan (TOML, the scenario's `Plan` serialized) instead of the one the seed draws;
    /// the seed still decides everything else. Used by `shrink` and by seed files with a plan.
    pub plan: Option<String>,
    /// Largest clock drift a member may get, in parts per million (`None`: the scenario's
    /// default, ±5 %).
    pub max_drift_ppm: Option<i64>,
    /// Record the run here (roles, terms, commits, faults) for `--timeline out.svg`; it survives
    /// a panic of the run.
    pub timeline: Option<crate::timeline::Recorder>,
    /// Where a scenario with a serializable plan writes the TOML of the plan it runs (drawn or
    /// given), so `shrink` can start from a seed's own plan.
    pub plan_toml_slot: PlanSlot,
}

/// A deliberate server bug, for testing the testbed itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutant {
    /// Now and then acks the last event of a batch without storing it (ack before store, then
    /// "crash" before the write).
    AckBeforeStore,
    /// Cluster members' disks report fsync done without making anything durable (a disk or
    /// virtual machine that lies about flushes), so a power failure loses acked writes.
    LyingFsync,
    /// Consumers' "linearizable" reads are served from whatever the member they reach has
    /// applied (as if a server ignored the flag), so a lagging follower answers stale data.
    StaleReads,
    /// Cluster scenarios: when the faults end, every member is cut off instead of healed (a
    /// cluster that cannot make progress), so the liveness check must fail.
    LostQuorum,
    /// Cluster scenarios: when the faults end, the last member stays cut off, so the replicas
    /// cannot converge and the convergence check must fail.
    StrandedMember,
}

impl Mutant {
    /// The name `--mutant` takes.
    pub fn name(self) -> &'static str {
        match self {
            Mutant::AckBeforeStore => "ack-before-store",
            Mutant::LyingFsync => "lying-fsync",
            Mutant::StaleReads => "stale-reads",
            Mutant::LostQuorum => "lost-quorum",
            Mutant::StrandedMember => "stranded-member",
        }
    }

    /// The mutant called `name` (as `--mutant` takes it).
    pub fn from_name(name: &str) -> Option<Mutant> {
        [
            Mutant::AckBeforeStore,
            Mutant::LyingFsync,
            Mutant::StaleReads,
            Mutant::LostQuorum,
            Mutant::StrandedMember,
        ]
        .into_iter()
        .find(|m| m.name() == name)
    }
}

/// A shared slot for the plan text.
pub type PlanSlot = Arc<Mutex<Option<String>>>;

/// What one run produced.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// Digest of everything observable (final logs, acks, counters); equal for equal seeds.
    pub digest: u64,
    /// One-paragraph summary of what happened.
    pub summary: String,
    /// The first checker that failed, if any.
    pub failure: Option<CheckFailure>,
    /// Scenarios with Raft: the committed log and the leader of each term, summarized (what
    /// the golden snapshots hold).
    pub raft_log: Option<String>,
    /// What the run's simulated disks saw, summed over members (power failures, torn writes…);
    /// zero for scenarios without power failures.
    pub disk: eventstreamcore::rt::disk::SimDiskStats,
    /// What the fault layer under the peer transport did (drops, duplicates, delays, resets,
    /// stalls) and the transport's write timeouts and full queues; zero without lossy links.
    pub links: eventstreamcore::transport::lossy::LinkStats,
    /// Snapshot installs and the pull of their topic data, summed over members and incarnations.
    pub installs: eventstreamcore::node::CatchUpCounters,
}

impl RunReport {
    /// The report of a scenario without Raft, power failures or peer links.
    pub fn plain(digest: u64, summary: String, failure: Option<CheckFailure>) -> RunReport {
        RunReport {
            digest,
            summary,
            failure,
            raft_log: None,
            disk: Default::default(),
            links: Default::default(),
            installs: Default::default(),
        }
    }
}

/// A scenario's name and one-line description.
#[derive(Debug, Clone, Copy)]
pub struct ScenarioInfo {
    pub name: &'static str,
    pub about: &'static str,
}

/// Every scenario, for `esc-sim list` and argument checking.
pub const SCENARIOS: &[ScenarioInfo] = &[
    ScenarioInfo {
        name: "ingest",
        about: "one server, 200+ TCP clients: producers, retriers, legacy, malformed, stalled, idle, vanishing, consumers",
    },
    ScenarioInfo {
        name: "cluster",
        about: "3 or 5 Raft members under partitions (halves, one-way, bridge, leader), packet loss, latency, crashes with power failure, disk errors, pauses, clock skew, membership changes; retrying producers, long-poll consumers",
    },
    ScenarioInfo {
        name: "cluster3",
        about: "3 Raft members, 50 clients, 60 simulated seconds, every fault kind (the speed benchmark's shape)",
    },
    ScenarioInfo {
        name: "cluster5",
        about: "5 Raft members, 50 clients, 60 simulated seconds, every fault kind",
    },
    ScenarioInfo {
        name: "pipeline",
        about: "overload storm through the event pipeline: every event processed, dead-lettered with a reason, or refused",
    },
];

/// Looks a scenario up by name.
pub fn find(name: &str) -> Option<ScenarioInfo> {
    SCENARIOS.iter().copied().find(|s| s.name == name)
}
