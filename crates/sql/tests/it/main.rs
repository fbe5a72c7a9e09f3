//! The SQL engine's integration tests, one binary with a module per concern: the golden query
//! corpus, diagnostics, the public API's edge cases, and property tests of windows and of
//! MATCH_RECOGNIZE against brute-force models.

mod api;
mod corpus;
mod diagnostics;
mod patterns;
mod properties;

/// Every module of the crate starts with a `//!` paragraph (STYLE.md, "rules live in code").
#[test]
fn every_module_has_module_docs() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut undocumented = Vec::new();
    let mut n_modules = 0;
    // Submodules live in directories named after their parent (`plan/expr.rs`).
    let mut directories = vec![src];
    while let Some(directory) = directories.pop() {
        for entry in std::fs::read_dir(&directory).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                directories.push(path);
                continue;
            }
            n_modules += 1;
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            if !text.starts_with("//!") {
                undocumented.push(path.display().to_string());
            }
        }
    }
    assert!(n_modules > 10, "found only {n_modules} modules");
    assert!(undocumented.is_empty(), "modules without //! docs: {undocumented:?}");
}
