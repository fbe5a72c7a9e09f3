//! Triggers: an action for every event of a topic, delivered at least once.
//!
//! A trigger is a consumer group member on its topic. Each event that passes its filter is
//! delivered by its action (a webhook, a local command, or a command to a device); failures are
//! retried with backoff and end in a dead-letter topic; an offset is committed only once every
//! event before it is done. Events with one key are delivered one at a time, in order; different
//! keys go in parallel up to the trigger's concurrency.
//!
//! - `definition`: what a trigger is (JSON), with defaults and validation.
//! - `filter`: the condition language.
//! - `dispatch`, `offsets`: the pure state machines for per-key order and safe commits.
//! - `action`, `cloudevent`, `signature`, `retry`: how one delivery attempt is made and judged.
//! - `runner`: one trigger's consumer loop; `supervisor`: many triggers following the registry;
//!   `registry`: the triggers and status topics; `stats`: counters and latency for the status
//!   records; `metrics`: the same for `/metrics`.

pub mod action;
pub mod cloudevent;
pub mod definition;
pub mod dispatch;
pub mod filter;
mod metrics;
pub mod offsets;
pub mod registry;
pub mod retry;
pub mod runner;
pub mod signature;
pub mod stats;
pub mod supervisor;

pub use definition::{Action, TriggerDefinition};
pub use registry::Registry;
pub use runner::{run_trigger, RunEnd};
pub use supervisor::{supervise, DefinitionSource, SupervisorOptions};
