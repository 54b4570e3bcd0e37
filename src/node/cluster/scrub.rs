//! The background scrub's task (issue 15): it walks this member's sealed topic segments at
//! `cluster.scrub_bytes_per_sec`, each through the disk seam and without holding the state lock
//! ([`crate::store::scrub_segment`]), and reports a bad record as a read that meets rot does
//! (`esc_topic_corrupt_records_total`, an `error` log with file and byte); its own counters are
//! `esc_scrub_bytes_total` and `esc_scrub_errors_total`. Paced by simulated-or-real sleeps
//! (`src/rt`), so it runs the same in the simulator.

use std::sync::Weak;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::*;
use crate::store::{ScrubTarget, scrub_segment};

/// Pause after a pass over every sealed segment (and while there is none).
const PASS_PAUSE: Duration = Duration::from_secs(1);

/// What the scrub read and found since this member started.
#[derive(Debug, Default)]
pub(super) struct ScrubStats {
    bytes: AtomicU64,
    errors: AtomicU64,
    passes: AtomicU64,
}

impl ScrubStats {
    /// The scrub's counters in the Prometheus text format.
    pub(super) fn metrics(&self) -> String {
        let mut out = String::new();
        for (name, help, v) in [
            (
                "esc_scrub_bytes_total",
                "bytes of sealed topic segments the background scrub read and checked",
                &self.bytes,
            ),
            (
                "esc_scrub_errors_total",
                "bad records (checksum, framing, offset) the background scrub found in sealed topic segments",
                &self.errors,
            ),
            (
                "esc_scrub_passes_total",
                "passes the background scrub completed over every sealed topic segment",
                &self.passes,
            ),
        ] {
            let v = v.load(Relaxed);
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"));
        }
        out
    }
}

/// What this member's background scrub did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrubCounters {
    /// Bytes of sealed segments read and checked.
    pub bytes: u64,
    /// Bad records found (each also counted in `esc_topic_corrupt_records_total`).
    pub errors: u64,
    /// Passes completed over every sealed segment.
    pub passes: u64,
}

impl ClusterNode {
    /// What this member's background scrub read and found so far.
    pub fn scrub_counters(&self) -> ScrubCounters {
        let s = &self.shared.scrub;
        ScrubCounters {
            bytes: s.bytes.load(Relaxed),
            errors: s.errors.load(Relaxed),
            passes: s.passes.load(Relaxed),
        }
    }
}

/// Starts the scrub of `shared`'s topics at `bytes_per_sec` (0: none). It holds the member
/// weakly and ends when the member stops.
pub(super) fn start(shared: &Arc<Shared>, bytes_per_sec: u64) {
    if bytes_per_sec > 0 {
        drop(rt::spawn(run(Arc::downgrade(shared), bytes_per_sec)));
    }
}

async fn run(node: Weak<Shared>, bytes_per_sec: u64) {
    loop {
        let Some(targets) = live(&node).map(|s| lock(&s.state).store().scrub_targets()) else { return };
        for t in targets {
            let Some(bytes) = scrub_one(&node, &t) else { return };
            // Paced on average: a segment is read at once, then the scrub rests as long as
            // reading it at the configured rate would have taken.
            rt::time::sleep(Duration::from_secs_f64(bytes as f64 / bytes_per_sec as f64)).await;
        }
        let Some(s) = live(&node) else { return };
        s.scrub.passes.fetch_add(1, Relaxed);
        drop(s);
        rt::time::sleep(PASS_PAUSE).await;
    }
}

/// The member, unless it stopped.
fn live(node: &Weak<Shared>) -> Option<Arc<Shared>> {
    node.upgrade().filter(|s| !s.stop.is_set())
}

/// Scrubs one segment and records the outcome; the bytes read (`None`: the member stopped).
fn scrub_one(node: &Weak<Shared>, t: &ScrubTarget) -> Option<u64> {
    let disk = lock(&live(node)?.state).store().disk();
    let outcome = scrub_segment(&*disk, t);
    let s = live(node)?;
    let state = lock(&s.state);
    match outcome {
        Ok(None) => {
            s.scrub.bytes.fetch_add(t.len, Relaxed);
        }
        Ok(Some(found)) => {
            if state.store().scrub_found(t, &found) {
                s.scrub.errors.fetch_add(1, Relaxed);
            }
            s.scrub.bytes.fetch_add(found.pos, Relaxed);
        }
        // Deleted by retention or cut meanwhile: nothing to check; else a read error.
        Err(e) => {
            if state.store().scrub_targets().contains(t) {
                tracing::warn!(node = s.id, file = %t.file, error = %e, "the background scrub could not read a topic segment");
            }
        }
    }
    Some(t.len)
}
