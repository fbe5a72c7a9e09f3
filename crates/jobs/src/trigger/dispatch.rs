//! The per-key scheduler: which buffered events may be delivered now.
//!
//! A trigger's ordering contract: events with the same key are delivered one delivery at a time,
//! in the order they were read; events with different keys are delivered in parallel, up to the
//! trigger's concurrency limit, so one slow key does not stall the others in its partition.
//! Events without a key promise no order among themselves and are delivered independently.
//!
//! `KeyedQueue` is a pure state machine (no I/O, no clock): the consumer loop pushes events,
//! asks for the next delivery, and reports each delivery finished. A delivery is one event, or
//! a batch when the trigger batches: a batch takes whole runs of ready keys, so a key is still in
//! at most one delivery at a time and its events stay in order inside the batch.

use std::collections::{HashMap, VecDeque};

use bytes::Bytes;

/// Identifies one delivery handed out by `next_delivery`, so that finishing it frees exactly the
/// keys it held.
pub type DeliveryId = u64;

/// A unit of work that is ready to start.
#[derive(Debug)]
enum Ready<T> {
    /// A key that is not in any delivery and has queued events.
    Key(Bytes),
    /// An event without a key.
    Unkeyed(T),
}

#[derive(Debug)]
struct KeyState<T> {
    queue: VecDeque<T>,
    /// The delivery holding this key, if any.
    busy_with: Option<DeliveryId>,
}

/// Events waiting for delivery, grouped by key.
#[derive(Debug)]
pub struct KeyedQueue<T> {
    concurrency: usize,
    active: usize,
    next_delivery_id: DeliveryId,
    keys: HashMap<Bytes, KeyState<T>>,
    ready: VecDeque<Ready<T>>,
    /// Events that could start now (in `ready`), as opposed to waiting behind a busy key.
    ready_events: usize,
    /// Every event held, ready or waiting.
    buffered_events: usize,
}

/// Events to deliver together, in order, with the keys the delivery holds.
#[derive(Debug)]
pub struct Delivery<T> {
    pub id: DeliveryId,
    pub events: Vec<T>,
    keys: Vec<Bytes>,
}

impl<T> KeyedQueue<T> {
    /// A scheduler that allows `concurrency` deliveries at once (at least one).
    pub fn new(concurrency: usize) -> KeyedQueue<T> {
        KeyedQueue {
            concurrency: concurrency.max(1),
            active: 0,
            next_delivery_id: 0,
            keys: HashMap::new(),
            ready: VecDeque::new(),
            ready_events: 0,
            buffered_events: 0,
        }
    }

    /// Queues an event behind the earlier events with the same key.
    pub fn push(&mut self, key: Option<Bytes>, event: T) {
        self.buffered_events += 1;
        let Some(key) = key else {
            self.ready.push_back(Ready::Unkeyed(event));
            self.ready_events += 1;
            return;
        };
        let state = self
            .keys
            .entry(key.clone())
            .or_insert_with(|| KeyState { queue: VecDeque::new(), busy_with: None });
        let was_idle = state.queue.is_empty() && state.busy_with.is_none();
        state.queue.push_back(event);
        if was_idle {
            self.ready.push_back(Ready::Key(key));
        }
        if state.busy_with.is_none() {
            self.ready_events += 1;
        }
    }

    /// Deliveries in progress.
    pub fn active(&self) -> usize {
        self.active
    }

    /// Events held, whether ready or waiting behind a busy key.
    pub fn buffered_events(&self) -> usize {
        self.buffered_events
    }

    /// Events that could start now if the concurrency limit allowed.
    pub fn ready_events(&self) -> usize {
        self.ready_events
    }

    /// The next delivery, of at most `max_events` events (at least one), if the concurrency limit
    /// allows one more and an event is ready.
    pub fn next_delivery(&mut self, max_events: usize) -> Option<Delivery<T>> {
        if self.active >= self.concurrency || self.ready.is_empty() {
            return None;
        }
        let max_events = max_events.max(1);
        let id = self.next_delivery_id;
        self.next_delivery_id += 1;
        let mut delivery = Delivery { id, events: Vec::new(), keys: Vec::new() };
        while delivery.events.len() < max_events {
            let Some(unit) = self.ready.pop_front() else { break };
            match unit {
                Ready::Unkeyed(event) => delivery.events.push(event),
                Ready::Key(key) => {
                    let Some(state) = self.keys.get_mut(&key) else { continue };
                    let room = max_events - delivery.events.len();
                    let taken = state.queue.len().min(room);
                    delivery.events.extend(state.queue.drain(..taken));
                    // Events left behind wait for this delivery: they are no longer ready.
                    self.ready_events -= state.queue.len();
                    state.busy_with = Some(id);
                    delivery.keys.push(key);
                }
            }
        }
        if delivery.events.is_empty() {
            return None;
        }
        self.ready_events -= delivery.events.len();
        self.buffered_events -= delivery.events.len();
        self.active += 1;
        Some(delivery)
    }

    /// Marks a delivery finished: its keys are free, and the next events of each become ready.
    pub fn finish(&mut self, delivery_id: DeliveryId, keys: &[Bytes]) {
        self.active = self.active.saturating_sub(1);
        for key in keys {
            let Some(state) = self.keys.get_mut(key) else { continue };
            if state.busy_with != Some(delivery_id) {
                continue;
            }
            state.busy_with = None;
            if state.queue.is_empty() {
                self.keys.remove(key);
            } else {
                self.ready_events += state.queue.len();
                self.ready.push_back(Ready::Key(key.clone()));
            }
        }
    }

    /// Drops every queued (not yet delivering) event for which `drop` says so, e.g. the events of
    /// partitions this consumer no longer owns. Returns how many were dropped.
    pub fn purge(&mut self, mut drop: impl FnMut(&T) -> bool) -> usize {
        let mut dropped = 0;
        let mut dropped_ready = 0;
        for state in self.keys.values_mut() {
            let before = state.queue.len();
            state.queue.retain(|event| !drop(event));
            let gone = before - state.queue.len();
            dropped += gone;
            if state.busy_with.is_none() {
                dropped_ready += gone;
            }
        }
        let before = self.ready.len();
        self.ready.retain(|unit| match unit {
            Ready::Unkeyed(event) => !drop(event),
            Ready::Key(_) => true,
        });
        let unkeyed_gone = before - self.ready.len();
        dropped += unkeyed_gone;
        dropped_ready += unkeyed_gone;
        // Keys left with nothing queued and no delivery are forgotten.
        let keys = &mut self.keys;
        keys.retain(|_, state| !state.queue.is_empty() || state.busy_with.is_some());
        self.ready.retain(|unit| match unit {
            Ready::Key(key) => keys.get(key).is_some_and(|state| !state.queue.is_empty()),
            Ready::Unkeyed(_) => true,
        });
        self.ready_events -= dropped_ready;
        self.buffered_events -= dropped;
        dropped
    }
}

impl<T> Delivery<T> {
    /// The keys this delivery holds; pass them back to `KeyedQueue::finish`.
    pub fn keys(&self) -> &[Bytes] {
        &self.keys
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key(name: &str) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(name.as_bytes()))
    }

    #[test]
    fn one_delivery_per_key_and_others_in_parallel() {
        let mut queue = KeyedQueue::new(4);
        queue.push(key("a"), 1);
        queue.push(key("a"), 2);
        queue.push(key("b"), 3);
        queue.push(None, 4);
        let first = queue.next_delivery(1).unwrap_or_else(|| panic!("a is ready"));
        assert_eq!(first.events, vec![1]);
        let second = queue.next_delivery(1).unwrap_or_else(|| panic!("b is ready"));
        assert_eq!(second.events, vec![3]);
        let third = queue.next_delivery(1).unwrap_or_else(|| panic!("the unkeyed event is ready"));
        assert_eq!(third.events, vec![4]);
        // Event 2 waits for event 1's delivery, even though concurrency allows more.
        assert!(queue.next_delivery(1).is_none());
        assert_eq!(queue.ready_events(), 0);
        assert_eq!(queue.buffered_events(), 1);
        queue.finish(first.id, first.keys());
        let fourth = queue.next_delivery(1).unwrap_or_else(|| panic!("a is free again"));
        assert_eq!(fourth.events, vec![2]);
        assert_eq!(queue.active(), 3);
    }

    #[test]
    fn the_concurrency_limit_holds() {
        let mut queue = KeyedQueue::new(2);
        for index in 0..5 {
            queue.push(key(&format!("k{index}")), index);
        }
        let first = queue.next_delivery(1).unwrap_or_else(|| panic!("ready"));
        let _second = queue.next_delivery(1).unwrap_or_else(|| panic!("ready"));
        assert!(queue.next_delivery(1).is_none());
        queue.finish(first.id, first.keys());
        assert!(queue.next_delivery(1).is_some());
    }

    #[test]
    fn a_batch_takes_runs_of_keys_in_order() {
        let mut queue = KeyedQueue::new(2);
        for (name, event) in [("a", 1), ("b", 2), ("a", 3), ("c", 4), ("b", 5)] {
            queue.push(key(name), event);
        }
        let batch = queue.next_delivery(10).unwrap_or_else(|| panic!("ready"));
        assert_eq!(batch.events, vec![1, 3, 2, 5, 4]);
        queue.push(key("a"), 6);
        // a is held by the batch.
        assert!(queue.next_delivery(10).is_none());
        queue.finish(batch.id, batch.keys());
        assert_eq!(queue.next_delivery(10).map(|delivery| delivery.events), Some(vec![6]));
    }

    #[test]
    fn a_stale_finish_does_not_free_a_key_held_by_a_newer_delivery() {
        let mut queue = KeyedQueue::new(4);
        queue.push(key("a"), 1);
        let first = queue.next_delivery(1).unwrap_or_else(|| panic!("ready"));
        queue.purge(|_| true);
        queue.finish(first.id, first.keys());
        queue.push(key("a"), 2);
        queue.push(key("a"), 3);
        let second = queue.next_delivery(1).unwrap_or_else(|| panic!("ready"));
        assert_eq!(second.events, vec![2]);
        // A late duplicate report for the first delivery must not release event 3 early.
        queue.finish(first.id, first.keys());
        assert!(queue.next_delivery(1).is_none());
    }

    #[test]
    fn purge_drops_queued_events_only() {
        let mut queue = KeyedQueue::new(4);
        queue.push(key("a"), 1);
        queue.push(key("a"), 2);
        queue.push(key("b"), 3);
        queue.push(None, 4);
        let first = queue.next_delivery(1).unwrap_or_else(|| panic!("ready"));
        assert_eq!(queue.purge(|event| *event != 3), 2);
        assert_eq!(queue.buffered_events(), 1);
        assert_eq!(queue.ready_events(), 1);
        queue.finish(first.id, first.keys());
        assert_eq!(queue.next_delivery(10).map(|delivery| delivery.events), Some(vec![3]));
        assert!(queue.next_delivery(10).is_none());
        assert_eq!(queue.buffered_events(), 0);
    }

    proptest! {
        /// Whatever the arrival pattern, concurrency and batch size: each key's events are handed
        /// out in push order, never two deliveries hold one key at once, every event is handed
        /// out exactly once, and the counters agree with the contents.
        #[test]
        fn order_per_key_and_exclusivity(
            operations in proptest::collection::vec((0u8..4, 0u8..5), 1..200),
            concurrency in 1usize..5,
            batch in 1usize..4,
        ) {
            let mut queue = KeyedQueue::new(concurrency);
            let mut next_event = 0u32;
            let mut pushed: HashMap<u8, Vec<u32>> = HashMap::new();
            let mut delivered: HashMap<u8, Vec<u32>> = HashMap::new();
            let mut in_flight: Vec<Delivery<(u8, u32)>> = Vec::new();
            for (operation, key_index) in operations {
                match operation {
                    0 | 1 => {
                        pushed.entry(key_index).or_default().push(next_event);
                        queue.push(key(&key_index.to_string()), (key_index, next_event));
                        next_event += 1;
                    }
                    2 => {
                        if let Some(delivery) = queue.next_delivery(batch) {
                            prop_assert!(delivery.events.len() <= batch);
                            for (key_index, event) in &delivery.events {
                                let busy = in_flight.iter().any(|other| {
                                    other.events.iter().any(|(other_key, _)| other_key == key_index)
                                });
                                prop_assert!(!busy, "key {} in two deliveries", key_index);
                                delivered.entry(*key_index).or_default().push(*event);
                            }
                            in_flight.push(delivery);
                            prop_assert!(in_flight.len() <= concurrency);
                        }
                    }
                    _ => {
                        if !in_flight.is_empty() {
                            let done = in_flight.remove(usize::from(key_index) % in_flight.len());
                            queue.finish(done.id, done.keys());
                        }
                    }
                }
                let held: usize = pushed.values().map(Vec::len).sum::<usize>()
                    - delivered.values().map(Vec::len).sum::<usize>();
                prop_assert_eq!(queue.buffered_events(), held);
            }
            // Drain everything.
            loop {
                while let Some(delivery) = queue.next_delivery(batch) {
                    for (key_index, event) in &delivery.events {
                        delivered.entry(*key_index).or_default().push(*event);
                    }
                    in_flight.push(delivery);
                }
                let Some(done) = in_flight.pop() else { break };
                queue.finish(done.id, done.keys());
            }
            prop_assert_eq!(delivered, pushed);
            prop_assert_eq!(queue.ready_events(), 0);
        }
    }
}
