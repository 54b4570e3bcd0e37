//! Pipeline metrics. Each event is counted once, where its fate is decided: `submitted` when it
//! enters a class, then exactly one of `processed`, `failed` (handler said invalid / retries ran
//! out — also dead-lettered), `dropped` by reason (policy: deadline, overflow, shutdown —
//! dead-lettered) or `duplicates` (idempotency key already handled).

use std::fmt::Write as _;

use crate::metrics::{Counter, LatencyHistogram};

use super::control::Health;
use super::dlq::DlqReason;
use super::routing::Class;

/// Counters of one class.
#[derive(Debug, Default)]
pub struct ClassMetrics {
    pub submitted: Counter,
    pub processed: Counter,
    pub failed: Counter,
    /// Dead-lettered by policy, indexed by [`DlqReason`] (`reason as usize - 1`).
    pub dropped: [Counter; 6],
    pub duplicates: Counter,
    /// Enqueue to dequeue, node monotonic clock.
    pub dequeue_latency_us: LatencyHistogram,
    /// Commit timestamp to handled, node wall clock.
    pub end_to_end_latency_us: LatencyHistogram,
}

impl ClassMetrics {
    /// Dropped for `reason`.
    pub fn dropped(&self, reason: DlqReason) -> u64 {
        self.dropped[reason.idx()].get()
    }

    /// Every dropped event, all reasons.
    pub fn dropped_total(&self) -> u64 {
        self.dropped.iter().map(Counter::get).sum()
    }

    /// Events whose fate is decided.
    pub fn settled(&self) -> u64 {
        self.processed.get() + self.failed.get() + self.dropped_total() + self.duplicates.get()
    }
}

/// Everything the pipeline counts.
#[derive(Debug, Default)]
pub struct PipelineMetrics {
    pub classes: [ClassMetrics; 3],
    /// Events submitted that were already below the checkpoint position (skipped, not counted above).
    pub already_processed: Counter,
    /// Events submitted after [`super::Pipeline::abort`], left to the next leader.
    pub abandoned: Counter,
    pub downgraded: Counter,
    pub retries: Counter,
    pub batch_flush_size: Counter,
    pub batch_flush_timer: Counter,
    pub batch_flush_shutdown: Counter,
    pub alerts: Counter,
    pub dlq_written: Counter,
    pub dlq_overflow: Counter,
    pub dlq_errors: Counter,
    pub redriven: Counter,
    /// Publishes refused at admission: shed batch, back-off, emergency, transactional timeout, shutting down.
    pub refused_shed: Counter,
    pub refused_backoff: Counter,
    pub refused_emergency: Counter,
    pub refused_timeout: Counter,
    pub refused_shutdown: Counter,
    /// Control-loop transitions into each level.
    pub transitions: [Counter; 4],
}

impl PipelineMetrics {
    pub fn class(&self, c: Class) -> &ClassMetrics {
        &self.classes[c.idx()]
    }

    /// Transitions into `h`.
    pub fn transitions_to(&self, h: Health) -> u64 {
        self.transitions[h as usize].get()
    }

    /// Prometheus text; `depths` are the current queue depths per class.
    pub fn render_prometheus(&self, depths: [usize; 3], health: Health) -> String {
        let mut out = String::new();
        for name in ["submitted", "processed", "failed", "duplicates"] {
            let _ = writeln!(out, "# TYPE esc_pipeline_{name}_total counter");
            for c in Class::ALL {
                let m = self.class(c);
                let v = match name {
                    "submitted" => m.submitted.get(),
                    "processed" => m.processed.get(),
                    "failed" => m.failed.get(),
                    _ => m.duplicates.get(),
                };
                let _ = writeln!(out, "esc_pipeline_{name}_total{{class=\"{c}\"}} {v}");
            }
        }
        let _ = writeln!(out, "# TYPE esc_pipeline_dropped_total counter");
        for c in Class::ALL {
            for r in DlqReason::ALL {
                let _ = writeln!(
                    out,
                    "esc_pipeline_dropped_total{{class=\"{c}\",reason=\"{r}\"}} {}",
                    self.class(c).dropped(r)
                );
            }
        }
        let _ = writeln!(out, "# TYPE esc_pipeline_queue_depth gauge");
        for c in Class::ALL {
            let _ = writeln!(out, "esc_pipeline_queue_depth{{class=\"{c}\"}} {}", depths[c.idx()]);
        }
        for (name, pick) in [
            ("dequeue", (|m: &ClassMetrics| &m.dequeue_latency_us) as fn(&ClassMetrics) -> &LatencyHistogram),
            ("end_to_end", |m: &ClassMetrics| &m.end_to_end_latency_us),
        ] {
            let _ = writeln!(out, "# TYPE esc_pipeline_{name}_latency_us summary");
            for c in Class::ALL {
                let (n, p50, p99, max) = pick(self.class(c)).summary();
                for (q, v) in [("0.5", p50), ("0.99", p99), ("1", max)] {
                    let _ =
                        writeln!(out, "esc_pipeline_{name}_latency_us{{class=\"{c}\",quantile=\"{q}\"}} {v}");
                }
                let _ = writeln!(out, "esc_pipeline_{name}_latency_us_count{{class=\"{c}\"}} {n}");
            }
        }
        let singles: [(&str, &Counter); 17] = [
            ("esc_pipeline_already_processed_total", &self.already_processed),
            ("esc_pipeline_abandoned_total", &self.abandoned),
            ("esc_pipeline_downgraded_total", &self.downgraded),
            ("esc_pipeline_retries_total", &self.retries),
            ("esc_pipeline_batch_flush_size_total", &self.batch_flush_size),
            ("esc_pipeline_batch_flush_timer_total", &self.batch_flush_timer),
            ("esc_pipeline_batch_flush_shutdown_total", &self.batch_flush_shutdown),
            ("esc_pipeline_alerts_total", &self.alerts),
            ("esc_pipeline_dlq_written_total", &self.dlq_written),
            ("esc_pipeline_dlq_overflow_total", &self.dlq_overflow),
            ("esc_pipeline_dlq_errors_total", &self.dlq_errors),
            ("esc_pipeline_redriven_total", &self.redriven),
            ("esc_pipeline_refused_shed_total", &self.refused_shed),
            ("esc_pipeline_refused_backoff_total", &self.refused_backoff),
            ("esc_pipeline_refused_emergency_total", &self.refused_emergency),
            ("esc_pipeline_refused_timeout_total", &self.refused_timeout),
            ("esc_pipeline_refused_shutdown_total", &self.refused_shutdown),
        ];
        for (name, c) in singles {
            let _ = writeln!(out, "# TYPE {name} counter\n{name} {}", c.get());
        }
        let _ = writeln!(out, "# TYPE esc_pipeline_transitions_total counter");
        for h in Health::ALL {
            let _ = writeln!(out, "esc_pipeline_transitions_total{{to=\"{h}\"}} {}", self.transitions_to(h));
        }
        let _ = writeln!(out, "# TYPE esc_pipeline_health gauge\nesc_pipeline_health {}", health as u8);
        out
    }
}
