//! Pipeline-derived topics: events no client sent, published by the leader's pipeline itself
//! (alerts on `_alerts`). The end-to-end checkers accept one only if it is exactly what the
//! pipeline's handlers raise for the event it names, as that event stands in the final log.

use std::collections::BTreeMap;

use eventstreamcore::event::StoredEvent;
use eventstreamcore::pipeline::alerts::alert_event;
use eventstreamcore::pipeline::{ALERTS_TOPIC, HandlerRegistry, Outcome};

use crate::check::LogView;

/// Whether `topic` holds events the pipeline derives from others (not published by clients).
pub fn is_derived_topic(topic: &str) -> bool {
    topic == ALERTS_TOPIC
}

/// Judges the events of derived topics against the log they were derived from (each source
/// topic's log read once).
pub struct DerivedJudge<'a> {
    log: &'a dyn LogView,
    handlers: HandlerRegistry,
    logs: BTreeMap<String, (u64, Vec<StoredEvent>)>,
}

impl<'a> DerivedJudge<'a> {
    /// A judge using the handlers the simulated members run (the defaults).
    pub fn new(log: &'a dyn LogView) -> Self {
        DerivedJudge { log, handlers: HandlerRegistry::default(), logs: BTreeMap::new() }
    }

    /// `Ok` if `alert` (an event on `_alerts`) names a source event the log holds and the handlers
    /// raise exactly this alert for it (level, topic, offset, message, headers, priority). A
    /// source that retention has removed since cannot be judged and passes.
    pub fn alert(&mut self, alert: &StoredEvent) -> Result<(), String> {
        let (topic, offset) =
            source_of(alert).ok_or_else(|| "names no source event (`LEVEL topic@offset: …`)".to_string())?;
        let log = self.log;
        let (first, events) = self
            .logs
            .entry(topic.clone())
            .or_insert_with(|| (log.first_offset(&topic), log.topic_log(&topic)));
        if offset < *first {
            return Ok(());
        }
        let Some(src) = events.get((offset - *first) as usize) else {
            return Err(format!("names {topic}@{offset}, which the log does not hold"));
        };
        match self.handlers.handle(src) {
            Outcome::Handled(raised) if raised.iter().any(|a| alert_event(a) == alert.event) => Ok(()),
            _ => Err(format!("is not an alert the handlers raise for {topic}@{offset}")),
        }
    }
}

/// The source an alert names: its `topic` header and the offset after `LEVEL topic@` in its
/// payload (the rest is compared whole against the alert the handlers raise).
fn source_of(alert: &StoredEvent) -> Option<(String, u64)> {
    let header = |name: &str| alert.event.headers.iter().find(|h| h.name == name).map(|h| h.value.clone());
    let topic = String::from_utf8(header("topic")?.to_vec()).ok()?;
    let level = String::from_utf8(header("level")?.to_vec()).ok()?;
    let payload = std::str::from_utf8(&alert.event.payload).ok()?;
    let rest = payload.strip_prefix(&format!("{level} {topic}@"))?;
    let (offset, _) = rest.split_once(':')?;
    Some((topic, offset.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventstreamcore::event::{Event, Priority};
    use eventstreamcore::pipeline::{Alert, AlertLevel};

    fn stored(offset: u64, event: Event) -> StoredEvent {
        StoredEvent { offset, timestamp_ms: 1, event }
    }

    /// A log with two `sensor/temperature` readings: 120 (a critical alert) at 0, 20 (none) at 1.
    fn log() -> BTreeMap<String, Vec<StoredEvent>> {
        let t = "sensor/temperature";
        let events = vec![
            stored(0, Event::new(t, Priority::Medium, vec![120u8, b'x'])),
            stored(1, Event::new(t, Priority::Medium, vec![20u8])),
        ];
        BTreeMap::from([(t.to_string(), events)])
    }

    fn alert(offset: u64, level: AlertLevel, message: &str) -> StoredEvent {
        let a = Alert { level, topic: "sensor/temperature".into(), offset, message: message.into() };
        stored(7, alert_event(&a))
    }

    #[test]
    fn an_alert_the_handlers_raise_passes() {
        let log = log();
        let mut judge = DerivedJudge::new(&log);
        assert_eq!(judge.alert(&alert(0, AlertLevel::Critical, "temperature 120 > 100")), Ok(()));
    }

    #[test]
    fn an_alert_for_an_event_that_raises_none_or_another_fails() {
        let log = log();
        let mut judge = DerivedJudge::new(&log);
        // The reading at 1 raises nothing; the one at 0 raises a critical alert, not a warning.
        assert!(judge.alert(&alert(1, AlertLevel::Critical, "temperature 120 > 100")).is_err());
        assert!(judge.alert(&alert(0, AlertLevel::Warning, "temperature 120 > 100")).is_err());
        assert!(judge.alert(&alert(0, AlertLevel::Critical, "temperature 121 > 100")).is_err());
    }

    #[test]
    fn an_alert_naming_an_offset_beyond_the_log_or_nothing_fails() {
        let log = log();
        let mut judge = DerivedJudge::new(&log);
        assert!(judge.alert(&alert(2, AlertLevel::Critical, "temperature 120 > 100")).is_err());
        let forged = stored(7, Event::new(ALERTS_TOPIC, Priority::High, "CRITICAL somewhere"));
        assert!(judge.alert(&forged).is_err());
    }
}
