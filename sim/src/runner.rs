//! The seed runner: one seed in a fresh simulator runtime, sweeps across threads, determinism
//! checks, and the regression seed files in `seeds/`.
//!
//! The runner lives outside the simulated world: it owns real threads (one fresh thread per seed,
//! a pool per sweep), reads seed files and measures wall time, so it may use what the seam bans.
#![allow(clippy::disallowed_methods)]

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::scenarios::cluster::Shape;
use crate::scenarios::{self, Mutant, Options, RunReport};

/// Simulated-time limit of one run; exceeding it is a failure (a hang or lost liveness).
pub const TIME_LIMIT: Duration = Duration::from_secs(600);

/// The outcome of one seed.
#[derive(Debug, Clone)]
pub struct SeedResult {
    pub scenario: String,
    pub seed: u64,
    /// The readable plan, if the run got far enough to draw it.
    pub plan: Option<String>,
    /// The report, or the panic message.
    pub outcome: Result<RunReport, String>,
    /// Wall-clock time the run took.
    pub wall: Duration,
    /// Simulated time the run covered (zero if it panicked).
    pub simulated: Duration,
    /// The mutant the run used (the replay line repeats it).
    pub mutant: Option<Mutant>,
    /// The planted bug the run used (the replay line repeats it).
    pub bug: Option<eventstreamcore::zoo::Bug>,
    /// The plan (TOML) the run was given instead of the seed's own ([`Options::plan`]).
    pub plan_override: Option<String>,
    /// The file that plan came from, if any (set by whoever read it; the replay line names it).
    pub plan_file: Option<PathBuf>,
}

impl SeedResult {
    /// True if the run panicked or a checker failed.
    pub fn failed(&self) -> bool {
        match &self.outcome {
            Ok(r) => r.failure.is_some(),
            Err(_) => true,
        }
    }

    /// The failure message, if any.
    pub fn failure(&self) -> Option<String> {
        match &self.outcome {
            Ok(r) => r.failure.as_ref().map(|f| f.to_string()),
            Err(panic) => Some(format!("panicked: {panic}")),
        }
    }

    /// The digest of a successful run.
    pub fn digest(&self) -> Option<u64> {
        self.outcome.as_ref().ok().map(|r| r.digest)
    }

    /// The name of the checker that failed (`panic` if the run panicked), if any.
    pub fn checker(&self) -> Option<String> {
        match &self.outcome {
            Ok(r) => r.failure.as_ref().map(|f| f.checker.to_string()),
            Err(_) => Some("panic".to_string()),
        }
    }

    /// The command that replays this run: the seed, plus the mutant and the plan file if the
    /// run had them (`--plan <FILE>` when the plan came from no file: see [`failure_report`]).
    ///
    /// [`failure_report`]: SeedResult::failure_report
    pub fn replay_line(&self) -> String {
        let mut line = replay_command(&self.scenario, self.seed);
        if let Some(m) = self.mutant {
            line.push_str(&format!(" --mutant {}", m.name()));
        }
        if let Some(b) = self.bug {
            line.push_str(&format!(" --bug {}", b.name()));
        }
        if self.plan_override.is_some() {
            match &self.plan_file {
                Some(f) => line.push_str(&format!(" --plan {}", f.display())),
                None => line.push_str(" --plan <FILE>"),
            }
        }
        line
    }

    /// A block a person can act on: what failed, the plan, and the command that replays it (with
    /// the plan's TOML to save as `<FILE>` when the run was given a plan that is in no file).
    pub fn failure_report(&self) -> String {
        let mut s = format!(
            "--- simulation failure ---\nscenario: {}\nseed:     {}\nplan:     {}\nfailure:  {}\nreplay:   {}\n",
            self.scenario,
            self.seed,
            self.plan.as_deref().unwrap_or("(not drawn)"),
            self.failure().unwrap_or_default(),
            self.replay_line(),
        );
        if crate::shrink::shrinkable(&self.scenario) {
            // The plan's members are 0-based; the failure and the logs name them n1…nN.
            s = s.replacen(
                "\nfailure:",
                "\nmembers:  0-based in the plan: node 0 is n1 in the failure and the logs\nfailure:",
                1,
            );
        }
        if let (Some(plan), None) = (&self.plan_override, &self.plan_file) {
            s.push_str("<FILE> (the plan this run was given):\n");
            s.push_str(plan);
            if !plan.ends_with('\n') {
                s.push('\n');
            }
        }
        s
    }
}

/// The one command that replays a seed alone, with tracing.
pub fn replay_command(scenario: &str, seed: u64) -> String {
    format!("cargo sim -- replay --scenario {scenario} --seed {seed}")
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic".to_string()
    }
}

/// The ingest scenario; a mutant it refuses is a panic here, reported as the run's failure
/// (the CLI refuses it before any run, naming the scenarios it applies to).
async fn ingest(opts: Options) -> RunReport {
    scenarios::ingest::run(opts).await.unwrap_or_else(|e| panic!("{e}"))
}

async fn dispatch(scenario: &str, opts: Options) -> RunReport {
    match scenario {
        "ingest" => ingest(opts).await,
        "cluster" => scenarios::cluster::run(opts, scenarios::cluster::Shape::MIXED).await,
        "cluster3" => scenarios::cluster::run(opts, scenarios::cluster::Shape::THREE).await,
        "cluster5" => scenarios::cluster::run(opts, scenarios::cluster::Shape::FIVE).await,
        "pipeline" => scenarios::pipeline::run(opts).await,
        other => panic!("unknown scenario `{other}`"),
    }
}

/// Runs one seed of `scenario` in a fresh thread and simulator runtime (fresh thread-locals, so
/// seeds never influence each other). Panics inside the run are caught and reported.
///
/// With `MADSIM_TEST_CHECK_DETERMINISM` set (as madsim's own test macro honours it), each seed is
/// first run twice under madsim's draw-by-draw determinism checker.
pub fn run_seed(scenario: &str, seed: u64, opts: Options) -> SeedResult {
    assert!(scenarios::find(scenario).is_some(), "unknown scenario `{scenario}`");
    if opts.mutant.is_none()
        && opts.bug.is_none()
        && std::env::var_os("MADSIM_TEST_CHECK_DETERMINISM").is_some()
        && let Err(e) = check_determinism_with(scenario, seed, opts.plan.clone())
    {
        return SeedResult {
            scenario: scenario.to_string(),
            seed,
            plan: None,
            outcome: Err(format!("non-deterministic run: {e}")),
            wall: Duration::ZERO,
            simulated: Duration::ZERO,
            mutant: None,
            bug: None,
            plan_override: opts.plan,
            plan_file: None,
        };
    }
    let plan_slot = opts.plan_slot.clone();
    let (mutant, bug, plan_override) = (opts.mutant, opts.bug, opts.plan.clone());
    let name = scenario.to_string();
    let started = Instant::now();
    let joined = std::thread::Builder::new()
        .name(format!("sim-{scenario}-{seed}"))
        .stack_size(16 * 1024 * 1024)
        .spawn(move || {
            let _planted = eventstreamcore::zoo::plant(bug);
            let mut rt = madsim::runtime::Runtime::with_seed_and_config(seed, madsim::Config::default());
            rt.set_time_limit(TIME_LIMIT);
            rt.block_on(async move {
                let t0 = eventstreamcore::rt::time::now();
                let report = dispatch(&name, opts).await;
                (report, eventstreamcore::rt::time::now() - t0)
            })
        })
        .expect("spawn a simulation thread")
        .join();
    let simulated = joined.as_ref().map_or(Duration::ZERO, |(_, d)| *d);
    let plan = plan_slot.lock().unwrap_or_else(|e| e.into_inner()).clone();
    SeedResult {
        scenario: scenario.to_string(),
        seed,
        plan,
        outcome: joined.map(|(r, _)| r).map_err(|p| panic_message(p.as_ref())),
        wall: started.elapsed(),
        simulated,
        mutant,
        bug,
        plan_override,
        plan_file: None,
    }
}

/// Runs a seed twice under madsim's determinism checker (every random draw and its simulated
/// time compared); `Err` with the message if the runs diverge or fail.
pub fn check_determinism(scenario: &str, seed: u64) -> Result<(), String> {
    check_determinism_with(scenario, seed, None)
}

/// The plan [`check_determinism_with`] hands to the runs (madsim's checker takes a plain `fn`, so
/// the plan cannot be captured); `DETERMINISM_LOCK` keeps one check with a plan at a time.
static DETERMINISM_PLAN: Mutex<Option<String>> = Mutex::new(None);
static DETERMINISM_LOCK: Mutex<()> = Mutex::new(());

fn determinism_options() -> Options {
    Options { plan: DETERMINISM_PLAN.lock().unwrap_or_else(|e| e.into_inner()).clone(), ..Options::default() }
}

fn checked<F: std::future::Future<Output = RunReport> + 'static>(
    seed: u64,
    with_plan: bool,
    given: fn() -> F,
    drawn: fn() -> F,
) {
    let cfg = madsim::Config::default();
    madsim::runtime::Runtime::check_determinism(seed, cfg, if with_plan { given } else { drawn });
}

/// [`check_determinism`] of a run given `plan` instead of the seed's own ([`Options::plan`]).
pub fn check_determinism_with(scenario: &str, seed: u64, plan: Option<String>) -> Result<(), String> {
    let with_plan = plan.is_some();
    let _one_at_a_time = with_plan.then(|| {
        let guard = DETERMINISM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        *DETERMINISM_PLAN.lock().unwrap_or_else(|e| e.into_inner()) = plan;
        guard
    });
    let scenario = scenario.to_string();
    std::thread::spawn(move || match scenario.as_str() {
        "ingest" => checked(seed, with_plan, || ingest(determinism_options()), || ingest(Options::default())),
        "cluster" => checked(
            seed,
            with_plan,
            || scenarios::cluster::run(determinism_options(), Shape::MIXED),
            || scenarios::cluster::run(Options::default(), Shape::MIXED),
        ),
        "cluster3" => checked(
            seed,
            with_plan,
            || scenarios::cluster::run(determinism_options(), Shape::THREE),
            || scenarios::cluster::run(Options::default(), Shape::THREE),
        ),
        "cluster5" => checked(
            seed,
            with_plan,
            || scenarios::cluster::run(determinism_options(), Shape::FIVE),
            || scenarios::cluster::run(Options::default(), Shape::FIVE),
        ),
        "pipeline" => checked(
            seed,
            with_plan,
            || scenarios::pipeline::run(determinism_options()),
            || scenarios::pipeline::run(Options::default()),
        ),
        other => panic!("unknown scenario `{other}`"),
    })
    .join()
    .map_err(|p| panic_message(p.as_ref()))
}

/// What a sweep found.
#[derive(Debug)]
pub struct SweepReport {
    pub scenario: String,
    pub seeds: u64,
    pub failures: Vec<SeedResult>,
    pub wall: Duration,
    /// Sum of per-seed wall time (≈ CPU time); `busy / wall` is the parallel speed-up.
    pub busy: Duration,
    /// Sum of the simulated time the seeds covered.
    pub simulated: Duration,
    /// What the seeds' simulated disks saw, summed (power failures, torn writes…).
    pub disk: eventstreamcore::rt::disk::SimDiskStats,
    /// What the lossy peer links did, summed (drops, duplicates, delays, resets, stalls, and the
    /// transport's write timeouts and full queues).
    pub links: eventstreamcore::transport::lossy::LinkStats,
    /// Snapshot installs and the pull of their topic data, summed over the seeds.
    pub installs: eventstreamcore::node::CatchUpCounters,
}

impl SweepReport {
    /// Seeds per wall-clock second.
    pub fn seeds_per_sec(&self) -> f64 {
        self.seeds as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// One summary line.
    pub fn summary(&self) -> String {
        format!(
            "scenario {}: {} seeds in {:.1}s ({:.1} seeds/s, {:.1} s busy; {:.0} simulated s, {:.0} simulated s per wall s), {} failed",
            self.scenario,
            self.seeds,
            self.wall.as_secs_f64(),
            self.seeds_per_sec(),
            self.busy.as_secs_f64(),
            self.simulated.as_secs_f64(),
            self.simulated.as_secs_f64() / self.wall.as_secs_f64().max(1e-9),
            self.failures.len()
        ) + &if self.disk.power_failures > 0 {
            format!(
                "; disks: {} power failures, {} torn writes, {} repaired tails, {} crashes inside disk operations, {} injected failures",
                self.disk.power_failures,
                self.disk.torn_writes,
                self.disk.repaired_tails,
                self.disk.crashes_in_ops,
                self.disk.injected_failures
            )
        } else {
            String::new()
        } + &if self.disk.dropped_on_fsync_error > 0 {
            format!("; {} unsynced bytes dropped by failed fsyncs", self.disk.dropped_on_fsync_error)
        } else {
            String::new()
        } + &if self.disk.syncs > 0 {
            format!(
                "; {} disk writes, {} fsyncs ({:.0} bytes appended per fsync), {:.0} s simulated disk time, {} latency spikes",
                self.disk.writes,
                self.disk.syncs,
                self.disk.appended_bytes as f64 / self.disk.syncs as f64,
                self.disk.busy_us as f64 / 1e6,
                self.disk.latency_spikes
            )
        } else {
            String::new()
        } + &if self.disk.rot_injected > 0 {
            format!(
                "; bit rot: {} injected ({} in topic segments, {} of them detected, {} found by the scrub before the reboot; {} in the newest WAL segment, {} of them detected), {} detected (starts refused), {} members wiped and re-added, {} cut off as torn tails",
                self.disk.rot_injected,
                self.disk.rot_in_topic_segments,
                self.disk.topic_rot_detected,
                self.disk.topic_rot_found_by_scrub,
                self.disk.rot_in_newest_wal_segment,
                self.disk.newest_wal_rot_detected,
                self.disk.rot_detected,
                self.disk.wiped_for_rot,
                self.disk.rot_cut_off
            )
        } else {
            String::new()
        } + &if self.installs.installs > 0 {
            format!("; {}", crate::scenarios::cluster::describe_installs(&self.installs))
        } else {
            String::new()
        } + &if self.links.windows > 0 {
            format!("; {}", crate::scenarios::cluster::describe_links(&self.links))
        } else {
            String::new()
        }
    }
}

/// Runs `seeds` of `scenario` on `jobs` threads. `on_done` is called after each seed (progress).
pub fn sweep(
    scenario: &str,
    seeds: Range<u64>,
    jobs: usize,
    opts: impl Fn() -> Options + Sync,
    on_done: impl Fn(&SeedResult) + Sync,
) -> SweepReport {
    sweep_until(scenario, seeds, jobs, opts, on_done, &AtomicBool::new(false))
}

/// [`sweep`] that starts no new seed once `stop` is set (Ctrl-C): the seeds already running
/// finish, and the report covers the seeds that ran (`seeds` counts them).
pub fn sweep_until(
    scenario: &str,
    seeds: Range<u64>,
    jobs: usize,
    opts: impl Fn() -> Options + Sync,
    on_done: impl Fn(&SeedResult) + Sync,
    stop: &AtomicBool,
) -> SweepReport {
    let ran = AtomicU64::new(0);
    let started = Instant::now();
    let next = AtomicU64::new(seeds.start);
    let failures = Mutex::new(Vec::new());
    let busy_ns = AtomicU64::new(0);
    let sim_ns = AtomicU64::new(0);
    let disk = Mutex::new(eventstreamcore::rt::disk::SimDiskStats::default());
    let links = Mutex::new(eventstreamcore::transport::lossy::LinkStats::default());
    let installs = Mutex::new(eventstreamcore::node::CatchUpCounters::default());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| {
                loop {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    if seed >= seeds.end {
                        break;
                    }
                    let r = run_seed(scenario, seed, opts());
                    ran.fetch_add(1, Ordering::Relaxed);
                    busy_ns.fetch_add(r.wall.as_nanos() as u64, Ordering::Relaxed);
                    sim_ns.fetch_add(r.simulated.as_nanos() as u64, Ordering::Relaxed);
                    on_done(&r);
                    if let Ok(report) = &r.outcome {
                        disk.lock().unwrap_or_else(|e| e.into_inner()).add(&report.disk);
                        links.lock().unwrap_or_else(|e| e.into_inner()).add(&report.links);
                        installs.lock().unwrap_or_else(|e| e.into_inner()).add(&report.installs);
                    }
                    if r.failed() {
                        failures.lock().unwrap_or_else(|e| e.into_inner()).push(r);
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    failures.sort_by_key(|r| r.seed);
    SweepReport {
        scenario: scenario.to_string(),
        seeds: ran.load(Ordering::Relaxed),
        failures,
        wall: started.elapsed(),
        busy: Duration::from_nanos(busy_ns.load(Ordering::Relaxed)),
        simulated: Duration::from_nanos(sim_ns.load(Ordering::Relaxed)),
        disk: disk.into_inner().unwrap_or_else(|e| e.into_inner()),
        links: links.into_inner().unwrap_or_else(|e| e.into_inner()),
        installs: installs.into_inner().unwrap_or_else(|e| e.into_inner()),
    }
}

/// A number from the environment, or `default` when unset or not a number.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The suite's sweep of one scenario: `count_var` seeds (default `default_count`) from
/// `ESC_SIM_SEED_BASE` on all cores; prints the summary and every failure report, and panics if
/// any seed failed.
pub fn sweep_from_env(scenario: &str, count_var: &str, default_count: u64) {
    let n = env_u64(count_var, default_count);
    let base = env_u64("ESC_SIM_SEED_BASE", 0);
    sweep_and_judge(scenario, base..base + n, "the fixed seeds".to_string());
}

/// The suite's exploring sweep of one scenario: `count_var` seeds (default `default_count`) from
/// [`explore_base`], a range that changes with every commit and every day, so CI keeps visiting
/// seeds it never ran. The range and how to run it again are printed (and repeated in a failure).
pub fn explore_from_env(scenario: &str, count_var: &str, default_count: u64) {
    let n = env_u64(count_var, default_count);
    let (base, from) = explore_base();
    let what = format!(
        "exploring seeds {base}..{} ({from}); run them again with ESC_SIM_EXPLORE_BASE={base}",
        base + n
    );
    eprintln!("{scenario}: {what}");
    sweep_and_judge(scenario, base..base + n, what);
}

fn sweep_and_judge(scenario: &str, seeds: Range<u64>, what: String) {
    let n = seeds.end - seeds.start;
    let report = sweep(scenario, seeds, default_jobs(), default_options, |_| {});
    println!("{}", report.summary());
    for f in &report.failures {
        eprintln!("{}", f.failure_report());
    }
    assert!(
        report.failures.is_empty(),
        "{scenario}, {what}: {} of {n} seeds failed (reports above; each names its replay command)",
        report.failures.len()
    );
}

/// Where exploring seeds start: `ESC_SIM_EXPLORE_BASE` if set, else derived from the commit
/// checked out (`git rev-parse HEAD`, if git answers) and today's UTC date — so a new commit or
/// a new day explores new seeds, while a rerun of the same commit on the same day replays the same
/// ones. Always at least [`EXPLORE_FLOOR`] (clear of the fixed ranges) and a multiple of 1,000.
/// Returns the base and where it came from.
pub fn explore_base() -> (u64, String) {
    if let Some(b) = std::env::var("ESC_SIM_EXPLORE_BASE").ok().and_then(|v| v.parse().ok()) {
        return (b, "from ESC_SIM_EXPLORE_BASE".to_string());
    }
    let day = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400);
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mut h = eventstreamcore::node::state::Fnv64::default();
    h.write(commit.as_bytes());
    h.write_u64(day);
    let base = EXPLORE_FLOOR + (h.finish() % 1_000_000_000) * 1_000;
    let short = commit.get(..10).unwrap_or("no git");
    (base, format!("derived from commit {short} and day {day} since 1970"))
}

/// Exploring seeds lie above this (the fixed sweeps and regression seeds lie below).
pub const EXPLORE_FLOOR: u64 = 1_000_000;

/// `k` seeds from the exploring range for madsim's draw-by-draw determinism check (a rotating
/// sample; the range is [`explore_base`]'s, offset so it does not repeat the sweeps' first seeds).
pub fn explore_sample(k: u64) -> Vec<u64> {
    let (base, _) = explore_base();
    (0..k).map(|i| base + 999 - i).collect()
}

/// Default parallelism: the machine's cores.
pub fn default_jobs() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// A regression seed: a seed that once failed, replayed forever.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SeedFile {
    pub scenario: String,
    pub seed: u64,
    /// One line: what it found and what fixed it.
    pub note: String,
    /// Also run it twice under madsim's determinism checker (for seeds that once replayed
    /// differently).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub determinism: bool,
    /// The plan to run instead of the one the seed draws (a `[plan]` table with the scenario's
    /// plan fields; `shrink --out` writes it). Only scenarios with a fault plan take one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<toml::Table>,
}

impl SeedFile {
    /// The `[plan]` table as the TOML text [`Options::plan`] takes.
    pub fn plan_toml(&self) -> Option<String> {
        self.plan.as_ref().map(|t| toml::to_string(t).expect("a TOML table serializes"))
    }

    /// The options that replay this seed file (its plan, if it has one; no mutant).
    pub fn options(&self) -> Options {
        Options { plan: self.plan_toml(), ..default_options() }
    }
}

/// Replays a seed file once (with its plan, if it has one); the result's replay line names the file.
pub fn replay_seed_file(path: &Path, file: &SeedFile) -> SeedResult {
    let mut r = run_seed(&file.scenario, file.seed, file.options());
    if file.plan.is_some() {
        r.plan_file = Some(path.to_path_buf());
    }
    r
}

/// Loads every `*.toml` seed file in `dir`, sorted by name.
pub fn load_seed_files(dir: &Path) -> Result<Vec<(PathBuf, SeedFile)>, String> {
    let mut out = Vec::new();
    let rd = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut paths: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if p.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()))?;
        let f: SeedFile = toml::from_str(&text).map_err(|e| format!("{}: {e}", p.display()))?;
        if scenarios::find(&f.scenario).is_none() {
            return Err(format!("{}: unknown scenario `{}`", p.display(), f.scenario));
        }
        if f.plan.is_some() {
            crate::plans::parse_seed_file_plan(&f.scenario, &text)
                .map_err(|e| format!("{}: [plan]: {e}", p.display()))?;
        }
        out.push((p, f));
    }
    Ok(out)
}

/// Shared options factory for sweeps: a fresh plan slot per seed.
pub fn default_options() -> Options {
    Options {
        mutant: None,
        bug: None,
        plan_slot: Arc::new(Mutex::new(None)),
        plan: None,
        max_drift_ppm: None,
        timeline: None,
        plan_toml_slot: Arc::new(Mutex::new(None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stopped_sweep_starts_no_new_seed_and_reports_the_seeds_that_ran() {
        let stop = AtomicBool::new(false);
        let done = AtomicU64::new(0);
        // Ctrl-C during the first seed: it finishes, no other starts.
        let report = sweep_until(
            "pipeline",
            0..50,
            1,
            default_options,
            |_| {
                done.fetch_add(1, Ordering::Relaxed);
                stop.store(true, Ordering::Relaxed);
            },
            &stop,
        );
        assert_eq!(done.load(Ordering::Relaxed), 1);
        assert_eq!(report.seeds, 1, "{}", report.summary());
        let report = sweep_until("pipeline", 0..50, 2, default_options, |_| {}, &stop);
        assert_eq!(report.seeds, 0);
    }
}
