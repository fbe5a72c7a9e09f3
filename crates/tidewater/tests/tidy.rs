//! What clippy cannot see, checked on the source tree (as rust-analyzer's `tidy.rs` does):
//!
//! - **Layering.** Every crate's `Cargo.toml` against the table in ARCHITECTURE.md's "Layering"
//!   section, which is the source of truth: the Tidewater crates each crate may depend on, and
//!   whether it may depend on an async runtime or on librdkafka. A crate missing from the table,
//!   or a row naming no crate, fails too, so a new crate has to be placed in the layering.
//! - **Docs that name files.** ARCHITECTURE.md and every crate's README.md are read paragraph by
//!   paragraph (fenced code blocks left out); a file or directory a paragraph names (`foo.rs`,
//!   `src/...`, `tests/it/`) must exist, in the crate the paragraph is about (ARCHITECTURE.md's
//!   `### \`crates/...\`` section, or the README's own crate) or from the repository root.
//! - **Module docs.** Every `.rs` file under a crate's `src/` starts with a `//!` paragraph
//!   (STYLE.md 9).
//!
//! All are plain text reads; nothing here builds or runs anything.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Crates that are, or bring, an async runtime.
const ASYNC_RUNTIMES: &[&str] = &["tokio", "tokio-rustls", "tokio-util", "hyper-util", "async-std", "smol"];
/// The Kafka client library (its safe wrapper and its C bindings).
const LIBRDKAFKA: &[&str] = &["rdkafka", "rdkafka-sys"];
/// Extensions of the files a doc paragraph may name.
const FILE_EXTENSIONS: &[&str] = &["rs", "toml", "md", "py", "mjs", "sh", "json"];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the repository root")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|error| panic!("reading {}: {error}", path.display()))
}

// --- layering ------------------------------------------------------------------------------------

/// A crate's row of the layering table.
#[derive(Debug)]
struct Rule {
    /// `None`: any Tidewater crate (the binary).
    allowed: Option<BTreeSet<String>>,
    async_runtime: bool,
    librdkafka: bool,
}

/// The rows of the table under `## Layering` in ARCHITECTURE.md: `| \`crate\` | \`dep\`, ... |
/// yes/no | yes/no |`, "any" in the second column for every crate, "-" for none.
fn layering_table(architecture: &str) -> BTreeMap<String, Rule> {
    let architecture = format!("\n{architecture}");
    let section = architecture
        .split("\n## ")
        .find(|section| section.starts_with("Layering"))
        .expect("ARCHITECTURE.md has a \"## Layering\" section");
    let mut rules = BTreeMap::new();
    for line in section.lines().filter(|line| line.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let [name, allowed, async_runtime, librdkafka] = cells[..] else {
            panic!("a layering row needs four cells: {line}")
        };
        let names = |cell: &str| -> BTreeSet<String> {
            cell.split(',')
                .map(|name| name.trim().trim_matches('`').to_string())
                .filter(|name| !name.is_empty())
                .collect()
        };
        let allowed = match allowed {
            "any" => None,
            "-" => Some(BTreeSet::new()),
            cell => Some(names(cell)),
        };
        let yes_no = |cell: &str| match cell {
            "yes" => true,
            "no" => false,
            other => panic!("expected yes or no, found {other:?} in: {line}"),
        };
        let rule = Rule { allowed, async_runtime: yes_no(async_runtime), librdkafka: yes_no(librdkafka) };
        rules.insert(name.trim_matches('`').to_string(), rule);
    }
    assert!(!rules.is_empty(), "the Layering section of ARCHITECTURE.md has no table rows");
    rules
}

/// A crate's manifest as far as layering cares: its name and its dependencies, by section.
#[derive(Debug)]
struct Manifest {
    name: String,
    /// (section, dependency) pairs; the section is `dependencies`, `dev-dependencies`,
    /// `build-dependencies` or a `target.*.` one.
    dependencies: Vec<(String, String)>,
}

/// Reads what layering needs from a Cargo.toml, line by line: the workspace's manifests use
/// one line per dependency (`name.workspace = true`, `name = "1"`, `name = { ... }`).
fn parse_manifest(text: &str) -> Manifest {
    let mut section = String::new();
    let mut name = None;
    let mut dependencies = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[').and_then(|rest| rest.strip_suffix(']')) {
            section = header.trim().to_string();
            // `[dependencies.foo]`: the dependency is in the header.
            for kind in ["dependencies", "dev-dependencies", "build-dependencies"] {
                if let Some(dependency) = section.strip_prefix(&format!("{kind}.")) {
                    dependencies.push((kind.to_string(), dependency.to_string()));
                }
            }
            continue;
        }
        let Some((key, value)) = line.split_once('=') else { continue };
        let key = key.trim();
        if section == "package" && key == "name" {
            name = Some(value.trim().trim_matches('"').to_string());
        }
        if section.ends_with("dependencies") {
            let dependency = key.split('.').next().unwrap_or(key);
            // A renamed dependency (`alias = { package = "real", ... }`) is the real one.
            let real = value
                .split_once("package")
                .and_then(|(_, rest)| rest.split('"').nth(1))
                .unwrap_or(dependency);
            dependencies.push((section.clone(), real.to_string()));
        }
    }
    Manifest { name: name.expect("a [package] name"), dependencies }
}

/// What `manifest` breaks of `rules`, one line each.
fn layering_violations(manifest: &Manifest, rules: &BTreeMap<String, Rule>) -> Vec<String> {
    let Some(rule) = rules.get(&manifest.name) else {
        return vec![format!("{} has no row in ARCHITECTURE.md's layering table", manifest.name)];
    };
    let mut violations = Vec::new();
    for (section, dependency) in &manifest.dependencies {
        let normal = section == "dependencies" || section == "build-dependencies";
        if dependency.starts_with("tidewater") {
            if let Some(allowed) = &rule.allowed {
                if !allowed.contains(dependency) {
                    violations.push(format!(
                        "{} depends on {dependency} ([{section}]), which ARCHITECTURE.md's layering table does not allow",
                        manifest.name
                    ));
                }
            }
        } else if normal && !rule.async_runtime && ASYNC_RUNTIMES.contains(&dependency.as_str()) {
            violations.push(format!(
                "{} depends on the async runtime {dependency} ([{section}]); ARCHITECTURE.md's layering table says it must not",
                manifest.name
            ));
        } else if normal && !rule.librdkafka && LIBRDKAFKA.contains(&dependency.as_str()) {
            violations.push(format!(
                "{} depends on librdkafka ({dependency}, [{section}]); ARCHITECTURE.md's layering table says it must not",
                manifest.name
            ));
        }
    }
    violations
}

/// Every crate of the workspace: `crates/*/Cargo.toml` (the fuzz crates, outside the workspace,
/// are not layers).
fn workspace_manifests(root: &Path) -> Vec<(PathBuf, Manifest)> {
    let mut manifests: Vec<(PathBuf, Manifest)> = fs::read_dir(root.join("crates"))
        .expect("crates/")
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path().join("Cargo.toml"))
        .filter(|path| path.is_file())
        .map(|path| {
            let manifest = parse_manifest(&read(&path));
            (path, manifest)
        })
        .collect();
    manifests.sort_by(|left, right| left.0.cmp(&right.0));
    manifests
}

#[test]
fn every_crate_keeps_to_the_layering_in_architecture_md() {
    let root = repo_root();
    let rules = layering_table(&read(&root.join("ARCHITECTURE.md")));
    let manifests = workspace_manifests(&root);
    let mut violations: Vec<String> =
        manifests.iter().flat_map(|(_, manifest)| layering_violations(manifest, &rules)).collect();
    let names: BTreeSet<&str> = manifests.iter().map(|(_, manifest)| manifest.name.as_str()).collect();
    for name in rules.keys().filter(|name| !names.contains(name.as_str())) {
        violations
            .push(format!("ARCHITECTURE.md's layering table names {name}, which is no crate in crates/"));
    }
    assert!(violations.is_empty(), "layering broken:\n  {}", violations.join("\n  "));
}

#[test]
fn the_layering_check_finds_what_it_should() {
    let rules = layering_table(
        "## Layering\n\n| crate | may depend on | async runtime | librdkafka |\n|---|---|---|---|\n\
         | `tidewater-log` | - | no | no |\n| `tidewater-gateway` | `tidewater-client` | yes | yes |\n\
         | `tidewater` | any | yes | yes |\n\n## Next\n",
    );
    let check = |manifest: &str| layering_violations(&parse_manifest(manifest), &rules);
    let log = "[package]\nname = \"tidewater-log\"\n\n[dependencies]\ncrc32c.workspace = true\n";
    assert_eq!(check(log), Vec::<String>::new());
    let log_with_tokio = format!("{log}tokio = {{ workspace = true, features = [\"rt\"] }}\n");
    assert_eq!(check(&log_with_tokio).len(), 1, "{:?}", check(&log_with_tokio));
    let log_testing_with_tokio = format!("{log}\n[dev-dependencies]\ntokio.workspace = true\n");
    assert_eq!(check(&log_testing_with_tokio), Vec::<String>::new());
    let gateway =
        "[package]\nname = \"tidewater-gateway\"\n[dependencies]\ntidewater-client.workspace = true\n\
                   tidewater-broker.workspace = true\n[dev-dependencies.tidewater-log]\npath = \"../log\"\n";
    assert_eq!(check(gateway).len(), 2, "{:?}", check(gateway));
    let binary = "[package]\nname = \"tidewater\"\n[dependencies]\ntidewater-broker.workspace = true\n";
    assert_eq!(check(binary), Vec::<String>::new());
    let unknown = "[package]\nname = \"tidewater-new\"\n";
    assert_eq!(check(unknown).len(), 1);
}

// --- docs that name files ------------------------------------------------------------------------

/// The files and directories a paragraph names: words ending in one of [`FILE_EXTENSIONS`]
/// (`batch.rs`, `tests/client.rs`) and paths in backquotes that end in `/` (`admin/`,
/// `tests/it/`) or start at a crate's or the repository's top (`src/...`, `crates/...`).
fn named_files(paragraph: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let is_path_char = |char: char| char.is_ascii_alphanumeric() || "_-./".contains(char);
    for word in paragraph.split(|char: char| !is_path_char(char)) {
        let word = word.trim_end_matches('.');
        let Some((stem, extension)) = word.rsplit_once('.') else { continue };
        // Skip words like `e.g`, versions and Rust paths (`Log::open` has no dot anyway).
        if FILE_EXTENSIONS.contains(&extension) && !stem.is_empty() && !stem.ends_with('/') {
            names.insert(word.to_string());
        }
    }
    for (index, quoted) in paragraph.split('`').enumerate() {
        let in_backquotes = index % 2 == 1;
        let path_like = quoted.chars().all(is_path_char) && quoted.contains('/') && !quoted.starts_with('/');
        let rooted = ["src/", "tests/", "benches/", "crates/", "scripts/", "docs/", "vendor/", "fuzz/"]
            .iter()
            .any(|top| quoted.starts_with(top));
        if in_backquotes && path_like && (quoted.ends_with('/') || rooted) {
            names.insert(quoted.to_string());
        }
    }
    names
}

/// Every file and directory under `dir` (not `target/` or hidden ones), relative to it.
fn tree(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(entries) = fs::read_dir(&current) else { continue };
        for entry in entries.filter_map(|entry| entry.ok()) {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with('.') || name == "target" || name == "node_modules" {
                continue;
            }
            let relative = path.strip_prefix(dir).unwrap_or(&path).to_string_lossy().to_string();
            if path.is_dir() {
                found.push(format!("{relative}/"));
                stack.push(path);
            } else {
                found.push(relative);
            }
        }
    }
    found
}

/// Whether `name` exists from the repository root, or in `crate_dir` (as a path from its top or
/// as the end of a path in it: `batch.rs` is `src/batch.rs`, `it/` is `tests/it/`), or is a path
/// that git ignores there (what a tool makes when run, as cargo-fuzz's `fuzz/corpus/`). Outside
/// a crate's section (`crate_dir` is `None`), `tree` is the repository's, so a paragraph about
/// the whole project may name `robustness.rs` or `test_acls.py` on their own.
fn exists(name: &str, root: &Path, crate_dir: Option<&Path>, tree: &[String]) -> bool {
    let is_end_of = |path: &String| path == name || path.ends_with(&format!("/{name}"));
    if root.join(name).exists() {
        return true;
    }
    let Some(crate_dir) = crate_dir else { return tree.iter().any(is_end_of) };
    crate_dir.join(name).exists() || tree.iter().any(is_end_of) || git_ignores(&crate_dir.join(name), root)
}

/// Whether a `.gitignore` in a directory between the repository root and `path` lists the next
/// component of `path` below it (only the plain `name/` and `name` lines the tree uses).
fn git_ignores(path: &Path, root: &Path) -> bool {
    let Ok(relative) = path.strip_prefix(root) else { return false };
    let components: Vec<String> =
        relative.components().map(|component| component.as_os_str().to_string_lossy().to_string()).collect();
    (0..components.len()).any(|depth| {
        let dir = components[..depth].iter().fold(root.to_path_buf(), |dir, component| dir.join(component));
        let Ok(gitignore) = fs::read_to_string(dir.join(".gitignore")) else { return false };
        gitignore.lines().any(|line| line.trim().trim_end_matches('/') == components[depth])
    })
}

/// The paragraphs of a markdown text outside fenced code blocks, each with the line it starts on.
fn paragraphs(markdown: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    let mut in_fence = false;
    for (index, line) in markdown.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        if line.trim().is_empty() || line.starts_with('#') {
            if !current.is_empty() {
                found.push((start, std::mem::take(&mut current)));
            }
            if line.starts_with('#') {
                found.push((index + 1, line.to_string()));
            }
            continue;
        }
        if current.is_empty() {
            start = index + 1;
        }
        current.push_str(line);
        current.push('\n');
    }
    if !current.is_empty() {
        found.push((start, current));
    }
    found
}

/// Names in `markdown` (at `path`) that do not exist; `crate_dir` is the crate a README is in.
/// In ARCHITECTURE.md, a `### \`crates/NAME\`` heading makes `crates/NAME` the crate of the
/// paragraphs under it, until the next `##` or `###` heading.
fn missing_files(markdown: &str, path: &str, root: &Path, mut crate_dir: Option<PathBuf>) -> Vec<String> {
    let mut missing = Vec::new();
    let repository_tree = tree(root);
    let mut crate_tree = crate_dir.as_deref().map(tree).unwrap_or_else(|| repository_tree.clone());
    for (line, paragraph) in paragraphs(markdown) {
        if paragraph.starts_with("## ") || paragraph.starts_with("### ") {
            if path == "ARCHITECTURE.md" {
                crate_dir = paragraph
                    .split('`')
                    .nth(1)
                    .filter(|quoted| quoted.starts_with("crates/") && paragraph.starts_with("### "))
                    .map(|quoted| root.join(quoted));
                crate_tree = crate_dir.as_deref().map(tree).unwrap_or_else(|| repository_tree.clone());
            }
            continue;
        }
        for name in named_files(&paragraph) {
            if !exists(&name, root, crate_dir.as_deref(), &crate_tree) {
                let place = crate_dir
                    .as_deref()
                    .and_then(|dir| dir.strip_prefix(root).ok())
                    .map_or("the repository".to_string(), |dir| dir.display().to_string());
                missing.push(format!("{path}:{line}: names `{name}`, which is not in {place}"));
            }
        }
    }
    missing
}

#[test]
fn docs_name_only_files_that_exist() {
    let root = repo_root();
    let mut missing = missing_files(&read(&root.join("ARCHITECTURE.md")), "ARCHITECTURE.md", &root, None);
    let mut readmes: Vec<PathBuf> = tree(&root.join("crates"))
        .iter()
        .filter(|path| path.ends_with("README.md"))
        .map(|path| root.join("crates").join(path))
        .collect();
    readmes.sort();
    for readme in readmes {
        let relative = readme.strip_prefix(&root).unwrap_or(&readme).display().to_string();
        // A README speaks from its crate's top (`crates/NAME`), also when it is deeper in it
        // (`crates/kafka/fuzz/README.md`, `crates/sql/tests/queries/README.md`).
        let crate_dir = readme.strip_prefix(root.join("crates")).ok().and_then(|inside| {
            inside.components().next().map(|name| root.join("crates").join(name.as_os_str()))
        });
        missing.extend(missing_files(&read(&readme), &relative, &root, crate_dir));
    }
    assert!(missing.is_empty(), "docs name files that do not exist:\n  {}", missing.join("\n  "));
}

#[test]
fn file_names_are_found_in_prose_and_paths() {
    let names = named_files(
        "The binary: `cli.rs`, `tests/it/` and src/main.rs (see Cargo.toml), e.g. `Log::open`, \
         version 0.18, `admin/`, `tidewater_client::admin`, <data-dir>/.acls, ARCHITECTURE.md.",
    );
    let expected = ["ARCHITECTURE.md", "Cargo.toml", "admin/", "cli.rs", "src/main.rs", "tests/it/"];
    assert_eq!(names, expected.iter().map(|name| name.to_string()).collect::<BTreeSet<_>>());
}

// --- module docs ---------------------------------------------------------------------------------

#[test]
fn every_module_starts_with_a_doc_paragraph() {
    let root = repo_root();
    let mut undocumented: Vec<String> = tree(&root.join("crates"))
        .into_iter()
        .filter(|path| path.ends_with(".rs") && path.split('/').nth(1) == Some("src"))
        .filter(|path| {
            let text = read(&root.join("crates").join(path));
            !text.lines().find(|line| !line.trim().is_empty()).is_some_and(|line| line.starts_with("//!"))
        })
        .map(|path| format!("crates/{path}"))
        .collect();
    undocumented.sort();
    assert!(
        undocumented.is_empty(),
        "modules without a `//!` paragraph saying what they own (STYLE.md 9):\n  {}",
        undocumented.join("\n  ")
    );
}
