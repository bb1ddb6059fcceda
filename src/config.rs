//! Settings: every one a flag with an environment fallback, grouped by what it configures, checked
//! before anything connects, and printable without giving away a secret.

use crate::retry::RetryPolicy;
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// The settings read straight from the process environment, not through a flag: the ones clap
/// does not know about. With the clap definitions (`job-closer <command> --help`), this is every
/// setting job-closer reads, and `tests/it/docs.rs` holds `docs/configuration.md` to the pair, so a
/// new `std::env::var` belongs here. Rejected: flags for these, since each follows a convention
/// other programs share (tracing's `RUST_LOG`, curl's proxy variables, the shell's `COLUMNS`).
pub const ENVIRONMENT_ONLY: &[&str] = &[
    // Log levels (tracing's EnvFilter, src/logging.rs).
    "RUST_LOG",
    // The proxy for LinkedIn calls (src/http_proxy.rs): lower-case names win, as in curl.
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
    // `{hostname}` in AMQP_CONNECTION_NAME when the kernel's host name is not readable.
    "HOSTNAME",
    // The width of `dlq` tables when standard output is not a terminal (src/dlq/table.rs).
    "COLUMNS",
    // Tracing (src/telemetry/settings.rs): OpenTelemetry's standard names.
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    // The W3C context `publish` continues (src/telemetry/propagation.rs).
    "TRACEPARENT",
    "TRACESTATE",
];

pub(crate) const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
pub(crate) const DEFAULT_CLOSE_QUEUE: &str = "linkedin.jobs.close";
pub(crate) const DEFAULT_DEAD_LETTER_QUEUE: &str = "linkedin.jobs.close.dead";

/// A secret string: `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    pub(crate) fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

/// An AMQP URL whose password never reaches a log or an error message.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AmqpUrl(String);

impl AmqpUrl {
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its password replaced, for logs and errors.
    pub(crate) fn redacted(&self) -> String {
        redact_url_password(&self.0)
    }

    /// `amqps://`: the connection is TLS.
    pub(crate) fn is_tls(&self) -> bool {
        self.0.starts_with("amqps://")
    }

    /// The same URL with another password (`AMQP_PASSWORD_FILE`), percent-encoded so that any
    /// character survives the trip through the URL.
    pub(crate) fn with_password(&self, password: &str) -> AmqpUrl {
        let Ok(mut parsed) = url::Url::parse(&self.0) else {
            return self.clone();
        };
        // `url` leaves `%` as it is in a password, which would then be decoded; encode it all.
        if parsed
            .set_password(Some(&percent_encode(password)))
            .is_err()
        {
            return self.clone();
        }
        AmqpUrl(parsed.to_string())
    }
}

/// Every byte but the unreserved ones (`A-Z a-z 0-9 - . _ ~`) as `%XX`: text that survives the trip
/// through any part of a URL.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(byte).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Replaces the password in any URL-shaped text; text that does not parse is shown only by scheme.
///
/// An `@` after the host means a password with an unencoded `/`, `?` or `#` was cut at that
/// character and the rest of it landed in the path, query or fragment: such a URL is shown only by
/// scheme too.
pub fn redact_url_password(url: &str) -> String {
    let unparsable = || match url.split_once("://") {
        Some((scheme, _))
            if scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            format!("{scheme}://[unparsable URL]")
        }
        _ => "[unparsable URL]".into(),
    };
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let after_host = [Some(parsed.path()), parsed.query(), parsed.fragment()];
            if after_host
                .iter()
                .flatten()
                .any(|part| part.contains('@') || part.contains("%40"))
            {
                return unparsable();
            }
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => unparsable(),
    }
}

impl std::fmt::Debug for AmqpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

impl std::fmt::Display for AmqpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::str::FromStr for AmqpUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once("://") {
            Some(("amqp" | "amqps", _)) => {}
            _ => {
                return Err(format!(
                    "{} is not an amqp:// or amqps:// URL",
                    redact_url_password(s)
                ));
            }
        }
        if let Ok(parsed) = url::Url::parse(s) {
            let after_host = [Some(parsed.path()), parsed.query(), parsed.fragment()];
            if after_host.iter().flatten().any(|part| part.contains('@')) {
                return Err(format!(
                    "{} has an '@' after its host: percent-encode '/', '?', '#' and '@' in the user name and password (%2F, %3F, %23, %40), or use AMQP_PASSWORD_FILE",
                    redact_url_password(s)
                ));
            }
        }
        // lapin parses the URL again on every connect: one it cannot parse must fail here, once,
        // not in every reconnect attempt. Its error quotes the URL, password and all, so only the
        // URL parser's (input-free) reason is passed on.
        if s.parse::<lapin::uri::AMQPUri>().is_err() {
            let why = url::Url::parse(s)
                .err()
                .map(|error| format!(" ({error})"))
                .unwrap_or_default();
            return Err(format!(
                "{} is not a valid AMQP URL{why}",
                redact_url_password(s)
            ));
        }
        Ok(AmqpUrl(s.to_owned()))
    }
}

/// `AMQP_URL`: one URL, or a comma-separated list of the nodes of one cluster. Connections go to one
/// node at a time; see `amqp/connector.rs`.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpUrls(Vec<AmqpUrl>);

impl AmqpUrls {
    #[cfg(test)]
    fn nodes(&self) -> &[AmqpUrl] {
        &self.0
    }

    pub(crate) fn into_nodes(self) -> Vec<AmqpUrl> {
        self.0
    }

    /// Every node with its password redacted, comma-separated.
    pub(crate) fn redacted(&self) -> String {
        self.0
            .iter()
            .map(AmqpUrl::redacted)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl std::fmt::Debug for AmqpUrls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.0).finish()
    }
}

impl std::fmt::Display for AmqpUrls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::str::FromStr for AmqpUrls {
    type Err = String;
    /// Entries are separated by commas (with optional blanks around them); each must be a whole
    /// `amqp://` or `amqps://` URL. A comma inside a password must be written `%2C`: a raw one would
    /// split the URL, and the pieces are described by position, never quoted.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let entries: Vec<&str> = s.trim().split(',').map(str::trim).collect();
        let count = entries.len();
        let mut nodes = Vec::with_capacity(count);
        for (index, entry) in entries.into_iter().enumerate() {
            let position = if count == 1 {
                String::new()
            } else {
                format!("node {} of {count}: ", index + 1)
            };
            if entry.is_empty() {
                return Err(format!(
                    "{position}empty entry (AMQP_URL is one URL or a comma-separated list of URLs)"
                ));
            }
            if !(entry.starts_with("amqp://") || entry.starts_with("amqps://")) {
                return Err(format!(
                    "{position}does not start with amqp:// or amqps:// (a comma inside a password must be percent-encoded as %2C)"
                ));
            }
            let comma_hint = if count > 1 {
                " (a comma inside a password must be percent-encoded as %2C)"
            } else {
                ""
            };
            nodes.push(
                entry
                    .parse::<AmqpUrl>()
                    .map_err(|why| format!("{position}{why}{comma_hint}"))?,
            );
        }
        Ok(AmqpUrls(nodes))
    }
}

/// Parses `--amqp-url` / `AMQP_URL` without echoing it: clap's own "invalid value '...'" error would
/// print the password.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AmqpUrlParser;

impl clap::builder::TypedValueParser for AmqpUrlParser {
    type Value = AmqpUrls;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<AmqpUrls, clap::Error> {
        let name = arg.map_or_else(|| "AMQP_URL".to_owned(), ToString::to_string);
        let invalid = |why: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid value for '{name}': {why}\n"),
            )
            .with_cmd(cmd)
        };
        let text = value
            .to_str()
            .ok_or_else(|| invalid("not valid UTF-8".into()))?;
        text.parse().map_err(invalid)
    }
}

/// The broker settings that live in files (Docker and Kubernetes secrets, certificates). Read when
/// a command starts; see [`AmqpArgs::broker`].
#[derive(Args, Clone, Debug, Default)]
pub struct AmqpFileArgs {
    /// File holding AMQP_URL (one URL or a comma-separated list); wins over AMQP_URL.
    #[arg(long, env = "AMQP_URL_FILE")]
    pub(crate) amqp_url_file: Option<PathBuf>,
    /// File holding the broker password; replaces the password of every AMQP_URL node.
    #[arg(long, env = "AMQP_PASSWORD_FILE")]
    pub(crate) amqp_password_file: Option<PathBuf>,
    /// PEM CA certificate(s) trusted for amqps:// in addition to the system roots (the broker only;
    /// LinkedIn calls keep the system roots).
    #[arg(long, env = "AMQP_TLS_CA_FILE")]
    pub(crate) amqp_tls_ca_file: Option<PathBuf>,
    /// PEM client certificate for amqps:// (mutual TLS); needs AMQP_TLS_KEY_FILE.
    #[arg(long, env = "AMQP_TLS_CERT_FILE")]
    pub(crate) amqp_tls_cert_file: Option<PathBuf>,
    /// PEM private key of AMQP_TLS_CERT_FILE.
    #[arg(long, env = "AMQP_TLS_KEY_FILE")]
    pub(crate) amqp_tls_key_file: Option<PathBuf>,
}

/// Reads a one-line secret file of the broker settings; the trailing newline is not part of it.
pub(crate) fn read_secret_file(
    setting: &'static str,
    path: &std::path::Path,
) -> Result<String, ConfigError> {
    read_one_line(path)
        .map_err(|source| ConfigError::AmqpFile {
            setting,
            path: path.to_path_buf(),
            source,
        })?
        .ok_or_else(|| ConfigError::EmptyAmqpFile {
            setting,
            path: path.to_path_buf(),
        })
}

/// A one-line file's text without its trailing newline (secret files usually end with one that is
/// not part of the secret); `None` when nothing else is left.
pub(crate) fn read_one_line(path: &std::path::Path) -> std::io::Result<Option<String>> {
    let text = std::fs::read_to_string(path)?;
    let value = text.trim_end_matches(['\r', '\n']);
    Ok((!value.is_empty()).then(|| value.to_owned()))
}

/// Setting files for unit tests (secrets, URL lists, PEM files), written into a temporary directory
/// that lives as long as this value.
#[cfg(test)]
pub(crate) struct SettingFiles(tempfile::TempDir);

#[cfg(test)]
impl SettingFiles {
    pub(crate) fn new() -> SettingFiles {
        SettingFiles(tempfile::tempdir().unwrap())
    }

    /// Where the file `name` is, or would be: a test may want one that does not exist.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    /// Writes `contents` into the file `name`, replacing what it held, and returns its path.
    pub(crate) fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

/// What kind of queue to declare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum QueueType {
    Classic,
    Quorum,
}

/// Where the queues are. Shared by every command that touches the broker, so that they all declare
/// the queues with the same arguments.
#[derive(Args, Clone, Debug)]
pub struct AmqpArgs {
    /// Broker URL (amqp:// or amqps://), or a comma-separated list of one cluster's nodes: each
    /// connection goes to the next node, starting from a random one.
    // `--help` never shows the value from the environment: it holds a password.
    #[arg(long, env = "AMQP_URL", default_value = DEFAULT_AMQP_URL, hide_default_value = false, hide_env_values = true, value_parser = AmqpUrlParser)]
    pub amqp_url: AmqpUrls,
    #[command(flatten)]
    pub files: AmqpFileArgs,
    /// Queue the close requests wait in.
    #[arg(long, env = "CLOSE_QUEUE", default_value = DEFAULT_CLOSE_QUEUE)]
    pub close_queue: String,
    /// Queue failed close requests go to.
    #[arg(
        long,
        env = "DEAD_LETTER_QUEUE",
        default_value = DEFAULT_DEAD_LETTER_QUEUE
    )]
    pub dead_letter_queue: String,
    /// Queue type to declare: classic, or quorum for replicated queues in a cluster.
    #[arg(long, env = "QUEUE_TYPE", value_enum, default_value = "classic")]
    pub queue_type: QueueType,
    /// Only one consumer of the close queue is active at a time; the others stand by (one
    /// LinkedIn token and rate limit for all replicas). `false`: every replica consumes a share.
    #[arg(long, env = "SINGLE_ACTIVE_CONSUMER", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub single_active_consumer: bool,
    /// Quorum queues: deliveries of one message before the broker dead-letters it (a message that
    /// keeps crashing consumers).
    #[arg(long, env = "DELIVERY_LIMIT", default_value_t = 20)]
    pub delivery_limit: u32,
}

/// How to reach LinkedIn.
#[derive(Args, Clone, Debug)]
pub(crate) struct LinkedInArgs {
    /// LinkedIn API base URL; requests go to {url}/v2/simpleJobPostings.
    #[arg(
        long,
        env = "LINKEDIN_API_URL",
        default_value = "https://api.linkedin.com"
    )]
    pub(crate) linkedin_api_url: String,
    /// When set (e.g. 202504): use {url}/rest/simpleJobPostings with a LinkedIn-Version header.
    #[arg(long, env = "LINKEDIN_API_VERSION")]
    pub(crate) linkedin_api_version: Option<String>,
    /// OAuth client-credentials token endpoint.
    #[arg(
        long,
        env = "LINKEDIN_TOKEN_URL",
        default_value = "https://www.linkedin.com/oauth/v2/accessToken"
    )]
    pub(crate) linkedin_token_url: String,
    /// OAuth client id.
    #[arg(long, env = "LINKEDIN_CLIENT_ID")]
    pub(crate) linkedin_client_id: Option<String>,
    /// OAuth client secret (prefer LINKEDIN_CLIENT_SECRET_FILE).
    #[arg(long, env = "LINKEDIN_CLIENT_SECRET", hide_env_values = true)]
    pub(crate) linkedin_client_secret: Option<Secret>,
    /// File holding the OAuth client secret (Docker and Kubernetes secrets).
    #[arg(long, env = "LINKEDIN_CLIENT_SECRET_FILE")]
    pub(crate) linkedin_client_secret_file: Option<PathBuf>,
    /// Timeout of one HTTP request to LinkedIn.
    #[arg(long, env = "HTTP_TIMEOUT_MS", default_value_t = 30_000)]
    pub(crate) http_timeout_ms: u64,
}

/// The client id and secret, once resolved.
#[derive(Clone, Debug)]
pub(crate) struct Credentials {
    pub(crate) client_id: String,
    pub(crate) client_secret: Secret,
    /// `LINKEDIN_CLIENT_SECRET_FILE`, which `client_secret` was read from: read again while the
    /// worker runs.
    pub(crate) secret_file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "LinkedIn credentials are missing: set LINKEDIN_CLIENT_ID and LINKEDIN_CLIENT_SECRET (or LINKEDIN_CLIENT_SECRET_FILE), or use --sandbox"
    )]
    MissingCredentials,
    #[error("cannot read LINKEDIN_CLIENT_SECRET_FILE {path}: {source}")]
    SecretFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("LINKEDIN_CLIENT_SECRET_FILE {0} is empty")]
    EmptySecretFile(PathBuf),
    #[error("invalid {setting}: {why}")]
    AmqpUrl { setting: &'static str, why: String },
    #[error("cannot read {setting} {path}: {source}")]
    AmqpFile {
        setting: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{setting} {path} is empty")]
    EmptyAmqpFile {
        setting: &'static str,
        path: PathBuf,
    },
    /// A TLS file (`AMQP_TLS_*`) that cannot be used, in `amqp::tls`'s words.
    #[error("{0}")]
    Tls(String),
    #[error("{name} must be a URL: {value}")]
    BadUrl { name: &'static str, value: String },
    #[error("{0}")]
    Invalid(String),
}

impl LinkedInArgs {
    /// Sends to a LinkedIn stand-in (the sandbox) instead: its URLs and its client, no secret file.
    pub(crate) fn use_stand_in(
        &mut self,
        api_url: String,
        token_url: String,
        client_id: String,
        client_secret: String,
    ) {
        self.linkedin_api_url = api_url;
        self.linkedin_token_url = token_url;
        self.linkedin_client_id = Some(client_id);
        self.linkedin_client_secret = Some(Secret::new(client_secret));
        self.linkedin_client_secret_file = None;
    }

    pub(crate) fn credentials(&self) -> Result<Credentials, ConfigError> {
        let client_id = self
            .linkedin_client_id
            .clone()
            .filter(|id| !id.is_empty())
            .ok_or(ConfigError::MissingCredentials)?;
        let client_secret = match (
            &self.linkedin_client_secret,
            &self.linkedin_client_secret_file,
        ) {
            (_, Some(path)) => {
                let secret = read_one_line(path)
                    .map_err(|source| ConfigError::SecretFile {
                        path: path.clone(),
                        source,
                    })?
                    .ok_or_else(|| ConfigError::EmptySecretFile(path.clone()))?;
                Secret::new(secret)
            }
            (Some(secret), None) if !secret.expose().is_empty() => secret.clone(),
            _ => return Err(ConfigError::MissingCredentials),
        };
        Ok(Credentials {
            client_id,
            client_secret,
            secret_file: self.linkedin_client_secret_file.clone(),
        })
    }

    /// Checks both URLs parse, before anything is sent.
    pub(crate) fn check_urls(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("LINKEDIN_API_URL", &self.linkedin_api_url),
            ("LINKEDIN_TOKEN_URL", &self.linkedin_token_url),
        ] {
            let ok = url::Url::parse(value)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
            if !ok {
                return Err(ConfigError::BadUrl {
                    name,
                    value: redact_url_password(value),
                });
            }
        }
        Ok(())
    }

    /// `{url}/v2/simpleJobPostings`, or the versioned `/rest` path when a version is set.
    pub(crate) fn postings_url(&self) -> String {
        let base = self.linkedin_api_url.trim_end_matches('/');
        match self.linkedin_api_version {
            Some(_) => format!("{base}/rest/simpleJobPostings"),
            None => format!("{base}/v2/simpleJobPostings"),
        }
    }

    pub(crate) fn tasks_url(&self) -> String {
        let base = self.linkedin_api_url.trim_end_matches('/');
        match self.linkedin_api_version {
            Some(_) => format!("{base}/rest/simpleJobPostingTasks"),
            None => format!("{base}/v2/simpleJobPostingTasks"),
        }
    }

    pub(crate) fn http_timeout(&self) -> Duration {
        Duration::from_millis(self.http_timeout_ms)
    }
}

/// How elements are grouped and how many requests run at once.
#[derive(Args, Clone, Debug)]
pub struct BatchArgs {
    /// Elements per request (LinkedIn takes at most 100).
    #[arg(long, env = "BATCH_SIZE", default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=100))]
    pub(crate) batch_size: u16,
    /// A partial batch is sent this long after its first element arrived, or, if every request slot
    /// is busy then, as soon as one frees (it keeps filling meanwhile).
    #[arg(long, env = "BATCH_LINGER_MS", default_value_t = 500)]
    pub(crate) batch_linger_ms: u64,
    /// Requests to LinkedIn in flight at once.
    #[arg(long, env = "MAX_IN_FLIGHT", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub max_in_flight: u16,
    /// Elements per minute sent to LinkedIn (its documented premium limit); 0 = unlimited.
    #[arg(long, env = "RATE_LIMIT_PER_MINUTE", default_value_t = 2000)]
    pub rate_limit_per_minute: u32,
    /// Elements per UTC day sent to LinkedIn (its documented premium limit); when reached, sending
    /// pauses until 00:00 UTC. 0 = unlimited. Counted in memory: a restart forgets the day's count.
    #[arg(long, env = "RATE_LIMIT_PER_DAY", default_value_t = 60_000)]
    pub(crate) rate_limit_per_day: u64,
    /// Deliveries the broker may hand over unacknowledged; default: enough to fill every in-flight
    /// request plus the batch being filled.
    #[arg(long, env = "PREFETCH")]
    pub(crate) prefetch: Option<u16>,
    /// Half-life of the estimated share of jobs LinkedIn refuses without naming them (already
    /// closed, 422s, poison), which sizes requests: once such culprits stop, requests grow back to
    /// BATCH_SIZE about 15 half-lives later.
    #[arg(long, env = "CULPRIT_HALF_LIFE_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) culprit_half_life_ms: u64,
}

impl BatchArgs {
    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.batch_linger_ms)
    }

    pub(crate) fn culprit_half_life(&self) -> Duration {
        Duration::from_millis(self.culprit_half_life_ms)
    }

    /// A batch never outgrows the rate limit: a request that could never fit a minute would stall.
    pub fn effective_batch_size(&self) -> usize {
        let mut size = usize::from(self.batch_size);
        if self.rate_limit_per_minute > 0 {
            size = size.min(self.rate_limit_per_minute as usize);
        }
        if self.rate_limit_per_day > 0 {
            size = size.min(usize::try_from(self.rate_limit_per_day).unwrap_or(usize::MAX));
        }
        size
    }

    pub fn prefetch(&self) -> u16 {
        self.prefetch.unwrap_or_else(|| {
            let batches = usize::from(self.max_in_flight) + 1;
            u16::try_from(self.effective_batch_size() * batches).unwrap_or(u16::MAX)
        })
    }
}

/// What to do with a close LinkedIn says is already closed (409 "Cannot close job which is already
/// closed or does not exist").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum AlreadyClosed {
    /// Settle it as done: acked, not dead-lettered, no task check.
    #[default]
    Ack,
    /// Dead-letter it as `rejected` with status 409.
    DeadLetter,
}

/// How the worker treats particular answers from LinkedIn.
#[derive(Args, Clone, Debug)]
pub(crate) struct AnswerArgs {
    /// A close LinkedIn answers with 409 "already closed or does not exist" (or that LinkedIn
    /// accepted from this worker within the last hour): ack it, or dead-letter it as rejected/409.
    #[arg(
        long,
        env = "ALREADY_CLOSED",
        value_enum,
        default_value = "ack",
        ignore_case = true
    )]
    pub(crate) already_closed: AlreadyClosed,
}

/// On or off, for switches that read better as words than as booleans.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum Switch {
    #[value(alias = "true")]
    On,
    #[value(alias = "false")]
    Off,
}

/// Where outcome messages go besides each request's `reply_to`.
#[derive(Args, Clone, Debug, Default)]
pub(crate) struct OutcomeArgs {
    /// A durable topic exchange every outcome message is published to, routing key = the outcome
    /// (closed, already-closed, dead-lettered); run declares it. Unset: outcomes go only to the
    /// reply_to queue of the requests that name one.
    #[arg(long, env = "OUTCOME_EXCHANGE")]
    pub(crate) outcome_exchange: Option<String>,
}

impl OutcomeArgs {
    /// The exchange, if one is set (an empty value is none); a name RabbitMQ would refuse is a
    /// configuration error.
    pub(crate) fn exchange(&self) -> Result<Option<&str>, ConfigError> {
        let Some(name) = self
            .outcome_exchange
            .as_deref()
            .filter(|name| !name.is_empty())
        else {
            return Ok(None);
        };
        if name.len() > 255 {
            return Err(ConfigError::Invalid(format!(
                "OUTCOME_EXCHANGE is {} bytes long; AMQP names are at most 255",
                name.len()
            )));
        }
        if name.starts_with("amq.") {
            return Err(ConfigError::Invalid(format!(
                "OUTCOME_EXCHANGE {name:?} starts with \"amq.\", which RabbitMQ reserves for its own exchanges; choose another name"
            )));
        }
        Ok(Some(name))
    }
}

/// Longest first-check delay: a task id lives 24 hours, so a later first check could never succeed.
pub(crate) const MAX_TASK_CHECK_DELAY_MS: u64 = 24 * 60 * 60 * 1000;

/// Verifying that the close tasks LinkedIn accepted actually succeeded.
#[derive(Args, Clone, Debug)]
pub(crate) struct TaskCheckArgs {
    /// Verify every accepted close with simpleJobPostingTasks and dead-letter the ones whose task
    /// FAILED (on), or trust LinkedIn's 202 (off).
    #[arg(
        long,
        env = "TASK_CHECK",
        value_enum,
        default_value = "on",
        ignore_case = true
    )]
    pub(crate) task_check: Switch,
    /// How long after LinkedIn accepted a close its task is first checked (LinkedIn advises five
    /// minutes); later checks back off from there, doubling up to an hour.
    #[arg(long, env = "TASK_CHECK_DELAY_MS", default_value_t = 300_000, value_parser = clap::value_parser!(u64).range(0..=MAX_TASK_CHECK_DELAY_MS))]
    pub(crate) task_check_delay_ms: u64,
}

impl TaskCheckArgs {
    pub(crate) fn enabled(&self) -> bool {
        self.task_check == Switch::On
    }

    pub(crate) fn first_delay(&self) -> Duration {
        Duration::from_millis(self.task_check_delay_ms)
    }
}

/// Backoff for transient failures.
#[derive(Args, Clone, Debug)]
pub(crate) struct RetryArgs {
    /// First retry delay.
    #[arg(long, env = "RETRY_INITIAL_MS", default_value_t = 500)]
    pub(crate) retry_initial_ms: u64,
    /// Longest delay between retries.
    #[arg(long, env = "RETRY_MAX_MS", default_value_t = 30_000)]
    pub(crate) retry_max_ms: u64,
    /// A transient failure that lasts longer is dead-lettered as retries-exhausted.
    #[arg(long, env = "RETRY_MAX_ELAPSED_MS", default_value_t = 900_000)]
    pub(crate) retry_max_elapsed_ms: u64,
}

impl RetryArgs {
    pub(crate) fn policy(&self) -> Result<RetryPolicy, ConfigError> {
        if self.retry_initial_ms == 0 || self.retry_initial_ms > self.retry_max_ms {
            return Err(ConfigError::Invalid(format!(
                "RETRY_INITIAL_MS ({}) must be at least 1 and at most RETRY_MAX_MS ({})",
                self.retry_initial_ms, self.retry_max_ms
            )));
        }
        Ok(RetryPolicy {
            initial: Duration::from_millis(self.retry_initial_ms),
            max: Duration::from_millis(self.retry_max_ms),
            max_elapsed: Duration::from_millis(self.retry_max_elapsed_ms),
        })
    }
}

/// The settings of `run` (and of `check`, which checks what `run` would use).
#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub(crate) amqp: AmqpArgs,
    #[command(flatten)]
    pub(crate) linkedin: LinkedInArgs,
    #[command(flatten)]
    pub(crate) batch: BatchArgs,
    #[command(flatten)]
    pub(crate) retry: RetryArgs,
    #[command(flatten)]
    pub(crate) tasks: TaskCheckArgs,
    #[command(flatten)]
    pub(crate) answers: AnswerArgs,
    #[command(flatten)]
    pub(crate) outcomes: OutcomeArgs,
    /// Start the LinkedIn sandbox in-process and send to it instead of LinkedIn.
    #[arg(long, env = "JOB_CLOSER_SANDBOX", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub(crate) sandbox: bool,
    /// With --sandbox: the in-process sandbox also enforces the spec's lengths (description
    /// 100-25,000, title <= 200) and a company field, which LinkedIn does not document for CLOSE.
    #[arg(long, env = "SANDBOX_STRICT", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub(crate) sandbox_strict: bool,
    /// On SIGTERM/SIGINT, how long to wait for requests in flight before closing anyway.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_MS", default_value_t = 30_000)]
    pub(crate) shutdown_timeout_ms: u64,
    /// Address for /healthz, /readyz and /metrics; empty disables the listener.
    #[arg(long, env = "METRICS_ADDR", default_value = "127.0.0.1:9464")]
    pub(crate) metrics_addr: String,
    /// Name of the worker's broker connection in RabbitMQ's management UI and `rabbitmqctl
    /// list_connections`; `{hostname}` is replaced by this machine's host name (a pod's name in
    /// Kubernetes), so that replicas can be told apart.
    #[arg(
        long,
        env = "AMQP_CONNECTION_NAME",
        default_value = DEFAULT_CONNECTION_NAME
    )]
    pub(crate) amqp_connection_name: String,
}

/// The worker's connection name unless `AMQP_CONNECTION_NAME` says otherwise.
pub(crate) const DEFAULT_CONNECTION_NAME: &str = "job-closer worker@{hostname}";

/// Replaces `{hostname}` with the host name (the kernel's, else `HOSTNAME`, else `unknown-host`).
pub(crate) fn expand_connection_name(template: &str) -> String {
    if !template.contains("{hostname}") {
        return template.to_owned();
    }
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .filter(|name| !name.is_empty())
        })
        .unwrap_or_else(|| "unknown-host".to_owned());
    template.replace("{hostname}", &hostname)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amqp_passwords_never_show() {
        let url: AmqpUrl = "amqp://user:s3cr3t@rabbit:5672/%2f".parse().unwrap();
        assert!(!format!("{url:?}").contains("s3cr3t"));
        assert!(!url.to_string().contains("s3cr3t"));
        assert_eq!(url.redacted(), "amqp://user:***@rabbit:5672/%2f");
        let err = "http://user:s3cr3t@x".parse::<AmqpUrl>().unwrap_err();
        assert!(!err.contains("s3cr3t"), "{err}");
        let err = "amqp://user:s3cr3t@rabbit:99999/"
            .parse::<AmqpUrl>()
            .unwrap_err();
        assert!(err.contains("invalid port number"), "{err}");
        assert!(!err.contains("s3cr3t"), "{err}");
        assert!(
            "amqps://user:pw@rabbit/vhost?heartbeat=10"
                .parse::<AmqpUrl>()
                .is_ok()
        );
    }

    #[test]
    fn a_node_list_is_split_on_commas_and_never_shows_a_password() {
        let urls: AmqpUrls = "amqp://u:p1@n1/%2f, amqps://u:p2@n2:5671/%2f,amqp://n3"
            .parse()
            .unwrap();
        assert_eq!(urls.nodes().len(), 3);
        assert!(urls.nodes()[1].is_tls());
        let shown = format!("{urls} {urls:?}");
        assert!(!shown.contains("p1") && !shown.contains("p2"), "{shown}");
        assert!(shown.contains("amqps://u:***@n2:5671/%2f"), "{shown}");
        let error = "amqp://u:p1@n1/%2f,,amqp://n3"
            .parse::<AmqpUrls>()
            .unwrap_err();
        assert!(error.contains("node 2 of 3: empty entry"), "{error}");
        // A raw comma in a password splits the URL: the pieces are described, never quoted.
        let error = "amqp://u:se,cret@n1/%2f".parse::<AmqpUrls>().unwrap_err();
        assert!(!error.contains("se") || !error.contains("cret"), "{error}");
        assert!(!error.contains("cret@"), "{error}");
        assert!(error.contains("%2C"), "{error}");
        // A raw '#' or '?' in a password moves the rest of it behind the host.
        for raw in [
            "amqp://u:12#ab@n1/%2f",
            "amqp://u:12?ab@n1/%2f",
            "amqp://u:x/y@n1/%2f",
        ] {
            let error = raw.parse::<AmqpUrls>().unwrap_err();
            assert!(!error.contains("ab@") && !error.contains("y@"), "{error}");
        }
    }

    mod redaction {
        //! Property: whatever the passwords (any character, percent-encoded as a URL needs) and
        //! however many nodes, no rendering of the list, its nodes, or an error about them shows a
        //! password.
        use super::super::*;
        use proptest::prelude::*;

        fn password() -> impl Strategy<Value = String> {
            // At least 6 characters and one that is not a letter, so that it is not a substring of
            // the fixed text around it by chance.
            "[a-zA-Z0-9@:/%#?,;=+&$! \\[\\]'\"éß€]{5,24}".prop_map(|p| format!("{p}\u{1F511}"))
        }

        proptest! {
            #[test]
            fn no_password_in_any_rendering(
                passwords in proptest::collection::vec(password(), 1..5),
                tls in proptest::collection::vec(any::<bool>(), 5),
                broken in proptest::option::of(0usize..5),
            ) {
                let entries: Vec<String> = passwords
                    .iter()
                    .enumerate()
                    .map(|(i, pw)| {
                        let scheme = if tls[i] { "amqps" } else { "amqp" };
                        if broken == Some(i) {
                            // An unencoded password: the URL may not parse at all.
                            format!("{scheme}://user{i}:{pw}@node{i}.example:5672/%2f")
                        } else {
                            format!("{scheme}://user{i}:{}@node{i}.example:5672/%2f", percent_encode(pw))
                        }
                    })
                    .collect();
                let text = entries.join(",");
                let secrets: Vec<String> = passwords
                    .iter()
                    .flat_map(|pw| [pw.clone(), percent_encode(pw)])
                    .collect();
                let mut renderings = Vec::new();
                match text.parse::<AmqpUrls>() {
                    Ok(urls) => {
                        renderings.push(urls.to_string());
                        renderings.push(format!("{urls:?}"));
                        for node in urls.nodes() {
                            renderings.push(node.to_string());
                            renderings.push(format!("{node:?}"));
                            renderings.push(node.redacted());
                            renderings.push(node.with_password("x").redacted());
                        }
                    }
                    Err(error) => renderings.push(error),
                }
                for entry in &entries {
                    renderings.push(redact_url_password(entry));
                }
                let parsed = AmqpUrlParser.parse_ref(
                    &clap::Command::new("run"),
                    None,
                    std::ffi::OsStr::new(&text),
                );
                if let Err(error) = parsed {
                    renderings.push(error.to_string());
                }
                for rendering in &renderings {
                    for secret in &secrets {
                        prop_assert!(!rendering.contains(secret.as_str()), "{rendering:?} shows {secret:?}");
                    }
                }
            }
        }

        use clap::builder::TypedValueParser;
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let args = LinkedInArgs {
            linkedin_api_url: "https://api.linkedin.com".into(),
            linkedin_api_version: None,
            linkedin_token_url: "https://www.linkedin.com/oauth/v2/accessToken".into(),
            linkedin_client_id: Some("id".into()),
            linkedin_client_secret: Some(Secret::new("hunter2")),
            linkedin_client_secret_file: None,
            http_timeout_ms: 1000,
        };
        assert!(!format!("{args:?}").contains("hunter2"));
        assert!(!format!("{:?}", args.credentials().unwrap()).contains("hunter2"));
    }

    #[test]
    fn secret_file_wins_and_loses_its_trailing_newline() {
        let files = SettingFiles::new();
        let path = files.write("secret", "from-file/+=\n");
        let args = LinkedInArgs {
            linkedin_api_url: "https://api.linkedin.com".into(),
            linkedin_api_version: Some("202504".into()),
            linkedin_token_url: "https://www.linkedin.com/oauth/v2/accessToken".into(),
            linkedin_client_id: Some("id".into()),
            linkedin_client_secret: Some(Secret::new("from-env")),
            linkedin_client_secret_file: Some(path.clone()),
            http_timeout_ms: 1000,
        };
        assert_eq!(
            args.credentials().unwrap().client_secret.expose(),
            "from-file/+="
        );
        assert_eq!(
            args.postings_url(),
            "https://api.linkedin.com/rest/simpleJobPostings"
        );
        files.write("secret", "\n");
        assert!(matches!(
            args.credentials(),
            Err(ConfigError::EmptySecretFile(_))
        ));
        let missing = LinkedInArgs {
            linkedin_client_secret_file: None,
            linkedin_client_secret: None,
            ..args
        };
        assert!(matches!(
            missing.credentials(),
            Err(ConfigError::MissingCredentials)
        ));
    }

    #[test]
    fn task_checks_are_on_after_five_minutes_unless_switched_off() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            tasks: TaskCheckArgs,
        }
        let defaults = Cli::try_parse_from(["run"]).unwrap().tasks;
        assert!(defaults.enabled());
        assert_eq!(defaults.first_delay(), Duration::from_secs(300));
        let off = Cli::try_parse_from(["run", "--task-check", "OFF"])
            .unwrap()
            .tasks;
        assert!(!off.enabled());
        let quick = Cli::try_parse_from(["run", "--task-check-delay-ms", "300"])
            .unwrap()
            .tasks;
        assert_eq!(quick.first_delay(), Duration::from_millis(300));
        assert!(Cli::try_parse_from(["run", "--task-check", "maybe"]).is_err());
        assert!(
            Cli::try_parse_from(["run", "--task-check-delay-ms", "86400001"]).is_err(),
            "a first check after the task id expired could never succeed"
        );
    }

    #[test]
    fn prefetch_fills_every_in_flight_request() {
        let args = BatchArgs {
            batch_size: 100,
            batch_linger_ms: 500,
            max_in_flight: 4,
            rate_limit_per_minute: 2000,
            rate_limit_per_day: 60_000,
            prefetch: None,
            culprit_half_life_ms: 10_000,
        };
        assert_eq!(args.prefetch(), 500);
        let tight = BatchArgs {
            rate_limit_per_minute: 30,
            ..args
        };
        assert_eq!(tight.effective_batch_size(), 30);
        let daily = BatchArgs {
            rate_limit_per_minute: 0,
            rate_limit_per_day: 7,
            ..args
        };
        assert_eq!(daily.effective_batch_size(), 7);
    }

    #[test]
    fn already_closed_is_acked_unless_told_to_dead_letter() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            answers: AnswerArgs,
            #[command(flatten)]
            batch: BatchArgs,
        }
        let defaults = Cli::try_parse_from(["run"]).unwrap();
        assert_eq!(defaults.answers.already_closed, AlreadyClosed::Ack);
        assert_eq!(defaults.batch.rate_limit_per_day, 60_000);
        let dead = Cli::try_parse_from(["run", "--already-closed", "dead-letter"]).unwrap();
        assert_eq!(dead.answers.already_closed, AlreadyClosed::DeadLetter);
        assert!(Cli::try_parse_from(["run", "--already-closed", "ignore"]).is_err());
        assert!(Cli::try_parse_from(["run", "--rate-limit-per-day", "-1"]).is_err());
    }
}
