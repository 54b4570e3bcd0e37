//! DESIGN.md's runtime-seam rules that clippy cannot check, enforced over the source tree.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // reads the source tree

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

fn sources() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for dir in ["src", "sim/src"] {
        rust_files(&root.join(dir), &mut files);
    }
    files.sort();
    files.into_iter().map(|p| (p.clone(), std::fs::read_to_string(&p).unwrap())).collect()
}

/// Rule 3: tokio seeds an unbiased `select!` from a process-global counter, so a seed found in a
/// sweep would not replay alone.
#[test]
fn every_select_is_biased() {
    let mut bad = Vec::new();
    for (path, text) in sources() {
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains("select! {") {
                let next = lines[i + 1..].iter().map(|l| l.trim()).find(|l| !l.is_empty()).unwrap_or("");
                if next != "biased;" {
                    bad.push(format!("{}:{}", path.display(), i + 1));
                }
            }
        }
    }
    assert!(bad.is_empty(), "select! without `biased;` first: {bad:?}");
}

/// Rule 4: `into_split` does not exist in the simulator; `JoinSet`, `timeout_at` and `TcpSocket`
/// neither.
#[test]
fn no_apis_the_simulator_lacks() {
    let mut bad = Vec::new();
    for (path, text) in sources() {
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for api in ["into_split(", "JoinSet", "timeout_at(", "TcpSocket"] {
                if code.contains(api) {
                    bad.push(format!("{}:{}: {api}", path.display(), i + 1));
                }
            }
        }
    }
    assert!(bad.is_empty(), "{bad:?}");
}

/// Rule 1/2: only `src/rt` names tokio or madsim directly (the sim harness and tests may).
#[test]
fn only_the_seam_names_the_runtime() {
    let mut bad = Vec::new();
    for (path, text) in sources() {
        let p = path.to_string_lossy();
        if p.contains("/src/rt/") || p.contains("/sim/src/") || p.ends_with("src/main.rs") {
            continue;
        }
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains("tokio::") || code.contains("madsim::") {
                bad.push(format!("{}:{}", path.display(), i + 1));
            }
        }
    }
    assert!(bad.is_empty(), "runtime named outside src/rt: {bad:?}");
}
