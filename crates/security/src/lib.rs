//! Tidewater's security building blocks, shared by every listener that authenticates: who a
//! connection is (`KafkaPrincipal`), and, as they arrive, the SASL mechanisms and the TLS
//! configuration.
//!
//! Architecture invariant: this crate does no I/O on sockets and holds no durable state. It
//! checks credentials it is handed and builds configurations; where credentials live (the
//! broker's store) and how bytes reach a connection (the protocol servers) is their callers'
//! business.

pub mod client_certificate;
mod principal;
pub mod principal_mapping;
pub mod sasl;
pub mod tls;

pub use crate::principal::{parse_principal_list, KafkaPrincipal, PrincipalError, ANONYMOUS_NAME, USER_TYPE};
