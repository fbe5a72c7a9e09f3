//! `tidewater trigger`: register, inspect and run triggers on any Kafka-compatible cluster.
//!
//! Registration commands (`create`, `apply`, `pause`, `resume`, `delete`) write to the triggers
//! topic; every runner (the one inside `tidewater serve`, or `tidewater trigger run`) follows it.
//! `list` and `describe` read the definitions and the runners' latest status records. The logic
//! lives in `tidewater_jobs::trigger`; this module turns flags into definitions and prints.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tidewater_client::cloudevents::HttpMode;
use tidewater_client::{now_ms, ClusterArgs, ClusterConfig, KeyValue};
use tidewater_jobs::trigger::definition::{BatchSettings, StartFrom};
use tidewater_jobs::trigger::registry::{StatusRecord, STATUS_STALE_MS};
use tidewater_jobs::trigger::retry::RetryPolicy;
use tidewater_jobs::trigger::signature::SigningKey;
use tidewater_jobs::trigger::{Action, DefinitionSource, Registry, SupervisorOptions, TriggerDefinition};

use tidewater_cli::Connection;

#[derive(Debug, Args)]
pub(crate) struct TriggerArgs {
    #[command(flatten)]
    pub(crate) connect: ClusterArgs,
    #[command(subcommand)]
    pub(crate) command: TriggerCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TriggerCommand {
    /// Register a trigger: an action for every event of a topic (one of --webhook, --command,
    /// --device-command). Runners pick it up within a second.
    Create(Box<CreateArgs>),
    /// Register every trigger in a JSON file (an array of definitions, the format `describe
    /// --json` prints), replacing those with the same names.
    Apply {
        /// The definitions file.
        file: PathBuf,
    },
    /// List triggers with their state and counters.
    List,
    /// Show a trigger's definition (secrets hidden) and each runner's state and counters.
    Describe {
        name: String,
        /// Print the definition as JSON (with its secret), as `apply` reads it.
        #[arg(long)]
        json: bool,
    },
    /// Stop delivering; the committed offsets stay, so `resume` carries on where it stopped.
    Pause { name: String },
    /// Start delivering again (also after the receiver disabled the trigger with 410 Gone).
    Resume { name: String },
    /// Remove a trigger. Its consumer group's offsets stay until `tidewater group delete`.
    Delete { name: String },
    /// Run triggers in this process until Ctrl-C or SIGTERM: those registered in the cluster, or
    /// those of a config file. Run several instances to share the work (one consumer group per
    /// trigger).
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// The trigger's name (letters, digits, '.', '_', '-').
    name: String,
    /// The topic whose events fire the trigger.
    #[arg(long, short = 't')]
    topic: String,
    /// POST each event to this URL as a CloudEvent.
    #[arg(long, value_name = "URL", group = "action")]
    webhook: Option<String>,
    /// Run this program for each event, with the event's value on stdin (see --arg).
    #[arg(long, value_name = "PROGRAM", group = "action")]
    command: Option<String>,
    /// Send each event to a device as a command (a record keyed by device id on --commands-topic).
    #[arg(long, group = "action")]
    device_command: bool,
    /// Webhook: CloudEvents HTTP mode.
    #[arg(long, value_enum, default_value_t = ModeArg::Binary)]
    mode: ModeArg,
    /// Webhook: sign requests the Standard Webhooks way with this whsec_ secret.
    #[arg(long, conflicts_with = "generate_secret")]
    secret: Option<String>,
    /// Webhook: make up a signing secret and print it.
    #[arg(long)]
    generate_secret: bool,
    /// Webhook: an extra request header, NAME=VALUE; may be repeated.
    #[arg(long = "header", value_name = "NAME=VALUE")]
    headers: Vec<KeyValue>,
    /// Command: an argument for the program; may be repeated.
    #[arg(long = "arg", value_name = "ARG", allow_hyphen_values = true)]
    args: Vec<String>,
    /// Webhook and command: milliseconds one attempt may take.
    #[arg(long, default_value_t = 10_000)]
    action_timeout_ms: u64,
    /// Device command: the commands topic.
    #[arg(long, default_value = "commands")]
    commands_topic: String,
    /// Device command: where the device id is: key, header:NAME or field:PATH.
    #[arg(long, default_value = "key")]
    device: String,
    /// Fire only for events matching this condition, e.g. "value.temperature > 70".
    #[arg(long)]
    filter: Option<String>,
    /// Deliveries in flight at once (events of one key always go one at a time).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Attempts per event before it goes to the dead-letter topic.
    #[arg(long, default_value_t = RetryPolicy::default().max_attempts)]
    max_attempts: u32,
    #[arg(long, default_value_t = RetryPolicy::default().initial_backoff_ms)]
    initial_backoff_ms: u64,
    #[arg(long, default_value_t = RetryPolicy::default().max_backoff_ms)]
    max_backoff_ms: u64,
    /// Deliver up to this many events per request (a CloudEvents batch).
    #[arg(long)]
    batch_max_events: Option<usize>,
    /// With batching: send a partial batch after this many milliseconds.
    #[arg(long, default_value_t = 100)]
    batch_max_wait_ms: u64,
    /// Where refused and exhausted events go (default TOPIC.NAME.dead-letter).
    #[arg(long)]
    dead_letter_topic: Option<String>,
    /// The consumer group (default tidewater-trigger-NAME).
    #[arg(long)]
    group_id: Option<String>,
    /// earliest: also the events already in the topic; latest: only events produced after this
    /// command returns.
    #[arg(long, value_enum, default_value_t = FromArg::Latest)]
    from: FromArg,
    /// Register the trigger paused.
    #[arg(long)]
    paused: bool,
    /// Replace a trigger of the same name instead of failing.
    #[arg(long)]
    replace: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    Binary,
    Structured,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FromArg {
    Earliest,
    Latest,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Run the triggers of this JSON file instead of those registered in the cluster.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Run only this trigger; may be repeated.
    #[arg(long = "name")]
    names: Vec<String>,
    /// This instance's name in status records (default: host name and process id).
    #[arg(long)]
    instance: Option<String>,
    #[command(flatten)]
    admin: crate::admin::AdminArgs,
}

pub(crate) fn run(args: TriggerArgs) -> anyhow::Result<()> {
    let connect = Connection::new(&args.connect)?;
    let cluster = connect.cluster.clone();
    let registry = Registry::new(cluster.clone(), connect.timeout());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tidewater-trigger")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match args.command {
            TriggerCommand::Create(create) => create_trigger(&registry, &connect, *create).await,
            TriggerCommand::Apply { file } => {
                let definitions = read_definitions(&file)?;
                registry.ensure_topics().await?;
                for definition in &definitions {
                    registry.put(definition).await?;
                    println!("applied trigger {}", definition.name);
                }
                Ok(())
            }
            TriggerCommand::List => list(&registry),
            TriggerCommand::Describe { name, json } => describe(&registry, &name, json),
            TriggerCommand::Pause { name } => {
                let mut definition = registry.get(&name)?;
                definition.paused = true;
                registry.put(&definition).await?;
                println!("paused trigger {name}");
                Ok(())
            }
            TriggerCommand::Resume { name } => {
                let mut definition = registry.get(&name)?;
                definition.paused = false;
                definition.disabled_reason = None;
                registry.put(&definition).await?;
                println!("resumed trigger {name}");
                Ok(())
            }
            TriggerCommand::Delete { name } => {
                let definition = registry.get(&name)?;
                registry.delete(&name).await?;
                println!(
                    "deleted trigger {name}; its consumer group {} keeps its offsets until `tidewater group delete`",
                    definition.group_id()
                );
                Ok(())
            }
            TriggerCommand::Run(run) => run_triggers(cluster, &connect, run).await,
        }
    })
}

fn read_definitions(file: &PathBuf) -> anyhow::Result<Vec<TriggerDefinition>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let definitions: Vec<TriggerDefinition> = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a JSON array of trigger definitions", file.display()))?;
    let mut names = std::collections::HashSet::new();
    for definition in &definitions {
        definition
            .validate()
            .map_err(|error| anyhow::anyhow!("{}: trigger {}: {error}", file.display(), definition.name))?;
        anyhow::ensure!(
            names.insert(&definition.name),
            "{}: trigger {} appears twice",
            file.display(),
            definition.name
        );
    }
    Ok(definitions)
}

async fn create_trigger(registry: &Registry, connect: &Connection, create: CreateArgs) -> anyhow::Result<()> {
    let mut printed_secret = None;
    let action = if let Some(url) = create.webhook {
        let secret = if create.generate_secret {
            let secret = SigningKey::generate();
            printed_secret = Some(secret.clone());
            Some(secret)
        } else {
            create.secret
        };
        Action::Webhook {
            url,
            mode: match create.mode {
                ModeArg::Binary => HttpMode::Binary,
                ModeArg::Structured => HttpMode::Structured,
            },
            secret,
            timeout_ms: create.action_timeout_ms,
            headers: create
                .headers
                .into_iter()
                .map(|header| (header.key, header.value))
                .collect::<BTreeMap<_, _>>(),
        }
    } else if let Some(program) = create.command {
        Action::Command { program, args: create.args, timeout_ms: create.action_timeout_ms }
    } else if create.device_command {
        Action::DeviceCommand { commands_topic: create.commands_topic, device: create.device }
    } else {
        anyhow::bail!("say what the trigger does: --webhook URL, --command PROGRAM or --device-command");
    };
    let definition = TriggerDefinition {
        name: create.name.clone(),
        topic: create.topic.clone(),
        action,
        filter: create.filter,
        group_id: create.group_id,
        concurrency: create.concurrency,
        batch: create
            .batch_max_events
            .map(|max_events| BatchSettings { max_events, max_wait_ms: create.batch_max_wait_ms }),
        retry: RetryPolicy {
            max_attempts: create.max_attempts,
            initial_backoff_ms: create.initial_backoff_ms,
            max_backoff_ms: create.max_backoff_ms,
        },
        dead_letter_topic: create.dead_letter_topic,
        start_from: match create.from {
            FromArg::Earliest => StartFrom::Earliest,
            FromArg::Latest => StartFrom::Latest,
        },
        paused: create.paused,
        disabled_reason: None,
    };
    definition.validate().map_err(|error| anyhow::anyhow!("trigger {}: {error}", definition.name))?;
    registry.ensure_topics().await?;
    if !create.replace && registry.load()?.contains_key(&definition.name) {
        anyhow::bail!("a trigger named {:?} exists; pass --replace to replace it", definition.name);
    }
    if definition.start_from == StartFrom::Latest {
        start_group_at_end(connect, &definition)?;
    }
    registry.put(&definition).await?;
    println!(
        "created trigger {} on topic {} (group {})",
        definition.name,
        definition.topic,
        definition.group_id()
    );
    if let Some(secret) = printed_secret {
        println!("webhook signing secret: {secret}");
    }
    Ok(())
}

/// "Latest" means the events produced after `create` returns. A consumer group's
/// auto.offset.reset=latest would instead skip whatever arrives before the runner first fetches,
/// so for a group with no committed offsets, commit the current end of every partition now.
fn start_group_at_end(connect: &Connection, definition: &TriggerDefinition) -> anyhow::Result<()> {
    let group_id = definition.group_id();
    let consumer = connect.assign_only_consumer(&[("group.id", &group_id)])?;
    let partitions = tidewater_cli::topic_partitions(consumer.client(), connect, &definition.topic)
        .with_context(|| format!("a trigger needs its topic; create {:?} first", definition.topic))?;
    let mut wanted = TopicPartitionList::new();
    for partition in &partitions {
        wanted.add_partition(&definition.topic, partition.id);
    }
    let committed =
        consumer.committed_offsets(wanted, connect.timeout()).context("reading the group's offsets")?;
    if committed.elements().iter().any(|element| matches!(element.offset(), Offset::Offset(_))) {
        // The group already has a position (a re-created trigger): keep it.
        return Ok(());
    }
    let mut ends = TopicPartitionList::new();
    for partition in &partitions {
        let (_, high) = consumer
            .fetch_watermarks(&definition.topic, partition.id, connect.timeout())
            .with_context(|| format!("reading the end of {}/{}", definition.topic, partition.id))?;
        ends.add_partition_offset(&definition.topic, partition.id, Offset::Offset(high))?;
    }
    consumer
        .commit(&ends, CommitMode::Sync)
        .with_context(|| format!("committing start offsets for group {group_id}"))?;
    Ok(())
}

/// The runners reporting on `name` recently, newest first.
fn live_statuses<'a>(statuses: &'a [StatusRecord], name: &str, now_ms: i64) -> Vec<&'a StatusRecord> {
    let mut live: Vec<&StatusRecord> = statuses
        .iter()
        .filter(|status| status.trigger == name && now_ms - status.updated_at_ms <= STATUS_STALE_MS)
        .collect();
    live.sort_by_key(|status| std::cmp::Reverse(status.updated_at_ms));
    live
}

fn state_of(definition: &TriggerDefinition, live: &[&StatusRecord]) -> String {
    if definition.disabled_reason.is_some() {
        return "disabled".to_string();
    }
    if definition.paused {
        return "paused".to_string();
    }
    let running = live.iter().filter(|status| status.state == "running").count();
    match (running, live.first()) {
        (0, None) => "no runner".to_string(),
        (0, Some(status)) => status.state.clone(),
        (count, _) => format!("running ({count} instance{})", if count == 1 { "" } else { "s" }),
    }
}

fn list(registry: &Registry) -> anyhow::Result<()> {
    let definitions = registry.load()?;
    let statuses = registry.statuses()?;
    let now = now_ms();
    println!(
        "{:<24} {:<20} {:<14} {:<22} {:>10} {:>8} {:>8}",
        "NAME", "TOPIC", "ACTION", "STATE", "DELIVERED", "RETRIED", "DEAD"
    );
    for (name, definition) in &definitions {
        let live = live_statuses(&statuses, name, now);
        let sum = |field: fn(&StatusRecord) -> u64| live.iter().map(|status| field(status)).sum::<u64>();
        println!(
            "{:<24} {:<20} {:<14} {:<22} {:>10} {:>8} {:>8}",
            name,
            definition.topic,
            action_kind(&definition.action),
            state_of(definition, &live),
            sum(|status| status.stats.delivered),
            sum(|status| status.stats.retried),
            sum(|status| status.stats.dead_lettered),
        );
    }
    Ok(())
}

fn action_kind(action: &Action) -> &'static str {
    match action {
        Action::Webhook { .. } => "webhook",
        Action::Command { .. } => "command",
        Action::DeviceCommand { .. } => "device-command",
    }
}

fn describe(registry: &Registry, name: &str, json: bool) -> anyhow::Result<()> {
    let definition = registry.get(name)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&[&definition])?);
        return Ok(());
    }
    let mut shown = definition.clone();
    if let Action::Webhook { secret: Some(secret), .. } = &mut shown.action {
        *secret = "(hidden; describe --json shows it)".to_string();
    }
    let statuses = registry.statuses()?;
    let live = live_statuses(&statuses, name, now_ms());
    println!("trigger:          {name}");
    println!("state:            {}", state_of(&definition, &live));
    if let Some(reason) = &definition.disabled_reason {
        println!("disabled because: {reason}");
    }
    println!("topic:            {}", definition.topic);
    println!(
        "consumer group:   {} (lag: tidewater group describe {})",
        definition.group_id(),
        definition.group_id()
    );
    println!("dead-letter:      {}", definition.dead_letter_topic());
    println!("definition:\n{}", serde_json::to_string_pretty(&shown)?);
    if live.is_empty() {
        println!("runners:          none reported in the last {} s", STATUS_STALE_MS / 1000);
    }
    for status in live {
        let stats = &status.stats;
        println!(
            "runner {}: {} delivered={} retried={} dead-lettered={} filtered-out={} in-flight={} \
             latency p50={} ms p99={} ms max={} ms{}",
            status.instance,
            status.state,
            stats.delivered,
            stats.retried,
            stats.dead_lettered,
            stats.filtered_out,
            stats.in_flight,
            stats.latency_p50_ms,
            stats.latency_p99_ms,
            stats.latency_max_ms,
            status.detail.as_deref().map(|detail| format!(" ({detail})")).unwrap_or_default(),
        );
    }
    Ok(())
}

async fn run_triggers(cluster: ClusterConfig, connect: &Connection, run: RunArgs) -> anyhow::Result<()> {
    let source = match &run.config {
        Some(file) => DefinitionSource::Fixed(read_definitions(file)?),
        None => DefinitionSource::Registry,
    };
    let options = SupervisorOptions {
        source,
        only: run.names,
        instance: run.instance.unwrap_or_else(default_instance),
        timeout: connect.timeout(),
    };
    let admin = crate::admin::start_for_client_role(&run.admin, &cluster).await?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let supervisor = tokio::spawn(tidewater_jobs::trigger::supervise(cluster, options, stopped));
    crate::admin::AdminListener::set_ready(&admin);
    let signal = crate::serve::ShutdownSignal::install()?.wait();
    tokio::pin!(supervisor);
    tokio::select! {
        result = &mut supervisor => return result.context("the trigger supervisor failed")?,
        signal = signal => tracing::info!(signal = signal?, "stopping triggers"),
    }
    let _ = stop.send(true);
    tokio::time::timeout(Duration::from_secs(60), supervisor)
        .await
        .context("triggers did not stop within 60 s")?
        .context("the trigger supervisor failed")?
}

/// `host:pid`, unique enough among the instances of one cluster.
pub(crate) fn default_instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}:{}", host.trim(), std::process::id())
}
