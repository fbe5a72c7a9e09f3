//! The fetches waiting for data in one partition: a long-polling fetch registers its own
//! [`FetchWaker`] with every partition it reads, and an append, a transaction marker or
//! shutdown wakes only the fetches registered where it happened. Before this, one broker-wide
//! notifier woke every parked fetch on every produce, and each re-read all of its partitions.
//!
//! Registration happens before the fetch reads, and a wake stores a permit when the fetch is not
//! yet waiting (`Notify::notify_one`), so an append that lands between the read and the wait is
//! never missed. Entries are weak: a fetch that answered and went away leaves a dead entry that
//! the next wake drains, or that a registration prunes once the list is long.

use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

/// One fetch's wake-up: shared with every partition it waits on.
pub(crate) type FetchWaker = Arc<Notify>;

/// Past this many entries, a registration first drops the dead ones (fetches that have answered)
/// and this fetch's own earlier entry, so an idle partition polled forever stays small.
const WAITERS_PRUNE_AT: usize = 32;

#[derive(Debug, Default)]
pub(crate) struct FetchWaiters {
    waiters: Mutex<Vec<Weak<Notify>>>,
}

impl FetchWaiters {
    /// Registers `waker` to be woken by the next [`FetchWaiters::wake_all`].
    pub(crate) fn register(&self, waker: &FetchWaker) {
        let mut waiters = self.lock();
        if waiters.len() >= WAITERS_PRUNE_AT {
            waiters
                .retain(|waiter| waiter.strong_count() > 0 && !Weak::ptr_eq(waiter, &Arc::downgrade(waker)));
        }
        waiters.push(Arc::downgrade(waker));
    }

    /// Wakes every fetch registered since the last wake, once each.
    pub(crate) fn wake_all(&self) {
        let waiters = std::mem::take(&mut *self.lock());
        for waiter in waiters {
            if let Some(waker) = waiter.upgrade() {
                waker.notify_one();
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Weak<Notify>>> {
        self.waiters.lock().expect("fetch waiters mutex poisoned by a panic")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wake_before_the_wait_is_not_lost_and_wakes_each_fetch_once() {
        let waiters = FetchWaiters::default();
        let (first, second): (FetchWaker, FetchWaker) = (Arc::default(), Arc::default());
        waiters.register(&first);
        waiters.register(&second);
        waiters.wake_all();
        // Both wake although neither was waiting yet when the wake came.
        tokio::time::timeout(std::time::Duration::from_secs(1), first.notified()).await.expect("woken");
        tokio::time::timeout(std::time::Duration::from_secs(1), second.notified()).await.expect("woken");
        assert_eq!(waiters.len(), 0, "a wake drains the list");
        // Not registered again: the next wake does not reach them.
        waiters.wake_all();
        let again = tokio::time::timeout(std::time::Duration::from_millis(50), first.notified()).await;
        assert!(again.is_err(), "woken without being registered");
    }

    #[test]
    fn fetches_that_went_away_are_pruned_and_a_fetch_polling_an_idle_partition_stays_one_entry() {
        let waiters = FetchWaiters::default();
        for _ in 0..1_000 {
            let gone: FetchWaker = Arc::default();
            waiters.register(&gone);
        }
        assert!(waiters.len() <= WAITERS_PRUNE_AT, "{} entries", waiters.len());
        let polling: FetchWaker = Arc::default();
        for _ in 0..1_000 {
            waiters.register(&polling);
        }
        assert!(waiters.len() <= WAITERS_PRUNE_AT, "{} entries", waiters.len());
    }
}
