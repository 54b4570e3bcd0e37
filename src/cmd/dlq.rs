//! `esc dlq list|redrive`: the dead-letter queue a server keeps in `<data_dir>/dlq`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use eventstreamcore::pipeline::{Dlq, DlqReason, RedriveFilter};
use eventstreamcore::rt::FileDisk;

use serde_json::json;

use super::output::{event_json, rfc3339_ms};

/// The DLQ's directory inside a server's data directory.
pub fn dlq_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("dlq")
}

/// Opens the DLQ of a data directory; a directory without one is an error, never an empty list.
fn open(data_dir: &Path) -> Result<(Arc<FileDisk>, Dlq), String> {
    if !data_dir.is_dir() {
        return Err(format!("{} is not a directory", data_dir.display()));
    }
    let dir = dlq_dir(data_dir);
    if !dir.is_dir() {
        return Err(format!(
            "no dead-letter queue in {}: a server keeps it in <data_dir>/dlq ({} does not exist); \
             pass the server's cluster.data_dir (its pipeline must be enabled)",
            data_dir.display(),
            dir.display()
        ));
    }
    let disk = Arc::new(FileDisk::open(&dir).map_err(|e| format!("{}: {e}", dir.display()))?);
    // A look from outside the server: no bound applies.
    let dlq = Dlq::open(disk.clone(), usize::MAX).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok((disk, dlq))
}

/// Prints the entries (optionally only one reason), as a table or one JSON document.
pub fn list(data_dir: &Path, reason: Option<DlqReason>, as_json: bool) -> Result<(), String> {
    let (_, dlq) = open(data_dir)?;
    let entries: Vec<_> =
        dlq.entries().into_iter().filter(|e| reason.is_none_or(|r| r == e.reason)).collect();
    if as_json {
        let list: Vec<_> = entries
            .iter()
            .map(|e| {
                json!({
                    "id": e.id,
                    "reason": e.reason.code(),
                    "at_ms": e.at_ms,
                    "at": rfc3339_ms(e.at_ms),
                    "detail": e.detail,
                    "event": event_json(&e.event),
                })
            })
            .collect();
        let doc = json!({"entries": list, "stored": dlq.len(), "overflowed": dlq.overflow()});
        println!("{doc}");
        return Ok(());
    }
    println!(
        "{:>6}  {:<17}  {:<24}  {:<28}  {:<8}  {:>16}  {:>6}  detail",
        "id", "reason", "at", "topic@offset", "priority", "producer/seq", "bytes"
    );
    for e in &entries {
        let ev = &e.event.event;
        println!(
            "{:>6}  {:<17}  {:<24}  {:<28}  {:<8}  {:>16}  {:>6}  {}",
            e.id,
            e.reason.code(),
            rfc3339_ms(e.at_ms),
            format!("{}@{}", ev.topic, e.event.offset),
            ev.priority.name(),
            format!("{}/{}", ev.producer_id, ev.sequence),
            ev.payload.len(),
            e.detail
        );
    }
    println!(
        "{} entries listed, {} stored, {} overflowed (not stored)",
        entries.len(),
        dlq.len(),
        dlq.overflow()
    );
    Ok(())
}

/// Asks the owning server to move entries back into the pipeline.
pub fn redrive(data_dir: &Path, reason: Option<DlqReason>) -> Result<(), String> {
    let (disk, dlq) = open(data_dir)?;
    let entries = dlq.entries();
    let filter = RedriveFilter { reason, up_to_id: entries.last().map(|e| e.id) };
    let n = entries.iter().filter(|e| filter.matches(e)).count();
    Dlq::request_redrive(disk.as_ref(), &filter).map_err(|e| e.to_string())?;
    println!(
        "redrive of {n} entries requested; the server owning {} applies it at its next control tick (or next start)",
        data_dir.display()
    );
    Ok(())
}
