//! `ClusterClient` follows "not leader" redirects at once the first time, but members that keep
//! pointing at each other (an election in progress, a stale view) do not bounce it in a tight
//! loop: redirects in a row of one request pause, growing, with jitter, up to a bound.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real sockets and time

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventstreamcore::client::{ClientError, ClusterClient};
use eventstreamcore::config::IngestConfig;
use eventstreamcore::event::{Event, Priority};
use eventstreamcore::ingest::IngestServer;
use eventstreamcore::rt::NodeClock;
use eventstreamcore::service::{Appended, EventService, FetchReply, ServiceError};
use eventstreamcore::wire::ErrorCode;

/// A member that always says the leader is at `leader`, counting the publishes it refused.
#[derive(Clone)]
struct Redirecting {
    leader: Arc<Mutex<String>>,
    refused: Arc<AtomicU64>,
}

impl Redirecting {
    fn err(&self) -> ServiceError {
        self.refused.fetch_add(1, Ordering::SeqCst);
        ServiceError::NotLeader { leader: Some(self.leader.lock().unwrap().clone()) }
    }
}

impl EventService for Redirecting {
    fn publish(
        &self,
        _events: Vec<Event>,
    ) -> impl Future<Output = Result<Vec<Appended>, ServiceError>> + Send + 'static + use<> {
        std::future::ready(Err(self.err()))
    }

    fn fetch(
        &self,
        _topic: String,
        _offset: u64,
        _max: usize,
    ) -> impl Future<Output = Result<FetchReply, ServiceError>> + Send + 'static + use<> {
        std::future::ready(Err(self.err()))
    }

    fn node_id(&self) -> u64 {
        1
    }
}

async fn member(refused: Arc<AtomicU64>) -> (SocketAddr, Arc<Mutex<String>>) {
    let leader = Arc::new(Mutex::new(String::new()));
    let node = Redirecting { leader: leader.clone(), refused };
    let config = IngestConfig { listen: "127.0.0.1:0".parse().unwrap(), ..IngestConfig::default() };
    let server = IngestServer::bind(config, node, NodeClock::new(), "redirect-test").await.unwrap();
    let addr = server.local_addr();
    tokio::spawn(server.run());
    (addr, leader)
}

#[tokio::test]
async fn members_that_point_at_each_other_are_followed_with_a_growing_pause() {
    let refused = Arc::new(AtomicU64::new(0));
    let (a, to_from_a) = member(refused.clone()).await;
    let (b, to_from_b) = member(refused.clone()).await;
    *to_from_a.lock().unwrap() = b.to_string();
    *to_from_b.lock().unwrap() = a.to_string();

    let mut client = ClusterClient::new(vec![a], "t", "");
    client.max_attempts = 8;
    client.max_redirect_pause = Duration::from_millis(100);
    let started = Instant::now();
    let e = client.publish(vec![Event::new("t", Priority::Medium, "x")]).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(&e, ClientError::Server(f) if f.code == ErrorCode::NotLeader), "{e}");
    assert_eq!(refused.load(Ordering::SeqCst), 8, "every attempt was asked and redirected");
    // Redirects 2..=7 in a row paused at least half of 10, 20, 40, 80, 100, 100 ms (the first
    // hop and the give-up after the last attempt do not pause): a lower bound, not a speed claim.
    let least = Duration::from_millis((10 + 20 + 40 + 80 + 100 + 100) / 2);
    assert!(took >= least, "bounced {took:?}, less than the pauses' lower bound {least:?}");

    // A fresh request starts again with an immediate hop.
    client.max_attempts = 2;
    let started = Instant::now();
    client.publish(vec![Event::new("t", Priority::Medium, "y")]).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(refused.load(Ordering::SeqCst), 10);
}
