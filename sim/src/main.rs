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
    use std::process::ExitCode;
    use std::sync::Mutex;

    use clap::{Parser, Subcommand};
    use eventstreamcore_sim::runner::{self, SeedResult};
    use eventstreamcore_sim::scenarios::{self, Mutant, Options};

    #[derive(Parser, Debug)]
    #[command(name = "esc-sim", about = "Deterministic simulation of EventStreamCore: sweep, replay, list")]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(Subcommand, Debug)]
    enum Command {
        /// Run many seeds and report failures.
        Sweep {
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
            #[arg(long, value_parser = ["ack-before-store", "lying-fsync"])]
            mutant: Option<String>,
        },
        /// Run one seed with tracing output and print its report.
        Replay {
            #[arg(long, default_value = "ingest")]
            scenario: String,
            #[arg(long)]
            seed: u64,
            /// tracing filter for the replay (default: debug for eventstreamcore).
            #[arg(long, default_value = "warn,eventstreamcore=debug,eventstreamcore_sim=debug")]
            log: String,
            #[arg(long, value_parser = ["ack-before-store", "lying-fsync"])]
            mutant: Option<String>,
        },
        /// Run a seed twice under madsim's determinism checker.
        Determinism {
            #[arg(long, default_value = "ingest")]
            scenario: String,
            #[arg(long)]
            seed: u64,
        },
        /// List the scenarios.
        List,
    }

    fn options(mutant: &Option<String>) -> Options {
        let mut o = runner::default_options();
        o.mutant = mutant.as_deref().map(|m| match m {
            "lying-fsync" => Mutant::LyingFsync,
            _ => Mutant::AckBeforeStore,
        });
        o
    }

    fn check_scenario(name: &str) -> Result<(), ExitCode> {
        if scenarios::find(name).is_none() {
            eprintln!("unknown scenario `{name}`; `esc-sim list` shows them");
            return Err(ExitCode::from(2));
        }
        Ok(())
    }

    pub fn main() -> ExitCode {
        let cli = Cli::parse();
        match cli.command {
            Command::List => {
                for s in scenarios::SCENARIOS {
                    println!("{:<10} {}", s.name, s.about);
                }
                ExitCode::SUCCESS
            }
            Command::Sweep { scenario, seeds, start, jobs, mutant } => {
                if let Err(c) = check_scenario(&scenario) {
                    return c;
                }
                let jobs = jobs.unwrap_or_else(runner::default_jobs);
                let bar = indicatif::ProgressBar::new(seeds);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{elapsed_precise} [{bar:40}] {pos}/{len} seeds ({per_sec}) {msg}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                let failed = Mutex::new(0u64);
                let report = runner::sweep(
                    &scenario,
                    start..start + seeds,
                    jobs,
                    || options(&mutant),
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
                        bar.inc(1);
                    },
                );
                bar.finish();
                println!("{}", report.summary());
                if report.failures.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    println!(
                        "failing seeds: {:?}",
                        report.failures.iter().map(|r| r.seed).collect::<Vec<_>>()
                    );
                    ExitCode::FAILURE
                }
            }
            Command::Replay { scenario, seed, log, mutant } => {
                if let Err(c) = check_scenario(&scenario) {
                    return c;
                }
                let filter = std::env::var("RUST_LOG").unwrap_or(log);
                let _ = tracing_subscriber::fmt()
                    .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                    .try_init();
                let r = runner::run_seed(&scenario, seed, options(&mutant));
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
}
