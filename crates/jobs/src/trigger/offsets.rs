//! Which offsets a trigger may commit.
//!
//! Events of one partition finish out of order (different keys are delivered in parallel), but a
//! committed offset means "everything before this is done": after a crash the group resumes from
//! it, so committing past an unfinished event would lose it. `OffsetTracker` therefore commits,
//! per partition, the lowest offset still unfinished (or one past the last event read when none
//! is), and only moves forward.
//!
//! Each partition's state carries a generation, bumped whenever the partition is assigned anew.
//! A delivery started under an earlier assignment reports with its old generation and is ignored:
//! after a rebalance the partition's new owner (maybe this consumer again) delivers the event
//! again from the committed offset, which is at-least-once, not loss.

use std::collections::{BTreeSet, HashMap};

/// A partition's position as one consumer sees it.
#[derive(Debug, Default)]
struct PartitionState {
    generation: u64,
    /// Offsets read and not yet finished.
    unfinished: BTreeSet<i64>,
    /// One past the highest offset read.
    next_offset: Option<i64>,
    /// The last offset committed (or handed out to commit).
    committed: Option<i64>,
}

/// Unfinished offsets per partition of one topic.
#[derive(Debug, Default)]
pub struct OffsetTracker {
    partitions: HashMap<i32, PartitionState>,
    next_generation: u64,
}

impl OffsetTracker {
    /// Records that `offset` of `partition` was read and is being handled; returns the generation
    /// to report its completion with.
    pub fn read(&mut self, partition: i32, offset: i64) -> u64 {
        let next_generation = &mut self.next_generation;
        let state = self.partitions.entry(partition).or_insert_with(|| {
            *next_generation += 1;
            PartitionState { generation: *next_generation, ..PartitionState::default() }
        });
        state.unfinished.insert(offset);
        state.next_offset = Some(state.next_offset.map_or(offset + 1, |next| next.max(offset + 1)));
        state.generation
    }

    /// Records that `offset` was delivered, dead-lettered or filtered out.
    pub fn finish(&mut self, partition: i32, offset: i64, generation: u64) {
        if let Some(state) = self.partitions.get_mut(&partition) {
            if state.generation == generation {
                state.unfinished.remove(&offset);
            }
        }
    }

    /// Forgets a partition this consumer no longer owns.
    pub fn revoke(&mut self, partition: i32) {
        self.partitions.remove(&partition);
    }

    /// Partitions whose committable offset moved since the last call, with that offset.
    pub fn take_commits(&mut self) -> Vec<(i32, i64)> {
        let mut commits = Vec::new();
        for (partition, state) in &mut self.partitions {
            let Some(position) = Self::committable(state) else { continue };
            if state.committed.is_none_or(|committed| position > committed) {
                state.committed = Some(position);
                commits.push((*partition, position));
            }
        }
        commits.sort_unstable();
        commits
    }

    /// Every partition's committable offset, for a final commit before giving partitions up.
    pub fn positions(&self, partitions: impl IntoIterator<Item = i32>) -> Vec<(i32, i64)> {
        partitions
            .into_iter()
            .filter_map(|partition| {
                let state = self.partitions.get(&partition)?;
                Some((partition, Self::committable(state)?))
            })
            .collect()
    }

    /// Events read and not yet finished, over all partitions.
    pub fn unfinished(&self) -> usize {
        self.partitions.values().map(|state| state.unfinished.len()).sum()
    }

    fn committable(state: &PartitionState) -> Option<i64> {
        state.unfinished.first().copied().or(state.next_offset)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn commits_stop_at_the_lowest_unfinished_offset() {
        let mut tracker = OffsetTracker::default();
        let generation = tracker.read(0, 10);
        tracker.read(0, 11);
        tracker.read(0, 12);
        tracker.finish(0, 11, generation);
        tracker.finish(0, 12, generation);
        assert_eq!(tracker.take_commits(), vec![(0, 10)]);
        // Nothing moved: nothing to commit again.
        assert_eq!(tracker.take_commits(), vec![]);
        tracker.finish(0, 10, generation);
        assert_eq!(tracker.take_commits(), vec![(0, 13)]);
        assert_eq!(tracker.unfinished(), 0);
    }

    #[test]
    fn a_completion_from_an_earlier_assignment_is_ignored() {
        let mut tracker = OffsetTracker::default();
        let old = tracker.read(3, 5);
        tracker.revoke(3);
        let new = tracker.read(3, 5);
        assert_ne!(old, new);
        tracker.finish(3, 5, old);
        assert_eq!(tracker.take_commits(), vec![(3, 5)]);
        tracker.finish(3, 5, new);
        assert_eq!(tracker.take_commits(), vec![(3, 6)]);
    }

    proptest! {
        /// The committed offset never passes an unfinished event and never goes backwards.
        #[test]
        fn never_commits_past_an_unfinished_event(finish_order in Just((0..40i64).collect::<Vec<_>>()).prop_shuffle(), take_every in 1usize..6) {
            let mut tracker = OffsetTracker::default();
            let mut generation = 0;
            for offset in 0..40 {
                generation = tracker.read(1, offset);
            }
            let mut finished = BTreeSet::new();
            let mut last = -1;
            for (step, offset) in finish_order.iter().enumerate() {
                tracker.finish(1, *offset, generation);
                finished.insert(*offset);
                if step % take_every == 0 {
                    for (_, position) in tracker.take_commits() {
                        prop_assert!(position > last);
                        prop_assert!((0..position).all(|earlier| finished.contains(&earlier)));
                        last = position;
                    }
                }
            }
            prop_assert_eq!(tracker.positions([1]), vec![(1, 40)]);
        }
    }
}
