//! A minimal HTTP endpoint for operators: `GET /metrics` (the Prometheus text format), `GET /health`
//! (200 while the process serves) and `GET /ready` (200 when the member should receive traffic,
//! else 503 with the reason).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::metrics::IngestMetrics;
use crate::rt::io::{AsyncReadExt, AsyncWriteExt};
use crate::rt::{self, net::TcpListener, sync::Latch, sync::Semaphore};

/// Renders the whole metrics page (Prometheus text format) when asked.
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// Says whether the member is ready for traffic (`Err` = why not).
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// What the endpoint serves.
#[derive(Clone)]
pub struct Pages {
    pub metrics: RenderMetrics,
    pub ready: Readiness,
}

/// Serves metrics on `listener` until shutdown. Each request gets one response, then the
/// connection is closed.
pub async fn serve_metrics(
    listener: TcpListener,
    pages: Pages,
    shutdown: Arc<Latch>,
    max_connections: usize,
    counters: Arc<IngestMetrics>,
) {
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let (mut stream, peer) = rt::select! {
            biased;
            _ = shutdown.wait() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "metrics accept failed");
                    rt::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // At the limit: close at once (dropping the stream), never wait on it.
            counters.metrics_connections_refused.inc();
            tracing::debug!(%peer, "metrics connection refused: at ingest.metrics_max_connections");
            continue;
        };
        let pages = pages.clone();
        rt::spawn(async move {
            let _slot = slot;
            let mut buf = Vec::with_capacity(1024);
            let read = rt::time::timeout(Duration::from_secs(5), async {
                let mut chunk = [0u8; 1024];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            })
            .await;
            if read.is_err() {
                return;
            }
            let response = respond(&buf, &pages);
            let _ = rt::time::timeout(Duration::from_secs(5), async {
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.flush().await;
            })
            .await;
            tracing::trace!(%peer, "metrics served");
        });
    }
}

/// The HTTP response for a raw request.
fn respond(request: &[u8], pages: &Pages) -> String {
    let line = request.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", "text/plain; version=0.0.4", (pages.metrics)()),
        ("GET", "/health") => ("200 OK", "text/plain", "ok\n".to_string()),
        ("GET", "/ready") => match (pages.ready)() {
            Ok(()) => ("200 OK", "text/plain", "ready\n".to_string()),
            Err(why) => ("503 Service Unavailable", "text/plain", format!("not ready: {why}\n")),
        },
        ("GET", _) => ("404 Not Found", "text/plain", "try /metrics, /health or /ready\n".to_string()),
        _ => ("405 Method Not Allowed", "text/plain", "only GET\n".to_string()),
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Binds the metrics listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let im = Arc::new(crate::metrics::IngestMetrics::default());
        im.events_stored.add(2);
        let ready = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r = ready.clone();
        let m = Pages {
            metrics: Arc::new(move || im.render_prometheus()),
            ready: Arc::new(move || match r.load(std::sync::atomic::Ordering::Relaxed) {
                true => Ok(()),
                false => Err("no leader known".into()),
            }),
        };
        let ok = respond(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", &m);
        assert!(ok.starts_with("HTTP/1.1 200 OK"));
        assert!(ok.contains("esc_events_stored_total 2"));
        let body_len = ok.split("\r\n\r\n").nth(1).unwrap().len();
        assert!(ok.contains(&format!("Content-Length: {body_len}")));
        assert!(respond(b"GET / HTTP/1.1\r\n\r\n", &m).starts_with("HTTP/1.1 404"));
        assert!(respond(b"POST /metrics HTTP/1.1\r\n\r\n", &m).starts_with("HTTP/1.1 405"));
        assert!(respond(b"", &m).starts_with("HTTP/1.1 405"));
        assert!(respond(b"GET /health HTTP/1.1\r\n\r\n", &m).starts_with("HTTP/1.1 200 OK"));
        let not_ready = respond(b"GET /ready HTTP/1.1\r\n\r\n", &m);
        assert!(not_ready.starts_with("HTTP/1.1 503"), "{not_ready}");
        assert!(not_ready.ends_with("not ready: no leader known\n"), "{not_ready}");
        ready.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(respond(b"GET /ready HTTP/1.1\r\n\r\n", &m).starts_with("HTTP/1.1 200 OK"));
    }
}
