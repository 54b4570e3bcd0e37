//! What clients did and saw during a run, recorded as they go, for the checkers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use eventstreamcore::event::{Event, Header, Priority};
use eventstreamcore::node::state::Fnv64;
use eventstreamcore::rt;
use eventstreamcore::wire::AckItem;

/// Digest of an event's payload, as consumers record it (a consumer keeps no copy of what it read).
pub fn payload_digest(payload: &[u8]) -> u64 {
    let mut d = Fnv64::default();
    d.write(payload);
    d.finish()
}

/// One acknowledged event, as the client saw the ack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckRecord {
    pub client: String,
    pub producer: u64,
    pub sequence: u64,
    pub topic: String,
    pub offset: u64,
    pub duplicate: bool,
}

/// One event a client sent with an idempotency key (acked or not): everything the server must
/// store unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    pub topic: String,
    pub payload: Vec<u8>,
    pub priority: Priority,
    pub headers: Vec<Header>,
    pub key: Option<Bytes>,
}

impl Published {
    /// What of `e` the server must keep.
    pub fn of(e: &Event) -> Self {
        Published {
            topic: e.topic.clone(),
            payload: e.payload.to_vec(),
            priority: e.priority,
            headers: e.headers.clone(),
            key: e.key.clone(),
        }
    }

    /// What differs between this and a stored event (`None`: nothing).
    pub fn differs_from(&self, e: &Event) -> Option<&'static str> {
        if self.topic != e.topic {
            Some("topic")
        } else if self.payload != e.payload {
            Some("payload")
        } else if self.priority != e.priority {
            Some("priority")
        } else if self.headers != e.headers {
            Some("headers")
        } else if self.key != e.key {
            Some("partition key")
        } else {
            None
        }
    }
}

/// One event a consumer read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    pub topic: String,
    pub offset: u64,
    pub producer: u64,
    pub sequence: u64,
    /// [`payload_digest`] of the payload read.
    pub payload_digest: u64,
}

/// One completed read of a topic, for the linearizable-read check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRecord {
    pub client: String,
    pub topic: String,
    /// The read asked for linearizability (ReadIndex through the leader).
    pub linearizable: bool,
    /// Position of the read's start in the history's order of operations (see
    /// [`History::read_started`]).
    pub started: u64,
    /// One past the last offset of the topic, as the serving member answered.
    pub end_offset: u64,
    /// The offset the read asked for and how many events at most.
    pub from: u64,
    pub max: u64,
    /// The idempotency keys of the events returned (the first at `from`, then one per offset).
    pub keys: Vec<Option<(u64, u64)>>,
    /// Position of the read's end in the order of operations (set by [`History::read_done`]).
    pub completed: u64,
}

impl ReadRecord {
    /// The record of a page a client read: `read` = (topic, offset asked, most events),
    /// `started` from [`History::read_started`].
    pub fn of_page(
        client: &str,
        (topic, from, max): (&str, u64, u32),
        linearizable: bool,
        started: u64,
        page: &eventstreamcore::client::Fetched,
    ) -> ReadRecord {
        ReadRecord {
            client: client.to_string(),
            topic: topic.to_string(),
            linearizable,
            started,
            end_offset: page.end_offset,
            from,
            max: u64::from(max),
            keys: page.events.iter().map(|s| s.event.idempotency_key()).collect(),
            completed: 0,
        }
    }
}

/// The recorded history of a run. Cheap to clone (shared).
#[derive(Debug, Clone, Default)]
pub struct History {
    inner: Arc<Mutex<HistoryData>>,
    /// Set by [`History::timed`]: operations and publishes are also stamped with the simulated
    /// time since then (for the timeline's failure marks; never part of a digest).
    start: Option<rt::time::Instant>,
}

/// The recorded data.
#[derive(Debug, Clone, Default)]
pub struct HistoryData {
    /// Every keyed event sent, by (producer, sequence). A key is only ever sent with one content.
    pub published: BTreeMap<(u64, u64), Published>,
    /// Every ack received, in the order received.
    pub acks: Vec<AckRecord>,
    /// Legacy frames sent: (topic, payload) → how many times.
    pub legacy_sent: BTreeMap<(String, Vec<u8>), u64>,
    /// Expectations a client checked and found broken (e.g. "a stalled client was never dropped").
    pub violations: Vec<String>,
    /// Free-form counters of what clients did (for the run summary and the digest).
    pub counters: BTreeMap<String, u64>,
    /// Producers that pipeline past a possible refusal, so their events may be stored out of
    /// sequence order by design; exempt from the order check.
    pub unordered_producers: std::collections::BTreeSet<u64>,
    /// Every event consumers read, in the order read.
    pub consumed: Vec<Consumed>,
    /// Operations recorded so far (acks and read starts): the order in which they happened.
    pub clock: u64,
    /// For each ack in `acks`, its position in that order.
    pub ack_times: Vec<u64>,
    /// Completed reads.
    pub reads: Vec<ReadRecord>,
    /// Explicit "out of range" answers consumers moved past: (topic, asked offset, first available).
    pub retention_skips: Vec<(String, u64, u64)>,
    /// In a [`History::timed`] history: the simulated ms (since the start) of each operation, by
    /// its position in `clock` (acks, read starts and ends).
    pub op_ms: BTreeMap<u64, u64>,
    /// In a [`History::timed`] history: when each key was first published (ms since the start).
    pub published_ms: BTreeMap<(u64, u64), u64>,
    /// The members' dedup window when a plan made it short (`None`: the default 10 minutes,
    /// which no run outlasts). With one, a retried key may be stored again once the window
    /// passed by the leader-stamped times (see `check::copies_expired_apart`).
    pub dedup_window_ms: Option<u64>,
}

impl HistoryData {
    /// Advances the operation clock, stamping the new operation with `ms` when timed.
    fn tick(&mut self, ms: Option<u64>) {
        self.clock += 1;
        if let Some(ms) = ms {
            self.op_ms.insert(self.clock, ms);
        }
    }
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty history that also stamps operations and publishes with the simulated time
    /// since `start` (call only inside the runtime that `start` comes from).
    pub fn timed(start: rt::time::Instant) -> Self {
        Self { start: Some(start), ..Self::default() }
    }

    fn now_ms(&self) -> Option<u64> {
        self.start.map(|s| (rt::time::now() - s).as_millis() as u64)
    }

    fn with<T>(&self, f: impl FnOnce(&mut HistoryData) -> T) -> T {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    /// Records a keyed event about to be sent.
    pub fn published(&self, e: &Event) {
        let (producer, sequence) = (e.producer_id, e.sequence);
        let ms = self.now_ms();
        self.with(|h| {
            if let Some(ms) = ms {
                h.published_ms.entry((producer, sequence)).or_insert(ms);
            }
            let new = Published::of(e);
            let old = h.published.insert((producer, sequence), new.clone());
            if let Some(old) = old
                && old != new
            {
                h.violations
                    .push(format!("workload bug: key ({producer},{sequence}) reused with other content"));
            }
        });
    }

    /// Records an ack.
    pub fn acked(&self, rec: AckRecord) {
        let ms = self.now_ms();
        self.with(|h| {
            h.tick(ms);
            h.acks.push(rec);
            h.ack_times.push(h.clock);
        });
    }

    /// Records the acks of one frame: one `Stored` per event, in order. A count mismatch or a
    /// rejected (valid) event is a violation. Returns whether every event was stored.
    pub fn record_acks(&self, client: &str, events: &[Event], items: &[AckItem]) -> bool {
        if items.len() != events.len() {
            self.violation(format!("{client}: {} acks for {} events", items.len(), events.len()));
            return false;
        }
        let mut all = true;
        for (e, item) in events.iter().zip(items) {
            match item {
                AckItem::Stored { topic, offset, duplicate } => self.acked(AckRecord {
                    client: client.to_string(),
                    producer: e.producer_id,
                    sequence: e.sequence,
                    topic: topic.clone(),
                    offset: *offset,
                    duplicate: *duplicate,
                }),
                AckItem::Rejected(err) => {
                    self.violation(format!("{client}: valid event rejected: {err}"));
                    all = false;
                }
            }
        }
        all
    }

    /// Marks the start of a read; pass the result to [`History::read_done`]. Every ack recorded
    /// before this call completed before the read began.
    pub fn read_started(&self) -> u64 {
        let ms = self.now_ms();
        self.with(|h| {
            h.tick(ms);
            h.clock
        })
    }

    /// Records a completed read (its `completed` position is set here).
    pub fn read_done(&self, mut rec: ReadRecord) {
        let ms = self.now_ms();
        self.with(|h| {
            h.tick(ms);
            rec.completed = h.clock;
            h.reads.push(rec);
        });
    }

    /// Records a legacy frame sent.
    pub fn legacy_sent(&self, topic: &str, payload: &[u8]) {
        self.with(|h| *h.legacy_sent.entry((topic.to_string(), payload.to_vec())).or_default() += 1);
    }

    /// Records an event a consumer read at `offset` of `topic`.
    pub fn consumed(&self, topic: &str, offset: u64, e: &Event) {
        let rec = Consumed {
            topic: topic.to_string(),
            offset,
            producer: e.producer_id,
            sequence: e.sequence,
            payload_digest: payload_digest(&e.payload),
        };
        self.with(|h| h.consumed.push(rec));
    }

    /// Records an "out of range" answer: `topic` no longer holds `asked`, its first event is at `first`.
    pub fn retention_skip(&self, topic: &str, asked: u64, first: u64) {
        self.with(|h| h.retention_skips.push((topic.to_string(), asked, first)));
    }

    /// Records a broken expectation.
    pub fn violation(&self, what: impl Into<String>) {
        self.with(|h| h.violations.push(what.into()));
    }

    /// The members' dedup window is this short (a retried key may be stored again after it).
    pub fn dedup_window(&self, ms: Option<u64>) {
        self.with(|h| h.dedup_window_ms = ms);
    }

    /// Marks a producer as exempt from the per-producer order check.
    pub fn unordered(&self, producer: u64) {
        self.with(|h| h.unordered_producers.insert(producer));
    }

    /// Bumps a named counter.
    pub fn count(&self, name: &str) {
        self.with(|h| *h.counters.entry(name.to_string()).or_default() += 1);
    }

    /// A copy of everything recorded.
    pub fn snapshot(&self) -> HistoryData {
        self.with(|h| h.clone())
    }
}
