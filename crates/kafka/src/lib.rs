//! Tidewater's Kafka protocol server: framing, version negotiation, request decoding and
//! dispatch, response encoding, and connection limits.
//!
//! Architecture invariant: this crate holds no business state. It knows what a frame, a request
//! header and a supported version are; what a produce *does* is the `Handler`'s business (the
//! broker crate). Message types come from the `kafka-protocol` crate and are re-exported so the
//! broker does not depend on it separately.

pub mod authentication;
pub mod codec;
pub mod encoded;
pub mod file_records;
pub mod frame;
pub mod listener;
mod metrics;
mod send_file;
pub mod server;
pub mod versions;

pub use kafka_protocol;
pub use kafka_protocol::ResponseError;

pub use crate::codec::{decode_request, encode_response, DecodeError, Request};
pub use crate::encoded::{Chunk, EncodedResponse};
pub use crate::file_records::{FileRecordSets, FileRecords};
pub use crate::listener::{ListenerAddress, ListenerConfig, ListenerInfo, SaslSettings, SecurityProtocol};
pub use crate::server::{serve, ConnectionInfo, Handler, Reply, ReplyFuture, ServerConfig, Turn, TurnQueue};
pub use crate::versions::{ApiRange, SupportedVersions};
