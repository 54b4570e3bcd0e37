//! Plan files as a person writes them: the checks that keep a hand-edited plan from misleading
//! (faults in time order, errors at the line of the file the person edited), the names a fault
//! has in replay logs, and which mutant a scenario can run.
//!
//! Member numbering: in a plan (`node`, `nodes`, `side`, `bridge`, `from`, `to`) members are
//! **0-based indexes**; logs, checkers and the timeline name them `n1`…`nN` (node id = index + 1),
//! so `node = 0` is `n1`. Plan files say so in a comment ([`NUMBERING_NOTE`]) and replay logs
//! print both. Field-by-field documentation: `sim/src/scenarios/README.md`.

use crate::scenarios::Mutant;
use crate::scenarios::cluster::{Fault, Plan};

/// The comment `plan` and `shrink` put above a `[plan]` table.
pub const NUMBERING_NOTE: &str = "# members in [plan] are 0-based indexes: node = 0 is n1 in logs, checkers and the timeline\n# (fields: sim/src/scenarios/README.md)\n";

/// Puts [`NUMBERING_NOTE`] above the `[plan]` table of a seed file's text (unchanged if it has none).
pub fn with_numbering_note(seed_file: &str) -> String {
    match seed_file.find("\n[plan]") {
        Some(i) => format!("{}\n{NUMBERING_NOTE}{}", &seed_file[..i], &seed_file[i + 1..]),
        None => seed_file.to_string(),
    }
}

/// Refuses faults listed out of time order: they run one after the other, so a fault listed
/// after a later one would run late while reports print the time written in the file.
pub fn check_fault_order(plan: &Plan) -> Result<(), String> {
    for (i, pair) in plan.faults.windows(2).enumerate() {
        if pair[1].at_ms < pair[0].at_ms {
            return Err(format!(
                "fault {} ({} at_ms = {}) is listed after fault {} ({} at_ms = {}): list faults in time order",
                i + 2,
                pair[1].fault.kind(),
                pair[1].at_ms,
                i + 1,
                pair[0].fault.kind(),
                pair[0].at_ms
            ));
        }
    }
    Ok(())
}

/// Reads the `[plan]` of a seed file from the file's own text, so a TOML error names the line
/// and shows the text of that file (not of the table re-serialized).
pub fn parse_seed_file_plan(scenario: &str, text: &str) -> Result<Plan, String> {
    #[derive(serde::Deserialize)]
    struct WithPlan {
        plan: Plan,
    }
    if !crate::shrink::shrinkable(scenario) {
        return Err(format!(
            "scenario `{scenario}` takes no plan (only scenarios with a fault plan do: cluster)"
        ));
    }
    let f: WithPlan = toml::from_str(text).map_err(|e| format!("not a `{scenario}` plan: {e}"))?;
    f.plan.validate()?;
    Ok(f.plan)
}

impl Fault {
    /// The `kind` a plan file gives this fault.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Isolate { .. } => "isolate",
            Fault::Split { .. } => "split",
            Fault::OneWay { .. } => "one_way",
            Fault::Heal => "heal",
            Fault::Crash { .. } => "crash",
            Fault::CrashMany { .. } => "crash_many",
            Fault::Pause { .. } => "pause",
            Fault::StepClock { .. } => "step_clock",
            Fault::IsolateLeader => "isolate_leader",
            Fault::Bridge { .. } => "bridge",
            Fault::PacketLoss { .. } => "packet_loss",
            Fault::Slow { .. } => "slow",
            Fault::Disk { .. } => "disk",
            Fault::Rejoin { .. } => "rejoin",
            Fault::DiskCrash { .. } => "disk_crash",
            Fault::BitRot { .. } => "bit_rot",
            Fault::LossyLinks { .. } => "lossy_links",
            Fault::StallLink { .. } => "stall_link",
            Fault::CutLeaderPeers { .. } => "cut_leader_peers",
            Fault::StaleLeaderReturns { .. } => "stale_leader_returns",
            Fault::ChangeAfterElection { .. } => "change_after_election",
            Fault::HeldLeaderFrames { .. } => "held_leader_frames",
            Fault::StaleLeaderReads { .. } => "stale_leader_reads",
            Fault::SnapshotCopiesLate { .. } => "snapshot_copies_late",
        }
    }

    /// The members the fault names (0-based, as in the plan), in the order it names them.
    pub fn members(&self) -> Vec<usize> {
        match self {
            Fault::Isolate { node }
            | Fault::Crash { node, .. }
            | Fault::Pause { node, .. }
            | Fault::StepClock { node, .. }
            | Fault::Disk { node, .. }
            | Fault::Rejoin { node, .. }
            | Fault::DiskCrash { node, .. }
            | Fault::BitRot { node, .. } => vec![*node],
            Fault::Split { side } => side.clone(),
            Fault::CrashMany { nodes, .. } => nodes.clone(),
            Fault::OneWay { from, to } | Fault::StallLink { from, to, .. } => vec![*from, *to],
            Fault::LossyLinks { from, to, .. } => {
                let mut m = from.clone();
                m.extend(to.iter().filter(|n| !from.contains(n)));
                m
            }
            Fault::Bridge { bridge, side } => std::iter::once(*bridge).chain(side.iter().copied()).collect(),
            Fault::Heal
            | Fault::IsolateLeader
            | Fault::CutLeaderPeers { .. }
            | Fault::StaleLeaderReturns { .. }
            | Fault::ChangeAfterElection { .. }
            | Fault::HeldLeaderFrames { .. }
            | Fault::StaleLeaderReads { .. }
            | Fault::SnapshotCopiesLate { .. }
            | Fault::PacketLoss { .. }
            | Fault::Slow { .. } => vec![],
        }
    }

    /// The members as logs name them (`n1, n3`), or `all` for a fault on the whole network.
    pub fn member_names(&self) -> String {
        let m = self.members();
        if m.is_empty() {
            return match self {
                Fault::IsolateLeader
                | Fault::CutLeaderPeers { .. }
                | Fault::StaleLeaderReturns { .. }
                | Fault::ChangeAfterElection { .. }
                | Fault::HeldLeaderFrames { .. }
                | Fault::StaleLeaderReads { .. } => "the leader".into(),
                Fault::SnapshotCopiesLate { .. } => "a follower".into(),
                _ => "all".into(),
            };
        }
        m.iter().map(|n| format!("n{}", n + 1)).collect::<Vec<_>>().join(", ")
    }
}

impl Mutant {
    /// True if the mutant changes anything in `scenario`: `ack-before-store` breaks the single
    /// server of `ingest`, the others break clusters (the `cluster` family).
    pub fn applies_to(self, scenario: &str) -> bool {
        match self {
            Mutant::AckBeforeStore => scenario == "ingest",
            Mutant::LyingFsync | Mutant::StaleReads | Mutant::LostQuorum | Mutant::StrandedMember => {
                scenario.starts_with("cluster")
            }
        }
    }
}

/// A mutant given to a scenario it does nothing in: a sweep would report 0 failures and prove
/// nothing, so the CLI and the scenario library both refuse it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--mutant {} does not apply to scenario `{scenario}` (it breaks: {})", mutant.name(), fits.join(", "))]
pub struct MutantNotApplicable {
    pub mutant: Mutant,
    pub scenario: String,
    /// The scenarios it does break.
    pub fits: Vec<&'static str>,
}

/// Refuses a mutant that does nothing in `scenario` (typed).
pub fn mutant_applies(scenario: &str, mutant: Option<Mutant>) -> Result<(), MutantNotApplicable> {
    match mutant {
        Some(m) if !m.applies_to(scenario) => Err(MutantNotApplicable {
            mutant: m,
            scenario: scenario.to_string(),
            fits: crate::scenarios::SCENARIOS.iter().map(|s| s.name).filter(|s| m.applies_to(s)).collect(),
        }),
        _ => Ok(()),
    }
}

/// [`mutant_applies`] as the CLI prints it.
pub fn check_mutant(scenario: &str, mutant: Option<Mutant>) -> Result<(), String> {
    mutant_applies(scenario, mutant).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenarios::cluster::Step;

    const PLAN: &str = "\
nodes = 3
producers = 1
batches = 1
consumers = 1
drift_ppm = [0, 0, 0]
faults = [
    { at_ms = 4000, kind = \"crash\", node = 1, down_ms = 500 },
    { at_ms = 1000, kind = \"isolate\", node = 2 },
]
";

    #[test]
    fn faults_out_of_time_order_are_refused_naming_the_fault() {
        let e = crate::shrink::parse_plan("cluster", PLAN).unwrap_err();
        assert!(e.contains("fault 2 (isolate at_ms = 1000)"), "{e}");
        assert!(e.contains("after fault 1 (crash at_ms = 4000)"), "{e}");
        let sorted = PLAN.replace("4000", "100");
        assert!(crate::shrink::parse_plan("cluster", &sorted).is_ok());
        // Equal times are in order (they run in the order listed).
        let mut p = crate::shrink::parse_plan("cluster", &sorted).unwrap();
        p.faults.push(Step { at_ms: 1000, fault: Fault::Heal });
        assert_eq!(check_fault_order(&p), Ok(()));
    }

    #[test]
    fn a_typo_in_a_seed_files_plan_is_reported_at_its_line_with_its_text() {
        let file = format!(
            "scenario = \"cluster\"\nseed = 3\nnote = \"by hand\"\n\n[plan]\n{}",
            PLAN.replace("4000", "100").replace("kind = \"isolate\", node", "kind = \"isolate\", nod")
        );
        // line 13 of the file: `    { at_ms = 1000, kind = "isolate", nod = 2 },`
        assert_eq!(file.lines().nth(12), Some("    { at_ms = 1000, kind = \"isolate\", nod = 2 },"));
        let e = parse_seed_file_plan("cluster", &file).unwrap_err();
        assert!(e.contains("line 13"), "{e}");
        assert!(e.contains("nod = 2"), "{e}");
        let good = file.replace("nod =", "node =");
        assert!(parse_seed_file_plan("cluster", &good).is_ok());
    }

    #[test]
    fn mutants_apply_to_their_scenarios_only() {
        assert!(check_mutant("ingest", Some(Mutant::StaleReads)).unwrap_err().contains("does not apply"));
        assert!(check_mutant("cluster", Some(Mutant::AckBeforeStore)).is_err());
        assert!(check_mutant("pipeline", Some(Mutant::LyingFsync)).is_err());
        assert_eq!(check_mutant("cluster5", Some(Mutant::StaleReads)), Ok(()));
        assert_eq!(check_mutant("ingest", Some(Mutant::AckBeforeStore)), Ok(()));
        assert_eq!(check_mutant("pipeline", None), Ok(()));
    }

    #[test]
    fn seed_files_say_how_members_are_numbered() {
        let text = "scenario = \"cluster\"\nseed = 1\nnote = \"n\"\n\n[plan]\nnodes = 3\n";
        let t = with_numbering_note(text);
        assert!(t.contains("node = 0 is n1\n") || t.contains("node = 0 is n1 in logs"), "{t}");
        assert!(t.find("# members").unwrap() < t.find("[plan]").unwrap());
        assert_eq!(with_numbering_note("nodes = 3\n"), "nodes = 3\n");
        assert_eq!(Fault::OneWay { from: 0, to: 2 }.member_names(), "n1, n3");
        assert_eq!(Fault::Heal.member_names(), "all");
    }
}
