//! The runtime-seam rules of docs/design.md that clippy cannot check, enforced over the source tree.
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

/// Functions stay short (docs/design.md, "Style"): no production function in `src/` or `sim/src/`
/// (test modules, `tests.rs` files and `src/raft/tests/` aside) is longer than [`MAX_FN_LINES`], except those listed
/// in [`LONG_FNS`], each held to its length when the rule came in. The limit only tightens: split
/// a listed function and delete (or lower) its line; never raise a number.
const MAX_FN_LINES: usize = 70;

/// (file, function, its ceiling in lines). The debt, largest first.
const LONG_FNS: &[(&str, &str, usize)] = &[
    ("sim/src/scenarios/ingest.rs", "client_main", 173),
    ("sim/src/main.rs", "main", 156),
    ("sim/src/scenarios/pipeline.rs", "check", 133),
    ("sim/src/scenarios/ingest.rs", "run", 131),
    ("src/node/cluster/mod.rs", "start", 125),
    ("src/wal/recovery.rs", "read_log", 115),
    ("src/transport/mod.rs", "serve_inbound", 76),
    ("src/main.rs", "main", 108),
    ("sim/src/shrink.rs", "stage_candidates", 108),
    ("src/raft/core.rs", "step", 84),
    ("src/ingest/conn.rs", "serve", 99),
    ("sim/src/shrink.rs", "shrink", 95),
    ("sim/src/scenarios/pipeline.rs", "run", 93),
    ("src/main.rs", "bench", 92),
    ("sim/src/scenarios/ingest.rs", "malformed", 87),
    ("src/raft/core.rs", "handle_snapshot", 84),
    ("src/transport/mod.rs", "run_peer", 82),
    ("src/raft/core.rs", "new", 82),
    ("src/wal/mod.rs", "open", 72),
    ("src/pipeline/mod.rs", "enqueue", 71),
];

/// `text` with comments and string/char literals blanked (newlines kept), so braces count true.
fn code_only(text: &str) -> Vec<u8> {
    let b = text.as_bytes();
    let mut out = b.to_vec();
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to.min(b.len())] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let mut i = 0;
    while i < b.len() {
        let rest = &b[i..];
        let ident_before = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        if rest.starts_with(b"//") {
            let end = rest.iter().position(|&c| c == b'\n').map_or(b.len(), |p| i + p);
            blank(&mut out, i, end);
            i = end;
        } else if rest.starts_with(b"/*") {
            let end = text[i + 2..].find("*/").map_or(b.len(), |p| i + 2 + p + 2);
            blank(&mut out, i, end);
            i = end;
        } else if !ident_before
            && (rest.starts_with(b"r#") || rest.starts_with(b"r\"") || rest.starts_with(b"br"))
        {
            let start = if rest[0] == b'b' { 1 } else { 0 };
            let hashes = rest[start + 1..].iter().take_while(|&&c| c == b'#').count();
            if rest.get(start + 1 + hashes) != Some(&b'"') {
                i += 1;
                continue;
            }
            let close = format!("\"{}", "#".repeat(hashes));
            let body = i + start + 2 + hashes;
            let end = text[body..].find(&close).map_or(b.len(), |p| body + p + close.len());
            blank(&mut out, i, end);
            i = end;
        } else if rest[0] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            blank(&mut out, i, j + 1);
            i = j + 1;
        } else if rest[0] == b'\'' {
            // A char literal ('x', '\n', '\u{..}'), not a lifetime.
            let len = if rest.get(1) == Some(&b'\\') {
                rest[2..].iter().position(|&c| c == b'\'').map(|p| p + 3)
            } else {
                let ch = text[i + 1..].chars().next().map_or(1, char::len_utf8);
                (rest.get(1 + ch) == Some(&b'\'')).then_some(ch + 2)
            };
            match len {
                Some(n) => {
                    blank(&mut out, i, i + n);
                    i += n;
                }
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Index of the `}` closing the `{` at `open`.
fn block_end(code: &[u8], open: usize) -> usize {
    let mut depth = 0usize;
    for (k, &c) in code.iter().enumerate().skip(open) {
        match c {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return k;
                }
            }
            _ => {}
        }
    }
    code.len()
}

/// (function name, lines) of every function with a body outside `#[cfg(test)]` modules.
fn function_lengths(text: &str) -> Vec<(String, usize)> {
    let code = code_only(text);
    let s = String::from_utf8_lossy(&code).into_owned();
    let mut skip = Vec::new();
    let mut from = 0;
    while let Some(p) = s[from..].find("#[cfg(test)]") {
        let at = from + p;
        let after = s[at + 12..].trim_start();
        let is_mod = after.starts_with("mod ")
            || after.starts_with("pub mod ")
            || after.starts_with("pub(crate) mod ");
        if let (true, Some(open)) = (is_mod, s[at..].find('{')) {
            skip.push((at, block_end(&code, at + open)));
        }
        from = at + 12;
    }
    let line_of = |pos: usize| code[..pos].iter().filter(|&&c| c == b'\n').count();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(p) = s[from..].find("fn ") {
        let at = from + p;
        from = at + 3;
        let word_start = at == 0 || !(code[at - 1].is_ascii_alphanumeric() || code[at - 1] == b'_');
        let name: String = s[at + 3..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        if !word_start || name.is_empty() || skip.iter().any(|&(a, b)| a <= at && at <= b) {
            continue;
        }
        let Some(end_sig) = s[at..].find(['{', ';']).map(|q| at + q) else { continue };
        if code[end_sig] == b';' {
            continue;
        }
        let close = block_end(&code, end_sig);
        out.push((name, line_of(close) - line_of(at) + 1));
    }
    out
}

#[test]
fn functions_stay_short() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut too_long = Vec::new();
    let mut seen = std::collections::BTreeMap::new();
    for (path, text) in sources() {
        let rel = path.strip_prefix(root).unwrap_or(&path).to_string_lossy().replace('\\', "/");
        if rel.starts_with("src/raft/tests/") || rel.ends_with("/tests.rs") {
            continue;
        }
        for (name, lines) in function_lengths(&text) {
            let ceiling = LONG_FNS
                .iter()
                .find(|(f, n, _)| *f == rel && *n == name)
                .map_or(MAX_FN_LINES, |&(_, _, c)| c);
            if lines > ceiling {
                too_long.push(format!("{rel}: fn {name} has {lines} lines (limit {ceiling})"));
            }
            let longest = seen.entry((rel.clone(), name)).or_insert(0);
            *longest = (*longest).max(lines);
        }
    }
    assert!(too_long.is_empty(), "split these functions (docs/design.md, Style): {too_long:#?}");
    let stale: Vec<String> = LONG_FNS
        .iter()
        .filter(|(f, n, _)| seen.get(&(f.to_string(), n.to_string())).is_none_or(|&l| l <= MAX_FN_LINES))
        .map(|(f, n, _)| format!("{f}: fn {n}"))
        .collect();
    assert!(
        stale.is_empty(),
        "now short (or gone): delete their LONG_FNS lines so they stay short: {stale:?}"
    );
}

#[test]
fn the_function_measure_counts_what_it_should() {
    let text = r#####"
fn short() { let s = "}}}"; let c = '{'; }
// fn commented() {
fn long<'a>(x: &'a str) -> &'a str {
    let r = r#"{"#;
    /* { */
    x
}
#[cfg(test)]
mod tests {
    fn hidden() {}
}
"#####;
    assert_eq!(function_lengths(text), vec![("short".to_string(), 1), ("long".to_string(), 5)]);
}
