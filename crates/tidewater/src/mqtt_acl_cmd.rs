//! `tidewater mqtt-acl`: the topic rules of MQTT clients that are not devices (SCRAM users and
//! anonymous clients), on any Kafka-compatible cluster: `add`, `list`, `remove`.
//!
//! The rules live in the gateway's registry topic (`_tidewater_devices`, keys `mqtt-rule/...`),
//! which every gateway follows, so a rule added or removed takes effect at every gateway within
//! a second, for the next PUBLISH or SUBSCRIBE and for messages queued from then on. Writing
//! that internal topic is for superusers once the cluster authorizes, as changing Kafka ACLs
//! is for those allowed to alter the cluster. How rules are decided is
//! `tidewater_gateway::topic_rules`.

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use tidewater_client::ClusterArgs;
use tidewater_gateway::topic_rules::{Action, Permission, Subject, TopicRule};
use tidewater_gateway::DeviceRegistry;

#[derive(Debug, Args)]
pub(crate) struct MqttAclArgs {
    #[command(flatten)]
    pub(crate) connect: ClusterArgs,
    #[command(subcommand)]
    pub(crate) command: MqttAclCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum MqttAclCommand {
    /// Add a rule. Once a rule exists for a kind of client (users, anonymous clients), clients
    /// of that kind may do only what a rule allows; the most specific matching filter decides
    /// and a deny wins a tie.
    Add(RuleArgs),
    /// List every rule.
    List {
        /// Print the rules as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a rule, named by the same flags it was added with.
    Remove(RuleArgs),
}

/// One rule, as flags: who, allow or deny, what, and the topic filter.
#[derive(Debug, Args)]
pub(crate) struct RuleArgs {
    /// Allow or deny.
    #[arg(value_enum)]
    permission: PermissionArg,
    /// publish, subscribe or all (both).
    #[arg(value_enum)]
    action: ActionArg,
    /// An MQTT topic filter (+ and # wildcards); %u stands for the user name, %c for the
    /// client id (a rule never applies where they would contain +, # or /).
    filter: String,
    /// For this SCRAM user.
    #[arg(long, group = "who", value_name = "NAME")]
    user: Option<String>,
    /// For the client with this MQTT client id (user or anonymous).
    #[arg(long, group = "who", value_name = "CLIENT_ID")]
    client: Option<String>,
    /// For every anonymous client.
    #[arg(long, group = "who")]
    anonymous: bool,
    /// For every client that is not a device (users and anonymous clients).
    #[arg(long, group = "who")]
    everyone: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PermissionArg {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ActionArg {
    Publish,
    Subscribe,
    All,
}

impl RuleArgs {
    fn rule(self) -> anyhow::Result<TopicRule> {
        let subject = match (self.user, self.client, self.anonymous, self.everyone) {
            (Some(name), _, _, _) => Subject::User(name),
            (_, Some(id), _, _) => Subject::Client(id),
            (_, _, true, _) => Subject::Anonymous,
            (_, _, _, true) => Subject::Everyone,
            _ => anyhow::bail!(
                "say who the rule is for: --user NAME, --client CLIENT_ID, --anonymous or --everyone"
            ),
        };
        let rule = TopicRule {
            subject,
            permission: match self.permission {
                PermissionArg::Allow => Permission::Allow,
                PermissionArg::Deny => Permission::Deny,
            },
            action: match self.action {
                ActionArg::Publish => Action::Publish,
                ActionArg::Subscribe => Action::Subscribe,
                ActionArg::All => Action::All,
            },
            filter: self.filter,
        };
        rule.validate()?;
        Ok(rule)
    }
}

/// A rule as one line: `deny anonymous subscribe test/nosubscribe`.
fn describe(rule: &TopicRule) -> String {
    let who = match &rule.subject {
        Subject::User(name) => format!("--user {name}"),
        Subject::Client(id) => format!("--client {id}"),
        Subject::Anonymous => "--anonymous".to_string(),
        Subject::Everyone => "--everyone".to_string(),
    };
    let (permission, action) = (rule.permission.name(), rule.action.name());
    format!("{permission} {action} {} {who}", rule.filter)
}

pub(crate) fn run(args: MqttAclArgs) -> anyhow::Result<()> {
    let cluster = args.connect.cluster_config()?;
    let registry = DeviceRegistry::new(cluster, args.connect.timeout());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match args.command {
            MqttAclCommand::Add(rule) => {
                let rule = rule.rule()?;
                registry.ensure_topic().await?;
                registry.put_rule(&rule).await.context("adding the rule")?;
                println!("added: {}", describe(&rule));
            }
            MqttAclCommand::Remove(rule) => {
                let rule = rule.rule()?;
                let rules = registry.load_view()?.rules;
                anyhow::ensure!(rules.contains_key(&rule.key()), "no such rule: {}", describe(&rule));
                registry.remove_rule(&rule).await.context("removing the rule")?;
                println!("removed: {}", describe(&rule));
            }
            MqttAclCommand::List { json } => {
                let rules = registry.load_view()?.rules;
                if json {
                    println!("{}", serde_json::to_string_pretty(&rules.values().collect::<Vec<_>>())?);
                } else {
                    for rule in rules.values() {
                        println!("{}", describe(rule));
                    }
                }
            }
        }
        Ok(())
    })
}
