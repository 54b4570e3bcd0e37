//! UDP ingest of legacy frames: one frame per datagram, no replies. Off unless configured.

use std::sync::Arc;

use bytes::BytesMut;

use super::{InflightGuard, Shared};
use crate::rt::{self, sync::Latch};
use crate::service::EventService;
use crate::wire::{Inbound, StreamDecoder};

/// Largest UDP payload.
const MAX_DATAGRAM: usize = 65_536;

/// Receives datagrams until shutdown. A datagram must hold exactly one legacy frame.
pub(crate) async fn serve<S: EventService>(
    sock: rt::net::UdpSocket,
    shared: Arc<Shared<S>>,
    shutdown: Arc<Latch>,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let m = &shared.metrics;
    loop {
        let (n, peer) = rt::select! {
            biased;
            _ = shutdown.wait() => return,
            r = sock.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(error = %e, "udp receive failed");
                    continue;
                }
            },
        };
        m.udp_datagrams.inc();
        let mut frame = BytesMut::from(&buf[..n]);
        let mut dec = StreamDecoder::new(shared.config.max_frame_bytes);
        let event = match dec.decode(&mut frame) {
            Ok(Some(Inbound::Legacy(e))) if frame.is_empty() => e,
            other => {
                m.udp_malformed.inc();
                tracing::debug!(%peer, bytes = n, ?other, "malformed udp datagram");
                continue;
            }
        };
        m.legacy_frames.inc();
        if !shared.auth.anonymous().has(crate::config::Role::Publish)
            || !shared.config.topic_allowed(&event.topic)
        {
            m.legacy_refused.inc();
            continue;
        }
        // Datagrams cannot be pushed back on; wait for capacity (the socket buffer absorbs or
        // drops the excess, as UDP does).
        let Ok(permit) = shared
            .inflight
            .clone()
            .acquire_owned()
            .await
            .map(|p| InflightGuard::new(p, 1, shared.metrics.clone()))
        else {
            return;
        };
        match shared.service.publish(vec![event]).await {
            Ok(r) => {
                if r.first().is_some_and(|a| a.duplicate) {
                    m.events_duplicate.inc()
                } else {
                    m.events_stored.inc()
                }
            }
            Err(e) => tracing::debug!(error = %e, "udp publish failed"),
        }
        drop(permit);
    }
}
