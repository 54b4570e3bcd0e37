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
    /// Redriven from the DLQ entry with this id: not tracked by the checkpoint position; the entry
    /// leaves the DLQ once this event is settled.
    pub redrive: Option<u64>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, Priority};

    fn item(offset: u64) -> Item {
        Item {
            event: StoredEvent { offset, timestamp_ms: 0, event: Event::new("t", Priority::High, "x") },
            enqueued: Duration::ZERO,
            redrive: None,
        }
    }

    #[test]
    #[should_panic(expected = "exactly one consumer")]
    fn a_queue_has_exactly_one_consumer() {
        let q = ClassQueue::default();
        let _a = q.receiver();
        let _b = q.receiver();
    }

    #[test]
    fn eviction_removes_the_oldest_from_the_queue_itself() {
        let q = ClassQueue::default();
        for o in 0..3 {
            assert!(q.push_evicting_oldest(item(o), 3).unwrap().is_none());
        }
        let evicted = q.push_evicting_oldest(item(3), 3).unwrap().unwrap();
        assert_eq!(evicted.event.offset, 0);
        assert_eq!((q.queued(), q.held()), (3, 3));
        let left: Vec<u64> = q.drain_all().iter().map(|i| i.event.offset).collect();
        assert_eq!(left, vec![1, 2, 3], "the evicted event can never also be dequeued");
    }

    #[test]
    fn held_counts_until_released_and_bounds_pushes() {
        let q = ClassQueue::default();
        q.push_bounded(item(0), 2).unwrap();
        q.push_bounded(item(1), 2).unwrap();
        assert!(matches!(q.push_bounded(item(2), 2), Err((_, false))));
        q.drain_all();
        assert_eq!(q.held(), 0);
        q.close();
        assert!(matches!(q.push_bounded(item(3), 2), Err((_, true))), "closed: refused as such");
    }
}
