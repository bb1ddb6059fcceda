//! How a sandbox is configured: [`SandboxConfig`] for in-process use and [`SandboxArgs`], the
//! `job-closer sandbox` command-line flags (each with an environment fallback) that build one.

use std::net::SocketAddr;
use std::time::Duration;

use super::scripting::RandomFaults;

/// The URN prefix of a LinkedIn contract; `--allow-contract 123` is shorthand for the full URN.
const CONTRACT_URN_PREFIX: &str = "urn:li:contract:";

/// Everything a sandbox needs to know before it starts. Fixed for the sandbox's lifetime;
/// what tests change while it runs (faults, outages, task rules) goes through [`super::Sandbox`].
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    /// The only client id the token endpoint accepts.
    pub client_id: String,
    /// The only client secret the token endpoint accepts.
    pub client_secret: String,
    /// How long an issued token stays valid; LinkedIn's is 30 minutes.
    pub token_lifetime: Duration,
    /// Answer `"expires_in":"1800"` (a string, as LinkedIn's documented sample does) instead of
    /// `"expires_in":1800`.
    pub expires_in_as_string: bool,
    /// Contracts (full URNs, `urn:li:contract:123`) this application may post for.
    /// `None` allows every contract.
    pub allowed_contracts: Option<Vec<String>>,
    /// Added before answering each simpleJobPostings or simpleJobPostingTasks request.
    pub latency: Duration,
    /// How long a task stays `IN_PROGRESS` before it is `SUCCEEDED`, unless a task rule says
    /// otherwise.
    pub task_delay: Duration,
    /// Also enforce the spec's rules LinkedIn does not document for CLOSE: description 100 to
    /// 25,000 characters and title at most 200 (element 422s), and a company field (request 400).
    pub strict: bool,
    /// Elements accepted per UTC day; once reached, every posting request is a 429 without
    /// `Retry-After` until 00:00 UTC. `None`: no limit. Changeable while running.
    pub daily_element_limit: Option<u64>,
    /// The oldest `LinkedIn-Version` (`YYYYMM`) still served on `/rest`; older ones, and months
    /// after the current one, are answered 426.
    pub oldest_linkedin_version: u32,
    /// The share (0 to 1) of jobs the sandbox never accepted that LinkedIn already closed or that
    /// expired: a CLOSE of one is refused with the 409, as for a re-close. Which jobs is decided by
    /// [`SandboxConfig::seed`]. Changeable while running.
    pub already_closed_rate: f64,
    /// The seed of every random answer the sandbox gives ([`RandomFaults`]); `None`: a random one,
    /// which [`super::Sandbox::seed`] tells. One seed for all of them, so a run is repeated by
    /// giving its seed again.
    pub seed: Option<u64>,
    /// Rates of random 500s, 429s and stalled answers on every API call (all 0 by default).
    /// Changeable while running.
    pub random_faults: RandomFaults,
}

/// The default oldest `LinkedIn-Version` served: January 2024. LinkedIn serves a version for about
/// a year; this is older, so that the versions job-closer's docs and LinkedIn's SDK use (`202504`)
/// work, while a stale one is still refused the way LinkedIn refuses it.
pub(crate) const DEFAULT_OLDEST_LINKEDIN_VERSION: u32 = 202_401;

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            client_id: "sandbox-client".to_owned(),
            client_secret: "sandbox-secret".to_owned(),
            token_lifetime: Duration::from_secs(1800),
            expires_in_as_string: false,
            allowed_contracts: None,
            latency: Duration::ZERO,
            task_delay: Duration::ZERO,
            strict: false,
            daily_element_limit: None,
            oldest_linkedin_version: DEFAULT_OLDEST_LINKEDIN_VERSION,
            already_closed_rate: 0.0,
            seed: None,
            random_faults: RandomFaults::default(),
        }
    }
}

impl SandboxConfig {
    /// Whether, with this seed and [`SandboxConfig::already_closed_rate`], LinkedIn already closed
    /// the job `external_id` (or it expired) — so that a CLOSE of it is refused unless the sandbox
    /// accepted a posting of it itself. A test that wants an exact share of expired jobs picks a
    /// seed with it. The answer is the sandbox's when `seed` is set (unset, the sandbox picks a
    /// random one; this answers for seed 0).
    pub fn expired_on_linkedin(&self, external_id: &str) -> bool {
        super::judge::expired_on_linkedin(
            self.seed.unwrap_or_default(),
            self.already_closed_rate,
            external_id,
        )
    }

    /// Whether elements naming `contract` may be posted by this application.
    pub(crate) fn allows_contract(&self, contract: &str) -> bool {
        match &self.allowed_contracts {
            None => true,
            Some(allowed) => allowed.iter().any(|urn| urn == contract),
        }
    }
}

/// Flags of `job-closer sandbox`: a local LinkedIn stand-in for trials and out-of-process tests.
#[derive(clap::Args, Clone, Debug)]
pub struct SandboxArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "SANDBOX_LISTEN", default_value = "127.0.0.1:8080")]
    pub(crate) listen: SocketAddr,

    /// The client id the token endpoint accepts.
    #[arg(long, env = "SANDBOX_CLIENT_ID", default_value = "sandbox-client")]
    pub(crate) client_id: String,

    /// The client secret the token endpoint accepts.
    #[arg(
        long,
        env = "SANDBOX_CLIENT_SECRET",
        default_value = "sandbox-secret",
        hide_env_values = true
    )]
    pub(crate) client_secret: String,

    /// Lifetime of issued access tokens, in seconds.
    #[arg(long, env = "SANDBOX_TOKEN_LIFETIME_SECS", default_value_t = 1800)]
    pub(crate) token_lifetime_secs: u64,

    /// A contract the application may post for (`urn:li:contract:ID` or just `ID`); repeatable,
    /// comma separated in the environment. Without any, every contract is allowed.
    #[arg(
        long = "allow-contract",
        env = "SANDBOX_ALLOWED_CONTRACTS",
        value_delimiter = ','
    )]
    pub(crate) allow_contract: Vec<String>,

    /// Delay added before answering each job posting or task request, in milliseconds.
    #[arg(long, env = "SANDBOX_LATENCY_MS", default_value_t = 0)]
    pub(crate) latency_ms: u64,

    /// How long a task stays IN_PROGRESS before it SUCCEEDED, in milliseconds.
    #[arg(long, env = "SANDBOX_TASK_DELAY_MS", default_value_t = 0)]
    pub(crate) task_delay_ms: u64,

    /// Also enforce the spec's lengths (description 100-25,000, title <= 200) and a company field,
    /// which LinkedIn does not document for CLOSE.
    #[arg(long, env = "SANDBOX_STRICT", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub(crate) strict: bool,

    /// Elements accepted per UTC day before every posting request is a 429 (unset: no limit).
    #[arg(long, env = "SANDBOX_DAILY_ELEMENT_LIMIT")]
    pub(crate) daily_element_limit: Option<u64>,

    /// Oldest LinkedIn-Version (YYYYMM) served on /rest; older ones get a 426.
    #[arg(long, env = "SANDBOX_OLDEST_LINKEDIN_VERSION", default_value_t = DEFAULT_OLDEST_LINKEDIN_VERSION)]
    pub(crate) oldest_linkedin_version: u32,

    /// Share (0 to 1) of jobs never accepted here that are already closed on LinkedIn (expired): a
    /// CLOSE of one gets LinkedIn's 409. Which ones depends on --seed.
    #[arg(long, env = "SANDBOX_ALREADY_CLOSED_RATE", default_value_t = 0.0, value_parser = rate)]
    pub(crate) already_closed_rate: f64,

    /// Seed of every random answer (the rates below); unset: a random seed, printed at start.
    #[arg(long, env = "SANDBOX_SEED")]
    pub(crate) seed: Option<u64>,

    /// Share of API calls (postings and task lookups) answered 500, 0 to 1.
    #[arg(long, env = "SANDBOX_SERVER_ERROR_RATE", default_value_t = 0.0, value_parser = rate)]
    pub(crate) server_error_rate: f64,

    /// Share of API calls answered 429 without Retry-After, 0 to 1.
    #[arg(long, env = "SANDBOX_THROTTLE_RATE", default_value_t = 0.0, value_parser = rate)]
    pub(crate) throttle_rate: f64,

    /// Share of the other API calls whose answer (already decided) is held back for between half
    /// of --stall-ms and --stall-ms, 0 to 1.
    #[arg(long, env = "SANDBOX_STALL_RATE", default_value_t = 0.0, value_parser = rate)]
    pub(crate) stall_rate: f64,

    /// The longest stall, in milliseconds.
    #[arg(long, env = "SANDBOX_STALL_MS", default_value_t = 3000)]
    pub(crate) stall_ms: u64,
}

/// A share from 0 to 1.
fn rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("{rate} is not between 0 and 1"))
    }
}

impl SandboxArgs {
    /// The configuration these flags describe.
    pub(crate) fn config(&self) -> SandboxConfig {
        let allowed_contracts: Vec<String> = self
            .allow_contract
            .iter()
            .map(|contract| contract.trim())
            .filter(|contract| !contract.is_empty())
            .map(contract_urn)
            .collect();
        SandboxConfig {
            client_id: self.client_id.clone(),
            client_secret: self.client_secret.clone(),
            token_lifetime: Duration::from_secs(self.token_lifetime_secs),
            expires_in_as_string: false,
            // An empty list from flags means "no restriction", not "nothing allowed": a sandbox
            // that refuses every premium job is never what someone starting it by hand wants.
            allowed_contracts: (!allowed_contracts.is_empty()).then_some(allowed_contracts),
            latency: Duration::from_millis(self.latency_ms),
            task_delay: Duration::from_millis(self.task_delay_ms),
            strict: self.strict,
            daily_element_limit: self.daily_element_limit,
            oldest_linkedin_version: self.oldest_linkedin_version,
            already_closed_rate: self.already_closed_rate,
            seed: self.seed,
            random_faults: RandomFaults {
                server_error_rate: self.server_error_rate,
                throttle_rate: self.throttle_rate,
                stall_rate: self.stall_rate,
                stall_ms: self.stall_ms,
            },
        }
    }
}

/// The full contract URN for either a URN or a bare contract id.
fn contract_urn(contract: &str) -> String {
    if contract.starts_with(CONTRACT_URN_PREFIX) {
        contract.to_owned()
    } else {
        format!("{CONTRACT_URN_PREFIX}{contract}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        sandbox: SandboxArgs,
    }

    #[test]
    fn defaults_match_sandbox_config_defaults() {
        let cli = Cli::try_parse_from(["sandbox"]).unwrap();
        assert_eq!(cli.sandbox.listen, "127.0.0.1:8080".parse().unwrap());
        let from_flags = cli.sandbox.config();
        let defaults = SandboxConfig::default();
        assert_eq!(from_flags.client_id, defaults.client_id);
        assert_eq!(from_flags.client_secret, defaults.client_secret);
        assert_eq!(from_flags.token_lifetime, defaults.token_lifetime);
        assert_eq!(from_flags.allowed_contracts, None);
        assert_eq!(from_flags.latency, Duration::ZERO);
        assert_eq!(from_flags.task_delay, Duration::ZERO);
        assert_eq!(from_flags.strict, defaults.strict);
        assert_eq!(from_flags.daily_element_limit, defaults.daily_element_limit);
        assert_eq!(
            from_flags.oldest_linkedin_version,
            defaults.oldest_linkedin_version
        );
        assert_eq!(from_flags.seed, None);
        assert!(from_flags.random_faults.is_off());
        assert_eq!(from_flags.already_closed_rate, defaults.already_closed_rate);
    }

    #[test]
    fn flags_build_the_config() {
        let cli = Cli::try_parse_from([
            "sandbox",
            "--listen",
            "0.0.0.0:0",
            "--client-id",
            "id",
            "--client-secret",
            "s/e+c=",
            "--token-lifetime-secs",
            "60",
            "--allow-contract",
            "urn:li:contract:1",
            "--allow-contract",
            "2,3",
            "--latency-ms",
            "15",
            "--task-delay-ms",
            "250",
            "--strict",
            "--daily-element-limit",
            "60000",
            "--oldest-linkedin-version",
            "202501",
            "--already-closed-rate",
            "0.1",
            "--seed",
            "42",
            "--server-error-rate",
            "0.05",
            "--throttle-rate",
            "0.02",
            "--stall-rate",
            "0.01",
            "--stall-ms",
            "2500",
        ])
        .unwrap();
        let config = cli.sandbox.config();
        assert_eq!(config.client_id, "id");
        assert_eq!(config.client_secret, "s/e+c=");
        assert_eq!(config.token_lifetime, Duration::from_secs(60));
        assert_eq!(
            config.allowed_contracts.unwrap(),
            [
                "urn:li:contract:1",
                "urn:li:contract:2",
                "urn:li:contract:3"
            ]
        );
        assert_eq!(config.latency, Duration::from_millis(15));
        assert_eq!(config.task_delay, Duration::from_millis(250));
        assert!(config.strict);
        assert_eq!(config.daily_element_limit, Some(60_000));
        assert_eq!(config.oldest_linkedin_version, 202_501);
        assert_eq!(config.already_closed_rate, 0.1);
        assert_eq!(config.seed, Some(42));
        assert_eq!(
            config.random_faults,
            RandomFaults {
                server_error_rate: 0.05,
                throttle_rate: 0.02,
                stall_rate: 0.01,
                stall_ms: 2500,
            }
        );
        for bad in ["1.5", "-0.1", "often"] {
            assert!(
                Cli::try_parse_from(["sandbox", "--throttle-rate", bad]).is_err(),
                "{bad}"
            );
        }
        for refused in ["1.5", "-0.1", "often"] {
            assert!(
                Cli::try_parse_from(["sandbox", "--already-closed-rate", refused]).is_err(),
                "{refused}"
            );
        }
    }

    #[test]
    fn help_names_every_environment_fallback_but_hides_the_secret_value() {
        let help = Cli::command().render_help().to_string();
        for variable in [
            "SANDBOX_LISTEN",
            "SANDBOX_CLIENT_ID",
            "SANDBOX_CLIENT_SECRET",
            "SANDBOX_TOKEN_LIFETIME_SECS",
            "SANDBOX_ALLOWED_CONTRACTS",
            "SANDBOX_LATENCY_MS",
            "SANDBOX_TASK_DELAY_MS",
            "SANDBOX_STRICT",
            "SANDBOX_DAILY_ELEMENT_LIMIT",
            "SANDBOX_OLDEST_LINKEDIN_VERSION",
            "SANDBOX_ALREADY_CLOSED_RATE",
            "SANDBOX_SEED",
            "SANDBOX_SERVER_ERROR_RATE",
            "SANDBOX_THROTTLE_RATE",
            "SANDBOX_STALL_RATE",
            "SANDBOX_STALL_MS",
        ] {
            assert!(help.contains(variable), "{variable} missing from:\n{help}");
        }
    }

    #[test]
    fn contract_allow_list() {
        let open = SandboxConfig::default();
        assert!(open.allows_contract("urn:li:contract:9"));
        let restricted = SandboxConfig {
            allowed_contracts: Some(vec!["urn:li:contract:1".to_owned()]),
            ..SandboxConfig::default()
        };
        assert!(restricted.allows_contract("urn:li:contract:1"));
        assert!(!restricted.allows_contract("urn:li:contract:9"));
    }
}
