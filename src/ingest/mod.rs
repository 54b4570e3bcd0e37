//! The client-facing servers: TCP (both protocols on one port) and, if configured, UDP legacy
//! frames. One task per connection, bounded buffers and pipelining, a connection limit, idle /
//! read / write timeouts, and a graceful shutdown that stops accepting, finishes in-flight
//! requests and closes clients.

mod auth;
mod conn;
pub mod convert;
pub mod http;
mod udp;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::BytesMut;

use crate::config::IngestConfig;
use crate::metrics::IngestMetrics;
use crate::rt::{self, NodeClock, net::TcpListener, sync::Latch, sync::Semaphore};
use crate::service::EventService;
use crate::wire::{ErrorCode, ErrorFrame, Response};

/// Everything the connection tasks share.
pub(crate) struct Shared<S> {
    pub config: IngestConfig,
    pub service: S,
    pub metrics: Arc<IngestMetrics>,
    pub clock: NodeClock,
    /// Permits = events that may be in the service at once.
    pub inflight: Arc<Semaphore>,
    /// Permits = bytes (on the wire) of the events that may be in the service at once.
    pub inflight_bytes: Arc<Semaphore>,
    pub server_name: String,
    pub conn_ids: AtomicU64,
    /// Credentials and roles.
    pub auth: auth::Authenticator,
    /// Set when `[ingest.tls]` is configured: every connection must complete a TLS handshake.
    pub tls: Option<crate::tls::TlsAcceptor>,
}

/// Tells a running server to shut down gracefully. Cloneable.
#[derive(Debug, Clone)]
pub struct ShutdownHandle {
    latch: Arc<Latch>,
}

impl ShutdownHandle {
    /// Starts a graceful shutdown (idempotent).
    pub fn shutdown(&self) {
        self.latch.set();
    }
}

/// A bound ingest server, ready to [`run`](IngestServer::run).
pub struct IngestServer<S> {
    listener: TcpListener,
    udp: Option<rt::net::UdpSocket>,
    metrics_listener: Option<TcpListener>,
    shared: Arc<Shared<S>>,
    shutdown: Arc<Latch>,
}

impl<S: EventService> IngestServer<S> {
    /// Binds the TCP listener (and UDP socket, if configured).
    pub async fn bind(
        config: IngestConfig,
        service: S,
        clock: NodeClock,
        server_name: impl Into<String>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(config.listen).await?;
        let udp = match config.udp_listen {
            Some(addr) => Some(rt::net::UdpSocket::bind(addr).await?),
            None => None,
        };
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(http::bind(addr).await?),
            None => None,
        };
        let auth = auth::Authenticator::new(&config);
        let tls = match &config.tls {
            Some(files) => Some(
                crate::tls::acceptor(files)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
            ),
            None => None,
        };
        let shared = Arc::new(Shared {
            auth,
            tls,
            inflight: Arc::new(Semaphore::new(config.max_inflight_events)),
            inflight_bytes: Arc::new(Semaphore::new(config.max_inflight_bytes)),
            config,
            service,
            metrics: Arc::new(IngestMetrics::default()),
            clock,
            server_name: server_name.into(),
            conn_ids: AtomicU64::new(0),
        });
        Ok(IngestServer { listener, udp, metrics_listener, shared, shutdown: Arc::new(Latch::new()) })
    }

    /// The TCP address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener has an address")
    }

    /// The UDP address actually bound, if UDP is on.
    pub fn udp_addr(&self) -> Option<SocketAddr> {
        self.udp.as_ref().and_then(|u| u.local_addr().ok())
    }

    /// The metrics HTTP address actually bound, if it is on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The server's counters.
    pub fn metrics(&self) -> Arc<IngestMetrics> {
        self.shared.metrics.clone()
    }

    /// A handle that stops the server.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle { latch: self.shutdown.clone() }
    }

    /// Serves until shut down, then drains: stops accepting, lets every connection finish its
    /// in-flight requests (up to `shutdown_grace_ms`), and returns.
    pub async fn run(self) {
        let IngestServer { listener, udp, metrics_listener, shared, shutdown } = self;
        if let Some(l) = metrics_listener {
            spawn_metrics(l, &shared, &shutdown);
        }
        tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "ingest listening");
        if !shared.auth.has_credentials() {
            tracing::warn!(
                "the client port is open to anyone: no ingest.auth_token or [[ingest.clients]] is configured, so \
                 anyone who reaches it may publish and consume; membership changes (ADMIN add/remove/transfer) \
                 are refused until a credential with the admin role is configured"
            );
        }
        let udp_task = udp.map(|sock| rt::spawn(udp::serve(sock, shared.clone(), shutdown.clone())));
        let mut accept_backoff = rt::time::Duration::from_millis(1);
        let mut fd_reserve = rt::fd_reserve::FdReserve::new();
        loop {
            if shutdown.is_set() {
                break;
            }
            fd_reserve.rearm();
            rt::select! {
                biased;
                _ = shutdown.wait() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        accept_backoff = rt::time::Duration::from_millis(1);
                        accept_one(&shared, stream, peer, &shutdown).await;
                    }
                    Err(e) => {
                        accept_backoff = accept_failed(&shared, &listener, &mut fd_reserve, e, accept_backoff).await;
                    }
                },
            }
        }
        drop(listener);
        tracing::info!(
            active = shared.metrics.connections_active.get(),
            "ingest shutting down: draining connections"
        );
        let grace = rt::time::Duration::from_millis(shared.config.shutdown_grace_ms);
        let deadline = rt::time::now() + grace + rt::time::Duration::from_millis(100);
        while shared.metrics.connections_active.get() > 0 && rt::time::now() < deadline {
            rt::time::sleep(rt::time::Duration::from_millis(10)).await;
        }
        if let Some(mut t) = udp_task {
            // The UDP loop stops at its next datagram boundary; let an in-flight publish finish.
            let left =
                deadline.saturating_duration_since(rt::time::now()).max(rt::time::Duration::from_millis(100));
            if rt::time::timeout(left, &mut t).await.is_err() {
                tracing::warn!("udp ingest did not stop within the grace period; aborting it");
                t.abort();
                // Wait until the task is really gone, so the capacity it held is released
                // before `run` returns.
                let _ = t.await;
            }
        }
        tracing::info!(left = shared.metrics.connections_active.get(), "ingest stopped");
    }
}

/// After a failed accept (typically EMFILE): answers one waiting client if it was for want of
/// descriptors, then backs off instead of spinning; returns the next backoff.
async fn accept_failed<S: EventService>(
    shared: &Arc<Shared<S>>,
    listener: &TcpListener,
    fd_reserve: &mut rt::fd_reserve::FdReserve,
    e: std::io::Error,
    backoff: rt::time::Duration,
) -> rt::time::Duration {
    tracing::warn!(error = %e, "accept failed");
    if rt::fd_reserve::is_fd_exhaustion(&e) && fd_reserve.release() {
        refuse_one_waiting(shared, listener).await;
    }
    rt::time::sleep(backoff).await;
    (backoff * 2).min(rt::time::Duration::from_secs(1))
}

/// Out of file descriptors: with the reserved one released, accepts one waiting client and tells
/// it "overloaded, retry" (a client in the backlog would otherwise wait for its own timeout).
async fn refuse_one_waiting<S: EventService>(shared: &Arc<Shared<S>>, listener: &TcpListener) {
    let wait = rt::time::Duration::from_millis(10);
    if let Ok(Ok((stream, peer))) = rt::time::timeout(wait, listener.accept()).await {
        tracing::debug!(%peer, "connection refused: out of file descriptors");
        refuse(shared, stream, "out of file descriptors");
    }
}

/// Refuses a connection as overloaded (counted): tells an acked client why, then closes.
fn refuse<S: EventService>(shared: &Arc<Shared<S>>, stream: rt::net::TcpStream, why: &str) {
    shared.metrics.connections_refused.inc();
    if shared.tls.is_some() {
        // A plain error frame would only confuse a TLS client; closing says as much.
        return;
    }
    // Best effort: never wait on a refused client.
    let mut out = BytesMut::new();
    let mut err = ErrorFrame::new(ErrorCode::Overloaded, why);
    err.retry_after_ms = shared.config.overload_retry_after_ms;
    Response::Error(err).encode(0, &mut out);
    rt::spawn(async move {
        use rt::io::AsyncWriteExt;
        let mut stream = stream;
        let _ = rt::time::timeout(rt::time::Duration::from_secs(1), async {
            let _ = stream.write_all(&out).await;
            let _ = stream.flush().await;
        })
        .await;
    });
}

/// Serves `/metrics`, `/health` and `/ready` on the metrics listener until shutdown.
fn spawn_metrics<S: EventService>(l: TcpListener, shared: &Arc<Shared<S>>, shutdown: &Arc<Latch>) {
    let (page, ready) = (shared.clone(), shared.clone());
    let pages = http::Pages {
        metrics: Arc::new(move || page.metrics.render_prometheus() + &page.service.render_metrics()),
        ready: Arc::new(move || ready.service.readiness()),
    };
    rt::spawn(http::serve_metrics(
        l,
        pages,
        shutdown.clone(),
        shared.config.metrics_max_connections,
        shared.metrics.clone(),
    ));
}

async fn accept_one<S: EventService>(
    shared: &Arc<Shared<S>>,
    stream: rt::net::TcpStream,
    peer: SocketAddr,
    shutdown: &Arc<Latch>,
) {
    let m = &shared.metrics;
    if m.connections_active.get() >= shared.config.max_connections as i64 {
        tracing::debug!(%peer, "connection refused: at max_connections");
        refuse(shared, stream, "too many connections");
        return;
    }
    // Replies are small and latency-bound; never let Nagle hold them back.
    let _ = stream.set_nodelay(true);
    m.connections_accepted.inc();
    m.connections_active.inc();
    let id = shared.conn_ids.fetch_add(1, Ordering::Relaxed);
    let shared = shared.clone();
    let shutdown = shutdown.clone();
    rt::spawn(async move {
        let guard = ActiveGuard(shared.metrics.clone());
        match shared.tls.clone() {
            None => conn::serve(stream, peer, id, shared, shutdown).await,
            Some(acceptor) => {
                // The handshake is a frame like any other: it must complete within the read timeout.
                let limit = rt::time::Duration::from_millis(shared.config.read_timeout_ms);
                match rt::time::timeout(limit, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => conn::serve(tls, peer, id, shared, shutdown).await,
                    Ok(Err(e)) => tracing::debug!(conn = id, %peer, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(conn = id, %peer, "TLS handshake timed out"),
                }
            }
        }
        drop(guard);
    });
}

/// Capacity held by events in the service: the semaphore permit plus the gauge that shows it.
/// Released however the holder ends (answered, connection dropped, node killed).
pub(crate) struct InflightGuard {
    _permit: crate::rt::sync::OwnedSemaphorePermit,
    /// The events' bytes, where they are counted (TCP publishes).
    _bytes: Option<crate::rt::sync::OwnedSemaphorePermit>,
    events: i64,
    metrics: Arc<IngestMetrics>,
}

impl InflightGuard {
    pub(crate) fn new(
        permit: crate::rt::sync::OwnedSemaphorePermit,
        events: usize,
        metrics: Arc<IngestMetrics>,
    ) -> Self {
        let events = events as i64;
        metrics.inflight_events.add(events);
        InflightGuard { _permit: permit, _bytes: None, events, metrics }
    }

    /// Also holds the events' share of the byte budget.
    pub(crate) fn with_bytes(mut self, bytes: crate::rt::sync::OwnedSemaphorePermit) -> Self {
        self._bytes = Some(bytes);
        self
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.metrics.inflight_events.add(-self.events);
    }
}

/// Decrements the active-connection gauge however the connection task ends.
struct ActiveGuard(Arc<IngestMetrics>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.connections_active.dec();
    }
}
