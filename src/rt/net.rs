//! Sockets. TCP types are the runtime's own; UDP gets a thin wrapper because the simulator's
//! `send_to` reports no byte count.
//!
//! Simulated TCP sends nothing until `flush()` — always flush. Simulated `connect` fails fast
//! during a partition — callers retry with backoff (see [`connect_with_retry`]).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

pub use tokio::net::{TcpListener, TcpStream};

/// A UDP socket with the same API in both builds.
#[derive(Debug)]
pub struct UdpSocket {
    inner: tokio::net::UdpSocket,
}

impl UdpSocket {
    /// Binds a UDP socket.
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        Ok(UdpSocket { inner: tokio::net::UdpSocket::bind(addr).await? })
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    /// Sends one datagram.
    pub async fn send_to(&self, buf: &[u8], target: SocketAddr) -> io::Result<()> {
        #[cfg(madsim)]
        {
            self.inner.send_to(target, buf).await
        }
        #[cfg(not(madsim))]
        {
            self.inner.send_to(buf, target).await.map(|_| ())
        }
    }

    /// Receives one datagram.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.inner.recv_from(buf).await
    }
}

/// Connects with exponential backoff (capped at `max_backoff`) until `attempts` are used up.
pub async fn connect_with_retry(
    addr: SocketAddr,
    attempts: u32,
    first_backoff: Duration,
    max_backoff: Duration,
) -> io::Result<TcpStream> {
    let mut backoff = first_backoff;
    let mut last = None;
    for _ in 0..attempts.max(1) {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
        super::time::sleep(backoff).await;
        backoff = (backoff * 2).min(max_backoff);
    }
    Err(last.unwrap_or_else(|| io::Error::other("no connection attempt made")))
}
