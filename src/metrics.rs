//! Counters and histograms, exported in the Prometheus text format. Each event is counted once,
//! at the one place that decides its fate.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use hdrhistogram::Histogram;

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A latency histogram in microseconds (1 µs .. 1 hour, 3 significant digits), with the exact sum
/// of what was recorded (a Prometheus summary's `_sum`).
#[derive(Debug)]
pub struct LatencyHistogram(Mutex<(Histogram<u64>, u64)>);

impl Default for LatencyHistogram {
    fn default() -> Self {
        let h = Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds");
        LatencyHistogram(Mutex::new((h, 0)))
    }
}

impl LatencyHistogram {
    /// Records one observation.
    pub fn record(&self, micros: u64) {
        let mut h = self.0.lock().unwrap_or_else(|e| e.into_inner());
        h.0.saturating_record(micros.max(1));
        h.1 = h.1.saturating_add(micros.max(1));
    }
    /// (count, p50, p99, max) in microseconds.
    pub fn summary(&self) -> (u64, u64, u64, u64) {
        let h = self.0.lock().unwrap_or_else(|e| e.into_inner());
        (h.0.len(), h.0.value_at_quantile(0.5), h.0.value_at_quantile(0.99), h.0.max())
    }
    /// The sum of every recorded observation, in microseconds.
    pub fn sum(&self) -> u64 {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).1
    }
}

/// Writes `# HELP` and `# TYPE` lines for a metric family.
pub fn write_family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Writes one summary sample set (quantiles 0.5, 0.99, 1, then `_sum` and `_count`); `labels` is
/// empty or `a="x",b="y"` without braces. The family's HELP/TYPE are written by the caller.
pub fn write_summary(out: &mut String, name: &str, labels: &str, h: &LatencyHistogram) {
    let (n, p50, p99, max) = h.summary();
    let sep = if labels.is_empty() { "" } else { "," };
    for (q, v) in [("0.5", p50), ("0.99", p99), ("1", max)] {
        let _ = writeln!(out, "{name}{{{labels}{sep}quantile=\"{q}\"}} {v}");
    }
    let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
    let _ = writeln!(out, "{name}_sum{braces} {}\n{name}_count{braces} {n}", h.sum());
}

/// Everything the ingest server counts.
#[derive(Debug, Default)]
pub struct IngestMetrics {
    pub connections_accepted: Counter,
    pub connections_refused: Counter,
    pub connections_active: Gauge,
    /// Events handed to the service and not yet answered (bounded by `max_inflight_events`).
    pub inflight_events: Gauge,
    pub legacy_frames: Counter,
    pub legacy_malformed: Counter,
    /// Legacy frames refused by policy (auth required, topic not allowed).
    pub legacy_refused: Counter,
    pub acked_frames: Counter,
    /// Acked frames answered with an error frame as a whole.
    pub acked_errors: Counter,
    pub events_stored: Counter,
    pub events_duplicate: Counter,
    /// Events in acked frames rejected one by one (bad topic, topic not allowed).
    pub events_rejected: Counter,
    pub overloaded: Counter,
    pub closed_idle: Counter,
    pub closed_read_timeout: Counter,
    pub closed_write_timeout: Counter,
    pub closed_too_large: Counter,
    pub closed_empty_flood: Counter,
    pub udp_datagrams: Counter,
    pub udp_malformed: Counter,
    /// Bytes held in connection buffers (partial frames, encoded replies not yet written),
    /// bounded by `ingest.max_buffered_bytes` (plus one read chunk per connection).
    pub buffered_bytes: Gauge,
    /// HELLOs with a wrong token.
    pub hello_failures: Counter,
    /// Connections closed after `ingest.max_failed_hellos` failed HELLOs.
    pub closed_auth_failures: Counter,
    /// Requests refused because the credential lacks the role.
    pub forbidden: Counter,
    /// Metrics-port connections refused at `ingest.metrics_max_connections`.
    pub metrics_connections_refused: Counter,
    pub publish_latency_us: LatencyHistogram,
}

impl IngestMetrics {
    /// Prometheus text exposition of every metric.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::new();
        for (name, help, c) in self.counters() {
            write_family(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", c.get());
        }
        for (name, help, g) in [
            ("esc_connections_active", "client connections open now", &self.connections_active),
            (
                "esc_inflight_events",
                "events handed to the service and not yet answered",
                &self.inflight_events,
            ),
            ("esc_ingest_buffered_bytes", "bytes held in client connection buffers", &self.buffered_bytes),
        ] {
            write_family(&mut out, name, "gauge", help);
            let _ = writeln!(out, "{name} {}", g.get());
        }
        let name = "esc_publish_latency_us";
        write_family(
            &mut out,
            name,
            "summary",
            "acked publish latency, handed to the service to its answer, microseconds",
        );
        write_summary(&mut out, name, "", &self.publish_latency_us);
        out
    }

    /// Every counter: (name, help, counter).
    fn counters(&self) -> [(&'static str, &'static str, &Counter); 22] {
        [
            ("esc_hello_failures_total", "HELLOs with a wrong token", &self.hello_failures),
            (
                "esc_closed_auth_failures_total",
                "connections closed after ingest.max_failed_hellos failed HELLOs",
                &self.closed_auth_failures,
            ),
            (
                "esc_forbidden_total",
                "requests refused because the credential lacks the role",
                &self.forbidden,
            ),
            (
                "esc_metrics_connections_refused_total",
                "metrics-port connections refused at ingest.metrics_max_connections",
                &self.metrics_connections_refused,
            ),
            ("esc_connections_accepted_total", "client connections accepted", &self.connections_accepted),
            (
                "esc_connections_refused_total",
                "client connections refused at ingest.max_connections",
                &self.connections_refused,
            ),
            ("esc_legacy_frames_total", "legacy frames received", &self.legacy_frames),
            ("esc_legacy_malformed_total", "legacy frames that could not be decoded", &self.legacy_malformed),
            (
                "esc_legacy_refused_total",
                "legacy frames refused by policy (auth required, topic not allowed)",
                &self.legacy_refused,
            ),
            ("esc_acked_frames_total", "acked-protocol frames received", &self.acked_frames),
            (
                "esc_acked_errors_total",
                "acked frames answered with an error frame as a whole",
                &self.acked_errors,
            ),
            ("esc_events_stored_total", "events stored (acknowledged as new)", &self.events_stored),
            (
                "esc_events_duplicate_total",
                "events whose idempotency key was already stored (original offset returned)",
                &self.events_duplicate,
            ),
            (
                "esc_events_rejected_total",
                "events in acked frames rejected one by one",
                &self.events_rejected,
            ),
            ("esc_overloaded_total", "requests answered overloaded", &self.overloaded),
            ("esc_closed_idle_total", "connections closed as idle", &self.closed_idle),
            (
                "esc_closed_read_timeout_total",
                "connections closed on a read timeout",
                &self.closed_read_timeout,
            ),
            (
                "esc_closed_write_timeout_total",
                "connections closed on a write timeout",
                &self.closed_write_timeout,
            ),
            (
                "esc_closed_too_large_total",
                "connections closed for a frame over the limit",
                &self.closed_too_large,
            ),
            (
                "esc_closed_empty_flood_total",
                "connections closed for a flood of empty frames",
                &self.closed_empty_flood,
            ),
            ("esc_udp_datagrams_total", "UDP legacy datagrams received", &self.udp_datagrams),
            ("esc_udp_malformed_total", "UDP datagrams that could not be decoded", &self.udp_malformed),
        ]
    }
}

/// What is wrong with a Prometheus text page, one line per problem (empty if nothing): a sample
/// without a `# HELP` and `# TYPE` before it, a family declared twice, an unknown type, a counter
/// not named `..._total` (or a `_total` that is not a counter), a summary without `_sum` and
/// `_count`, a value that is not a number. Used by the tests that scrape `/metrics`.
pub fn exposition_problems(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let n = n + 1;
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split_whitespace().next().unwrap_or_default().to_string();
            let f = families.entry(name.clone()).or_default();
            if f.help {
                problems.push(format!("line {n}: second HELP for {name}"));
            }
            f.help = true;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            check_type(n, rest, &mut families, &mut problems);
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            check_sample(n, line, &mut families, &mut problems);
        }
    }
    for (name, f) in &families {
        if f.kind.as_deref() == Some("summary") {
            for s in ["_sum", "_count"] {
                if !f.suffixes.iter().any(|x| x == s) {
                    problems.push(format!("summary {name} has no {name}{s}"));
                }
            }
        }
    }
    problems
}

/// What [`exposition_problems`] knows of one metric family.
#[derive(Default)]
struct Family {
    help: bool,
    kind: Option<String>,
    /// Suffixes of its samples seen ("" for the plain name, "_sum", "_count", "_bucket").
    suffixes: Vec<String>,
}

fn check_type(n: usize, rest: &str, families: &mut BTreeMap<String, Family>, problems: &mut Vec<String>) {
    let mut parts = rest.split_whitespace();
    let (name, kind) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    if !["counter", "gauge", "summary", "histogram", "untyped"].contains(&kind) {
        problems.push(format!("line {n}: unknown type {kind:?} for {name}"));
    }
    if kind == "counter" && !name.ends_with("_total") {
        problems.push(format!("line {n}: counter {name} is not named ..._total"));
    }
    if kind != "counter" && name.ends_with("_total") {
        problems.push(format!("line {n}: {name} is named ..._total but typed {kind}"));
    }
    let f = families.entry(name.to_string()).or_default();
    if f.kind.is_some() {
        problems.push(format!("line {n}: second TYPE for {name}"));
    }
    if !f.help {
        problems.push(format!("line {n}: TYPE of {name} without a HELP before it"));
    }
    f.kind = Some(kind.to_string());
}

fn check_sample(n: usize, line: &str, families: &mut BTreeMap<String, Family>, problems: &mut Vec<String>) {
    let Some((series, value)) = line.rsplit_once(' ') else {
        problems.push(format!("line {n}: not a sample: {line:?}"));
        return;
    };
    if value.parse::<f64>().is_err() {
        problems.push(format!("line {n}: value {value:?} is not a number"));
    }
    let name = series.split('{').next().unwrap_or_default();
    let kind = |fam: &str| families.get(fam).and_then(|f| f.kind.clone());
    let (family, suffix) = match kind(name) {
        Some(_) => (name.to_string(), String::new()),
        None => ["_sum", "_count", "_bucket"]
            .iter()
            .find_map(|s| {
                let fam = name.strip_suffix(s)?;
                matches!(kind(fam).as_deref(), Some("summary" | "histogram"))
                    .then(|| (fam.to_string(), s.to_string()))
            })
            .unwrap_or_else(|| (name.to_string(), String::new())),
    };
    match families.get_mut(&family) {
        Some(f) if f.help && f.kind.is_some() => f.suffixes.push(suffix),
        _ => problems.push(format!("line {n}: sample {name} has no HELP and TYPE before it")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_counter_once() {
        let m = IngestMetrics::default();
        m.events_stored.add(3);
        m.connections_active.inc();
        m.publish_latency_us.record(250);
        let text = m.render_prometheus();
        assert_eq!(text.matches("esc_events_stored_total 3").count(), 1);
        assert!(text.contains("esc_connections_active 1"));
        assert!(text.contains("esc_publish_latency_us_count 1"));
        assert!(text.contains("esc_publish_latency_us_sum 250"));
        assert_eq!(exposition_problems(&text), Vec::<String>::new());
    }

    #[test]
    fn exposition_problems_finds_each_kind_of_mistake() {
        let good = "# HELP a_total x\n# TYPE a_total counter\na_total 1\n\
                    # HELP l_us y\n# TYPE l_us summary\nl_us{quantile=\"0.5\"} 3\nl_us_sum 3\nl_us_count 1\n";
        assert_eq!(exposition_problems(good), Vec::<String>::new());
        for (bad, what) in [
            ("b 1\n", "no HELP and TYPE"),
            ("# TYPE b gauge\nb 1\n", "without a HELP"),
            ("# HELP b x\nb 1\n", "no HELP and TYPE"),
            ("# HELP b x\n# TYPE b counter\nb 1\n", "not named ..._total"),
            ("# HELP b_total x\n# TYPE b_total gauge\nb_total 1\n", "typed gauge"),
            ("# HELP s x\n# TYPE s summary\ns{quantile=\"1\"} 2\ns_count 1\n", "has no s_sum"),
            ("# HELP b x\n# TYPE b gauge\nb one\n", "not a number"),
            ("# HELP b x\n# TYPE b gauge\nb 1\n# HELP b x\n# TYPE b gauge\n", "second TYPE"),
        ] {
            let found = exposition_problems(&format!("{good}{bad}"));
            assert!(found.iter().any(|p| p.contains(what)), "{bad:?}: expected {what:?}, got {found:?}");
        }
    }
}
