//! Legacy-protocol clients against the cluster (issue 15): fire-and-forget frames with no
//! idempotency key and no reply, sent to whichever member a client drew, through the faults. A
//! follower cannot store them (they are not redirected: the protocol has no reply), a crash may
//! lose them, but nothing may store one more often than it was sent, and a consumer that reads
//! one must get the bytes sent (the anonymous-event half of `no_phantom_events` and
//! `consumed_published`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use eventstreamcore::client::Client;
use eventstreamcore::event::Priority;
use eventstreamcore::rt::{self, NodeRng};
use rand::Rng;
use rand::seq::IndexedRandom;

use super::{LEGACY_STREAM, Plan, TOPICS};
use crate::history::History;

/// Starts the plan's legacy senders, each on a node of its own, until the consumers stop; they
/// draw from a stream of `rng`'s key of their own (the run's other draws stay what they were).
pub(super) fn spawn(
    handle: &madsim::runtime::Handle,
    plan: &Plan,
    addrs: &[SocketAddr],
    history: &History,
    rng: &NodeRng,
    t0: rt::time::Instant,
) -> Vec<madsim::task::JoinHandle<()>> {
    let mut rng = rng.clone();
    rng.set_stream(LEGACY_STREAM ^ 1);
    let rng = &mut rng;
    let until = t0 + Duration::from_millis(plan.deadline_ms) - Duration::from_secs(10);
    (0..plan.legacy_clients)
        .map(|c| {
            let node = handle
                .create_node()
                .name(format!("legacy-{c}"))
                .ip(IpAddr::V4(Ipv4Addr::new(10, 6, 0, c as u8 + 1)))
                .build();
            let (addrs, history, crng) = (addrs.to_vec(), history.clone(), rt::rng::split(rng));
            node.spawn(sender(c, addrs, history, crng, until))
        })
        .collect()
}

/// Connects to a member it draws, sends a few frames, sleeps, and again, until `until`.
async fn sender(
    c: usize,
    addrs: Vec<SocketAddr>,
    history: History,
    mut rng: NodeRng,
    until: rt::time::Instant,
) {
    let mut k = 0;
    rt::time::sleep(Duration::from_millis(rng.random_range(0..3_000))).await;
    while rt::time::now() < until {
        let addr = *addrs.choose(&mut rng).expect("members");
        if let Ok(Ok(mut client)) = rt::time::timeout(Duration::from_secs(2), Client::connect(addr)).await {
            for _ in 0..rng.random_range(1..=5) {
                let topic = *TOPICS.choose(&mut rng).expect("non-empty");
                // The pipeline reads the first byte of a `sensor/temperature` event as a reading:
                // every other payload starts with `x` (120, a critical alert), so the leader's
                // pipeline publishes alerts to `_alerts`, which the checkers judge against the
                // reading they name (`derived`); the rest start with a digit (no alert).
                let payload = format!("{}{c}:legacy:{k}", if k % 2 == 1 { "x" } else { "" });
                k += 1;
                history.legacy_sent(topic, payload.as_bytes());
                let p = Priority::from_u8(rng.random_range(0..=4)).expect("0..=4");
                let sent = rt::time::timeout(
                    Duration::from_secs(2),
                    client.send_legacy(p, topic, payload.as_bytes()),
                );
                if !matches!(sent.await, Ok(Ok(_))) {
                    history.count("legacy_send_failed");
                    break;
                }
            }
        }
        rt::time::sleep(Duration::from_millis(rng.random_range(200..2_000))).await;
    }
}
