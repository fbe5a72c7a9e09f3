//! The SQL engine's integration tests, one binary with a module per concern: the golden query
//! corpus, diagnostics, the public API's edge cases, and property tests of windows against a
//! brute-force model.

mod api;
mod corpus;
mod diagnostics;
mod properties;
