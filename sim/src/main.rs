//! `esc-sim`: sweep, replay and inspect simulation seeds. Run it through `cargo sim -- …`, which
//! builds it with `--cfg madsim`.

#[cfg(not(madsim))]
fn main() {
    eprintln!("esc-sim runs inside the simulator: use `cargo sim -- <command>` (it adds --cfg madsim)");
    std::process::exit(2);
}

#[cfg(madsim)]
fn main() -> std::process::ExitCode {
    sim_main::main()
}

#[cfg(madsim)]
mod sim_main {
    use std::path::{Path, PathBuf};
    use std::process::ExitCode;
    use std::sync::Mutex;

    use clap::{Args, Parser, Subcommand};
    use eventstreamcore::zoo::Bug;
    use eventstreamcore_sim::runner::{self, SeedResult};
    use eventstreamcore_sim::scenarios::{self, Mutant, Options};
    use eventstreamcore_sim::shrink;
    use eventstreamcore_sim::timeline::Recorder;

    #[derive(Parser, Debug)]
    #[command(
        name = "esc-sim",
        about = "Deterministic simulation of EventStreamCore: sweep, replay, shrink, list"
    )]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    /// `esc-sim sweep`'s arguments.
    #[derive(Args, Debug)]
    struct SweepArgs {
        #[arg(long, default_value = "ingest")]
        scenario: String,
        /// How many seeds.
        #[arg(long, default_value_t = 1000)]
        seeds: u64,
        /// First seed.
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// Worker threads (default: all cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// Deliberately break the server (proves the checkers catch it).
        #[arg(long, value_parser = ["ack-before-store", "lying-fsync", "stale-reads"])]
        mutant: Option<String>,
        /// Switch on one planted bug of the zoo (`esc-sim zoo --list` names them).
        #[arg(long, value_parser = bug_name)]
        bug: Option<Bug>,
        /// Largest clock drift a member gets, in percent (default 5; the cluster scenarios).
        #[arg(long, value_parser = drift_pct)]
        max_drift_pct: Option<f64>,
        /// Also print every seed's run digest (`digest SEED HEX`, in seed order; a failed seed
        /// prints `failed`): two builds, or two sweeps with other `--jobs`, must print the same lines.
        #[arg(long)]
        digests: bool,
    }

    #[derive(Subcommand, Debug)]
    enum Command {
        /// Run many seeds and report failures.
        Sweep(SweepArgs),
        /// Measure the testbed: a clean sweep (must not fail), then the same seeds with each
        /// planted bug switched on in turn; prints a table of what was caught, how soon, by what.
        Zoo {
            /// Seeds per bug (and for the clean run).
            #[arg(long, default_value_t = 100)]
            seeds: u64,
            /// First seed.
            #[arg(long, default_value_t = 0)]
            start: u64,
            /// Worker threads (default: all cores).
            #[arg(long)]
            jobs: Option<usize>,
            /// Only these bugs (repeatable; default: all).
            #[arg(long, value_parser = bug_name)]
            bug: Vec<Bug>,
            /// Skip the clean run.
            #[arg(long)]
            no_clean: bool,
            /// List the planted bugs and exit.
            #[arg(long)]
            list: bool,
        },
        /// Run one seed with tracing output and print its report.
        Replay {
            /// Default: the `--plan` seed file's scenario, else `ingest`.
            #[arg(long)]
            scenario: Option<String>,
            /// Default: the `--plan` seed file's seed.
            #[arg(long)]
            seed: Option<u64>,
            /// Run this plan instead of the seed's own: a seed file with a `[plan]` (as `shrink
            /// --out` writes) or a bare plan TOML.
            #[arg(long)]
            plan: Option<PathBuf>,
            /// tracing filter for the replay (default: debug for eventstreamcore).
            #[arg(long, default_value = "warn,eventstreamcore=debug,eventstreamcore_sim=debug")]
            log: String,
            #[arg(long, value_parser = ["ack-before-store", "lying-fsync", "stale-reads"])]
            mutant: Option<String>,
            /// Switch on one planted bug of the zoo.
            #[arg(long, value_parser = bug_name)]
            bug: Option<Bug>,
            /// Draw the run as an SVG here: a row per member over simulated time with role and
            /// term, partitions, crashes, pauses, disk faults, clock steps and commits.
            #[arg(long, value_name = "OUT.svg")]
            timeline: Option<PathBuf>,
            /// Largest clock drift a member gets, in percent (default 5; the cluster scenarios).
            #[arg(long, value_parser = drift_pct)]
            max_drift_pct: Option<f64>,
        },
        /// Minimize the fault plan of a failing seed: print the smallest plan found that still
        /// fails, as a ready-to-save seed file.
        Shrink {
            #[arg(long, default_value = "cluster")]
            scenario: String,
            #[arg(long)]
            seed: u64,
            #[arg(long, value_parser = ["ack-before-store", "lying-fsync", "stale-reads"])]
            mutant: Option<String>,
            /// Simulator runs to spend at most (the first, of the seed's own plan, included).
            #[arg(long, default_value_t = shrink::DEFAULT_MAX_RUNS)]
            max_runs: usize,
            /// Also write the seed file here (refuses to overwrite), e.g. seeds/cluster-<seed>.toml.
            #[arg(long)]
            out: Option<PathBuf>,
        },
        /// Run a seed twice under madsim's determinism checker.
        Determinism {
            #[arg(long, default_value = "ingest")]
            scenario: String,
            #[arg(long)]
            seed: u64,
        },
        /// Print the fault plan a seed draws, as a seed file with a `[plan]` (edit it and replay it
        /// with `replay --plan FILE`, or keep it in `seeds/` once it found a bug).
        Plan {
            #[arg(long, default_value = "cluster")]
            scenario: String,
            #[arg(long)]
            seed: u64,
            /// The seed file's note.
            #[arg(long, default_value = "edit this note: what the seed found and what fixed it")]
            note: String,
        },
        /// List the scenarios.
        List,
    }

    fn options(mutant: &Option<String>, max_drift_pct: Option<f64>) -> Options {
        let mut o = runner::default_options();
        o.mutant = mutant.as_deref().and_then(Mutant::from_name);
        o.max_drift_ppm = max_drift_pct.map(|p| (p * 10_000.0).round() as i64);
        o
    }

    fn bug_name(s: &str) -> Result<Bug, String> {
        Bug::from_name(s).ok_or_else(|| {
            let names: Vec<&str> = Bug::ALL.iter().map(|b| b.name()).collect();
            format!("`{s}`: not a planted bug; one of {}", names.join(", "))
        })
    }

    fn drift_pct(s: &str) -> Result<f64, String> {
        match s.parse::<f64>() {
            Ok(p) if (0.0..=50.0).contains(&p) => Ok(p),
            _ => Err(format!("`{s}`: a percentage from 0 to 50")),
        }
    }

    /// What `replay --plan FILE` read: the seed file's scenario and seed (if it is one) and the
    /// plan as TOML.
    struct PlanFile {
        scenario: Option<String>,
        seed: Option<u64>,
        plan: String,
    }

    #[allow(clippy::disallowed_methods)] // reads a file the user named, outside the simulation
    fn read_plan_file(path: &Path) -> Result<PlanFile, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if !table.contains_key("scenario") {
            return Ok(PlanFile { scenario: None, seed: None, plan: text });
        }
        let f: runner::SeedFile = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let plan =
            f.plan_toml().ok_or_else(|| format!("{}: a seed file without a [plan]", path.display()))?;
        // Check the plan in the file's own text, so an error names the line the user edited.
        eventstreamcore_sim::plans::parse_seed_file_plan(&f.scenario, &text)
            .map_err(|e| format!("{}: [plan]: {e}", path.display()))?;
        Ok(PlanFile { scenario: Some(f.scenario), seed: Some(f.seed), plan })
    }

    fn check_scenario(name: &str) -> Result<(), ExitCode> {
        if scenarios::find(name).is_none() {
            eprintln!("unknown scenario `{name}`; `esc-sim list` shows them");
            return Err(ExitCode::from(2));
        }
        Ok(())
    }

    /// `esc-sim plan`: prints the fault plan `seed` of `scenario` draws, as a seed file with
    /// `note`.
    fn print_plan(scenario: String, seed: u64, note: &str) -> ExitCode {
        if let Err(c) = check_scenario(&scenario) {
            return c;
        }
        if !shrink::shrinkable(&scenario) {
            eprintln!("{}", shrink::ShrinkError::NotShrinkable(scenario));
            return ExitCode::from(2);
        }
        let opts = runner::default_options();
        let slot = opts.plan_toml_slot.clone();
        let r = runner::run_seed(&scenario, seed, opts);
        let drawn = slot.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match drawn.as_deref().map(|t| shrink::parse_plan(&scenario, t)) {
            Some(Ok(plan)) => {
                print!("{}", shrink::seed_file_text(&scenario, seed, note, &plan));
                eprintln!("(the seed {})", if r.failed() { "fails" } else { "passes" });
                ExitCode::SUCCESS
            }
            _ => {
                eprintln!("seed {seed} of `{scenario}` drew no plan");
                ExitCode::FAILURE
            }
        }
    }

    /// A flag set by Ctrl-C (SIGINT): the sweep then starts no new seed, lets the running ones
    /// finish and prints a partial summary; a second Ctrl-C quits at once.
    /// Without the handler (registration failed) Ctrl-C kills the process as before.
    /// `esc-sim sweep`: the seeds in parallel behind a progress bar (failures and ETA), each
    /// failure's report as it comes, then the summary (partial after Ctrl-C).
    fn sweep_command(args: SweepArgs) -> ExitCode {
        let SweepArgs { scenario, seeds, start, jobs, mutant, bug, max_drift_pct, digests } = args;
        if let Err(c) = check_scenario(&scenario).and_then(|()| check_mutant(&scenario, &mutant)) {
            return c;
        }
        let jobs = jobs.unwrap_or_else(runner::default_jobs);
        let bar = progress_bar(seeds);
        let failed = Mutex::new(0u64);
        let all_digests = Mutex::new(Vec::new());
        let stop = ctrl_c_flag();
        let report = runner::sweep_until(
            &scenario,
            start..start + seeds,
            jobs,
            || Options { bug, ..options(&mutant, max_drift_pct) },
            |r: &SeedResult| {
                if r.failed() {
                    let mut f = failed.lock().unwrap_or_else(|e| e.into_inner());
                    *f += 1;
                    bar.set_message(format!("{} failed", *f));
                    if bar.is_hidden() {
                        eprintln!("{}", r.failure_report());
                    } else {
                        bar.println(r.failure_report());
                    }
                }
                if digests {
                    all_digests.lock().unwrap_or_else(|e| e.into_inner()).push((r.seed, r.digest()));
                }
                bar.inc(1);
            },
            stop,
        );
        bar.finish();
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            println!("interrupted (Ctrl-C): {} of {seeds} seeds ran; partial summary:", report.seeds);
        }
        println!("{}", report.summary());
        if digests {
            let mut all = all_digests.into_inner().unwrap_or_else(|e| e.into_inner());
            all.sort_unstable();
            for (seed, digest) in all {
                println!("digest {seed} {}", digest.map_or("failed".to_string(), |d| format!("{d:016x}")));
            }
        }
        if report.failures.is_empty() {
            ExitCode::SUCCESS
        } else {
            println!("failing seeds: {:?}", report.failures.iter().map(|r| r.seed).collect::<Vec<_>>());
            ExitCode::FAILURE
        }
    }

    /// The sweep's progress bar: elapsed, seeds done, rate, ETA and (as its message) failures.
    fn progress_bar(seeds: u64) -> indicatif::ProgressBar {
        let bar = indicatif::ProgressBar::new(seeds);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} seeds ({per_sec}, ETA {eta}) {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_message("0 failed");
        bar
    }

    fn ctrl_c_flag() -> &'static std::sync::atomic::AtomicBool {
        static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        fn on_sigint() {
            // A second Ctrl-C quits at once (exit code 130, as a shell reports SIGINT).
            if STOP.swap(true, std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: _exit is async-signal-safe.
                unsafe { libc::_exit(130) }
            }
        }
        // SAFETY: the action only swaps an atomic and may call _exit, both async-signal-safe.
        let _ = unsafe { signal_hook_registry::register(libc::SIGINT, on_sigint) };
        &STOP
    }

    /// Refuses `--mutant` for a scenario it does nothing in.
    fn check_mutant(scenario: &str, mutant: &Option<String>) -> Result<(), ExitCode> {
        let m = mutant.as_deref().and_then(Mutant::from_name);
        eventstreamcore_sim::plans::check_mutant(scenario, m).map_err(|e| {
            eprintln!("{e}");
            ExitCode::from(2)
        })
    }

    pub fn main() -> ExitCode {
        let cli = Cli::parse();
        match cli.command {
            Command::Plan { scenario, seed, note } => print_plan(scenario, seed, &note),
            Command::List => {
                for s in scenarios::SCENARIOS {
                    println!("{:<10} {}", s.name, s.about);
                }
                ExitCode::SUCCESS
            }
            Command::Zoo { seeds, start, jobs, bug, no_clean, list } => {
                if list {
                    for b in Bug::ALL {
                        println!(
                            "{:<32} {:<10} {}",
                            b.name(),
                            b.area(),
                            eventstreamcore_sim::zoo::home_scenario(*b)
                        );
                    }
                    return ExitCode::SUCCESS;
                }
                zoo_command(seeds, start, jobs.unwrap_or_else(runner::default_jobs), bug, no_clean)
            }
            Command::Sweep(args) => sweep_command(args),
            Command::Replay { scenario, seed, plan, log, mutant, bug, timeline, max_drift_pct } => {
                let given = match plan.as_deref().map(read_plan_file).transpose() {
                    Ok(g) => g,
                    Err(e) => {
                        eprintln!("--plan: {e}");
                        return ExitCode::from(2);
                    }
                };
                let scenario = scenario
                    .or_else(|| given.as_ref().and_then(|g| g.scenario.clone()))
                    .unwrap_or_else(|| "ingest".into());
                if let Err(c) = check_scenario(&scenario).and_then(|()| check_mutant(&scenario, &mutant)) {
                    return c;
                }
                let Some(seed) = seed.or_else(|| given.as_ref().and_then(|g| g.seed)) else {
                    eprintln!("--seed is required (unless --plan names a seed file)");
                    return ExitCode::from(2);
                };
                if let Some(g) = &given
                    && let Err(e) = shrink::parse_plan(&scenario, &g.plan)
                {
                    eprintln!("--plan: {e}");
                    return ExitCode::from(2);
                }
                let mut opts = options(&mutant, max_drift_pct);
                opts.bug = bug;
                opts.plan = given.map(|g| g.plan);
                let filter = std::env::var("RUST_LOG").unwrap_or(log);
                let _ = tracing_subscriber::fmt()
                    .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .try_init();
                let recorder =
                    timeline.as_ref().map(|_| Recorder::new(format!("{scenario} seed {seed}"), vec![]));
                opts.timeline = recorder.clone();
                let mut r = runner::run_seed(&scenario, seed, opts);
                r.plan_file = plan;
                if let (Some(path), Some(rec)) = (&timeline, &recorder) {
                    let t = rec.snapshot();
                    if t.events.is_empty() {
                        eprintln!(
                            "--timeline: the `{scenario}` scenario draws no timeline (the cluster scenarios do)"
                        );
                    } else {
                        #[allow(clippy::disallowed_methods)] // the user's output file, outside the simulation
                        let written = std::fs::write(path, t.to_svg());
                        match written {
                            Ok(()) => eprintln!("timeline: {} ({} events)", path.display(), t.events.len()),
                            Err(e) => {
                                eprintln!("--timeline: cannot write {}: {e}", path.display());
                                return ExitCode::from(2);
                            }
                        }
                    }
                }
                match &r.outcome {
                    Ok(report) => println!("{}\ndigest: {:016x}", report.summary, report.digest),
                    Err(_) => println!("plan: {}", r.plan.as_deref().unwrap_or("(not drawn)")),
                }
                if r.failed() {
                    println!("{}", r.failure_report());
                    ExitCode::FAILURE
                } else {
                    println!("seed {seed} of `{scenario}` passed ({:.2}s wall)", r.wall.as_secs_f64());
                    ExitCode::SUCCESS
                }
            }
            Command::Shrink { scenario, seed, mutant, max_runs, out } => {
                if let Err(c) = check_scenario(&scenario).and_then(|()| check_mutant(&scenario, &mutant)) {
                    return c;
                }
                if !shrink::shrinkable(&scenario) {
                    eprintln!("{}", shrink::ShrinkError::NotShrinkable(scenario));
                    return ExitCode::from(2);
                }
                if let Some(p) = &out
                    && p.exists()
                {
                    eprintln!("--out: {} exists; not overwriting it", p.display());
                    return ExitCode::from(2);
                }
                let mutant = mutant.as_deref().and_then(Mutant::from_name);
                match shrink::shrink(&scenario, seed, mutant, max_runs.max(1), |line| eprintln!("{line}")) {
                    Ok(s) => {
                        println!("{}", s.report());
                        let file = s.seed_file();
                        match &out {
                            Some(p) => {
                                if let Err(e) = shrink::write_new_file(p, &file) {
                                    eprintln!("--out: {e}");
                                    return ExitCode::from(2);
                                }
                                println!("wrote {}:\n\n{file}", p.display());
                            }
                            None => println!(
                                "seed file (save as seeds/{scenario}-{seed}.toml, or pass --out):\n\n{file}"
                            ),
                        }
                        let m = mutant.map(|m| format!(" --mutant {}", m.name())).unwrap_or_default();
                        let f = out.as_ref().map_or("<FILE>".into(), |p| p.display().to_string());
                        println!("replay: cargo sim -- replay --plan {f}{m}");
                        ExitCode::SUCCESS
                    }
                    Err(e @ shrink::ShrinkError::NotShrinkable(_)) => {
                        eprintln!("{e}");
                        ExitCode::from(2)
                    }
                    Err(e) => {
                        eprintln!("seed {seed} of `{scenario}`: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            Command::Determinism { scenario, seed } => {
                if let Err(c) = check_scenario(&scenario) {
                    return c;
                }
                match runner::check_determinism(&scenario, seed) {
                    Ok(()) => {
                        println!("seed {seed} of `{scenario}` is deterministic");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        println!("seed {seed} of `{scenario}` is NOT deterministic: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
        }
    }

    /// `esc-sim zoo`: the clean runs, then one row per bug; prints the table and the verdict.
    /// Fails if a clean run failed or a bug went uncaught.
    #[allow(clippy::disallowed_methods)] // wall time of the whole zoo, outside the simulation
    fn zoo_command(seeds: u64, start: u64, jobs: usize, bugs: Vec<Bug>, no_clean: bool) -> ExitCode {
        use eventstreamcore_sim::zoo::{self, ZooRow};
        let bugs = if bugs.is_empty() { Bug::ALL.to_vec() } else { bugs };
        let mut scenarios_used: Vec<&'static str> = bugs.iter().map(|b| zoo::home_scenario(*b)).collect();
        scenarios_used.sort_unstable();
        scenarios_used.dedup();
        let mut plan: Vec<(Option<Bug>, &'static str)> = Vec::new();
        if !no_clean {
            plan.extend(scenarios_used.iter().map(|s| (None, *s)));
        }
        plan.extend(bugs.iter().map(|b| (Some(*b), zoo::home_scenario(*b))));
        let started = std::time::Instant::now();
        let mut rows: Vec<ZooRow> = Vec::new();
        for (bug, scenario) in plan {
            let name = bug.map_or("clean", |b| b.name());
            let done = std::sync::atomic::AtomicU64::new(0);
            let row = zoo::run_row(bug, scenario, start..start + seeds, jobs, |_| {
                let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if n.is_multiple_of(50) {
                    eprintln!("  {name} ({scenario}): {n}/{seeds}");
                }
            });
            eprintln!(
                "{name} ({scenario}): {} of {seeds} seeds failed in {:.1}s{}",
                row.failing.len(),
                row.wall.as_secs_f64(),
                row.seeds_to_first(start).map_or(String::new(), |n| format!(", first after {n}")),
            );
            if row.bug.is_none()
                && let Some(r) = &row.first_report
            {
                eprintln!("{r}");
            }
            rows.push(row);
        }
        println!("{}", zoo::table(&rows, start));
        println!("{}", zoo::verdict(&rows, start));
        let total: u64 = rows.iter().map(|r| r.seeds).sum();
        let wall = started.elapsed().as_secs_f64();
        println!(
            "{total} runs in {wall:.0}s on {jobs} threads ({:.2} runs/s); seeds {start}..{}",
            total as f64 / wall.max(1e-9),
            start + seeds
        );
        println!("replay a failure: cargo sim -- replay --scenario <SCENARIO> --seed <SEED> --bug <BUG>");
        let clean_failed = rows.iter().any(|r| r.bug.is_none() && r.caught());
        let missed = rows.iter().any(|r| r.bug.is_some() && !r.caught());
        if clean_failed || missed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
    }
}
