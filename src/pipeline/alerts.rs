//! Where handler alerts go: the log, a `_alerts` topic consumers can read, or memory (tests).

use std::sync::{Arc, Mutex};

use crate::event::{Event, Priority};
use crate::rt;
use crate::service::{EventService, EventSink};

use super::handlers::{Alert, AlertLevel};

/// The topic alerts are published to.
pub const ALERTS_TOPIC: &str = "_alerts";

/// Receives every alert a handler raises. Must not block.
pub trait AlertSink: Send + Sync + std::fmt::Debug {
    fn emit(&self, alert: &Alert);
}

/// Logs alerts through `tracing` (warning and above).
#[derive(Debug, Default, Clone, Copy)]
pub struct LogAlertSink;

impl AlertSink for LogAlertSink {
    fn emit(&self, a: &Alert) {
        match a.level {
            AlertLevel::Warning => {
                tracing::warn!(topic = %a.topic, offset = a.offset, "alert: {}", a.message)
            }
            _ => {
                tracing::error!(topic = %a.topic, offset = a.offset, level = a.level.name(), "alert: {}", a.message)
            }
        }
    }
}

/// Keeps alerts in memory.
#[derive(Debug, Default, Clone)]
pub struct MemoryAlertSink(Arc<Mutex<Vec<Alert>>>);

impl MemoryAlertSink {
    pub fn alerts(&self) -> Vec<Alert> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl AlertSink for MemoryAlertSink {
    fn emit(&self, a: &Alert) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(a.clone());
    }
}

/// Publishes each alert as a HIGH event on [`ALERTS_TOPIC`] through a service (pass the node
/// itself, not a [`super::PipelinedService`] around it, so alerts are stored, not re-processed).
#[derive(Debug)]
pub struct ServiceAlertSink<S> {
    service: Arc<S>,
}

impl<S: EventService> ServiceAlertSink<S> {
    pub fn new(service: Arc<S>) -> Self {
        ServiceAlertSink { service }
    }
}

impl<S: EventService + std::fmt::Debug> AlertSink for ServiceAlertSink<S> {
    fn emit(&self, a: &Alert) {
        // The place in the log is fixed now; the task only waits for the result.
        let fut = self.service.publish(vec![alert_event(a)]);
        rt::spawn(async move {
            if let Err(err) = fut.await {
                tracing::warn!(%err, "could not publish an alert to {ALERTS_TOPIC}");
            }
        });
    }
}

/// The HIGH event on [`ALERTS_TOPIC`] that carries an alert.
pub fn alert_event(a: &Alert) -> Event {
    let mut e = Event::new(ALERTS_TOPIC, Priority::High, a.to_string());
    e.headers.push(crate::event::Header { name: "level".into(), value: a.level.name().into() });
    e.headers.push(crate::event::Header { name: "topic".into(), value: a.topic.clone().into() });
    e
}

/// Publishes each alert as an event on [`ALERTS_TOPIC`] through an [`EventSink`] (a cluster
/// member, so alerts are replicated like any other event).
#[derive(Debug)]
pub struct SinkAlertSink(pub Arc<dyn EventSink>);

impl AlertSink for SinkAlertSink {
    fn emit(&self, a: &Alert) {
        self.0.publish_detached(vec![alert_event(a)]);
    }
}

/// Sends every alert to several sinks.
#[derive(Debug, Clone, Default)]
pub struct FanoutAlertSink(pub Vec<Arc<dyn AlertSink>>);

impl AlertSink for FanoutAlertSink {
    fn emit(&self, a: &Alert) {
        for s in &self.0 {
            s.emit(a);
        }
    }
}
