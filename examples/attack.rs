//! Drives the memory attacks of issue 11 against a running `esc serve` and reports the server's
//! resident memory (from `/proc/PID/status`) while they run. Real sockets; not on the simulated
//! path. Numbers in `BENCHMARKS.md` ("Memory under attack") come from this tool.
//!
//! ```text
//! cargo run --release --example attack -- fill    --addr A --mib 200
//! cargo run --release --example attack -- fetch   --addr A --pid P
//! cargo run --release --example attack -- trickle --addr A --pid P --conns 500
//! cargo run --release --example attack -- noread  --addr A --pid P --conns 20
//! ```
#![allow(clippy::disallowed_methods, clippy::disallowed_types)] // a real-time tool

/// The simulated build has no real sockets to attack with.
#[cfg(madsim)]
fn main() {
    eprintln!("attack runs on real sockets only; build it without --cfg madsim");
}

#[cfg(not(madsim))]
fn main() {
    real::main();
}

#[cfg(not(madsim))]
mod real {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use bytes::BytesMut;
    use eventstreamcore::client::Client;
    use eventstreamcore::event::{Event, Priority};
    use eventstreamcore::wire::Request;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn arg<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> T {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    fn rss_kib(pid: u32) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// Samples the server's RSS every 50 ms for `secs`; prints baseline, peak and last.
    async fn watch(pid: u32, secs: u64, what: &str, baseline: u64) {
        let end = Instant::now() + Duration::from_secs(secs);
        let mut peak = baseline;
        let mut last = baseline;
        while Instant::now() < end {
            last = rss_kib(pid);
            peak = peak.max(last);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        println!(
            "{what}: server RSS baseline {:.1} MiB, peak {:.1} MiB (+{:.1}), at end {:.1} MiB",
            baseline as f64 / 1024.0,
            peak as f64 / 1024.0,
            (peak - baseline) as f64 / 1024.0,
            last as f64 / 1024.0
        );
    }

    fn event(topic: &str, producer: u64, seq: u64, payload: usize) -> Event {
        let mut e = Event::new(topic, Priority::Low, vec![b'x'; payload]);
        e.producer_id = producer;
        e.sequence = seq;
        e
    }

    #[tokio::main]
    pub async fn main() {
        let args: Vec<String> = std::env::args().collect();
        let cmd = args.get(1).cloned().unwrap_or_default();
        let addr: SocketAddr = arg(&args, "--addr", "127.0.0.1:7070".parse().unwrap());
        let pid: u32 = arg(&args, "--pid", 0);
        let secs: u64 = arg(&args, "--secs", 15);
        let baseline = rss_kib(pid);
        match cmd.as_str() {
            "fill" => {
                // A big topic: --mib MiB of 64 KiB events, 16 per frame.
                let mib: u64 = arg(&args, "--mib", 200);
                let mut c = Client::connect(addr).await.unwrap();
                c.set_timeout(Duration::from_secs(60));
                let events = mib * 16;
                let producer = std::process::id() as u64 + 1_000_000;
                for f in 0..events / 16 {
                    c.publish((0..16).map(|i| event("big", producer, f * 16 + i, 64 << 10)).collect())
                        .await
                        .unwrap();
                }
                println!("stored {events} events of 64 KiB in topic `big`");
            }
            "fetch" => {
                // 8 pipelined FETCHes of the whole topic; replies read only after the watch.
                let mut frames = BytesMut::new();
                for id in 0..8 {
                    Request::Fetch { topic: "big".into(), offset: 0, max_events: u32::MAX }
                        .encode(id, &mut frames);
                }
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                s.write_all(&frames).await.unwrap();
                println!("sent {} bytes: 8 pipelined FETCHes", frames.len());
                watch(pid, secs, "8 pipelined FETCHes", baseline).await;
                let mut got = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut got)).await;
                println!("read {} reply bytes", got.len());
            }
            "trickle" => {
                // Each connection sends all but the last byte of a 10 MiB PUBLISH frame, then one byte
                // every 5 s.
                let conns: usize = arg(&args, "--conns", 500);
                let mut frame = BytesMut::new();
                Request::Publish(vec![event("t", 0, 0, (10 << 20) - 200)]).encode(1, &mut frame);
                let frame = Arc::new(frame.freeze());
                let mut tasks = Vec::new();
                for _ in 0..conns {
                    let frame = frame.clone();
                    tasks.push(tokio::spawn(async move {
                        let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else { return false };
                        let body = &frame[..frame.len() - 2];
                        if s.write_all(body).await.is_err() {
                            return true; // cut off while sending: what the deadline is for
                        }
                        loop {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                            if s.write_all(&frame[frame.len() - 2..frame.len() - 1]).await.is_err() {
                                return true;
                            }
                        }
                    }));
                }
                println!("{conns} trickling connections");
                watch(pid, secs, &format!("{conns} trickling connections"), baseline).await;
                let cut = tasks.iter().filter(|t| t.is_finished()).count();
                println!("{cut} of {conns} connections were cut off within {secs} s");
                for t in tasks {
                    t.abort();
                }
            }
            "noread" => {
                // Connections that pipeline 128 PUBLISH frames of 1,000 events (200-byte topic) and
                // never read an ack.
                let conns: usize = arg(&args, "--conns", 20);
                let topic = "n".repeat(200);
                let mut tasks = Vec::new();
                for c in 0..conns {
                    let topic = topic.clone();
                    tasks.push(tokio::spawn(async move {
                        let mut frames = BytesMut::new();
                        let producer = 2_000_000 + c as u64 + 1_000 * std::process::id() as u64;
                        for f in 0..128u64 {
                            let events =
                                (0..1_000).map(|i| event(&topic, producer, f * 1_000 + i, 16)).collect();
                            Request::Publish(events).encode(f, &mut frames);
                        }
                        let sock = tokio::net::TcpSocket::new_v4().unwrap();
                        let _ = sock.set_recv_buffer_size(4096);
                        let Ok(s) = sock.connect(addr).await else { return };
                        let (_rd, mut wr) = tokio::io::split(s);
                        let _ = wr.write_all(&frames).await;
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        drop(_rd);
                    }));
                }
                println!("{conns} connections that never read their acks");
                watch(pid, secs, &format!("{conns} non-reading publishers"), baseline).await;
                for t in tasks {
                    t.abort();
                }
            }
            _ => eprintln!(
                "usage: attack fill|fetch|trickle|noread --addr A --pid P [--secs S] [--conns N] [--mib M]"
            ),
        }
    }
}
