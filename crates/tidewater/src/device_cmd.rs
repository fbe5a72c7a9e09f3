//! `tidewater device`: register and manage the devices the gateway accepts, on any
//! Kafka-compatible cluster.
//!
//! Every command reads or writes the device registry topic (`_tidewater_devices`); gateways
//! follow it, so a change takes effect at every gateway within a second. `add` and `rotate-key`
//! print the new key once, on stdout alone (so `KEY=$(tidewater device add pump-1)` works); only
//! its salted hash (and the token-signing key derived from it) is stored. `token` is the
//! exception: it computes a time-limited token from a key the caller holds and touches no
//! cluster. The logic lives in `tidewater_gateway::{device, registry, token}`.
//!
//! X.509 devices (`add --x509-thumbprint`, `add --x509-ca`) get no key; they connect over a
//! gateway TLS listener with a client certificate. `device ca add|list|remove` manages the CAs
//! that `--x509-ca` devices' certificates chain to, in the same registry topic.

use std::time::Duration;

use anyhow::Context;
use base64::Engine;
use clap::{Args, Subcommand};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tidewater_client::{now_ms, ClusterArgs};
use tidewater_gateway::device::{generate_key, generate_salt, validate_device_id, DEVICE_KEY_BYTES};
use tidewater_gateway::{token, Device, DeviceCa, DeviceRegistry, X509Identity};
use tidewater_security::client_certificate::{normalize_thumbprint, thumbprint};
use tidewater_security::tls::subject_name;

#[derive(Debug, Args)]
pub(crate) struct DeviceArgs {
    #[command(flatten)]
    pub(crate) connect: ClusterArgs,
    #[command(subcommand)]
    pub(crate) command: DeviceCommand,
}

#[derive(Debug, Subcommand)]
pub(crate) enum DeviceCommand {
    /// Register a device and print its new key (shown only this once). The device connects over
    /// MQTT with client id = the device id and password = the key.
    Add {
        /// The device id (letters, digits, '-', '_', '.', ':').
        id: String,
        /// Register an X.509 device known by its certificate's SHA-256 thumbprint (64 hex
        /// digits, as `openssl x509 -noout -fingerprint -sha256` prints it, colons allowed)
        /// instead of a key. It connects over --mqtt-tls-listen or --http-tls-listen with that
        /// certificate and client id = the device id.
        #[arg(long, value_name = "SHA256HEX", conflicts_with = "x509_ca")]
        x509_thumbprint: Option<String>,
        /// A second accepted thumbprint, so the device can move to a new certificate.
        #[arg(long, value_name = "SHA256HEX", requires = "x509_thumbprint")]
        secondary_thumbprint: Option<String>,
        /// Register an X.509 device whose certificate chains to a CA registered with `device ca
        /// add`, with subject CN = the device id, instead of a key.
        #[arg(long)]
        x509_ca: bool,
        #[command(flatten)]
        quota: QuotaArgs,
    },
    /// Change a device's own quota (what it may send per second over MQTT and HTTP together);
    /// gateways apply it from the device's next message.
    Update {
        id: String,
        #[command(flatten)]
        quota: QuotaArgs,
    },
    /// Manage the CAs that `add --x509-ca` devices' certificates chain to.
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// List devices: id, state, when each was created and its quota.
    List {
        /// Print the records as JSON (key hashes included, token-signing keys redacted).
        #[arg(long)]
        json: bool,
    },
    /// Show one device.
    Show {
        id: String,
        /// Print the record as JSON (key hash included, token-signing key redacted).
        #[arg(long)]
        json: bool,
    },
    /// Refuse the device's connections (Not authorized) until `enable`; its key stays.
    Disable { id: String },
    /// Accept the device again.
    Enable { id: String },
    /// Remove the device; its key stops working.
    Remove { id: String },
    /// Give the device a new key and print it; the old key, and every token made with it, stop
    /// working.
    RotateKey { id: String },
    /// Print a time-limited token for the device, made here from its key (no server is
    /// contacted). The device sends it instead of its key: as its MQTT password (client id = the
    /// device id), or over HTTP as `Authorization: SharedAccessSignature sr=...` or `Bearer
    /// <token>`. It is an IoT Hub-style SAS token for resource `devices/{id}` and stops working
    /// at its expiry or when the key is rotated. Devices registered before tokens existed need a
    /// `rotate-key` first.
    Token {
        /// The device id.
        id: String,
        /// The device's key, as `add` or `rotate-key` printed it.
        #[arg(long, env = "TIDEWATER_DEVICE_KEY", hide_env_values = true)]
        key: String,
        /// How long the token is valid: seconds, or a number followed by s, m, h or d (at most
        /// 365d).
        #[arg(long, default_value = "1h", value_parser = parse_ttl)]
        ttl: Duration,
        /// The expiry as unix seconds, instead of now + --ttl.
        #[arg(long, conflicts_with = "ttl")]
        expires_at: Option<u64>,
    },
}

/// A device's own limits, for `add` and `update`.
#[derive(Debug, Clone, Copy, Args)]
pub(crate) struct QuotaArgs {
    /// Messages per second the device may send (0: no limit), in place of the gateway's
    /// --device-max-messages-per-second; "default" goes back to that. Over it, its MQTT
    /// connection is read no further until it is back within it, and its HTTP requests get 429.
    #[arg(long, value_name = "N|default", value_parser = parse_limit)]
    max_messages_per_second: Option<Limit>,
    /// Bytes per second the device may send (MQTT PUBLISH packets, HTTP bodies; 0: no limit), in
    /// place of the gateway's --device-max-bytes-per-second; "default" goes back to that.
    #[arg(long, value_name = "N|default", value_parser = parse_limit)]
    max_bytes_per_second: Option<Limit>,
}

/// One of a device's own limits as given on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// The gateway's default.
    Default,
    /// At most this many per second; 0 is no limit.
    PerSecond(u64),
}

fn parse_limit(text: &str) -> Result<Limit, String> {
    if text.eq_ignore_ascii_case("default") {
        return Ok(Limit::Default);
    }
    text.parse().map(Limit::PerSecond).map_err(|_| {
        format!(
            "expected a number per second (0 for no limit) or \"default\" for the gateway's, got {text:?}"
        )
    })
}

impl QuotaArgs {
    fn is_empty(&self) -> bool {
        self.max_messages_per_second.is_none() && self.max_bytes_per_second.is_none()
    }

    /// Sets what was given on `device`, leaving the rest as it was.
    fn apply(&self, device: &mut Device) {
        let stored = |limit: Limit| match limit {
            Limit::Default => None,
            Limit::PerSecond(per_second) => Some(per_second),
        };
        if let Some(limit) = self.max_messages_per_second {
            device.max_messages_per_second = stored(limit);
        }
        if let Some(limit) = self.max_bytes_per_second {
            device.max_bytes_per_second = stored(limit);
        }
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum CaCommand {
    /// Register a CA (its PEM certificate); devices added with --x509-ca whose certificates
    /// chain to it connect from then on.
    Add {
        /// A name for the CA (letters, digits, '-', '_', '.', ':').
        name: String,
        /// The CA's certificate (PEM; the first certificate in the file).
        #[arg(long)]
        cert: std::path::PathBuf,
    },
    /// List the registered CAs: name, SHA-256 thumbprint, subject.
    List,
    /// Remove a CA: certificates it signed stop opening new connections.
    Remove { name: String },
}

/// The longest `--ttl`: a token is as good as the key until it expires, so a token meant to
/// outlive a year should be the key itself.
const TOKEN_TTL_MAX: Duration = Duration::from_secs(365 * 24 * 3600);

pub(crate) fn run(args: DeviceArgs) -> anyhow::Result<()> {
    // A token needs only the key: no cluster, no runtime.
    if let DeviceCommand::Token { id, key, ttl, expires_at } = &args.command {
        return print_token(id, key, *ttl, *expires_at);
    }
    let cluster = args.connect.cluster_config()?;
    let registry = DeviceRegistry::new(cluster, args.connect.timeout());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tidewater-device")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match args.command {
            DeviceCommand::Add { id, x509_thumbprint, secondary_thumbprint, x509_ca, quota } => {
                validate_device_id(&id).map_err(|error| anyhow::anyhow!("device {id:?}: {error}"))?;
                let x509 = x509_identity(x509_thumbprint.as_deref(), secondary_thumbprint.as_deref(), x509_ca)?;
                registry.ensure_topic().await?;
                anyhow::ensure!(!registry.load()?.contains_key(&id), "a device {id:?} exists already");
                if let Some(x509) = x509 {
                    let how = match &x509 {
                        X509Identity::Thumbprint { .. } => "its certificate's thumbprint",
                        X509Identity::CertificateAuthority => "a certificate from a registered CA with CN = the id",
                    };
                    let mut device = Device::new_x509(&id, x509, now_ms());
                    quota.apply(&mut device);
                    registry.put(&device).await?;
                    println!("added X.509 device {id}; it connects over TLS with {how}");
                    return Ok(());
                }
                let key = generate_key().context("reading random bytes for the key")?;
                let salt = generate_salt().context("reading random bytes for the salt")?;
                let mut device = Device::new(&id, &key, salt, now_ms());
                quota.apply(&mut device);
                registry.put(&device).await?;
                eprintln!("added device {id}; its key (shown only this once) is on stdout");
                println!("{key}");
                Ok(())
            }
            DeviceCommand::List { json } => {
                let devices = registry.load()?;
                if json {
                    let records: Vec<_> = devices.values().map(printable).collect();
                    println!("{}", serde_json::to_string_pretty(&records)?);
                } else {
                    println!("{:<40} {:<9} {:<14} QUOTA", "DEVICE", "STATE", "CREATED_AT_MS");
                    for device in devices.values() {
                        println!(
                            "{:<40} {:<9} {:<14} {}",
                            device.id,
                            state(device),
                            device.created_at_ms,
                            quota_text(device)
                        );
                    }
                }
                Ok(())
            }
            DeviceCommand::Show { id, json } => {
                let device = registry.get(&id)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&printable(&device))?);
                } else {
                    println!("device:        {}", device.id);
                    println!("state:         {}", state(&device));
                    println!("credential:    {}", credential_kind(&device));
                    let tokens = if device.signing_key().is_some() {
                        "accepted"
                    } else {
                        "not accepted until rotate-key (registered before tokens existed)"
                    };
                    println!("tokens:        {tokens}");
                    println!("quota:         {}", quota_text(&device));
                    println!("created_at_ms: {}", device.created_at_ms);
                    println!("updated_at_ms: {}", device.updated_at_ms);
                }
                Ok(())
            }
            DeviceCommand::Update { id, quota } => {
                anyhow::ensure!(
                    !quota.is_empty(),
                    "nothing to change: give --max-messages-per-second and/or --max-bytes-per-second"
                );
                let mut device = registry.get(&id)?;
                quota.apply(&mut device);
                device.updated_at_ms = now_ms();
                registry.put(&device).await?;
                println!("updated device {id}: quota {}", quota_text(&device));
                Ok(())
            }
            DeviceCommand::Disable { id } => set_disabled(&registry, &id, true).await,
            DeviceCommand::Enable { id } => set_disabled(&registry, &id, false).await,
            DeviceCommand::Remove { id } => {
                registry.get(&id)?;
                registry.remove(&id).await?;
                println!("removed device {id}");
                Ok(())
            }
            DeviceCommand::RotateKey { id } => {
                let mut device = registry.get(&id)?;
                let key = generate_key().context("reading random bytes for the key")?;
                let salt = generate_salt().context("reading random bytes for the salt")?;
                device.set_key(&key, salt, now_ms());
                registry.put(&device).await?;
                eprintln!(
                    "device {id} has a new key (shown only this once) on stdout; the old one and its tokens no longer work"
                );
                println!("{key}");
                Ok(())
            }
            DeviceCommand::Ca { command } => run_ca(&registry, command).await,
            DeviceCommand::Token { .. } => unreachable!("handled before the runtime starts"),
        }
    })
}

/// What `add`'s X.509 flags ask for, checked.
fn x509_identity(
    thumbprint: Option<&str>,
    secondary: Option<&str>,
    ca: bool,
) -> anyhow::Result<Option<X509Identity>> {
    let normalize = |flag: &str, text: &str| {
        normalize_thumbprint(text).with_context(|| {
            format!("{flag} {text:?} is not a SHA-256 thumbprint (64 hex digits, colons allowed)")
        })
    };
    Ok(match (thumbprint, ca) {
        (Some(primary), _) => Some(X509Identity::Thumbprint {
            primary: normalize("--x509-thumbprint", primary)?,
            secondary: secondary.map(|text| normalize("--secondary-thumbprint", text)).transpose()?,
        }),
        (None, true) => Some(X509Identity::CertificateAuthority),
        (None, false) => None,
    })
}

/// `device ca ...`.
async fn run_ca(registry: &DeviceRegistry, command: CaCommand) -> anyhow::Result<()> {
    match command {
        CaCommand::Add { name, cert } => {
            validate_device_id(&name).map_err(|error| anyhow::anyhow!("CA name {name:?}: {error}"))?;
            let certificate = CertificateDer::from_pem_file(&cert)
                .map_err(|error| anyhow::anyhow!("{}: no PEM certificate: {error:?}", cert.display()))?;
            let subject = subject_name(&certificate).map_err(|error| {
                anyhow::anyhow!("{}: the certificate does not parse: {error}", cert.display())
            })?;
            registry.ensure_topic().await?;
            let ca = DeviceCa {
                name: name.clone(),
                certificate_der_base64: base64::engine::general_purpose::STANDARD.encode(&certificate),
                subject: subject.clone(),
                added_at_ms: now_ms(),
            };
            registry.put_ca(&ca).await?;
            println!("added device CA {name} ({subject}, SHA-256 {})", thumbprint(&certificate));
        }
        CaCommand::List => {
            println!("{:<24} {:<64} SUBJECT", "CA", "SHA256");
            for ca in registry.load_view()?.cas.values() {
                let print = ca.certificate_der().map(|der| thumbprint(&der)).unwrap_or_default();
                println!("{:<24} {print:<64} {}", ca.name, ca.subject);
            }
        }
        CaCommand::Remove { name } => {
            anyhow::ensure!(registry.load_view()?.cas.contains_key(&name), "no device CA {name:?}");
            registry.remove_ca(&name).await?;
            println!("removed device CA {name}");
        }
    }
    Ok(())
}

/// `device token`: the token on stdout alone (so `TOKEN=$(tidewater device token ...)` works),
/// its expiry on stderr.
fn print_token(id: &str, key: &str, ttl: Duration, expires_at: Option<u64>) -> anyhow::Result<()> {
    validate_device_id(id).map_err(|error| anyhow::anyhow!("device {id:?}: {error}"))?;
    // Any text would make a token, but one from a mistyped key would fail only at the gateway;
    // a key is always 32 bytes in base64, so say so here instead.
    let decoded = base64::engine::general_purpose::STANDARD.decode(key).unwrap_or_default();
    anyhow::ensure!(
        decoded.len() == DEVICE_KEY_BYTES,
        "--key is not a device key: expected the base64 text of {DEVICE_KEY_BYTES} bytes that `device add` or `rotate-key` printed"
    );
    let now = tidewater_gateway::auth::unix_now_secs();
    let expiry = expires_at.unwrap_or_else(|| now.saturating_add(ttl.as_secs()));
    println!("{}", token::mint(id, key, expiry));
    if expiry <= now {
        eprintln!("token for device {id}, already expired (se={expiry}, now {now})");
    } else {
        eprintln!("token for device {id}, valid until {expiry} (unix seconds; {}s from now)", expiry - now);
    }
    Ok(())
}

/// `--ttl`: whole seconds, or a number with a unit (s, m, h, d), from 1 s to [`TOKEN_TTL_MAX`].
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit_secs = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 24 * 3600,
        other => return Err(format!("unknown unit {other:?}: use s, m, h or d (e.g. 90s, 15m, 1h, 7d)")),
    };
    let number: u64 =
        number.parse().map_err(|_| format!("{text:?} is not a number with a unit (e.g. 1h)"))?;
    let ttl = Duration::from_secs(number.saturating_mul(unit_secs));
    if ttl.is_zero() || ttl > TOKEN_TTL_MAX {
        return Err(format!("a token is valid for 1s to {}d", TOKEN_TTL_MAX.as_secs() / (24 * 3600)));
    }
    Ok(ttl)
}

/// A record as `list --json` and `show --json` print it: the token-signing key is a secret (it
/// mints tokens), so only whether there is one is shown.
fn printable(device: &Device) -> serde_json::Value {
    let mut value = serde_json::to_value(device).unwrap_or_default();
    if let Some(signing_key) = value.get_mut("signing_key") {
        let shown = if device.signing_key.is_empty() { "" } else { "(redacted)" };
        *signing_key = serde_json::Value::from(shown);
    }
    value
}

async fn set_disabled(registry: &DeviceRegistry, id: &str, disabled: bool) -> anyhow::Result<()> {
    let mut device = registry.get(id)?;
    device.disabled = disabled;
    device.updated_at_ms = now_ms();
    registry.put(&device).await?;
    println!("{} device {id}", if disabled { "disabled" } else { "enabled" });
    Ok(())
}

/// A device's own quota as `list` and `show` print it: "default" for the gateway's in both, or
/// each limit (a number per second, "unlimited", or "default").
fn quota_text(device: &Device) -> String {
    let limit = |limit: Option<u64>| match limit {
        None => "default".to_string(),
        Some(0) => "unlimited".to_string(),
        Some(per_second) => per_second.to_string(),
    };
    match (device.max_messages_per_second, device.max_bytes_per_second) {
        (None, None) => "default".to_string(),
        (messages, bytes) => format!("{} msg/s, {} B/s", limit(messages), limit(bytes)),
    }
}

fn state(device: &Device) -> &'static str {
    if device.disabled {
        "disabled"
    } else {
        "enabled"
    }
}

/// How the device authenticates, for `show`.
fn credential_kind(device: &Device) -> String {
    match &device.x509 {
        None => "key or SAS token".to_string(),
        Some(X509Identity::CertificateAuthority) => {
            "X.509, signed by a registered CA with CN = the id".to_string()
        }
        Some(X509Identity::Thumbprint { primary, secondary: None }) => format!("X.509, thumbprint {primary}"),
        Some(X509Identity::Thumbprint { primary, secondary: Some(secondary) }) => {
            format!("X.509, thumbprint {primary} or {secondary}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls() {
        let check = |text: &str| parse_ttl(text).map(|ttl| ttl.as_secs());
        let out_of_range = Err("a token is valid for 1s to 365d".to_string());
        assert_eq!(check("90"), Ok(90));
        assert_eq!(check("90s"), Ok(90));
        assert_eq!(check("15m"), Ok(900));
        assert_eq!(check("1h"), Ok(3600));
        assert_eq!(check("7d"), Ok(7 * 86400));
        assert_eq!(check("365d"), Ok(365 * 86400));
        assert_eq!(check("366d"), out_of_range);
        assert_eq!(check("0s"), out_of_range);
        assert!(check("99999999999999999999d")
            .is_err_and(|error| error.ends_with("is not a number with a unit (e.g. 1h)")));
        assert!(check("1w").is_err_and(|error| error.starts_with("unknown unit \"w\"")));
        assert!(check("h").is_err());
        assert!(check("-1h").is_err());
        assert!(check("").is_err());
    }

    #[test]
    fn quotas_from_the_command_line_and_as_printed() {
        assert_eq!(parse_limit("20"), Ok(Limit::PerSecond(20)));
        assert_eq!(parse_limit("0"), Ok(Limit::PerSecond(0)));
        assert_eq!(parse_limit("Default"), Ok(Limit::Default));
        assert!(parse_limit("-1").is_err_and(|error| error.contains("or \"default\"")));
        assert!(parse_limit("fast").is_err());
        let mut device = Device::new("pump-1", "key", [1; 16], 0);
        assert_eq!(quota_text(&device), "default");
        let set = QuotaArgs {
            max_messages_per_second: Some(Limit::PerSecond(20)),
            max_bytes_per_second: Some(Limit::PerSecond(0)),
        };
        set.apply(&mut device);
        assert_eq!(quota_text(&device), "20 msg/s, unlimited B/s");
        // Only what is given changes; "default" clears the device's own limit.
        let reset = QuotaArgs { max_messages_per_second: Some(Limit::Default), max_bytes_per_second: None };
        assert!(!reset.is_empty());
        reset.apply(&mut device);
        assert_eq!(quota_text(&device), "default msg/s, unlimited B/s");
        assert_eq!((device.max_messages_per_second, device.max_bytes_per_second), (None, Some(0)));
    }

    #[test]
    fn printed_records_never_show_the_signing_key() {
        let device = Device::new("pump-1", "key", [1; 16], 0);
        let printed = printable(&device);
        assert!(!printed.to_string().contains(&device.signing_key));
        assert_eq!(printed["signing_key"], "(redacted)");
        let mut old = device;
        old.signing_key.clear();
        assert_eq!(printable(&old)["signing_key"], "");
    }
}
