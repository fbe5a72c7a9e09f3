//! The device gateway: devices connect over MQTT 3.1.1 or 5, authenticate with a per-device
//! key, and every message they publish is appended to a topic of a Kafka-compatible cluster
//! before it is acknowledged.
//!
//! The gateway is a Kafka client ([`append::KafkaAppender`], [`registry::DeviceRegistry`]), so
//! it runs inside `tidewater serve` against the embedded broker or standalone (`tidewater
//! gateway`) in front of any Kafka-compatible cluster. It keeps no copy of the events.
//!
//! - [`device`]: a device record, key generation, salted hashes, constant-time checks.
//! - [`registry`]: the `_tidewater_devices` topic and the live in-memory map gateways follow.
//! - [`auth`]: CONNECT decisions, with the MQTT reason code of each refusal.
//! - [`route`]: which PUBLISH goes where, with the authenticated device id stamped in.
//! - [`append`]: queue in order, learn when durable.
//! - [`mqtt`]: the listener and its connections.

pub mod append;
pub mod auth;
pub mod device;
pub mod mqtt;
pub mod registry;
pub mod route;

pub use append::{Appender, KafkaAppender, MemoryAppender};
pub use device::Device;
pub use mqtt::MqttConfig;
pub use registry::{DeviceRegistry, Directory, DEVICES_TOPIC};
