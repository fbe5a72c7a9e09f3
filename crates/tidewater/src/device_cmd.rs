//! `tidewater device`: register and manage the devices the gateway accepts, on any
//! Kafka-compatible cluster.
//!
//! Every command reads or writes the device registry topic (`_tidewater_devices`); gateways
//! follow it, so a change takes effect at every gateway within a second. `add` and `rotate-key`
//! print the new key once, on stdout alone (so `KEY=$(tidewater device add pump-1)` works); only
//! its salted hash is stored. The logic lives in `tidewater_gateway::{device, registry}`.

use anyhow::Context;
use clap::{Args, Subcommand};
use tidewater_gateway::device::{generate_key, generate_salt, validate_device_id};
use tidewater_gateway::{Device, DeviceRegistry};

use crate::cli::ConnectArgs;

#[derive(Debug, Args)]
pub(crate) struct DeviceArgs {
    #[command(flatten)]
    pub(crate) connect: ConnectArgs,
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
    },
    /// List devices: id, state and when each was created.
    List {
        /// Print the records as JSON (key hashes included).
        #[arg(long)]
        json: bool,
    },
    /// Show one device.
    Show {
        id: String,
        /// Print the record as JSON (key hash included).
        #[arg(long)]
        json: bool,
    },
    /// Refuse the device's connections (Not authorized) until `enable`; its key stays.
    Disable { id: String },
    /// Accept the device again.
    Enable { id: String },
    /// Remove the device; its key stops working.
    Remove { id: String },
    /// Give the device a new key and print it; the old key stops working.
    RotateKey { id: String },
}

pub(crate) fn run(args: DeviceArgs) -> anyhow::Result<()> {
    let cluster = crate::trigger_cmd::cluster_config(&args.connect);
    let registry = DeviceRegistry::new(cluster, args.connect.timeout());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("tidewater-device")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match args.command {
            DeviceCommand::Add { id } => {
                validate_device_id(&id).map_err(|error| anyhow::anyhow!("device {id:?}: {error}"))?;
                registry.ensure_topic().await?;
                anyhow::ensure!(!registry.load()?.contains_key(&id), "a device {id:?} exists already");
                let key = generate_key().context("reading random bytes for the key")?;
                let salt = generate_salt().context("reading random bytes for the salt")?;
                registry.put(&Device::new(&id, &key, salt, now_ms())).await?;
                eprintln!("added device {id}; its key (shown only this once) is on stdout");
                println!("{key}");
                Ok(())
            }
            DeviceCommand::List { json } => {
                let devices = registry.load()?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&devices.values().collect::<Vec<_>>())?);
                } else {
                    println!("{:<40} {:<9} CREATED_AT_MS", "DEVICE", "STATE");
                    for device in devices.values() {
                        println!("{:<40} {:<9} {}", device.id, state(device), device.created_at_ms);
                    }
                }
                Ok(())
            }
            DeviceCommand::Show { id, json } => {
                let device = registry.get(&id)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&device)?);
                } else {
                    println!("device:        {}", device.id);
                    println!("state:         {}", state(&device));
                    println!("created_at_ms: {}", device.created_at_ms);
                    println!("updated_at_ms: {}", device.updated_at_ms);
                }
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
                    "device {id} has a new key (shown only this once) on stdout; the old one no longer works"
                );
                println!("{key}");
                Ok(())
            }
        }
    })
}

async fn set_disabled(registry: &DeviceRegistry, id: &str, disabled: bool) -> anyhow::Result<()> {
    let mut device = registry.get(id)?;
    device.disabled = disabled;
    device.updated_at_ms = now_ms();
    registry.put(&device).await?;
    println!("{} device {id}", if disabled { "disabled" } else { "enabled" });
    Ok(())
}

fn state(device: &Device) -> &'static str {
    if device.disabled {
        "disabled"
    } else {
        "enabled"
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}
