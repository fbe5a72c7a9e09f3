//! Model-based property tests of compaction: the log against a model of every batch ever
//! appended, with the transactions they belong to.
//!
//! Random sequences of appends (keys from a small space, so they repeat; tombstones; records with
//! no key; batches of transactional producers), commits and aborts, clock advances (rolls by age)
//! and ticks, cleaning passes (forced or by the dirty ratio), cleaning passes stopped at a step of
//! the swap and then crashed, clean and unclean reopens run against a compacted log. Offset maps
//! are sometimes tiny, so passes often clean only part of the dirty section. After every step the
//! log end offset must match the model; after every pass, crash and reopen the whole log is read
//! from the start and must satisfy, with `end` the first offset the pass did not compact:
//!
//! - every batch is one that was appended, with its base offset, last offset delta and producer
//!   fields, and every record is one of its records with its original offset, key, value and
//!   timestamp; a pass only ever removes records, and leaves those at or past `end` alone;
//! - the latest record of every key is there (a tombstone only until its time has come), and so
//!   is every record of a transaction still open;
//! - below `end`, no key appears twice, no record of an aborted transaction is left, and no
//!   record without a key;
//! - a tombstone that is still there carries the delete horizon of the first pass that covered
//!   it, and no tombstone survives a pass run at or after that horizon; a transaction marker
//!   stays while any batch of its transaction does, and is gone once `delete_retention_ms` has
//!   passed since the pass that found its transaction empty;
//! - the batches the caller asked to retain are there (possibly emptied);
//! - `Log::verify` passes, and a crash right after a pass changes nothing.
//!
//! A pass stopped after a step of its swap and crashed must leave a log that opens, verifies,
//! holds nothing that was not there before and loses no key's latest record.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::Union;
use proptest::test_runner::TestCaseError;
use tidewater_log::batch::{
    self, encode_control_batch, encode_records, BatchHeader, KeyValue, ProducerFields, BATCH_BYTES_HARD_MAX,
};
use tidewater_log::{
    CleanOptions, CleanOutcome, CleanStep, CleanupPolicy, Log, LogConfig, ManualClock,
    CLEANER_DEDUPE_BUFFER_BYTES_MIN,
};

const CLOCK_START_MS: i64 = 1_000_000;
const CLOCK_ADVANCE_MS_MAX: i64 = 8_000;
const OPS_MAX: usize = 80;
const CASES: u32 = 48;
/// A record to append: key and value, `None` for no key or a tombstone.
type OwnedRecord = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Records per batch of a burst.
const BURST_RECORDS: usize = 6;
/// Transactional producers, with ids from `PRODUCER_ID_BASE`.
const PRODUCERS: usize = 3;
const PRODUCER_ID_BASE: i64 = 1_000;

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn cleaning_keeps_the_latest_record_of_every_key_and_nothing_it_must_not(
        setup in setup_strategy(),
        ops in ops_strategy(),
    ) {
        check(setup, &ops)?;
    }
}

/// Runs `ops` against a fresh compacted log and the model.
fn check(setup: Setup, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut harness = Harness::new(setup)?;
    for (index, op) in ops.iter().enumerate() {
        harness.apply(op).map_err(|error| TestCaseError::fail(format!("op {index} {op:?}: {error}")))?;
        prop_assert_eq!(harness.log.end_offset(), harness.model.end_offset, "end offset after op {}", index);
    }
    let before = harness.read_all()?;
    harness.check_contents(&before, None)
}

// ---------------------------------------------------------------------------------------------
// Setups, operations and their strategies.

#[derive(Debug, Clone)]
struct Setup {
    config: LogConfig,
    /// Keys are `key-0` to `key-{n_keys - 1}`.
    n_keys: usize,
}

#[derive(Debug, Clone)]
enum Op {
    /// One batch; `producer` makes it a batch of that producer's transaction.
    Append {
        records: Vec<RecordSpec>,
        producer: Option<usize>,
    },
    /// `batches` batches of six records with consecutive keys from `first_key`: many keys at once,
    /// so small offset maps fill.
    Burst {
        batches: usize,
        first_key: Index,
        value_bytes: usize,
    },
    /// The producer's commit or abort marker, if it has a transaction open.
    EndTransaction {
        producer: usize,
        commit: bool,
    },
    /// Moves the clock and ticks (rolls by age).
    Advance {
        ms: i64,
    },
    /// One pass; `force` cleans whatever the dirty ratio.
    Clean {
        force: bool,
    },
    /// One forced pass stopped after `step` of its first swap, then a crash and a reopen.
    CleanAndCrash {
        step: CleanStep,
    },
    CrashReopen,
    CleanReopen,
}

#[derive(Clone)]
struct RecordSpec {
    /// `None`: a record with no key.
    key: Option<Index>,
    /// `None`: a tombstone.
    value: Option<(usize, u8)>,
}

impl fmt::Debug for RecordSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = self.key.map_or("_".to_string(), |key| format!("k{}", key.index(1000)));
        match self.value {
            None => write!(f, "{key}=-"),
            Some((len, _)) => write!(f, "{key}=<{len}>"),
        }
    }
}

fn setup_strategy() -> impl Strategy<Value = Setup> {
    let dedupe = prop_oneof![
        Just(CLEANER_DEDUPE_BUFFER_BYTES_MIN),
        Just(2 * CLEANER_DEDUPE_BUFFER_BYTES_MIN),
        Just(1 << 20)
    ];
    let ratio = prop_oneof![Just(0.0), Just(0.5), Just(0.9)];
    let lag = prop_oneof![3 => Just(0i64), 1 => 1_000i64..=6_000];
    let delete_retention = prop_oneof![Just(0i64), 1_000i64..=20_000];
    let n_keys = prop_oneof![Just(3usize), Just(30), Just(300)];
    (1024u64..=2048, 500i64..=5_000, dedupe, ratio, lag, delete_retention, n_keys).prop_map(
        |(segment_bytes, segment_ms, dedupe, ratio, lag, delete_retention_ms, n_keys)| Setup {
            config: LogConfig {
                segment_bytes,
                segment_ms,
                index_interval_bytes: 256,
                cleanup_policy: CleanupPolicy::COMPACT,
                min_cleanable_dirty_ratio: ratio,
                min_compaction_lag_ms: lag,
                delete_retention_ms,
                cleaner_dedupe_buffer_bytes: dedupe,
                open_segments_max: 2,
                ..LogConfig::default()
            },
            n_keys,
        },
    )
}

fn ops_strategy() -> impl Strategy<Value = Vec<Op>> {
    let value = prop_oneof![1 => Just(None), 6 => (0usize..=80, any::<u8>()).prop_map(Some)];
    let key = prop_oneof![1 => Just(None), 12 => any::<Index>().prop_map(Some)];
    let record = (key, value).prop_map(|(key, value)| RecordSpec { key, value });
    let producer = prop_oneof![3 => Just(None), 1 => (0..PRODUCERS).prop_map(Some)];
    let append = (prop::collection::vec(record, 1..=6), producer)
        .prop_map(|(records, producer)| Op::Append { records, producer });
    let end = (0..PRODUCERS, prop::bool::weighted(0.6))
        .prop_map(|(producer, commit)| Op::EndTransaction { producer, commit });
    let advance = (0..=CLOCK_ADVANCE_MS_MAX).prop_map(|ms| Op::Advance { ms });
    let clean = any::<bool>().prop_map(|force| Op::Clean { force });
    let crash_step = prop_oneof![
        Just(CleanStep::Written),
        Just(CleanStep::Committed),
        Just(CleanStep::OldRetired),
        Just(CleanStep::Swapped),
    ];
    let burst = (1usize..=8, any::<Index>(), 0usize..=40)
        .prop_map(|(batches, first_key, value_bytes)| Op::Burst { batches, first_key, value_bytes });
    let weighted: Vec<(u32, BoxedStrategy<Op>)> = vec![
        (12, append.boxed()),
        (2, burst.boxed()),
        (3, end.boxed()),
        (5, advance.boxed()),
        (6, clean.boxed()),
        (1, crash_step.prop_map(|step| Op::CleanAndCrash { step }).boxed()),
        (1, Just(Op::CrashReopen).boxed()),
        (1, Just(Op::CleanReopen).boxed()),
    ];
    prop::collection::vec(Union::new_weighted(weighted), 1..=OPS_MAX)
}

// ---------------------------------------------------------------------------------------------
// The model.

#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelRecord {
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    timestamp: i64,
}

#[derive(Debug, Clone)]
struct ModelBatch {
    header: BatchHeader,
    records: Vec<ModelRecord>,
    /// For a data batch of a transaction, and for a marker: the transaction's index.
    transaction: Option<usize>,
}

#[derive(Debug, Clone)]
struct Transaction {
    producer_id: i64,
    /// Base offsets of its data batches.
    batches: Vec<i64>,
    /// The marker's offset and whether it commits.
    marker: Option<(i64, bool)>,
    /// The pass that, covering the marker, first found no batch of the transaction left.
    emptied: Option<Pass>,
}

#[derive(Debug)]
struct Model {
    config: LogConfig,
    now_ms: i64,
    end_offset: i64,
    /// Every batch ever appended, by base offset.
    batches: BTreeMap<i64, ModelBatch>,
    transactions: Vec<Transaction>,
    /// Per producer: its open transaction and next sequence number.
    open: [Option<usize>; PRODUCERS],
    sequences: [i32; PRODUCERS],
    /// Base offset to the pass that first covered that batch (`end` past its base).
    covered: HashMap<i64, Pass>,
    /// Passes that cleaned so far.
    passes: usize,
}

/// A pass that cleaned: its number and when it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pass {
    number: usize,
    at_ms: i64,
}

impl Pass {
    /// The horizon this pass gives what it keeps for `delete_retention_ms`.
    fn horizon(self, retention_ms: i64) -> i64 {
        self.at_ms + retention_ms
    }

    /// Whether a pass run now, after `current` passes, must have removed what this pass gave a
    /// horizon: a later pass, at or past the horizon.
    fn expired_by(self, current: Option<Pass>, retention_ms: i64) -> bool {
        current.is_some_and(|current| {
            current.number > self.number && current.at_ms >= self.horizon(retention_ms)
        })
    }
}

impl Model {
    fn producer_id(producer: usize) -> i64 {
        PRODUCER_ID_BASE + producer as i64
    }

    /// The latest record of each key among all appended records that are not aborted.
    fn latest_by_key(&self) -> HashMap<Vec<u8>, &ModelRecord> {
        let mut latest = HashMap::new();
        for batch in self.batches.values().filter(|batch| !batch.header.is_control()) {
            if self.is_aborted(batch) {
                continue;
            }
            for record in &batch.records {
                if let Some(key) = &record.key {
                    latest.insert(key.clone(), record);
                }
            }
        }
        latest
    }

    fn is_aborted(&self, batch: &ModelBatch) -> bool {
        !batch.header.is_control()
            && batch
                .transaction
                .is_some_and(|index| self.transactions[index].marker.is_some_and(|(_, commit)| !commit))
    }

    fn is_open(&self, batch: &ModelBatch) -> bool {
        batch.transaction.is_some_and(|index| self.transactions[index].marker.is_none())
    }
}

/// One batch as read back from the log.
#[derive(Debug, Clone, PartialEq)]
struct ReadBatch {
    header: BatchHeader,
    records: Vec<ModelRecord>,
}

struct Harness {
    dir: tempfile::TempDir,
    clock: ManualClock,
    log: Log,
    model: Model,
    n_keys: usize,
}

impl Harness {
    fn new(setup: Setup) -> Result<Self, TestCaseError> {
        let dir = ok(tempfile::tempdir(), "tempdir")?;
        let clock = ManualClock::new(CLOCK_START_MS);
        let log = ok(Log::open(dir.path(), setup.config.clone(), Arc::new(clock.clone())), "open")?;
        let model = Model {
            config: setup.config,
            now_ms: CLOCK_START_MS,
            end_offset: 0,
            batches: BTreeMap::new(),
            transactions: Vec::new(),
            open: [None; PRODUCERS],
            sequences: [0; PRODUCERS],
            covered: HashMap::new(),
            passes: 0,
        };
        Ok(Harness { dir, clock, log, model, n_keys: setup.n_keys })
    }

    fn reopen(&mut self) -> Result<(), TestCaseError> {
        let log = Log::open(self.dir.path(), self.model.config.clone(), Arc::new(self.clock.clone()));
        self.log = ok(log, "reopen")?;
        Ok(())
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op {
            Op::Append { records, producer } => {
                let records: Vec<OwnedRecord> = records
                    .iter()
                    .map(|spec| {
                        let key = spec.key.map(|key| key_bytes(key.index(self.n_keys)));
                        let value = spec.value.map(|(len, fill)| value_bytes(len, fill));
                        (key, value)
                    })
                    .collect();
                self.append(&records, *producer)?
            }
            Op::Burst { batches, first_key, value_bytes: len } => {
                let first = first_key.index(self.n_keys);
                for batch_idx in 0..*batches {
                    let records: Vec<OwnedRecord> = (0..BURST_RECORDS)
                        .map(|record_idx| {
                            let key = (first + batch_idx * BURST_RECORDS + record_idx) % self.n_keys;
                            (Some(key_bytes(key)), Some(value_bytes(*len, batch_idx as u8)))
                        })
                        .collect();
                    self.append(&records, None)?;
                }
            }
            Op::EndTransaction { producer, commit } => {
                let Some(transaction) = self.model.open[*producer].take() else { return Ok(()) };
                let producer_id = Model::producer_id(*producer);
                let mut marker = encode_control_batch(producer_id, 0, *commit, self.model.now_ms);
                let appended = ok(self.log.append(&mut marker), "append marker")?;
                self.model.transactions[transaction].marker = Some((appended.base_offset, *commit));
                self.record_batch(&marker, Some(transaction))?;
            }
            Op::Advance { ms } => {
                self.clock.advance(*ms);
                self.model.now_ms += ms;
                ok(self.log.tick(), "tick")?;
            }
            Op::Clean { force } => {
                let before = self.read_all()?;
                let options = self.clean_options(*force);
                let outcome = ok(self.log.clean(&options), "clean")?;
                let after = self.read_all()?;
                match outcome {
                    CleanOutcome::Cleaned(report) => {
                        let pass = self.after_pass(report.end_offset, &after);
                        self.check_pass(&before, &after, report.end_offset, pass, &options)?;
                        // A crash right after the pass changes nothing.
                        self.reopen()?;
                        prop_assert_eq!(
                            &self.read_all()?,
                            &after,
                            "contents changed by a crash after a pass"
                        );
                    }
                    CleanOutcome::NothingToClean | CleanOutcome::NotDirtyEnough { .. } => {
                        prop_assert!(
                            !*force || matches!(outcome, CleanOutcome::NothingToClean),
                            "{:?}",
                            outcome
                        );
                        prop_assert_eq!(&after, &before, "a pass that did not clean changed the log");
                    }
                    other => return Err(TestCaseError::fail(format!("unexpected outcome {other:?}"))),
                }
            }
            Op::CleanAndCrash { step } => {
                let before = self.read_all()?;
                let options = CleanOptions { stop_after: Some(*step), ..self.clean_options(true) };
                ok(self.log.clean(&options), "clean")?;
                self.reopen()?;
                let after = self.read_all()?;
                self.check_subset(&before, &after)?;
                self.adopt_horizons(&after);
                self.check_contents(&after, None)?;
            }
            Op::CrashReopen => {
                let before = self.read_all()?;
                self.reopen()?;
                prop_assert_eq!(&self.read_all()?, &before, "contents changed by a crash");
            }
            Op::CleanReopen => {
                let before = self.read_all()?;
                ok(self.log.close(), "close")?;
                self.reopen()?;
                prop_assert_eq!(&self.read_all()?, &before, "contents changed by a close");
            }
        }
        Ok(())
    }

    fn append(&mut self, specs: &[OwnedRecord], producer: Option<usize>) -> Result<(), TestCaseError> {
        let records: Vec<KeyValue<'_>> =
            specs.iter().map(|(key, value)| (key.as_deref(), value.as_deref())).collect();
        let fields = producer.map(|producer| ProducerFields {
            producer_id: Model::producer_id(producer),
            producer_epoch: 0,
            base_sequence: self.model.sequences[producer],
            transactional: true,
        });
        let mut batch = encode_records(self.model.now_ms, &records, fields);
        ok(self.log.append(&mut batch), "append")?;
        let transaction = producer.map(|producer| {
            self.model.sequences[producer] += specs.len() as i32;
            *self.model.open[producer].get_or_insert_with(|| {
                self.model.transactions.push(Transaction {
                    producer_id: Model::producer_id(producer),
                    batches: Vec::new(),
                    marker: None,
                    emptied: None,
                });
                self.model.transactions.len() - 1
            })
        });
        self.record_batch(&batch, transaction)
    }

    /// Adds an appended batch (its base offset already assigned) to the model.
    fn record_batch(&mut self, bytes: &[u8], transaction: Option<usize>) -> Result<(), TestCaseError> {
        let header = ok(batch::validate(bytes, BATCH_BYTES_HARD_MAX), "appended batch")?;
        let records = decode(bytes)?;
        if let (Some(index), false) = (transaction, header.is_control()) {
            self.model.transactions[index].batches.push(header.base_offset);
        }
        self.model.end_offset = header.next_offset();
        self.model.batches.insert(header.base_offset, ModelBatch { header, records, transaction });
        Ok(())
    }

    /// What the broker passes: the last data batch of each producer.
    fn clean_options(&self, force: bool) -> CleanOptions {
        let mut last: HashMap<i64, i64> = HashMap::new();
        for batch in self.model.batches.values() {
            if batch.header.producer_id >= 0 && !batch.header.is_control() {
                last.insert(batch.header.producer_id, batch.header.last_offset());
            }
        }
        CleanOptions { retain_batches_ending_at: last.into_values().collect(), force, stop_after: None }
    }

    /// Bookkeeping after a pass that compacted everything below `end`.
    fn after_pass(&mut self, end: i64, after: &[ReadBatch]) -> Pass {
        self.model.passes += 1;
        let pass = Pass { number: self.model.passes, at_ms: self.model.now_ms };
        for base in self.model.batches.keys().filter(|base| **base < end) {
            self.model.covered.entry(*base).or_insert(pass);
        }
        let present: BTreeSet<i64> = after.iter().map(|batch| batch.header.base_offset).collect();
        for transaction in &mut self.model.transactions {
            let Some((marker, _)) = transaction.marker else { continue };
            let empty = !transaction.batches.iter().any(|base| present.contains(base));
            if marker < end && empty && transaction.emptied.is_none() {
                transaction.emptied = Some(pass);
            }
        }
        pass
    }

    /// After a pass stopped mid-way (its first group swapped in or not, unknown to the model):
    /// horizons the log now carries and the model has no pass for come from that pass.
    fn adopt_horizons(&mut self, after: &[ReadBatch]) {
        let pass = Pass { number: self.model.passes + 1, at_ms: self.model.now_ms };
        let mut adopted = false;
        for batch in after.iter().filter(|batch| batch.header.delete_horizon_ms().is_some()) {
            let base = batch.header.base_offset;
            if batch.header.is_control() {
                let Some(index) = self.model.batches[&base].transaction else { continue };
                adopted |= self.model.transactions[index].emptied.is_none();
                self.model.transactions[index].emptied.get_or_insert(pass);
            } else {
                adopted |= !self.model.covered.contains_key(&base);
                self.model.covered.entry(base).or_insert(pass);
            }
        }
        if adopted {
            self.model.passes += 1;
        }
    }

    /// Every batch from the log start, decoded.
    fn read_all(&self) -> Result<Vec<ReadBatch>, TestCaseError> {
        let mut batches = Vec::new();
        let mut offset = self.log.log_start_offset();
        while let Some(range) = ok(self.log.read(offset, 1 << 20, i64::MAX), "read")? {
            let bytes = ok(range.read_bytes(), "read bytes")?;
            let mut position = 0;
            while position < bytes.len() {
                let header =
                    ok(batch::validate_stored(&bytes[position..], BATCH_BYTES_HARD_MAX), "stored batch")?;
                let whole = &bytes[position..position + header.total_bytes()];
                batches.push(ReadBatch { header, records: decode(whole)? });
                position += header.total_bytes();
            }
            prop_assert!(range.next_offset > offset, "read made no progress at {}", offset);
            offset = range.next_offset;
        }
        prop_assert_eq!(offset, self.log.end_offset(), "reads ended before the log end");
        Ok(batches)
    }

    /// What a pass must have done, comparing the log before and after it.
    fn check_pass(
        &self,
        before: &[ReadBatch],
        after: &[ReadBatch],
        end: i64,
        pass: Pass,
        options: &CleanOptions,
    ) -> Result<(), TestCaseError> {
        self.check_subset(before, after)?;
        // Untouched at or past `end`.
        let tail = |batches: &[ReadBatch]| -> Vec<ReadBatch> {
            batches.iter().filter(|batch| batch.header.base_offset >= end).cloned().collect()
        };
        prop_assert_eq!(tail(before), tail(after), "a pass changed batches at or past its end {}", end);
        // Below `end`: keys unique, no aborted records, no records without a key.
        let mut seen = BTreeSet::new();
        for batch in after.iter().filter(|batch| batch.header.base_offset < end && !batch.header.is_control())
        {
            let model = &self.model.batches[&batch.header.base_offset];
            prop_assert!(
                !self.model.is_aborted(model) || batch.records.is_empty(),
                "aborted batch at {} kept records below end {}",
                batch.header.base_offset,
                end
            );
            for record in &batch.records {
                let key = record.key.clone();
                prop_assert!(
                    key.is_some(),
                    "a record with no key at {} kept below end {}",
                    record.offset,
                    end
                );
                prop_assert!(seen.insert(key), "key of offset {} twice below end {}", record.offset, end);
            }
        }
        // Retained batches are there.
        for last_offset in &options.retain_batches_ending_at {
            prop_assert!(
                after.iter().any(|batch| batch.header.last_offset() == *last_offset),
                "the retained batch ending at {} is gone",
                last_offset
            );
        }
        self.check_contents(after, Some(pass))
    }

    /// Every batch and record of `after` was in `before`, unchanged in identity and content.
    fn check_subset(&self, before: &[ReadBatch], after: &[ReadBatch]) -> Result<(), TestCaseError> {
        let before: HashMap<i64, &ReadBatch> =
            before.iter().map(|batch| (batch.header.base_offset, batch)).collect();
        for batch in after {
            let Some(old) = before.get(&batch.header.base_offset) else {
                return Err(TestCaseError::fail(format!("batch at {} appeared", batch.header.base_offset)));
            };
            let kept: BTreeSet<i64> = old.records.iter().map(|record| record.offset).collect();
            prop_assert!(
                batch.records.iter().all(|record| kept.contains(&record.offset)),
                "records appeared in the batch at {}",
                batch.header.base_offset
            );
        }
        Ok(())
    }

    /// What must hold of the log's contents at any time: identity of batches and records, every
    /// key's latest record there, open transactions whole, tombstones and markers by their time.
    /// `pass` is the pass that just ran, if one did.
    fn check_contents(&self, contents: &[ReadBatch], pass: Option<Pass>) -> Result<(), TestCaseError> {
        let model = &self.model;
        let mut present: HashMap<i64, &ModelRecord> = HashMap::new();
        let mut present_batches = BTreeSet::new();
        let mut previous_end = i64::MIN;
        for batch in contents {
            let header = batch.header;
            prop_assert!(
                header.base_offset >= previous_end,
                "batches out of order at {}",
                header.base_offset
            );
            previous_end = header.next_offset();
            let Some(original) = model.batches.get(&header.base_offset) else {
                return Err(TestCaseError::fail(format!("no batch was appended at {}", header.base_offset)));
            };
            let identity = |header: &BatchHeader| {
                (
                    header.last_offset_delta,
                    header.producer_id,
                    header.producer_epoch,
                    header.base_sequence,
                    header.is_transactional(),
                    header.is_control(),
                )
            };
            prop_assert_eq!(identity(&header), identity(&original.header), "batch at {}", header.base_offset);
            for record in &batch.records {
                let appended = original.records.iter().find(|appended| appended.offset == record.offset);
                prop_assert_eq!(Some(record), appended, "record at {}", record.offset);
                present.insert(record.offset, record);
            }
            present_batches.insert(header.base_offset);
            self.check_horizon(batch, original)?;
        }
        let now = model.now_ms;
        let retention = model.config.delete_retention_ms;
        for (key, latest) in model.latest_by_key() {
            let covered = model.covered.get(&batch_of(model, latest.offset)).copied();
            let is_tombstone = latest.value.is_none();
            if is_tombstone && covered.is_some_and(|covered| covered.expired_by(pass, retention)) {
                prop_assert!(
                    !present.contains_key(&latest.offset),
                    "tombstone at {} survived its horizon",
                    latest.offset
                );
            } else if !is_tombstone || covered.is_none_or(|covered| now < covered.horizon(retention)) {
                prop_assert!(
                    present.contains_key(&latest.offset),
                    "the latest record of {:?} (offset {}) is gone",
                    String::from_utf8_lossy(&key),
                    latest.offset
                );
            }
        }
        for batch in model.batches.values().filter(|batch| model.is_open(batch)) {
            for record in &batch.records {
                prop_assert!(
                    present.contains_key(&record.offset),
                    "record {} of an open transaction is gone",
                    record.offset
                );
            }
        }
        for transaction in &model.transactions {
            let Some((marker, _)) = transaction.marker else { continue };
            let marker_present = contents
                .iter()
                .any(|batch| batch.header.base_offset == marker && batch.header.records_count > 0);
            let batches_present = transaction.batches.iter().any(|base| present_batches.contains(base));
            if batches_present {
                prop_assert!(
                    marker_present,
                    "the marker at {} went before its transaction's batches",
                    marker
                );
            }
            if transaction.emptied.is_some_and(|emptied| emptied.expired_by(pass, retention)) {
                prop_assert!(
                    !marker_present,
                    "the marker at {} of producer {} survived its horizon",
                    marker,
                    transaction.producer_id
                );
            }
        }
        let report = ok(self.log.verify(), "verify")?;
        prop_assert_eq!(report.segments, self.log.segment_count());
        Ok(())
    }

    /// A batch with a delete horizon got it from the first pass that covered it (tombstones) or
    /// that found its transaction empty (markers).
    fn check_horizon(&self, batch: &ReadBatch, original: &ModelBatch) -> Result<(), TestCaseError> {
        let Some(horizon) = batch.header.delete_horizon_ms() else { return Ok(()) };
        let retention = self.model.config.delete_retention_ms;
        let since = if batch.header.is_control() {
            original.transaction.and_then(|index| self.model.transactions[index].emptied)
        } else {
            self.model.covered.get(&batch.header.base_offset).copied()
        };
        prop_assert_eq!(
            Some(horizon),
            since.map(|since| since.horizon(retention)),
            "horizon of the batch at {}",
            batch.header.base_offset
        );
        Ok(())
    }
}

fn key_bytes(key: usize) -> Vec<u8> {
    format!("key-{key}").into_bytes()
}

fn value_bytes(len: usize, fill: u8) -> Vec<u8> {
    (0..len).map(|index| fill.wrapping_add(index as u8)).collect()
}

/// The base offset of the batch holding `offset`.
fn batch_of(model: &Model, offset: i64) -> i64 {
    model.batches.range(..=offset).next_back().map_or(offset, |(base, _)| *base)
}

fn decode(bytes: &[u8]) -> Result<Vec<ModelRecord>, TestCaseError> {
    let header = ok(batch::parse_header(bytes, BATCH_BYTES_HARD_MAX), "header")?;
    if header.is_control() {
        return Ok(Vec::new());
    }
    let records = batch::records(bytes).ok_or_else(|| TestCaseError::fail("records do not decode"))?;
    Ok(records
        .into_iter()
        .map(|record| ModelRecord {
            offset: record.offset,
            key: record.key.map(<[u8]>::to_vec),
            value: record.value.map(<[u8]>::to_vec),
            timestamp: record.timestamp,
        })
        .collect())
}

fn ok<T, E: fmt::Display>(result: Result<T, E>, what: &str) -> Result<T, TestCaseError> {
    result.map_err(|error| TestCaseError::fail(format!("{what}: {error}")))
}
