//! Docs that cannot rot: README.md and docs/*.md are held to the tree and to the worker.
//!
//! - Every relative link points at a file or folder that exists, and every `#anchor` at a heading
//!   of the page it names (GitHub's anchors: see [`common::markdown::slug`]).
//! - Every setting the worker reads — each `env` of the clap definitions, for every command, taken
//!   from `job_closer::Cli` through `clap::CommandFactory`, plus `job_closer::ENVIRONMENT_ONLY` —
//!   is in `docs/configuration.md`'s settings tables (the tables with an `env` column), and so
//!   named on a docs page; and every setting in a settings table of any page is one the worker
//!   reads.
//! - README.md links every page of docs/: it is the map.
//!
//! The checks are functions of a tree (a root holding README.md and docs/), so each is also run on a
//! small tree of its own in a temporary directory, broken on purpose, to show that it fails.
//! Rejected: comparing against `run --help` text (as tests/it/deploy.rs does for the manifests), which
//! sees one command's settings only; `dlq serve` and `sandbox` have their own.

use crate::common;

use clap::CommandFactory;
use common::markdown::{self, anchors, links, slug, tables};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// README.md and every docs/*.md under `root`, sorted.
fn pages(root: &Path) -> Vec<PathBuf> {
    let mut pages = vec![root.join("README.md")];
    let docs = root.join("docs");
    let mut more: Vec<PathBuf> = std::fs::read_dir(&docs)
        .unwrap_or_else(|e| panic!("reading {}: {e}", docs.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    more.sort();
    pages.extend(more);
    pages
}

fn shown(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// One line per broken link: a relative target that does not exist, or an anchor no heading of
/// the target page has. Links with a scheme (`https:`, `mailto:`) are not followed.
fn broken_links(root: &Path) -> Vec<String> {
    let mut broken = Vec::new();
    for page in pages(root) {
        let text = read_text(&page);
        let dir = page.parent().expect("a page's folder");
        for link in links(&text) {
            let target = link.target.as_str();
            if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, fragment) = match target.split_once('#') {
                Some((path, fragment)) => (path, Some(fragment)),
                None => (target, None),
            };
            let at = format!("{}:{}: {target}", shown(root, &page), link.line);
            let resolved = if path.is_empty() {
                page.clone()
            } else {
                dir.join(path)
            };
            if !resolved.exists() {
                broken.push(format!("{at}: {} does not exist", shown(root, &resolved)));
                continue;
            }
            let Some(fragment) = fragment else { continue };
            if resolved.extension().is_none_or(|ext| ext != "md") {
                continue;
            }
            if !anchors(&read_text(&resolved)).contains(fragment) {
                broken.push(format!(
                    "{at}: {} has no heading with the anchor #{fragment}",
                    shown(root, &resolved)
                ));
            }
        }
    }
    broken
}

/// Every environment name of the clap definitions, over every command and subcommand.
fn clap_settings() -> BTreeSet<String> {
    fn walk(command: &clap::Command, into: &mut BTreeSet<String>) {
        for arg in command.get_arguments() {
            if let Some(env) = arg.get_env() {
                into.insert(env.to_string_lossy().into_owned());
            }
        }
        for sub in command.get_subcommands() {
            walk(sub, into);
        }
    }
    let mut settings = BTreeSet::new();
    walk(&job_closer::Cli::command(), &mut settings);
    settings
}

/// What the worker reads: the clap settings and those read straight from the environment.
fn read_settings() -> BTreeSet<String> {
    let mut settings = clap_settings();
    settings.extend(job_closer::ENVIRONMENT_ONLY.iter().map(|s| s.to_string()));
    settings
}

/// `name` as a whole word of `text` (not a part of `X_NAME` or `NAME_FILE`).
fn names(text: &str, name: &str) -> bool {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(name).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + name.len()..].chars().next();
        !before.is_some_and(word) && !after.is_some_and(word)
    })
}

/// The settings no page under `root` names.
fn undocumented(read: &BTreeSet<String>, root: &Path) -> Vec<String> {
    let texts: Vec<String> = pages(root).iter().map(|page| read_text(page)).collect();
    read.iter()
        .filter(|setting| !texts.iter().any(|text| names(text, setting)))
        .cloned()
        .collect()
}

/// The settings of a page's settings tables — every table with an `env` column, each code span of
/// that column a setting — with where each is.
fn tabled_settings(root: &Path, page: &Path) -> Vec<(String, String)> {
    let text = read_text(page);
    let mut settings = Vec::new();
    for table in tables(&text) {
        let Some(column) = table.header.iter().position(|cell| cell == "env") else {
            continue;
        };
        for (line, row) in &table.rows {
            let cell = row.get(column).map(String::as_str).unwrap_or("");
            for name in markdown::code_spans(cell) {
                settings.push((name, format!("{}:{line}", shown(root, page))));
            }
        }
    }
    settings
}

/// The settings of `docs/configuration.md`'s tables: the page that documents every setting.
fn documented_settings(root: &Path) -> Vec<(String, String)> {
    tabled_settings(root, &root.join("docs/configuration.md"))
}

/// The settings in a settings table of any page (docs/configuration.md's, and a shorter one such
/// as README.md's first-run table) that the worker does not read.
fn documented_but_unread(read: &BTreeSet<String>, root: &Path) -> Vec<String> {
    pages(root)
        .iter()
        .flat_map(|page| tabled_settings(root, page))
        .filter(|(name, _)| !read.contains(name))
        .map(|(name, at)| format!("{at}: {name}"))
        .collect()
}

/// The docs/*.md pages README.md does not link.
fn unlisted_pages(root: &Path) -> Vec<String> {
    let readme = read_text(&root.join("README.md"));
    let linked: BTreeSet<String> = links(&readme)
        .into_iter()
        .map(|link| link.target.split('#').next().unwrap_or("").to_owned())
        .collect();
    pages(root)
        .iter()
        .skip(1)
        .map(|page| shown(root, page))
        .filter(|page| !linked.contains(page))
        .collect()
}

/// Fails listing `found`, one a line, unless it is empty.
fn none(found: &[String], what: &str) {
    assert!(found.is_empty(), "{what}:\n{}", found.join("\n"));
}

// ---- the repository's docs ----

#[test]
fn no_relative_link_or_anchor_in_the_docs_is_broken() {
    none(&broken_links(repo()), "broken links");
}

#[test]
fn every_setting_the_worker_reads_is_named_in_the_docs() {
    let read = read_settings();
    assert!(
        read.contains("AMQP_URL")
            && read.contains("DLQ_CONSOLE_LISTEN")
            && read.contains("SANDBOX_SEED"),
        "the clap definitions did not yield the settings of run, dlq serve and sandbox: {read:?}"
    );
    none(
        &undocumented(&read, repo()),
        "settings the worker reads that no docs page names (add them to docs/configuration.md)",
    );
}

#[test]
fn every_setting_documented_in_the_configuration_tables_is_read_by_the_worker() {
    let documented = documented_settings(repo());
    assert!(
        documented.len() >= 50,
        "docs/configuration.md's settings tables name only {} settings: is the `env` column gone?",
        documented.len()
    );
    none(
        &documented_but_unread(&read_settings(), repo()),
        "settings the docs' settings tables document that the worker does not read",
    );
    // And every one the worker reads is in those tables, not only named somewhere.
    let tabled: BTreeSet<String> = documented.into_iter().map(|(name, _)| name).collect();
    let untabled: Vec<String> = read_settings().difference(&tabled).cloned().collect();
    none(
        &untabled,
        "settings the worker reads that docs/configuration.md's tables leave out",
    );
}

#[test]
fn the_readme_links_every_docs_page() {
    none(
        &unlisted_pages(repo()),
        "docs pages README.md does not link",
    );
}

/// `ENVIRONMENT_ONLY` is true to the source: every `env::var("NAME")` / `var_os("NAME")` with a
/// literal name in src/ is listed (the proxy variables, read through a lookup, are listed by hand).
#[test]
fn environment_only_lists_every_variable_the_source_reads_by_name() {
    fn rust_files(dir: &Path, into: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("src/") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                rust_files(&path, into);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                into.push(path);
            }
        }
    }
    let mut files = Vec::new();
    rust_files(&repo().join("src"), &mut files);
    let mut found = BTreeSet::new();
    for file in &files {
        let text = read_text(file);
        for call in ["env::var(\"", "env::var_os(\""] {
            for (at, _) in text.match_indices(call) {
                let rest = &text[at + call.len()..];
                found.insert(rest.split('"').next().unwrap_or("").to_owned());
            }
        }
        if text.contains("EnvFilter::try_from_default_env") {
            found.insert("RUST_LOG".to_owned());
        }
    }
    assert!(
        found.contains("COLUMNS"),
        "found no env::var call in src/: {found:?}"
    );
    let listed: BTreeSet<String> = job_closer::ENVIRONMENT_ONLY
        .iter()
        .map(|s| s.to_string())
        .collect();
    let missing: Vec<String> = found.difference(&listed).cloned().collect();
    none(
        &missing,
        "src/ reads these from the environment; add them to ENVIRONMENT_ONLY in src/config.rs",
    );
    assert!(
        missing.is_empty(),
        "src/ reads {missing:?} from the environment; add them to ENVIRONMENT_ONLY in src/config.rs"
    );
}

// ---- the checks, shown to fail on a tree broken on purpose ----

/// A temporary tree with README.md and docs/ holding `pages` (name, text).
fn tree(readme: &str, pages: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("README.md"), readme).expect("README.md");
    std::fs::create_dir(dir.path().join("docs")).expect("docs/");
    for (name, text) in pages {
        std::fs::write(dir.path().join("docs").join(name), text).expect("a page");
    }
    dir
}

const GUIDE: &str = "# Guide\n\n## Running replicas\n\ntext\n\n## Settings\n\n## Settings\n\n\
```sh\n# not a heading\n[not](a-link.md)\n```\n\nSee `[code](nowhere.md)`.\n";

#[test]
fn the_link_check_passes_good_links_and_names_a_missing_file() {
    let good = tree(
        "# X\n\n[guide](docs/guide.md), [replicas](docs/guide.md#running-replicas), \
         [second settings](docs/guide.md#settings-1), [top](#x), [site](https://example.com/#nope)\n",
        &[("guide.md", GUIDE)],
    );
    assert_eq!(broken_links(good.path()), Vec::<String>::new());

    let bad = tree(
        "# X\n\nSee [the guide](docs/gide.md).\n",
        &[("guide.md", GUIDE)],
    );
    let broken = broken_links(bad.path());
    assert_eq!(broken.len(), 1, "{broken:?}");
    assert!(
        broken[0].starts_with("README.md:3: docs/gide.md") && broken[0].contains("does not exist"),
        "{broken:?}"
    );
}

#[test]
fn the_link_check_names_a_broken_anchor() {
    let bad = tree(
        "# X\n\n[a](docs/guide.md#running-replica) [b](#y)\n",
        &[(
            "guide.md",
            "# Guide\n\n## Running replicas\n\n[c](../README.md#x) [d](guide.md#settings-2)\n",
        )],
    );
    let broken = broken_links(bad.path());
    assert_eq!(
        broken,
        [
            "README.md:3: docs/guide.md#running-replica: docs/guide.md has no heading with the anchor #running-replica",
            "README.md:3: #y: README.md has no heading with the anchor #y",
            "docs/guide.md:5: guide.md#settings-2: docs/guide.md has no heading with the anchor #settings-2",
        ]
    );
}

fn settings(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|name| name.to_string()).collect()
}

#[test]
fn the_settings_check_names_an_undocumented_setting() {
    let read = settings(&["AMQP_URL", "AMQP_URL_FILE", "BATCH_SIZE"]);
    let docs = tree(
        "# X\n\nSet `AMQP_URL`.\n",
        &[(
            "configuration.md",
            "| env | meaning |\n|---|---|\n| `AMQP_URL_FILE` | a file |\n| `BATCH_SIZES` | typo |\n",
        )],
    );
    // BATCH_SIZE is only part of BATCH_SIZES: not named.
    assert_eq!(undocumented(&read, docs.path()), ["BATCH_SIZE"]);
}

#[test]
fn the_settings_check_names_a_documented_setting_the_worker_does_not_read() {
    let read = settings(&["AMQP_URL", "AMQP_TLS_CERT_FILE", "AMQP_TLS_KEY_FILE"]);
    let configuration = "# Configuration\n\n| flag | env | default | meaning |\n|---|---|---|---|\n\
             | `--amqp-url` | `AMQP_URL` | `amqp://…` | the broker |\n\
             | `--cert`, `--key` | `AMQP_TLS_CERT_FILE`, `AMQP_TLS_KEY_FILE` | unset | mutual TLS |\n\
             | `--frobnicate` | `AMQP_FROBNICATE` | `1` | read by nothing |\n\n\
             | metric | meaning |\n|---|---|\n| `NOT_A_SETTING` | another table |\n";
    let docs = tree(
        "# X\n\n| env | meaning |\n|---|---|\n| `AMQP_URL` | the broker |\n| `AMQP_URLS` | a typo |\n",
        &[("configuration.md", configuration)],
    );
    assert_eq!(
        documented_but_unread(&read, docs.path()),
        [
            "README.md:6: AMQP_URLS",
            "docs/configuration.md:7: AMQP_FROBNICATE"
        ]
    );
}

#[test]
fn the_readme_check_names_an_unlinked_page() {
    let docs = tree(
        "# X\n\n[a](docs/a.md)\n",
        &[("a.md", "# A\n"), ("b.md", "# B\n")],
    );
    assert_eq!(unlisted_pages(docs.path()), ["docs/b.md"]);
}

#[test]
fn anchors_follow_github() {
    assert_eq!(
        slug("Before the first start: `job-closer check`"),
        "before-the-first-start-job-closer-check"
    );
    assert_eq!(
        slug("Broker alarms (memory, disk)"),
        "broker-alarms-memory-disk"
    );
    assert_eq!(
        slug("How LinkedIn's answers are handled"),
        "how-linkedins-answers-are-handled"
    );
    assert_eq!(
        slug("`RETRY_MAX_MS` and [links](x.md)"),
        "retry_max_ms-and-links"
    );
    assert_eq!(slug("A — B"), "a--b");
    assert_eq!(
        anchors("# A\n## A\n### A ##\n```\n# A\n```\n    # indented code\n#NotAHeading\n"),
        ["a", "a-1", "a-2"].map(str::to_owned).into()
    );
}
