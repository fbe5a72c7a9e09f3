//! `tidewater group ...`: consumer groups on any Kafka-compatible cluster, like Kafka's
//! `kafka-consumer-groups`: list them, describe one (state, members and the partitions each is
//! assigned, and per partition the committed offset, the log end offset and the lag between
//! them), delete one, and reset its committed offsets.
//!
//! This command is an administrator, never a member: it joins no group and its commits carry no
//! member id and generation -1, which Kafka accepts only while a group has no active members.
//! So `delete` and `reset-offsets --execute` refuse a group with members, with an error saying
//! so, before asking the broker (which would refuse too). `reset-offsets` is a dry run unless
//! given `--execute`: it prints the plan, and the plan is what `--execute` commits.
//!
//! The log end offset is the high watermark (ListOffsets "latest" at read_uncommitted), as in
//! Kafka's tool, so a read_committed consumer's lag also counts records of open or aborted
//! transactions and their markers. Assignments are decoded from the consumer protocol's bytes by
//! `tidewater_client::assignment`; the group requests go through `tidewater_client::admin`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tidewater_client::ClusterArgs;

use tidewater_client::admin::{self as raw, GroupInfo};
use tidewater_client::assignment::decode_assignment;

use crate::{CliContext, Connection};

#[derive(Debug, Args)]
pub struct GroupArgs {
    #[command(flatten)]
    pub connect: ClusterArgs,
    #[command(subcommand)]
    pub command: GroupCommand,
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List the cluster's groups, one per line: name, state and protocol type.
    List,
    /// Show a group's state, its members with the partitions each is assigned (and, for a KIP-848
    /// consumer-protocol group, the target assignment the broker moves each towards), and per
    /// partition the committed offset, the log end offset and the lag (end - committed; `-` where
    /// nothing is committed).
    Describe {
        /// The group's id.
        group: String,
    },
    /// Delete a group and its committed offsets (DeleteGroups). Only a group without active
    /// members can be deleted.
    Delete {
        /// The group's id.
        group: String,
    },
    /// Move a group's committed offsets for one topic. A dry run that prints the plan unless
    /// given --execute; committing works only while the group has no active members.
    ResetOffsets(ResetOffsetsArgs),
}

#[derive(Debug, Args)]
#[command(group(
    clap::ArgGroup::new("target")
        .required(true)
        .args(["to_earliest", "to_latest", "to_offset", "to_datetime", "shift_by"])
))]
pub struct ResetOffsetsArgs {
    /// The group's id.
    pub group: String,
    /// The topic whose offsets move.
    #[arg(long, short = 't')]
    pub topic: String,
    /// Move only this partition's offset; every partition of the topic otherwise.
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
    /// To each partition's log start offset.
    #[arg(long)]
    pub to_earliest: bool,
    /// To each partition's log end offset (skip everything not yet read).
    #[arg(long)]
    pub to_latest: bool,
    /// To this offset (moved to the start or end of a partition if outside it).
    #[arg(long, value_name = "OFFSET", value_parser = clap::value_parser!(i64).range(0..))]
    pub to_offset: Option<i64>,
    /// To the first record at or after this time, in milliseconds since the Unix epoch (the end
    /// of a partition with no such record).
    #[arg(long, value_name = "TIMESTAMP_MS", value_parser = clap::value_parser!(i64).range(0..))]
    pub to_datetime: Option<i64>,
    /// By N from the committed offset, back if negative (kept within the partition).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub shift_by: Option<i64>,
    /// Commit the new offsets; without it nothing changes and the plan is only printed.
    #[arg(long)]
    pub execute: bool,
}

/// The protocol type of consumer groups; only their assignments are in the consumer protocol.
const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

pub fn run(args: GroupArgs) -> anyhow::Result<()> {
    let connect = &Connection::new(&args.connect)?;
    // A consumer only for its ListOffsets (`offsets_for_times`), which asks for the high
    // watermark only at read_uncommitted (librdkafka's default is read_committed); it has no
    // group.id, so it never looks for a coordinator of its own.
    let consumer: BaseConsumer<CliContext> = connect
        .client_config(&[("enable.auto.commit", "false"), ("isolation.level", "read_uncommitted")])
        .create_with_context(CliContext::default())
        .context("creating the Kafka client")?;
    match args.command {
        GroupCommand::List => list(&consumer, connect),
        GroupCommand::Describe { group } => describe(&consumer, connect, &group),
        GroupCommand::Delete { group } => delete(&consumer, connect, &group),
        GroupCommand::ResetOffsets(reset) => reset_offsets(&consumer, connect, &reset),
    }
}

fn list(consumer: &BaseConsumer<CliContext>, connect: &Connection) -> anyhow::Result<()> {
    let listing = raw::list_groups(consumer.client(), None, connect.timeout())
        .with_context(|| format!("listing the groups of the cluster at {}", connect.brokers()))?;
    if !listing.complete {
        eprintln!(
            "warning: not every broker answered within {} ms; groups may be missing",
            connect.timeout().as_millis()
        );
    }
    let mut groups = listing.groups;
    groups.sort_by(|left, right| left.name.cmp(&right.name));
    for group in &groups {
        if let Some(error) = group.error {
            eprintln!("warning: group {:?}: {error}", group.name);
        }
    }
    print!("{}", list_text(&groups));
    Ok(())
}

fn describe(consumer: &BaseConsumer<CliContext>, connect: &Connection, group: &str) -> anyhow::Result<()> {
    let client = consumer.client();
    let timeout = connect.timeout();
    let info =
        find_group(consumer, connect, group)?.with_context(|| format!("group {group:?} does not exist"))?;
    let committed = raw::list_group_offsets(client, group, timeout)
        .with_context(|| format!("fetching the committed offsets of group {group:?}"))?;

    let mut rows: BTreeMap<(String, i32), PartitionRow> = BTreeMap::new();
    let mut members = Vec::with_capacity(info.members.len());
    for member in &info.members {
        let assignment = if info.protocol_type == CONSUMER_PROTOCOL_TYPE || member.assignment.is_empty() {
            decode_assignment(&member.assignment).map_err(|error| error.to_string())
        } else {
            Err(format!("a {:?} protocol assignment, not a consumer group's", info.protocol_type))
        };
        for (topic, partitions) in assignment.iter().flatten() {
            for &partition in partitions {
                rows.entry((topic.clone(), partition)).or_default().member = Some(member.member_id.clone());
            }
        }
        members.push(MemberView {
            member_id: member.member_id.clone(),
            client_id: member.client_id.clone(),
            host: member.client_host.clone(),
            assignment,
            target: None,
        });
    }
    members.sort_by(|left, right| left.member_id.cmp(&right.member_id));
    // A KIP-848 group also has, per member, the target the broker moves it towards: from
    // ConsumerGroupDescribe (through librdkafka's DescribeConsumerGroups, which does not hand on
    // the member epochs).
    let mut group_type = None;
    if info.protocol_type == CONSUMER_PROTOCOL_TYPE {
        match raw::describe_consumer_group(client, group, timeout) {
            Ok(described) if described.group_type == "consumer" => {
                group_type = Some(described.group_type);
                for member in &mut members {
                    let target = described
                        .members
                        .iter()
                        .find(|other| other.member_id == member.member_id)
                        .and_then(|other| other.target_assignment.as_deref())
                        .map(by_topic);
                    member.target = target;
                }
            }
            Ok(_) => {}
            Err(error) => {
                eprintln!("warning: describing group {group:?} with ConsumerGroupDescribe: {error}")
            }
        }
    }
    for entry in committed {
        if let Some(error) = entry.error {
            eprintln!("warning: committed offset of {} partition {}: {error}", entry.topic, entry.partition);
            continue;
        }
        if entry.offset >= 0 {
            rows.entry((entry.topic, entry.partition)).or_default().committed = Some(entry.offset);
        }
    }

    // Only partitions that exist can be asked for their end: a group keeps the offsets of a
    // deleted topic, and one unknown partition would fail the whole ListOffsets.
    let existing = existing_partitions(consumer, connect)?;
    let wanted: Vec<(String, i32)> = rows.keys().filter(|key| existing.contains(*key)).cloned().collect();
    match offsets_at(consumer, &wanted, ListAt::Latest, timeout) {
        Ok(ends) => {
            for (key, end) in ends {
                if let Some(row) = rows.get_mut(&key) {
                    row.end = end;
                }
            }
        }
        Err(error) => eprintln!("warning: looking up log end offsets: {error:#}"),
    }
    let view = GroupView {
        name: info.name.clone(),
        state: info.state.clone(),
        protocol_type: info.protocol_type.clone(),
        protocol: info.protocol.clone(),
        group_type,
        members,
    };
    let rows: Vec<((String, i32), PartitionRow)> = rows.into_iter().collect();
    print!("{}", describe_text(&view, &rows));
    Ok(())
}

fn delete(consumer: &BaseConsumer<CliContext>, connect: &Connection, group: &str) -> anyhow::Result<()> {
    let info =
        find_group(consumer, connect, group)?.with_context(|| format!("group {group:?} does not exist"))?;
    if is_active(&info) {
        anyhow::bail!(
            "group {group:?} {}; a group can only be deleted once it has no members: stop its \
             consumers and try again",
            activity(&info)
        );
    }
    raw::delete_group(consumer.client(), group, connect.timeout())
        .with_context(|| format!("deleting group {group:?}"))?;
    println!("deleted group {group}");
    Ok(())
}

fn reset_offsets(
    consumer: &BaseConsumer<CliContext>,
    connect: &Connection,
    args: &ResetOffsetsArgs,
) -> anyhow::Result<()> {
    let client = consumer.client();
    let timeout = connect.timeout();
    let (group, topic) = (args.group.as_str(), args.topic.as_str());
    let target = args.target();
    let partitions = super::topic_partitions(client, connect, topic)?;
    let partition_ids = super::chosen_partitions(&partitions, topic, args.partition)?;
    // A group no broker knows is fine: committing creates it, as Kafka's tool does.
    let active = find_group(consumer, connect, group)?.filter(is_active);
    if let (Some(info), true) = (&active, args.execute) {
        anyhow::bail!(
            "group {group:?} {}; offsets can only be reset while a group has no active members \
             (as in Kafka): stop its consumers and try again",
            activity(info)
        );
    }

    let mut committed = BTreeMap::new();
    for entry in raw::list_group_offsets(client, group, timeout)
        .with_context(|| format!("fetching the committed offsets of group {group:?}"))?
    {
        if entry.topic != topic || !partition_ids.contains(&entry.partition) {
            continue;
        }
        if let Some(error) = entry.error {
            anyhow::bail!("the committed offset of {topic} partition {}: {error}", entry.partition);
        }
        if entry.offset >= 0 {
            committed.insert(entry.partition, entry.offset);
        }
    }
    let keys: Vec<(String, i32)> =
        partition_ids.iter().map(|&partition| (topic.to_string(), partition)).collect();
    let earliest = offsets_at(consumer, &keys, ListAt::Earliest, timeout)?;
    let latest = offsets_at(consumer, &keys, ListAt::Latest, timeout)?;
    let at_time = match target {
        ResetTarget::Datetime(timestamp_ms) => {
            offsets_at(consumer, &keys, ListAt::Time(timestamp_ms), timeout)?
        }
        _ => BTreeMap::new(),
    };

    let mut plan = Vec::with_capacity(keys.len());
    for key in &keys {
        let partition = key.1;
        let bounds = match (earliest.get(key).copied().flatten(), latest.get(key).copied().flatten()) {
            (Some(earliest), Some(latest)) => Bounds { earliest, latest },
            _ => anyhow::bail!("no offsets for {topic} partition {partition}: the broker did not say"),
        };
        let current = committed.get(&partition).copied();
        let found = at_time.get(key).copied().flatten();
        let (offset, note) = new_offset(target, current, bounds, found)
            .map_err(|reason| anyhow::anyhow!("{topic} partition {partition}: {reason}"))?;
        if let Some(note) = note {
            eprintln!("warning: {topic} partition {partition}: {note}");
        }
        plan.push(PlanRow { partition, committed: current, new_offset: offset });
    }
    print!("{}", plan_text(topic, &plan));

    if !args.execute {
        if let Some(info) = &active {
            eprintln!(
                "note: group {group:?} {}; --execute is refused until it has no members",
                activity(info)
            );
        }
        println!("dry run: nothing committed; add --execute to commit these offsets");
        return Ok(());
    }
    let offsets: Vec<(String, i32, i64)> =
        plan.iter().map(|row| (topic.to_string(), row.partition, row.new_offset)).collect();
    let outcomes = raw::alter_group_offsets(client, group, &offsets, timeout)
        .with_context(|| format!("committing the offsets of group {group:?}"))?;
    let failures: Vec<String> = outcomes
        .iter()
        .filter_map(|outcome| {
            let error = outcome.error?;
            let hint = if error.is(RDKafkaErrorCode::UnknownMemberId) {
                " (the group has active members: a consumer joined meanwhile)"
            } else {
                ""
            };
            Some(format!("{} partition {}: {error}{hint}", outcome.topic, outcome.partition))
        })
        .collect();
    if !failures.is_empty() {
        anyhow::bail!("committing the offsets of group {group:?}: {}", failures.join("; "));
    }
    println!("committed {} offset{} of group {group}", plan.len(), if plan.len() == 1 { "" } else { "s" });
    Ok(())
}

/// The group as the cluster describes it, or `None` when no broker knows it (or knows it only
/// as Dead, on its way out).
fn find_group(
    consumer: &BaseConsumer<CliContext>,
    connect: &Connection,
    group: &str,
) -> anyhow::Result<Option<GroupInfo>> {
    let listing = raw::list_groups(consumer.client(), Some(group), connect.timeout())
        .with_context(|| format!("looking up group {group:?} on the cluster at {}", connect.brokers()))?;
    let found = listing.groups.into_iter().find(|info| info.name == group);
    match found {
        Some(info) => {
            if let Some(error) = info.error {
                anyhow::bail!("describing group {group:?}: {error}");
            }
            Ok(Some(info).filter(|info| info.state != "Dead"))
        }
        None if !listing.complete => anyhow::bail!(
            "group {group:?} was not found, but not every broker answered within {} ms",
            connect.timeout().as_millis()
        ),
        None => Ok(None),
    }
}

/// Whether the group has members (or is between generations, which only a group with members
/// can be): Kafka accepts administrative commits and DeleteGroups only when it is not.
fn is_active(info: &GroupInfo) -> bool {
    !info.members.is_empty() || !matches!(info.state.as_str(), "Empty" | "Dead")
}

/// "has 2 active members (state Stable)".
fn activity(info: &GroupInfo) -> String {
    let count = info.members.len();
    format!("has {count} active member{} (state {})", if count == 1 { "" } else { "s" }, info.state)
}

/// Every partition of every topic the cluster's metadata lists.
fn existing_partitions(
    consumer: &BaseConsumer<CliContext>,
    connect: &Connection,
) -> anyhow::Result<BTreeSet<(String, i32)>> {
    let metadata = consumer
        .client()
        .fetch_metadata(None, connect.timeout())
        .map_err(|error| super::unreachable(connect, error))?;
    Ok(metadata
        .topics()
        .iter()
        .flat_map(|topic| {
            topic.partitions().iter().map(|partition| (topic.name().to_string(), partition.id()))
        })
        .collect())
}

/// What ListOffsets is asked for.
#[derive(Debug, Clone, Copy)]
enum ListAt {
    /// The log start offset.
    Earliest,
    /// The log end offset (the high watermark, at read_uncommitted).
    Latest,
    /// The first offset whose record's timestamp is at or after this many ms since the epoch.
    Time(i64),
}

/// ListOffsets for `partitions` (one request per leader): each partition's offset, or `None`
/// when the broker has none to give (no record at or after a time).
fn offsets_at(
    consumer: &BaseConsumer<CliContext>,
    partitions: &[(String, i32)],
    at: ListAt,
    timeout: Duration,
) -> anyhow::Result<BTreeMap<(String, i32), Option<i64>>> {
    if partitions.is_empty() {
        return Ok(BTreeMap::new());
    }
    // librdkafka takes the timestamp in the offset field, with Kafka's special timestamps -1
    // (latest) and -2 (earliest), and answers with offsets there.
    let query_offset = match at {
        ListAt::Earliest => Offset::Beginning,
        ListAt::Latest => Offset::End,
        ListAt::Time(timestamp_ms) => Offset::Offset(timestamp_ms),
    };
    let mut query = TopicPartitionList::with_capacity(partitions.len());
    for (topic, partition) in partitions {
        query.add_partition_offset(topic, *partition, query_offset)?;
    }
    let found = consumer.offsets_for_times(query, timeout).context("listing offsets (ListOffsets)")?;
    let mut offsets = BTreeMap::new();
    for element in found.elements() {
        element.error().with_context(|| {
            format!("listing offsets of {} partition {}", element.topic(), element.partition())
        })?;
        let offset = match element.offset() {
            Offset::Offset(offset) => Some(offset),
            _ => None,
        };
        offsets.insert((element.topic().to_string(), element.partition()), offset);
    }
    Ok(offsets)
}

impl ResetOffsetsArgs {
    /// The one `--to-*` or `--shift-by` flag given (clap requires exactly one).
    fn target(&self) -> ResetTarget {
        match (self.to_offset, self.to_datetime, self.shift_by) {
            (Some(offset), _, _) => ResetTarget::Offset(offset),
            (_, Some(timestamp_ms), _) => ResetTarget::Datetime(timestamp_ms),
            (_, _, Some(delta)) => ResetTarget::ShiftBy(delta),
            _ if self.to_latest => ResetTarget::Latest,
            _ => ResetTarget::Earliest,
        }
    }
}

/// Where `reset-offsets` moves each partition's committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResetTarget {
    /// The log start offset.
    Earliest,
    /// The log end offset.
    Latest,
    /// This offset, moved into the partition's range if outside it.
    Offset(i64),
    /// The first record at or after this many ms since the Unix epoch; the end if none is.
    Datetime(i64),
    /// The committed offset plus this (which may be negative), moved into range.
    ShiftBy(i64),
}

/// A partition's offsets: from its log start offset to its log end offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bounds {
    earliest: i64,
    latest: i64,
}

/// The new committed offset of one partition, and a warning when it had to be moved into the
/// partition's range (as Kafka's tool does); an error when there is none (`--shift-by` of a
/// partition without a committed offset). `at_time` is the ListOffsets answer for
/// `--to-datetime`: `None` when no record is that recent.
fn new_offset(
    target: ResetTarget,
    committed: Option<i64>,
    bounds: Bounds,
    at_time: Option<i64>,
) -> Result<(i64, Option<String>), String> {
    let wanted = match target {
        ResetTarget::Earliest => return Ok((bounds.earliest, None)),
        ResetTarget::Latest => return Ok((bounds.latest, None)),
        ResetTarget::Datetime(_) => {
            return Ok(match at_time {
                Some(offset) => (offset, None),
                None => (
                    bounds.latest,
                    Some(format!(
                        "no record at or after that time; using the log end offset {}",
                        bounds.latest
                    )),
                ),
            })
        }
        ResetTarget::Offset(offset) => offset,
        ResetTarget::ShiftBy(delta) => match committed {
            Some(committed) => committed.saturating_add(delta),
            None => return Err("no committed offset to shift".to_string()),
        },
    };
    Ok(if wanted < bounds.earliest {
        (
            bounds.earliest,
            Some(format!("offset {wanted} is before the log start offset {}; using that", bounds.earliest)),
        )
    } else if wanted > bounds.latest {
        (
            bounds.latest,
            Some(format!("offset {wanted} is past the log end offset {}; using that", bounds.latest)),
        )
    } else {
        (wanted, None)
    })
}

/// A member as `describe` shows it.
#[derive(Debug)]
struct MemberView {
    member_id: String,
    client_id: String,
    host: String,
    /// The decoded assignment, or why it could not be decoded.
    assignment: Result<Vec<(String, Vec<i32>)>, String>,
    /// KIP-848 consumer groups: the assignment the broker is moving the member towards.
    target: Option<Vec<(String, Vec<i32>)>>,
}

/// A group as `describe` shows it.
#[derive(Debug)]
struct GroupView {
    name: String,
    state: String,
    protocol_type: String,
    protocol: String,
    /// "consumer" for a group of KIP-848's protocol; `None` for a classic one.
    group_type: Option<String>,
    members: Vec<MemberView>,
}

/// One partition line of `describe`: a partition some member is assigned or the group has an
/// offset committed for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct PartitionRow {
    committed: Option<i64>,
    /// The log end offset; `None` if the partition no longer exists or the lookup failed.
    end: Option<i64>,
    /// The member assigned the partition.
    member: Option<String>,
}

/// One partition line of the `reset-offsets` plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PlanRow {
    partition: i32,
    committed: Option<i64>,
    new_offset: i64,
}

/// `group list`: one line per group (name, state, protocol type), in columns.
fn list_text(groups: &[GroupInfo]) -> String {
    let rows: Vec<Vec<String>> = groups
        .iter()
        .map(|group| vec![group.name.clone(), or_dash(&group.state), or_dash(&group.protocol_type)])
        .collect();
    columns(&rows)
}

/// `group describe`: a summary line, the members and their partitions, then per partition the
/// committed offset, the log end offset, the lag (end - committed) and the member.
fn describe_text(group: &GroupView, rows: &[((String, i32), PartitionRow)]) -> String {
    let count = group.members.len();
    let protocol = match (group.protocol_type.as_str(), group.protocol.as_str()) {
        ("", _) => String::new(),
        (protocol_type, "") => format!(", protocol {protocol_type}"),
        (protocol_type, protocol) => format!(", protocol {protocol_type}/{protocol}"),
    };
    let group_type = group.group_type.as_ref().map(|kind| format!(", type {kind}")).unwrap_or_default();
    let mut text = format!(
        "group {}: state {}{protocol}{group_type}, {count} member{}\n",
        group.name,
        group.state,
        if count == 1 { "" } else { "s" }
    );
    if !group.members.is_empty() {
        let with_target = group.members.iter().any(|member| member.target.is_some());
        let mut header = vec!["MEMBER", "CLIENT-ID", "HOST", "PARTITIONS"];
        if with_target {
            header.push("TARGET");
        }
        let mut table = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
        for member in &group.members {
            let partitions = match &member.assignment {
                Ok(topics) => partitions_text(topics),
                Err(reason) => format!("({reason})"),
            };
            let mut line =
                vec![member.member_id.clone(), or_dash(&member.client_id), or_dash(&member.host), partitions];
            if with_target {
                line.push(member.target.as_deref().map_or_else(|| "-".to_string(), partitions_text));
            }
            table.push(line);
        }
        text.push('\n');
        text.push_str(&columns(&table));
    }
    text.push('\n');
    if rows.is_empty() {
        text.push_str("no committed offsets and no assigned partitions\n");
        return text;
    }
    let mut table =
        vec![["TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "MEMBER"].map(String::from).to_vec()];
    for ((topic, partition), row) in rows {
        let lag = match (row.committed, row.end) {
            (Some(committed), Some(end)) => (end - committed).to_string(),
            _ => "-".to_string(),
        };
        table.push(vec![
            topic.clone(),
            partition.to_string(),
            optional(row.committed),
            optional(row.end),
            lag,
            row.member.clone().unwrap_or_else(|| "-".to_string()),
        ]);
    }
    text.push_str(&columns(&table));
    text
}

/// `topic:0,1 other:3`, or `-` for none.
fn partitions_text(topics: &[(String, Vec<i32>)]) -> String {
    if topics.iter().all(|(_, partitions)| partitions.is_empty()) {
        return "-".to_string();
    }
    topics
        .iter()
        .filter(|(_, partitions)| !partitions.is_empty())
        .map(|(topic, partitions)| {
            let ids: Vec<String> = partitions.iter().map(i32::to_string).collect();
            format!("{topic}:{}", ids.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// (topic, partition) pairs grouped by topic, topics in order of first appearance, partitions
/// sorted.
fn by_topic(partitions: &[(String, i32)]) -> Vec<(String, Vec<i32>)> {
    let mut topics: Vec<(String, Vec<i32>)> = Vec::new();
    for (topic, partition) in partitions {
        match topics.iter_mut().find(|(name, _)| name == topic) {
            Some((_, ids)) => ids.push(*partition),
            None => topics.push((topic.clone(), vec![*partition])),
        }
    }
    for (_, ids) in &mut topics {
        ids.sort_unstable();
    }
    topics
}

/// The `reset-offsets` plan: per partition, the committed offset now and the new one.
fn plan_text(topic: &str, plan: &[PlanRow]) -> String {
    let mut table = vec![["TOPIC", "PARTITION", "COMMITTED", "NEW-OFFSET"].map(String::from).to_vec()];
    for row in plan {
        table.push(vec![
            topic.to_string(),
            row.partition.to_string(),
            optional(row.committed),
            row.new_offset.to_string(),
        ]);
    }
    columns(&table)
}

/// Rows as left-aligned columns two spaces apart; the last column is not padded.
fn columns(rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (index, cell) in row.iter().enumerate() {
            let width = cell.chars().count();
            match widths.get_mut(index) {
                Some(known) => *known = (*known).max(width),
                None => widths.push(width),
            }
        }
    }
    let mut text = String::new();
    for row in rows {
        let mut line = String::new();
        for (index, cell) in row.iter().enumerate() {
            if index + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ", width = widths[index]);
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

fn optional(value: Option<i64>) -> String {
    value.map_or_else(|| "-".to_string(), |value| value.to_string())
}

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".to_string()
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_offset_follows_the_target_and_stays_in_range() {
        let bounds = Bounds { earliest: 5, latest: 20 };
        let check = |target, committed, at_time, expected: Result<(i64, Option<&str>), &str>| {
            let expected =
                expected.map(|(offset, note)| (offset, note.map(str::to_string))).map_err(str::to_string);
            assert_eq!(new_offset(target, committed, bounds, at_time), expected, "{target:?} {committed:?}");
        };
        check(ResetTarget::Earliest, Some(10), None, Ok((5, None)));
        check(ResetTarget::Latest, None, None, Ok((20, None)));
        check(ResetTarget::Offset(12), None, None, Ok((12, None)));
        check(ResetTarget::Offset(20), None, None, Ok((20, None)));
        check(
            ResetTarget::Offset(21),
            None,
            None,
            Ok((20, Some("offset 21 is past the log end offset 20; using that"))),
        );
        check(
            ResetTarget::Offset(0),
            None,
            None,
            Ok((5, Some("offset 0 is before the log start offset 5; using that"))),
        );
        check(ResetTarget::ShiftBy(-2), Some(10), None, Ok((8, None)));
        check(ResetTarget::ShiftBy(3), Some(10), None, Ok((13, None)));
        check(
            ResetTarget::ShiftBy(-9),
            Some(10),
            None,
            Ok((5, Some("offset 1 is before the log start offset 5; using that"))),
        );
        check(
            ResetTarget::ShiftBy(i64::MAX),
            Some(10),
            None,
            Ok((20, Some(&format!("offset {} is past the log end offset 20; using that", i64::MAX)))),
        );
        check(ResetTarget::ShiftBy(1), None, None, Err("no committed offset to shift"));
        check(ResetTarget::Datetime(1_700_000_000_000), None, Some(7), Ok((7, None)));
        check(
            ResetTarget::Datetime(1_700_000_000_000),
            None,
            None,
            Ok((20, Some("no record at or after that time; using the log end offset 20"))),
        );
    }

    #[test]
    fn describe_text_shows_members_then_partitions_with_lag() {
        let group = GroupView {
            name: "billing".to_string(),
            state: "Stable".to_string(),
            protocol_type: "consumer".to_string(),
            protocol: "range".to_string(),
            group_type: None,
            members: vec![
                MemberView {
                    member_id: "m-1".to_string(),
                    client_id: "worker".to_string(),
                    host: "/127.0.0.1".to_string(),
                    assignment: Ok(vec![("events".to_string(), vec![0, 1]), ("audit".to_string(), vec![0])]),
                    target: None,
                },
                MemberView {
                    member_id: "m-22".to_string(),
                    client_id: String::new(),
                    host: "/10.0.0.7".to_string(),
                    assignment: Err("assignment version -1".to_string()),
                    target: None,
                },
            ],
        };
        let row = |committed, end, member: Option<&str>| PartitionRow {
            committed,
            end,
            member: member.map(str::to_string),
        };
        let rows = vec![
            (("audit".to_string(), 0), row(None, Some(3), Some("m-1"))),
            (("events".to_string(), 0), row(Some(4), Some(10), Some("m-1"))),
            (("events".to_string(), 1), row(Some(7), Some(7), Some("m-1"))),
            (("gone".to_string(), 12), row(Some(100), None, None)),
        ];
        assert_eq!(
            describe_text(&group, &rows),
            "group billing: state Stable, protocol consumer/range, 2 members\n\
             \n\
             MEMBER  CLIENT-ID  HOST        PARTITIONS\n\
             m-1     worker     /127.0.0.1  events:0,1 audit:0\n\
             m-22    -          /10.0.0.7   (assignment version -1)\n\
             \n\
             TOPIC   PARTITION  COMMITTED  END  LAG  MEMBER\n\
             audit   0          -          3    -    m-1\n\
             events  0          4          10   6    m-1\n\
             events  1          7          7    0    m-1\n\
             gone    12         100        -    -    -\n"
        );
        let empty = GroupView {
            name: "idle".to_string(),
            state: "Empty".to_string(),
            protocol_type: String::new(),
            protocol: String::new(),
            group_type: None,
            members: vec![],
        };
        assert_eq!(
            describe_text(&empty, &[]),
            "group idle: state Empty, 0 members\n\nno committed offsets and no assigned partitions\n"
        );
    }

    #[test]
    fn describe_text_shows_a_consumer_groups_type_and_each_members_target() {
        let member = |id: &str, partitions: Vec<i32>, target: Vec<(&str, i32)>| MemberView {
            member_id: id.to_string(),
            client_id: "worker".to_string(),
            host: "/127.0.0.1".to_string(),
            assignment: Ok(vec![("events".to_string(), partitions)]),
            target: Some(by_topic(
                &target
                    .into_iter()
                    .map(|(topic, partition)| (topic.to_string(), partition))
                    .collect::<Vec<_>>(),
            )),
        };
        let group = GroupView {
            name: "billing".to_string(),
            state: "Reconciling".to_string(),
            protocol_type: "consumer".to_string(),
            protocol: "uniform".to_string(),
            group_type: Some("consumer".to_string()),
            members: vec![
                member("a", vec![0, 1], vec![("events", 1), ("events", 0)]),
                member("b", vec![], vec![("events", 2)]),
            ],
        };
        let text = describe_text(&group, &[]);
        assert_eq!(
            text.lines().take(5).collect::<Vec<_>>(),
            [
                "group billing: state Reconciling, protocol consumer/uniform, type consumer, 2 members",
                "",
                "MEMBER  CLIENT-ID  HOST        PARTITIONS  TARGET",
                "a       worker     /127.0.0.1  events:0,1  events:0,1",
                "b       worker     /127.0.0.1  -           events:2",
            ]
        );
    }

    #[test]
    fn plan_and_list_are_columns() {
        let plan = [
            PlanRow { partition: 0, committed: Some(4), new_offset: 2 },
            PlanRow { partition: 10, committed: None, new_offset: 0 },
        ];
        assert_eq!(
            plan_text("events", &plan),
            "TOPIC   PARTITION  COMMITTED  NEW-OFFSET\n\
             events  0          4          2\n\
             events  10         -          0\n"
        );
        let group = |name: &str, state: &str, protocol_type: &str| GroupInfo {
            name: name.to_string(),
            error: None,
            state: state.to_string(),
            protocol_type: protocol_type.to_string(),
            protocol: String::new(),
            members: vec![],
        };
        assert_eq!(
            list_text(&[group("billing", "Stable", "consumer"), group("old", "Empty", "")]),
            "billing  Stable  consumer\nold      Empty   -\n"
        );
        assert_eq!(list_text(&[]), "");
    }
}
