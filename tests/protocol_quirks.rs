//! Protocol corner cases on a real server, as `docs/protocol.md` states them: a reused idempotency
//! key with another topic gets the original ack (original topic and offset, nothing stored); ADMIN
//! add without dialable addresses is refused before it reaches the node.
#![cfg(not(madsim))]

use std::time::Duration;

use eventstreamcore::client::{Client, ClientError};
use eventstreamcore::config::IngestConfig;
use eventstreamcore::event::{Event, Priority};
use eventstreamcore::ingest::IngestServer;
use eventstreamcore::node::{DedupConfig, LocalNode};
use eventstreamcore::rt::NodeClock;
use eventstreamcore::wire::{AckItem, AdminRequest, ErrorCode};

async fn server() -> (LocalNode, Client, eventstreamcore::ingest::ShutdownHandle) {
    let node = LocalNode::new(1, NodeClock::new(), DedupConfig::default());
    let config = IngestConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        auth_token: "admin-token".into(),
        ..IngestConfig::default()
    };
    let server = IngestServer::bind(config, node.clone(), NodeClock::new(), "test").await.unwrap();
    let addr = server.local_addr();
    let stop = server.shutdown_handle();
    tokio::spawn(server.run());
    let mut c = Client::connect(addr).await.unwrap();
    c.set_timeout(Duration::from_secs(5));
    c.hello("test", "admin-token").await.unwrap();
    (node, c, stop)
}

fn keyed(topic: &str, payload: &str) -> Event {
    let mut e = Event::new(topic, Priority::Medium, payload.to_string());
    (e.producer_id, e.sequence) = (42, 1);
    e
}

#[tokio::test]
async fn a_reused_key_with_another_topic_gets_the_original_ack_and_stores_nothing() {
    let (node, mut c, stop) = server().await;
    let first = c.publish(vec![keyed("orders", "a")]).await.unwrap();
    assert_eq!(first, vec![AckItem::Stored { topic: "orders".into(), offset: 0, duplicate: false }]);
    let again = c.publish(vec![keyed("payments", "b")]).await.unwrap();
    assert_eq!(again, vec![AckItem::Stored { topic: "orders".into(), offset: 0, duplicate: true }]);
    assert_eq!(node.state().topic_log("payments").len(), 0);
    assert_eq!(node.state().topic_log("orders").len(), 1);
    stop.shutdown();
}

#[tokio::test]
async fn admin_add_with_empty_addresses_is_refused_malformed() {
    let (_node, mut c, stop) = server().await;
    let add = AdminRequest::AddNode { id: 4, raft_addr: String::new(), client_addr: String::new() };
    match c.admin(add).await {
        Err(ClientError::Server(e)) => {
            assert_eq!(e.code, ErrorCode::Malformed, "{e:?}");
            assert!(e.message.contains("host:port"), "{e:?}");
        }
        other => panic!("{other:?}"),
    }
    // A dialable add reaches the node (which, not being in a cluster, does not support it).
    let add =
        AdminRequest::AddNode { id: 4, raft_addr: "127.0.0.1:1".into(), client_addr: "127.0.0.1:2".into() };
    match c.admin(add).await {
        Err(ClientError::Server(e)) => assert_eq!(e.code, ErrorCode::Unsupported, "{e:?}"),
        other => panic!("{other:?}"),
    }
    stop.shutdown();
}
