//! `[pipeline]` configuration: the topic table, class capacities and policies, the DLQ bound and
//! the control loop's thresholds. Percentages are whole numbers (0–100) so the config stays `Eq`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::event::Priority;

/// Everything the pipeline needs from the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Run the pipeline on the leader over committed events (`false`: events are only stored).
    pub enabled: bool,
    /// The table's priority for topics it does not list. The effective priority is the higher of
    /// this and the client's, so `BATCH` lets unlisted topics keep whatever the client asked for.
    pub default_priority: Priority,
    /// Exact topic names and `prefix/*` patterns mapped to a priority (longest pattern wins).
    pub topics: BTreeMap<String, Priority>,
    pub realtime: RealtimeConfig,
    pub transactional: TransactionalConfig,
    pub batch: BatchConfig,
    pub pressure: PressureConfig,
    pub dlq: DlqConfig,
    pub control: ControlConfig,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        let topics = [("sensor/*", Priority::High), ("payment", Priority::Medium), ("audit", Priority::Low)]
            .into_iter()
            .map(|(t, p)| (t.to_string(), p))
            .collect();
        PipelineConfig {
            enabled: true,
            default_priority: Priority::Medium,
            topics,
            realtime: RealtimeConfig::default(),
            transactional: TransactionalConfig::default(),
            batch: BatchConfig::default(),
            pressure: PressureConfig::default(),
            dlq: DlqConfig::default(),
            control: ControlConfig::default(),
        }
    }
}

/// The realtime class (CRITICAL and HIGH).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RealtimeConfig {
    /// Queued events; when full the oldest goes to the DLQ (reason `realtime_overflow`).
    pub capacity: usize,
    /// An event older than this (since commit) when dequeued goes to the DLQ (reason `deadline`).
    pub deadline_ms: u64,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        RealtimeConfig { capacity: 10_000, deadline_ms: 5 }
    }
}

/// The transactional class (MEDIUM and LOW).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransactionalConfig {
    /// Events admitted and not yet handled; a producer beyond this waits.
    pub capacity: usize,
    /// How long a producer waits for room before it is told "overloaded, retry after".
    pub block_timeout_ms: u64,
    /// Retries of a handler that fails transiently (after the first attempt).
    pub max_retries: u32,
    /// Backoff before the first retry; doubles each retry.
    pub retry_backoff_ms: u64,
    /// Idempotency keys remembered (oldest forgotten first).
    pub idempotency_keys: usize,
}

impl Default for TransactionalConfig {
    fn default() -> Self {
        TransactionalConfig {
            capacity: 50_000,
            block_timeout_ms: 1_000,
            max_retries: 3,
            retry_backoff_ms: 10,
            idempotency_keys: 1_000_000,
        }
    }
}

/// The batch class (BATCH).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Events held (queued or in an open window); beyond this new events go to the DLQ
    /// (reason `batch_overflow`).
    pub capacity: usize,
    /// A topic's window is flushed this long after its first event, even if no other arrives.
    pub window_ms: u64,
    /// A window is flushed as soon as it holds this many events.
    pub max_batch: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig { capacity: 100_000, window_ms: 1_000, max_batch: 500 }
    }
}

/// Realtime pressure levels, by how full the realtime queue is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PressureConfig {
    pub elevated_pct: u32,
    pub high_pct: u32,
    pub critical_pct: u32,
    /// From this level up, HIGH events are downgraded to MEDIUM (CRITICAL never is).
    pub downgrade_high_at: PressureLevel,
}

impl Default for PressureConfig {
    fn default() -> Self {
        PressureConfig {
            elevated_pct: 50,
            high_pct: 75,
            critical_pct: 90,
            downgrade_high_at: PressureLevel::High,
        }
    }
}

/// How full the realtime class is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PressureLevel {
    Normal,
    Elevated,
    High,
    Critical,
}

impl PressureConfig {
    /// The level for a fill percentage.
    pub fn level(&self, fill_pct: u32) -> PressureLevel {
        if fill_pct >= self.critical_pct {
            PressureLevel::Critical
        } else if fill_pct >= self.high_pct {
            PressureLevel::High
        } else if fill_pct >= self.elevated_pct {
            PressureLevel::Elevated
        } else {
            PressureLevel::Normal
        }
    }
}

/// The dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DlqConfig {
    /// Entries kept; beyond this new entries are counted as overflow and not stored.
    pub max_entries: usize,
}

impl Default for DlqConfig {
    fn default() -> Self {
        DlqConfig { max_entries: 100_000 }
    }
}

/// The control loop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// How often the load is evaluated (node clock).
    pub interval_ms: u64,
    /// Load (fullest class, percent) at which the pipeline is degraded: the batch class is shed.
    pub degraded_pct: u32,
    /// ... critical: producers of non-realtime events are told to back off.
    pub critical_pct: u32,
    /// ... emergency: only CRITICAL events are admitted and the batch class is paused.
    pub emergency_pct: u32,
    /// Consecutive evaluations needed for each step up or down.
    pub hysteresis: u32,
    /// Retry-after told to refused producers.
    pub retry_after_ms: u32,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            interval_ms: 100,
            degraded_pct: 60,
            critical_pct: 80,
            emergency_pct: 95,
            hysteresis: 3,
            retry_after_ms: 200,
        }
    }
}

impl PipelineConfig {
    /// Checks ranges; the error names the key.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (key, v) in [
            ("pipeline.realtime.capacity", self.realtime.capacity),
            ("pipeline.transactional.capacity", self.transactional.capacity),
            ("pipeline.transactional.idempotency_keys", self.transactional.idempotency_keys),
            ("pipeline.batch.capacity", self.batch.capacity),
            ("pipeline.batch.max_batch", self.batch.max_batch),
            ("pipeline.dlq.max_entries", self.dlq.max_entries),
        ] {
            if v == 0 {
                return Err((key, "must be at least 1".into()));
            }
        }
        for (key, v) in [
            ("pipeline.batch.window_ms", self.batch.window_ms),
            ("pipeline.control.interval_ms", self.control.interval_ms),
        ] {
            if v == 0 {
                return Err((key, "must be at least 1 ms".into()));
            }
        }
        let p = &self.pressure;
        if !(p.elevated_pct <= p.high_pct && p.high_pct <= p.critical_pct && p.critical_pct <= 100) {
            return Err(("pipeline.pressure", "need elevated_pct <= high_pct <= critical_pct <= 100".into()));
        }
        let c = &self.control;
        if !(0 < c.degraded_pct
            && c.degraded_pct < c.critical_pct
            && c.critical_pct < c.emergency_pct
            && c.emergency_pct <= 100)
        {
            return Err((
                "pipeline.control",
                "need 0 < degraded_pct < critical_pct < emergency_pct <= 100".into(),
            ));
        }
        if c.hysteresis == 0 {
            return Err(("pipeline.control.hysteresis", "must be at least 1".into()));
        }
        for t in self.topics.keys() {
            let name = t.strip_suffix('*').unwrap_or(t);
            if name.is_empty() || name.contains('*') {
                return Err((
                    "pipeline.topics",
                    format!("`{t}`: a name or `prefix/*` (`*` only at the end)"),
                ));
            }
        }
        Ok(())
    }
}
