//! Counters and histograms, exported in the Prometheus text format. Each event is counted once,
//! at the one place that decides its fate.

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

/// A latency histogram in microseconds (1 µs .. 1 hour, 3 significant digits).
#[derive(Debug)]
pub struct LatencyHistogram(Mutex<Histogram<u64>>);

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram(Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")))
    }
}

impl LatencyHistogram {
    /// Records one observation.
    pub fn record(&self, micros: u64) {
        let mut h = self.0.lock().unwrap_or_else(|e| e.into_inner());
        h.saturating_record(micros.max(1));
    }
    /// (count, p50, p99, max) in microseconds.
    pub fn summary(&self) -> (u64, u64, u64, u64) {
        let h = self.0.lock().unwrap_or_else(|e| e.into_inner());
        (h.len(), h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.max())
    }
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
        let counters: [(&str, &Counter); 23] = [
            ("esc_hello_failures_total", &self.hello_failures),
            ("esc_closed_auth_failures_total", &self.closed_auth_failures),
            ("esc_forbidden_total", &self.forbidden),
            ("esc_metrics_connections_refused_total", &self.metrics_connections_refused),
            ("esc_connections_accepted_total", &self.connections_accepted),
            ("esc_connections_refused_total", &self.connections_refused),
            ("esc_legacy_frames_total", &self.legacy_frames),
            ("esc_legacy_malformed_total", &self.legacy_malformed),
            ("esc_legacy_refused_total", &self.legacy_refused),
            ("esc_acked_frames_total", &self.acked_frames),
            ("esc_acked_errors_total", &self.acked_errors),
            ("esc_events_stored_total", &self.events_stored),
            ("esc_events_duplicate_total", &self.events_duplicate),
            ("esc_events_rejected_total", &self.events_rejected),
            ("esc_overloaded_total", &self.overloaded),
            ("esc_closed_idle_total", &self.closed_idle),
            ("esc_closed_read_timeout_total", &self.closed_read_timeout),
            ("esc_closed_write_timeout_total", &self.closed_write_timeout),
            ("esc_closed_too_large_total", &self.closed_too_large),
            ("esc_closed_empty_flood_total", &self.closed_empty_flood),
            ("esc_udp_datagrams_total", &self.udp_datagrams),
            ("esc_udp_malformed_total", &self.udp_malformed),
            (
                "esc_publish_latency_observations_total",
                &Counter(AtomicU64::new(self.publish_latency_us.summary().0)),
            ),
        ];
        for (name, c) in counters {
            let _ = writeln!(out, "# TYPE {name} counter\n{name} {}", c.get());
        }
        let _ = writeln!(
            out,
            "# TYPE esc_connections_active gauge\nesc_connections_active {}",
            self.connections_active.get()
        );
        let _ = writeln!(
            out,
            "# HELP esc_ingest_buffered_bytes bytes held in client connection buffers\n\
             # TYPE esc_ingest_buffered_bytes gauge\nesc_ingest_buffered_bytes {}",
            self.buffered_bytes.get()
        );
        let (_, p50, p99, max) = self.publish_latency_us.summary();
        let _ = writeln!(out, "# TYPE esc_publish_latency_us summary");
        let _ = writeln!(out, "esc_publish_latency_us{{quantile=\"0.5\"}} {p50}");
        let _ = writeln!(out, "esc_publish_latency_us{{quantile=\"0.99\"}} {p99}");
        let _ = writeln!(out, "esc_publish_latency_us{{quantile=\"1\"}} {max}");
        out
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
        assert!(text.contains("esc_publish_latency_observations_total 1"));
    }
}
