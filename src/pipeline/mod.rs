//! The event pipeline: committed events are routed by topic and priority to three classes
//! (realtime, transactional, batch), each drained by one processor task with a handler registry.
//! Events that cannot be handled go to a durable dead-letter queue with a reason; a control loop on
//! the node clock sheds, backs off and pauses under load. Processing happens after commit, on the
//! leader; [`Checkpoint`] records how far it got so a new leader resumes there.
//!
//! Every event submitted meets exactly one fate — processed, dead-lettered with a reason, or
//! skipped as a duplicate of a handled idempotency key — and is counted once, where that is
//! decided. Producers are refused *before* their events are stored ([`Pipeline::admit`]); nothing
//! committed is dropped without a DLQ entry (or, past the DLQ bound, a counted overflow).

pub mod alerts;
pub mod checkpoint;
pub mod config;
pub mod control;
pub mod dlq;
pub mod handlers;
mod leader;
pub mod metrics;
mod queue;
pub mod routing;
mod service;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

pub use alerts::{ALERTS_TOPIC, AlertSink, FanoutAlertSink, LogAlertSink, MemoryAlertSink, ServiceAlertSink};
pub use checkpoint::{Checkpoint, DiskCheckpoint, MemCheckpoint};
pub use config::{PipelineConfig, PressureLevel};
pub use control::{Controller, Health, Transition};
pub use dlq::{Dlq, DlqEntry, DlqError, DlqReason, RedriveFilter};
pub use handlers::{Alert, AlertLevel, Handler, HandlerRegistry, Outcome};
pub use leader::PipelineSetup;
pub use metrics::PipelineMetrics;
pub use routing::{Class, Route, RoutingTable};
pub use service::PipelinedService;

use crate::event::{Event, Priority, StoredEvent};
use crate::rt::sync::{Latch, Notify};
use crate::rt::{self, Disk, JoinHandle, NodeClock};
use crate::service::ServiceError;
use checkpoint::Progress;
use queue::{ClassQueue, Item};

/// The fate of one submitted event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fate {
    Processed,
    /// Dead-lettered (stored in the DLQ, or counted as DLQ overflow) for this reason.
    DeadLettered(DlqReason),
    /// Its idempotency key was already handled; its effect is not repeated.
    Duplicate,
}

/// Sees every event's fate (for the simulator's checkers and tests).
pub trait Observer: Send + Sync {
    fn observe(&self, class: Class, event: &StoredEvent, fate: Fate);
}

/// One event's decided fate, waiting to be recorded.
struct Settle {
    class: Class,
    item: Item,
    fate: Fate,
    detail: String,
}

/// What [`Pipeline::start`] needs besides the config.
pub struct StartOptions {
    pub handlers: HandlerRegistry,
    pub alerts: Arc<dyn AlertSink>,
    pub checkpoint: Arc<dyn Checkpoint>,
    pub observer: Option<Arc<dyn Observer>>,
    /// Node-clock time each event takes to handle, per class (simulated work; zero in production).
    pub handling_cost: [Duration; 3],
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            handlers: HandlerRegistry::default(),
            alerts: Arc::new(LogAlertSink),
            checkpoint: Arc::new(MemCheckpoint::new(1_000_000)),
            observer: None,
            handling_cost: [Duration::ZERO; 3],
        }
    }
}

impl StartOptions {
    /// Defaults, with an in-memory checkpoint sized by `transactional.idempotency_keys`.
    pub fn for_config(cfg: &PipelineConfig) -> Self {
        StartOptions {
            checkpoint: Arc::new(MemCheckpoint::new(cfg.transactional.idempotency_keys)),
            ..StartOptions::default()
        }
    }
}

/// Why the pipeline could not start.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("invalid config: {0}: {1}")]
    Config(&'static str, String),
    #[error(transparent)]
    Dlq(#[from] DlqError),
}

/// Reserved room in the transactional class for an admitted publish; given back when dropped
/// unless its events were submitted.
#[derive(Debug)]
pub struct Admission {
    inner: Arc<Inner>,
    reserved: usize,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if self.reserved > 0 {
            self.inner.gate_release(self.reserved);
        }
    }
}

/// The pipeline. Cheap to clone; clones share one pipeline.
#[derive(Debug, Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: PipelineConfig,
    clock: NodeClock,
    routes: RwLock<RoutingTable>,
    queues: [ClassQueue; 3],
    /// Transactional events admitted or queued or being handled (bounded by its capacity).
    gate_used: Mutex<usize>,
    gate_notify: Notify,
    dlq: Dlq,
    handlers: HandlerRegistry,
    alerts: Arc<dyn AlertSink>,
    checkpoint: Arc<dyn Checkpoint>,
    observer: Option<Arc<dyn Observer>>,
    cost: [Duration; 3],
    progress: Mutex<Progress>,
    controller: Mutex<Controller>,
    health: AtomicU8,
    paused: [AtomicBool; 3],
    pause_notify: Notify,
    closing: Latch,
    metrics: Arc<PipelineMetrics>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").field("health", &self.health()).finish_non_exhaustive()
    }
}

impl Pipeline {
    /// Validates `cfg`, opens the DLQ on `dlq_disk`, and spawns the three processors and the
    /// control loop on the current runtime. A pending redrive request is applied at once.
    pub fn start(
        cfg: PipelineConfig,
        clock: NodeClock,
        dlq_disk: Arc<dyn Disk>,
        opts: StartOptions,
    ) -> Result<Pipeline, PipelineError> {
        cfg.validate().map_err(|(k, m)| PipelineError::Config(k, m))?;
        let dlq = Dlq::open(dlq_disk, cfg.dlq.max_entries)?;
        // An offset may wait behind every event the classes can hold; more held than twice that
        // means one never finishes.
        let held = cfg.realtime.capacity + cfg.transactional.capacity + cfg.batch.capacity;
        let progress = Progress::new(opts.checkpoint.positions()).with_max_ahead(2 * held + 1024);
        let inner = Arc::new(Inner {
            routes: RwLock::new(RoutingTable::new(&cfg.topics, cfg.default_priority)),
            controller: Mutex::new(Controller::new(cfg.control.clone())),
            cfg,
            clock,
            queues: Default::default(),
            gate_used: Mutex::new(0),
            gate_notify: Notify::new(),
            dlq,
            handlers: opts.handlers,
            alerts: opts.alerts,
            checkpoint: opts.checkpoint,
            observer: opts.observer,
            cost: opts.handling_cost,
            progress: Mutex::new(progress),
            health: AtomicU8::new(Health::Healthy as u8),
            paused: Default::default(),
            pause_notify: Notify::new(),
            closing: Latch::new(),
            metrics: Arc::new(PipelineMetrics::default()),
            tasks: Mutex::new(Vec::new()),
        });
        let tasks = vec![
            rt::spawn(run_realtime(inner.clone())),
            rt::spawn(run_transactional(inner.clone())),
            rt::spawn(run_batch(inner.clone())),
            rt::spawn(run_control(inner.clone())),
        ];
        *inner.tasks.lock().unwrap_or_else(|e| e.into_inner()) = tasks;
        let p = Pipeline { inner };
        p.apply_redrive_request();
        Ok(p)
    }

    /// Producer-side admission, before the events are stored. Refuses (with a retry-after) what
    /// the control loop sheds, and waits up to `transactional.block_timeout_ms` for room in the
    /// transactional class, then refuses. Keep the [`Admission`] until the events are submitted.
    pub async fn admit(&self, events: &[Event]) -> Result<Admission, ServiceError> {
        let n = self.inner.check_policy(events)?;
        let inner = &self.inner;
        if inner.gate_try_reserve(n) {
            return Ok(Admission { inner: inner.clone(), reserved: n });
        }
        let deadline = inner.clock.mono() + Duration::from_millis(inner.cfg.transactional.block_timeout_ms);
        loop {
            let notified = inner.gate_notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if inner.closing.is_set() {
                inner.metrics.refused_shutdown.inc();
                return Err(ServiceError::ShuttingDown);
            }
            if inner.gate_try_reserve(n) {
                return Ok(Admission { inner: inner.clone(), reserved: n });
            }
            if inner.clock.mono() >= deadline {
                inner.metrics.refused_timeout.inc();
                return Err(ServiceError::Overloaded { retry_after_ms: inner.cfg.control.retry_after_ms });
            }
            rt::select! {
                biased;
                _ = notified => {}
                _ = inner.clock.sleep_until(deadline) => {}
            }
        }
    }

    /// Admission without waiting: `Ok(None)` if the publish would have to wait for room.
    pub fn try_admit(&self, events: &[Event]) -> Result<Option<Admission>, ServiceError> {
        let n = self.inner.check_policy(events)?;
        Ok(self.inner.gate_try_reserve(n).then(|| Admission { inner: self.inner.clone(), reserved: n }))
    }

    /// Hands committed events to the pipeline (in commit order per topic), using the room an
    /// admission reserved.
    pub fn submit_admitted(&self, events: Vec<StoredEvent>, mut admission: Admission) {
        let mut dead = Vec::new();
        for e in events {
            self.inner.enqueue(e, Some(&mut admission), None, &mut dead);
        }
        self.inner.settle_all(dead);
    }

    /// Hands committed events to the pipeline that were not admitted here (a new leader resuming
    /// from the checkpoint, events replicated from elsewhere). Never refuses: committed events are
    /// queued or dead-lettered.
    pub fn submit(&self, events: Vec<StoredEvent>) {
        let mut dead = Vec::new();
        for e in events {
            self.inner.enqueue(e, None, None, &mut dead);
        }
        self.inner.settle_all(dead);
    }

    /// Moves matching DLQ entries back into the pipeline; returns how many. Each entry leaves the
    /// DLQ only once its event is settled again (a crash in between keeps it there). A realtime
    /// redrive's deadline runs from the redrive, not from the original commit.
    pub fn redrive(&self, filter: &RedriveFilter) -> Result<usize, DlqError> {
        let entries = self.inner.dlq.begin_redrive(filter);
        let n = entries.len();
        let mut dead = Vec::new();
        for e in entries {
            self.inner.metrics.redriven.inc();
            self.inner.enqueue(e.event, None, Some(e.id), &mut dead);
        }
        self.inner.settle_all(dead);
        Ok(n)
    }

    fn apply_redrive_request(&self) {
        match self.inner.dlq.take_redrive_request() {
            Ok(Some(filter)) => match self.redrive(&filter) {
                Ok(n) => tracing::info!(entries = n, ?filter, "dlq: redrive request applied"),
                Err(e) => tracing::error!(%e, "dlq: redrive failed"),
            },
            Ok(None) => {}
            Err(e) => tracing::error!(%e, "dlq: cannot read the redrive request"),
        }
    }

    /// Replaces the topic table (no restart needed).
    pub fn reload_routes(&self, topics: &BTreeMap<String, Priority>, default: Priority) {
        let table = RoutingTable::new(topics, default);
        *self.inner.routes.write().unwrap_or_else(|e| e.into_inner()) = table;
        tracing::info!(entries = topics.len(), default = %default, "pipeline: topic table reloaded");
    }

    /// Where an event would go now.
    pub fn route(&self, topic: &str, client: Priority) -> Route {
        self.inner.route(topic, client)
    }

    /// Stops a class's processor (events queue up, subject to the class's overflow policy).
    pub fn pause(&self, class: Class) {
        self.inner.paused[class.idx()].store(true, Ordering::SeqCst);
        tracing::info!(%class, "pipeline: class paused");
    }

    /// Restarts a paused class.
    pub fn resume(&self, class: Class) {
        self.inner.paused[class.idx()].store(false, Ordering::SeqCst);
        self.inner.pause_notify.notify_waiters();
        tracing::info!(%class, "pipeline: class resumed");
    }

    /// True if the class is paused now (by [`Pipeline::pause`] or by an emergency).
    pub fn is_paused(&self, class: Class) -> bool {
        self.inner.is_paused(class)
    }

    /// The control loop's current level.
    pub fn health(&self) -> Health {
        self.inner.health()
    }

    /// Runs one control-loop evaluation now (the loop does this every `control.interval_ms`).
    pub fn evaluate_control(&self) -> Option<Transition> {
        self.inner.evaluate_control()
    }

    /// The fullest class, in percent of its capacity (the control loop's input).
    pub fn load_pct(&self) -> u32 {
        self.inner.load_pct()
    }

    /// Events queued per class (realtime, transactional, batch).
    pub fn depths(&self) -> [usize; 3] {
        [0, 1, 2].map(|i| self.inner.queues[i].queued())
    }

    pub fn metrics(&self) -> Arc<PipelineMetrics> {
        self.inner.metrics.clone()
    }

    pub fn dlq(&self) -> &Dlq {
        &self.inner.dlq
    }

    /// The checkpoint's positions (where a new leader resumes).
    pub fn positions(&self) -> BTreeMap<String, u64> {
        self.inner.checkpoint.positions()
    }

    pub fn clock(&self) -> &NodeClock {
        &self.inner.clock
    }

    /// Prometheus text of the pipeline's metrics.
    pub fn render_prometheus(&self) -> String {
        let mut out = self.inner.metrics.render_prometheus(self.depths(), self.health());
        let name = "esc_pipeline_dlq_poisoned";
        out.push_str(&format!(
            "# HELP {name} 1 if the dead-letter queue refuses writes after a failed write and rewrite (restart to recover)\n# TYPE {name} gauge\n{name} {}\n",
            u8::from(self.inner.dlq.is_poisoned())
        ));
        out
    }

    /// Stops admitting, lets every processor drain its queue (batch windows flush), and waits for
    /// the tasks. Events submitted afterwards are dead-lettered with reason `shutdown`.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.closing.set();
        for q in &inner.queues {
            q.close();
        }
        inner.gate_notify.notify_waiters();
        inner.pause_notify.notify_waiters();
        let tasks = std::mem::take(&mut *inner.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
        inner.checkpoint.flush();
    }

    /// Stops processing at once without draining (this node lost leadership or crashed): queued
    /// events are left for the next leader, which resumes from the checkpoint. Returns how many
    /// events were queued.
    pub fn abort(&self) -> usize {
        let inner = &self.inner;
        inner.closing.set();
        for t in inner.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            t.abort();
        }
        let mut n = 0;
        for q in &inner.queues {
            q.close();
            n += q.drain_all().len();
        }
        n
    }
}

impl Inner {
    fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::SeqCst))
    }

    fn is_paused(&self, class: Class) -> bool {
        if self.closing.is_set() {
            return false;
        }
        self.paused[class.idx()].load(Ordering::SeqCst)
            || (class == Class::Batch && self.health() == Health::Emergency)
    }

    async fn wait_unpaused(&self, class: Class) {
        loop {
            let notified = self.pause_notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if !self.is_paused(class) {
                return;
            }
            notified.await;
        }
    }

    fn route(&self, topic: &str, client: Priority) -> Route {
        let cap = self.cfg.realtime.capacity;
        let fill = (self.queues[0].queued().saturating_mul(100) / cap).min(100) as u32;
        let pressure = self.cfg.pressure.level(fill);
        self.routes.read().unwrap_or_else(|e| e.into_inner()).route(
            topic,
            client,
            pressure,
            self.cfg.pressure.downgrade_high_at,
        )
    }

    fn load_pct(&self) -> u32 {
        let pct = |n: usize, cap: usize| (n.saturating_mul(100) / cap.max(1)).min(1000) as u32;
        let used = *self.gate_used.lock().unwrap_or_else(|e| e.into_inner());
        pct(self.queues[0].queued(), self.cfg.realtime.capacity)
            .max(pct(used, self.cfg.transactional.capacity))
            .max(pct(self.queues[2].held(), self.cfg.batch.capacity))
    }

    /// The control loop's actions on admission; returns how many transactional slots are needed.
    fn check_policy(&self, events: &[Event]) -> Result<usize, ServiceError> {
        let m = &self.metrics;
        if self.closing.is_set() {
            m.refused_shutdown.inc();
            return Err(ServiceError::ShuttingDown);
        }
        let health = self.health();
        let refuse = ServiceError::Overloaded { retry_after_ms: self.cfg.control.retry_after_ms };
        let mut n_tx = 0;
        for e in events {
            let r = self.route(&e.topic, e.priority);
            if health == Health::Emergency && r.priority != Priority::Critical {
                m.refused_emergency.inc();
                return Err(refuse);
            }
            match r.class {
                Class::Batch if health >= Health::Degraded => {
                    m.refused_shed.inc();
                    return Err(refuse);
                }
                Class::Transactional if health >= Health::Critical => {
                    m.refused_backoff.inc();
                    return Err(refuse);
                }
                Class::Transactional => n_tx += 1,
                _ => {}
            }
        }
        Ok(n_tx)
    }

    fn gate_try_reserve(&self, n: usize) -> bool {
        if n == 0 {
            return true;
        }
        let mut used = self.gate_used.lock().unwrap_or_else(|e| e.into_inner());
        // A publish larger than the whole class gets in when the class is empty.
        if *used + n <= self.cfg.transactional.capacity || *used == 0 {
            *used += n;
            true
        } else {
            false
        }
    }

    fn gate_release(&self, n: usize) {
        let mut used = self.gate_used.lock().unwrap_or_else(|e| e.into_inner());
        debug_assert!(*used >= n, "transactional gate released more than reserved");
        *used = used.saturating_sub(n);
        drop(used);
        self.gate_notify.notify_waiters();
    }

    fn enqueue(
        &self,
        event: StoredEvent,
        admission: Option<&mut Admission>,
        redrive: Option<u64>,
        dead: &mut Vec<Settle>,
    ) {
        if redrive.is_none() {
            let fresh = self
                .progress
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .admit(&event.event.topic, event.offset);
            if !fresh {
                self.metrics.already_processed.inc();
                return;
            }
        }
        let route = self.route(&event.event.topic, event.event.priority);
        if route.downgraded {
            self.metrics.downgraded.inc();
        }
        let class = route.class;
        self.metrics.class(class).submitted.inc();
        let item = Item { event, enqueued: self.clock.mono(), redrive };
        let q = &self.queues[class.idx()];
        match class {
            Class::Realtime => match q.push_evicting_oldest(item, self.cfg.realtime.capacity) {
                Ok(None) => {}
                Ok(Some(old)) => dead.push(Settle {
                    class,
                    item: old,
                    fate: Fate::DeadLettered(DlqReason::RealtimeOverflow),
                    detail: "realtime queue full; oldest evicted".into(),
                }),
                Err(item) => dead.push(Settle {
                    class,
                    item,
                    fate: Fate::DeadLettered(DlqReason::Shutdown),
                    detail: String::new(),
                }),
            },
            Class::Transactional => {
                match admission {
                    Some(a) if a.reserved > 0 => a.reserved -= 1,
                    // Committed events are never refused: take the room even past the bound.
                    _ => *self.gate_used.lock().unwrap_or_else(|e| e.into_inner()) += 1,
                }
                if let Err(item) = q.push(item) {
                    self.gate_release(1);
                    dead.push(Settle {
                        class,
                        item,
                        fate: Fate::DeadLettered(DlqReason::Shutdown),
                        detail: String::new(),
                    });
                }
            }
            Class::Batch => {
                if let Err((item, closed)) = q.push_bounded(item, self.cfg.batch.capacity) {
                    let reason = if closed { DlqReason::Shutdown } else { DlqReason::BatchOverflow };
                    dead.push(Settle {
                        class,
                        item,
                        fate: Fate::DeadLettered(reason),
                        detail: String::new(),
                    });
                }
            }
        }
    }

    /// Records an event's fate: the one place each event is counted, dead-lettered and checkpointed.
    fn settle(&self, class: Class, item: &Item, fate: Fate, detail: String) {
        self.settle_all(vec![Settle { class, item: item.clone(), fate, detail }]);
    }

    /// Settles several events; their dead letters go to the DLQ in one write and one fsync, and
    /// only then do they count as handled for the checkpoint. If the DLQ refuses them (a disk
    /// error, or poisoned), nothing acknowledged is lost: each such event stays in its topic log
    /// and the checkpoint does not advance past it, so a restart handles it again (at-least-once),
    /// and a redriven one keeps its DLQ entry.
    fn settle_all(&self, settled: Vec<Settle>) {
        if settled.is_empty() {
            return;
        }
        let dlq_ok = self.dead_letter(&settled);
        let unsettled = |s: &Settle| !dlq_ok && matches!(s.fate, Fate::DeadLettered(_));
        let redriven: Vec<u64> =
            settled.iter().filter(|s| !unsettled(s)).filter_map(|s| s.item.redrive).collect();
        if !redriven.is_empty()
            && let Err(e) = self.dlq.finish_redrive(&redriven)
        {
            // The entries stay in the DLQ and can be redriven again (at-least-once).
            tracing::error!(entries = redriven.len(), %e, "dlq: could not remove redriven entries");
        }
        for s in settled {
            let stays = unsettled(&s);
            let (class, item, fate) = (s.class, &s.item, s.fate);
            self.count_fate(class, item, fate);
            if item.redrive.is_none() && !stays {
                let topic = &item.event.event.topic;
                let advanced =
                    self.progress.lock().unwrap_or_else(|e| e.into_inner()).finish(topic, item.event.offset);
                let advanced = if crate::planted!(CheckpointAheadOfWork) {
                    Some(item.event.offset + 1)
                } else {
                    advanced
                };
                if let Some(next) = advanced {
                    self.checkpoint.record_position(topic, next);
                }
            }
        }
    }

    /// Counts a settled event and shows it to the observer.
    fn count_fate(&self, class: Class, item: &Item, fate: Fate) {
        let m = self.metrics.class(class);
        match fate {
            Fate::Processed => {
                m.processed.inc();
                let now = self.clock.wall_unix_ms();
                m.end_to_end_latency_us
                    .record(now.saturating_sub(item.event.timestamp_ms).saturating_mul(1000));
            }
            Fate::Duplicate => m.duplicates.inc(),
            Fate::DeadLettered(DlqReason::Invalid | DlqReason::RetriesExhausted) => m.failed.inc(),
            Fate::DeadLettered(reason) => m.dropped[reason.idx()].inc(),
        }
        if let Some(o) = &self.observer {
            o.observe(class, &item.event, fate);
        }
    }

    /// Writes the dead letters among `settled` to the DLQ; false if it refused them.
    fn dead_letter(&self, settled: &[Settle]) -> bool {
        let at = self.clock.wall_unix_ms();
        let letters: Vec<(DlqReason, String, u64, StoredEvent)> = settled
            .iter()
            .filter_map(|s| match s.fate {
                Fate::DeadLettered(reason) => Some((reason, s.detail.clone(), at, s.item.event.clone())),
                _ => None,
            })
            .collect();
        if !letters.is_empty() {
            let n = letters.len();
            match self.dlq.push_many(letters) {
                Ok(pushed) => {
                    let stored = pushed.iter().filter(|p| matches!(p, dlq::Pushed::Stored(_))).count() as u64;
                    self.metrics.dlq_written.add(stored);
                    if stored < n as u64 {
                        self.metrics.dlq_overflow.add(n as u64 - stored);
                        tracing::warn!(entries = n as u64 - stored, "dlq full: entries counted, not stored");
                    }
                }
                Err(e) => {
                    self.metrics.dlq_errors.add(n as u64);
                    tracing::error!(
                        entries = n,
                        %e,
                        "dlq write failed; the events stay in their topic logs, the checkpoint holds before them"
                    );
                    return false;
                }
            }
        }
        true
    }

    fn on_dequeue(&self, class: Class, item: &Item) {
        let waited = self.clock.mono().saturating_sub(item.enqueued);
        self.metrics.class(class).dequeue_latency_us.record(waited.as_micros() as u64);
    }

    fn emit(&self, alerts: &[Alert]) {
        for a in alerts {
            self.metrics.alerts.inc();
            self.alerts.emit(a);
        }
    }

    async fn work(&self, class: Class) {
        let cost = self.cost[class.idx()];
        if !cost.is_zero() {
            self.clock.sleep(cost).await;
        }
    }

    fn evaluate_control(&self) -> Option<Transition> {
        let load = self.load_pct();
        let t = self.controller.lock().unwrap_or_else(|e| e.into_inner()).evaluate(load)?;
        self.health.store(t.to as u8, Ordering::SeqCst);
        self.metrics.transitions[t.to as usize].inc();
        if t.to > t.from {
            tracing::warn!(from = %t.from, to = %t.to, load_pct = t.load_pct, "pipeline: health worsened");
        } else {
            tracing::info!(from = %t.from, to = %t.to, load_pct = t.load_pct, "pipeline: health improved");
        }
        // Entering or leaving an emergency pauses or resumes the batch class.
        self.pause_notify.notify_waiters();
        Some(t)
    }
}

async fn run_realtime(inner: Arc<Inner>) {
    let class = Class::Realtime;
    let mut rx = inner.queues[class.idx()].receiver();
    let deadline_ms = inner.cfg.realtime.deadline_ms;
    loop {
        inner.wait_unpaused(class).await;
        let Some(item) = rx.recv().await else { break };
        inner.on_dequeue(class, &item);
        // The deadline runs from commit (a redrive: from the redrive), checked *before* handling.
        let age_ms = if item.redrive.is_some() {
            inner.clock.mono().saturating_sub(item.enqueued).as_millis() as u64
        } else {
            inner.clock.wall_unix_ms().saturating_sub(item.event.timestamp_ms)
        };
        if age_ms > deadline_ms {
            let detail = format!("{age_ms} ms after commit, deadline {deadline_ms} ms");
            inner.settle(class, &item, Fate::DeadLettered(DlqReason::Deadline), detail);
        } else {
            inner.work(class).await;
            match inner.handlers.handle(&item.event) {
                Outcome::Handled(alerts) => {
                    inner.emit(&alerts);
                    inner.settle(class, &item, Fate::Processed, String::new());
                }
                Outcome::Invalid(why) => {
                    inner.settle(class, &item, Fate::DeadLettered(DlqReason::Invalid), why)
                }
                Outcome::Transient(why) => inner.settle(
                    class,
                    &item,
                    Fate::DeadLettered(DlqReason::RetriesExhausted),
                    format!("realtime does not retry: {why}"),
                ),
            }
        }
        inner.queues[class.idx()].release(1);
    }
}

async fn run_transactional(inner: Arc<Inner>) {
    let class = Class::Transactional;
    let mut rx = inner.queues[class.idx()].receiver();
    let cfg = inner.cfg.transactional.clone();
    loop {
        inner.wait_unpaused(class).await;
        let Some(item) = rx.recv().await else { break };
        inner.on_dequeue(class, &item);
        let key = item.event.event.idempotency_key();
        if key.is_some_and(|k| inner.checkpoint.is_handled(k)) {
            inner.settle(class, &item, Fate::Duplicate, String::new());
        } else {
            let mut attempt = 0u32;
            loop {
                inner.work(class).await;
                match inner.handlers.handle(&item.event) {
                    Outcome::Handled(alerts) => {
                        if let Some(k) = key {
                            inner.checkpoint.mark_handled(k);
                        }
                        inner.emit(&alerts);
                        inner.settle(class, &item, Fate::Processed, String::new());
                        break;
                    }
                    Outcome::Invalid(why) => {
                        inner.settle(class, &item, Fate::DeadLettered(DlqReason::Invalid), why);
                        break;
                    }
                    Outcome::Transient(why) if attempt >= cfg.max_retries => {
                        let detail = format!("{} attempts, last: {why}", attempt + 1);
                        inner.settle(class, &item, Fate::DeadLettered(DlqReason::RetriesExhausted), detail);
                        break;
                    }
                    Outcome::Transient(_) => {
                        inner.metrics.retries.inc();
                        let backoff = cfg.retry_backoff_ms.saturating_mul(1 << attempt.min(20));
                        inner.clock.sleep(Duration::from_millis(backoff)).await;
                        attempt += 1;
                    }
                }
            }
        }
        inner.queues[class.idx()].release(1);
        inner.gate_release(1);
    }
}

#[derive(Clone, Copy)]
enum Flush {
    Size,
    Timer,
    Shutdown,
}

async fn sleep_until_opt(clock: &NodeClock, at: Option<Duration>) {
    match at {
        Some(at) => clock.sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn run_batch(inner: Arc<Inner>) {
    let class = Class::Batch;
    let mut rx = inner.queues[class.idx()].receiver();
    let window = Duration::from_millis(inner.cfg.batch.window_ms);
    let max_batch = inner.cfg.batch.max_batch;
    // Per topic: when the window closes, and its events.
    let mut windows: BTreeMap<String, (Duration, Vec<Item>)> = BTreeMap::new();
    loop {
        inner.wait_unpaused(class).await;
        let next_close = windows.values().map(|w| w.0).min();
        let got = rt::select! {
            biased;
            item = rx.recv() => Some(item),
            _ = sleep_until_opt(&inner.clock, next_close) => None,
        };
        match got {
            Some(Some(item)) => {
                inner.on_dequeue(class, &item);
                let topic = item.event.event.topic.clone();
                let now = inner.clock.mono();
                let w = windows.entry(topic.clone()).or_insert_with(|| (now + window, Vec::new()));
                w.1.push(item);
                if w.1.len() >= max_batch
                    && let Some((_, items)) = windows.remove(&topic)
                {
                    flush(&inner, items, Flush::Size).await;
                }
            }
            Some(None) => {
                for (_, (_, items)) in std::mem::take(&mut windows) {
                    flush(&inner, items, Flush::Shutdown).await;
                }
                break;
            }
            None => {}
        }
        // Every window whose time is up flushes, whether or not anything else arrives.
        let now = inner.clock.mono();
        let due: Vec<String> = windows.iter().filter(|(_, w)| w.0 <= now).map(|(t, _)| t.clone()).collect();
        for t in due {
            if let Some((_, items)) = windows.remove(&t) {
                flush(&inner, items, Flush::Timer).await;
            }
        }
    }
}

async fn flush(inner: &Inner, items: Vec<Item>, why: Flush) {
    let class = Class::Batch;
    match why {
        Flush::Size => inner.metrics.batch_flush_size.inc(),
        Flush::Timer => inner.metrics.batch_flush_timer.inc(),
        Flush::Shutdown => inner.metrics.batch_flush_shutdown.inc(),
    }
    let n = items.len();
    for item in items {
        inner.work(class).await;
        match inner.handlers.handle(&item.event) {
            Outcome::Handled(alerts) => {
                inner.emit(&alerts);
                inner.settle(class, &item, Fate::Processed, String::new());
            }
            Outcome::Invalid(why) => inner.settle(class, &item, Fate::DeadLettered(DlqReason::Invalid), why),
            Outcome::Transient(why) => inner.settle(
                class,
                &item,
                Fate::DeadLettered(DlqReason::RetriesExhausted),
                format!("batch does not retry: {why}"),
            ),
        }
    }
    inner.queues[class.idx()].release(n);
}

async fn run_control(inner: Arc<Inner>) {
    let interval = Duration::from_millis(inner.cfg.control.interval_ms);
    let p = Pipeline { inner };
    loop {
        rt::select! {
            biased;
            _ = p.inner.closing.wait() => break,
            _ = p.inner.clock.sleep(interval) => {}
        }
        p.inner.evaluate_control();
        p.apply_redrive_request();
        p.inner.checkpoint.flush();
    }
}
