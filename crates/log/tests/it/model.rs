//! Model-based property tests: the log against an in-memory model of what it must hold.
//!
//! The model is the list of batches the log should serve (with the base offsets it assigned),
//! the segment layout the roll rules predict (`segment_bytes`, `segment_ms`) and the log start
//! offset retention predicts (`retention_ms`, `retention_bytes`). Random sequences of appends,
//! reads, lookups by time, clock advances (rolls by age, retention), clean and unclean reopens
//! run against both, and after every step the log must agree with the model exactly: offsets,
//! sizes, segment files on disk and the bytes each read returns.
//!
//! Damage is injected between a drop and a reopen. A torn write (the active segment cut at a
//! random byte) must leave exactly the batches that end at or before the cut. A flipped byte in
//! the active segment must cost exactly the batch it lands in and everything after it. A flipped
//! byte in a closed segment must be reported as `LogError::Corrupt`, by `Log::open` or at the
//! latest by `Log::verify`; it is never served as if it were good data. The one exception is the
//! partition leader epoch, which Kafka keeps outside the CRC so the leader can rewrite it: no
//! check can see a flip there, so the batch is served as it is on disk (asserted below). Flips
//! land in data files only: index files carry no checksum, so what a damaged one can do is not
//! a guarantee this file checks.
//!
//! Some operations aim at the edges of the rules, where off-by-one bugs live: a batch that fills
//! the active segment to `segment_bytes` give or take a byte, a clock step to a roll or expiry
//! deadline give or take a millisecond, a read budget of exactly some number of batches.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::strategy::Union;
use proptest::test_runner::TestCaseError;
use tidewater_log::batch::{encode_batch, set_base_offset, BATCH_HEADER_BYTES};
use tidewater_log::{FsyncPolicy, Log, LogConfig, LogError, ManualClock, DEFAULT_MAX_BATCH_BYTES};

/// Where the test clock starts; batch timestamps trail it by at most `TIMESTAMP_LAG_MS_MAX`.
const CLOCK_START_MS: i64 = 1_000_000;
const TIMESTAMP_LAG_MS_MAX: i64 = 3_000;
const CLOCK_ADVANCE_MS_MAX: i64 = 10_000;
const OPS_MAX: usize = 60;
const CASES: u32 = 64;
/// Bytes of a batch that no check covers: the partition leader epoch (see `batch.rs`'s layout).
const PARTITION_LEADER_EPOCH_BYTES: Range<usize> = 12..16;

proptest! {
    #![proptest_config(ProptestConfig { cases: CASES, ..ProptestConfig::default() })]

    #[test]
    fn appends_reads_rolls_retention_and_reopens_match_the_model(
        config in config_strategy(),
        ops in ops_strategy(Damage::None),
    ) {
        check(config, &ops)?;
    }

    #[test]
    fn a_torn_active_segment_keeps_exactly_its_whole_batches(
        config in config_strategy(),
        ops in ops_strategy(Damage::TornWrites),
    ) {
        check(config, &ops)?;
    }

    #[test]
    fn a_flipped_byte_is_truncated_or_reported_never_served(
        config in config_strategy(),
        ops in ops_strategy(Damage::TornWritesAndFlips),
    ) {
        check(config, &ops)?;
    }
}

/// Regression, found by the flip property: recovery accepted a batch whose base offset had been
/// damaged upwards (the field is outside the CRC) and served it at the wrong offsets, with the
/// log end offset jumped ahead. Each row flips one header byte of the last of three batches in
/// the active segment and says whether that batch may survive.
#[test]
fn a_damaged_header_field_in_the_active_segment_cuts_the_batch() {
    check_header_flip(7, 0x04, false); // base offset 2 becomes 6: a gap
    check_header_flip(4, 0x01, false); // base offset 2 becomes 2 + 2^24
    check_header_flip(7, 0x02, false); // base offset 2 becomes 0: an overlap
    check_header_flip(0, 0x80, false); // a negative base offset
    check_header_flip(11, 0x01, false); // batch length
    check_header_flip(13, 0x01, true); // partition leader epoch: no check can see it
    check_header_flip(16, 0x01, false); // magic
    check_header_flip(18, 0x01, false); // CRC
    check_header_flip(26, 0x01, false); // last offset delta
}

fn check_header_flip(byte: usize, mask: u8, survives: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(CLOCK_START_MS));
    let log = Log::open(dir.path(), LogConfig::default(), clock.clone()).expect("open");
    let mut batches = Vec::new();
    for value in [b"first", b"secnd", b"third"] {
        let mut batch = encode_batch(CLOCK_START_MS, &[(None, value.as_slice())]);
        log.append(&mut batch).expect("append");
        batches.push(batch);
    }
    drop(log);
    let path = dir.path().join(format!("{:020}.log", 0));
    let position = (batches[0].len() + batches[1].len() + byte) as u64;
    let file = OpenOptions::new().read(true).write(true).open(&path).expect("open segment");
    let mut damaged = [0u8; 1];
    file.read_exact_at(&mut damaged, position).expect("read byte");
    damaged[0] ^= mask;
    file.write_all_at(&damaged, position).expect("write byte");
    drop(file);

    let log = Log::open(dir.path(), LogConfig::default(), clock).expect("reopen");
    if survives {
        batches[2][byte] ^= mask;
    } else {
        batches.pop();
    }
    let end_offset = batches.len() as i64;
    assert_eq!(log.end_offset(), end_offset, "byte {byte} ^ {mask:#04x}");
    let range = log.read(0, usize::MAX, i64::MAX).expect("read").expect("batches");
    assert_eq!(range.read_bytes().expect("bytes"), batches.concat(), "byte {byte} ^ {mask:#04x}");
    assert_eq!(log.verify().expect("verify").segments, 1);
}

/// Runs `ops` against a fresh log and the model, checking they agree after every step.
fn check(config: LogConfig, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut harness = Harness::new(config)?;
    let mut log = harness.open()?;
    for (index, op) in ops.iter().enumerate() {
        let step = harness.apply(log, op).and_then(|next| match next {
            Next::Continue(log) => harness.check_state(&log).map(|()| Next::Continue(log)),
            Next::Stop => Ok(Next::Stop),
        });
        log = match step.map_err(|error| TestCaseError::fail(format!("op {index} {op:?}: {error}")))? {
            Next::Continue(log) => *log,
            Next::Stop => return Ok(()),
        };
    }
    harness.check_contents(&log)
}

// ---------------------------------------------------------------------------------------------
// Operations and their strategies.

#[derive(Debug, Clone)]
enum Op {
    /// One `append` call carrying one or more batches; `durable` uses `append_durable`.
    Append {
        batches: Vec<BatchSpec>,
        durable: bool,
    },
    /// Appends one batch sized so the active segment holds exactly `segment_bytes`, give or take
    /// a byte: the edge of the roll-by-size rule.
    FillSegment {
        slack_bytes: i64,
    },
    /// `read(offset, max_bytes, high_watermark)`, offsets picked around the log's range.
    Read {
        offset: Index,
        budget: Budget,
        high_watermark: Option<Index>,
    },
    /// `offset_for_timestamp` for a timestamp near a stored batch's, or beyond every batch.
    OffsetForTimestamp {
        near_batch: Index,
        delta_ms: i64,
    },
    /// Moves the clock and runs `tick`: rolls by age and retention.
    AdvanceClock {
        by: Advance,
    },
    CleanReopen,
    /// Drops the log without closing it, as a process crash would.
    CrashReopen,
    /// Crash, then cut the active segment's data file at a random byte.
    TornWrite {
        cut: Index,
    },
    /// Crash, then flip bits of one byte of a random non-empty segment data file.
    Flip {
        file: Index,
        at: FlipAt,
        mask: u8,
    },
}

/// How far an `AdvanceClock` moves the clock.
#[derive(Debug, Clone)]
enum Advance {
    Ms(i64),
    /// To the model's next deadline (the active segment reaching `segment_ms`, or the oldest
    /// closed segment passing `retention_ms`), give or take a millisecond.
    ToDeadline {
        slack_ms: i64,
    },
}

/// The `max_bytes` of a read.
#[derive(Debug, Clone)]
enum Budget {
    Bytes(usize),
    /// The size of this many batches from the one holding the offset, give or take a byte, so
    /// reads often stop right at the budget's edge.
    Batches {
        count: usize,
        slack: isize,
    },
}

/// Where in the chosen data file a flip lands.
#[derive(Debug, Clone)]
enum FlipAt {
    /// Any byte: mostly record bytes, which the CRC covers.
    Anywhere(Index),
    /// A byte of one batch's header, where each field has a check of its own (or, for the
    /// partition leader epoch, none).
    Header { batch: Index, byte: usize },
}

/// One batch to append: its records' value lengths and fill bytes, and how far its timestamp
/// trails the clock (timestamps never go backwards, whatever the lag).
#[derive(Clone)]
struct BatchSpec {
    lag_ms: i64,
    values: Vec<(usize, u8)>,
}

impl fmt::Debug for BatchSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lengths: Vec<usize> = self.values.iter().map(|(len, _)| *len).collect();
        write!(f, "Batch(lag {} ms, value lengths {lengths:?})", self.lag_ms)
    }
}

/// A batch encoded for one append, before the log assigns its offsets.
struct Encoded {
    timestamp: i64,
    records: usize,
    bytes: Vec<u8>,
}

impl BatchSpec {
    fn encode(&self, timestamp: i64) -> Encoded {
        let values: Vec<Vec<u8>> = self
            .values
            .iter()
            .map(|(len, fill)| (0..*len).map(|index| fill.wrapping_add(index as u8)).collect())
            .collect();
        let records: Vec<(Option<&[u8]>, &[u8])> =
            values.iter().map(|value| (None, value.as_slice())).collect();
        Encoded { timestamp, records: records.len(), bytes: encode_batch(timestamp, &records) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Damage {
    None,
    TornWrites,
    TornWritesAndFlips,
}

fn config_strategy() -> impl Strategy<Value = LogConfig> {
    let fsync = prop_oneof![
        Just(FsyncPolicy::Always),
        Just(FsyncPolicy::Never),
        Just(FsyncPolicy::Interval(std::time::Duration::from_millis(2_000))),
    ];
    let retention_bytes = prop_oneof![Just(-1i64), 4_096i64..=16_384];
    let sizes = (1024u64..=4096, 64u32..=512, retention_bytes);
    let times = (1_000i64..=10_000, prop_oneof![Just(-1i64), 2_000i64..=30_000]);
    (sizes, times, 1usize..=3, fsync).prop_map(
        |(
            (segment_bytes, index_interval_bytes, retention_bytes),
            (segment_ms, retention_ms),
            open_segments_max,
            fsync,
        )| {
            LogConfig {
                max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
                segment_bytes,
                segment_ms,
                index_interval_bytes,
                retention_ms,
                retention_bytes,
                open_segments_max,
                fsync,
                ..LogConfig::default()
            }
        },
    )
}

fn ops_strategy(damage: Damage) -> impl Strategy<Value = Vec<Op>> {
    let batch = (0..=TIMESTAMP_LAG_MS_MAX, prop::collection::vec((0usize..=300, any::<u8>()), 1..=5))
        .prop_map(|(lag_ms, values)| BatchSpec { lag_ms, values });
    let append = (prop::collection::vec(batch, 1..=3), any::<bool>())
        .prop_map(|(batches, durable)| Op::Append { batches, durable });
    let fill_segment = (-1i64..=1).prop_map(|slack_bytes| Op::FillSegment { slack_bytes });
    let budget = prop_oneof![
        (0usize..=4096).prop_map(Budget::Bytes),
        (1usize..=6, -1isize..=1).prop_map(|(count, slack)| Budget::Batches { count, slack }),
    ];
    let read = (any::<Index>(), budget, prop::option::of(any::<Index>()))
        .prop_map(|(offset, budget, high_watermark)| Op::Read { offset, budget, high_watermark });
    let offset_for_timestamp = (any::<Index>(), -2i64..=2)
        .prop_map(|(near_batch, delta_ms)| Op::OffsetForTimestamp { near_batch, delta_ms });
    let advance = prop_oneof![
        (0..=CLOCK_ADVANCE_MS_MAX).prop_map(Advance::Ms),
        (-1i64..=1).prop_map(|slack_ms| Advance::ToDeadline { slack_ms }),
    ]
    .prop_map(|by| Op::AdvanceClock { by });
    let mut weighted: Vec<(u32, BoxedStrategy<Op>)> = vec![
        (10, append.boxed()),
        (1, fill_segment.boxed()),
        (5, read.boxed()),
        (2, offset_for_timestamp.boxed()),
        (3, advance.boxed()),
        (1, Just(Op::CleanReopen).boxed()),
        (1, Just(Op::CrashReopen).boxed()),
    ];
    if damage != Damage::None {
        weighted.push((1, any::<Index>().prop_map(|cut| Op::TornWrite { cut }).boxed()));
    }
    if damage == Damage::TornWritesAndFlips {
        let at = prop_oneof![
            any::<Index>().prop_map(FlipAt::Anywhere),
            (any::<Index>(), 0..BATCH_HEADER_BYTES).prop_map(|(batch, byte)| FlipAt::Header { batch, byte }),
        ];
        let flip = (any::<Index>(), at, 1u8..=255).prop_map(|(file, at, mask)| Op::Flip { file, at, mask });
        weighted.push((1, flip.boxed()));
    }
    prop::collection::vec(Union::new_weighted(weighted), 1..=OPS_MAX)
}

// ---------------------------------------------------------------------------------------------
// The model.

#[derive(Debug, Clone)]
struct ModelBatch {
    base_offset: i64,
    next_offset: i64,
    timestamp: i64,
    /// The batch exactly as the log must serve it, base offset included.
    bytes: Vec<u8>,
}

/// What the log must hold: live batches in offset order and the segment layout they sit in.
#[derive(Debug)]
struct Model {
    config: LogConfig,
    now_ms: i64,
    batches: Vec<ModelBatch>,
    /// Base offsets of the segments, oldest first; the last one is the active segment.
    segment_bases: Vec<i64>,
    end_offset: i64,
    /// When the active segment was created or last reopened: `segment_ms` counts from there.
    active_created_ms: i64,
    last_timestamp: i64,
}

impl Model {
    fn new(config: LogConfig, now_ms: i64) -> Self {
        Model {
            config,
            now_ms,
            batches: Vec::new(),
            segment_bases: vec![0],
            end_offset: 0,
            active_created_ms: now_ms,
            last_timestamp: 0,
        }
    }

    fn log_start_offset(&self) -> i64 {
        self.segment_bases[0]
    }

    fn active_base(&self) -> i64 {
        self.segment_bases[self.segment_bases.len() - 1]
    }

    /// The batches of segment `segment_idx`, and where they start in `batches`.
    fn segment_batches(&self, segment_idx: usize) -> (usize, &[ModelBatch]) {
        let base = self.segment_bases[segment_idx];
        let next_base = self.segment_bases.get(segment_idx + 1).copied().unwrap_or(i64::MAX);
        let first = self.batches.partition_point(|batch| batch.base_offset < base);
        let after = self.batches.partition_point(|batch| batch.base_offset < next_base);
        (first, &self.batches[first..after])
    }

    fn segment_size(&self, segment_idx: usize) -> u64 {
        self.segment_batches(segment_idx).1.iter().map(|batch| batch.bytes.len() as u64).sum()
    }

    fn active_size(&self) -> u64 {
        self.segment_size(self.segment_bases.len() - 1)
    }

    fn total_size(&self) -> u64 {
        self.batches.iter().map(|batch| batch.bytes.len() as u64).sum()
    }

    fn roll(&mut self) {
        self.segment_bases.push(self.end_offset);
        self.active_created_ms = self.now_ms;
    }

    /// Appends encoded batches as one `append` call: rolls first if the active segment is
    /// non-empty and would pass `segment_bytes` or is `segment_ms` old, then assigns offsets.
    fn append(&mut self, encoded: Vec<Encoded>) -> Range<usize> {
        let append_bytes: u64 = encoded.iter().map(|batch| batch.bytes.len() as u64).sum();
        let active_size = self.active_size();
        let too_big = active_size + append_bytes > self.config.segment_bytes;
        let too_old = self.now_ms - self.active_created_ms >= self.config.segment_ms;
        if active_size > 0 && (too_big || too_old) {
            self.roll();
        }
        let first = self.batches.len();
        for Encoded { timestamp, records, mut bytes } in encoded {
            set_base_offset(&mut bytes, self.end_offset);
            let next_offset = self.end_offset + records as i64;
            let batch = ModelBatch { base_offset: self.end_offset, next_offset, timestamp, bytes };
            self.end_offset = batch.next_offset;
            self.batches.push(batch);
        }
        first..self.batches.len()
    }

    /// `tick` after the clock moved: roll by age, then retention. Returns segments deleted.
    fn tick(&mut self) -> Result<usize, TestCaseError> {
        if self.active_size() > 0 && self.now_ms - self.active_created_ms >= self.config.segment_ms {
            self.roll();
        }
        let mut total_size = self.total_size();
        let mut deleted = 0;
        while self.segment_bases.len() > 1 {
            let (_, oldest) = self.segment_batches(0);
            let size: u64 = oldest.iter().map(|batch| batch.bytes.len() as u64).sum();
            let Some(newest_ms) = oldest.iter().map(|batch| batch.timestamp).max() else {
                return Err(TestCaseError::fail(format!(
                    "model: closed segment {} is empty, but the log never rolls an empty segment",
                    self.segment_bases[0]
                )));
            };
            let expired = self.config.retention_ms >= 0 && self.now_ms - newest_ms > self.config.retention_ms;
            let oversized =
                self.config.retention_bytes >= 0 && total_size - size >= self.config.retention_bytes as u64;
            if !(expired || oversized) {
                break;
            }
            total_size -= size;
            self.batches.drain(..oldest.len());
            self.segment_bases.remove(0);
            deleted += 1;
        }
        Ok(deleted)
    }

    /// The first time from now at which the active segment is `segment_ms` old (rolled by the
    /// next tick or append if non-empty) or the oldest closed segment passes `retention_ms`.
    fn next_deadline_ms(&self) -> Option<i64> {
        let roll = Some(self.active_created_ms + self.config.segment_ms);
        let oldest_closed = if self.segment_bases.len() > 1 { self.segment_batches(0).1 } else { &[] };
        let newest_ms = oldest_closed.iter().map(|batch| batch.timestamp).max();
        let expiry = newest_ms.filter(|_| self.config.retention_ms >= 0).map(|newest_ms| {
            // Expired once strictly older than `retention_ms`.
            newest_ms + self.config.retention_ms + 1
        });
        [roll, expiry].into_iter().flatten().filter(|deadline| *deadline > self.now_ms).min()
    }

    /// Keeps the active segment's batches that end at or before byte `cut` of its data file.
    fn truncate_active(&mut self, cut: u64) {
        let (first, active) = self.segment_batches(self.segment_bases.len() - 1);
        let mut end_position = 0;
        let kept = active
            .iter()
            .take_while(|batch| {
                end_position += batch.bytes.len() as u64;
                end_position <= cut
            })
            .count();
        self.batches.truncate(first + kept);
        self.end_offset =
            if kept == 0 { self.active_base() } else { self.batches[first + kept - 1].next_offset };
    }

    /// The batch holding byte `position` of segment `segment_idx`'s data file: its index in
    /// `batches`, where it starts in the file and the byte's position within it.
    fn locate(&self, segment_idx: usize, position: u64) -> Option<(usize, u64, usize)> {
        let (first, batches) = self.segment_batches(segment_idx);
        let mut start = 0;
        for (index, batch) in batches.iter().enumerate() {
            let end = start + batch.bytes.len() as u64;
            if position < end {
                return Some((first + index, start, (position - start) as usize));
            }
            start = end;
        }
        None
    }

    /// What `read(offset, max_bytes, max_offset)` must return: whole batches from the one
    /// holding `offset`, within one segment, ending below `max_offset`, within `max_bytes`
    /// unless it is the first batch. The log must not stop before it meets one of these limits.
    fn read(&self, offset: i64, max_bytes: usize, max_offset: i64) -> ReadOutcome {
        let (log_start_offset, log_end_offset) = (self.log_start_offset(), self.end_offset);
        if offset < log_start_offset || offset > log_end_offset {
            return ReadOutcome::OutOfRange { log_start_offset, log_end_offset };
        }
        let upper = max_offset.min(log_end_offset);
        if offset >= upper {
            return ReadOutcome::Nothing;
        }
        let first = self.batches.partition_point(|batch| batch.next_offset <= offset);
        let segment_idx =
            self.segment_bases.partition_point(|base| *base <= self.batches[first].base_offset) - 1;
        let segment_end = self.segment_bases.get(segment_idx + 1).copied().unwrap_or(i64::MAX);
        let mut bytes = Vec::new();
        let mut next_offset = self.batches[first].base_offset;
        for batch in &self.batches[first..] {
            let over_budget = !bytes.is_empty() && bytes.len() + batch.bytes.len() > max_bytes;
            if batch.base_offset >= segment_end || batch.next_offset > upper || over_budget {
                break;
            }
            bytes.extend_from_slice(&batch.bytes);
            next_offset = batch.next_offset;
        }
        if bytes.is_empty() {
            return ReadOutcome::Nothing;
        }
        ReadOutcome::Batches {
            first_offset: self.batches[first].base_offset,
            next_offset,
            bytes: Bytes(bytes),
        }
    }

    /// Every record of a batch carries the batch's timestamp, so the first record at or after
    /// `timestamp` is the first record of the first batch that reaches it.
    fn offset_for_timestamp(&self, timestamp: i64) -> Option<(i64, i64)> {
        let batch = self.batches.iter().find(|batch| batch.timestamp >= timestamp)?;
        Some((batch.base_offset, batch.timestamp))
    }

    fn max_timestamp(&self) -> Option<(i64, i64)> {
        let newest = self.batches.iter().map(|batch| batch.timestamp).max()?;
        let batch = self.batches.iter().find(|batch| batch.timestamp == newest)?;
        Some((newest, batch.base_offset))
    }
}

/// The result of one read, from the log or from the model.
#[derive(Debug, PartialEq, Eq)]
enum ReadOutcome {
    OutOfRange { log_start_offset: i64, log_end_offset: i64 },
    Nothing,
    Batches { first_offset: i64, next_offset: i64, bytes: Bytes },
}

/// Batch bytes that print as their length and first bytes, so a failure stays readable.
#[derive(PartialEq, Eq)]
struct Bytes(Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} bytes {:02x?}..", self.0.len(), &self.0[..self.0.len().min(16)])
    }
}

// ---------------------------------------------------------------------------------------------
// The harness: a log directory, its clock and the model, stepped together.

enum Next {
    Continue(Box<Log>),
    /// The log was found corrupt, as it must be; the case ends there.
    Stop,
}

struct Harness {
    dir: tempfile::TempDir,
    clock: ManualClock,
    model: Model,
}

impl Harness {
    fn new(config: LogConfig) -> Result<Self, TestCaseError> {
        let dir = ok(tempfile::tempdir(), "tempdir")?;
        Ok(Harness {
            dir,
            clock: ManualClock::new(CLOCK_START_MS),
            model: Model::new(config, CLOCK_START_MS),
        })
    }

    fn try_open(&self) -> Result<Log, LogError> {
        Log::open(self.dir.path(), self.model.config.clone(), Arc::new(self.clock.clone()))
    }

    /// Opens (or reopens) the log; a reopened active segment counts its age from now.
    fn open(&mut self) -> Result<Log, TestCaseError> {
        let log = ok(self.try_open(), "open")?;
        self.model.active_created_ms = self.model.now_ms;
        Ok(log)
    }

    fn apply(&mut self, log: Log, op: &Op) -> Result<Next, TestCaseError> {
        match op {
            Op::Append { batches, durable } => {
                let mut encoded = Vec::new();
                for spec in batches {
                    let timestamp = self.model.last_timestamp.max(self.model.now_ms - spec.lag_ms);
                    self.model.last_timestamp = timestamp;
                    encoded.push(spec.encode(timestamp));
                }
                let mut records: Vec<u8> =
                    encoded.iter().flat_map(|batch| batch.bytes.iter().copied()).collect();
                let appended =
                    if *durable { log.append_durable(&mut records) } else { log.append(&mut records) };
                let appended = ok(appended, "append")?;
                let added = self.model.append(encoded);
                let added = &self.model.batches[added];
                prop_assert_eq!(appended.base_offset, added[0].base_offset);
                prop_assert_eq!(appended.next_offset, added[added.len() - 1].next_offset);
                prop_assert_eq!(appended.last_offset, appended.next_offset - 1);
                let expected: Vec<u8> = added.iter().flat_map(|batch| batch.bytes.iter().copied()).collect();
                prop_assert!(records == expected, "append must rewrite exactly the base offsets");
                if *durable && self.model.config.fsync == FsyncPolicy::Always {
                    prop_assert!(log.durable_offset() >= appended.next_offset);
                }
            }
            Op::FillSegment { slack_bytes } => {
                let room = self.model.config.segment_bytes as i64 - self.model.active_size() as i64;
                let target_bytes = room + slack_bytes;
                // One record; its value grows the batch byte for byte, except where a varint
                // widens, which the second pass corrects.
                let mut value_len = 0;
                for _ in 0..2 {
                    let spec = BatchSpec { lag_ms: 0, values: vec![(value_len, 0)] };
                    let batch_bytes = spec.encode(0).bytes.len() as i64;
                    value_len = (value_len as i64 + target_bytes - batch_bytes).max(0) as usize;
                }
                let batches = vec![BatchSpec { lag_ms: 0, values: vec![(value_len, 0)] }];
                return self.apply(log, &Op::Append { batches, durable: false });
            }
            Op::Read { offset, budget, high_watermark } => {
                // From one below the log start to one past the log end, both out of range.
                let (start, end) = (self.model.log_start_offset(), self.model.end_offset);
                let offset = start - 1 + offset.index((end - start + 3) as usize) as i64;
                let max_offset = match high_watermark {
                    Some(pick) if offset >= start && offset <= end => {
                        offset + pick.index((end - offset + 1) as usize) as i64
                    }
                    _ => i64::MAX,
                };
                let max_bytes = match budget {
                    Budget::Bytes(max_bytes) => *max_bytes,
                    Budget::Batches { count, slack } => {
                        let first = self.model.batches.partition_point(|batch| batch.next_offset <= offset);
                        let batches = self.model.batches.iter().skip(first).take(*count);
                        batches.map(|batch| batch.bytes.len()).sum::<usize>().saturating_add_signed(*slack)
                    }
                };
                check_read(&log, &self.model, offset, max_bytes, max_offset)?;
            }
            Op::OffsetForTimestamp { near_batch, delta_ms } => {
                let timestamp = if self.model.batches.is_empty() {
                    self.model.now_ms + delta_ms
                } else {
                    let batch = &self.model.batches[near_batch.index(self.model.batches.len())];
                    batch.timestamp + delta_ms
                };
                let actual = ok(log.offset_for_timestamp(timestamp), "offset_for_timestamp")?;
                prop_assert_eq!(
                    actual,
                    self.model.offset_for_timestamp(timestamp),
                    "timestamp {}",
                    timestamp
                );
                for timestamp in [0, self.model.last_timestamp + 1] {
                    let actual = ok(log.offset_for_timestamp(timestamp), "offset_for_timestamp")?;
                    prop_assert_eq!(
                        actual,
                        self.model.offset_for_timestamp(timestamp),
                        "timestamp {}",
                        timestamp
                    );
                }
            }
            Op::AdvanceClock { by } => {
                let by_ms = match by {
                    Advance::Ms(by_ms) => *by_ms,
                    Advance::ToDeadline { slack_ms } => {
                        let deadline = self.model.next_deadline_ms().unwrap_or(self.model.now_ms);
                        (deadline + slack_ms - self.model.now_ms).max(0)
                    }
                };
                self.clock.advance(by_ms);
                self.model.now_ms += by_ms;
                let deleted = ok(log.tick(), "tick")?;
                prop_assert_eq!(deleted, self.model.tick()?, "segments deleted by retention");
            }
            Op::CleanReopen => {
                ok(log.close(), "close")?;
                let after_close = log.read(self.model.log_start_offset(), 1, i64::MAX);
                prop_assert!(
                    matches!(after_close, Err(LogError::Closed)),
                    "read after close: {:?}",
                    after_close
                );
                drop(log);
                return self.reopen_and_check();
            }
            Op::CrashReopen => {
                drop(log);
                return self.reopen_and_check();
            }
            Op::TornWrite { cut } => {
                let (active_base, path) = self.active_file()?;
                prop_assert_eq!(active_base, self.model.active_base());
                drop(log);
                let len = ok(fs::metadata(&path), "stat")?.len();
                prop_assert_eq!(len, self.model.active_size(), "active segment size on disk");
                let cut = cut.index(len as usize + 1) as u64;
                let file = ok(OpenOptions::new().write(true).open(&path), "open segment")?;
                ok(file.set_len(cut), "truncate segment")?;
                self.model.truncate_active(cut);
                return self.reopen_and_check();
            }
            Op::Flip { file, at, mask } => return self.flip(log, file, at, *mask),
        }
        Ok(Next::Continue(Box::new(log)))
    }

    fn reopen_and_check(&mut self) -> Result<Next, TestCaseError> {
        let log = self.open()?;
        self.check_contents(&log)?;
        Ok(Next::Continue(Box::new(log)))
    }

    /// Flips `mask` into one byte of a non-empty data file, reopens and checks the outcome.
    fn flip(&mut self, log: Log, file: &Index, at: &FlipAt, mask: u8) -> Result<Next, TestCaseError> {
        let mut candidates = Vec::new();
        for (base, path) in segment_files(self.dir.path())? {
            let len = ok(fs::metadata(&path), "stat")?.len();
            if len > 0 {
                candidates.push((base, path, len));
            }
        }
        if candidates.is_empty() {
            return Ok(Next::Continue(Box::new(log)));
        }
        let (base, path, len) = candidates.swap_remove(file.index(candidates.len()));
        let segment_idx = self.model.segment_bases.iter().position(|segment| *segment == base);
        let segment_idx =
            segment_idx.ok_or_else(|| TestCaseError::fail(format!("no segment {base} in model")))?;
        prop_assert_eq!(len, self.model.segment_size(segment_idx), "size of {}", path.display());
        let position = match at {
            FlipAt::Anywhere(position) => position.index(len as usize) as u64,
            FlipAt::Header { batch, byte } => {
                let (_, batches) = self.model.segment_batches(segment_idx);
                let batch_idx = batch.index(batches.len());
                let batch_start: usize = batches[..batch_idx].iter().map(|batch| batch.bytes.len()).sum();
                (batch_start + byte) as u64
            }
        };
        drop(log);
        let data = ok(OpenOptions::new().read(true).write(true).open(&path), "open segment")?;
        let mut byte = [0u8; 1];
        ok(data.read_exact_at(&mut byte, position), "read byte")?;
        byte[0] ^= mask;
        ok(data.write_all_at(&byte, position), "write byte")?;
        drop(data);

        let (batch_idx, batch_start, within) = self.model.locate(segment_idx, position).ok_or_else(|| {
            TestCaseError::fail(format!("byte {position} of {} past the model", path.display()))
        })?;
        let is_active = segment_idx == self.model.segment_bases.len() - 1;
        if PARTITION_LEADER_EPOCH_BYTES.contains(&within) {
            // FIXME(format limit): the partition leader epoch is outside the CRC, as in Kafka, so a
            // flip there cannot be seen by recovery or verify: the batch is served as it now is.
            self.model.batches[batch_idx].bytes[within] ^= mask;
            return self.reopen_and_check();
        }
        if is_active {
            // Recovery cuts the active segment back to the last batch before the damage.
            self.model.truncate_active(batch_start);
            return self.reopen_and_check();
        }
        // A closed segment is never repaired: the damage must be reported, at open or by verify.
        let log = match self.try_open() {
            Err(LogError::Corrupt { path: reported, .. }) => {
                prop_assert_eq!(reported, path);
                return Ok(Next::Stop);
            }
            Err(error) => return Err(TestCaseError::fail(format!("open after flip: {error}"))),
            Ok(log) => log,
        };
        match log.verify() {
            Err(LogError::Corrupt { path: reported, .. }) => {
                prop_assert_eq!(reported, path);
                Ok(Next::Stop)
            }
            Err(error) => Err(TestCaseError::fail(format!("verify after flip: {error}"))),
            Ok(report) => Err(TestCaseError::fail(format!(
                "byte {position} of closed segment {} flipped (batch byte {within}), \
                 yet open and verify both passed: {report:?}",
                path.display()
            ))),
        }
    }

    fn active_file(&self) -> Result<(i64, PathBuf), TestCaseError> {
        let files = segment_files(self.dir.path())?;
        files.last().cloned().ok_or_else(|| TestCaseError::fail("no segment files"))
    }

    /// The cheap checks, after every step: offsets, sizes, timestamps and the files on disk.
    fn check_state(&self, log: &Log) -> Result<(), TestCaseError> {
        let model = &self.model;
        prop_assert_eq!(log.end_offset(), model.end_offset, "end offset");
        prop_assert_eq!(log.log_start_offset(), model.log_start_offset(), "log start offset");
        prop_assert_eq!(log.segment_count(), model.segment_bases.len(), "segment count");
        prop_assert_eq!(log.size_bytes(), model.total_size(), "size in bytes");
        prop_assert_eq!(log.max_timestamp(), model.max_timestamp(), "max timestamp");
        prop_assert!(log.durable_offset() <= log.end_offset(), "durable past the end");
        let bases: Vec<i64> = segment_files(self.dir.path())?.into_iter().map(|(base, _)| base).collect();
        prop_assert_eq!(&bases, &model.segment_bases, "segment files on disk");
        Ok(())
    }

    /// Everything: the cheap checks, every batch read back in order, and a full verify.
    fn check_contents(&self, log: &Log) -> Result<(), TestCaseError> {
        self.check_state(log)?;
        let mut offset = self.model.log_start_offset();
        while offset < self.model.end_offset {
            offset = match check_read(log, &self.model, offset, usize::MAX, i64::MAX)? {
                ReadOutcome::Batches { next_offset, .. } => next_offset,
                outcome => return Err(TestCaseError::fail(format!("reading offset {offset}: {outcome:?}"))),
            };
        }
        let report = ok(log.verify(), "verify")?;
        prop_assert_eq!(report.segments, self.model.segment_bases.len());
        prop_assert_eq!(report.bytes, self.model.total_size());
        Ok(())
    }
}

/// Reads from the log and checks the outcome is exactly the model's.
fn check_read(
    log: &Log,
    model: &Model,
    offset: i64,
    max_bytes: usize,
    max_offset: i64,
) -> Result<ReadOutcome, TestCaseError> {
    let actual = match log.read(offset, max_bytes, max_offset) {
        Ok(None) => ReadOutcome::Nothing,
        Ok(Some(range)) => ReadOutcome::Batches {
            first_offset: range.first_offset,
            next_offset: range.next_offset,
            bytes: Bytes(ok(range.read_bytes(), "read range bytes")?),
        },
        Err(LogError::OffsetOutOfRange { log_start_offset, log_end_offset, .. }) => {
            ReadOutcome::OutOfRange { log_start_offset, log_end_offset }
        }
        Err(error) => return Err(TestCaseError::fail(format!("read({offset}): {error}"))),
    };
    let expected = model.read(offset, max_bytes, max_offset);
    if let (ReadOutcome::Batches { bytes: actual, .. }, ReadOutcome::Batches { bytes: expected, .. }) =
        (&actual, &expected)
    {
        let differs_at = actual.0.iter().zip(&expected.0).position(|(left, right)| left != right);
        prop_assert!(differs_at.is_none(), "read({offset}) bytes differ at {differs_at:?}");
    }
    prop_assert_eq!(&actual, &expected, "read({}, {}, {})", offset, max_bytes, max_offset);
    Ok(actual)
}

/// The data files in `dir`, by base offset.
fn segment_files(dir: &Path) -> Result<Vec<(i64, PathBuf)>, TestCaseError> {
    let mut files = Vec::new();
    for entry in ok(fs::read_dir(dir), "list log directory")? {
        let path = ok(entry, "list log directory")?.path();
        let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
        if let Some(base) = name.strip_suffix(".log").and_then(|stem| stem.parse::<i64>().ok()) {
            files.push((base, path));
        }
    }
    files.sort();
    Ok(files)
}

fn ok<T, E: fmt::Display>(result: Result<T, E>, what: &str) -> Result<T, TestCaseError> {
    result.map_err(|error| TestCaseError::fail(format!("{what}: {error}")))
}
