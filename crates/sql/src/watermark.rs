//! Event-time progress of one input: per-partition maximum event times, the job watermark, and
//! the late-event boundary.
//!
//! The watermark of a partition is the largest event time seen in it minus the out-of-order
//! tolerance. The input's watermark is the minimum over its active partitions, so one slow
//! partition holds every window open, except that a partition that has sent nothing for longer
//! than the idle timeout (in processing time, which the caller passes in as event arrival times
//! and through `advance_processing_time`) stops counting. The watermark never goes backwards.
//!
//! A partition the job is assigned but has not read from yet is *expected*: it holds the
//! watermark where it is until its first event arrives or the reader reports that it has caught
//! up with the partition's end (it had nothing to read). Without this, a job starting on a topic
//! whose partitions already hold data would let the first partition fetched set the watermark,
//! and the events of partitions fetched a moment later would count as late.
//!
//! The *close boundary* is the watermark minus the late-arrival tolerance. Windows whose end is
//! strictly before it are complete and are emitted; an event strictly before it is late. The
//! comparison is strict because windows are `(start, end]`: an event exactly at `end` may still
//! arrive while the watermark equals `end`.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct PartitionClock {
    max_event_ms: i64,
    last_arrival_ms: i64,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Watermark {
    out_of_order_ms: i64,
    late_arrival_ms: i64,
    idle_timeout_ms: Option<i64>,
    partitions: BTreeMap<i32, PartitionClock>,
    /// Assigned partitions not read from yet. Not checkpointed: the reader says again what it
    /// is assigned after a restore, and a restored partition has its clock.
    #[serde(skip)]
    expected: BTreeSet<i32>,
    now_ms: i64,
    watermark_ms: i64,
}

impl Watermark {
    pub(crate) fn new(out_of_order_ms: i64, late_arrival_ms: i64, idle_timeout_ms: Option<i64>) -> Watermark {
        Watermark {
            out_of_order_ms,
            late_arrival_ms,
            idle_timeout_ms,
            partitions: BTreeMap::new(),
            expected: BTreeSet::new(),
            now_ms: i64::MIN,
            watermark_ms: i64::MIN,
        }
    }

    /// The watermark: no event before it is expected any more (`i64::MIN` before any event).
    pub(crate) fn watermark_ms(&self) -> i64 {
        self.watermark_ms
    }

    /// Windows ending before this are emitted; events before this are late.
    pub(crate) fn close_boundary_ms(&self) -> i64 {
        self.watermark_ms.saturating_sub(self.late_arrival_ms)
    }

    /// The reader is assigned `partition` and will read it: until its first event (or
    /// [`Watermark::caught_up`]), the watermark does not move. A partition already seen is not
    /// expected again.
    pub(crate) fn expect(&mut self, partition: i32) {
        if !self.partitions.contains_key(&partition) {
            self.expected.insert(partition);
        }
    }

    /// The reader reached the end of `partition`: if it sent nothing, it holds nothing back.
    /// Whether it was still expected (and so the watermark may have moved).
    pub(crate) fn caught_up(&mut self, partition: i32) -> bool {
        let was_expected = self.expected.remove(&partition);
        if was_expected {
            self.recompute();
        }
        was_expected
    }

    /// Records an accepted event of `partition` at `event_ms`, arrived at `arrival_ms`.
    pub(crate) fn observe(&mut self, partition: i32, event_ms: i64, arrival_ms: i64) {
        self.expected.remove(&partition);
        let clock = self
            .partitions
            .entry(partition)
            .or_insert(PartitionClock { max_event_ms: event_ms, last_arrival_ms: arrival_ms });
        clock.max_event_ms = clock.max_event_ms.max(event_ms);
        clock.last_arrival_ms = clock.last_arrival_ms.max(arrival_ms);
        self.now_ms = self.now_ms.max(arrival_ms);
        self.recompute();
    }

    /// Moves processing time forward, which may make partitions idle.
    pub(crate) fn set_processing_time(&mut self, now_ms: i64) {
        self.now_ms = self.now_ms.max(now_ms);
        self.recompute();
    }

    fn is_active(&self, clock: &PartitionClock) -> bool {
        match self.idle_timeout_ms {
            None => true,
            Some(timeout_ms) => self.now_ms.saturating_sub(clock.last_arrival_ms) <= timeout_ms,
        }
    }

    fn recompute(&mut self) {
        if !self.expected.is_empty() {
            return;
        }
        let active_min = self
            .partitions
            .values()
            .filter(|clock| self.is_active(clock))
            .map(|clock| clock.max_event_ms)
            .min();
        // With every partition idle, the freshest one decides: the input as a whole has moved on.
        let Some(max_event_ms) =
            active_min.or_else(|| self.partitions.values().map(|clock| clock.max_event_ms).max())
        else {
            return;
        };
        self.watermark_ms = self.watermark_ms.max(max_event_ms.saturating_sub(self.out_of_order_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_over_partitions_minus_tolerance() {
        let mut watermark = Watermark::new(1_000, 0, None);
        assert_eq!(watermark.watermark_ms(), i64::MIN);
        watermark.observe(0, 10_000, 0);
        assert_eq!(watermark.watermark_ms(), 9_000);
        watermark.observe(1, 5_000, 0);
        // Never backwards, even when a new partition is behind.
        assert_eq!(watermark.watermark_ms(), 9_000);
        watermark.observe(0, 20_000, 0);
        assert_eq!(watermark.watermark_ms(), 9_000);
        watermark.observe(1, 15_000, 0);
        assert_eq!(watermark.watermark_ms(), 14_000);
    }

    #[test]
    fn an_expected_partition_holds_the_watermark_until_it_is_read_or_caught_up() {
        let mut watermark = Watermark::new(1_000, 0, None);
        watermark.expect(0);
        watermark.expect(1);
        watermark.expect(2);
        // Partition 0 is fetched first, far ahead: the others have not spoken yet.
        watermark.observe(0, 200_000, 0);
        assert_eq!(watermark.watermark_ms(), i64::MIN);
        watermark.observe(1, 10_000, 0);
        assert_eq!(watermark.watermark_ms(), i64::MIN);
        // Partition 2 had nothing to read.
        watermark.caught_up(2);
        assert_eq!(watermark.watermark_ms(), 9_000);
        // Caught up again, or expected again once seen: no effect.
        watermark.caught_up(2);
        watermark.expect(1);
        assert_eq!(watermark.watermark_ms(), 9_000);
        watermark.observe(1, 300_000, 0);
        assert_eq!(watermark.watermark_ms(), 199_000);
    }

    #[test]
    fn idle_partitions_stop_holding_back() {
        let mut watermark = Watermark::new(0, 500, Some(60_000));
        watermark.observe(0, 1_000, 0);
        watermark.observe(1, 50_000, 0);
        assert_eq!(watermark.watermark_ms(), 1_000);
        assert_eq!(watermark.close_boundary_ms(), 500);
        watermark.observe(1, 51_000, 60_000);
        assert_eq!(watermark.watermark_ms(), 1_000);
        watermark.set_processing_time(60_001);
        assert_eq!(watermark.watermark_ms(), 51_000);
    }
}
