//! The operator's endpoints on a real member: `/metrics` parses as a whole (every metric with HELP
//! and the right TYPE, summaries with `_sum`/`_count`), `/health` and `/ready` answer 200 once it leads.
#![cfg(not(madsim))]
#![allow(clippy::disallowed_methods)] // real ports, files and time

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use eventstreamcore::client::Client;
use eventstreamcore::config::Config;
use eventstreamcore::event::{Event, Priority};
use eventstreamcore::metrics::exposition_problems;
use eventstreamcore::server::{Seams, Server};

/// `GET path` on the metrics port: (status line, body).
fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.lines().next().unwrap_or_default().to_string(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_page_is_complete_and_the_member_reports_ready() {
    let dir = common::temp_dir("operator-view");
    let mut c = Config::default();
    c.ingest.listen = "127.0.0.1:0".parse().unwrap();
    c.ingest.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    c.cluster.data_dir = dir.join("data");
    c.cluster.tick_ms = 10;
    assert!(c.pipeline.enabled, "the page must include the pipeline's metrics");
    let server = Server::start(&c, Seams::production(false)).await.unwrap();
    let (client_addr, metrics) = (server.client_addr(), server.metrics_addr().unwrap());
    let stop = server.shutdown_handle();
    let run = tokio::spawn(server.run());

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut ready = get(metrics, "/ready");
    while !ready.0.contains("200") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        ready = get(metrics, "/ready");
    }
    assert!(ready.0.contains("200 OK"), "{ready:?}");
    assert_eq!(get(metrics, "/health").0, "HTTP/1.1 200 OK");

    // Fill the latency summaries, then wait until the leader's pipeline is on the page.
    let mut client = Client::connect(client_addr).await.unwrap();
    let events = (0..5).map(|i| Event::new("orders", Priority::High, format!("e{i}"))).collect();
    client.publish(events).await.unwrap();
    let mut page = get(metrics, "/metrics").1;
    while !page.contains("esc_pipeline_end_to_end_latency_us_count{class=\"realtime\"} 5")
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
        page = get(metrics, "/metrics").1;
    }
    for family in ["esc_publish_latency_us", "esc_raft_term", "esc_pipeline_submitted_total"] {
        assert!(page.contains(&format!("# HELP {family} ")), "{family} missing:\n{page}");
    }
    assert!(page.contains("esc_publish_latency_us_sum "), "{page}");
    assert_eq!(exposition_problems(&page), Vec::<String>::new(), "{page}");

    stop.shutdown();
    tokio::time::timeout(Duration::from_secs(10), run).await.unwrap().unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
