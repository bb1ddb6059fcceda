//! Static checks of the deployment files (docker-compose.yml, Dockerfile,
//! .env.example, .dockerignore).
//!
//! No Docker engine is needed: the files are parsed and their wiring checked,
//! because a wrong host name, port or variable name there only shows up when
//! someone runs the stack, long after review.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_yaml_ng::Value;

/// Every environment variable the binary reads. A name outside this list is
/// silently ignored by the worker, so a typo would leave a setting at its
/// default without anyone noticing.
const KNOWN_ENV: &[&str] = &[
    "AMQP_URL",
    "CLOSE_QUEUE",
    "DEAD_LETTER_QUEUE",
    "LINKEDIN_API_URL",
    "LINKEDIN_API_VERSION",
    "LINKEDIN_TOKEN_URL",
    "LINKEDIN_CLIENT_ID",
    "LINKEDIN_CLIENT_SECRET",
    "LINKEDIN_CLIENT_SECRET_FILE",
    "BATCH_SIZE",
    "BATCH_LINGER_MS",
    "MAX_IN_FLIGHT",
    "RETRY_INITIAL_MS",
    "RETRY_MAX_MS",
    "RETRY_MAX_ELAPSED_MS",
    "RATE_LIMIT_PER_MINUTE",
    "METRICS_ADDR",
    "LOG_FORMAT",
    "RUST_LOG",
    "QUEUE_TYPE",
    "SINGLE_ACTIVE_CONSUMER",
    "SHUTDOWN_TIMEOUT_MS",
    "TASK_CHECK",
    "TASK_CHECK_DELAY_MS",
    "OUTCOME_EXCHANGE",
    "JOB_CLOSER_SANDBOX",
];

/// The worker's built-in shutdown timeout, used when compose does not set
/// SHUTDOWN_TIMEOUT_MS.
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

const BINARY: &str = "job-closer";

// ---------------------------------------------------------------------------
// Loading

fn read_repo_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn compose() -> Value {
    let text = read_repo_file("docker-compose.yml");
    serde_yaml_ng::from_str(&text).expect("docker-compose.yml is not valid YAML")
}

fn service<'a>(compose: &'a Value, name: &str) -> &'a Value {
    compose
        .get("services")
        .and_then(|s| s.get(name))
        .unwrap_or_else(|| panic!("docker-compose.yml has no service `{name}`"))
}

/// A scalar as Compose would see it: numbers and booleans become strings.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// Compose semantics the checks need

/// `environment:` in either of its two forms (mapping, or list of KEY=VALUE),
/// as (name, raw value) pairs; a bare `KEY` passes the host's value through.
fn environment(service: &Value) -> Vec<(String, Option<String>)> {
    match service.get("environment") {
        None => Vec::new(),
        Some(Value::Mapping(m)) => m
            .iter()
            .map(|(k, v)| (scalar(k).expect("environment key"), scalar(v)))
            .collect(),
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|item| {
                let s = scalar(item).expect("environment list item");
                match s.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (s, None),
                }
            })
            .collect(),
        Some(other) => panic!("environment has an unexpected shape: {other:?}"),
    }
}

fn env_value(service: &Value, name: &str) -> Option<String> {
    environment(service)
        .into_iter()
        .find(|(k, _)| k == name)
        .and_then(|(_, v)| v)
}

/// Compose interpolation with an empty host environment: each `${VAR:-x}` or
/// `${VAR-x}` becomes its default x, other references become empty, `$$` is a
/// literal `$`. Returns the result and the variable names referenced, which
/// is what the file means when nobody overrides anything.
fn interpolate_defaults(s: &str) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut names = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix('{') {
            let end = r
                .find('}')
                .unwrap_or_else(|| panic!("unclosed ${{ in {s:?}"));
            let expr = &r[..end];
            rest = &r[end + 1..];
            let name_len = expr
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(expr.len());
            let (name, op) = expr.split_at(name_len);
            names.push(name.to_string());
            if let Some(default) = op.strip_prefix(":-").or_else(|| op.strip_prefix('-')) {
                out.push_str(default);
            }
        } else {
            let name_len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            names.push(rest[..name_len].to_string());
            rest = &rest[name_len..];
        }
    }
    out.push_str(rest);
    (out, names)
}

fn resolved_env(service: &Value, name: &str) -> Option<String> {
    env_value(service, name).map(|v| interpolate_defaults(&v).0)
}

/// `ports:` as (published, target) pairs, from the short syntax
/// `[IP:][HOST:]CONTAINER[/PROTO]` or the long one.
fn ports(service: &Value) -> Vec<(Option<u16>, u16)> {
    let Some(list) = service.get("ports").and_then(Value::as_sequence) else {
        return Vec::new();
    };
    list.iter()
        .map(|p| match p {
            Value::Mapping(_) => {
                let target = p.get("target").and_then(scalar).expect("ports: target");
                let published = p.get("published").and_then(scalar);
                (
                    published.map(|s| s.parse().expect("published port")),
                    target.parse().expect("target port"),
                )
            }
            _ => {
                let s = scalar(p).expect("port entry");
                let s = interpolate_defaults(&s).0;
                let s = s.split('/').next().unwrap();
                let parts: Vec<&str> = s.rsplitn(3, ':').collect();
                let target = parts[0].parse().unwrap_or_else(|_| panic!("port {s:?}"));
                let published = parts
                    .get(1)
                    .map(|h| h.parse().unwrap_or_else(|_| panic!("port {s:?}")));
                (published, target)
            }
        })
        .collect()
}

fn publishes(service: &Value, port: u16) -> bool {
    ports(service).contains(&(Some(port), port))
}

/// Go-style durations as Compose accepts them: `1m30s`, `500ms`, `40s`.
fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let secs = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += Duration::from_secs_f64(n * secs);
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// The healthcheck command as an argv; CMD-SHELL strings are split on
/// whitespace, which is enough for the commands this file uses.
fn healthcheck_argv(service: &Value) -> Vec<String> {
    let test = service
        .get("healthcheck")
        .and_then(|h| h.get("test"))
        .expect("service has no healthcheck test");
    let words: Vec<String> = match test {
        Value::Sequence(items) => items
            .iter()
            .map(|i| scalar(i).expect("test item"))
            .collect(),
        other => {
            let s = scalar(other).expect("healthcheck test");
            std::iter::once("CMD-SHELL".to_string())
                .chain(s.split_whitespace().map(str::to_string))
                .collect()
        }
    };
    match words.first().map(String::as_str) {
        Some("CMD") => words[1..].to_vec(),
        Some("CMD-SHELL") => words[1..]
            .join(" ")
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        other => panic!("healthcheck test must start with CMD or CMD-SHELL, got {other:?}"),
    }
}

/// The port and path the worker's healthcheck probes, asserting it probes
/// the container itself.
fn worker_healthcheck_target(worker: &Value) -> (u16, String) {
    let argv = healthcheck_argv(worker);
    assert_eq!(
        argv.first().map(String::as_str),
        Some(BINARY),
        "the runtime image has no curl/wget: the healthcheck must use `{BINARY} healthcheck`: {argv:?}"
    );
    assert_eq!(
        argv.get(1).map(String::as_str),
        Some("healthcheck"),
        "{argv:?}"
    );
    let url = argv
        .iter()
        .position(|a| a == "--url")
        .and_then(|i| argv.get(i + 1).cloned())
        .or_else(|| {
            argv.iter()
                .find_map(|a| a.strip_prefix("--url=").map(str::to_string))
        })
        .unwrap_or_else(|| panic!("healthcheck has no --url: {argv:?}"));
    let url = url::Url::parse(&url).unwrap_or_else(|e| panic!("healthcheck URL {url:?}: {e}"));
    assert!(
        matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]")),
        "the healthcheck runs inside the worker container and must probe it on loopback: {url}"
    );
    let port = url.port_or_known_default().expect("healthcheck URL port");
    (port, url.path().to_string())
}

// ---------------------------------------------------------------------------
// docker-compose.yml

#[test]
fn compose_has_no_obsolete_version_key() {
    assert!(
        compose().get("version").is_none(),
        "the top-level `version` key is obsolete in the Compose specification and only produces a warning"
    );
}

#[test]
fn rabbitmq_service_is_reachable_and_checked() {
    let c = compose();
    let rabbit = service(&c, "rabbitmq");
    let image = rabbit
        .get("image")
        .and_then(scalar)
        .expect("rabbitmq image");
    assert!(image.starts_with("rabbitmq:"), "rabbitmq image: {image}");
    assert!(
        publishes(rabbit, 5672),
        "rabbitmq must publish AMQP 5672:5672 for local tools: {:?}",
        ports(rabbit)
    );
    assert!(
        publishes(rabbit, 15672),
        "rabbitmq must publish the management UI 15672:15672: {:?}",
        ports(rabbit)
    );

    let argv = healthcheck_argv(rabbit);
    assert!(!argv.is_empty(), "rabbitmq healthcheck has an empty test");
    for key in ["interval", "timeout", "start_period"] {
        let v = rabbit
            .get("healthcheck")
            .and_then(|h| h.get(key))
            .unwrap_or_else(|| panic!("rabbitmq healthcheck has no {key}"));
        let s = v
            .as_str()
            .unwrap_or_else(|| panic!("healthcheck {key} must be a duration string, got {v:?}"));
        assert!(
            parse_duration(s).is_some(),
            "healthcheck {key}: {s:?} is not a duration"
        );
    }
    let retries = rabbit.get("healthcheck").and_then(|h| h.get("retries"));
    assert!(
        retries.and_then(Value::as_u64).is_some_and(|r| r > 0),
        "rabbitmq healthcheck retries: {retries:?}"
    );

    let volumes = rabbit
        .get("volumes")
        .and_then(Value::as_sequence)
        .expect("rabbitmq volumes");
    let data = volumes
        .iter()
        .filter_map(scalar)
        .find(|v| v.split(':').nth(1) == Some("/var/lib/rabbitmq"))
        .expect(
            "rabbitmq must keep /var/lib/rabbitmq on a volume, or queues vanish with the container",
        );
    let volume_name = data.split(':').next().unwrap();
    assert!(
        c.get("volumes").and_then(|v| v.get(volume_name)).is_some(),
        "volume `{volume_name}` is not declared under top-level volumes"
    );
}

#[test]
fn worker_builds_from_this_repository() {
    let c = compose();
    let worker = service(&c, "worker");
    let context = match worker.get("build") {
        Some(Value::String(s)) => s.clone(),
        Some(b) => b
            .get("context")
            .and_then(scalar)
            .unwrap_or_else(|| ".".into()),
        None => panic!("worker has no `build`"),
    };
    assert!(
        matches!(context.as_str(), "." | "./"),
        "worker build context: {context}"
    );
    let command = worker
        .get("command")
        .and_then(Value::as_sequence)
        .expect("worker command as a list");
    assert_eq!(
        command.iter().filter_map(scalar).collect::<Vec<_>>(),
        ["run"]
    );
}

#[test]
fn worker_waits_for_a_healthy_broker_and_reaches_it_by_service_name() {
    let c = compose();
    let worker = service(&c, "worker");
    let condition = worker
        .get("depends_on")
        .and_then(|d| d.get("rabbitmq"))
        .and_then(|r| r.get("condition"))
        .and_then(scalar);
    assert_eq!(
        condition.as_deref(),
        Some("service_healthy"),
        "worker must wait until the broker accepts connections, not merely until its container started"
    );
    assert!(
        service(&c, "rabbitmq").get("healthcheck").is_some(),
        "service_healthy needs a rabbitmq healthcheck"
    );

    let amqp = resolved_env(worker, "AMQP_URL").expect("worker sets AMQP_URL");
    let url = url::Url::parse(&amqp).unwrap_or_else(|e| panic!("AMQP_URL {amqp:?}: {e}"));
    assert!(
        matches!(url.scheme(), "amqp" | "amqps"),
        "AMQP_URL scheme: {amqp}"
    );
    assert_eq!(
        url.host_str(),
        Some("rabbitmq"),
        "inside the compose network the broker is reachable by its service name, not 127.0.0.1: {amqp}"
    );
    let port = url.port().unwrap_or(5672);
    let targets: Vec<u16> = ports(service(&c, "rabbitmq"))
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert!(
        targets.contains(&port),
        "AMQP_URL port {port} is not a rabbitmq container port {targets:?}"
    );
}

#[test]
fn worker_defaults_to_the_sandbox() {
    let c = compose();
    let worker = service(&c, "worker");
    let raw = env_value(worker, "JOB_CLOSER_SANDBOX").expect("worker sets JOB_CLOSER_SANDBOX");
    let (value, names) = interpolate_defaults(&raw);
    assert_eq!(
        value, "true",
        "without .env the stack must run against the sandbox, never the real LinkedIn: {raw:?}"
    );
    assert!(
        names.iter().any(|n| n == "JOB_CLOSER_SANDBOX"),
        "JOB_CLOSER_SANDBOX must be overridable from .env/the shell via ${{JOB_CLOSER_SANDBOX:-true}}: {raw:?}"
    );
}

#[test]
fn worker_metrics_are_published_and_probe_readiness() {
    let c = compose();
    let worker = service(&c, "worker");
    let addr = resolved_env(worker, "METRICS_ADDR").expect("worker sets METRICS_ADDR");
    let addr: SocketAddr = addr
        .parse()
        .unwrap_or_else(|e| panic!("METRICS_ADDR {addr:?}: {e}"));
    assert!(
        addr.ip().is_unspecified(),
        "METRICS_ADDR must bind all interfaces, or the published port reaches nothing: {addr}"
    );
    assert_eq!(addr.port(), 9464);
    assert!(
        publishes(worker, addr.port()),
        "port {} is not published: {:?}",
        addr.port(),
        ports(worker)
    );

    let (port, path) = worker_healthcheck_target(worker);
    assert_eq!(
        port,
        addr.port(),
        "healthcheck probes a port the metrics server does not listen on"
    );
    assert_eq!(path, "/readyz");
}

#[test]
fn worker_credentials_come_from_an_optional_env_file() {
    let c = compose();
    let worker = service(&c, "worker");
    let entries: Vec<Value> = match worker.get("env_file") {
        Some(Value::Sequence(items)) => items.clone(),
        Some(single) => vec![single.clone()],
        None => panic!("worker has no env_file"),
    };
    let dotenv = entries
        .iter()
        .find(|e| e.get("path").and_then(scalar).as_deref() == Some(".env"))
        .expect("worker env_file must use the long form with `path: .env`");
    let required = dotenv.get("required").and_then(scalar);
    assert_eq!(
        required.as_deref(),
        Some("false"),
        "a fresh checkout has no .env; it must be `required: false` or `docker compose up` fails"
    );
    for secret in ["LINKEDIN_CLIENT_ID", "LINKEDIN_CLIENT_SECRET"] {
        assert!(
            env_value(worker, secret).is_none(),
            "{secret} in `environment:` would override the value from .env"
        );
    }
}

#[test]
fn worker_uses_only_known_environment_variables() {
    let c = compose();
    let worker = service(&c, "worker");
    let mut used = BTreeSet::new();
    for (name, value) in environment(worker) {
        used.insert(name);
        if let Some(v) = value {
            // Interpolated names come from the same .env, so they share the namespace.
            used.extend(interpolate_defaults(&v).1);
        }
    }
    let unknown: Vec<_> = used
        .iter()
        .filter(|n| !KNOWN_ENV.contains(&n.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "worker uses variables job-closer does not read: {unknown:?}"
    );
}

#[test]
fn worker_stops_gracefully() {
    let c = compose();
    let worker = service(&c, "worker");
    let signal = worker.get("stop_signal").and_then(scalar);
    assert_eq!(signal.as_deref(), Some("SIGTERM"));
    let grace = worker
        .get("stop_grace_period")
        .expect("worker stop_grace_period");
    let grace = grace
        .as_str()
        .unwrap_or_else(|| panic!("stop_grace_period must be a duration string: {grace:?}"));
    let grace = parse_duration(grace).unwrap_or_else(|| panic!("stop_grace_period {grace:?}"));
    let shutdown = resolved_env(worker, "SHUTDOWN_TIMEOUT_MS")
        .map(|ms| Duration::from_millis(ms.parse().expect("SHUTDOWN_TIMEOUT_MS")))
        .unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT);
    assert!(
        grace > shutdown,
        "stop_grace_period {grace:?} must exceed the worker's shutdown timeout {shutdown:?}, \
         or Docker kills it mid-drain"
    );
    for (name, svc) in [("worker", worker), ("rabbitmq", service(&c, "rabbitmq"))] {
        let restart = svc.get("restart").and_then(scalar);
        assert_eq!(
            restart.as_deref(),
            Some("unless-stopped"),
            "{name} restart policy"
        );
    }
}

#[test]
fn worker_healthcheck_durations_are_strings() {
    let c = compose();
    let hc = service(&c, "worker")
        .get("healthcheck")
        .expect("worker healthcheck");
    for key in ["interval", "timeout", "start_period"] {
        if let Some(v) = hc.get(key) {
            let s = v.as_str().unwrap_or_else(|| {
                panic!("healthcheck {key} must be a duration string, got {v:?}")
            });
            assert!(
                parse_duration(s).is_some(),
                "healthcheck {key}: {s:?} is not a duration"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// .env.example and .dockerignore

#[test]
fn env_example_documents_only_known_variables() {
    let text = read_repo_file(".env.example");
    let mut names = BTreeSet::new();
    for line in text.lines() {
        // Commented-out assignments count too: they get uncommented as-is.
        let line = line.trim_start_matches('#').trim();
        if let Some((name, _)) = line.split_once('=')
            && !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        {
            names.insert(name.to_string());
        }
    }
    let unknown: Vec<_> = names
        .iter()
        .filter(|n| !KNOWN_ENV.contains(&n.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        ".env.example lists variables job-closer does not read: {unknown:?}"
    );
    for required in [
        "LINKEDIN_CLIENT_ID",
        "LINKEDIN_CLIENT_SECRET",
        "JOB_CLOSER_SANDBOX",
    ] {
        assert!(
            names.contains(required),
            ".env.example does not mention {required}"
        );
    }
}

#[test]
fn dockerignore_keeps_secrets_and_build_output_out_of_the_context() {
    let text = read_repo_file(".dockerignore");
    let entries: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    for needed in [".env", "target", ".git"] {
        assert!(entries.contains(&needed), ".dockerignore lacks {needed}");
    }
}

// ---------------------------------------------------------------------------
// Dockerfile

struct Instruction {
    keyword: String,
    args: String,
}

/// Instructions with line continuations joined and comments dropped, grouped
/// by build stage (each starting at its FROM).
fn dockerfile_stages() -> Vec<Vec<Instruction>> {
    let text = read_repo_file("Dockerfile");
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        // Docker drops comment lines even in the middle of a continuation.
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    let mut stages: Vec<Vec<Instruction>> = Vec::new();
    for line in logical.into_iter().filter(|l| !l.trim().is_empty()) {
        let (keyword, args) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let ins = Instruction {
            keyword: keyword.to_ascii_uppercase(),
            args: args.trim().to_string(),
        };
        if ins.keyword == "FROM" {
            stages.push(vec![ins]);
        } else if let Some(stage) = stages.last_mut() {
            stage.push(ins);
        }
        // Instructions before the first FROM (global ARGs) belong to no stage.
    }
    stages
}

fn find<'a>(stage: &'a [Instruction], keyword: &str) -> Vec<&'a Instruction> {
    stage.iter().filter(|i| i.keyword == keyword).collect()
}

fn exec_form(ins: &Instruction) -> Vec<String> {
    serde_json::from_str(&ins.args).unwrap_or_else(|_| {
        panic!(
            "{} must use the JSON exec form so signals reach {BINARY} directly, not a shell: {}",
            ins.keyword, ins.args
        )
    })
}

fn env_vars(stage: &[Instruction]) -> Vec<(String, String)> {
    let mut vars = Vec::new();
    for ins in find(stage, "ENV") {
        if ins.args.contains('=') {
            for pair in ins.args.split_whitespace() {
                let (k, v) = pair.split_once('=').expect("ENV KEY=VALUE");
                vars.push((k.to_string(), v.trim_matches('"').to_string()));
            }
        } else {
            let (k, v) = ins
                .args
                .split_once(char::is_whitespace)
                .expect("ENV KEY VALUE");
            vars.push((k.to_string(), v.trim().to_string()));
        }
    }
    vars
}

#[test]
fn dockerfile_is_multi_stage_on_one_distribution() {
    let stages = dockerfile_stages();
    assert!(
        stages.len() >= 2,
        "Dockerfile must be multi-stage (build, runtime); found {} FROM",
        stages.len()
    );
    let build = &stages[0][0].args;
    let runtime = &stages.last().unwrap()[0].args;
    assert!(
        build.contains("rust:"),
        "first stage should build with a rust image: {build}"
    );
    // A binary built on a newer glibc than the runtime's fails to start.
    assert!(
        build.contains("bookworm") && runtime.contains("bookworm"),
        "build and runtime stages must share the Debian release: {build} / {runtime}"
    );
    let builds_locked = stages[0]
        .iter()
        .any(|i| i.keyword == "RUN" && i.args.contains("cargo build --release --locked"));
    assert!(
        builds_locked,
        "build stage must run `cargo build --release --locked`"
    );
    let final_stage = stages.last().unwrap();
    let copies_binary = find(final_stage, "COPY")
        .iter()
        .any(|i| i.args.starts_with("--from=") && i.args.contains(&format!("release/{BINARY}")));
    assert!(
        copies_binary,
        "runtime stage must copy the release binary from the build stage"
    );
}

#[test]
fn dockerfile_runs_as_non_root() {
    let stages = dockerfile_stages();
    let final_stage = stages.last().expect("no FROM in Dockerfile");
    let user = find(final_stage, "USER")
        .last()
        .map(|i| i.args.clone())
        .expect("runtime stage has no USER: the worker would run as root");
    let name = user.split(':').next().unwrap();
    assert!(!matches!(name, "" | "root" | "0"), "USER {user} is root");
}

#[test]
fn dockerfile_entrypoint_is_the_binary() {
    let stages = dockerfile_stages();
    let final_stage = stages.last().expect("no FROM in Dockerfile");
    let entrypoint = find(final_stage, "ENTRYPOINT")
        .last()
        .map(|i| exec_form(i))
        .expect("no ENTRYPOINT");
    let program = entrypoint.first().expect("empty ENTRYPOINT");
    assert!(
        program == BINARY || program.ends_with(&format!("/{BINARY}")),
        "ENTRYPOINT must run {BINARY}: {entrypoint:?}"
    );
    let cmd = find(final_stage, "CMD")
        .last()
        .map(|i| exec_form(i))
        .expect("no CMD");
    assert_eq!(cmd, ["run"]);
}

#[test]
fn dockerfile_exposes_the_port_compose_probes() {
    let c = compose();
    let (probe_port, _) = worker_healthcheck_target(service(&c, "worker"));
    let stages = dockerfile_stages();
    let final_stage = stages.last().expect("no FROM in Dockerfile");
    let exposed: Vec<u16> = find(final_stage, "EXPOSE")
        .iter()
        .flat_map(|i| i.args.split_whitespace())
        .map(|p| p.split('/').next().unwrap().parse().expect("EXPOSE port"))
        .collect();
    assert!(
        exposed.contains(&probe_port),
        "Dockerfile EXPOSEs {exposed:?} but compose probes port {probe_port}"
    );

    let vars = env_vars(final_stage);
    let unknown: Vec<_> = vars
        .iter()
        .filter(|(k, _)| !KNOWN_ENV.contains(&k.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "Dockerfile sets variables job-closer does not read: {unknown:?}"
    );
    let metrics = vars
        .iter()
        .find(|(k, _)| k == "METRICS_ADDR")
        .map(|(_, v)| v.clone())
        .expect("image must set METRICS_ADDR: the default 127.0.0.1 is unreachable from outside the container");
    let metrics: SocketAddr = metrics
        .parse()
        .unwrap_or_else(|e| panic!("METRICS_ADDR {metrics:?}: {e}"));
    assert!(
        metrics.ip().is_unspecified(),
        "image METRICS_ADDR must bind all interfaces: {metrics}"
    );
    assert_eq!(
        metrics.port(),
        probe_port,
        "image METRICS_ADDR port differs from the one compose probes"
    );
}

// ---------------------------------------------------------------------------
// The helpers above decide pass/fail; make sure they read Compose correctly.

#[test]
fn helpers_understand_compose_syntax() {
    assert_eq!(
        interpolate_defaults("${A:-true}"),
        ("true".into(), vec!["A".into()])
    );
    assert_eq!(
        interpolate_defaults("x${B-1}y$C"),
        ("x1y".into(), vec!["B".into(), "C".into()])
    );
    assert_eq!(interpolate_defaults("p$$w"), ("p$w".into(), vec![]));
    assert_eq!(interpolate_defaults("${D}"), ("".into(), vec!["D".into()]));

    assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("40"), None);
    assert_eq!(parse_duration(""), None);

    let svc: Value = serde_yaml_ng::from_str(
        r#"
        ports: ["8080:80", "127.0.0.1:5672:5672/tcp", 9000, {target: 1, published: "2"}]
        environment: ["A=1", "B"]
        "#,
    )
    .unwrap();
    assert_eq!(
        ports(&svc),
        [
            (Some(8080), 80),
            (Some(5672), 5672),
            (None, 9000),
            (Some(2), 1)
        ]
    );
    assert_eq!(
        environment(&svc),
        [("A".into(), Some("1".into())), ("B".into(), None)]
    );
}
