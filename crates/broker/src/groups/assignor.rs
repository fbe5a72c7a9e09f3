//! The server-side assignors of KIP-848's consumer group protocol: given the members, the topics
//! each subscribes to and the partition counts, they compute the group's *target* assignment.
//! The coordinator (`consumer_group.rs`) then moves each member towards its target, revoking
//! before reassigning; an assignor only says where partitions should end up.
//!
//! - `uniform` (Kafka's default): every partition of a subscribed topic goes to exactly one of
//!   its subscribers, as evenly as the subscriptions allow, and sticky: a partition stays with
//!   the member that had it in the previous target unless balance needs it elsewhere. With
//!   identical subscriptions the members' counts differ by at most one.
//! - `range`: per topic, the subscribers in member id order get contiguous ranges, the first
//!   `partitions % subscribers` of them one more. Not sticky, but co-partitioned topics line up.
//!
//! Pure and deterministic (`BTreeMap`s throughout): the same input gives the same target.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

/// One partition, by topic id as the consumer protocol names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic_id: Uuid,
    pub partition: i32,
}

/// A member's set of partitions.
pub type Assignment = BTreeSet<TopicPartition>;

/// What an assignor knows of a member: its subscribed topics (by id, existing topics only) and
/// its partitions in the previous target assignment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberSubscription {
    pub topics: BTreeSet<Uuid>,
    pub previous: Assignment,
}

/// The assignors a member may name in `ServerAssignor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Assignor {
    Uniform,
    Range,
}

impl Assignor {
    /// Every assignor, the default first.
    pub const ALL: [Assignor; 2] = [Assignor::Uniform, Assignor::Range];

    pub fn name(self) -> &'static str {
        match self {
            Assignor::Uniform => "uniform",
            Assignor::Range => "range",
        }
    }

    pub fn from_name(name: &str) -> Option<Assignor> {
        Assignor::ALL.into_iter().find(|assignor| assignor.name() == name)
    }

    /// The target assignment: every member of `members` gets an entry (maybe empty), and every
    /// partition of `topics` (topic id to partition count) that some member subscribes to is
    /// in exactly one member's set, a member that subscribes to its topic.
    pub fn assign(
        self,
        members: &BTreeMap<String, MemberSubscription>,
        topics: &BTreeMap<Uuid, i32>,
    ) -> BTreeMap<String, Assignment> {
        match self {
            Assignor::Uniform => uniform(members, topics),
            Assignor::Range => range(members, topics),
        }
    }
}

fn uniform(
    members: &BTreeMap<String, MemberSubscription>,
    topics: &BTreeMap<Uuid, i32>,
) -> BTreeMap<String, Assignment> {
    let mut target: BTreeMap<String, Assignment> =
        members.keys().map(|id| (id.clone(), Assignment::new())).collect();
    let exists =
        |tp: &TopicPartition| topics.get(&tp.topic_id).is_some_and(|n| (0..*n).contains(&tp.partition));
    // 1. Stickiness: keep what each member had, if it still exists and is still subscribed (the
    //    first member to claim a partition keeps it, should a bad previous target list it twice).
    let mut taken = BTreeSet::new();
    for (id, member) in members {
        for tp in &member.previous {
            if exists(tp) && member.topics.contains(&tp.topic_id) && taken.insert(*tp) {
                target.get_mut(id).expect("every member has an entry").insert(*tp);
            }
        }
    }
    // 2. Every partition nobody kept goes to the least loaded of its subscribers.
    for (topic_id, n_partitions) in topics {
        let subscribers = subscribers(members, topic_id);
        if subscribers.is_empty() {
            continue;
        }
        for partition in 0..*n_partitions {
            let tp = TopicPartition { topic_id: *topic_id, partition };
            if taken.contains(&tp) {
                continue;
            }
            let least = subscribers.iter().min_by_key(|id| (target[**id].len(), **id)).expect("not empty");
            target.get_mut(*least).expect("a member").insert(tp);
            taken.insert(tp);
        }
    }
    // 3. Balance: move one partition at a time from a member with more than one partition over
    //    a subscriber of that partition's topic. Each move lowers the sum of the squared counts,
    //    so this ends; the bound is that sum, a guard against a bug looping forever.
    let mut moves_left: usize = target.values().map(|set| set.len() * set.len()).sum::<usize>() + 1;
    while moves_left > 0 {
        moves_left -= 1;
        let Some((from, to, tp)) = find_move(members, &target) else { break };
        target.get_mut(&from).expect("a member").remove(&tp);
        target.get_mut(&to).expect("a member").insert(tp);
    }
    target
}

/// The members that subscribe to `topic_id`, in member id order.
fn subscribers<'a>(members: &'a BTreeMap<String, MemberSubscription>, topic_id: &Uuid) -> Vec<&'a String> {
    members.iter().filter(|(_, member)| member.topics.contains(topic_id)).map(|(id, _)| id).collect()
}

/// A partition that can move from a fuller member to a subscriber with at least two fewer:
/// the fullest donor first, the emptiest receiver first, the donor's last partition first.
fn find_move(
    members: &BTreeMap<String, MemberSubscription>,
    target: &BTreeMap<String, Assignment>,
) -> Option<(String, String, TopicPartition)> {
    let mut by_load: Vec<(&String, usize)> = target.iter().map(|(id, set)| (id, set.len())).collect();
    by_load.sort_by_key(|(id, load)| (*load, *id));
    for (donor, donor_load) in by_load.iter().rev() {
        for (receiver, receiver_load) in &by_load {
            if receiver_load + 1 >= *donor_load {
                break;
            }
            let wanted = &members[*receiver].topics;
            if let Some(tp) = target[*donor].iter().rev().find(|tp| wanted.contains(&tp.topic_id)) {
                return Some(((*donor).clone(), (*receiver).clone(), *tp));
            }
        }
    }
    None
}

fn range(
    members: &BTreeMap<String, MemberSubscription>,
    topics: &BTreeMap<Uuid, i32>,
) -> BTreeMap<String, Assignment> {
    let mut target: BTreeMap<String, Assignment> =
        members.keys().map(|id| (id.clone(), Assignment::new())).collect();
    for (topic_id, n_partitions) in topics {
        let subscribers = subscribers(members, topic_id);
        if subscribers.is_empty() {
            continue;
        }
        let n_partitions = (*n_partitions).max(0) as usize;
        let per_member = n_partitions / subscribers.len();
        let with_extra = n_partitions % subscribers.len();
        let mut next = 0usize;
        for (index, id) in subscribers.into_iter().enumerate() {
            let count = per_member + usize::from(index < with_extra);
            let set = target.get_mut(id).expect("a member");
            for partition in next..next + count {
                set.insert(TopicPartition { topic_id: *topic_id, partition: partition as i32 });
            }
            next += count;
        }
    }
    target
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn topic(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    fn tp(topic_n: u128, partition: i32) -> TopicPartition {
        TopicPartition { topic_id: topic(topic_n), partition }
    }

    fn member(topics: &[u128], previous: &[(u128, i32)]) -> MemberSubscription {
        MemberSubscription {
            topics: topics.iter().map(|n| topic(*n)).collect(),
            previous: previous.iter().map(|(t, p)| tp(*t, *p)).collect(),
        }
    }

    /// Each member's partitions as `topic:partition` lists, for readable comparisons.
    fn show(target: &BTreeMap<String, Assignment>) -> Vec<(String, Vec<String>)> {
        target
            .iter()
            .map(|(id, set)| {
                let parts =
                    set.iter().map(|tp| format!("{}:{}", tp.topic_id.as_u128(), tp.partition)).collect();
                (id.clone(), parts)
            })
            .collect()
    }

    fn check(
        assignor: Assignor,
        members: &[(&str, MemberSubscription)],
        topics: &[(u128, i32)],
        expected: &[(&str, &[&str])],
    ) {
        let members: BTreeMap<String, MemberSubscription> =
            members.iter().map(|(id, member)| (id.to_string(), member.clone())).collect();
        let topics: BTreeMap<Uuid, i32> = topics.iter().map(|(t, n)| (topic(*t), *n)).collect();
        let expected: Vec<(String, Vec<String>)> = expected
            .iter()
            .map(|(id, parts)| (id.to_string(), parts.iter().map(|part| part.to_string()).collect()))
            .collect();
        assert_eq!(show(&assignor.assign(&members, &topics)), expected);
    }

    #[test]
    fn uniform_spreads_evenly_and_keeps_what_members_had() {
        check(
            Assignor::Uniform,
            &[("a", member(&[1], &[])), ("b", member(&[1], &[])), ("c", member(&[1], &[]))],
            &[(1, 6)],
            &[("a", &["1:0", "1:3"]), ("b", &["1:1", "1:4"]), ("c", &["1:2", "1:5"])],
        );
        // c leaves: a and b keep theirs and share c's two.
        check(
            Assignor::Uniform,
            &[("a", member(&[1], &[(1, 0), (1, 3)])), ("b", member(&[1], &[(1, 1), (1, 4)]))],
            &[(1, 6)],
            &[("a", &["1:0", "1:2", "1:3"]), ("b", &["1:1", "1:4", "1:5"])],
        );
        // d joins three members of two: each member gives up at most what balance needs.
        check(
            Assignor::Uniform,
            &[
                ("a", member(&[1], &[(1, 0), (1, 3)])),
                ("b", member(&[1], &[(1, 1), (1, 4)])),
                ("c", member(&[1], &[(1, 2), (1, 5)])),
                ("d", member(&[1], &[])),
            ],
            &[(1, 6)],
            &[("a", &["1:0", "1:3"]), ("b", &["1:1", "1:4"]), ("c", &["1:2"]), ("d", &["1:5"])],
        );
    }

    #[test]
    fn uniform_gives_a_topic_only_to_its_subscribers_and_drops_what_no_longer_exists() {
        check(
            Assignor::Uniform,
            &[("a", member(&[1, 2], &[(1, 7), (3, 0)])), ("b", member(&[2], &[]))],
            &[(1, 2), (2, 2), (3, 1)],
            &[("a", &["1:0", "1:1"]), ("b", &["2:0", "2:1"])],
        );
    }

    #[test]
    fn range_gives_contiguous_ranges_in_member_order() {
        check(
            Assignor::Range,
            &[("a", member(&[1, 2], &[])), ("b", member(&[1, 2], &[])), ("c", member(&[1], &[]))],
            &[(1, 7), (2, 3)],
            &[
                ("a", &["1:0", "1:1", "1:2", "2:0", "2:1"]),
                ("b", &["1:3", "1:4", "2:2"]),
                ("c", &["1:5", "1:6"]),
            ],
        );
    }

    fn arbitrary_input() -> impl Strategy<Value = (BTreeMap<String, MemberSubscription>, BTreeMap<Uuid, i32>)>
    {
        let topics = proptest::collection::btree_map(0u128..5, 0i32..9, 0..4);
        let members = proptest::collection::btree_map(
            "[a-f]",
            (
                proptest::collection::btree_set(0u128..6, 0..4),
                proptest::collection::btree_set((0u128..6, 0i32..10), 0..8),
            ),
            0..6,
        );
        (members, topics).prop_map(|(members, topics)| {
            let members = members
                .into_iter()
                .map(|(id, (topics, previous))| {
                    let subscription = MemberSubscription {
                        topics: topics.into_iter().map(topic).collect(),
                        previous: previous.into_iter().map(|(t, p)| tp(t, p)).collect(),
                    };
                    (id, subscription)
                })
                .collect();
            (members, topics.into_iter().map(|(t, n)| (topic(t), n)).collect())
        })
    }

    proptest! {
        /// Whatever the subscriptions and previous targets (overlapping, stale, unsubscribed),
        /// every subscribed partition is assigned exactly once, to a subscriber, and nothing
        /// else is; the uniform assignor balances identical subscriptions to within one.
        #[test]
        fn every_subscribed_partition_goes_to_exactly_one_subscriber((members, topics) in arbitrary_input()) {
            for assignor in Assignor::ALL {
                let target = assignor.assign(&members, &topics);
                prop_assert_eq!(target.keys().collect::<Vec<_>>(), members.keys().collect::<Vec<_>>());
                let mut seen = BTreeSet::new();
                for (id, set) in &target {
                    for tp in set {
                        prop_assert!(seen.insert(*tp), "{:?} assigned twice by {:?}", tp, assignor);
                        prop_assert!(members[id].topics.contains(&tp.topic_id));
                    }
                }
                let expected: BTreeSet<TopicPartition> = topics
                    .iter()
                    .filter(|(topic_id, _)| members.values().any(|member| member.topics.contains(topic_id)))
                    .flat_map(|(topic_id, n)| (0..*n).map(|partition| TopicPartition { topic_id: *topic_id, partition }))
                    .collect();
                prop_assert_eq!(&seen, &expected);
                let homogeneous = members.values().map(|member| &member.topics).collect::<BTreeSet<_>>().len() == 1;
                if assignor == Assignor::Uniform && homogeneous {
                    let loads: Vec<usize> = target.values().map(BTreeSet::len).collect();
                    let (min, max) = (loads.iter().min().copied().unwrap_or(0), loads.iter().max().copied().unwrap_or(0));
                    prop_assert!(max <= min + 1, "unbalanced: {:?}", loads);
                }
            }
        }

        /// A member that already holds its fair share keeps all of it.
        #[test]
        fn uniform_is_sticky_for_a_balanced_previous_target((members, topics) in arbitrary_input()) {
            let first = Assignor::Uniform.assign(&members, &topics);
            let again: BTreeMap<String, MemberSubscription> = members
                .iter()
                .map(|(id, member)| (id.clone(), MemberSubscription { topics: member.topics.clone(), previous: first[id].clone() }))
                .collect();
            prop_assert_eq!(Assignor::Uniform.assign(&again, &topics), first);
        }
    }
}
