//! Fetch sessions (KIP-227). A consumer of many partitions names them all once, in a full fetch
//! that opens a session, and then sends only what changed (a partition added, a new fetch
//! offset, a partition forgotten) in incremental fetches. The answer to an incremental fetch
//! carries only the partitions with something new: records, an error, or a high watermark, last
//! stable offset or log start offset other than the one last sent. A consumer of a thousand
//! quiet partitions then sends and receives a few bytes per fetch instead of a thousand entries.
//!
//! The rules, as Kafka's `FetchManager` applies them (request session id and epoch):
//! - id 0, epoch 0: a full fetch that opens a new session if the cache has room (its id is in
//!   the answer; 0 means "no session, keep sending full fetches");
//! - epoch -1: a full fetch without a session; a nonzero id names a session to close first;
//! - id N, epoch 0: close session N and open a new one, as above;
//! - id N, epoch E > 0: incremental, if session N exists (else `FETCH_SESSION_ID_NOT_FOUND`) and
//!   E is the epoch it expects next (else `INVALID_FETCH_SESSION_EPOCH`); the epoch then moves
//!   on (after `i32::MAX` it wraps to 1). A session left with no partitions is closed.
//!
//! The cache holds at most `slots` sessions (Kafka's `max.incremental.fetch.session.cache.slots`).
//! When it is full, a new session takes the place of the least recently used one if that has
//! been idle for [`EVICTION_IDLE`], else of the smallest one if the new one is bigger; otherwise
//! the fetch is answered without a session. Session ids are random, so one client cannot guess
//! another's; READ is checked on every fetch, incremental or not, against the topics the session
//! holds.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tidewater_kafka::kafka_protocol::messages::fetch_response::FetchResponse;
use tidewater_kafka::ResponseError;

/// How long a session must have gone unused before a new one may take its slot.
pub const EVICTION_IDLE: Duration = Duration::from_secs(120);
/// Kafka's default number of session slots.
pub const DEFAULT_SLOTS: usize = 1000;

/// The epoch of a full fetch that opens a session.
const INITIAL_EPOCH: i32 = 0;
/// The epoch of a full fetch that wants no session.
pub(crate) const FINAL_EPOCH: i32 = -1;

/// A partition by topic name and index.
pub(crate) type PartitionKey = (String, i32);

/// What a fetch asks of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PartitionFetch {
    pub fetch_offset: i64,
    pub partition_max_bytes: i32,
    pub current_leader_epoch: i32,
}

/// The offsets last sent for a partition in a session; a change means it must be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sent {
    high_watermark: i64,
    last_stable_offset: i64,
    log_start_offset: i64,
}

#[derive(Debug)]
struct CachedPartition {
    fetch: PartitionFetch,
    /// `None` until first sent, and after an error, so it is sent again.
    sent: Option<Sent>,
}

#[derive(Debug)]
struct Session {
    /// By topic, then partition: an answer is matched against it by `&str`, with no key built
    /// per partition.
    partitions: BTreeMap<String, BTreeMap<i32, CachedPartition>>,
    /// The epoch the next incremental fetch must carry.
    next_epoch: i32,
    last_used: Instant,
}

/// How one fetch is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FetchContext {
    /// Every partition asked for, with session id 0.
    Sessionless,
    /// Every partition asked for, in session `id`, which this fetch opened.
    Full { id: i32 },
    /// The partitions of session `id` with something new.
    Incremental { id: i32 },
}

impl FetchContext {
    /// The session id the answer carries.
    pub(crate) fn session_id(self) -> i32 {
        match self {
            FetchContext::Sessionless => 0,
            FetchContext::Full { id } | FetchContext::Incremental { id } => id,
        }
    }
}

/// What to read: the context, and every partition of the fetch in order (grouped by topic).
#[derive(Debug)]
pub(crate) struct FetchPlan {
    pub context: FetchContext,
    pub partitions: Vec<(PartitionKey, PartitionFetch)>,
}

/// The broker's fetch sessions.
#[derive(Debug)]
pub struct FetchSessions {
    slots: usize,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    sessions: HashMap<i32, Session>,
    /// Seeded at random by the standard library: ids are a keyed hash of a counter.
    ids: std::collections::hash_map::RandomState,
    counter: u64,
}

impl Session {
    /// Partitions held.
    fn len(&self) -> usize {
        self.partitions.values().map(BTreeMap::len).sum()
    }
}

impl FetchSessions {
    /// A cache of at most `slots` sessions (0: every fetch is sessionless).
    pub fn new(slots: usize) -> FetchSessions {
        let state = State { sessions: HashMap::new(), ids: Default::default(), counter: 0 };
        FetchSessions { slots, state: Mutex::new(state) }
    }

    /// Sessions open now.
    pub fn len(&self) -> usize {
        self.lock().sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Decides how a fetch is answered and which partitions it reads. `requested` are the
    /// request's partitions in order, `forgotten` its forgotten ones (incremental only).
    pub(crate) fn plan(
        &self,
        session_id: i32,
        epoch: i32,
        requested: Vec<(PartitionKey, PartitionFetch)>,
        forgotten: Vec<PartitionKey>,
        now: Instant,
    ) -> Result<FetchPlan, ResponseError> {
        let mut state = self.lock();
        if epoch == INITIAL_EPOCH || epoch == FINAL_EPOCH {
            // Any session a full fetch names is closed.
            if session_id != 0 {
                state.sessions.remove(&session_id);
            }
            let context = match epoch {
                FINAL_EPOCH => FetchContext::Sessionless,
                _ => match self.open(&mut state, &requested, now) {
                    Some(id) => FetchContext::Full { id },
                    None => FetchContext::Sessionless,
                },
            };
            return Ok(FetchPlan { context, partitions: requested });
        }
        let Some(session) = state.sessions.get_mut(&session_id) else {
            return Err(ResponseError::FetchSessionIdNotFound);
        };
        if session.next_epoch != epoch {
            return Err(ResponseError::InvalidFetchSessionEpoch);
        }
        for key in forgotten {
            if let Some(topic) = session.partitions.get_mut(&key.0) {
                topic.remove(&key.1);
                if topic.is_empty() {
                    session.partitions.remove(&key.0);
                }
            }
        }
        for (key, fetch) in requested {
            let cached = session.partitions.entry(key.0).or_default().entry(key.1);
            cached.and_modify(|cached| cached.fetch = fetch).or_insert(CachedPartition { fetch, sent: None });
        }
        if session.partitions.is_empty() {
            state.sessions.remove(&session_id);
            return Ok(FetchPlan { context: FetchContext::Sessionless, partitions: Vec::new() });
        }
        session.next_epoch = if epoch == i32::MAX { 1 } else { epoch + 1 };
        session.last_used = now;
        let partitions = session
            .partitions
            .iter()
            .flat_map(|(topic, partitions)| {
                partitions.iter().map(|(&partition, cached)| ((topic.clone(), partition), cached.fetch))
            })
            .collect();
        Ok(FetchPlan { context: FetchContext::Incremental { id: session_id }, partitions })
    }

    /// A new session of `partitions`, if there is a slot for it (perhaps by evicting one).
    fn open(
        &self,
        state: &mut State,
        partitions: &[(PartitionKey, PartitionFetch)],
        now: Instant,
    ) -> Option<i32> {
        if self.slots == 0 || partitions.is_empty() {
            return None;
        }
        if state.sessions.len() >= self.slots {
            let stale = state
                .sessions
                .iter()
                .min_by_key(|(_, session)| session.last_used)
                .filter(|(_, session)| now.saturating_duration_since(session.last_used) >= EVICTION_IDLE)
                .map(|(&id, _)| id);
            let smaller = || {
                state
                    .sessions
                    .iter()
                    .min_by_key(|(_, session)| session.len())
                    .filter(|(_, session)| session.len() < partitions.len())
                    .map(|(&id, _)| id)
            };
            let evicted = stale.or_else(smaller)?;
            state.sessions.remove(&evicted);
        }
        let id = loop {
            state.counter += 1;
            // A positive i32: 0 means "no session", and Kafka's ids are positive.
            let id = (state.ids.hash_one(state.counter) & 0x7fff_ffff) as i32;
            if id != 0 && !state.sessions.contains_key(&id) {
                break id;
            }
        };
        let mut held: BTreeMap<String, BTreeMap<i32, CachedPartition>> = BTreeMap::new();
        for ((topic, partition), fetch) in partitions {
            held.entry(topic.clone())
                .or_default()
                .insert(*partition, CachedPartition { fetch: *fetch, sent: None });
        }
        state.sessions.insert(id, Session { partitions: held, next_epoch: 1, last_used: now });
        Some(id)
    }

    /// Called with the answer about to be sent: remembers what it says of each partition, and
    /// for an incremental fetch leaves out the partitions with nothing new. The answer carries
    /// the session id.
    pub(crate) fn finish(&self, context: FetchContext, response: &mut FetchResponse) {
        response.session_id = context.session_id();
        let id = match context {
            FetchContext::Sessionless => return,
            FetchContext::Full { id } | FetchContext::Incremental { id } => id,
        };
        let incremental = matches!(context, FetchContext::Incremental { .. });
        let mut state = self.lock();
        let Some(session) = state.sessions.get_mut(&id) else { return };
        for topic in &mut response.responses {
            let Some(held) = session.partitions.get_mut(topic.topic.0.as_str()) else { continue };
            topic.partitions.retain(|data| {
                let Some(cached) = held.get_mut(&data.partition_index) else {
                    return true;
                };
                let has_records = data.records.as_ref().is_some_and(|records| !records.is_empty());
                let now = Sent {
                    high_watermark: data.high_watermark,
                    last_stable_offset: data.last_stable_offset,
                    log_start_offset: data.log_start_offset,
                };
                let errored = data.error_code != 0;
                let changed = cached.sent != Some(now);
                // An error forgets what was sent, so the partition is sent again once it clears.
                cached.sent = if errored { None } else { Some(now) };
                !incremental || has_records || errored || changed
            });
        }
        response.responses.retain(|topic| !topic.partitions.is_empty() || !incremental);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;
    use tidewater_kafka::kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use tidewater_kafka::kafka_protocol::messages::TopicName;
    use tidewater_kafka::kafka_protocol::protocol::StrBytes;

    use super::*;

    fn fetch(offset: i64) -> PartitionFetch {
        PartitionFetch { fetch_offset: offset, partition_max_bytes: 1 << 20, current_leader_epoch: -1 }
    }

    fn key(topic: &str, partition: i32) -> PartitionKey {
        (topic.to_string(), partition)
    }

    /// An answer for `plan`'s partitions: records where `with_records` says, watermark `hw`.
    fn answer(plan: &FetchPlan, with_records: &[PartitionKey], hw: i64) -> FetchResponse {
        let mut topics: Vec<FetchableTopicResponse> = Vec::new();
        for ((topic, partition), _) in &plan.partitions {
            if topics.last().is_none_or(|last| last.topic.0.as_str() != topic) {
                topics.push(
                    FetchableTopicResponse::default()
                        .with_topic(TopicName(StrBytes::from_string(topic.clone()))),
                );
            }
            let records = if with_records.contains(&(topic.clone(), *partition)) {
                Bytes::from_static(b"batch")
            } else {
                Bytes::new()
            };
            topics.last_mut().expect("pushed").partitions.push(
                PartitionData::default()
                    .with_partition_index(*partition)
                    .with_high_watermark(hw)
                    .with_last_stable_offset(hw)
                    .with_records(Some(records)),
            );
        }
        FetchResponse::default().with_responses(topics)
    }

    fn sent(response: &FetchResponse) -> Vec<PartitionKey> {
        response
            .responses
            .iter()
            .flat_map(|topic| {
                topic.partitions.iter().map(|data| (topic.topic.0.to_string(), data.partition_index))
            })
            .collect()
    }

    #[test]
    fn an_incremental_fetch_carries_only_what_changed_and_answers_only_what_is_new() {
        let sessions = FetchSessions::new(10);
        let now = Instant::now();
        let all: Vec<_> = (0..100).map(|partition| (key("t", partition), fetch(0))).collect();
        let plan = sessions.plan(0, 0, all, vec![], now).expect("a full fetch");
        let FetchContext::Full { id } = plan.context else { panic!("no session: {:?}", plan.context) };
        let mut response = answer(&plan, &[], 5);
        sessions.finish(plan.context, &mut response);
        assert_eq!((response.session_id, sent(&response).len()), (id, 100));

        // Nothing changed: an empty request, an empty answer.
        let plan = sessions.plan(id, 1, vec![], vec![], now).expect("incremental");
        assert_eq!(plan.partitions.len(), 100, "every partition of the session is read");
        let mut response = answer(&plan, &[], 5);
        sessions.finish(plan.context, &mut response);
        assert_eq!(sent(&response), vec![]);

        // Partition 7 has records: only it is sent; then its new offset comes in the request.
        let plan = sessions.plan(id, 2, vec![], vec![], now).expect("incremental");
        let mut response = answer(&plan, &[key("t", 7)], 6);
        sessions.finish(plan.context, &mut response);
        assert_eq!(sent(&response).len(), 100, "the high watermark moved everywhere");
        let plan =
            sessions.plan(id, 3, vec![(key("t", 7), fetch(6))], vec![key("t", 9)], now).expect("incremental");
        assert_eq!(plan.partitions.len(), 99);
        assert!(plan.partitions.contains(&(key("t", 7), fetch(6))));
        let mut response = answer(&plan, &[], 6);
        sessions.finish(plan.context, &mut response);
        assert_eq!(sent(&response), vec![]);

        // A wrong epoch, an unknown session.
        assert_eq!(
            sessions.plan(id, 3, vec![], vec![], now).err(),
            Some(ResponseError::InvalidFetchSessionEpoch)
        );
        assert_eq!(
            sessions.plan(id ^ 1, 1, vec![], vec![], now).err(),
            Some(ResponseError::FetchSessionIdNotFound)
        );
        // Epoch -1 closes it and answers without one.
        let plan = sessions.plan(id, -1, vec![(key("t", 0), fetch(0))], vec![], now).expect("final");
        assert_eq!(plan.context, FetchContext::Sessionless);
        assert!(sessions.is_empty());
    }

    #[test]
    fn a_full_cache_evicts_a_stale_session_or_a_smaller_one_and_otherwise_answers_without_one() {
        let sessions = FetchSessions::new(1);
        let start = Instant::now();
        let partitions =
            |count: i32| (0..count).map(|partition| (key("t", partition), fetch(0))).collect::<Vec<_>>();
        let first = sessions.plan(0, 0, partitions(5), vec![], start).expect("full").context;
        assert!(matches!(first, FetchContext::Full { .. }));
        // Not stale, not bigger: no session for it.
        assert_eq!(
            sessions.plan(0, 0, partitions(5), vec![], start).expect("full").context,
            FetchContext::Sessionless
        );
        // Bigger: it takes the slot.
        let bigger = sessions.plan(0, 0, partitions(6), vec![], start).expect("full").context;
        assert!(matches!(bigger, FetchContext::Full { .. }) && bigger != first);
        assert_eq!(
            sessions.plan(first.session_id(), 1, vec![], vec![], start).err(),
            Some(ResponseError::FetchSessionIdNotFound)
        );
        // Stale: a smaller one takes the slot after EVICTION_IDLE.
        let later = start + EVICTION_IDLE;
        let small = sessions.plan(0, 0, partitions(1), vec![], later).expect("full").context;
        assert!(matches!(small, FetchContext::Full { .. }) && small != bigger);
        assert_eq!(sessions.len(), 1);
        // No slots at all: sessionless always.
        let none = FetchSessions::new(0);
        assert_eq!(
            none.plan(0, 0, partitions(3), vec![], start).expect("full").context,
            FetchContext::Sessionless
        );
    }

    /// What a session should hold, kept the obvious way.
    #[derive(Debug, Default)]
    struct Model {
        partitions: BTreeMap<PartitionKey, PartitionFetch>,
        next_epoch: i32,
    }

    #[derive(Debug, Clone)]
    enum Step {
        Full(Vec<(i32, i64)>),
        Incremental { epoch_offset: i32, update: Vec<(i32, i64)>, forget: Vec<i32> },
        Close,
    }

    fn step() -> impl Strategy<Value = Step> {
        let partitions = proptest::collection::vec((0..12i32, 0..1000i64), 0..6);
        prop_oneof![
            partitions.clone().prop_map(Step::Full),
            (
                prop_oneof![Just(0), Just(0), Just(0), -1..2i32],
                partitions,
                proptest::collection::vec(0..12i32, 0..3)
            )
                .prop_map(|(epoch_offset, update, forget)| Step::Incremental {
                    epoch_offset,
                    update,
                    forget
                }),
            Just(Step::Close),
        ]
    }

    proptest! {
        /// Any sequence of full, incremental (with right or wrong epochs) and closing fetches
        /// leaves the session holding what the model says, and errors exactly where it says.
        #[test]
        fn the_session_follows_a_model_of_the_protocol(steps in proptest::collection::vec(step(), 1..40)) {
            let sessions = FetchSessions::new(4);
            let now = Instant::now();
            let mut session: Option<(i32, Model)> = None;
            for step in steps {
                match step {
                    Step::Full(entries) => {
                        let requested: Vec<_> = entries.iter().map(|&(p, o)| (key("t", p), fetch(o))).collect();
                        // Duplicates in a request: the last wins, as in the model's map.
                        let mut model = Model { next_epoch: 1, ..Model::default() };
                        for (k, f) in &requested { model.partitions.insert(k.clone(), *f); }
                        let old = session.as_ref().map_or(0, |(id, _)| *id);
                        let plan = sessions.plan(old, 0, requested.clone(), vec![], now).expect("a full fetch");
                        prop_assert_eq!(&plan.partitions, &requested);
                        session = match plan.context {
                            FetchContext::Full { id } => Some((id, model)),
                            FetchContext::Sessionless => { prop_assert!(requested.is_empty()); None }
                            FetchContext::Incremental { .. } => { prop_assert!(false, "incremental from a full fetch"); None }
                        };
                    }
                    Step::Incremental { epoch_offset, update, forget } => {
                        let Some((id, model)) = session.as_mut() else { continue };
                        let epoch = model.next_epoch + epoch_offset;
                        if epoch <= 0 {
                            continue; // 0 and -1 are full fetches, which Step::Full covers
                        }
                        let requested: Vec<_> = update.iter().map(|&(p, o)| (key("t", p), fetch(o))).collect();
                        let forgotten: Vec<_> = forget.iter().map(|&p| key("t", p)).collect();
                        let result = sessions.plan(*id, epoch, requested.clone(), forgotten.clone(), now);
                        if epoch_offset != 0 {
                            prop_assert_eq!(result.err(), Some(ResponseError::InvalidFetchSessionEpoch));
                            continue;
                        }
                        for k in &forgotten { model.partitions.remove(k); }
                        for (k, f) in requested { model.partitions.insert(k, f); }
                        let plan = result.expect("the right epoch");
                        if model.partitions.is_empty() {
                            prop_assert_eq!(plan.context, FetchContext::Sessionless);
                            prop_assert!(sessions.plan(*id, epoch + 1, vec![], vec![], now).is_err());
                            session = None;
                            continue;
                        }
                        prop_assert_eq!(plan.context, FetchContext::Incremental { id: *id });
                        let expected: Vec<_> = model.partitions.iter().map(|(k, f)| (k.clone(), *f)).collect();
                        prop_assert_eq!(plan.partitions, expected);
                        model.next_epoch += 1;
                    }
                    Step::Close => {
                        let Some((id, _)) = session.take() else { continue };
                        let plan = sessions.plan(id, -1, vec![], vec![], now).expect("a final fetch");
                        prop_assert_eq!(plan.context, FetchContext::Sessionless);
                        prop_assert_eq!(sessions.plan(id, 1, vec![], vec![], now).err(), Some(ResponseError::FetchSessionIdNotFound));
                    }
                }
                prop_assert!(sessions.len() <= 1);
            }
        }
    }
}
