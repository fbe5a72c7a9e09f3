//! `tidewater acl ...`: ACLs of any Kafka-compatible cluster through CreateAcls, DescribeAcls
//! and DeleteAcls, with `kafka-acls.sh`'s words: `--allow`/`--deny` a principal `--operation`s
//! on `--topic`, `--group`, `--transactional-id` or `--cluster`, literal names or
//! `--resource-pattern-type prefixed`.
//!
//! `create` makes one binding per resource and operation. `list` and `delete` take the same
//! flags as a filter (what is not given matches everything); `delete` refuses to run with no
//! filter at all unless `--all`, so one missing flag cannot delete every ACL of a cluster.

use anyhow::Context;
use clap::{Args, Subcommand};
use tidewater_client::admin::{
    self as raw, AclBinding, AclBindingFilter, AclOperation, AclPermission, PatternType, ResourceType,
};
use tidewater_client::ClusterArgs;
use tidewater_security::KafkaPrincipal;

use crate::Connection;

/// A principal such as User:alice, checked before it is sent.
fn parse_principal(text: &str) -> Result<String, String> {
    text.parse::<KafkaPrincipal>().map(|principal| principal.to_string()).map_err(|error| error.to_string())
}

#[derive(Debug, Args)]
pub struct AclArgs {
    #[command(flatten)]
    pub connect: ClusterArgs,
    #[command(subcommand)]
    pub command: AclCommand,
}

#[derive(Debug, Subcommand)]
pub enum AclCommand {
    /// Allow or deny a principal operations on resources (one ACL per resource and operation).
    Create {
        /// The principal to allow, such as User:alice (User:* for everyone).
        #[arg(long, value_name = "PRINCIPAL", conflicts_with = "deny", value_parser = parse_principal)]
        allow: Option<String>,
        /// The principal to deny; a Deny wins over every Allow.
        #[arg(long, value_name = "PRINCIPAL", value_parser = parse_principal)]
        deny: Option<String>,
        /// The client address the ACL applies to (* for every host).
        #[arg(long, default_value = "*")]
        host: String,
        /// Operations, comma-separated: read, write, create, delete, alter, describe,
        /// describe_configs, alter_configs, cluster_action, idempotent_write, all.
        #[arg(long, value_parser = parse_operations)]
        operation: Vec<Vec<AclOperation>>,
        #[command(flatten)]
        resources: AclResources,
    },
    /// List ACLs: all of them, or those that apply to the resources and principal given.
    List {
        /// Only ACLs of this principal.
        #[arg(long, value_parser = parse_principal)]
        principal: Option<String>,
        #[command(flatten)]
        resources: AclResources,
    },
    /// Delete the ACLs that match the resources and principal given.
    Delete {
        /// Only ACLs of this principal.
        #[arg(long, value_parser = parse_principal)]
        principal: Option<String>,
        #[command(flatten)]
        resources: AclResources,
        /// Delete every ACL that matches, even with no resource or principal given.
        #[arg(long)]
        all: bool,
    },
}

/// The resources an ACL command is about, as kafka-acls.sh names them.
#[derive(Debug, Args)]
pub struct AclResources {
    /// A topic (may be repeated; * for every topic).
    #[arg(long)]
    pub topic: Vec<String>,
    /// A consumer group (may be repeated).
    #[arg(long)]
    pub group: Vec<String>,
    /// A transactional id (may be repeated).
    #[arg(long)]
    pub transactional_id: Vec<String>,
    /// The cluster itself (creating topics, managing ACLs and users, IdempotentWrite).
    #[arg(long)]
    pub cluster: bool,
    /// literal or prefixed for `create` (literal by default); for `list` and `delete` also any
    /// or match (the default with a resource: every ACL that applies to it).
    #[arg(long)]
    pub resource_pattern_type: Option<tidewater_client::admin::PatternType>,
}

pub fn run(args: AclArgs) -> anyhow::Result<()> {
    let connect = &Connection::new(&args.connect)?;
    let timeout = connect.timeout();
    let admin = connect.admin_client()?;
    let client = admin.inner();
    match args.command {
        AclCommand::Create { allow, deny, host, operation, resources } => {
            let (permission, principal) = match (allow, deny) {
                (Some(principal), None) => (AclPermission::Allow, principal),
                (None, Some(principal)) => (AclPermission::Deny, principal),
                _ => anyhow::bail!("give one of --allow PRINCIPAL or --deny PRINCIPAL"),
            };
            let operations: Vec<AclOperation> = operation.concat();
            anyhow::ensure!(
                !operations.is_empty(),
                "give at least one --operation (read, write, describe, all, ...)"
            );
            let pattern_type = resources.resource_pattern_type.unwrap_or(PatternType::Literal);
            anyhow::ensure!(
                matches!(pattern_type, PatternType::Literal | PatternType::Prefixed),
                "an ACL's --resource-pattern-type is literal or prefixed"
            );
            let named = resources.named();
            anyhow::ensure!(
                !named.is_empty(),
                "give a resource: --topic, --group, --transactional-id or --cluster"
            );
            let bindings: Vec<AclBinding> = named
                .iter()
                .flat_map(|(resource_type, name)| {
                    operations.iter().map(|&operation| AclBinding {
                        resource_type: *resource_type,
                        resource_name: name.clone(),
                        pattern_type,
                        principal: principal.clone(),
                        host: host.clone(),
                        operation,
                        permission,
                    })
                })
                .collect();
            let outcomes = raw::create_acls(client, &bindings, timeout).context("creating ACLs")?;
            for (binding, outcome) in bindings.iter().zip(outcomes) {
                outcome.with_context(|| format!("creating {}", binding_text(binding)))?;
                println!("created {}", binding_text(binding));
            }
        }
        AclCommand::List { principal, resources } => {
            let mut bindings = Vec::new();
            for filter in filters(principal, &resources) {
                bindings.extend(raw::describe_acls(client, &filter, timeout).context("listing ACLs")?);
            }
            bindings.sort_by_key(binding_text);
            bindings.dedup();
            for binding in bindings {
                println!("{}", binding_text(&binding));
            }
        }
        AclCommand::Delete { principal, resources, all } => {
            anyhow::ensure!(
                all || principal.is_some() || !resources.named().is_empty(),
                "delete which ACLs? give --principal or a resource (--topic, --group, --transactional-id, --cluster), or --all for every ACL"
            );
            let filters = filters(principal, &resources);
            for outcome in raw::delete_acls(client, &filters, timeout).context("deleting ACLs")? {
                for binding in outcome.context("deleting ACLs")? {
                    println!("deleted {}", binding_text(&binding));
                }
            }
        }
    }
    Ok(())
}

impl AclResources {
    /// The resources named by the flags, as (type, name) pairs.
    fn named(&self) -> Vec<(ResourceType, String)> {
        let mut named: Vec<(ResourceType, String)> = Vec::new();
        named.extend(self.topic.iter().map(|name| (ResourceType::Topic, name.clone())));
        named.extend(self.group.iter().map(|name| (ResourceType::Group, name.clone())));
        named.extend(self.transactional_id.iter().map(|name| (ResourceType::TransactionalId, name.clone())));
        if self.cluster {
            // Kafka's only cluster resource is named kafka-cluster.
            named.push((ResourceType::Cluster, "kafka-cluster".to_string()));
        }
        named
    }
}

/// The DescribeAcls/DeleteAcls filters for the flags: one per named resource, or one for
/// every resource; the pattern type matches as Kafka's filters do (`match` by default, so a
/// topic's list shows the literal, wildcard and prefixed ACLs that apply to it).
fn filters(principal: Option<String>, resources: &AclResources) -> Vec<AclBindingFilter> {
    let named = resources.named();
    let base = AclBindingFilter { principal, ..AclBindingFilter::any() };
    if named.is_empty() {
        return vec![AclBindingFilter {
            pattern_type: resources.resource_pattern_type.unwrap_or(PatternType::Any),
            ..base
        }];
    }
    named
        .into_iter()
        .map(|(resource_type, name)| AclBindingFilter {
            resource_type,
            resource_name: Some(name),
            pattern_type: resources.resource_pattern_type.unwrap_or(PatternType::Match),
            ..base.clone()
        })
        .collect()
}

/// One binding as a line, in the order kafka-acls.sh reads it.
fn binding_text(binding: &AclBinding) -> String {
    format!(
        "{} {} from {} {} on {} {} ({})",
        binding.permission,
        binding.principal,
        binding.host,
        binding.operation,
        binding.resource_type,
        binding.resource_name,
        binding.pattern_type
    )
}

/// `--operation read,write` as operations.
pub(crate) fn parse_operations(text: &str) -> Result<Vec<AclOperation>, String> {
    text.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| part.trim().parse::<AclOperation>())
        .collect()
}
