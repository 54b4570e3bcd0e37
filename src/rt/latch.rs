//! `Latch`: a one-shot broadcast flag for shutdown and similar signals.
//!
//! Once [`Latch::set`], every current and future [`Latch::wait`] completes. Waiters are woken in
//! the order they registered. (tokio's `watch` must not be used on simulated paths: each receiver
//! parks on one of eight notify shards picked by tokio's thread RNG, which is seeded from a
//! process-global counter — the wake order, and so the simulator's schedule, would then differ
//! between two runs of the same seed in one process.)

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

/// A flag that can be set once and awaited by many.
#[derive(Debug, Default)]
pub struct Latch {
    set: AtomicBool,
    notify: Notify,
}

impl Latch {
    /// An unset latch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the latch and wakes every waiter (idempotent).
    pub fn set(&self) {
        self.set.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// True once set.
    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::SeqCst)
    }

    /// Completes once the latch is set (at once if it already is). Cancel-safe.
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Register before checking the flag, so a `set` between the check and the await
            // is not missed.
            notified.as_mut().enable();
            if self.is_set() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(all(test, not(madsim)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn wakes_current_and_future_waiters() {
        let l = Arc::new(Latch::new());
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let l = l.clone();
                tokio::spawn(async move { l.wait().await })
            })
            .collect();
        tokio::task::yield_now().await;
        assert!(!l.is_set());
        l.set();
        for w in waiters {
            tokio::time::timeout(std::time::Duration::from_secs(5), w).await.unwrap().unwrap();
        }
        // A waiter that arrives after the set returns at once.
        tokio::time::timeout(std::time::Duration::from_secs(1), l.wait()).await.unwrap();
        l.set();
        assert!(l.is_set());
    }
}
