//! Scenario `pipeline`: an overload storm against one node with the event pipeline in front of and
//! behind its log. Producers publish bursts of mixed topics and priorities into small classes with
//! slow handlers, flaky transactional handling, invalid payloads and a control loop that sheds
//! and backs off. Nothing may be lost silently: every event a producer sent is either refused to
//! it or stored, and every stored event is processed, in the DLQ with a reason, or a duplicate of
//! an already-handled idempotency key — exactly one of these, counted once.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eventstreamcore::event::{Event, Priority, StoredEvent};
use eventstreamcore::node::state::Fnv64;
use eventstreamcore::node::{DedupConfig, LocalNode};
use eventstreamcore::pipeline::{
    ALERTS_TOPIC, Checkpoint, Class, Dlq, Fate, HandlerRegistry, Health, MemCheckpoint, Observer, Outcome,
    Pipeline, PipelineConfig, PipelinedService, ServiceAlertSink, StartOptions, handlers,
};
use eventstreamcore::rt::{self, NodeClock, NodeRng, SimDisk};
use eventstreamcore::service::{EventService, ServiceError};
use rand::Rng;
use rand::seq::IndexedRandom;

use super::{Options, RunReport};
use crate::check::CheckFailure;

const TOPICS: &[&str] =
    &["sensor/temperature", "sensor/pressure", "payment", "audit", "orders", "logs/app", "metrics/cpu"];

/// The whole plan of a run, drawn from the seed.
#[derive(Debug, Clone)]
pub struct Plan {
    pub producers: usize,
    pub events_per_producer: usize,
    pub max_batch: usize,
    /// Per producer: pause between publishes, ms (0 = a burst).
    pub gaps_ms: Vec<u64>,
    /// Per producer: retries of a refused publish with the same idempotency keys.
    pub retries: Vec<u32>,
    pub config: PipelineConfig,
    pub cost_us: [u64; 3],
    /// Percent of `orders` handling attempts that fail transiently.
    pub flaky_pct: u32,
    /// Percent of events with an invalid payload.
    pub invalid_pct: u32,
    /// If set, the leader's pipeline is lost this long into the storm and a new one resumes from
    /// the checkpoint.
    pub failover_at_ms: Option<u64>,
}

impl Plan {
    pub fn generate(rng: &mut NodeRng) -> Plan {
        let producers = rng.random_range(4..=16);
        let default_priority =
            *[Priority::Batch, Priority::Low, Priority::Medium].choose(rng).expect("non-empty");
        let mut c = PipelineConfig { default_priority, ..PipelineConfig::default() };
        c.realtime.capacity = rng.random_range(4..=48);
        c.realtime.deadline_ms = rng.random_range(5..=30);
        c.transactional.capacity = rng.random_range(4..=48);
        c.transactional.block_timeout_ms = rng.random_range(1..=60);
        c.transactional.max_retries = rng.random_range(0..=3);
        c.transactional.retry_backoff_ms = rng.random_range(1..=5);
        c.batch.capacity = rng.random_range(8..=96);
        c.batch.window_ms = rng.random_range(5..=80);
        c.batch.max_batch = rng.random_range(2..=32);
        c.control.interval_ms = rng.random_range(2..=20);
        c.control.hysteresis = rng.random_range(1..=3);
        c.control.retry_after_ms = rng.random_range(1..=20);
        c.dlq.max_entries = 1_000_000;
        Plan {
            producers,
            events_per_producer: rng.random_range(20..=120),
            max_batch: rng.random_range(1..=12),
            gaps_ms: (0..producers)
                .map(|_| if rng.random_bool(0.5) { 0 } else { rng.random_range(1..=4) })
                .collect(),
            retries: (0..producers).map(|_| rng.random_range(0..=3)).collect(),
            config: c,
            cost_us: [rng.random_range(50..=1500), rng.random_range(50..=2500), rng.random_range(20..=800)],
            flaky_pct: rng.random_range(0..=40),
            invalid_pct: rng.random_range(0..=10),
            failover_at_ms: rng.random_bool(0.35).then(|| rng.random_range(10..=300)),
        }
    }

    pub fn describe(&self) -> String {
        let c = &self.config;
        format!(
            "{} producers x {} events (batches <= {}), gaps {:?} ms, retries {:?}; default {}; realtime cap {} \
             deadline {} ms; transactional cap {} block {} ms retries {} backoff {} ms; batch cap {} window {} ms \
             max {}; control every {} ms hysteresis {}; cost {:?} us; flaky {}%; invalid {}%; failover at {:?} ms",
            self.producers,
            self.events_per_producer,
            self.max_batch,
            self.gaps_ms,
            self.retries,
            c.default_priority,
            c.realtime.capacity,
            c.realtime.deadline_ms,
            c.transactional.capacity,
            c.transactional.block_timeout_ms,
            c.transactional.max_retries,
            c.transactional.retry_backoff_ms,
            c.batch.capacity,
            c.batch.window_ms,
            c.batch.max_batch,
            c.control.interval_ms,
            c.control.hysteresis,
            self.cost_us,
            self.flaky_pct,
            self.invalid_pct,
            self.failover_at_ms,
        )
    }
}

/// What happened to one producer event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Acked { offset: u64, duplicate: bool },
    Refused,
}

/// Fates seen per (topic, offset), each with the pipeline generation that decided it (0: the
/// first leader's pipeline, 1: the one that took over at a failover).
type FateLog = BTreeMap<(String, u64), Vec<(usize, Class, Fate)>>;

#[derive(Default)]
struct Record {
    /// (topic, offset) -> fates seen (must end up exactly one).
    fates: Mutex<FateLog>,
    /// (producer, sequence) -> topic and final outcome.
    sent: Mutex<BTreeMap<(u64, u64), (String, Sent)>>,
    violations: Mutex<Vec<String>>,
    /// (events queued at the old leader when it stopped, events the new leader resubmitted).
    failover: Mutex<Option<(usize, usize)>>,
}

/// The observer of one pipeline generation.
struct Generation {
    record: Arc<Record>,
    generation: usize,
}

impl Observer for Generation {
    fn observe(&self, class: Class, e: &StoredEvent, fate: Fate) {
        let mut f = self.record.fates.lock().unwrap_or_else(|e| e.into_inner());
        f.entry((e.event.topic.clone(), e.offset)).or_default().push((self.generation, class, fate));
    }
}

impl Record {
    fn violation(&self, v: String) {
        self.violations.lock().unwrap_or_else(|e| e.into_inner()).push(v);
    }
}

fn payload(topic: &str, invalid: bool, rng: &mut NodeRng) -> Vec<u8> {
    match (topic, invalid) {
        ("sensor/temperature", false) => vec![rng.random_range(0..=150)],
        ("sensor/temperature", true) => vec![rng.random_range(151..=255)],
        ("sensor/pressure", _) => vec![rng.random_range(0..=255)],
        ("payment", false) => rng.random_range(1..=1_000_000u32).to_le_bytes().to_vec(),
        ("payment", true) => 0u32.to_le_bytes().to_vec(),
        ("audit", true) => Vec::new(),
        _ => b"data".to_vec(),
    }
}

fn handlers(rng: Arc<Mutex<NodeRng>>, flaky_pct: u32) -> HandlerRegistry {
    let mut r = HandlerRegistry::default();
    r.register("orders", move |_: &StoredEvent| {
        let fail = rng.lock().unwrap_or_else(|e| e.into_inner()).random_range(0..100) < flaky_pct;
        if fail {
            return Outcome::Transient("downstream busy".into());
        }
        Outcome::Handled(Vec::new())
    });
    r.register("audit", handlers::audit);
    r
}

/// The service producers talk to; replaced at a failover.
type Leader = Arc<Mutex<PipelinedService<LocalNode>>>;

async fn producer(id: u64, plan: Arc<Plan>, leader: Leader, record: Arc<Record>, mut rng: NodeRng) {
    let i = (id - 1) as usize;
    let mut seq = 0u64;
    let mut left = plan.events_per_producer;
    while left > 0 {
        let n = rng.random_range(1..=plan.max_batch).min(left);
        left -= n;
        let mut batch = Vec::with_capacity(n);
        for _ in 0..n {
            seq += 1;
            let topic = *TOPICS.choose(&mut rng).expect("non-empty");
            let priority = Priority::from_u8(rng.random_range(0..=4)).expect("0..=4");
            let invalid = rng.random_range(0..100) < plan.invalid_pct;
            let mut e = Event::new(topic, priority, payload(topic, invalid, &mut rng));
            e.producer_id = id;
            e.sequence = seq;
            batch.push(e);
        }
        let mut attempt = 0;
        let outcome = loop {
            let svc = leader.lock().unwrap_or_else(|e| e.into_inner()).clone();
            match svc.publish(batch.clone()).await {
                Ok(items) => break Ok(items),
                Err(ServiceError::Overloaded { retry_after_ms }) if attempt < plan.retries[i] => {
                    attempt += 1;
                    rt::time::sleep(Duration::from_millis(u64::from(retry_after_ms))).await;
                }
                // The leader's pipeline went away mid-publish (failover): retry on the new one.
                Err(ServiceError::ShuttingDown) if attempt < plan.retries[i] => {
                    attempt += 1;
                    rt::time::sleep(Duration::from_millis(1)).await;
                }
                Err(e) => break Err(e),
            }
        };
        record_outcome(&record, id, &batch, outcome);
        if plan.gaps_ms[i] > 0 {
            rt::time::sleep(Duration::from_millis(plan.gaps_ms[i])).await;
        }
    }
}

fn record_outcome(
    record: &Record,
    id: u64,
    batch: &[Event],
    outcome: Result<Vec<eventstreamcore::service::Appended>, ServiceError>,
) {
    let mut sent = record.sent.lock().unwrap_or_else(|e| e.into_inner());
    match outcome {
        Ok(items) if items.len() == batch.len() => {
            for (e, a) in batch.iter().zip(items) {
                let s = Sent::Acked { offset: a.offset, duplicate: a.duplicate };
                sent.insert((id, e.sequence), (e.topic.clone(), s));
            }
        }
        Ok(items) => {
            record.violation(format!("producer {id}: {} acks for {} events", items.len(), batch.len()))
        }
        Err(ServiceError::Overloaded { .. } | ServiceError::ShuttingDown) => {
            for e in batch {
                sent.insert((id, e.sequence), (e.topic.clone(), Sent::Refused));
            }
        }
        Err(e) => record.violation(format!("producer {id}: publish failed with {e}")),
    }
}

/// Runs the scenario inside the current simulator runtime.
pub async fn run(opts: Options) -> RunReport {
    let mut rng = rt::node_rng();
    let plan = Arc::new(Plan::generate(&mut rng));
    let description = plan.describe();
    *opts.plan_slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(description.clone());

    let clock = NodeClock::new();
    let node = Arc::new(LocalNode::new(1, clock.clone(), DedupConfig::default()));
    let disk = SimDisk::new();
    let record = Arc::new(Record::default());
    let checkpoint = Arc::new(MemCheckpoint::new(plan.config.transactional.idempotency_keys));
    let handler_rng = Arc::new(Mutex::new(rt::rng::split(&mut rng)));
    let start = |generation: usize| {
        let opts = StartOptions {
            handlers: handlers(handler_rng.clone(), plan.flaky_pct),
            alerts: Arc::new(ServiceAlertSink::new(node.clone())),
            checkpoint: checkpoint.clone(),
            observer: Some(Arc::new(Generation { record: record.clone(), generation })),
            handling_cost: plan.cost_us.map(Duration::from_micros),
        };
        match Pipeline::start(plan.config.clone(), clock.clone(), Arc::new(disk.clone()), opts) {
            Ok(p) => p,
            Err(e) => panic!("pipeline did not start: {e}"),
        }
    };
    let first = start(0);
    let leader: Leader = Arc::new(Mutex::new(PipelinedService::new(node.clone(), first.clone())));

    let mut tasks = Vec::new();
    for id in 1..=plan.producers as u64 {
        let prng = rt::rng::split(&mut rng);
        tasks.push(rt::spawn(producer(id, plan.clone(), leader.clone(), record.clone(), prng)));
    }
    let mut pipeline = first.clone();
    if let Some(at) = plan.failover_at_ms {
        rt::time::sleep(Duration::from_millis(at)).await;
        // The old leader stops dead; the new one resumes from the replicated checkpoint. From the
        // abort to the swap nothing awaits, so no publish slips between them.
        let left = first.abort();
        let next = start(1);
        let backlog = unprocessed(&node, &checkpoint.positions());
        record.failover.lock().unwrap_or_else(|e| e.into_inner()).replace((left, backlog.len()));
        next.submit(backlog);
        *leader.lock().unwrap_or_else(|e| e.into_inner()) = PipelinedService::new(node.clone(), next.clone());
        pipeline = next;
    }
    for t in tasks {
        if t.await.is_err() {
            record.violation("a producer task failed".into());
        }
    }
    if rt::time::timeout(Duration::from_secs(120), pipeline.shutdown()).await.is_err() {
        record.violation("the pipeline did not drain within 120 s".into());
    }
    // Let alert publishes spawned by the last handlers finish.
    rt::time::sleep(Duration::from_millis(1)).await;

    let pipelines = Pipelines { first: &first, last: &pipeline };
    let failure = check(&plan, &node, &disk, pipelines, checkpoint.as_ref(), &record).err();
    let fates = record.fates.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let sent = record.sent.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let m = pipeline.metrics();
    let mut d = Fnv64::default();
    for ((topic, offset), fs) in &fates {
        d.write(topic.as_bytes());
        d.write_u64(*offset);
        for (_, c, f) in fs {
            d.write(format!("{c}:{f:?}").as_bytes());
        }
    }
    d.write_u64(node.state().digest());
    let count = |f: &dyn Fn(&Fate) -> bool| fates.values().flatten().filter(|(_, _, x)| f(x)).count();
    let processed = count(&|f| *f == Fate::Processed);
    let dead = count(&|f| matches!(f, Fate::DeadLettered(_)));
    let dups = count(&|f| *f == Fate::Duplicate);
    let refused = sent.values().filter(|(_, s)| *s == Sent::Refused).count();
    let transitions: Vec<u64> = Health::ALL.iter().map(|h| m.transitions_to(*h)).collect();
    d.write_u64(refused as u64);
    for t in &transitions {
        d.write_u64(*t);
    }
    let failover = *record.failover.lock().unwrap_or_else(|e| e.into_inner());
    let summary = format!(
        "{description}\nfailover (queued at old leader, resubmitted by new): {failover:?}\nresult: {} sent, {refused} refused, {processed} processed, {dead} dead-lettered, {dups} duplicates; \
         transitions into healthy/degraded/critical/emergency {transitions:?}; refused shed/backoff/emergency/timeout {}/{}/{}/{}",
        sent.len(),
        m.refused_shed.get(),
        m.refused_backoff.get(),
        m.refused_emergency.get(),
        m.refused_timeout.get(),
    );
    RunReport::plain(d.finish(), summary, failure)
}

fn fail(checker: &'static str, detail: String) -> Result<(), CheckFailure> {
    Err(CheckFailure { checker, detail })
}

/// The pipelines of a run: the first leader's, and the last one (the same without a failover).
#[derive(Clone, Copy)]
struct Pipelines<'a> {
    first: &'a Pipeline,
    last: &'a Pipeline,
}

fn check(
    plan: &Plan,
    node: &LocalNode,
    disk: &SimDisk,
    pipelines: Pipelines<'_>,
    checkpoint: &dyn Checkpoint,
    record: &Record,
) -> Result<(), CheckFailure> {
    let failover = plan.failover_at_ms.is_some();
    if let Some(v) = record.violations.lock().unwrap_or_else(|e| e.into_inner()).first() {
        return fail("producers", v.clone());
    }
    let fates = record.fates.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let sent = record.sent.lock().unwrap_or_else(|e| e.into_inner()).clone();
    // Every event a producer made was answered: acked or refused.
    let expected: usize = plan.producers * plan.events_per_producer;
    if sent.len() != expected {
        return fail("every_event_answered", format!("{} of {expected} events answered", sent.len()));
    }
    // A minimum workload: the storm overloads, but a run where (nearly) everything was refused
    // checked next to nothing.
    let acked = sent.values().filter(|(_, s)| matches!(s, Sent::Acked { .. })).count();
    if acked < plan.producers {
        return fail(
            "minimum_workload",
            format!("only {acked} of {expected} events acked; a run must carry at least {}", plan.producers),
        );
    }
    // The DLQ as it is on disk after the run.
    let dlq = match Dlq::open(Arc::new(disk.clone()), plan.config.dlq.max_entries) {
        Ok(d) => d,
        Err(e) => return fail("dlq_readable", e.to_string()),
    };
    if dlq.overflow() != 0 {
        return fail("dlq_bounded", format!("{} entries overflowed a DLQ sized for the run", dlq.overflow()));
    }
    let mut in_dlq: BTreeMap<(String, u64), Vec<String>> = BTreeMap::new();
    for e in dlq.entries() {
        in_dlq
            .entry((e.event.event.topic.clone(), e.event.offset))
            .or_default()
            .push(e.reason.code().to_string());
    }
    // Every stored event has exactly one fate, and a dead letter is in the DLQ with its reason.
    let state = node.state();
    let mut stored_keys = BTreeMap::new();
    let mut stored = 0usize;
    for topic in state.topics().filter(|t| *t != ALERTS_TOPIC) {
        for e in state.topic_log(topic) {
            stored += 1;
            if let Some(k) = e.event.idempotency_key() {
                stored_keys.insert(k, (topic.to_string(), e.offset));
            }
            let key = (topic.to_string(), e.offset);
            let fs = fates.get(&key).cloned().unwrap_or_default();
            let mut dead: Vec<String> = fs
                .iter()
                .filter_map(|(_, _, f)| match f {
                    Fate::DeadLettered(r) => Some(r.code().to_string()),
                    _ => None,
                })
                .collect();
            dead.sort();
            let mut reasons = in_dlq.get(&key).cloned().unwrap_or_default();
            reasons.sort();
            if reasons != dead {
                return fail(
                    "dead_letters_in_dlq",
                    format!("{topic}@{} dead-lettered as {dead:?} but the DLQ holds {reasons:?}", e.offset),
                );
            }
            match fs.as_slice() {
                [] => {
                    return fail(
                        "nothing_lost_silently",
                        format!("{topic}@{} stored but never settled", e.offset),
                    );
                }
                [_] => {}
                // After a failover, events the old leader finished above its checkpoint position are
                // handled again (at-least-once) — by the new pipeline, once; transactional effects
                // still happen once (below).
                many if failover && (0..2).all(|g| many.iter().filter(|x| x.0 == g).count() <= 1) => {}
                many => return fail("one_fate_each", format!("{topic}@{} settled {many:?}", e.offset)),
            }
            if fs.iter().any(|(_, c, f)| *f == Fate::Duplicate && *c != Class::Transactional) {
                return fail(
                    "one_fate_each",
                    format!("{topic}@{}: a non-transactional duplicate {fs:?}", e.offset),
                );
            }
        }
        // Processing finished: the checkpoint is at the end of every topic.
        let end = state.topic_log(topic).len() as u64;
        let at = checkpoint.positions().get(topic).copied();
        if at != Some(end) {
            return fail("checkpoint_at_end", format!("{topic}: checkpoint {at:?}, log ends at {end}"));
        }
    }
    if fates.len() != stored {
        return fail("one_fate_each", format!("{} events settled, {stored} stored", fates.len()));
    }
    if fates.keys().any(|(t, o)| state.topic_log(t).len() as u64 <= *o) {
        return fail("one_fate_each", "a fate for an event that is not stored".into());
    }
    if in_dlq.keys().any(|(t, o)| state.topic_log(t).len() as u64 <= *o) {
        return fail("dead_letters_in_dlq", "DLQ entries that are not stored events".into());
    }
    acks_match_log(&sent, &stored_keys)?;
    // Transactional effects at most once per idempotency key (every stored event has its own key:
    // a retried publish is deduplicated by the node).
    for ((topic, offset), fs) in &fates {
        let n = fs.iter().filter(|(_, c, f)| (*c, f) == (Class::Transactional, &Fate::Processed)).count();
        if n > 1 {
            return fail(
                "exactly_once_effects",
                format!("{topic}@{offset} handled {n} times as transactional"),
            );
        }
    }
    // Metrics: each pipeline counted each event it settled once, and the last one settled every
    // event it was given; the DLQ holds what both wrote.
    counted_once(&fates, pipelines, failover)?;
    let written = if failover {
        pipelines.first.metrics().dlq_written.get() + pipelines.last.metrics().dlq_written.get()
    } else {
        pipelines.last.metrics().dlq_written.get()
    };
    if written as usize != dlq.len() {
        return fail("counted_once", format!("dlq_written {written} but {} entries", dlq.len()));
    }
    Ok(())
}

/// The events the replicated checkpoint has not passed yet (alerts aside), topic by topic: what
/// a new leader's pipeline resumes with.
fn unprocessed(node: &LocalNode, positions: &BTreeMap<String, u64>) -> Vec<StoredEvent> {
    let state = node.state();
    let topics: Vec<String> = state.topics().filter(|t| *t != ALERTS_TOPIC).map(str::to_string).collect();
    topics
        .iter()
        .flat_map(|t| {
            let from = positions.get(t).copied().unwrap_or(0) as usize;
            state.topic_log(t).get(from..).unwrap_or_default().to_vec()
        })
        .collect()
}

/// Acks match the log (`stored_keys`: where each key is stored); refused events were never stored.
fn acks_match_log(
    sent: &BTreeMap<(u64, u64), (String, Sent)>,
    stored_keys: &BTreeMap<(u64, u64), (String, u64)>,
) -> Result<(), CheckFailure> {
    for ((producer, seq), (topic, s)) in sent {
        match s {
            Sent::Acked { offset, .. } => {
                if stored_keys.get(&(*producer, *seq)) != Some(&(topic.clone(), *offset)) {
                    return fail(
                        "acked_is_stored",
                        format!("{producer}/{seq} acked at {topic}@{offset}, not in the log"),
                    );
                }
            }
            Sent::Refused => {
                if let Some((t, o)) = stored_keys.get(&(*producer, *seq)) {
                    return fail(
                        "refused_not_stored",
                        format!("{producer}/{seq} refused but stored at {t}@{o}"),
                    );
                }
            }
        }
    }
    Ok(())
}

/// Per class, a pipeline's metrics count each event it settled once: the last pipeline settled
/// everything submitted to it, and (after a failover) the first settled what it was seen to.
fn counted_once(fates: &FateLog, pipelines: Pipelines<'_>, failover: bool) -> Result<(), CheckFailure> {
    let generations: &[(usize, &Pipeline)] =
        if failover { &[(0, pipelines.first), (1, pipelines.last)] } else { &[(0, pipelines.last)] };
    for &(g, p) in generations {
        let m = p.metrics();
        for c in Class::ALL {
            let cm = m.class(c);
            let seen = fates.values().flatten().filter(|(fg, fc, _)| *fg == g && *fc == c).count() as u64;
            // The aborted first pipeline left events unsettled: its submissions may exceed them.
            let aborted = failover && g == 0;
            if cm.settled() != seen || (!aborted && cm.submitted.get() != seen) || cm.submitted.get() < seen {
                return fail(
                    "counted_once",
                    format!(
                        "pipeline {g}, {c}: submitted {} settled {} observed {seen}",
                        cm.submitted.get(),
                        cm.settled()
                    ),
                );
            }
        }
    }
    Ok(())
}
