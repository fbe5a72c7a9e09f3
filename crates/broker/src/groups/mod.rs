//! Consumer groups: the coordinator state machines, the durable committed offsets and the
//! durable group metadata, behind one lock each. The handlers in `handlers::groups` call into
//! this.
//!
//! - `coordinator.rs`: classic groups (JoinGroup/SyncGroup), and the entry point for both kinds;
//! - `consumer_group.rs`: KIP-848's consumer protocol (ConsumerGroupHeartbeat), incremental;
//! - `assignor.rs`: its server-side assignors, `uniform` and `range`;
//! - `offsets.rs`: committed offsets, shared by both kinds;
//! - `metadata.rs`: each group's membership and assignment as a record, so a restart keeps them.

pub mod assignor;
pub mod consumer_group;
pub mod coordinator;
pub mod metadata;
pub mod offsets;

pub use self::consumer_group::ConsumerGroupConfig;
pub use self::coordinator::{Coordinator, GroupConfig, GroupState};
pub use self::metadata::GroupStore;
pub use self::offsets::{CommittedOffset, OffsetStore};
