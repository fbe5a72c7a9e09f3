//! Consumer groups: the coordinator state machine and the durable committed offsets, behind one
//! lock each. The handlers in `handlers::groups` call into this.

pub mod coordinator;
pub mod offsets;

pub use self::coordinator::{Coordinator, GroupConfig, GroupState};
pub use self::offsets::{CommittedOffset, OffsetStore};
