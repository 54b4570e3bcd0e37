//! `esc-sim zoo`: measures the testbed's power by sweeping seeds with each planted bug of
//! `eventstreamcore::zoo` switched on in turn, after a clean sweep that must find nothing.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use eventstreamcore::zoo::Bug;

use crate::runner::{self, SeedResult};
use crate::scenarios::Options;

/// The scenario whose sweep is expected to catch `bug`: the pipeline scenario for the pipeline's
/// bug, the ingest scenario for the ingest layer's, the standard cluster sweep for the rest.
pub fn home_scenario(bug: Bug) -> &'static str {
    match bug {
        Bug::CheckpointAheadOfWork => "pipeline",
        Bug::AckSlotsMixedUp => "ingest",
        _ => "cluster",
    }
}

/// What a sweep with one bug (or none: the clean run) found.
#[derive(Debug, Clone)]
pub struct ZooRow {
    /// `None` for the clean run.
    pub bug: Option<Bug>,
    pub scenario: &'static str,
    pub seeds: u64,
    /// Failing seeds, sorted.
    pub failing: Vec<u64>,
    /// How many failing seeds each checker failed (`panic` for an assertion or crash).
    pub checkers: BTreeMap<String, u64>,
    /// The first failing seed's report (what a person replays first).
    pub first_report: Option<String>,
    pub wall: Duration,
}

impl ZooRow {
    /// Caught: at least one seed failed.
    pub fn caught(&self) -> bool {
        !self.failing.is_empty()
    }

    /// Seeds run up to and including the first failing one (the range starts at `start`).
    pub fn seeds_to_first(&self, start: u64) -> Option<u64> {
        self.failing.first().map(|s| s - start + 1)
    }

    /// Share of seeds that failed.
    pub fn rate(&self) -> f64 {
        self.failing.len() as f64 / self.seeds.max(1) as f64
    }

    /// The checkers that caught it, most failures first (`name×count`).
    pub fn checker_list(&self) -> String {
        let mut v: Vec<_> = self.checkers.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        v.iter().map(|(c, n)| format!("{c}×{n}")).collect::<Vec<_>>().join(", ")
    }
}

/// Sweeps `seeds` of `bug`'s home scenario (or of `scenario` for the clean run) on `jobs`
/// threads; `on_done` is called after each seed.
pub fn run_row(
    bug: Option<Bug>,
    scenario: &'static str,
    seeds: Range<u64>,
    jobs: usize,
    on_done: impl Fn(&SeedResult) + Sync,
) -> ZooRow {
    let opts = || Options { bug, ..runner::default_options() };
    let report = runner::sweep(scenario, seeds.clone(), jobs, opts, on_done);
    let mut checkers = BTreeMap::new();
    for f in &report.failures {
        *checkers.entry(f.checker().unwrap_or_default()).or_insert(0) += 1;
    }
    ZooRow {
        bug,
        scenario,
        seeds: report.seeds,
        failing: report.failures.iter().map(|r| r.seed).collect(),
        checkers,
        first_report: report.failures.first().map(SeedResult::failure_report),
        wall: report.wall,
    }
}

/// The zoo's table (Markdown), the clean rows first.
pub fn table(rows: &[ZooRow], start: u64) -> String {
    let mut s = String::from(
        "| bug | area | scenario | caught | seeds to first failure | detection rate | caught by (checker × seeds) |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let (name, area) = match r.bug {
            Some(b) => (b.name(), b.area()),
            None => ("(none: clean run)", "-"),
        };
        let caught = match (r.bug, r.caught()) {
            (None, false) => "no failures (ok)".to_string(),
            (None, true) => "**FAILED** (a clean run must not fail)".to_string(),
            (Some(_), true) => "yes".to_string(),
            (Some(_), false) => "**no**".to_string(),
        };
        s.push_str(&format!(
            "| {name} | {area} | {} | {caught} | {} | {}/{} ({:.1} %) | {} |\n",
            r.scenario,
            r.seeds_to_first(start).map_or("-".to_string(), |n| n.to_string()),
            r.failing.len(),
            r.seeds,
            100.0 * r.rate(),
            if r.checkers.is_empty() { "-".to_string() } else { r.checker_list() },
        ));
    }
    s
}

/// A one-line verdict: how many bugs were caught, the median seeds to the first failure, and
/// whether the clean runs stayed clean.
pub fn verdict(rows: &[ZooRow], start: u64) -> String {
    let bugs: Vec<&ZooRow> = rows.iter().filter(|r| r.bug.is_some()).collect();
    let caught = bugs.iter().filter(|r| r.caught()).count();
    let mut firsts: Vec<u64> = bugs.iter().filter_map(|r| r.seeds_to_first(start)).collect();
    firsts.sort_unstable();
    let median = firsts.get(firsts.len() / 2).map_or("-".to_string(), |m| m.to_string());
    let clean_ok = rows.iter().filter(|r| r.bug.is_none()).all(|r| !r.caught());
    format!(
        "{caught} of {} planted bugs caught; median seeds to the first failure (of those caught) {median}; clean runs {}",
        bugs.len(),
        if clean_ok { "passed" } else { "FAILED" }
    )
}
