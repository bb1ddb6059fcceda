//! What operators deploy with — the Prometheus alerts (`deploy/prometheus`), the runbook they link
//! (`docs/runbook.md`), the Grafana dashboard (`deploy/grafana`) and the Kubernetes manifests
//! (`deploy/kubernetes`) — held against the worker itself.
//!
//! The rules' own behaviour is tested by Prometheus (`promtool test rules`, run by `.ci/run`); here
//! the question is whether these files still fit the worker: every metric an alert or a panel reads
//! is one a running worker really exports (read from its `/metrics`, so a renamed metric breaks the
//! build rather than the dashboard), every alert says what it means and links a runbook section that
//! exists, and the manifests use the worker's real setting names, ports and probe paths, as
//! `tests/it/compose.rs` does for Compose. No Kubernetes cluster or Grafana is needed: the files are
//! parsed.

use crate::common;

use common::*;
use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read_repo_file(relative: &str) -> String {
    let path = repo_path(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn yaml(relative: &str) -> Yaml {
    serde_yaml_ng::from_str(&read_repo_file(relative))
        .unwrap_or_else(|e| panic!("{relative} is not valid YAML: {e}"))
}

fn dashboard() -> Json {
    serde_json::from_str(&read_repo_file("deploy/grafana/job-closer.json"))
        .expect("deploy/grafana/job-closer.json is not valid JSON")
}

fn text(value: &Yaml) -> Option<String> {
    match value {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Number(n) => Some(n.to_string()),
        Yaml::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A sequence of scalars, as text.
fn texts(value: Option<&Yaml>) -> Vec<String> {
    seq(value).iter().filter_map(text).collect()
}

fn seq(value: Option<&Yaml>) -> Vec<Yaml> {
    value
        .and_then(Yaml::as_sequence)
        .cloned()
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------
// PromQL: which metric names an expression reads

/// Aggregation operators and binary/modifier keywords: never metric names, even when no `(`
/// follows them directly (`sum by (le) (...)`, `a and on (job) b`).
const PROMQL_KEYWORDS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
];

/// Keywords followed by a parenthesised list of label names, which are not metrics.
const PROMQL_LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Metric names an expression selects: identifiers that are not functions (followed by `(`), not
/// keywords, not label names (inside `{...}` or a grouping list), and not inside strings, ranges
/// (`[5m]`) or Grafana variables (`$job`, `${datasource}`). A small lexer rather than a parser:
/// it only has to tell those apart; promtool checks that the expressions parse at all.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let skip_until = |from: usize, close: char| -> usize {
        let mut j = from;
        let mut quote: Option<char> = None;
        while j < chars.len() {
            let c = chars[j];
            match quote {
                Some(_) if c == '\\' => j += 1,
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == '"' || c == '\'' || c == '`' => quote = Some(c),
                None if c == close => return j + 1,
                None => {}
            }
            j += 1;
        }
        j
    };
    let is_ident_start = |c: char| c.is_ascii_alphabetic() || c == '_' || c == ':';
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            // A string: find its end by skipping to the same quote outside escapes.
            let mut j = i + 1;
            while j < chars.len() && chars[j] != c {
                if chars[j] == '\\' {
                    j += 1;
                }
                j += 1;
            }
            i = j + 1;
        } else if c == '{' {
            i = skip_until(i + 1, '}');
        } else if c == '[' {
            i = skip_until(i + 1, ']');
        } else if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '$' {
            i += 1;
            if chars.get(i) == Some(&'{') {
                i = skip_until(i + 1, '}');
            } else {
                while i < chars.len() && is_ident(chars[i]) {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // Numbers and durations: 0.5, 1e3, 0x1f, 30m, 1h30m.
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if is_ident_start(c) {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let followed_by_paren = chars.get(next) == Some(&'(');
            if PROMQL_LABEL_LISTS.contains(&word.as_str()) {
                if followed_by_paren {
                    i = skip_until(next + 1, ')');
                }
            } else if PROMQL_KEYWORDS.contains(&word.to_ascii_lowercase().as_str())
                || followed_by_paren
            {
                // A keyword or a function call.
            } else {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn metric_names_finds_metrics_and_nothing_else() {
    let names = |e: &str| metric_names(e).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"histogram_quantile(0.95, sum by (le) (rate(job_closer_request_duration_seconds_bucket{job=~"$job", le!="+Inf"}[$__rate_interval])))"#
        ),
        ["job_closer_request_duration_seconds_bucket"]
    );
    assert_eq!(
        names(
            "min by (job, queue) (min_over_time(a{queue!~\".+\\\\.dead|x{y}\"}[15m])) > 0\nunless on (job)\nsum by (job) (increase(b[15m] offset 1h)) > 0"
        ),
        ["a", "b"]
    );
    assert_eq!(names("absent(up{job=\"job-closer\"} == 1)"), ["up"]);
    assert_eq!(
        names("$rate_limit - sum(increase(c[1m])) * 60 / ${x} + 1e3"),
        ["c"]
    );
    assert_eq!(
        names("x and on(instance) group_left(version) y or bool z"),
        ["x", "y", "z"]
    );
    assert_eq!(names("max(m) > time()"), ["m"]);
    assert_eq!(names("sum without (instance) (n)"), ["n"]);
}

/// `label_values(metric, label)` in a Grafana variable: the metric part only.
fn template_query_metrics(query: &str) -> BTreeSet<String> {
    match query
        .trim()
        .strip_prefix("label_values(")
        .and_then(|rest| rest.rsplit_once(','))
    {
        Some((metric, _label)) => metric_names(metric),
        None => metric_names(query),
    }
}

// ---------------------------------------------------------------------------
// The alert rules

struct Alert {
    name: String,
    expr: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

fn string_map(value: Option<&Yaml>) -> BTreeMap<String, String> {
    value
        .and_then(Yaml::as_mapping)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (text(k).unwrap_or_default(), text(v).unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default()
}

fn alerts() -> Vec<Alert> {
    let file = yaml("deploy/prometheus/alerts.yml");
    let mut alerts = Vec::new();
    for group in seq(file.get("groups")) {
        for rule in seq(group.get("rules")) {
            let Some(name) = rule.get("alert").and_then(text) else {
                continue;
            };
            alerts.push(Alert {
                name,
                expr: rule.get("expr").and_then(text).expect("alert without expr"),
                labels: string_map(rule.get("labels")),
                annotations: string_map(rule.get("annotations")),
            });
        }
    }
    assert!(
        alerts.len() >= 8,
        "alerts.yml holds only {} alerts",
        alerts.len()
    );
    alerts
}

/// GitHub's heading anchors: lower case, punctuation other than `-` and `_` dropped, spaces to `-`.
fn runbook_anchors() -> BTreeSet<String> {
    common::markdown::anchors(&read_repo_file("docs/runbook.md"))
}

#[test]
fn every_alert_says_what_it_means_and_links_a_runbook_section_that_exists() {
    let anchors = runbook_anchors();
    let mut names = BTreeSet::new();
    for alert in alerts() {
        assert!(names.insert(alert.name.clone()), "{} twice", alert.name);
        for key in ["summary", "description"] {
            let value = alert.annotations.get(key).map(|s| s.trim()).unwrap_or("");
            assert!(
                value.len() >= 20,
                "{}: annotation {key} is missing or says nothing: {value:?}",
                alert.name
            );
        }
        let severity = alert.labels.get("severity").map(String::as_str);
        assert!(
            matches!(severity, Some("warning" | "critical")),
            "{}: severity {severity:?}",
            alert.name
        );
        let runbook = alert
            .annotations
            .get("runbook_url")
            .unwrap_or_else(|| panic!("{} has no runbook_url", alert.name));
        let (file, fragment) = runbook
            .split_once('#')
            .unwrap_or_else(|| panic!("{}: runbook_url {runbook} has no #anchor", alert.name));
        assert!(
            file.ends_with("docs/runbook.md"),
            "{}: runbook_url {runbook} is not docs/runbook.md",
            alert.name
        );
        assert!(
            anchors.contains(fragment),
            "{}: docs/runbook.md has no section #{fragment}; it has {anchors:?}",
            alert.name
        );
        assert_eq!(
            fragment,
            common::markdown::slug(&alert.name),
            "{}: the runbook section is named after the alert",
            alert.name
        );
    }
}

#[test]
fn every_alert_has_a_promtool_unit_test_that_fires_it() {
    let tests = yaml("deploy/prometheus/alerts.test.yml");
    assert_eq!(texts(tests.get("rule_files")), ["alerts.yml"]);
    let mut fired = BTreeSet::new();
    for test in seq(tests.get("tests")) {
        for case in seq(test.get("alert_rule_test")) {
            if !seq(case.get("exp_alerts")).is_empty() {
                fired.insert(case.get("alertname").and_then(text).unwrap_or_default());
            }
        }
    }
    let unfired: Vec<String> = alerts()
        .into_iter()
        .map(|a| a.name)
        .filter(|name| !fired.contains(name))
        .collect();
    assert!(
        unfired.is_empty(),
        "alerts.test.yml never expects these to fire: {unfired:?}"
    );
}

#[test]
fn the_alerts_cover_what_the_issue_asks_for() {
    let exprs: Vec<String> = alerts().into_iter().map(|a| a.expr).collect();
    let reads = |metric: &str| exprs.iter().any(|e| metric_names(e).contains(metric));
    for metric in [
        "up",
        "job_closer_queue_messages",
        "job_closer_elements_closed_total",
        "job_closer_elements_dead_lettered_total",
        "job_closer_linkedin_blocked",
        "job_closer_throttled_until_seconds",
        "job_closer_requests_total",
        "job_closer_token_requests_total",
        "job_closer_broker_reconnects_total",
        "job_closer_tasks_verified_total",
    ] {
        assert!(reads(metric), "no alert reads {metric}");
    }
    assert!(
        exprs.iter().any(|e| e.contains("absent(")),
        "no alert notices a worker that has vanished from Prometheus altogether"
    );
}

// ---------------------------------------------------------------------------
// The dashboard

/// Every expression in the dashboard: panel targets (rows included) and variable queries.
fn dashboard_expressions(dashboard: &Json) -> Vec<(String, String)> {
    fn panels(list: &Json, out: &mut Vec<(String, String)>) {
        for panel in list.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?").to_owned();
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("panel {title:?} has a target without expr"));
                out.push((title.clone(), expr.to_owned()));
            }
            panels(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    panels(&dashboard["panels"], &mut out);
    out
}

fn dashboard_variable_queries(dashboard: &Json) -> Vec<String> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "query")
        .map(|v| {
            v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .expect("query variable without a query")
                .to_owned()
        })
        .collect()
}

#[test]
fn the_dashboard_is_well_formed_and_shows_what_the_issue_asks_for() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "job-closer");
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let id = panel["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} twice");
        let grid = &panel["gridPos"];
        for key in ["h", "w", "x", "y"] {
            assert!(grid[key].is_u64(), "panel {id} gridPos.{key}: {grid}");
        }
        assert!(
            grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap() <= 24,
            "panel {id} is wider than the 24-column grid"
        );
        if panel["type"] != "row" {
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "panel {id} must use the dashboard's datasource variable, not a fixed one"
            );
            for target in panel["targets"].as_array().expect("targets") {
                assert!(target["refId"].is_string(), "panel {id}: target refId");
            }
        }
    }
    let variables: BTreeSet<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    let exprs = dashboard_expressions(&dashboard);
    for (title, expr) in &exprs {
        for var in ["$job", "$rate_limit", "${datasource}"] {
            if expr.contains(var) {
                let name = var.trim_matches(|c| matches!(c, '$' | '{' | '}'));
                assert!(variables.contains(name), "{title}: uses {var}, not defined");
            }
        }
    }
    let shown: BTreeSet<String> = exprs.iter().flat_map(|(_, e)| metric_names(e)).collect();
    for metric in [
        "job_closer_elements_closed_total",
        "job_closer_elements_dead_lettered_total",
        "job_closer_queue_messages",
        "job_closer_requests_total",
        "job_closer_request_duration_seconds_bucket",
        "job_closer_batch_size_bucket",
        "job_closer_elements_sent_total",
        "job_closer_throttled_until_seconds",
        "job_closer_tasks_verified_total",
        "job_closer_broker_reconnects_total",
        "job_closer_linkedin_blocked",
    ] {
        assert!(shown.contains(metric), "no panel shows {metric}");
    }
}

/// promtool, which `.ci/run` installs; these tests need it as they need RabbitMQ.
fn promtool() -> &'static str {
    let found = std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "promtool not found on PATH: `apt-get install prometheus` (Debian) or run .ci/run, which installs it"
    );
    "promtool"
}

/// Grafana's variables replaced by what they stand for, so that Prometheus' own parser can check
/// the dashboard's expressions.
fn with_variables_resolved(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$rate_limit", "2000")
        .replace("$job", "job-closer")
}

#[test]
fn every_dashboard_expression_parses_as_promql() {
    let dashboard = dashboard();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (n, (_, expr)) in dashboard_expressions(&dashboard).iter().enumerate() {
        rules.push_str(&format!(
            "      - record: dashboard:expr{n}\n        expr: {}\n",
            serde_json::to_string(&with_variables_resolved(expr)).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-rules.yml");
    std::fs::write(&file, &rules).unwrap();
    let output = std::process::Command::new(promtool())
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "promtool refuses a dashboard expression:\n{}{}\n{rules}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

// ---------------------------------------------------------------------------
// Every metric read is one the worker exports

/// Sample names a `/metrics` page offers: those of its series, and those its `# TYPE` lines imply.
fn exported_names(metrics: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|suffix| format!("{name}{suffix}")));
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_owned());
        }
    }
    names
}

/// Metrics Prometheus makes itself for every target.
const PROMETHEUS_METRICS: &[&str] = &["up"];

#[tokio::test]
async fn every_metric_in_the_alerts_and_the_dashboard_is_exported_by_a_running_worker() {
    let scenario = Scenario::builder("deploy-metrics")
        .set("METRICS_ADDR", "127.0.0.1:0")
        // A quick first task check, so that the task-status family has a series to show.
        .task_check_delay_ms(200)
        .await;
    let queues = &scenario.queues;
    let mut invalid = job("deploy-metrics-invalid");
    invalid.as_object_mut().unwrap().remove("title");
    queues
        .publish_jobs(&[job("deploy-metrics-1"), invalid])
        .await;
    let mut worker = scenario.spawn_worker();
    let base = metrics_base(&worker).await;
    let page = std::sync::Mutex::new(String::new());
    eventually(
        Duration::from_secs(60),
        "the close verified, the dead letter counted and the queue depths reported",
        || async {
            let text = get(&format!("{base}/metrics")).await.1;
            let done = text.contains("job_closer_tasks_verified_total{status=\"SUCCEEDED\"} 1")
                && text.contains("job_closer_elements_closed_total 1")
                && text.contains("job_closer_queue_messages{");
            *page.lock().unwrap() = text;
            done
        },
    )
    .await;
    let page = page.into_inner().unwrap();
    worker.terminate(Duration::from_secs(30)).await;
    scenario.cleanup().await;

    let exported = exported_names(&page);
    let mut read: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for alert in alerts() {
        for name in metric_names(&alert.expr) {
            read.entry(name)
                .or_default()
                .insert(format!("alert {}", alert.name));
        }
    }
    let dashboard = dashboard();
    for (title, expr) in dashboard_expressions(&dashboard) {
        for name in metric_names(&expr) {
            read.entry(name)
                .or_default()
                .insert(format!("panel {title:?}"));
        }
    }
    for query in dashboard_variable_queries(&dashboard) {
        for name in template_query_metrics(&query) {
            read.entry(name)
                .or_default()
                .insert("a dashboard variable".into());
        }
    }
    let missing: Vec<String> = read
        .iter()
        .filter(|(name, _)| {
            !exported.contains(name.as_str()) && !PROMETHEUS_METRICS.contains(&name.as_str())
        })
        .map(|(name, users)| format!("{name} (read by {users:?})"))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics the worker does not export:\n  {}\nthe worker exports: {exported:?}",
        missing.join("\n  ")
    );
}

// ---------------------------------------------------------------------------
// Kubernetes

const K8S: &str = "deploy/kubernetes";

/// Every document of every manifest, by kind.
fn manifests() -> BTreeMap<String, Vec<Yaml>> {
    let mut by_kind: BTreeMap<String, Vec<Yaml>> = BTreeMap::new();
    let dir = repo_path(K8S);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    for file in files {
        let content = std::fs::read_to_string(&file).unwrap();
        for document in serde_yaml_ng::Deserializer::from_str(&content) {
            let value = serde::Deserialize::deserialize(document)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let value: Yaml = value;
            if value.is_null() {
                continue;
            }
            let kind = value
                .get("kind")
                .and_then(text)
                .unwrap_or_else(|| panic!("{}: a document without kind", file.display()));
            by_kind.entry(kind).or_default().push(value);
        }
    }
    by_kind
}

fn one<'a>(manifests: &'a BTreeMap<String, Vec<Yaml>>, kind: &str) -> &'a Yaml {
    match manifests.get(kind).map(Vec::as_slice) {
        Some([only]) => only,
        other => panic!(
            "deploy/kubernetes must hold exactly one {kind}, found {}",
            other.map_or(0, <[Yaml]>::len)
        ),
    }
}

fn at<'a>(value: &'a Yaml, path: &[&str]) -> &'a Yaml {
    path.iter().fold(value, |v, key| {
        v.get(*key)
            .unwrap_or_else(|| panic!("missing {} in {v:?}", path.join(".")))
    })
}

fn labels(value: &Yaml) -> BTreeMap<String, String> {
    string_map(Some(value))
}

/// Whether `selector` (matchLabels) selects an object with `labels`.
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn worker_container(deployment: &Yaml) -> &Yaml {
    let containers = at(deployment, &["spec", "template", "spec", "containers"])
        .as_sequence()
        .expect("containers");
    containers
        .iter()
        .find(|c| c.get("name").and_then(text).as_deref() == Some("job-closer"))
        .expect("a container named job-closer")
}

/// The container's environment: name → literal value, or `None` when it comes from elsewhere.
fn container_env(container: &Yaml) -> Vec<(String, Option<String>, Yaml)> {
    seq(container.get("env"))
        .into_iter()
        .map(|e| {
            (
                e.get("name").and_then(text).expect("env name"),
                e.get("value").and_then(text),
                e,
            )
        })
        .collect()
}

fn env_literal(container: &Yaml, name: &str) -> Option<String> {
    container_env(container)
        .into_iter()
        .find(|(n, _, _)| n == name)
        .and_then(|(_, v, _)| v)
}

/// The environment variables `job-closer run` reads, from its own `--help`.
fn run_env_names() -> BTreeSet<String> {
    let help = run_help();
    let names: BTreeSet<String> = help
        .split("[env: ")
        .skip(1)
        .filter_map(|rest| rest.split(['=', ']']).next())
        .map(str::to_owned)
        .collect();
    assert!(
        names.contains("SHUTDOWN_TIMEOUT_MS") && names.contains("METRICS_ADDR"),
        "cannot read the settings from `run --help`:\n{help}"
    );
    names
}

/// `run --help`'s default for a setting, e.g. `[default: 30000]`.
fn run_default(flag: &str) -> String {
    let help = run_help();
    let at = help
        .find(&format!("--{flag} "))
        .unwrap_or_else(|| panic!("--{flag} not in run --help"));
    let rest = &help[at..];
    let start = rest.find("[default: ").expect("a default") + "[default: ".len();
    rest[start..].split(']').next().unwrap().to_owned()
}

/// A Kubernetes memory quantity in bytes (`64Mi`, `128M`, `1Gi`, plain bytes).
fn bytes(quantity: &str) -> f64 {
    let units: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
    ];
    for (suffix, factor) in units {
        if let Some(n) = quantity.strip_suffix(suffix) {
            return n.parse::<f64>().expect("quantity") * factor;
        }
    }
    quantity.parse().expect("quantity")
}

/// The benchmark's measured peak RSS of `job-closer run`, in MiB, from docs/performance.md's table.
fn measured_peak_rss_mib() -> f64 {
    let performance = read_repo_file("docs/performance.md");
    let row = performance
        .lines()
        .find(|l| l.trim_start().starts_with("| peak RSS, MiB"))
        .expect("docs/performance.md's table has no `peak RSS, MiB` row");
    row.split('|')
        .map(str::trim)
        .rfind(|cell| !cell.is_empty())
        .and_then(|cell| cell.parse().ok())
        .unwrap_or_else(|| panic!("no figure in {row:?}"))
}

#[test]
fn the_deployment_runs_two_hot_standby_replicas_with_the_worker_settings() {
    let manifests = manifests();
    let deployment = one(&manifests, "Deployment");
    assert_eq!(
        at(deployment, &["spec", "replicas"]).as_u64(),
        Some(2),
        "two replicas"
    );
    let container = worker_container(deployment);
    assert_eq!(texts(container.get("args")), ["run"]);
    let image = container.get("image").and_then(text).expect("image");
    assert!(
        image.ends_with(&format!(":{}", env!("CARGO_PKG_VERSION"))),
        "image {image} is not tagged with this version, {}",
        env!("CARGO_PKG_VERSION")
    );

    let known = run_env_names();
    let env = container_env(container);
    let names: Vec<&str> = env.iter().map(|(n, _, _)| n.as_str()).collect();
    // A name the worker does not read is silently ignored: a typo would leave a default in place.
    // Only RUST_LOG (read by the logger) and variables other values expand with $(NAME) are allowed
    // beside the worker's own.
    let expanded: BTreeSet<String> = env
        .iter()
        .filter_map(|(_, v, _)| v.as_deref())
        .flat_map(|v| v.split("$(").skip(1).filter_map(|r| r.split(')').next()))
        .map(str::to_owned)
        .collect();
    for name in &names {
        assert!(
            known.contains(*name) || *name == "RUST_LOG" || expanded.contains(*name),
            "env {name} is not a setting of `job-closer run` (see run --help)"
        );
    }
    for name in &expanded {
        assert!(
            names.contains(&name.as_str()),
            "$({name}) is expanded but not defined before"
        );
    }
    // Spelled out in the manifest or left to the worker's default: either way hot standbys.
    let single_active_consumer = env_literal(container, "SINGLE_ACTIVE_CONSUMER")
        .unwrap_or_else(|| run_default("single-active-consumer"));
    assert_eq!(
        single_active_consumer, "true",
        "two replicas must be hot standbys: one token and one rate limit, as LinkedIn asks"
    );
    // Each replica needs its own connection name: the default names the host (the pod).
    let connection_name = env_literal(container, "AMQP_CONNECTION_NAME")
        .unwrap_or_else(|| run_default("amqp-connection-name"));
    assert!(
        connection_name.contains("{hostname}") || connection_name.contains("$("),
        "replicas would share the AMQP connection name {connection_name:?}"
    );
    assert!(
        !names.contains(&"LINKEDIN_CLIENT_SECRET"),
        "the client secret goes through LINKEDIN_CLIENT_SECRET_FILE, never the environment"
    );
    // The broker password is not in the manifest: AMQP_URL has none, and a file brings it.
    let amqp_url = env_literal(container, "AMQP_URL").expect("AMQP_URL");
    for node in amqp_url.split(',') {
        let url = url::Url::parse(node.trim()).unwrap_or_else(|e| panic!("AMQP_URL {node}: {e}"));
        assert_eq!(url.password(), None, "AMQP_URL holds a password: {node}");
    }
    assert!(
        names.contains(&"AMQP_PASSWORD_FILE") || names.contains(&"AMQP_URL_FILE"),
        "the broker password must come from a file (AMQP_PASSWORD_FILE or AMQP_URL_FILE)"
    );

    // Graceful shutdown fits in the grace period.
    let shutdown_ms: u64 = env_literal(container, "SHUTDOWN_TIMEOUT_MS")
        .unwrap_or_else(|| run_default("shutdown-timeout-ms"))
        .parse()
        .unwrap();
    let grace = at(
        deployment,
        &["spec", "template", "spec", "terminationGracePeriodSeconds"],
    )
    .as_u64()
    .expect("terminationGracePeriodSeconds");
    assert!(
        grace * 1000 > shutdown_ms,
        "terminationGracePeriodSeconds {grace} must exceed SHUTDOWN_TIMEOUT_MS {shutdown_ms}, or Kubernetes kills the worker mid-shutdown"
    );

    // Rolling updates start the new standby before stopping an old replica.
    assert_eq!(
        at(
            deployment,
            &["spec", "strategy", "rollingUpdate", "maxUnavailable"]
        )
        .as_u64(),
        Some(0)
    );
}

#[test]
fn the_probes_and_the_metrics_port_match_metrics_addr() {
    let manifests = manifests();
    let deployment = one(&manifests, "Deployment");
    let container = worker_container(deployment);
    let metrics_addr: std::net::SocketAddr = env_literal(container, "METRICS_ADDR")
        .expect(
            "METRICS_ADDR: the default 127.0.0.1 is unreachable from the kubelet and Prometheus",
        )
        .parse()
        .expect("METRICS_ADDR host:port");
    assert!(
        metrics_addr.ip().is_unspecified(),
        "METRICS_ADDR must listen on all interfaces in a pod: {metrics_addr}"
    );
    let ports = seq(container.get("ports"));
    let metrics_port = ports
        .iter()
        .find(|p| p.get("name").and_then(text).as_deref() == Some("metrics"))
        .expect("a container port named metrics");
    assert_eq!(
        metrics_port.get("containerPort").and_then(Yaml::as_u64),
        Some(u64::from(metrics_addr.port())),
        "containerPort differs from METRICS_ADDR"
    );
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = at(container, &[probe, "httpGet"]);
        assert_eq!(
            get.get("path").and_then(text).as_deref(),
            Some(path),
            "{probe}"
        );
        let port = get.get("port").and_then(text).expect("probe port");
        assert!(
            port == "metrics" || port == metrics_addr.port().to_string(),
            "{probe} probes port {port}, not METRICS_ADDR's"
        );
    }
    // The Dockerfile's EXPOSE is the same port (tests/it/compose.rs ties it to the image's METRICS_ADDR).
    let dockerfile = read_repo_file("Dockerfile");
    assert!(
        dockerfile
            .lines()
            .any(|l| l.trim() == format!("EXPOSE {}", metrics_addr.port())),
        "the image does not EXPOSE {}",
        metrics_addr.port()
    );
}

#[test]
fn the_pod_runs_as_the_images_non_root_user_on_a_read_only_root() {
    let manifests = manifests();
    let deployment = one(&manifests, "Deployment");
    let pod = at(deployment, &["spec", "template", "spec"]);
    let container = worker_container(deployment);
    let security = at(container, &["securityContext"]);
    assert_eq!(
        security
            .get("readOnlyRootFilesystem")
            .and_then(Yaml::as_bool),
        Some(true)
    );
    assert_eq!(
        security
            .get("allowPrivilegeEscalation")
            .and_then(Yaml::as_bool),
        Some(false)
    );
    let non_root = security.get("runAsNonRoot").or_else(|| {
        pod.get("securityContext")
            .and_then(|s| s.get("runAsNonRoot"))
    });
    assert_eq!(non_root.and_then(Yaml::as_bool), Some(true));
    let dropped = texts(security.get("capabilities").and_then(|c| c.get("drop")));
    assert_eq!(dropped, ["ALL"]);
    let image_user = read_repo_file("Dockerfile")
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("USER ").map(str::to_owned))
        .expect("Dockerfile USER");
    let image_uid: u64 = image_user.split(':').next().unwrap().parse().unwrap();
    let run_as = security
        .get("runAsUser")
        .or_else(|| pod.get("securityContext").and_then(|s| s.get("runAsUser")))
        .and_then(Yaml::as_u64);
    assert_eq!(
        run_as,
        Some(image_uid),
        "runAsUser differs from the image's USER"
    );
}

#[test]
fn resources_are_sized_from_the_measured_memory() {
    let manifests = manifests();
    let container = worker_container(one(&manifests, "Deployment"));
    let peak = measured_peak_rss_mib() * 1024.0 * 1024.0;
    let request = bytes(
        &at(container, &["resources", "requests", "memory"])
            .as_str()
            .map(str::to_owned)
            .expect("memory request"),
    );
    let limit = bytes(
        &at(container, &["resources", "limits", "memory"])
            .as_str()
            .map(str::to_owned)
            .expect("memory limit"),
    );
    assert!(
        at(container, &["resources", "requests", "cpu"])
            .as_str()
            .is_some(),
        "a CPU request"
    );
    // Headroom above the benchmark's peak (a backlog drain at full prefetch), without a limit so far
    // above it that a leak would go unnoticed for days.
    assert!(
        request >= 2.0 * peak,
        "memory request {request} B is under twice the measured peak {peak} B"
    );
    assert!(
        limit >= request && limit >= 4.0 * peak && limit <= 10.0 * peak,
        "memory limit {limit} B is not 4-10x the measured peak {peak} B"
    );
}

#[test]
fn the_secrets_arrive_as_files_from_the_secret() {
    let manifests = manifests();
    let deployment = one(&manifests, "Deployment");
    let secret = one(&manifests, "Secret");
    let secret_name = at(secret, &["metadata", "name"])
        .as_str()
        .unwrap()
        .to_owned();
    let secret_keys: BTreeSet<String> = secret
        .get("stringData")
        .or_else(|| secret.get("data"))
        .and_then(Yaml::as_mapping)
        .expect("Secret data")
        .keys()
        .filter_map(text)
        .collect();
    let container = worker_container(deployment);
    let volumes = seq(at(deployment, &["spec", "template", "spec", "volumes"]).into());
    let mut files = 0;
    for setting in [
        "LINKEDIN_CLIENT_SECRET_FILE",
        "AMQP_PASSWORD_FILE",
        "AMQP_URL_FILE",
    ] {
        let Some(file) = env_literal(container, setting) else {
            continue;
        };
        files += 1;
        let file = Path::new(&file);
        let mount = seq(container.get("volumeMounts"))
            .into_iter()
            .find(|m| {
                m.get("mountPath")
                    .and_then(text)
                    .is_some_and(|p| file.parent() == Some(Path::new(&p)))
            })
            .unwrap_or_else(|| {
                panic!(
                    "{setting}: no volume is mounted where {} is",
                    file.display()
                )
            });
        assert_eq!(mount.get("readOnly").and_then(Yaml::as_bool), Some(true));
        let volume_name = mount.get("name").and_then(text).unwrap();
        let volume = volumes
            .iter()
            .find(|v| v.get("name").and_then(text).as_deref() == Some(volume_name.as_str()))
            .expect("the mounted volume");
        let source = at(volume, &["secret"]);
        assert_eq!(
            source.get("secretName").and_then(text).as_deref(),
            Some(secret_name.as_str()),
            "{setting}"
        );
        let file_name = file.file_name().unwrap().to_str().unwrap();
        let items = seq(source.get("items"));
        let key = if items.is_empty() {
            file_name.to_owned()
        } else {
            items
                .iter()
                .find(|i| i.get("path").and_then(text).as_deref() == Some(file_name))
                .and_then(|i| i.get("key").and_then(text))
                .unwrap_or_else(|| panic!("{setting}: the volume does not project {file_name}"))
        };
        assert!(
            secret_keys.contains(&key),
            "{setting}: the Secret has no key {key}: {secret_keys:?}"
        );
    }
    assert!(
        files >= 2,
        "the client secret and the broker password come from files"
    );
    // Every secretKeyRef names this Secret and one of its keys.
    for (name, _, entry) in container_env(container) {
        if let Some(reference) = entry.get("valueFrom").and_then(|v| v.get("secretKeyRef")) {
            assert_eq!(
                reference.get("name").and_then(text).as_deref(),
                Some(secret_name.as_str()),
                "{name}"
            );
            let key = reference.get("key").and_then(text).unwrap();
            assert!(
                secret_keys.contains(&key),
                "{name}: no key {key} in the Secret"
            );
        }
    }
}

#[test]
fn the_service_the_budget_and_the_service_monitor_find_the_pods() {
    let manifests = manifests();
    let deployment = one(&manifests, "Deployment");
    let pod_labels = labels(at(deployment, &["spec", "template", "metadata", "labels"]));
    assert!(selects(
        &labels(at(deployment, &["spec", "selector", "matchLabels"])),
        &pod_labels
    ));

    let budget = one(&manifests, "PodDisruptionBudget");
    assert!(
        selects(
            &labels(at(budget, &["spec", "selector", "matchLabels"])),
            &pod_labels
        ),
        "the PodDisruptionBudget selects no worker pod"
    );
    let min_available = at(budget, &["spec", "minAvailable"]).as_u64().unwrap();
    let replicas = at(deployment, &["spec", "replicas"]).as_u64().unwrap();
    assert!(
        (1..replicas).contains(&min_available),
        "minAvailable {min_available} with {replicas} replicas: a drain must keep one and may evict one"
    );

    let service = one(&manifests, "Service");
    assert!(
        selects(&labels(at(service, &["spec", "selector"])), &pod_labels),
        "the Service selects no worker pod"
    );
    assert_eq!(
        service
            .get("spec")
            .and_then(|s| s.get("publishNotReadyAddresses"))
            .and_then(Yaml::as_bool),
        Some(true),
        "a worker reconnecting to the broker is not ready, and that is when its metrics matter"
    );
    let service_ports = seq(at(service, &["spec", "ports"]).into());
    let metrics = service_ports
        .iter()
        .find(|p| p.get("name").and_then(text).as_deref() == Some("metrics"))
        .expect("a Service port named metrics");
    let target = metrics.get("targetPort").and_then(text).unwrap();
    let container = worker_container(deployment);
    let container_ports = seq(container.get("ports"));
    assert!(
        container_ports.iter().any(|p| {
            p.get("name").and_then(text).as_deref() == Some(target.as_str())
                || p.get("containerPort").and_then(text).as_deref() == Some(target.as_str())
        }),
        "the Service's targetPort {target} is no container port"
    );
    // The alerts select job="job-closer": the scrape job the Service's name gives.
    let service_name = at(service, &["metadata", "name"]).as_str().unwrap();
    for alert in alerts() {
        if alert.expr.contains("job=\"") {
            assert!(
                alert.expr.contains(&format!("job=\"{service_name}\"")),
                "{} selects another job than the Service {service_name}",
                alert.name
            );
        }
    }

    let monitor = one(&manifests, "ServiceMonitor");
    assert!(
        selects(
            &labels(at(monitor, &["spec", "selector", "matchLabels"])),
            &labels(at(service, &["metadata", "labels"]))
        ),
        "the ServiceMonitor selects no Service"
    );
    let endpoints = seq(at(monitor, &["spec", "endpoints"]).into());
    assert!(endpoints.iter().any(|e| {
        e.get("port").and_then(text).as_deref() == Some("metrics")
            && e.get("path").and_then(text).as_deref() == Some("/metrics")
    }));

    // kustomization.yaml lists files that exist.
    let kustomization = yaml(&format!("{K8S}/kustomization.yaml"));
    for resource in seq(kustomization.get("resources")) {
        let file = text(&resource).unwrap();
        assert!(repo_path(&format!("{K8S}/{file}")).exists(), "{file}");
    }
}
