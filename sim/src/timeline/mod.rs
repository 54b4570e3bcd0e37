//! A recorded timeline of one simulated run (roles, commits, faults, network conditions, clock
//! marks) and two renderings of it: an SVG a person reads in seconds, and a short plain-text
//! listing for terminals and failure reports.
//!
//! This module is plain Rust (no simulator, no runtime, no clock): scenarios record events with
//! the simulated time they already know, so it compiles and is tested in both builds.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

mod layout;
mod svg;
mod text;

/// Simulated milliseconds since the start of the run.
pub type Ms = u64;

/// The role of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleMark {
    Follower,
    Candidate,
    PreCandidate,
    Leader,
}

impl RoleMark {
    /// Lower-case name, as shown in tooltips and text.
    pub fn name(self) -> &'static str {
        match self {
            RoleMark::Follower => "follower",
            RoleMark::Candidate => "candidate",
            RoleMark::PreCandidate => "pre-candidate",
            RoleMark::Leader => "leader",
        }
    }

    fn colour(self) -> &'static str {
        match self {
            RoleMark::Follower => "#e4e4e4",
            RoleMark::Candidate => "#f2a900",
            RoleMark::PreCandidate => "#f8d478",
            RoleMark::Leader => "#2e7d32",
        }
    }
}

/// Per-node states drawn as shaded spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    Down,
    Paused,
    Isolated,
    Partitioned,
    DiskFault,
    Removed,
}

impl SpanKind {
    const ALL: [SpanKind; 6] = [
        SpanKind::Down,
        SpanKind::Paused,
        SpanKind::Isolated,
        SpanKind::Partitioned,
        SpanKind::DiskFault,
        SpanKind::Removed,
    ];

    /// Lower-case name, as shown in the legend, tooltips and text.
    pub fn name(self) -> &'static str {
        match self {
            SpanKind::Down => "down",
            SpanKind::Paused => "paused",
            SpanKind::Isolated => "isolated",
            SpanKind::Partitioned => "partitioned",
            SpanKind::DiskFault => "disk fault",
            SpanKind::Removed => "removed",
        }
    }

    /// The `fill` (and `fill-opacity`) of the overlay.
    fn fill(self) -> &'static str {
        match self {
            SpanKind::Down => r#"fill="url(#esc-hatch-down)""#,
            SpanKind::Paused => r##"fill="#1e6fd9" fill-opacity="0.6""##,
            SpanKind::Isolated => r##"fill="#e53935" fill-opacity="0.6""##,
            SpanKind::Partitioned => r#"fill="url(#esc-hatch-part)""#,
            SpanKind::DiskFault => r##"fill="#fb8c00" fill-opacity="0.7""##,
            SpanKind::Removed => r##"fill="#9e9e9e" fill-opacity="0.85""##,
        }
    }

    /// Text colour of a label drawn on the overlay.
    fn text_fill(self) -> &'static str {
        match self {
            SpanKind::Down => "#fff",
            _ => "#111",
        }
    }
}

/// One thing that happened during a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A node's role/term changed at `at`.
    Role { at: Ms, node: usize, role: RoleMark, term: u64 },
    /// A node's commit index reached `index` at `at` (record only increases; renderer may thin them).
    Commit { at: Ms, node: usize, index: u64 },
    /// A per-node condition from `from` to `to` (None = until the end), with a short label (e.g.
    /// "crash, power fail", "pause 1.2 s", "fsync fails").
    Span { node: usize, from: Ms, to: Option<Ms>, kind: SpanKind, label: String },
    /// A cluster-wide network condition (packet loss, latency spike, split) from..to, drawn as a
    /// band across all rows.
    NetSpan { from: Ms, to: Option<Ms>, label: String },
    /// A point event on one node (clock step "+3.2 s", membership change "removed", "added") or
    /// cluster-wide when node is None.
    Mark { at: Ms, node: Option<usize>, label: String },
    /// A clock drift for the whole run (ppm), shown in the row header.
    Drift { node: usize, ppm: i64 },
    /// A checker failed: at the simulated time it detected the failure (on one node, or
    /// cluster-wide), or, for a verdict judged at the end of the run, at the time of the event the
    /// failure names. Drawn as a red line through every row with its label on top.
    Failure { at: Ms, node: Option<usize>, label: String },
    /// A phase of something that is not a member (a client storm, the peer-port storm) from
    /// `from` to `to` (None = until the end), drawn as a bar in its own lane below the members.
    Phase { lane: String, from: Ms, to: Option<Ms>, label: String },
}

impl Event {
    /// When the event happens or starts (drift: 0).
    pub fn at(&self) -> Ms {
        match self {
            Event::Role { at, .. }
            | Event::Commit { at, .. }
            | Event::Mark { at, .. }
            | Event::Failure { at, .. } => *at,
            Event::Span { from, .. } | Event::NetSpan { from, .. } | Event::Phase { from, .. } => *from,
            Event::Drift { .. } => 0,
        }
    }

    /// The node the event is about (None: cluster-wide).
    pub fn node(&self) -> Option<usize> {
        match self {
            Event::Role { node, .. }
            | Event::Commit { node, .. }
            | Event::Span { node, .. }
            | Event::Drift { node, .. } => Some(*node),
            Event::Mark { node, .. } | Event::Failure { node, .. } => *node,
            Event::NetSpan { .. } | Event::Phase { .. } => None,
        }
    }

    /// The latest time the event mentions.
    fn latest(&self) -> Ms {
        match self {
            Event::Span { from, to, .. }
            | Event::NetSpan { from, to, .. }
            | Event::Phase { from, to, .. } => to.unwrap_or(*from).max(*from),
            e => e.at(),
        }
    }
}

/// The recorded timeline of one run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Timeline {
    /// Scenario, seed, result.
    pub title: String,
    /// Row names, e.g. "n1", indexed by the events' `node`.
    pub nodes: Vec<String>,
    /// Events in the order recorded (renderers sort by time).
    pub events: Vec<Event>,
    /// The end of the run (set by [`Timeline::finish`]).
    pub end: Ms,
}

// ---- SVG geometry ----
const WIDTH: f64 = 1200.0;
const HEADER_W: f64 = 150.0;
const RIGHT_MARGIN: f64 = 24.0;
const ROW_H: f64 = 40.0;
/// Space above each row for the row's mark labels.
const ROW_GAP: f64 = 18.0;
const LANE_H: f64 = 14.0;
/// At most this many points in one row's commit plot.
pub const MAX_COMMIT_POINTS: usize = 300;
/// Approximate advance of one character at font-size 11 (sans-serif).
const CHAR_W: f64 = 6.2;
/// The same at font-size 10.
const CHAR_W_SMALL: f64 = 5.6;
const MARK_COLOUR: &str = "#c2185b";
const NET_COLOUR: &str = "#7b1fa2";
const FAIL_COLOUR: &str = "#d50000";
const PHASE_COLOUR: &str = "#6d4c41";
/// Height of a phase lane (storms) below the member rows.
const PHASE_H: f64 = 22.0;

impl Timeline {
    /// An empty timeline with its title and row names.
    pub fn new(title: impl Into<String>, nodes: Vec<String>) -> Self {
        Self { title: title.into(), nodes, events: Vec::new(), end: 0 }
    }

    /// Records one event.
    pub fn push(&mut self, e: Event) {
        self.events.push(e);
    }

    /// Closes every open span (`to: None`) at `end` and records the end time.
    pub fn finish(&mut self, end: Ms) {
        for e in &mut self.events {
            if let Event::Span { to, .. } | Event::NetSpan { to, .. } | Event::Phase { to, .. } = e
                && to.is_none()
            {
                *to = Some(end);
            }
        }
        self.end = end;
    }

    /// The time the renderings run to: the end, or the latest event if later; at least 1 ms.
    fn horizon(&self) -> Ms {
        self.events.iter().map(Event::latest).fold(self.end, Ms::max).max(1)
    }

    /// How many rows: every named node, and any node an event mentions.
    fn row_count(&self) -> usize {
        self.events.iter().filter_map(Event::node).map(|n| n + 1).fold(self.nodes.len(), usize::max)
    }

    fn node_name(&self, node: usize) -> String {
        self.nodes.get(node).cloned().unwrap_or_else(|| format!("node{node}"))
    }

    /// The names of the phase lanes, in the order they first appear.
    fn phase_lanes(&self) -> Vec<&str> {
        let mut lanes: Vec<&str> = Vec::new();
        for e in &self.events {
            if let Event::Phase { lane, .. } = e
                && !lanes.contains(&lane.as_str())
            {
                lanes.push(lane);
            }
        }
        lanes
    }

    /// Indices of the events sorted by time (stable: recording order breaks ties).
    fn time_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.events.len()).collect();
        order.sort_by_key(|&i| self.events[i].at());
        order
    }
}

/// A white outline behind dark text so it stays readable over bars and lines.
const HALO: &str = r##" stroke="#fff" stroke-width="2.5" stroke-opacity="0.8" paint-order="stroke""##;

/// Escapes text for XML content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Control characters other than tab/newline are not allowed in XML 1.0.
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' && c != '\r' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A coordinate with one decimal, without a trailing ".0".
fn f1(v: f64) -> String {
    let r = (v * 10.0).round() / 10.0;
    if r == r.trunc() { format!("{}", r as i64) } else { format!("{r:.1}") }
}

/// Where a small label meant to start at `x` starts so that it ends inside the picture.
fn label_x(x: f64, label: &str) -> f64 {
    x.min(WIDTH - 4.0 - text_w(label, CHAR_W_SMALL)).max(2.0)
}

fn text_w(s: &str, char_w: f64) -> f64 {
    s.chars().count() as f64 * char_w
}

/// "12.345 s".
fn fmt_time(ms: Ms) -> String {
    format!("{}.{:03} s", ms / 1000, ms % 1000)
}

fn range(from: Ms, to: Option<Ms>) -> String {
    match to {
        Some(to) => format!("{} – {}", fmt_time(from), fmt_time(to)),
        None => format!("{} – end", fmt_time(from)),
    }
}

fn until(from: Ms, to: Option<Ms>) -> String {
    match to {
        Some(to) => format!("until {} ({})", fmt_time(to), fmt_time(to.saturating_sub(from))),
        None => "until the end".to_string(),
    }
}

fn colon(label: &str) -> String {
    if label.is_empty() { String::new() } else { format!(": {label}") }
}

/// "+3.1%" for large drifts, "-150 ppm" for small ones.
fn fmt_drift(ppm: i64) -> String {
    if ppm.unsigned_abs() >= 1000 {
        format!("{:+.1}%", ppm as f64 / 10_000.0)
    } else {
        format!("{ppm:+} ppm")
    }
}

fn line(out: &mut String, at: Ms, who: &str, what: &str) {
    let _ = writeln!(out, "{:>12}  {who:<6} {what}", fmt_time(at));
}

/// Tick times: a 1-2-5 step giving at most 12 intervals over `horizon`.
fn ticks(horizon: Ms) -> Vec<Ms> {
    let mut step: Ms = 1;
    'outer: loop {
        for m in [1, 2, 5] {
            let s = step.saturating_mul(m);
            if horizon / s <= 12 {
                step = s;
                break 'outer;
            }
        }
        step = step.saturating_mul(10);
    }
    (0..=horizon / step).map(|k| k * step).collect()
}

/// "12s" for whole-second steps, else with as many decimals as the step needs.
fn tick_label(t: Ms, step: Ms) -> String {
    if step.is_multiple_of(1000) {
        format!("{}s", t / 1000)
    } else {
        let decimals = if step.is_multiple_of(100) {
            1
        } else if step.is_multiple_of(10) {
            2
        } else {
            3
        };
        format!("{:.*}s", decimals, t as f64 / 1000.0)
    }
}

/// Keeps at most `buckets` commit updates: the last (highest) one in each time bucket.
fn thin_steps(commits: &[(Ms, u64)], horizon: Ms, buckets: usize) -> Vec<(Ms, u64)> {
    let buckets = buckets.max(1) as u128;
    let mut out: Vec<(Ms, u64)> = Vec::new();
    let mut last_bucket = None;
    let mut high = 0;
    for &(t, idx) in commits {
        high = high.max(idx);
        let b = (t.min(horizon) as u128 * buckets) / (horizon as u128 + 1);
        if last_bucket == Some(b) {
            if let Some(last) = out.last_mut() {
                *last = (t, high);
            }
        } else {
            out.push((t, high));
            last_bucket = Some(b);
        }
    }
    out
}

/// Greedy lane assignment for horizontal extents (start, end): each gets the first lane free at
/// its start. Returns each item's lane and the number of lanes.
fn assign_lanes(items: &[(f64, f64)]) -> (Vec<usize>, usize) {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by(|&a, &b| items[a].0.total_cmp(&items[b].0));
    let mut lane_end: Vec<f64> = Vec::new();
    let mut lanes = vec![0; items.len()];
    for i in order {
        let (start, end) = items[i];
        let lane = match lane_end.iter().position(|&e| e + 4.0 <= start) {
            Some(l) => l,
            None => {
                lane_end.push(f64::MIN);
                lane_end.len() - 1
            }
        };
        lane_end[lane] = end;
        lanes[i] = lane;
    }
    (lanes, lane_end.len())
}

/// A timeline shared between the tasks of one run. Cheap to clone (shared).
#[derive(Clone, Default, Debug)]
pub struct Recorder {
    inner: Arc<Mutex<Timeline>>,
}

impl Recorder {
    /// A recorder for a run with this title and these rows.
    pub fn new(title: impl Into<String>, nodes: Vec<String>) -> Self {
        Self { inner: Arc::new(Mutex::new(Timeline::new(title, nodes))) }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Timeline) -> T) -> T {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    /// Records one event.
    pub fn record(&self, e: Event) {
        self.with(|t| t.push(e));
    }

    /// Replaces the title (e.g. to add the result once the run is over).
    pub fn set_title(&self, title: impl Into<String>) {
        let title = title.into();
        self.with(|t| t.title = title);
    }

    /// Names the rows (the scenario knows how many members it runs).
    pub fn set_nodes(&self, nodes: Vec<String>) {
        self.with(|t| t.nodes = nodes);
    }

    /// Closes open spans at `end` and records the end time (see [`Timeline::finish`]).
    pub fn finish(&self, end: Ms) {
        self.with(|t| t.finish(end));
    }

    /// A copy of the timeline as recorded so far.
    pub fn snapshot(&self) -> Timeline {
        self.with(|t| t.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("n{i}")).collect()
    }

    /// 3 nodes over 20 s: n1 leads term 1, crashes at 6 s; n2 wins term 2 after a candidacy; n3
    /// is paused; a network band; a clock step; commits on every node.
    fn sample() -> Timeline {
        let mut t = Timeline::new("leader-crash · seed 42 · PASS", names(3));
        t.push(Event::Drift { node: 1, ppm: 31_000 });
        t.push(Event::Drift { node: 2, ppm: -150 });
        for n in 0..3 {
            t.push(Event::Role { at: 0, node: n, role: RoleMark::Follower, term: 0 });
        }
        t.push(Event::Role { at: 300, node: 0, role: RoleMark::PreCandidate, term: 0 });
        t.push(Event::Role { at: 350, node: 0, role: RoleMark::Candidate, term: 1 });
        t.push(Event::Role { at: 400, node: 0, role: RoleMark::Leader, term: 1 });
        t.push(Event::Role { at: 400, node: 1, role: RoleMark::Follower, term: 1 });
        t.push(Event::Role { at: 400, node: 2, role: RoleMark::Follower, term: 1 });
        t.push(Event::Span {
            node: 0,
            from: 6_000,
            to: Some(9_000),
            kind: SpanKind::Down,
            label: "crash, power fail".into(),
        });
        t.push(Event::Role { at: 7_000, node: 1, role: RoleMark::Candidate, term: 2 });
        t.push(Event::Role { at: 7_100, node: 1, role: RoleMark::Leader, term: 2 });
        t.push(Event::Role { at: 7_100, node: 2, role: RoleMark::Follower, term: 2 });
        t.push(Event::Role { at: 9_500, node: 0, role: RoleMark::Follower, term: 2 });
        t.push(Event::Span {
            node: 2,
            from: 12_000,
            to: Some(13_200),
            kind: SpanKind::Paused,
            label: "pause 1.2 s".into(),
        });
        t.push(Event::Span {
            node: 2,
            from: 16_000,
            to: None,
            kind: SpanKind::DiskFault,
            label: "fsync fails".into(),
        });
        t.push(Event::NetSpan { from: 10_000, to: Some(11_500), label: "packet loss 30%".into() });
        t.push(Event::Mark { at: 14_000, node: Some(2), label: "clock step +3.2 s".into() });
        t.push(Event::Mark { at: 15_000, node: None, label: "split healed".into() });
        t.push(Event::Span {
            node: 1,
            from: 17_000,
            to: Some(17_500),
            kind: SpanKind::Isolated,
            label: r#"a<b&"c""#.into(),
        });
        let mut index = 0;
        for at in (500..20_000).step_by(100) {
            if (6_000..7_200).contains(&at) {
                continue;
            }
            index += 1;
            for n in 0..3 {
                if (n == 0 && (6_000..9_600).contains(&at)) || (n == 2 && at >= 16_000) {
                    continue;
                }
                t.push(Event::Commit { at: at + n as u64, node: n, index });
            }
        }
        t.finish(20_000);
        t
    }

    /// Every element is closed (or self-closed) in order, text has no raw `<` or stray `&`,
    /// attribute values are quoted. Panics with the offending spot otherwise.
    fn assert_well_formed(doc: &str) {
        let mut stack: Vec<String> = Vec::new();
        let b = doc.as_bytes();
        let mut i = 0;
        let check_amp = |s: &str, at: usize| {
            for (k, _) in s.match_indices('&') {
                let rest = &s[k..];
                assert!(
                    ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&#"].iter().any(|e| rest.starts_with(e)),
                    "stray & near byte {}: {:?}",
                    at + k,
                    &rest[..rest.len().min(20)]
                );
            }
        };
        while i < b.len() {
            if b[i] != b'<' {
                let next = doc[i..].find('<').map_or(b.len(), |k| i + k);
                let text = &doc[i..next];
                assert!(!text.contains('>'), "raw > in text near byte {i}: {text:?}");
                check_amp(text, i);
                if stack.is_empty() {
                    assert!(text.trim().is_empty(), "text outside the root element: {text:?}");
                }
                i = next;
                continue;
            }
            // Find the end of the tag, skipping quoted attribute values.
            let mut j = i + 1;
            let mut quote = None;
            while j < b.len() {
                match (quote, b[j]) {
                    (None, b'"' | b'\'') => quote = Some(b[j]),
                    (Some(q), c) if c == q => quote = None,
                    (Some(_), b'<') => panic!("raw < inside an attribute value near byte {j}"),
                    (None, b'>') => break,
                    _ => {}
                }
                j += 1;
            }
            assert!(j < b.len(), "unterminated tag at byte {i}");
            let tag = &doc[i + 1..j];
            check_amp(tag, i);
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack.pop().unwrap_or_else(|| panic!("</{name}> closes nothing at byte {i}"));
                assert_eq!(open, name.trim(), "mismatched close at byte {i}");
                if stack.is_empty() {
                    assert!(doc[j + 1..].trim().is_empty(), "content after the root element");
                }
            } else {
                let name: String = tag.chars().take_while(|c| !c.is_whitespace() && *c != '/').collect();
                assert!(!name.is_empty() && !name.starts_with(['!', '?']), "unexpected markup <{tag}>");
                // Attributes: name="value" pairs only.
                let attrs = tag[name.len()..].trim_end_matches('/');
                let mut rest = attrs.trim_start();
                while !rest.is_empty() {
                    let eq = rest.find('=').unwrap_or_else(|| panic!("attribute without value in <{tag}>"));
                    let after = &rest[eq + 1..];
                    let q = after.chars().next().expect("value");
                    assert!(q == '"' || q == '\'', "unquoted attribute in <{tag}>");
                    let close = after[1..].find(q).expect("closing quote") + 1;
                    rest = after[close + 1..].trim_start();
                }
                if stack.is_empty() {
                    assert_eq!(name, "svg", "root element");
                }
                if !tag.ends_with('/') {
                    stack.push(name);
                }
            }
            i = j + 1;
        }
        assert!(stack.is_empty(), "unclosed elements: {stack:?}");
    }

    fn commit_points(svg: &str, row: usize) -> usize {
        let key = format!(r#"<polyline class="commit" data-row="{row}" points=""#);
        let start = svg.find(&key).unwrap_or_else(|| panic!("no commit plot for row {row}")) + key.len();
        let end = svg[start..].find('"').unwrap() + start;
        svg[start..end].split_whitespace().count()
    }

    #[test]
    fn svg_is_a_standalone_document() {
        let svg = sample().to_svg();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(svg.contains(r#"xmlns="http://www.w3.org/2000/svg""#));
        assert!(!svg.contains("href"), "no external or internal references beyond url(#…)");
        for url in svg.match_indices("url(#").map(|(k, _)| &svg[k + 5..]) {
            let id = &url[..url.find(')').unwrap()];
            assert!(svg.contains(&format!(r#"id="{id}""#)), "pattern {id} is defined");
        }
        assert_well_formed(&svg);
    }

    #[test]
    fn svg_has_one_row_header_per_node_with_drift() {
        let svg = sample().to_svg();
        assert_eq!(svg.matches(r#"class="row-header""#).count(), 3);
        assert_eq!(svg.matches(r#"<g class="row" "#).count(), 3);
        assert!(svg.contains(">n2</tspan>"));
        assert!(svg.contains("drift +3.1%"), "percent drift in n2's header");
        assert!(svg.contains("drift -150 ppm"), "small drift in ppm in n3's header");
    }

    #[test]
    fn svg_shows_leaders_with_their_terms() {
        let svg = sample().to_svg();
        // n1's role only changes when it reports one: after its crash, as a follower at 9.5 s.
        assert!(svg.contains("n1: leader, term 1 (0.400 s – 9.500 s)"));
        assert!(svg.contains("n2: leader, term 2 (7.100 s – 20.000 s)"));
        assert!(svg.contains(">leader, term 2</text>"), "wide leader bar names its term");
        assert!(svg.contains("n1: candidate, term 1"));
        assert!(svg.contains("n1: pre-candidate, term 0"));
    }

    #[test]
    fn svg_shows_spans_marks_and_net_bands_with_labels() {
        let svg = sample().to_svg();
        for label in ["crash, power fail", "fsync fails", "packet loss 30%", "clock step +3.2 s"] {
            assert!(svg.contains(&format!(">{label}<")), "{label} drawn as text");
        }
        // 1.2 s of 20 s is too narrow for its label: the tooltip still has it.
        assert!(!svg.contains(">pause 1.2 s<"));
        assert!(svg.contains("n3: paused: pause 1.2 s (12.000 s – 13.200 s)"));
        assert!(svg.contains("n1: down: crash, power fail (6.000 s – 9.000 s)"));
        assert!(svg.contains("split healed"));
        assert!(svg.contains("url(#esc-hatch-down)"));
    }

    #[test]
    fn svg_escapes_labels() {
        let mut t = sample();
        t.title = "<script>&".into();
        t.nodes[0] = "n<1>".into();
        let svg = t.to_svg();
        assert!(!svg.contains(r#"a<b&"c""#));
        assert!(svg.contains("a&lt;b&amp;&quot;c&quot;"));
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("n&lt;1&gt;"));
        assert_well_formed(&svg);
        assert_eq!(esc(r#"<&>"'"#), "&lt;&amp;&gt;&quot;&apos;");
    }

    #[test]
    fn labels_near_the_right_edge_stay_inside() {
        let mut t = Timeline::new("edge", names(1));
        t.push(Event::NetSpan { from: 990, to: None, label: "a long network label at the end".into() });
        t.push(Event::Mark { at: 1_000, node: None, label: "a long cluster mark label".into() });
        t.push(Event::Mark { at: 1_000, node: Some(0), label: "a long node mark label".into() });
        t.finish(1_000);
        let svg = t.to_svg();
        for label in
            ["a long network label at the end", "a long cluster mark label", "a long node mark label"]
        {
            let end = svg.find(&format!(">{label}</text>")).unwrap_or_else(|| panic!("{label} drawn"));
            let start = svg[..end].rfind("<text x=\"").unwrap() + 9;
            let x: f64 = svg[start..start + svg[start..].find('"').unwrap()].parse().unwrap();
            assert!(x + text_w(label, CHAR_W_SMALL) <= WIDTH, "{label} at x={x}");
        }
        assert_well_formed(&svg);
    }

    /// A run with a client storm, a peer storm and two failure marks (one on a member).
    fn failed_run() -> Timeline {
        let mut t = Timeline::new("cluster seed 7 · FAILED", names(3));
        t.push(Event::Role { at: 0, node: 0, role: RoleMark::Leader, term: 1 });
        t.push(Event::Phase {
            lane: "client storm".into(),
            from: 2_000,
            to: Some(12_000),
            label: "7 clients: 2 connect_flood, 1 half_frame".into(),
        });
        t.push(Event::Phase { lane: "peer storm".into(), from: 0, to: None, label: "3 clients".into() });
        t.push(Event::Failure { at: 8_168, node: Some(1), label: "✗ raft_invariants on n2".into() });
        t.push(Event::Failure { at: 19_000, node: None, label: "✗ liveness".into() });
        t.finish(20_000);
        t
    }

    #[test]
    fn svg_marks_failed_checkers_and_draws_storm_lanes() {
        let svg = failed_run().to_svg();
        assert_well_formed(&svg);
        assert_eq!(svg.matches(r#"<g class="failure">"#).count(), 2, "one red line per failure");
        assert!(svg.contains(">✗ raft_invariants on n2</text>"), "the checker's name is written");
        assert!(svg.contains("✗ raft_invariants on n2 (at 8.168 s)"), "with its time in the tooltip");
        assert_eq!(svg.matches("<circle ").count(), 1, "a dot on the member the failure concerns");
        assert!(svg.contains("checker failed</text>"), "legend");
        assert_eq!(svg.matches(r#"<g class="phase-lane""#).count(), 2, "a lane per storm");
        assert!(svg.contains(r#"data-lane="client storm""#) && svg.contains(r#"data-lane="peer storm""#));
        assert!(svg.contains("client storm: 7 clients: 2 connect_flood, 1 half_frame (2.000 s – 12.000 s)"));
        assert!(
            svg.contains(">7 clients: 2 connect_flood, 1 half_frame</text>"),
            "a wide bar shows its label"
        );
        assert!(svg.contains("peer storm: 3 clients (0.000 s – 20.000 s)"), "finish closes phases");
        // The lanes lie below the member rows and above the axis.
        let run = failed_run();
        let l = layout::Layout::new(&run);
        assert!(l.phase_top(0) > l.row_top(2) + ROW_H && l.axis_y > l.phase_top(1) + PHASE_H);
    }

    #[test]
    fn text_lists_failures_and_storm_phases() {
        let text = failed_run().to_text();
        assert!(text.contains("8.168 s  n2     FAILED ✗ raft_invariants on n2"), "{text}");
        assert!(text.contains("19.000 s  *      FAILED ✗ liveness"), "{text}");
        assert!(text.contains("2.000 s  *      client storm until 12.000 s (10.000 s): 7 clients"), "{text}");
    }

    #[test]
    fn finish_closes_open_spans() {
        let mut t = Timeline::new("t", names(2));
        t.push(Event::Span { node: 0, from: 5, to: None, kind: SpanKind::Removed, label: "removed".into() });
        t.push(Event::NetSpan { from: 7, to: None, label: "latency".into() });
        t.push(Event::Span { node: 1, from: 1, to: Some(3), kind: SpanKind::Paused, label: String::new() });
        t.finish(100);
        assert_eq!(t.end, 100);
        let ends: Vec<Option<Ms>> = t
            .events
            .iter()
            .map(|e| match e {
                Event::Span { to, .. } | Event::NetSpan { to, .. } => *to,
                _ => None,
            })
            .collect();
        assert_eq!(ends, vec![Some(100), Some(100), Some(3)]);
        assert!(sample().to_svg().contains("fsync fails (16.000 s – 20.000 s)"));
    }

    #[test]
    fn commit_points_are_thinned() {
        let mut t = Timeline::new("many commits", names(2));
        for i in 0..10_000u64 {
            t.push(Event::Commit { at: i * 3, node: 0, index: i + 1 });
        }
        t.push(Event::Commit { at: 10, node: 1, index: 1 });
        t.push(Event::Commit { at: 20_000, node: 1, index: 2 });
        t.finish(30_000);
        let svg = t.to_svg();
        let n = commit_points(&svg, 0);
        assert!((100..=MAX_COMMIT_POINTS).contains(&n), "{n} points");
        assert_eq!(commit_points(&svg, 1), 6, "start, two steps of two, end");
        assert!(svg.contains("commit 10000"));
        assert!(svg.len() < 40_000, "{} bytes", svg.len());
        assert_well_formed(&svg);
    }

    #[test]
    fn text_lists_events_in_time_order() {
        let mut t = Timeline::new("text", names(2));
        t.push(Event::Span { node: 1, from: 2_000, to: None, kind: SpanKind::Down, label: "crash".into() });
        t.push(Event::Role { at: 1_000, node: 0, role: RoleMark::Leader, term: 3 });
        t.push(Event::Mark { at: 1_500, node: None, label: "heal".into() });
        t.push(Event::Drift { node: 0, ppm: -20_000 });
        for i in 1..=5 {
            t.push(Event::Commit { at: 1_000 + i * 100, node: 0, index: i });
        }
        t.push(Event::Commit { at: 3_000, node: 0, index: 6 });
        t.finish(4_000);
        let text = t.to_text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "text");
        assert_eq!(lines[1], "nodes: n1, n2; end 4.000 s");
        let want = [
            ("0.000 s", "n1", "clock drift -2.0% (-20000 ppm)"),
            ("1.000 s", "n1", "leader, term 3"),
            ("1.400 s", "n1", "commit index 4 (4 updates)"),
            ("1.500 s", "*", "mark: heal"),
            ("1.500 s", "n1", "commit index 5"),
            ("2.000 s", "n2", "down until 4.000 s (2.000 s): crash"),
            ("3.000 s", "n1", "commit index 6"),
        ];
        assert_eq!(lines.len() - 2, want.len(), "{text}");
        for (l, (at, who, what)) in lines[2..].iter().zip(want) {
            let fields: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(format!("{} {}", fields[0], fields[1]), at, "{l}");
            assert_eq!(fields[2], who, "{l}");
            assert_eq!(fields[3..].join(" "), what, "{l}");
        }
        let sample = sample().to_text();
        let times: Vec<f64> =
            sample.lines().skip(2).map(|l| l.split_whitespace().next().unwrap().parse().unwrap()).collect();
        assert!(times.windows(2).all(|w| w[0] <= w[1]), "{sample}");
        assert!(sample.lines().count() < 40, "commits folded: {sample}");
        assert!(sample.contains("*      commit index n1 183, n2 183 (60 updates)"), "{sample}");
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // a plain test, outside any simulation: a real thread
    fn recorder_is_shared_and_send_sync() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Recorder>();
        let r = Recorder::new("run", names(1));
        let r2 = r.clone();
        std::thread::spawn(move || r2.record(Event::Mark { at: 1, node: Some(0), label: "x".into() }))
            .join()
            .unwrap();
        r.set_title("run · PASS");
        r.finish(10);
        let t = r.snapshot();
        assert_eq!(t.title, "run · PASS");
        assert_eq!(t.events.len(), 1);
        assert_eq!(t.end, 10);
    }

    #[test]
    fn ticks_are_round_and_few() {
        assert_eq!(ticks(20_000), (0..=10).map(|k| k * 2_000).collect::<Vec<_>>());
        assert_eq!(ticks(1), vec![0, 1]);
        assert!(ticks(3_600_000).len() <= 13);
        assert_eq!(tick_label(1_500, 500), "1.5s");
        assert_eq!(tick_label(4_000, 2_000), "4s");
    }

    #[test]
    #[allow(clippy::disallowed_methods)] // the sample goes to a real temp dir for a person to open
    fn sample_svg_written_to_a_file() {
        let dir = std::env::temp_dir().join(format!("esc-timeline-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sample.svg");
        let svg = sample().to_svg();
        std::fs::write(&path, &svg).unwrap();
        eprintln!("sample timeline: {} ({} bytes)", path.display(), svg.len());
        assert!(svg.len() < 60_000, "{} bytes", svg.len());
    }
}
