//! A class queue: many producers, exactly one consumer (the class's processor). Producers push
//! under a lock, so any number of them may push at once; the realtime overflow policy (evict the
//! oldest) runs inside the producer's push, never as a second consumer. `held` counts events
//! queued or being handled, released by the processor when their fate is decided.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::event::StoredEvent;
use crate::rt::sync::Notify;

/// One queued event.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    pub event: StoredEvent,
    /// Node monotonic time when queued.
    pub enqueued: Duration,
    /// Redriven from the DLQ: not tracked by the checkpoint position.
    pub redrive: bool,
}

#[derive(Debug, Default)]
struct State {
    items: VecDeque<Item>,
    held: usize,
    closed: bool,
}

#[derive(Debug, Default)]
pub(crate) struct ClassQueue {
    state: Mutex<State>,
    notify: Notify,
    receiver_taken: AtomicBool,
}

/// The one consumer end of a [`ClassQueue`].
#[derive(Debug)]
pub(crate) struct Receiver<'a> {
    queue: &'a ClassQueue,
}

// A refused item is handed back by value so the caller can dead-letter it; boxing it would
// allocate on every push.
#[allow(clippy::result_large_err)]
impl ClassQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The consumer end; panics if taken twice (a queue has exactly one consumer).
    pub fn receiver(&self) -> Receiver<'_> {
        let taken = self.receiver_taken.swap(true, Ordering::SeqCst);
        assert!(!taken, "a class queue has exactly one consumer");
        Receiver { queue: self }
    }

    /// Pushes; if `queued >= cap` first removes and returns the oldest queued event.
    pub fn push_evicting_oldest(&self, item: Item, cap: usize) -> Result<Option<Item>, Item> {
        let mut st = self.lock();
        if st.closed {
            return Err(item);
        }
        let evicted = if st.items.len() >= cap {
            let old = st.items.pop_front();
            if old.is_some() {
                st.held -= 1;
            }
            old
        } else {
            None
        };
        st.items.push_back(item);
        st.held += 1;
        drop(st);
        self.notify.notify_one();
        Ok(evicted)
    }

    /// Pushes unless `held >= cap` (then the item comes back).
    pub fn push_bounded(&self, item: Item, cap: usize) -> Result<(), (Item, bool)> {
        let mut st = self.lock();
        if st.closed {
            return Err((item, true));
        }
        if st.held >= cap {
            return Err((item, false));
        }
        st.items.push_back(item);
        st.held += 1;
        drop(st);
        self.notify.notify_one();
        Ok(())
    }

    /// Pushes with no bound (the bound was enforced at admission).
    pub fn push(&self, item: Item) -> Result<(), Item> {
        self.push_bounded(item, usize::MAX).map_err(|(i, _)| i)
    }

    /// The processor is done with `n` events.
    pub fn release(&self, n: usize) {
        let mut st = self.lock();
        debug_assert!(st.held >= n, "released more than held");
        st.held -= n;
    }

    /// No more pushes; the consumer drains what is queued, then sees the end.
    pub fn close(&self) {
        self.lock().closed = true;
        self.notify.notify_waiters();
        self.notify.notify_one();
    }

    pub fn queued(&self) -> usize {
        self.lock().items.len()
    }

    pub fn held(&self) -> usize {
        self.lock().held
    }

    /// Removes every queued item (abort: the owner decides what happens to them).
    pub fn drain_all(&self) -> Vec<Item> {
        let mut st = self.lock();
        let items: Vec<Item> = st.items.drain(..).collect();
        st.held -= items.len();
        items
    }
}

impl Receiver<'_> {
    /// The next item; `None` once the queue is closed and empty. Cancel-safe.
    pub async fn recv(&mut self) -> Option<Item> {
        loop {
            let notified = self.queue.notify.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.queue.lock();
                if let Some(item) = st.items.pop_front() {
                    return Some(item);
                }
                if st.closed {
                    return None;
                }
            }
            notified.await;
        }
    }
}
