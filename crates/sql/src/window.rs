//! Window operators: the state an aggregating statement keeps between events, and the rules for
//! when a window is complete.
//!
//! All windows are `(start, end]` in event time and a window is emitted once the input's close
//! boundary (see `watermark`) has passed its end, stamped with its end. Within one call, output
//! comes in order of window end, then in the order the groups were first seen, so a job's output
//! is a function of its input order alone.
//!
//! - Tumbling and hopping windows keep one accumulator set per (window end, group), never the
//!   events. Tumbling windows are hopping windows whose hop equals their size, aligned to the
//!   epoch.
//! - Sliding windows emit, per group, whenever the window's content changes: at each distinct
//!   event time `t` (an event enters) and at `t + size` (it leaves), with the aggregate over
//!   `(point - size, point]`, unless that is empty. They keep the events of the last `size` per
//!   group and recompute at emission.
//! - Session windows keep their not-yet-final events sorted per session partition, then fold them
//!   in time order once the boundary passes them (see [`SessionWindows`]).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::BuildHasher;
use std::sync::Arc;

use indexmap::map::raw_entry_v1::{RawEntryApiV1, RawEntryMut};
use indexmap::IndexMap;

use crate::agg::{Accumulator, AggregateKind};
use crate::plan::WindowSpec;
use crate::value::{KeyHasher, KeyMap, KeyPart, Value};

/// One event as an aggregating statement hands it to its window.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct WindowInput {
    pub(crate) timestamp_ms: i64,
    pub(crate) key_parts: Vec<KeyPart>,
    pub(crate) key_values: Vec<Value>,
    /// One value per aggregate (`COUNT(*)` gets a non-null marker).
    pub(crate) args: Vec<Value>,
    pub(crate) session_parts: Vec<KeyPart>,
}

/// One finished group of one window.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Emitted {
    pub(crate) end_ms: i64,
    pub(crate) key_values: Vec<Value>,
    pub(crate) results: Vec<Value>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Group {
    /// Shared by the groups of the same key in the other windows of a hopping window (an event
    /// is in `size / hop` of them), so the key is held once rather than once per window. A
    /// checkpoint writes it out per group like a `Vec`; sharing is regained as windows are
    /// opened after a restore.
    key_values: Arc<[Value]>,
    accumulators: Vec<Accumulator>,
}

impl Group {
    fn new(kinds: &[AggregateKind], key_values: Arc<[Value]>) -> Group {
        Group { key_values, accumulators: kinds.iter().map(|kind| Accumulator::new(*kind)).collect() }
    }

    fn check(&self, kinds: &[AggregateKind], args: &[Value]) -> Result<(), String> {
        self.accumulators.iter().zip(kinds).zip(args).try_for_each(|((acc, kind), arg)| acc.check(*kind, arg))
    }

    fn apply(&mut self, args: &[Value]) {
        for (accumulator, arg) in self.accumulators.iter_mut().zip(args) {
            accumulator.apply(arg);
        }
    }

    fn emit(&self, end_ms: i64) -> Emitted {
        Emitted {
            end_ms,
            key_values: self.key_values.to_vec(),
            results: self.accumulators.iter().map(Accumulator::result).collect(),
        }
    }
}

fn fresh_check(kinds: &[AggregateKind], args: &[Value]) -> Result<(), String> {
    kinds.iter().zip(args).try_for_each(|(kind, arg)| Accumulator::new(*kind).check(*kind, arg))
}

/// Folds `(timestamp, args)` pairs into a fresh group; values that do not fit (e.g. MIN over a
/// string after numbers) are skipped and reported.
fn fold<'a>(
    kinds: &[AggregateKind],
    key_values: &[Value],
    events: impl Iterator<Item = &'a Vec<Value>>,
    errors: &mut Vec<String>,
) -> Group {
    let mut group = Group::new(kinds, key_values.into());
    for args in events {
        match group.check(kinds, args) {
            Ok(()) => group.apply(args),
            Err(error) => errors.push(error),
        }
    }
    group
}

/// The smallest multiple of `step` that is >= `value` (euclidean, so it works before 1970).
fn ceil_to_multiple(value: i64, step: i64) -> i64 {
    let floor = value.div_euclid(step).saturating_mul(step);
    if floor == value {
        floor
    } else {
        floor.saturating_add(step)
    }
}

/// The groups of one tumbling or hopping window. The key is an `Arc` shared with the same
/// key's groups in the other open windows (see `Group::key_values`); it is looked up by slice.
type FixedGroups = IndexMap<Arc<[KeyPart]>, Group, KeyHasher>;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct FixedWindows {
    size_ms: i64,
    hop_ms: i64,
    #[serde(with = "crate::checkpoint::as_nested_pairs")]
    windows: BTreeMap<i64, FixedGroups>,
}

impl FixedWindows {
    /// The ends of the windows `(end - size, end]` that contain `timestamp_ms`.
    fn ends(&self, timestamp_ms: i64) -> impl Iterator<Item = i64> {
        let first = ceil_to_multiple(timestamp_ms, self.hop_ms);
        let limit = timestamp_ms.saturating_add(self.size_ms);
        let hop_ms = self.hop_ms;
        (0..)
            .map(move |index: i64| first.saturating_add(index.saturating_mul(hop_ms)))
            .take_while(move |end| *end < limit)
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct SlidingGroup {
    order: u64,
    key_values: Vec<Value>,
    #[serde(with = "crate::checkpoint::as_pairs")]
    events: BTreeMap<(i64, u64), Vec<Value>>,
    pending: BTreeSet<i64>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Session {
    last_ms: i64,
    /// The max-duration check point that ends this session if it is still going by then.
    cap_ms: i64,
    #[serde(with = "crate::checkpoint::as_pairs")]
    groups: KeyMap<Group>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct SessionPartition {
    order: u64,
    #[serde(with = "crate::checkpoint::as_pairs")]
    pending: BTreeMap<(i64, u64), WindowInput>,
    session: Option<Session>,
}

/// Session windows, per session partition.
///
/// A session starts at its first event and extends while each next event comes at most
/// `timeout` after the previous one; it then ends at `last event + timeout`. As in ASA, the
/// maximum duration is checked at multiples of it (aligned to the epoch): at the first check
/// point `c` with `c - start >= max_duration` a session that is still going ends at `c`, and a
/// new one starts at `c` if the activity continues. The session is `[start, end]`; output is
/// stamped with `end`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct SessionWindows {
    timeout_ms: i64,
    max_duration_ms: i64,
    #[serde(with = "crate::checkpoint::as_pairs")]
    partitions: KeyMap<SessionPartition>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
enum Windows {
    Fixed(FixedWindows),
    Sliding {
        size_ms: i64,
        #[serde(with = "crate::checkpoint::as_pairs")]
        groups: KeyMap<SlidingGroup>,
    },
    Session(SessionWindows),
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct WindowState {
    kinds: Vec<AggregateKind>,
    windows: Windows,
    /// Groups (tumbling, hopping) or buffered events (sliding, session) held now.
    entries: usize,
    max_entries: usize,
    sequence: u64,
}

impl WindowState {
    pub(crate) fn new(spec: WindowSpec, kinds: Vec<AggregateKind>, max_entries: usize) -> WindowState {
        let windows = match spec {
            WindowSpec::Tumbling { size_ms } => {
                Windows::Fixed(FixedWindows { size_ms, hop_ms: size_ms, windows: BTreeMap::new() })
            }
            WindowSpec::Hopping { size_ms, hop_ms } => {
                Windows::Fixed(FixedWindows { size_ms, hop_ms, windows: BTreeMap::new() })
            }
            WindowSpec::Sliding { size_ms } => Windows::Sliding { size_ms, groups: KeyMap::default() },
            WindowSpec::Session { timeout_ms, max_duration_ms } => Windows::Session(SessionWindows {
                timeout_ms,
                max_duration_ms,
                partitions: KeyMap::default(),
            }),
        };
        WindowState { kinds, windows, entries: 0, max_entries, sequence: 0 }
    }

    /// After a restore: the limit comes from the job's options, not from the checkpoint.
    pub(crate) fn set_max_entries(&mut self, max_entries: usize) {
        self.max_entries = max_entries;
    }

    fn state_full(&self) -> String {
        format!(
            "state limit reached: {} open groups or buffered events (max_state_entries)",
            self.max_entries
        )
    }

    /// Adds one event. On error nothing was changed.
    pub(crate) fn insert(&mut self, input: WindowInput) -> Result<(), String> {
        self.sequence += 1;
        let sequence = self.sequence;
        match &mut self.windows {
            Windows::Fixed(fixed) => {
                if fixed.size_ms == fixed.hop_ms {
                    // Tumbling: one window, so one lookup and no copy of the key on the hot path.
                    let Some(end) = fixed.ends(input.timestamp_ms).next() else { return Ok(()) };
                    let groups = fixed.windows.entry(end).or_default();
                    if let Some(group) = groups.get_mut(input.key_parts.as_slice()) {
                        group.check(&self.kinds, &input.args)?;
                        group.apply(&input.args);
                        return Ok(());
                    }
                    fresh_check(&self.kinds, &input.args)?;
                    if self.entries >= self.max_entries {
                        return Err(self.state_full());
                    }
                    self.entries += 1;
                    let mut group = Group::new(&self.kinds, input.key_values.into());
                    group.apply(&input.args);
                    groups.insert(input.key_parts.into(), group);
                    return Ok(());
                }
                // Hopping: the event falls in several windows, each with its own group map. The
                // key is hashed once and the hash reused in every window (all group maps share
                // one hasher state, see `KeyHasher`).
                let hash = KeyHasher.hash_one(input.key_parts.as_slice());
                let mut new_groups = 0;
                // The key as held by an open window already, to share with the new groups.
                let mut shared_parts: Option<Arc<[KeyPart]>> = None;
                let mut shared_values: Option<Arc<[Value]>> = None;
                for end in fixed.ends(input.timestamp_ms) {
                    let existing = fixed.windows.get(&end).and_then(|groups| {
                        groups.raw_entry_v1().from_key_hashed_nocheck(hash, input.key_parts.as_slice())
                    });
                    match existing {
                        Some((key_parts, group)) => {
                            group.check(&self.kinds, &input.args)?;
                            // Equal keys can still differ in value (`1` and `1.0` group
                            // together): a new group keeps the value of the event opening it.
                            shared_parts.get_or_insert_with(|| key_parts.clone());
                            if shared_values.is_none() && *group.key_values == *input.key_values {
                                shared_values = Some(group.key_values.clone());
                            }
                        }
                        None => {
                            fresh_check(&self.kinds, &input.args)?;
                            new_groups += 1;
                        }
                    }
                }
                if self.entries + new_groups > self.max_entries {
                    return Err(self.state_full());
                }
                self.entries += new_groups;
                let WindowInput { key_parts, key_values, args, .. } = input;
                let key_parts = shared_parts.unwrap_or_else(|| key_parts.into());
                let key_values = shared_values.unwrap_or_else(|| key_values.into());
                for end in fixed.ends(input.timestamp_ms) {
                    let groups = fixed.windows.entry(end).or_default();
                    match groups.raw_entry_mut_v1().from_key_hashed_nocheck(hash, &*key_parts) {
                        RawEntryMut::Occupied(mut entry) => entry.get_mut().apply(&args),
                        RawEntryMut::Vacant(entry) => {
                            let mut group = Group::new(&self.kinds, key_values.clone());
                            group.apply(&args);
                            entry.insert_hashed_nocheck(hash, key_parts.clone(), group);
                        }
                    }
                }
                Ok(())
            }
            Windows::Sliding { size_ms, groups } => {
                fresh_check(&self.kinds, &input.args)?;
                if self.entries >= self.max_entries {
                    return Err(self.state_full());
                }
                self.entries += 1;
                let group = groups.entry(input.key_parts).or_insert_with(|| SlidingGroup {
                    order: sequence,
                    key_values: input.key_values,
                    events: BTreeMap::new(),
                    pending: BTreeSet::new(),
                });
                group.events.insert((input.timestamp_ms, sequence), input.args);
                // The window's content changes when the event enters and when it leaves.
                group.pending.insert(input.timestamp_ms);
                group.pending.insert(input.timestamp_ms.saturating_add(*size_ms));
                Ok(())
            }
            Windows::Session(sessions) => {
                fresh_check(&self.kinds, &input.args)?;
                if self.entries >= self.max_entries {
                    return Err(self.state_full());
                }
                self.entries += 1;
                let partition = sessions.partitions.entry(input.session_parts.clone()).or_insert_with(|| {
                    SessionPartition { order: sequence, pending: BTreeMap::new(), session: None }
                });
                partition.pending.insert((input.timestamp_ms, sequence), input);
                Ok(())
            }
        }
    }

    /// Emits every window that ends before `boundary_ms`, with errors met while folding events.
    pub(crate) fn advance(&mut self, boundary_ms: i64) -> (Vec<Emitted>, Vec<String>) {
        let mut emitted = Vec::new();
        let mut errors = Vec::new();
        match &mut self.windows {
            Windows::Fixed(fixed) => {
                while let Some(entry) = fixed.windows.first_entry() {
                    if *entry.key() >= boundary_ms {
                        break;
                    }
                    let end_ms = *entry.key();
                    let groups = entry.remove();
                    self.entries = self.entries.saturating_sub(groups.len());
                    emitted.extend(groups.values().map(|group| group.emit(end_ms)));
                }
            }
            Windows::Sliding { size_ms, groups } => {
                let mut ordered = Vec::new();
                for group in groups.values_mut() {
                    while let Some(point_ms) =
                        group.pending.first().copied().filter(|point| *point < boundary_ms)
                    {
                        group.pending.pop_first();
                        let start = (point_ms.saturating_sub(*size_ms), u64::MAX);
                        let mut events =
                            group.events.range(start..=(point_ms, u64::MAX)).map(|(_, args)| args).peekable();
                        if events.peek().is_none() {
                            // The last event left: an empty window has no row.
                            continue;
                        }
                        let folded = fold(&self.kinds, &group.key_values, events, &mut errors);
                        ordered.push((point_ms, group.order, folded.emit(point_ms)));
                    }
                    // Later points are >= boundary, so they only need events after boundary - size.
                    let keep_from = (boundary_ms.saturating_sub(*size_ms), u64::MAX);
                    let kept = group.events.split_off(&keep_from);
                    self.entries = self.entries.saturating_sub(group.events.len());
                    group.events = kept;
                }
                groups.retain(|_, group| !group.events.is_empty() || !group.pending.is_empty());
                ordered.sort_by_key(|(point_ms, order, _)| (*point_ms, *order));
                emitted.extend(ordered.into_iter().map(|(_, _, emitted)| emitted));
            }
            Windows::Session(sessions) => {
                let mut ordered = Vec::new();
                let (timeout_ms, max_ms) = (sessions.timeout_ms, sessions.max_duration_ms);
                for partition in sessions.partitions.values_mut() {
                    let mut closed = Vec::new();
                    while let Some(entry) = partition.pending.first_entry() {
                        if entry.key().0 >= boundary_ms {
                            break;
                        }
                        let input = entry.remove();
                        self.entries = self.entries.saturating_sub(1);
                        session_feed(
                            partition,
                            input,
                            timeout_ms,
                            max_ms,
                            &self.kinds,
                            &mut closed,
                            &mut errors,
                        );
                    }
                    while let Some(session) = &partition.session {
                        let end_ms = session.end_ms(timeout_ms);
                        if end_ms >= boundary_ms {
                            break;
                        }
                        session_close(partition, end_ms, timeout_ms, max_ms, &mut closed);
                    }
                    ordered.extend(closed.into_iter().map(|emitted| (partition.order, emitted)));
                }
                sessions
                    .partitions
                    .retain(|_, partition| partition.session.is_some() || !partition.pending.is_empty());
                ordered.sort_by_key(|(order, emitted)| (emitted.end_ms, *order));
                emitted.extend(ordered.into_iter().map(|(_, emitted)| emitted));
            }
        }
        (emitted, errors)
    }
}

impl Session {
    fn new(start_ms: i64, last_ms: i64, max_ms: i64) -> Session {
        Session {
            last_ms,
            cap_ms: ceil_to_multiple(start_ms.saturating_add(max_ms), max_ms),
            groups: KeyMap::default(),
        }
    }

    fn end_ms(&self, timeout_ms: i64) -> i64 {
        self.last_ms.saturating_add(timeout_ms).min(self.cap_ms)
    }
}

/// Closes the partition's session at `end_ms`, continuing it in a new empty session from the
/// check point when it was cut by the maximum duration while still active.
fn session_close(
    partition: &mut SessionPartition,
    end_ms: i64,
    timeout_ms: i64,
    max_ms: i64,
    closed: &mut Vec<Emitted>,
) {
    let Some(session) = partition.session.take() else { return };
    closed.extend(session.groups.values().map(|group| group.emit(end_ms)));
    let still_active =
        session.cap_ms < session.last_ms.saturating_add(timeout_ms) && end_ms == session.cap_ms;
    if still_active && end_ms < i64::MAX {
        partition.session = Some(Session::new(session.cap_ms, session.last_ms, max_ms));
    }
}

fn session_feed(
    partition: &mut SessionPartition,
    input: WindowInput,
    timeout_ms: i64,
    max_ms: i64,
    kinds: &[AggregateKind],
    closed: &mut Vec<Emitted>,
    errors: &mut Vec<String>,
) {
    let timestamp_ms = input.timestamp_ms;
    loop {
        let Some(session) = &mut partition.session else {
            partition.session = Some(Session::new(timestamp_ms, timestamp_ms, max_ms));
            continue;
        };
        let end_ms = session.end_ms(timeout_ms);
        if timestamp_ms > end_ms {
            session_close(partition, end_ms, timeout_ms, max_ms, closed);
            continue;
        }
        session.last_ms = session.last_ms.max(timestamp_ms);
        let group = session
            .groups
            .entry(input.key_parts.clone())
            .or_insert_with(|| Group::new(kinds, input.key_values.as_slice().into()));
        match group.check(kinds, &input.args) {
            Ok(()) => group.apply(&input.args),
            Err(error) => errors.push(error),
        }
        return;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(timestamp_ms: i64, key: &str) -> WindowInput {
        WindowInput {
            timestamp_ms,
            key_parts: vec![KeyPart::Str(key.to_string())],
            key_values: vec![Value::Str(key.to_string())],
            args: vec![Value::Int(1)],
            session_parts: Vec::new(),
        }
    }

    fn run(spec: WindowSpec, events: &[(i64, &str)], boundary_ms: i64) -> Vec<(i64, String, Value)> {
        let mut state = WindowState::new(spec, vec![AggregateKind::CountStar], 1_000);
        for (timestamp_ms, key) in events {
            assert!(state.insert(input(*timestamp_ms, key)).is_ok());
        }
        let (emitted, errors) = state.advance(boundary_ms);
        assert!(errors.is_empty());
        emitted
            .into_iter()
            .map(|emitted| {
                let key = match &emitted.key_values[0] {
                    Value::Str(key) => key.clone(),
                    _ => String::new(),
                };
                (emitted.end_ms, key, emitted.results[0].clone())
            })
            .collect()
    }

    #[test]
    fn tumbling_windows_are_start_exclusive_end_inclusive() {
        let emitted =
            run(WindowSpec::Tumbling { size_ms: 10 }, &[(0, "a"), (1, "a"), (10, "a"), (11, "b")], i64::MAX);
        assert_eq!(
            emitted,
            vec![
                (0, "a".into(), Value::Int(1)),
                (10, "a".into(), Value::Int(2)),
                (20, "b".into(), Value::Int(1))
            ]
        );
        // A window is emitted only once the boundary is past its end.
        assert_eq!(run(WindowSpec::Tumbling { size_ms: 10 }, &[(10, "a")], 10), vec![]);
        assert_eq!(run(WindowSpec::Tumbling { size_ms: 10 }, &[(10, "a")], 11).len(), 1);
    }

    #[test]
    fn hopping_windows_cover_size_every_hop() {
        let emitted = run(WindowSpec::Hopping { size_ms: 10, hop_ms: 5 }, &[(5, "a"), (7, "a")], i64::MAX);
        // 5 is in (-5, 5] and (0, 10]; 7 in (0, 10] and (5, 15].
        assert_eq!(
            emitted,
            vec![
                (5, "a".into(), Value::Int(1)),
                (10, "a".into(), Value::Int(2)),
                (15, "a".into(), Value::Int(1))
            ]
        );
    }

    #[test]
    fn hopping_window_groups_keep_the_key_value_of_the_event_that_opened_them() {
        // 1.0 and 1 are one group, but a window first opened by `1` shows `1`, even though the
        // group of an earlier window (opened by `1.0`) could share its key.
        let mut state = WindowState::new(
            WindowSpec::Hopping { size_ms: 10, hop_ms: 5 },
            vec![AggregateKind::CountStar],
            100,
        );
        for (timestamp_ms, key) in [(5, Value::Float(1.0)), (7, Value::Int(1))] {
            let input = WindowInput {
                timestamp_ms,
                key_parts: vec![key.key()],
                key_values: vec![key],
                args: vec![Value::Int(1)],
                session_parts: Vec::new(),
            };
            assert!(state.insert(input).is_ok());
        }
        let (emitted, _) = state.advance(i64::MAX);
        let keys: Vec<(i64, Value, Value)> = emitted
            .into_iter()
            .map(|emitted| (emitted.end_ms, emitted.key_values[0].clone(), emitted.results[0].clone()))
            .collect();
        assert_eq!(
            keys,
            vec![
                (5, Value::Float(1.0), Value::Int(1)),
                (10, Value::Float(1.0), Value::Int(2)),
                (15, Value::Int(1), Value::Int(1)),
            ]
        );
    }

    #[test]
    fn sliding_window_emits_when_events_enter_and_leave() {
        let emitted =
            run(WindowSpec::Sliding { size_ms: 10 }, &[(1, "a"), (5, "a"), (11, "a"), (30, "a")], i64::MAX);
        // Points: entries 1, 5, 11, 30 and exits 11, 15, 21, 40. At 11, 11 enters and 1 leaves:
        // (1, 11] = {5, 11}. At 15, 5 leaves. At 21 and 40 the window is empty: no row.
        assert_eq!(
            emitted,
            vec![
                (1, "a".into(), Value::Int(1)),
                (5, "a".into(), Value::Int(2)),
                (11, "a".into(), Value::Int(2)),
                (15, "a".into(), Value::Int(1)),
                (30, "a".into(), Value::Int(1)),
            ]
        );
    }

    #[test]
    fn session_windows_close_on_timeout_and_max_duration() {
        let spec = WindowSpec::Session { timeout_ms: 5, max_duration_ms: 20 };
        // Session 1: 1, 4 then gap; ends at 4 + 5 = 9. Session 2 starts at 12 and keeps going
        // every 4 ms: the check point 40 (first multiple of 20 at least 20 after 12) cuts it.
        let events = [
            (1, "a"),
            (4, "a"),
            (12, "a"),
            (16, "a"),
            (20, "a"),
            (24, "a"),
            (28, "a"),
            (32, "a"),
            (36, "a"),
            (40, "a"),
            (44, "a"),
        ];
        let emitted = run(spec, &events, i64::MAX);
        assert_eq!(
            emitted,
            vec![
                (9, "a".into(), Value::Int(2)),
                (40, "a".into(), Value::Int(8)),
                (49, "a".into(), Value::Int(1))
            ]
        );
    }

    #[test]
    fn state_limit_is_enforced_at_the_boundary() {
        let mut state =
            WindowState::new(WindowSpec::Tumbling { size_ms: 10 }, vec![AggregateKind::CountStar], 2);
        assert!(state.insert(input(1, "a")).is_ok());
        assert!(state.insert(input(2, "b")).is_ok());
        assert!(state.insert(input(3, "a")).is_ok(), "an existing group does not count again");
        assert!(state.insert(input(4, "c")).is_err());
        let (emitted, _) = state.advance(i64::MAX);
        assert_eq!(emitted.len(), 2);
        assert!(state.insert(input(14, "c")).is_ok(), "emitting frees the state");
    }
}
