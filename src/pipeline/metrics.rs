//! Pipeline metrics. Each event is counted once, where its fate is decided: `submitted` when it
//! enters a class, then exactly one of `processed`, `failed` (handler said invalid / retries ran
//! out — also dead-lettered), `dropped` by reason (policy: deadline, overflow, shutdown —
//! dead-lettered) or `duplicates` (idempotency key already handled).

use std::fmt::Write as _;

use crate::metrics::{Counter, LatencyHistogram, write_family, write_summary};

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
        self.render_classes(&mut out, depths);
        self.render_singles(&mut out, health);
        out
    }

    /// The per-class families: counts, drops by reason, queue depths, latency summaries.
    fn render_classes(&self, out: &mut String, depths: [usize; 3]) {
        for (name, help) in [
            ("submitted", "events that entered a class"),
            ("processed", "events handled successfully"),
            ("failed", "events the handler refused or whose retries ran out (dead-lettered)"),
            ("duplicates", "events whose idempotency key was already handled"),
        ] {
            let family = format!("esc_pipeline_{name}_total");
            write_family(out, &family, "counter", help);
            for c in Class::ALL {
                let m = self.class(c);
                let v = match name {
                    "submitted" => m.submitted.get(),
                    "processed" => m.processed.get(),
                    "failed" => m.failed.get(),
                    _ => m.duplicates.get(),
                };
                let _ = writeln!(out, "{family}{{class=\"{c}\"}} {v}");
            }
        }
        write_family(
            out,
            "esc_pipeline_dropped_total",
            "counter",
            "events dead-lettered by policy, by reason",
        );
        for c in Class::ALL {
            for r in DlqReason::ALL {
                let _ = writeln!(
                    out,
                    "esc_pipeline_dropped_total{{class=\"{c}\",reason=\"{r}\"}} {}",
                    self.class(c).dropped(r)
                );
            }
        }
        write_family(out, "esc_pipeline_queue_depth", "gauge", "events queued in each class now");
        for c in Class::ALL {
            let _ = writeln!(out, "esc_pipeline_queue_depth{{class=\"{c}\"}} {}", depths[c.idx()]);
        }
        for (name, help, pick) in [
            (
                "dequeue",
                "enqueue to dequeue, microseconds",
                (|m: &ClassMetrics| &m.dequeue_latency_us) as fn(&ClassMetrics) -> &LatencyHistogram,
            ),
            ("end_to_end", "commit timestamp to handled, microseconds", |m: &ClassMetrics| {
                &m.end_to_end_latency_us
            }),
        ] {
            let family = format!("esc_pipeline_{name}_latency_us");
            write_family(out, &family, "summary", help);
            for c in Class::ALL {
                write_summary(out, &family, &format!("class=\"{c}\""), pick(self.class(c)));
            }
        }
    }

    /// The families without a class label.
    fn render_singles(&self, out: &mut String, health: Health) {
        for (name, help, c) in self.singles() {
            write_family(out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", c.get());
        }
        write_family(
            out,
            "esc_pipeline_transitions_total",
            "counter",
            "control-loop transitions into each level",
        );
        for h in Health::ALL {
            let _ = writeln!(out, "esc_pipeline_transitions_total{{to=\"{h}\"}} {}", self.transitions_to(h));
        }
        write_family(
            out,
            "esc_pipeline_health",
            "gauge",
            "control-loop level: 0 healthy, 1 degraded, 2 critical, 3 emergency",
        );
        let _ = writeln!(out, "esc_pipeline_health {}", health as u8);
    }

    /// The counters without a label: (name, help, counter).
    fn singles(&self) -> [(&'static str, &'static str, &Counter); 17] {
        [
            (
                "esc_pipeline_already_processed_total",
                "events below the checkpoint position, skipped",
                &self.already_processed,
            ),
            (
                "esc_pipeline_abandoned_total",
                "events left to the next leader after an abort",
                &self.abandoned,
            ),
            (
                "esc_pipeline_downgraded_total",
                "HIGH events downgraded to MEDIUM under load",
                &self.downgraded,
            ),
            ("esc_pipeline_retries_total", "handler retries", &self.retries),
            (
                "esc_pipeline_batch_flush_size_total",
                "batches flushed because they were full",
                &self.batch_flush_size,
            ),
            (
                "esc_pipeline_batch_flush_timer_total",
                "batches flushed by their timer",
                &self.batch_flush_timer,
            ),
            (
                "esc_pipeline_batch_flush_shutdown_total",
                "batches flushed at shutdown",
                &self.batch_flush_shutdown,
            ),
            ("esc_pipeline_alerts_total", "alerts published", &self.alerts),
            ("esc_pipeline_dlq_written_total", "entries written to the dead-letter queue", &self.dlq_written),
            (
                "esc_pipeline_dlq_overflow_total",
                "dead-letter entries lost: the queue was full",
                &self.dlq_overflow,
            ),
            ("esc_pipeline_dlq_errors_total", "dead-letter queue write errors", &self.dlq_errors),
            (
                "esc_pipeline_redriven_total",
                "dead-lettered events moved back into the pipeline",
                &self.redriven,
            ),
            ("esc_pipeline_refused_shed_total", "publishes refused: batch class shed", &self.refused_shed),
            ("esc_pipeline_refused_backoff_total", "publishes refused: back-off", &self.refused_backoff),
            ("esc_pipeline_refused_emergency_total", "publishes refused: emergency", &self.refused_emergency),
            (
                "esc_pipeline_refused_timeout_total",
                "publishes refused: transactional admission timed out",
                &self.refused_timeout,
            ),
            (
                "esc_pipeline_refused_shutdown_total",
                "publishes refused: shutting down",
                &self.refused_shutdown,
            ),
        ]
    }
}
