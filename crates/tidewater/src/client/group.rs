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
//! transactions and their markers. Assignments are decoded from the consumer protocol's bytes
//! here ([`decode_assignment`]); the group requests go through [`super::admin`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::admin::{self as raw, GroupInfo};
use super::{client_config, CliContext};
use crate::cli::{ConnectArgs, GroupArgs, GroupCommand, ResetOffsetsArgs};

/// The protocol type of consumer groups; only their assignments are in the consumer protocol.
const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

pub(crate) fn run(args: GroupArgs) -> anyhow::Result<()> {
    let connect = &args.connect;
    let mut config = client_config(connect);
    // A consumer only for its ListOffsets (`offsets_for_times`), which asks for the high
    // watermark only at read_uncommitted (librdkafka's default is read_committed); it has no
    // group.id, so it never looks for a coordinator of its own.
    config.set("enable.auto.commit", "false").set("isolation.level", "read_uncommitted");
    for property in &connect.properties {
        config.set(&property.key, &property.value);
    }
    let consumer: BaseConsumer<CliContext> =
        config.create_with_context(CliContext::default()).context("creating the Kafka client")?;
    match args.command {
        GroupCommand::List => list(&consumer, connect),
        GroupCommand::Describe { group } => describe(&consumer, connect, &group),
        GroupCommand::Delete { group } => delete(&consumer, connect, &group),
        GroupCommand::ResetOffsets(reset) => reset_offsets(&consumer, connect, &reset),
    }
}

fn list(consumer: &BaseConsumer<CliContext>, connect: &ConnectArgs) -> anyhow::Result<()> {
    let listing = raw::list_groups(consumer.client(), None, connect.timeout())
        .with_context(|| format!("listing the groups of the cluster at {}", connect.brokers))?;
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

fn describe(consumer: &BaseConsumer<CliContext>, connect: &ConnectArgs, group: &str) -> anyhow::Result<()> {
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
        });
    }
    members.sort_by(|left, right| left.member_id.cmp(&right.member_id));
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
        members,
    };
    let rows: Vec<((String, i32), PartitionRow)> = rows.into_iter().collect();
    print!("{}", describe_text(&view, &rows));
    Ok(())
}

fn delete(consumer: &BaseConsumer<CliContext>, connect: &ConnectArgs, group: &str) -> anyhow::Result<()> {
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
    connect: &ConnectArgs,
    args: &ResetOffsetsArgs,
) -> anyhow::Result<()> {
    let client = consumer.client();
    let timeout = connect.timeout();
    let (group, topic) = (args.group.as_str(), args.topic.as_str());
    let target = args.target();
    let partitions = super::topic_partitions(client, connect, topic)?;
    let partition_ids: Vec<i32> = match args.partition {
        Some(partition) => {
            anyhow::ensure!(
                partitions.iter().any(|known| known.id == partition),
                "topic {topic:?} has no partition {partition} (it has {} partitions)",
                partitions.len()
            );
            vec![partition]
        }
        None => partitions.iter().map(|partition| partition.id).collect(),
    };
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
    connect: &ConnectArgs,
    group: &str,
) -> anyhow::Result<Option<GroupInfo>> {
    let listing = raw::list_groups(consumer.client(), Some(group), connect.timeout())
        .with_context(|| format!("looking up group {group:?} on the cluster at {}", connect.brokers))?;
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
    connect: &ConnectArgs,
) -> anyhow::Result<BTreeSet<(String, i32)>> {
    let metadata = consumer.client().fetch_metadata(None, connect.timeout()).map_err(|error| {
        anyhow::anyhow!(
            "no answer from the cluster at {} within {} ms: {error}",
            connect.brokers,
            connect.timeout().as_millis()
        )
    })?;
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

/// Why a consumer-protocol assignment could not be decoded; offsets are byte positions.
#[derive(Debug, Clone, PartialEq, Eq)]
enum AssignmentError {
    Truncated { offset: usize, need: usize, have: usize },
    NegativeVersion(i16),
    NegativeCount { offset: usize, count: i32 },
    TopicNotUtf8 { offset: usize },
}

impl std::fmt::Display for AssignmentError {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AssignmentError::Truncated { offset, need, have } => {
                write!(formatter, "assignment cut short at byte {offset}: need {need} bytes, have {have}")
            }
            AssignmentError::NegativeVersion(version) => write!(formatter, "assignment version {version}"),
            AssignmentError::NegativeCount { offset, count } => {
                write!(formatter, "assignment array of {count} entries at byte {offset}")
            }
            AssignmentError::TopicNotUtf8 { offset } => {
                write!(formatter, "assignment topic name at byte {offset} is not UTF-8")
            }
        }
    }
}

/// The partitions of a consumer group member's assignment: Kafka's ConsumerProtocolAssignment,
/// `version: i16, [topic: string (i16 length), [partition: i32]], user_data: bytes`, big-endian.
/// Versions 0 to 3 share that layout and later ones may only append fields, so any version is
/// read this far and the rest (user data, future fields) is ignored, as Kafka's clients do.
/// Empty bytes (a member between generations) assign nothing.
///
/// Nothing is allocated for an announced count: entries are read one at a time, each checked
/// against the bytes left, so a huge count in a short buffer fails at the first missing entry.
fn decode_assignment(bytes: &[u8]) -> Result<Vec<(String, Vec<i32>)>, AssignmentError> {
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let mut reader = Reader { bytes, offset: 0 };
    let version = i16::from_be_bytes(reader.take()?);
    if version < 0 {
        return Err(AssignmentError::NegativeVersion(version));
    }
    let topic_count = reader.count()?;
    let mut topics = Vec::new();
    for _ in 0..topic_count {
        let name_offset = reader.offset;
        let name_length = i16::from_be_bytes(reader.take()?);
        let name_length = usize::try_from(name_length).map_err(|_| AssignmentError::NegativeCount {
            offset: name_offset,
            count: i32::from(name_length),
        })?;
        let name = std::str::from_utf8(reader.slice(name_length)?)
            .map_err(|_| AssignmentError::TopicNotUtf8 { offset: name_offset })?
            .to_string();
        let partition_count = reader.count()?;
        let mut partitions = Vec::new();
        for _ in 0..partition_count {
            partitions.push(i32::from_be_bytes(reader.take()?));
        }
        topics.push((name, partitions));
    }
    Ok(topics)
}

/// A cursor over the assignment bytes that reports where it ran out.
struct Reader<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Reader<'a> {
    fn slice(&mut self, length: usize) -> Result<&'a [u8], AssignmentError> {
        let have = self.bytes.len() - self.offset;
        if length > have {
            return Err(AssignmentError::Truncated { offset: self.offset, need: length, have });
        }
        let slice = &self.bytes[self.offset..self.offset + length];
        self.offset += length;
        Ok(slice)
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], AssignmentError> {
        let mut array = [0; N];
        array.copy_from_slice(self.slice(N)?);
        Ok(array)
    }

    /// An array's i32 element count; a null array (-1) is refused, as the field is not nullable.
    fn count(&mut self) -> Result<u32, AssignmentError> {
        let offset = self.offset;
        let count = i32::from_be_bytes(self.take()?);
        u32::try_from(count).map_err(|_| AssignmentError::NegativeCount { offset, count })
    }
}

/// A member as `describe` shows it.
#[derive(Debug)]
struct MemberView {
    member_id: String,
    client_id: String,
    host: String,
    /// The decoded assignment, or why it could not be decoded.
    assignment: Result<Vec<(String, Vec<i32>)>, String>,
}

/// A group as `describe` shows it.
#[derive(Debug)]
struct GroupView {
    name: String,
    state: String,
    protocol_type: String,
    protocol: String,
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
    let mut text = format!(
        "group {}: state {}{protocol}, {count} member{}\n",
        group.name,
        group.state,
        if count == 1 { "" } else { "s" }
    );
    if !group.members.is_empty() {
        let mut table = vec![["MEMBER", "CLIENT-ID", "HOST", "PARTITIONS"].map(String::from).to_vec()];
        for member in &group.members {
            let partitions = match &member.assignment {
                Ok(topics) if topics.iter().all(|(_, partitions)| partitions.is_empty()) => "-".to_string(),
                Ok(topics) => topics
                    .iter()
                    .filter(|(_, partitions)| !partitions.is_empty())
                    .map(|(topic, partitions)| {
                        let ids: Vec<String> = partitions.iter().map(i32::to_string).collect();
                        format!("{topic}:{}", ids.join(","))
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                Err(reason) => format!("({reason})"),
            };
            table.push(vec![
                member.member_id.clone(),
                or_dash(&member.client_id),
                or_dash(&member.host),
                partitions,
            ]);
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

    /// A ConsumerProtocolAssignment as Kafka's clients encode it.
    fn encode_assignment(version: i16, topics: &[(&str, &[i32])], user_data: &[u8]) -> Vec<u8> {
        let mut bytes = version.to_be_bytes().to_vec();
        bytes.extend((topics.len() as i32).to_be_bytes());
        for (topic, partitions) in topics {
            bytes.extend((topic.len() as i16).to_be_bytes());
            bytes.extend(topic.as_bytes());
            bytes.extend((partitions.len() as i32).to_be_bytes());
            for partition in *partitions {
                bytes.extend(partition.to_be_bytes());
            }
        }
        bytes.extend((user_data.len() as i32).to_be_bytes());
        bytes.extend(user_data);
        bytes
    }

    #[test]
    fn decode_assignment_reads_every_version_and_ignores_what_follows() {
        let check = |bytes: &[u8], expected: Result<Vec<(&str, Vec<i32>)>, AssignmentError>| {
            let expected = expected.map(|topics| {
                topics.into_iter().map(|(topic, partitions)| (topic.to_string(), partitions)).collect()
            });
            assert_eq!(decode_assignment(bytes), expected, "{bytes:?}");
        };
        check(&[], Ok(vec![]));
        check(&encode_assignment(0, &[], &[]), Ok(vec![]));
        check(
            &encode_assignment(0, &[("events", &[0, 2]), ("audit", &[1])], &[]),
            Ok(vec![("events", vec![0, 2]), ("audit", vec![1])]),
        );
        check(&encode_assignment(3, &[("events", &[5])], b"sticky state"), Ok(vec![("events", vec![5])]));
        // A future version that appends a field after the user data.
        let mut future = encode_assignment(7, &[("t", &[])], &[]);
        future.extend([1, 2, 3]);
        check(&future, Ok(vec![("t", vec![])]));
        // librdkafka's encoding of "no user data" is a null (-1 length); it is never read.
        let mut null_user_data = encode_assignment(1, &[("t", &[0])], &[]);
        let length_at = null_user_data.len() - 4;
        null_user_data[length_at..].copy_from_slice(&(-1i32).to_be_bytes());
        check(&null_user_data, Ok(vec![("t", vec![0])]));
    }

    #[test]
    fn decode_assignment_reports_where_bad_bytes_are() {
        let good = encode_assignment(0, &[("events", &[0, 1])], &[]);
        // Cut inside the second partition id: it starts at byte 2 + 4 + 2 + 6 + 4 + 4 = 22.
        assert_eq!(
            decode_assignment(&good[..24]),
            Err(AssignmentError::Truncated { offset: 22, need: 4, have: 2 })
        );
        assert_eq!(decode_assignment(&[0]), Err(AssignmentError::Truncated { offset: 0, need: 2, have: 1 }));
        assert_eq!(decode_assignment(&(-1i16).to_be_bytes()), Err(AssignmentError::NegativeVersion(-1)));
        let mut negative = 0i16.to_be_bytes().to_vec();
        negative.extend((-1i32).to_be_bytes());
        assert_eq!(
            decode_assignment(&negative),
            Err(AssignmentError::NegativeCount { offset: 2, count: -1 })
        );
        // A huge announced count with no entries behind it fails at the first entry.
        let mut huge = 0i16.to_be_bytes().to_vec();
        huge.extend(i32::MAX.to_be_bytes());
        assert_eq!(decode_assignment(&huge), Err(AssignmentError::Truncated { offset: 6, need: 2, have: 0 }));
        let mut not_utf8 = encode_assignment(0, &[("ab", &[])], &[]);
        not_utf8[8] = 0xff;
        assert_eq!(decode_assignment(&not_utf8), Err(AssignmentError::TopicNotUtf8 { offset: 6 }));
        assert_eq!(
            AssignmentError::Truncated { offset: 22, need: 4, have: 2 }.to_string(),
            "assignment cut short at byte 22: need 4 bytes, have 2"
        );
    }

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
            members: vec![
                MemberView {
                    member_id: "m-1".to_string(),
                    client_id: "worker".to_string(),
                    host: "/127.0.0.1".to_string(),
                    assignment: Ok(vec![("events".to_string(), vec![0, 1]), ("audit".to_string(), vec![0])]),
                },
                MemberView {
                    member_id: "m-22".to_string(),
                    client_id: String::new(),
                    host: "/10.0.0.7".to_string(),
                    assignment: Err("assignment version -1".to_string()),
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
            members: vec![],
        };
        assert_eq!(
            describe_text(&empty, &[]),
            "group idle: state Empty, 0 members\n\nno committed offsets and no assigned partitions\n"
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
