//! The SQL engine's integration tests, one binary with a module per concern: the golden query
//! corpus, diagnostics, the public API's edge cases, and property tests of windows against a
//! brute-force model.

mod api;
mod corpus;
mod diagnostics;
mod properties;

/// Every module of the crate starts with a `//!` paragraph (STYLE.md, "rules live in code").
#[test]
fn every_module_has_module_docs() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut undocumented = Vec::new();
    for entry in std::fs::read_dir(&src).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        if !text.starts_with("//!") {
            undocumented.push(entry.path().display().to_string());
        }
    }
    assert!(undocumented.is_empty(), "modules without //! docs: {undocumented:?}");
}
