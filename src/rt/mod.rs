//! The runtime seam: the only module that names tokio or madsim directly.
//!
//! Production code reaches the clock, tasks, sockets, entropy and the disk only through here, so the
//! very same code runs on real tokio (normal build) and inside the madsim simulator
//! (`--cfg madsim`), where one seed decides every scheduling choice. See docs/design.md, "The runtime
//! seam".
#![allow(clippy::disallowed_methods)]

pub mod clock;
pub mod disk;
pub mod fd_reserve;
pub mod latch;
pub mod mem;
pub mod net;
pub mod rng;

pub use clock::NodeClock;
pub use disk::{Disk, DiskError, DiskFault, DiskLatency, FileDisk, SimDisk};
pub use rng::{NodeRng, node_rng, rng_from_seed};

/// `select!` — every use must start with `biased;` (docs/design.md, rule 3).
pub use tokio::select;
/// Spawns a task on the current runtime (the current simulated node under madsim).
pub use tokio::spawn;
pub use tokio::task::JoinHandle;
/// `#[rt::test]`: an async unit test on the runtime (the simulator under madsim).
#[cfg(test)]
pub use tokio::test;

/// Asynchronous I/O traits and helpers. Use [`io::split`], not `into_split`.
pub mod io {
    pub use tokio::io::{
        AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, BufWriter, ReadBuf, ReadHalf,
        WriteHalf, split,
    };
}

/// Synchronisation primitives (tokio's, which are deterministic under madsim).
pub mod sync {
    /// Use [`Latch`] for broadcast signals: tokio's `watch` wakes receivers in a random order
    /// (see `rt::latch`), which breaks replay.
    pub use super::latch::Latch;
    pub use tokio::sync::{Mutex, Notify, OwnedSemaphorePermit, RwLock, Semaphore, broadcast, mpsc, oneshot};
}

/// Timers on the runtime's monotonic clock. Protocol timers that must be skewable use
/// [`NodeClock`] instead.
pub mod time {
    pub use std::time::Duration;
    pub use tokio::time::{Instant, Interval, MissedTickBehavior, interval, sleep, sleep_until};

    /// The runtime's monotonic now (simulated time under madsim).
    pub fn now() -> Instant {
        Instant::now()
    }

    /// Error returned by [`timeout`] when the deadline passes first.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
    #[error("deadline elapsed")]
    pub struct Elapsed;

    /// Runs `fut` for at most `dur`. Built on a biased select so it is `Send` and replays exactly
    /// in the simulator.
    pub async fn timeout<F: std::future::Future>(dur: Duration, fut: F) -> Result<F::Output, Elapsed> {
        tokio::select! {
            biased;
            out = fut => Ok(out),
            _ = sleep(dur) => Err(Elapsed),
        }
    }
}

/// Waits for Ctrl-C (SIGINT); under madsim, for the simulator's ctrl-c to this node.
pub async fn ctrl_c() -> std::io::Result<()> {
    tokio::signal::ctrl_c().await
}

/// Waits for SIGINT or SIGTERM (a service manager's stop); under madsim, for ctrl-c.
pub async fn terminate_signal() -> std::io::Result<()> {
    #[cfg(all(unix, not(madsim)))]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            biased;
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(any(not(unix), madsim))]
    {
        tokio::signal::ctrl_c().await
    }
}

/// SIGHUP notifications (a "reload your configuration" request). Never fires under madsim or
/// off Unix. (The signal is only named inside function bodies: rustdoc builds this crate without
/// `--cfg madsim` against the simulator's tokio when `cargo simtest` runs the doc tests.)
pub struct Hangups {
    rx: Option<tokio::sync::mpsc::UnboundedReceiver<()>>,
}

impl Hangups {
    /// Starts listening for SIGHUP (if the signal cannot be hooked, [`Hangups::recv`] never returns).
    /// Must be called inside the runtime.
    pub fn new() -> Self {
        #[cfg(all(unix, not(madsim)))]
        if let Ok(mut sig) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(async move {
                while sig.recv().await.is_some() {
                    if tx.send(()).is_err() {
                        break;
                    }
                }
            });
            return Hangups { rx: Some(rx) };
        }
        Hangups { rx: None }
    }

    /// Waits for the next SIGHUP.
    pub async fn recv(&mut self) {
        if let Some(rx) = &mut self.rx
            && rx.recv().await.is_some()
        {
            return;
        }
        std::future::pending::<()>().await
    }
}

impl Default for Hangups {
    fn default() -> Self {
        Self::new()
    }
}

/// True when compiled for the madsim simulator.
pub const SIMULATED: bool = cfg!(madsim);

/// Reads a small configuration file from the real filesystem. Only for the CLI's `--config`; it is
/// not on the simulated path.
pub fn read_config_file(path: &std::path::Path) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}
