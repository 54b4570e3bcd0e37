//! Out of file descriptors at `accept` (issue 11): a client waiting in the listen backlog gets a
//! retryable "overloaded" error frame, not silence until its own timeout, and once descriptors
//! free the server accepts again without a restart.
//!
//! Alone in its own test binary: it lowers this process's descriptor limit.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real files and sockets

use std::time::Duration;

use eventstreamcore::client::{Client, ClientError};
use eventstreamcore::config::IngestConfig;
use eventstreamcore::ingest::IngestServer;
use eventstreamcore::node::{DedupConfig, LocalNode};
use eventstreamcore::rt::NodeClock;
use eventstreamcore::wire::ErrorCode;

/// Opens descriptors until the process has none left; returns them.
fn hog_every_descriptor() -> Vec<std::fs::File> {
    let mut hog = Vec::new();
    loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => hog.push(f),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
                return hog;
            }
        }
    }
}

#[tokio::test]
async fn a_client_waiting_while_the_server_is_out_of_descriptors_is_told_to_retry() {
    let lim = libc::rlimit { rlim_cur: 256, rlim_max: 256 };
    // SAFETY: setrlimit reads the struct we pass.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    let node = LocalNode::new(1, NodeClock::new(), DedupConfig::default());
    let config = IngestConfig { listen: "127.0.0.1:0".parse().unwrap(), ..IngestConfig::default() };
    let server = IngestServer::bind(config, node, NodeClock::new(), "fd-test").await.unwrap();
    let addr = server.local_addr();
    let metrics = server.metrics();
    let stop = server.shutdown_handle();
    let task = tokio::spawn(server.run());
    let mut first = Client::connect(addr).await.unwrap();
    first.ping().await.unwrap();

    let mut hog = hog_every_descriptor();
    drop(hog.pop()); // one descriptor for the client's own socket; the server has none
    let mut client = Client::from_stream(tokio::net::TcpStream::connect(addr).await.unwrap());
    client.set_timeout(Duration::from_secs(5));
    match client.ping().await {
        Err(ClientError::Server(e)) => {
            assert_eq!(e.code, ErrorCode::Overloaded, "{e:?}");
            assert!(e.message.contains("file descriptors"), "{e:?}");
            assert!(e.code.is_retryable());
        }
        other => panic!("expected a retryable overloaded error, got {other:?}"),
    }
    assert!(metrics.connections_refused.get() >= 1);

    // Descriptors free up: the next client is served, no restart needed.
    drop(hog);
    drop(client);
    let mut again = Client::connect(addr).await.unwrap();
    again.set_timeout(Duration::from_secs(5));
    again.ping().await.expect("served again once descriptors are free");
    stop.shutdown();
    tokio::time::timeout(Duration::from_secs(10), task).await.unwrap().unwrap();
}
