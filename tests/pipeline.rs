//! The pipeline on the real runtime: each overflow policy, the deadline, retries, idempotency,
//! timer-driven batch windows, the control loop's actions, the DLQ across a restart, failover
//! from a checkpoint, and one test per defect of the original (named `defect_*`).
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // tests measure real time

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventstreamcore::event::{Event, Priority, StoredEvent};
use eventstreamcore::node::{DedupConfig, LocalNode};
use eventstreamcore::pipeline::{
    ALERTS_TOPIC, AlertLevel, Checkpoint, Class, Dlq, DlqReason, Fate, HandlerRegistry, Health,
    MemCheckpoint, MemoryAlertSink, Observer, Outcome, Pipeline, PipelineConfig, PipelinedService,
    RedriveFilter, ServiceAlertSink, StartOptions,
};
use eventstreamcore::rt::{NodeClock, SimDisk};
use eventstreamcore::service::{EventService, ServiceError};

#[derive(Default)]
struct Fates(Mutex<Vec<(Class, String, u64, Fate)>>);

impl Observer for Fates {
    fn observe(&self, class: Class, e: &StoredEvent, fate: Fate) {
        self.0.lock().unwrap().push((class, e.event.topic.clone(), e.offset, fate));
    }
}

impl Fates {
    fn all(&self) -> Vec<(Class, String, u64, Fate)> {
        self.0.lock().unwrap().clone()
    }
    fn of(&self, topic: &str, offset: u64) -> Vec<Fate> {
        self.all().into_iter().filter(|f| f.1 == topic && f.2 == offset).map(|f| f.3).collect()
    }
    fn count(&self, fate: Fate) -> usize {
        self.all().iter().filter(|f| f.3 == fate).count()
    }
}

struct Harness {
    p: Pipeline,
    clock: NodeClock,
    disk: SimDisk,
    fates: Arc<Fates>,
    alerts: MemoryAlertSink,
    next: Mutex<BTreeMap<String, u64>>,
}

fn base_cfg() -> PipelineConfig {
    // Unlisted topics keep the client's priority.
    let mut cfg = PipelineConfig { default_priority: Priority::Batch, ..PipelineConfig::default() };
    cfg.realtime.deadline_ms = 60_000; // tests that want a deadline set it
    cfg.control.interval_ms = 60_000; // tests that want the loop set it
    cfg
}

fn start_with(
    cfg: PipelineConfig,
    handlers: HandlerRegistry,
    checkpoint: Arc<dyn Checkpoint>,
    disk: SimDisk,
) -> Harness {
    let clock = NodeClock::new();
    let fates = Arc::new(Fates::default());
    let alerts = MemoryAlertSink::default();
    let opts = StartOptions {
        handlers,
        alerts: Arc::new(alerts.clone()),
        checkpoint,
        observer: Some(fates.clone()),
        handling_cost: [Duration::ZERO; 3],
    };
    let p = Pipeline::start(cfg, clock.clone(), Arc::new(disk.clone()), opts).unwrap();
    Harness { p, clock, disk, fates, alerts, next: Mutex::new(BTreeMap::new()) }
}

fn start(cfg: PipelineConfig) -> Harness {
    start_with(cfg, HandlerRegistry::default(), Arc::new(MemCheckpoint::new(1000)), SimDisk::new())
}

impl Harness {
    /// A committed event at the next offset of its topic, stamped now.
    fn stored(&self, topic: &str, priority: Priority, payload: &[u8]) -> StoredEvent {
        let mut next = self.next.lock().unwrap();
        let o = next.entry(topic.to_string()).or_insert(0);
        let offset = *o;
        *o += 1;
        StoredEvent {
            offset,
            timestamp_ms: self.clock.wall_unix_ms(),
            event: Event::new(topic, priority, payload.to_vec()),
        }
    }

    fn submit(&self, topic: &str, priority: Priority, payload: &[u8]) -> u64 {
        let e = self.stored(topic, priority, payload);
        let o = e.offset;
        self.p.submit(vec![e]);
        o
    }

    async fn wait_for(&self, what: &str, f: impl Fn(&Harness) -> bool) {
        let t0 = Instant::now();
        while !f(self) {
            assert!(t0.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

fn counting(counter: Arc<AtomicU32>) -> impl Fn(&StoredEvent) -> Outcome + Send + Sync {
    move |_e: &StoredEvent| {
        counter.fetch_add(1, Ordering::SeqCst);
        Outcome::Handled(Vec::new())
    }
}

// ---------------------------------------------------------------------------------------------
// Overflow policies and pressure
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn realtime_overflow_sends_the_oldest_to_the_dlq() {
    let mut cfg = base_cfg();
    cfg.realtime.capacity = 3;
    let h = start(cfg);
    h.p.pause(Class::Realtime);
    for _ in 0..5 {
        h.submit("alarm", Priority::Critical, b"x");
    }
    assert_eq!(h.fates.of("alarm", 0), vec![Fate::DeadLettered(DlqReason::RealtimeOverflow)]);
    assert_eq!(h.fates.of("alarm", 1), vec![Fate::DeadLettered(DlqReason::RealtimeOverflow)]);
    h.p.resume(Class::Realtime);
    h.wait_for("the rest handled", |h| h.fates.count(Fate::Processed) == 3).await;
    for o in 2..5 {
        assert_eq!(h.fates.of("alarm", o), vec![Fate::Processed]);
    }
    let dlq: Vec<_> = h.p.dlq().entries().iter().map(|e| (e.event.offset, e.reason)).collect();
    assert_eq!(dlq, vec![(0, DlqReason::RealtimeOverflow), (1, DlqReason::RealtimeOverflow)]);
    assert_eq!(h.p.metrics().class(Class::Realtime).dropped(DlqReason::RealtimeOverflow), 2);
    h.p.shutdown().await;
}

#[tokio::test]
async fn batch_overflow_refuses_new_events_to_the_dlq() {
    let mut cfg = base_cfg();
    cfg.batch.capacity = 3;
    let h = start(cfg);
    h.p.pause(Class::Batch);
    for _ in 0..5 {
        h.submit("logs", Priority::Batch, b"x");
    }
    // The *new* ones are refused, the held ones kept.
    assert_eq!(h.fates.of("logs", 3), vec![Fate::DeadLettered(DlqReason::BatchOverflow)]);
    assert_eq!(h.fates.of("logs", 4), vec![Fate::DeadLettered(DlqReason::BatchOverflow)]);
    h.p.resume(Class::Batch);
    h.p.shutdown().await;
    for o in 0..3 {
        assert_eq!(h.fates.of("logs", o), vec![Fate::Processed]);
    }
    assert_eq!(h.p.metrics().class(Class::Batch).dropped(DlqReason::BatchOverflow), 2);
}

#[tokio::test]
async fn transactional_blocks_the_producer_then_refuses_with_retry_after() {
    let mut cfg = base_cfg();
    cfg.transactional.capacity = 2;
    cfg.transactional.block_timeout_ms = 80;
    cfg.control.retry_after_ms = 321;
    let h = start(cfg);
    let two = vec![Event::new("payment", Priority::Medium, 5u32.to_le_bytes().to_vec()); 2];
    let held = h.p.admit(&two).await.expect("room for two");
    let t0 = Instant::now();
    let refused = h.p.admit(&two[..1]).await.unwrap_err();
    let waited = t0.elapsed();
    assert_eq!(refused, ServiceError::Overloaded { retry_after_ms: 321 });
    assert!(waited >= Duration::from_millis(80), "refused after {waited:?}, before the block timeout");
    assert!(waited < Duration::from_secs(5));
    assert_eq!(h.p.metrics().refused_timeout.get(), 1);
    // Realtime events need no transactional room.
    h.p.admit(&[Event::new("x", Priority::High, "y")]).await.unwrap();
    drop(held);
    h.p.admit(&two[..1]).await.expect("room again once the admission is given back");
    h.p.shutdown().await;
}

/// Original defect: a producer blocked on a full queue that nobody ever notified.
#[tokio::test]
async fn defect_a_blocked_producer_is_woken_when_room_frees() {
    let mut cfg = base_cfg();
    cfg.transactional.capacity = 1;
    cfg.transactional.block_timeout_ms = 30_000;
    let h = start(cfg);
    h.p.pause(Class::Transactional);
    let one = vec![Event::new("payment", Priority::Medium, 5u32.to_le_bytes().to_vec())];
    let first = h.p.admit(&one).await.unwrap();
    let e = h.stored("payment", Priority::Medium, &5u32.to_le_bytes());
    h.p.submit_admitted(vec![e], first);
    let p = h.p.clone();
    let t0 = Instant::now();
    let waiter = tokio::spawn(async move { p.admit(&one).await.map(|_| ()) });
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!waiter.is_finished(), "must wait while the class is full");
    h.p.resume(Class::Transactional);
    tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken, not left blocked")
        .unwrap()
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5));
    h.p.shutdown().await;
}

#[tokio::test]
async fn realtime_pressure_downgrades_high_but_never_critical() {
    let mut cfg = base_cfg();
    cfg.realtime.capacity = 4;
    let h = start(cfg);
    h.p.pause(Class::Realtime);
    assert_eq!(h.p.route("sensor/x", Priority::Low).class, Class::Realtime);
    for _ in 0..3 {
        h.submit("alarm", Priority::Critical, b"x"); // 75% full: pressure "high"
    }
    let r = h.p.route("sensor/x", Priority::Low);
    assert!(r.downgraded);
    assert_eq!((r.priority, r.class), (Priority::Medium, Class::Transactional));
    let c = h.p.route("sensor/x", Priority::Critical);
    assert_eq!((c.priority, c.class, c.downgraded), (Priority::Critical, Class::Realtime, false));
    let o = h.submit("sensor/x", Priority::High, &[20]);
    h.wait_for("downgraded event handled", |h| !h.fates.of("sensor/x", o).is_empty()).await;
    assert_eq!(h.fates.all().iter().find(|f| f.1 == "sensor/x").unwrap().0, Class::Transactional);
    assert_eq!(h.p.metrics().downgraded.get(), 1);
    h.p.resume(Class::Realtime);
    h.p.shutdown().await;
}

#[tokio::test]
async fn the_topic_table_reloads_without_a_restart() {
    let h = start(base_cfg());
    assert_eq!(h.p.route("logs/app", Priority::Batch).class, Class::Batch);
    let table = [("logs/*".to_string(), Priority::Critical)].into_iter().collect();
    h.p.reload_routes(&table, Priority::Medium);
    assert_eq!(h.p.route("logs/app", Priority::Batch).class, Class::Realtime);
    assert_eq!(h.p.route("other", Priority::Batch).class, Class::Transactional, "new default");
    h.p.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// Handlers, deadline, retries, idempotency, alerts
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn default_handlers_raise_alerts_and_dead_letter_invalid_events() {
    let h = start(base_cfg());
    let hot = h.submit("sensor/temperature", Priority::High, &[120]);
    let bad = h.submit("sensor/temperature", Priority::High, &[200]);
    let pay0 = h.submit("payment", Priority::Medium, &0u32.to_le_bytes());
    let audit = h.submit("audit", Priority::Low, b"who");
    h.p.shutdown().await;
    assert_eq!(h.fates.of("sensor/temperature", hot), vec![Fate::Processed]);
    assert_eq!(h.fates.of("sensor/temperature", bad), vec![Fate::DeadLettered(DlqReason::Invalid)]);
    assert_eq!(h.fates.of("payment", pay0), vec![Fate::DeadLettered(DlqReason::Invalid)]);
    assert_eq!(h.fates.of("audit", audit), vec![Fate::Processed]);
    let alerts = h.alerts.alerts();
    assert_eq!(alerts.len(), 1);
    assert_eq!((alerts[0].level, alerts[0].offset), (AlertLevel::Critical, hot));
    let dlq = h.p.dlq().entries();
    assert!(dlq.iter().all(|e| e.reason == DlqReason::Invalid && !e.detail.is_empty()), "{dlq:?}");
}

#[tokio::test]
async fn alerts_reach_the_alerts_topic() {
    let node = Arc::new(LocalNode::new(1, NodeClock::new(), DedupConfig::default()));
    let clock = NodeClock::new();
    let opts =
        StartOptions { alerts: Arc::new(ServiceAlertSink::new(node.clone())), ..StartOptions::default() };
    let p = Pipeline::start(base_cfg(), clock, Arc::new(SimDisk::new()), opts).unwrap();
    let svc = PipelinedService::new(node.clone(), p.clone());
    svc.publish(vec![Event::new("sensor/pressure", Priority::High, vec![250u8])]).await.unwrap();
    p.shutdown().await;
    tokio::task::yield_now().await;
    let page = node.fetch(ALERTS_TOPIC.to_string(), 0, 10).await.unwrap();
    assert_eq!(page.events.len(), 1);
    let text = String::from_utf8(page.events[0].event.payload.to_vec()).unwrap();
    assert!(text.starts_with("EMERGENCY sensor/pressure@0"), "{text}");
}

/// Original defect: the SLA was checked after handling, so a late event was counted both
/// processed and dropped. Here a late event is never handled and is counted once, as dropped.
#[tokio::test]
async fn defect_a_late_realtime_event_is_dead_lettered_and_not_handled() {
    let mut cfg = base_cfg();
    cfg.realtime.deadline_ms = 5;
    let calls = Arc::new(AtomicU32::new(0));
    let mut handlers = HandlerRegistry::empty();
    handlers.set_default(counting(calls.clone()));
    let h = start_with(cfg, handlers, Arc::new(MemCheckpoint::new(10)), SimDisk::new());
    let mut late = h.stored("alarm", Priority::Critical, b"x");
    late.timestamp_ms -= 100; // committed 100 ms ago
    let fresh = h.stored("alarm", Priority::Critical, b"y");
    h.p.submit(vec![late, fresh]);
    h.p.shutdown().await;
    assert_eq!(h.fates.of("alarm", 0), vec![Fate::DeadLettered(DlqReason::Deadline)]);
    assert_eq!(h.fates.of("alarm", 1), vec![Fate::Processed]);
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the late event's handler never ran");
    let m = h.p.metrics();
    let rt = m.class(Class::Realtime);
    assert_eq!((rt.processed.get(), rt.dropped(DlqReason::Deadline), rt.submitted.get()), (1, 1, 2));
    let e = &h.p.dlq().entries()[0];
    assert_eq!(e.reason, DlqReason::Deadline);
    assert!(e.detail.contains("deadline 5 ms"), "{}", e.detail);
}

#[tokio::test]
async fn transactional_retries_with_backoff_then_dead_letters() {
    let mut cfg = base_cfg();
    cfg.transactional.max_retries = 3;
    cfg.transactional.retry_backoff_ms = 10;
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let mut handlers = HandlerRegistry::empty();
    // "flaky" fails twice then succeeds; "down" always fails.
    handlers.register("flaky", move |_: &StoredEvent| {
        if c.fetch_add(1, Ordering::SeqCst) < 2 {
            Outcome::Transient("busy".into())
        } else {
            Outcome::Handled(vec![])
        }
    });
    let down_calls = Arc::new(AtomicU32::new(0));
    let d = down_calls.clone();
    handlers.register("down", move |_: &StoredEvent| {
        d.fetch_add(1, Ordering::SeqCst);
        Outcome::Transient("database down".into())
    });
    let h = start_with(cfg, handlers, Arc::new(MemCheckpoint::new(10)), SimDisk::new());
    let t0 = Instant::now();
    h.submit("flaky", Priority::Medium, b"x");
    h.wait_for("flaky handled", |h| !h.fates.of("flaky", 0).is_empty()).await;
    assert!(t0.elapsed() >= Duration::from_millis(30), "backoff 10 + 20 ms, took {:?}", t0.elapsed());
    assert_eq!(h.fates.of("flaky", 0), vec![Fate::Processed]);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    h.submit("down", Priority::Low, b"x");
    h.p.shutdown().await;
    assert_eq!(down_calls.load(Ordering::SeqCst), 4, "first attempt + 3 retries");
    assert_eq!(h.fates.of("down", 0), vec![Fate::DeadLettered(DlqReason::RetriesExhausted)]);
    let m = h.p.metrics();
    assert_eq!(m.retries.get(), 2 + 3);
    assert_eq!(m.class(Class::Transactional).failed.get(), 1);
    assert!(h.p.dlq().entries()[0].detail.contains("4 attempts"));
}

/// Original defect: dedup keyed by a server counter, so a client's retry was never caught. Here
/// the key is the client's (producer, sequence): the same key stored twice is handled once.
#[tokio::test]
async fn defect_transactional_effects_happen_once_per_client_idempotency_key() {
    let calls = Arc::new(AtomicU32::new(0));
    let mut handlers = HandlerRegistry::empty();
    handlers.set_default(counting(calls.clone()));
    let h = start_with(base_cfg(), handlers, Arc::new(MemCheckpoint::new(10)), SimDisk::new());
    let mut events = Vec::new();
    for _ in 0..2 {
        let mut e = h.stored("orders", Priority::Medium, b"o");
        e.event.producer_id = 42;
        e.event.sequence = 7;
        events.push(e); // same key, two different server offsets (a retry stored again)
    }
    let mut other = h.stored("orders", Priority::Medium, b"o");
    other.event.producer_id = 42;
    other.event.sequence = 8;
    events.push(other);
    h.p.submit(events);
    h.p.shutdown().await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(h.fates.of("orders", 0), vec![Fate::Processed]);
    assert_eq!(h.fates.of("orders", 1), vec![Fate::Duplicate]);
    assert_eq!(h.fates.of("orders", 2), vec![Fate::Processed]);
    assert_eq!(h.p.metrics().class(Class::Transactional).duplicates.get(), 1);
}

// ---------------------------------------------------------------------------------------------
// Batch windows
// ---------------------------------------------------------------------------------------------

/// Original defect: a batch window flushed only when the next event arrived. Here an idle
/// topic's window flushes on the node clock's timer.
#[tokio::test]
async fn defect_an_idle_batch_window_flushes_on_its_timer() {
    let mut cfg = base_cfg();
    cfg.batch.window_ms = 50;
    cfg.batch.max_batch = 100;
    let h = start(cfg);
    let t0 = Instant::now();
    h.submit("logs", Priority::Batch, b"one");
    h.submit("logs", Priority::Batch, b"two");
    h.wait_for("the timer flush", |h| h.fates.count(Fate::Processed) == 2).await;
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(50), "flushed before the window closed ({took:?})");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let m = h.p.metrics();
    assert_eq!((m.batch_flush_timer.get(), m.batch_flush_size.get()), (1, 0));
    h.p.shutdown().await;
}

/// The window is measured on the node's clock: a clock running at half speed keeps it open twice
/// as long in real time.
#[tokio::test]
async fn batch_windows_run_on_the_node_clock() {
    let mut cfg = base_cfg();
    cfg.batch.window_ms = 40;
    let h = start(cfg);
    h.clock.set_drift_ppm(-500_000);
    let t0 = Instant::now();
    h.submit("logs", Priority::Batch, b"x");
    h.wait_for("the timer flush", |h| h.fates.count(Fate::Processed) == 1).await;
    assert!(
        t0.elapsed() >= Duration::from_millis(78),
        "a 40 ms window at half speed took {:?}",
        t0.elapsed()
    );
    h.p.shutdown().await;
}

#[tokio::test]
async fn a_full_batch_window_flushes_at_once_per_topic() {
    let mut cfg = base_cfg();
    cfg.batch.window_ms = 60_000;
    cfg.batch.max_batch = 3;
    let h = start(cfg);
    for _ in 0..3 {
        h.submit("a", Priority::Batch, b"x");
    }
    h.submit("b", Priority::Batch, b"x");
    h.wait_for("the size flush", |h| h.fates.count(Fate::Processed) == 3).await;
    assert!(h.fates.of("b", 0).is_empty(), "topic b's window is still open");
    assert_eq!(h.p.metrics().batch_flush_size.get(), 1);
    h.p.shutdown().await;
    assert_eq!(h.fates.of("b", 0), vec![Fate::Processed]);
    assert_eq!(h.p.metrics().batch_flush_shutdown.get(), 1);
}

// ---------------------------------------------------------------------------------------------
// Producers, consumers, shutdown, metrics
// ---------------------------------------------------------------------------------------------

/// Original defect: several producers pushing into a single-producer queue. Here any number of
/// producers submit at once and every event is handled exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defect_many_concurrent_producers_lose_nothing() {
    let h = Arc::new(start(base_cfg()));
    let mut tasks = Vec::new();
    for t in 0..8u64 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..250u64 {
                let topic = format!("p{t}");
                let e = StoredEvent {
                    offset: i,
                    timestamp_ms: h.clock.wall_unix_ms(),
                    event: Event::new(
                        topic,
                        [Priority::Critical, Priority::Medium, Priority::Batch][i as usize % 3],
                        "x",
                    ),
                };
                h.p.submit(vec![e]);
                if i % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    h.p.shutdown().await;
    let fates = h.fates.all();
    assert_eq!(fates.len(), 2000);
    assert!(fates.iter().all(|f| f.3 == Fate::Processed));
    let mut keys: Vec<_> = fates.iter().map(|f| (f.1.clone(), f.2)).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 2000, "each event exactly once");
}

/// Original defect: a realtime queue popped by two consumers (the overflow path popped too).
/// Here eviction happens inside the producer's push under the queue's lock, and no event is
/// both evicted and handled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defect_no_realtime_event_is_both_evicted_and_handled() {
    let mut cfg = base_cfg();
    cfg.realtime.capacity = 8;
    let h =
        Arc::new(start_with(cfg, HandlerRegistry::empty(), Arc::new(MemCheckpoint::new(10)), SimDisk::new()));
    let mut tasks = Vec::new();
    for t in 0..4u64 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..500u64 {
                let e = StoredEvent {
                    offset: i,
                    timestamp_ms: h.clock.wall_unix_ms(),
                    event: Event::new(format!("r{t}"), Priority::Critical, "x"),
                };
                h.p.submit(vec![e]);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    h.p.shutdown().await;
    let fates = h.fates.all();
    assert_eq!(fates.len(), 2000, "one fate per event, never two");
    let mut keys: Vec<_> = fates.iter().map(|f| (f.1.clone(), f.2)).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 2000);
    let evicted = fates.iter().filter(|f| f.3 == Fate::DeadLettered(DlqReason::RealtimeOverflow)).count();
    assert_eq!(h.p.dlq().len(), evicted);
}

/// Original defect: queued events discarded at shutdown. Here shutdown drains every class and
/// flushes open batch windows; a submit after shutdown is dead-lettered, not dropped.
#[tokio::test]
async fn defect_shutdown_drains_every_queued_event() {
    let mut cfg = base_cfg();
    cfg.batch.window_ms = 60_000;
    let clock = NodeClock::new();
    let fates = Arc::new(Fates::default());
    let opts = StartOptions {
        observer: Some(fates.clone()),
        handling_cost: [Duration::from_millis(1); 3],
        ..StartOptions::default()
    };
    let p = Pipeline::start(cfg, clock.clone(), Arc::new(SimDisk::new()), opts).unwrap();
    let mut n = 0;
    for (topic, pr) in [("rt", Priority::High), ("tx", Priority::Low), ("bt", Priority::Batch)] {
        let events = (0..30)
            .map(|i| StoredEvent {
                offset: i,
                timestamp_ms: clock.wall_unix_ms(),
                event: Event::new(topic, pr, "x"),
            })
            .collect();
        p.submit(events);
        n += 30;
    }
    assert!(p.depths().iter().sum::<usize>() > 0, "events are still queued when shutdown starts");
    p.shutdown().await;
    assert_eq!(fates.count(Fate::Processed), n);
    p.submit(vec![StoredEvent {
        offset: 30,
        timestamp_ms: 0,
        event: Event::new("rt", Priority::High, "late"),
    }]);
    assert_eq!(fates.of("rt", 30), vec![Fate::DeadLettered(DlqReason::Shutdown)]);
    assert_eq!(p.dlq().entries()[0].reason, DlqReason::Shutdown);
    assert_eq!(
        p.admit(&[Event::new("x", Priority::High, "y")]).await.unwrap_err(),
        ServiceError::ShuttingDown
    );
}

/// Original defect: metrics counted twice. Here every submitted event is counted once, as
/// exactly one of processed / failed / dropped / duplicate, and the render shows each once.
#[tokio::test]
async fn defect_metrics_count_each_event_once() {
    let mut cfg = base_cfg();
    cfg.realtime.capacity = 4;
    cfg.batch.capacity = 4;
    let h = start(cfg);
    h.p.pause(Class::Realtime);
    h.p.pause(Class::Batch);
    for i in 0..10u8 {
        h.submit("sensor/temperature", Priority::High, &[i * 20]);
        h.submit("payment", Priority::Medium, &u32::from(i).to_le_bytes());
        h.submit("logs", Priority::Batch, b"x");
    }
    h.p.resume(Class::Realtime);
    h.p.resume(Class::Batch);
    h.p.shutdown().await;
    let m = h.p.metrics();
    let fates = h.fates.all();
    assert_eq!(fates.len(), 30);
    for c in Class::ALL {
        let cm = m.class(c);
        let of_class: Vec<_> = fates.iter().filter(|f| f.0 == c).collect();
        assert_eq!(cm.submitted.get(), of_class.len() as u64, "{c}");
        assert_eq!(cm.settled(), cm.submitted.get(), "{c}: every event counted once");
        let processed = of_class.iter().filter(|f| f.3 == Fate::Processed).count() as u64;
        assert_eq!(cm.processed.get(), processed, "{c}");
    }
    let dead = fates.iter().filter(|f| matches!(f.3, Fate::DeadLettered(_))).count();
    assert_eq!(m.dlq_written.get() as usize, dead);
    assert_eq!(h.p.dlq().len(), dead);
    let text = h.p.render_prometheus();
    let line = format!(
        "esc_pipeline_processed_total{{class=\"realtime\"}} {}",
        m.class(Class::Realtime).processed.get()
    );
    assert_eq!(text.matches(&line).count(), 1, "{text}");
}

// ---------------------------------------------------------------------------------------------
// The control loop
// ---------------------------------------------------------------------------------------------

/// Original defect: the control plane wrote to a state object nothing read. Here each level's
/// actions are visible to producers (refusals with a retry-after) and to the batch class (paused).
#[tokio::test]
async fn defect_control_loop_actions_take_effect_at_every_level() {
    let mut cfg = base_cfg();
    cfg.transactional.capacity = 100;
    cfg.transactional.block_timeout_ms = 1;
    cfg.control.hysteresis = 2;
    cfg.control.retry_after_ms = 77;
    let h = start(cfg);
    h.p.pause(Class::Transactional);
    let batch = [Event::new("logs", Priority::Batch, "x")];
    let medium = [Event::new("orders", Priority::Medium, "x")];
    let high = [Event::new("alarm", Priority::High, "x")];
    let critical = [Event::new("alarm", Priority::Critical, "x")];
    let refused = Err(ServiceError::Overloaded { retry_after_ms: 77 });
    let fill = |n: usize| {
        for _ in 0..n {
            h.submit("orders", Priority::Medium, b"x");
        }
    };
    let admitted = |r: Result<_, ServiceError>| r.map(|_| ());
    assert_eq!(admitted(h.p.admit(&batch).await), Ok(()));
    fill(65); // 65%: degraded
    assert_eq!(h.p.evaluate_control(), None, "one evaluation is not enough (hysteresis 2)");
    assert_eq!(h.p.evaluate_control().map(|t| t.to), Some(Health::Degraded));
    assert_eq!(admitted(h.p.admit(&batch).await), refused, "batch shed");
    assert_eq!(admitted(h.p.admit(&medium).await), Ok(()));
    fill(20); // 85%: critical
    h.p.evaluate_control();
    assert_eq!(h.p.evaluate_control().map(|t| t.to), Some(Health::Critical));
    assert_eq!(admitted(h.p.admit(&medium).await), refused, "transactional producers told to back off");
    assert_eq!(admitted(h.p.admit(&high).await), Ok(()));
    assert!(!h.p.is_paused(Class::Batch));
    fill(12); // 97%: emergency
    h.p.evaluate_control();
    assert_eq!(h.p.evaluate_control().map(|t| t.to), Some(Health::Emergency));
    assert_eq!(admitted(h.p.admit(&high).await), refused, "only CRITICAL in an emergency");
    assert_eq!(admitted(h.p.admit(&critical).await), Ok(()));
    assert!(h.p.is_paused(Class::Batch), "batch class paused");
    // Load goes away: back down one step per two evaluations.
    h.p.resume(Class::Transactional);
    h.wait_for("the backlog handled", |h| h.p.load_pct() == 0).await;
    let mut path = Vec::new();
    for _ in 0..6 {
        if let Some(t) = h.p.evaluate_control() {
            path.push(t.to);
        }
    }
    assert_eq!(path, vec![Health::Critical, Health::Degraded, Health::Healthy]);
    assert!(!h.p.is_paused(Class::Batch));
    assert_eq!(admitted(h.p.admit(&batch).await), Ok(()));
    let m = h.p.metrics();
    assert_eq!(Health::ALL.map(|l| m.transitions_to(l)), [1, 2, 2, 1], "every transition counted");
    assert_eq!((m.refused_shed.get(), m.refused_backoff.get(), m.refused_emergency.get()), (1, 1, 1));
    h.p.shutdown().await;
}

#[tokio::test]
async fn the_control_loop_runs_on_the_node_clock() {
    let mut cfg = base_cfg();
    cfg.transactional.capacity = 10;
    cfg.control.interval_ms = 5;
    cfg.control.hysteresis = 2;
    let h = start(cfg);
    h.p.pause(Class::Transactional);
    for _ in 0..7 {
        h.submit("orders", Priority::Medium, b"x");
    }
    h.wait_for("degraded by the loop", |h| h.p.health() == Health::Degraded).await;
    h.p.resume(Class::Transactional);
    h.wait_for("healthy again", |h| h.p.health() == Health::Healthy).await;
    h.p.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// DLQ across restarts, redrive, failover
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn dlq_survives_a_restart_and_a_redrive_request_is_applied_at_start() {
    let disk = SimDisk::new();
    let h =
        start_with(base_cfg(), HandlerRegistry::default(), Arc::new(MemCheckpoint::new(10)), disk.clone());
    h.submit("payment", Priority::Medium, &0u32.to_le_bytes());
    h.submit("payment", Priority::Medium, &2_000_000u32.to_le_bytes());
    h.submit("payment", Priority::Medium, &5u32.to_le_bytes());
    h.p.shutdown().await;
    assert_eq!(h.p.dlq().len(), 2);
    disk.power_fail(None);
    // What `esc dlq redrive` does: leave a request for the owner of the DLQ.
    let again = Dlq::open(Arc::new(disk.clone()), 100).unwrap();
    assert_eq!(again.entries().iter().map(|e| e.event.offset).collect::<Vec<_>>(), vec![0, 1]);
    Dlq::request_redrive(&disk, &RedriveFilter { reason: Some(DlqReason::Invalid), up_to_id: None }).unwrap();
    // The fixed handler now accepts them.
    let mut handlers = HandlerRegistry::empty();
    let calls = Arc::new(AtomicU32::new(0));
    handlers.register("payment", counting(calls.clone()));
    let h2 = start_with(base_cfg(), handlers, Arc::new(MemCheckpoint::new(10)), h.disk.clone());
    h2.p.shutdown().await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(h2.p.metrics().redriven.get(), 2);
    assert!(h2.p.dlq().is_empty());
    assert!(Dlq::open(Arc::new(disk), 100).unwrap().is_empty(), "the redrive is durable");
}

/// Processing survives failover: the old leader's checkpoint says where to resume; realtime is
/// at-least-once, transactional effects happen once per idempotency key.
#[tokio::test]
async fn a_new_leader_resumes_from_the_checkpoint() {
    let node = Arc::new(LocalNode::new(1, NodeClock::new(), DedupConfig::default()));
    let checkpoint = Arc::new(MemCheckpoint::new(10_000));
    let effects: Arc<Mutex<BTreeMap<(u64, u64), u32>>> = Arc::default();
    let handled = Arc::new(AtomicU64::new(0));
    let registry = || {
        let mut r = HandlerRegistry::empty();
        let (fx, n) = (effects.clone(), handled.clone());
        r.set_default(move |e: &StoredEvent| {
            n.fetch_add(1, Ordering::SeqCst);
            if let Some(k) = e.event.idempotency_key() {
                *fx.lock().unwrap().entry(k).or_default() += 1;
            }
            Outcome::Handled(vec![])
        });
        r
    };
    let mut cfg = base_cfg();
    cfg.transactional.block_timeout_ms = 10_000;
    let opts = |checkpoint: Arc<MemCheckpoint>| StartOptions {
        handlers: registry(),
        checkpoint,
        handling_cost: [Duration::ZERO, Duration::from_millis(1), Duration::ZERO],
        ..StartOptions::default()
    };
    let disk = SimDisk::new();
    let old =
        Pipeline::start(cfg.clone(), NodeClock::new(), Arc::new(disk.clone()), opts(checkpoint.clone()))
            .unwrap();
    let svc = PipelinedService::new(node.clone(), old.clone());
    for seq in 1..=200u64 {
        let mut e = Event::new("orders", Priority::Medium, "x");
        e.producer_id = 9;
        e.sequence = seq;
        svc.publish(vec![e]).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    let left = old.abort();
    let resume_at = checkpoint.positions().get("orders").copied().unwrap_or(0);
    assert!(left > 0 && resume_at > 0 && resume_at < 200, "crash mid-stream: {left} queued, at {resume_at}");
    // The new leader: same replicated checkpoint, reads the log from there.
    let new = Pipeline::start(cfg, NodeClock::new(), Arc::new(disk), opts(checkpoint.clone())).unwrap();
    let page = node.fetch("orders".to_string(), resume_at, 1000).await.unwrap();
    new.submit(page.events);
    new.shutdown().await;
    let fx = effects.lock().unwrap();
    assert_eq!(fx.len(), 200, "every event's effect happened");
    assert!(fx.values().all(|&n| n == 1), "exactly once per idempotency key");
    assert_eq!(checkpoint.positions()["orders"], 200);
}

#[tokio::test]
async fn the_pipelined_service_processes_what_it_stores_once() {
    let node = Arc::new(LocalNode::new(1, NodeClock::new(), DedupConfig::default()));
    let fates = Arc::new(Fates::default());
    let opts = StartOptions { observer: Some(fates.clone()), ..StartOptions::default() };
    let p = Pipeline::start(base_cfg(), NodeClock::new(), Arc::new(SimDisk::new()), opts).unwrap();
    let svc = PipelinedService::new(node.clone(), p.clone());
    let mut e = Event::new("audit", Priority::Low, "who did it");
    e.producer_id = 5;
    e.sequence = 1;
    let first = svc.publish(vec![e.clone()]).await.unwrap();
    let retry = svc.publish(vec![e]).await.unwrap();
    assert!(!first[0].duplicate && retry[0].duplicate);
    p.shutdown().await;
    assert_eq!(fates.all().len(), 1, "the duplicate publish is not processed again");
    assert_eq!(fates.of("audit", 0), vec![Fate::Processed]);
}

#[tokio::test]
async fn a_disk_checkpoint_survives_a_restart_of_the_node() {
    let disk = SimDisk::new();
    let cp = Arc::new(eventstreamcore::pipeline::DiskCheckpoint::open(Arc::new(disk.clone()), 100).unwrap());
    let h = start_with(base_cfg(), HandlerRegistry::empty(), cp, disk.clone());
    for seq in 0..5u64 {
        let mut e = h.stored("orders", Priority::Medium, b"x");
        e.event.producer_id = 1;
        e.event.sequence = seq;
        h.p.submit(vec![e]);
    }
    h.p.shutdown().await;
    disk.power_fail(None);
    let cp = eventstreamcore::pipeline::DiskCheckpoint::open(Arc::new(disk), 100).unwrap();
    assert_eq!(cp.positions()["orders"], 5);
    assert!((0..5).all(|s| cp.is_handled((1, s))));
}

/// Dead letters decided in one submit share one DLQ write and one fsync (the submit path is the
/// leader's apply path; an fsync per evicted event would stall it under exactly the overload
/// that evicts).
#[tokio::test]
async fn dead_letters_of_one_submit_share_one_fsync() {
    let mut cfg = base_cfg();
    cfg.realtime.capacity = 1;
    let h = start(cfg);
    h.p.pause(Class::Realtime);
    h.submit("alarm", Priority::Critical, b"first"); // creates dlq.log on the first eviction below
    let events: Vec<_> = (0..100).map(|_| h.stored("alarm", Priority::Critical, b"x")).collect();
    let before = h.disk.stats().syncs;
    h.p.submit(events);
    let syncs = h.disk.stats().syncs - before;
    assert_eq!(h.p.dlq().len(), 100);
    assert!(syncs <= 2, "{syncs} fsyncs for one submit (file + directory at most)");
    h.p.resume(Class::Realtime);
    h.p.shutdown().await;
}

/// A DLQ that refuses a dead letter (its write and the rewrite repairing it both fail: poisoned)
/// loses nothing acknowledged: the checkpoint does not advance past the event, so a restart
/// handles it again, and the refusal is counted.
#[tokio::test]
async fn a_refused_dead_letter_holds_the_checkpoint_before_its_event() {
    use eventstreamcore::rt::DiskFault;
    let h = start(base_cfg());
    h.disk.inject(DiskFault::FailSyncs(2));
    let bad = h.submit("sensor/temperature", Priority::High, &[200]);
    h.wait_for("the dead letter", |h| !h.fates.of("sensor/temperature", bad).is_empty()).await;
    let ok = h.submit("sensor/temperature", Priority::High, &[20]);
    h.p.shutdown().await;
    assert_eq!(h.fates.of("sensor/temperature", ok), vec![Fate::Processed]);
    assert!(h.p.dlq().is_poisoned());
    assert!(h.p.dlq().is_empty());
    assert_eq!(h.p.metrics().dlq_errors.get(), 1);
    assert!(h.p.render_prometheus().contains("\nesc_pipeline_dlq_poisoned 1\n"));
    assert_eq!(
        h.p.positions().get("sensor/temperature").copied().unwrap_or(0),
        bad,
        "the checkpoint must not pass an event the DLQ refused"
    );
}
