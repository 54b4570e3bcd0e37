//! The `esc-sim` CLI as a user runs it (`cargo sim -- …` runs this binary): replay with a
//! timeline, plan → edit → replay, shrink a failing seed into a seed file and replay that file,
//! and clear errors for bad arguments.
#![cfg(madsim)]
#![allow(clippy::disallowed_methods)] // the test drives a real process and reads its files

use std::path::PathBuf;
use std::process::{Command, Output};

fn esc_sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_esc-sim"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .expect("run esc-sim")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("esc-sim-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

#[test]
fn replay_draws_a_timeline() {
    let dir = temp_dir("timeline");
    let svg = dir.join("run.svg");
    let o = esc_sim(&[
        "replay",
        "--scenario",
        "cluster",
        "--seed",
        "5",
        "--log",
        "off",
        "--timeline",
        svg.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("seed 5 of `cluster` passed"), "{}", text(&o));
    let picture = std::fs::read_to_string(&svg).expect("the SVG was written");
    assert!(picture.starts_with("<svg") || picture.starts_with("<?xml"), "{}", &picture[..80]);
    assert!(picture.contains("cluster seed 5") && picture.contains("leader, term"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_plan_can_be_printed_edited_and_replayed() {
    let dir = temp_dir("plan");
    let o = esc_sim(&["plan", "--scenario", "cluster", "--seed", "8", "--note", "by hand"]);
    assert!(o.status.success(), "{}", text(&o));
    let file = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(file.contains("seed = 8") && file.contains("[plan]"), "{file}");
    // Drop every fault: the seed now runs a quiet cluster.
    let quiet: String = file.split("[[plan.faults]]").next().expect("the plan part").to_string();
    let path = dir.join("quiet.toml");
    std::fs::write(&path, &quiet).unwrap();
    let o = esc_sim(&["replay", "--plan", path.to_str().unwrap(), "--log", "off"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("faults: heal at end of window"), "ran the edited plan: {}", text(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failing_seed_shrinks_into_a_seed_file_that_replays_the_failure() {
    let dir = temp_dir("shrink");
    // Find a seed the lying-fsync mutant breaks.
    let seed = (0..60)
        .find(|s| {
            !esc_sim(&[
                "replay",
                "--scenario",
                "cluster",
                "--seed",
                &s.to_string(),
                "--log",
                "off",
                "--mutant",
                "lying-fsync",
            ])
            .status
            .success()
        })
        .expect("the mutant fails some seed");
    let out = dir.join(format!("cluster-{seed}.toml"));
    let args = ["shrink", "--scenario", "cluster", "--seed", &seed.to_string(), "--mutant", "lying-fsync"];
    let o = esc_sim(&[&args[..], &["--max-runs", "40", "--out", out.to_str().unwrap()]].concat());
    assert!(o.status.success(), "{}", text(&o));
    assert!(out.exists(), "the seed file was written: {}", text(&o));
    // The shrunk plan still fails with the mutant, and passes against the real code.
    let plan = out.to_str().unwrap();
    let o = esc_sim(&["replay", "--plan", plan, "--mutant", "lying-fsync", "--log", "off"]);
    assert!(!o.status.success(), "the shrunk plan must still fail: {}", text(&o));
    assert!(text(&o).contains(&format!("--plan {plan}")), "the replay line names the file: {}", text(&o));
    let o = esc_sim(&["replay", "--plan", plan, "--log", "off"]);
    assert!(o.status.success(), "{}", text(&o));
    // --out never overwrites.
    let o = esc_sim(&[&args[..], &["--max-runs", "2", "--out", plan]].concat());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_arguments_get_clear_errors() {
    let o = esc_sim(&["sweep", "--scenario", "nope", "--seeds", "1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("unknown scenario `nope`"), "{}", text(&o));
    let o = esc_sim(&["shrink", "--scenario", "ingest", "--seed", "1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("cluster"), "{}", text(&o));
    let o = esc_sim(&["sweep", "--scenario", "cluster", "--max-drift-pct", "90"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("a percentage from 0 to 50"), "{}", text(&o));
    let o = esc_sim(&["replay", "--plan", "/nonexistent/plan.toml"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn a_sweep_prints_its_summary_and_fails_on_a_failure() {
    let o = esc_sim(&["sweep", "--scenario", "cluster", "--seeds", "20", "--start", "0"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("scenario cluster: 20 seeds in"), "{}", text(&o));
    assert!(text(&o).contains("0 failed"), "{}", text(&o));
    let o = esc_sim(&["sweep", "--scenario", "cluster", "--seeds", "60", "--mutant", "stale-reads"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("failing seeds:"), "{}", text(&o));
    assert!(text(&o).contains("replay:   cargo sim -- replay --scenario cluster --seed"), "{}", text(&o));
}

/// `--digests`: every seed's digest, in seed order, the same whatever the worker threads.
#[test]
fn a_sweep_prints_the_same_digests_on_any_number_of_threads() {
    let digests = |jobs: &str| {
        let o = esc_sim(&["sweep", "--scenario", "cluster", "--seeds", "6", "--jobs", jobs, "--digests"]);
        assert!(o.status.success(), "{}", text(&o));
        let lines: Vec<String> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with("digest "))
            .map(Into::into)
            .collect();
        lines
    };
    let one = digests("1");
    assert_eq!(one.len(), 6, "{one:?}");
    for (seed, line) in one.iter().enumerate() {
        let [_, s, hex] = line.split(' ').collect::<Vec<_>>()[..] else { panic!("{line}") };
        assert_eq!(s, seed.to_string(), "{line}");
        assert!(hex.len() == 16 && u64::from_str_radix(hex, 16).is_ok(), "{line}");
    }
    assert_eq!(one, digests("3"));
}

/// A failing replay's timeline marks the checker that failed (README: seed 1234 with stale reads).
#[test]
fn a_failing_replays_timeline_marks_the_checker() {
    let dir = temp_dir("failed-timeline");
    let svg = dir.join("run.svg");
    let o = esc_sim(&[
        "replay",
        "--scenario",
        "cluster",
        "--seed",
        "1234",
        "--mutant",
        "stale-reads",
        "--log",
        "off",
        "--timeline",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let picture = std::fs::read_to_string(&svg).expect("the SVG was written");
    assert!(picture.contains(r#"<g class="failure">"#), "a red line where the checker failed");
    assert!(picture.contains(">✗ linearizable_reads"), "named after the checker");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A seed file whose `[plan]` a person edited: `faults` is the last key, written by hand.
fn hand_edited_seed_file(faults: &str) -> String {
    let o = esc_sim(&["plan", "--scenario", "cluster", "--seed", "8", "--note", "by hand"]);
    assert!(o.status.success(), "{}", text(&o));
    let file = String::from_utf8_lossy(&o.stdout).to_string();
    let head = file.split("[[plan.faults]]").next().expect("the plan part").to_string();
    format!("{head}faults = [\n{faults}]\n")
}

#[test]
fn a_hand_edited_plan_with_faults_out_of_time_order_is_refused() {
    let dir = temp_dir("order");
    let file = hand_edited_seed_file(
        "    { at_ms = 5000, kind = \"crash\", node = 1, down_ms = 800 },\n    { at_ms = 2000, kind = \"isolate\", node = 0 },\n",
    );
    let path = dir.join("order.toml");
    std::fs::write(&path, &file).unwrap();
    let o = esc_sim(&["replay", "--plan", path.to_str().unwrap(), "--log", "off"]);
    assert_eq!(o.status.code(), Some(2), "must refuse, not run the isolate late: {}", text(&o));
    assert!(text(&o).contains("fault 2 (isolate at_ms = 2000) is listed after fault 1"), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_typo_in_a_plan_is_reported_at_its_line() {
    let dir = temp_dir("typo");
    let file = hand_edited_seed_file("    { at_ms = 2000, kind = \"isolate\", nod = 0 },\n");
    let line = file.lines().position(|l| l.contains("nod = 0")).expect("the typo") + 1;
    let path = dir.join("typo.toml");
    std::fs::write(&path, &file).unwrap();
    let o = esc_sim(&["replay", "--plan", path.to_str().unwrap(), "--log", "off"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains(&format!("line {line}")), "line {line}: {}", text(&o));
    assert!(text(&o).contains("nod = 0"), "{}", text(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_mutant_that_does_not_apply_to_the_scenario_is_refused() {
    let o = esc_sim(&["sweep", "--scenario", "ingest", "--seeds", "3", "--mutant", "stale-reads"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--mutant stale-reads does not apply to scenario `ingest`"), "{}", text(&o));
    let o = esc_sim(&["replay", "--scenario", "cluster", "--seed", "1", "--mutant", "ack-before-store"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let o = esc_sim(&["shrink", "--scenario", "cluster", "--seed", "1", "--mutant", "ack-before-store"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn replay_logs_every_fault_injection() {
    let o = esc_sim(&["plan", "--scenario", "cluster", "--seed", "8"]);
    let plan = String::from_utf8_lossy(&o.stdout).to_string();
    let faults = plan.matches("[[plan.faults]]").count();
    assert!(faults > 0, "seed 8 draws faults: {plan}");
    assert!(plan.contains("node = 0 is n1"), "the plan says how members are numbered: {plan}");
    let o = esc_sim(&[
        "replay",
        "--scenario",
        "cluster",
        "--seed",
        "8",
        "--log",
        "warn,eventstreamcore_sim=info",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    // One line per planned fault (faults that act in steps, like cutting the leader off, log
    // their steps besides, without the plan's numbering).
    let planned =
        t.lines().filter(|l| l.contains("fault injected: ") && l.contains("(plan numbering")).count();
    assert_eq!(planned, faults, "{t}");
    assert!(t.contains("kind=") && t.contains("members="), "{t}");
}

#[test]
fn ctrl_c_stops_a_sweep_with_a_partial_summary() {
    let child = Command::new(env!("CARGO_BIN_EXE_esc-sim"))
        .args(["sweep", "--scenario", "pipeline", "--seeds", "100000", "--jobs", "1"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run esc-sim");
    std::thread::sleep(std::time::Duration::from_secs(3));
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill");
    assert!(kill.success());
    let o = child.wait_with_output().expect("the sweep stops");
    let t = text(&o);
    assert!(t.contains("interrupted (Ctrl-C): "), "{t}");
    assert!(t.contains("of 100000 seeds ran; partial summary:"), "{t}");
    assert!(t.contains("scenario pipeline: "), "{t}");
}

#[test]
fn the_readmes_shrink_example_fails_so_it_has_something_to_shrink() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let line = readme.lines().find(|l| l.starts_with("cargo sim -- shrink ")).expect("a shrink example");
    let words: Vec<&str> = line.split('#').next().unwrap().split_whitespace().collect();
    let arg = |name: &str| words.iter().position(|w| *w == name).map(|i| words[i + 1]);
    let seed = arg("--seed").expect("the example names a seed");
    let mut args = vec!["replay", "--scenario", arg("--scenario").unwrap_or("cluster"), "--seed", seed];
    args.extend(["--log", "off"]);
    if let Some(m) = arg("--mutant") {
        args.extend(["--mutant", m]);
    }
    let o = esc_sim(&args);
    assert_eq!(o.status.code(), Some(1), "`{line}` must name a failing seed: {}", text(&o));
    assert!(text(&o).contains("members:  0-based in the plan: node 0 is n1"), "{}", text(&o));
}
