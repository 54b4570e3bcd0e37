//! Event handlers and their registry (exact topic, else longest `prefix/*`, else the default), plus
//! the original's default handlers and the alerts they raise.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use crate::event::StoredEvent;

/// How serious an alert is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AlertLevel {
    Warning,
    Critical,
    Emergency,
}

impl AlertLevel {
    pub fn name(self) -> &'static str {
        match self {
            AlertLevel::Warning => "WARNING",
            AlertLevel::Critical => "CRITICAL",
            AlertLevel::Emergency => "EMERGENCY",
        }
    }
}

/// An alert raised by a handler about one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub level: AlertLevel,
    pub topic: String,
    pub offset: u64,
    pub message: String,
}

impl fmt::Display for Alert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}@{}: {}", self.level.name(), self.topic, self.offset, self.message)
    }
}

/// What a handler made of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Handled; these alerts go to the alert sink.
    Handled(Vec<Alert>),
    /// The event itself is bad; it goes to the DLQ (reason `invalid`) without retries.
    Invalid(String),
    /// Handling failed for a reason that may pass (transactional retries it with backoff).
    Transient(String),
}

/// Handles events of some topics. Handlers are synchronous and must not block.
pub trait Handler: Send + Sync {
    fn handle(&self, event: &StoredEvent) -> Outcome;
}

impl<F: Fn(&StoredEvent) -> Outcome + Send + Sync> Handler for F {
    fn handle(&self, event: &StoredEvent) -> Outcome {
        self(event)
    }
}

/// Handlers by topic: exact name, else the longest matching `prefix/*`, else the default.
#[derive(Clone)]
pub struct HandlerRegistry {
    exact: BTreeMap<String, Arc<dyn Handler>>,
    prefixes: Vec<(String, Arc<dyn Handler>)>,
    default: Arc<dyn Handler>,
}

impl fmt::Debug for HandlerRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerRegistry")
            .field("exact", &self.exact.keys().collect::<Vec<_>>())
            .field("prefixes", &self.prefixes.iter().map(|p| &p.0).collect::<Vec<_>>())
            .finish()
    }
}

impl Default for HandlerRegistry {
    /// The original's handlers: `sensor/temperature`, `sensor/pressure`, `payment`, `audit`.
    fn default() -> Self {
        let mut r = HandlerRegistry::empty();
        r.register("sensor/temperature", temperature);
        r.register("sensor/pressure", pressure);
        r.register("payment", payment);
        r.register("audit", audit);
        r
    }
}

impl HandlerRegistry {
    /// No topic handlers; the default accepts everything.
    pub fn empty() -> Self {
        HandlerRegistry {
            exact: BTreeMap::new(),
            prefixes: Vec::new(),
            default: Arc::new(|_: &StoredEvent| Outcome::Handled(Vec::new())),
        }
    }

    /// Registers `h` for a topic name or a `prefix/*` pattern (replacing an earlier one).
    pub fn register(&mut self, pattern: &str, h: impl Handler + 'static) {
        let h: Arc<dyn Handler> = Arc::new(h);
        match pattern.strip_suffix('*') {
            Some(prefix) => {
                self.prefixes.retain(|(p, _)| p != prefix);
                self.prefixes.push((prefix.to_string(), h));
                self.prefixes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
            }
            None => {
                self.exact.insert(pattern.to_string(), h);
            }
        }
    }

    /// Replaces the default handler.
    pub fn set_default(&mut self, h: impl Handler + 'static) {
        self.default = Arc::new(h);
    }

    /// The handler for `topic`.
    pub fn lookup(&self, topic: &str) -> &dyn Handler {
        if let Some(h) = self.exact.get(topic) {
            return h.as_ref();
        }
        match self.prefixes.iter().find(|(p, _)| topic.starts_with(p.as_str())) {
            Some((_, h)) => h.as_ref(),
            None => self.default.as_ref(),
        }
    }

    /// Handles one event with its handler.
    pub fn handle(&self, event: &StoredEvent) -> Outcome {
        self.lookup(&event.event.topic).handle(event)
    }
}

fn alert(e: &StoredEvent, level: AlertLevel, message: String) -> Alert {
    Alert { level, topic: e.event.topic.clone(), offset: e.offset, message }
}

/// `sensor/temperature`: first byte; > 150 invalid, > 100 critical alert, > 80 warning.
pub fn temperature(e: &StoredEvent) -> Outcome {
    let Some(&t) = e.event.payload.first() else {
        return Outcome::Invalid("empty temperature reading".into());
    };
    match t {
        151.. => Outcome::Invalid(format!("temperature {t} out of range")),
        101..=150 => Outcome::Handled(vec![alert(e, AlertLevel::Critical, format!("temperature {t} > 100"))]),
        81..=100 => Outcome::Handled(vec![alert(e, AlertLevel::Warning, format!("temperature {t} > 80"))]),
        _ => Outcome::Handled(Vec::new()),
    }
}

/// `sensor/pressure`: first byte; > 200 emergency alert, > 150 warning.
pub fn pressure(e: &StoredEvent) -> Outcome {
    let Some(&p) = e.event.payload.first() else {
        return Outcome::Invalid("empty pressure reading".into());
    };
    match p {
        201.. => Outcome::Handled(vec![alert(e, AlertLevel::Emergency, format!("pressure {p} > 200"))]),
        151..=200 => Outcome::Handled(vec![alert(e, AlertLevel::Warning, format!("pressure {p} > 150"))]),
        _ => Outcome::Handled(Vec::new()),
    }
}

/// `payment`: amount = u32 little-endian from the first 4 bytes; 0 or > 1,000,000 invalid.
pub fn payment(e: &StoredEvent) -> Outcome {
    let Some(bytes) = e.event.payload.get(..4) else {
        return Outcome::Invalid("payment shorter than 4 bytes".into());
    };
    let amount = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if amount == 0 || amount > 1_000_000 {
        Outcome::Invalid(format!("payment amount {amount} outside 1..=1000000"))
    } else {
        Outcome::Handled(Vec::new())
    }
}

/// `audit`: any non-empty payload.
pub fn audit(e: &StoredEvent) -> Outcome {
    if e.event.payload.is_empty() {
        Outcome::Invalid("empty audit record".into())
    } else {
        Outcome::Handled(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, Priority};

    fn ev(topic: &str, payload: &[u8]) -> StoredEvent {
        StoredEvent {
            offset: 7,
            timestamp_ms: 0,
            event: Event::new(topic, Priority::Medium, payload.to_vec()),
        }
    }

    fn levels(o: Outcome) -> Result<Vec<AlertLevel>, String> {
        match o {
            Outcome::Handled(a) => Ok(a.into_iter().map(|a| a.level).collect()),
            Outcome::Invalid(r) | Outcome::Transient(r) => Err(r),
        }
    }

    #[test]
    fn temperature_rules() {
        let r = HandlerRegistry::default();
        let t = |b: u8| levels(r.handle(&ev("sensor/temperature", &[b])));
        assert_eq!(t(20), Ok(vec![]));
        assert_eq!(t(80), Ok(vec![]));
        assert_eq!(t(81), Ok(vec![AlertLevel::Warning]));
        assert_eq!(t(100), Ok(vec![AlertLevel::Warning]));
        assert_eq!(t(101), Ok(vec![AlertLevel::Critical]));
        assert_eq!(t(150), Ok(vec![AlertLevel::Critical]));
        assert!(t(151).is_err());
        assert!(levels(r.handle(&ev("sensor/temperature", &[]))).is_err());
    }

    #[test]
    fn pressure_rules() {
        let r = HandlerRegistry::default();
        let p = |b: u8| levels(r.handle(&ev("sensor/pressure", &[b])));
        assert_eq!(p(150), Ok(vec![]));
        assert_eq!(p(151), Ok(vec![AlertLevel::Warning]));
        assert_eq!(p(200), Ok(vec![AlertLevel::Warning]));
        assert_eq!(p(201), Ok(vec![AlertLevel::Emergency]));
    }

    #[test]
    fn payment_rules() {
        let r = HandlerRegistry::default();
        let pay = |amount: u32| levels(r.handle(&ev("payment", &amount.to_le_bytes())));
        assert!(pay(0).is_err());
        assert_eq!(pay(1), Ok(vec![]));
        assert_eq!(pay(1_000_000), Ok(vec![]));
        assert!(pay(1_000_001).is_err());
        // Little-endian: bytes 40 42 0F 00 = 1_000_000.
        assert_eq!(levels(r.handle(&ev("payment", &[0x40, 0x42, 0x0F, 0x00, 0xFF]))), Ok(vec![]));
        assert!(levels(r.handle(&ev("payment", &[1, 2, 3]))).is_err());
    }

    #[test]
    fn audit_rules() {
        let r = HandlerRegistry::default();
        assert_eq!(levels(r.handle(&ev("audit", b"x"))), Ok(vec![]));
        assert!(levels(r.handle(&ev("audit", b""))).is_err());
    }

    #[test]
    fn lookup_is_exact_then_longest_prefix_then_default() {
        let mut r = HandlerRegistry::empty();
        r.register("a/*", |_: &StoredEvent| Outcome::Invalid("a".into()));
        r.register("a/b/*", |_: &StoredEvent| Outcome::Invalid("ab".into()));
        r.register("a/b/c", |_: &StoredEvent| Outcome::Invalid("abc".into()));
        let who = |t: &str| match r.handle(&ev(t, b"")) {
            Outcome::Invalid(s) => s,
            _ => "default".into(),
        };
        assert_eq!(who("a/b/c"), "abc");
        assert_eq!(who("a/b/d"), "ab");
        assert_eq!(who("a/x"), "a");
        assert_eq!(who("b"), "default");
    }
}
