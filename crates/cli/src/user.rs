//! `tidewater user ...`: SCRAM users of any Kafka-compatible cluster, through Kafka's own
//! AlterUserScramCredentials and DescribeUserScramCredentials (KIP-554), as `kafka-configs.sh
//! --entity-type users` manages them.
//!
//! The password goes to librdkafka, which salts and hashes it before it leaves this process: the
//! cluster receives the salted password and stores only keys derived from it. It is read from
//! `--password-stdin` (one line) or `TIDEWATER_USER_PASSWORD`, or, least safely because other
//! users of the machine can see a command line, `--password`; it is never printed.

use std::io::BufRead;

use anyhow::Context;
use clap::{Args, Subcommand};
use tidewater_client::admin::{self as raw, ScramAlteration, ScramMechanism, UserScramCredentials};
use tidewater_client::ClusterArgs;

use crate::{CliContext, Connection};

#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(flatten)]
    pub connect: ClusterArgs,
    #[command(subcommand)]
    pub command: UserCommand,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user with SCRAM credentials (SCRAM-SHA-256 and SCRAM-SHA-512 unless
    /// --mechanism says which).
    Create {
        name: String,
        #[command(flatten)]
        password: PasswordArgs,
        /// A mechanism to make a credential for; may be repeated.
        #[arg(long)]
        mechanism: Vec<tidewater_client::admin::ScramMechanism>,
        /// PBKDF2 iterations of the credentials (4096 to 16384).
        #[arg(long, default_value_t = ITERATIONS_DEFAULT,
              value_parser = clap::value_parser!(i32).range(4096..=16384))]
        iterations: i32,
    },
    /// Change a user's password, for every mechanism it has.
    Passwd {
        name: String,
        #[command(flatten)]
        password: PasswordArgs,
        /// PBKDF2 iterations (4096 to 16384); the user's current count when omitted.
        #[arg(long, value_parser = clap::value_parser!(i32).range(4096..=16384))]
        iterations: Option<i32>,
    },
    /// List the users and their mechanisms.
    List,
    /// Delete a user (every credential it has).
    Delete { name: String },
}

/// Where a new password comes from.
#[derive(Debug, Args)]
pub struct PasswordArgs {
    /// Read the password from the first line of stdin.
    #[arg(long, conflicts_with = "password")]
    pub password_stdin: bool,
    /// The password (visible to other users of this machine in the process list: prefer
    /// --password-stdin or the environment variable).
    #[arg(long, env = "TIDEWATER_USER_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

/// The iterations of credentials `user create` makes unless told: between Kafka's minimum
/// (4096) and maximum (16384), as Tidewater's bootstrap user gets.
pub(crate) const ITERATIONS_DEFAULT: i32 = 8192;

pub fn run(args: UserArgs) -> anyhow::Result<()> {
    let connect = &Connection::new(&args.connect)?;
    let timeout = connect.timeout();
    let admin = connect.admin_client()?;
    let client = admin.inner();
    match args.command {
        UserCommand::Create { name, password, mechanism, iterations } => {
            if let Some(existing) = describe_one(client, &name, timeout)? {
                anyhow::bail!(
                    "user {name:?} exists already (with {}); `tidewater user passwd` changes its password",
                    mechanisms_text(&existing)
                );
            }
            let password = password.read()?;
            let mechanisms = if mechanism.is_empty() {
                vec![ScramMechanism::Sha256, ScramMechanism::Sha512]
            } else {
                mechanism
            };
            alter(client, upserts(&name, &mechanisms, iterations, &password), timeout)
                .with_context(|| format!("creating user {name:?}"))?;
            println!(
                "created user {name} ({})",
                mechanisms.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            );
        }
        UserCommand::Passwd { name, password, iterations } => {
            let existing = describe_one(client, &name, timeout)?
                .with_context(|| format!("user {name:?} does not exist; `tidewater user create` makes it"))?;
            let password = password.read()?;
            let mechanisms: Vec<ScramMechanism> = existing.iter().map(|info| info.mechanism).collect();
            let iterations = iterations.unwrap_or_else(|| {
                existing.iter().map(|info| info.iterations).max().unwrap_or(ITERATIONS_DEFAULT)
            });
            alter(client, upserts(&name, &mechanisms, iterations, &password), timeout)
                .with_context(|| format!("changing the password of user {name:?}"))?;
            println!("changed the password of user {name}");
        }
        UserCommand::List => {
            let mut users =
                raw::describe_user_scram_credentials(client, &[], timeout).context("listing users")?;
            users.sort_by(|left, right| left.user.cmp(&right.user));
            for UserScramCredentials { user, credentials } in users {
                let credentials = credentials.with_context(|| format!("describing user {user:?}"))?;
                println!("{user}  {}", mechanisms_text(&credentials));
            }
        }
        UserCommand::Delete { name } => {
            let existing = describe_one(client, &name, timeout)?
                .with_context(|| format!("user {name:?} does not exist"))?;
            let deletions = existing
                .iter()
                .map(|info| ScramAlteration::Delete { user: name.clone(), mechanism: info.mechanism })
                .collect();
            alter(client, deletions, timeout).with_context(|| format!("deleting user {name:?}"))?;
            println!("deleted user {name}");
        }
    }
    Ok(())
}

fn upserts(
    name: &str,
    mechanisms: &[ScramMechanism],
    iterations: i32,
    password: &str,
) -> Vec<ScramAlteration> {
    mechanisms
        .iter()
        .map(|&mechanism| ScramAlteration::Upsert {
            user: name.to_string(),
            mechanism,
            iterations,
            password: password.to_string(),
            salt: None,
        })
        .collect()
}

/// Applies `alterations`; an error if the cluster refused any.
fn alter(
    client: &rdkafka::client::Client<CliContext>,
    alterations: Vec<ScramAlteration>,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    for outcome in raw::alter_user_scram_credentials(client, &alterations, timeout)? {
        outcome.outcome.with_context(|| format!("user {:?}", outcome.user))?;
    }
    Ok(())
}

/// A user's credentials, or `None` if it has none (Kafka answers RESOURCE_NOT_FOUND).
fn describe_one(
    client: &rdkafka::client::Client<CliContext>,
    name: &str,
    timeout: std::time::Duration,
) -> anyhow::Result<Option<Vec<raw::ScramCredentialInfo>>> {
    let described = raw::describe_user_scram_credentials(client, &[name], timeout)
        .with_context(|| format!("describing user {name:?}"))?;
    let Some(user) = described.into_iter().find(|user| user.user == name) else { return Ok(None) };
    match user.credentials {
        Ok(credentials) if credentials.is_empty() => Ok(None),
        Ok(credentials) => Ok(Some(credentials)),
        Err(error)
            if error
                .code()
                .is_some_and(|code| code.is(rdkafka::types::RDKafkaErrorCode::ResourceNotFound)) =>
        {
            Ok(None)
        }
        Err(error) => Err(error).with_context(|| format!("describing user {name:?}")),
    }
}

fn mechanisms_text(credentials: &[raw::ScramCredentialInfo]) -> String {
    credentials
        .iter()
        .map(|info| format!("{} ({} iterations)", info.mechanism, info.iterations))
        .collect::<Vec<_>>()
        .join(", ")
}

impl PasswordArgs {
    /// The password from stdin, the environment or the flag, in that order of preference.
    fn read(self) -> anyhow::Result<String> {
        let password = if self.password_stdin {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).context("reading the password from stdin")?;
            line.trim_end_matches(['\r', '\n']).to_string()
        } else if let Some(password) = self.password {
            password
        } else {
            anyhow::bail!("give the password with --password-stdin, TIDEWATER_USER_PASSWORD or --password");
        };
        anyhow::ensure!(!password.is_empty(), "the password is empty");
        Ok(password)
    }
}
