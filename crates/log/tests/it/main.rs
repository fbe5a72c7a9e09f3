//! The log crate's integration tests, one binary with a module per concern.

mod basics;
mod compaction;
mod compaction_model;
mod crash;
mod faults;
mod model;
