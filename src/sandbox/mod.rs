//! The project's own LinkedIn stand-in: an HTTP server that answers the OAuth token endpoint,
//! `simpleJobPostings` (batch_create) and `simpleJobPostingTasks` the way LinkedIn's documentation
//! describes, including its documented errors, plus a `/_sandbox` control API. End-to-end tests
//! drive it in process through [`Sandbox`]; users start it with `job-closer sandbox` ([`serve`]).
//!
//! Files: `config` (configuration and flags), `scripting` (faults and task rules tests can
//! script), `judge` (the pure decision on a batch_create request), `state` (what the sandbox
//! remembers and counts), `api_gate` (latency, version header, bearer token), and one file per
//! endpoint family: `token`, `postings`, `tasks`, `control`.
//!
//! "The sandbox is never friendlier than LinkedIn": every row of LinkedIn's error tables
//! (API-NOTES) can be reproduced — by default where LinkedIn does it by default, by a knob where it
//! depends on LinkedIn's state. By default:
//! - a CLOSE of a job the sandbox already closed is refused, the whole request HTTP 409
//!   `Cannot close job which is already closed or does not exist` ([`Stats::closed`] counts the
//!   accepted close, [`Stats::refused_closes`] the refused ones);
//! - an element whose `companyApplyUrl` is a string but not an absolute http(s) URL: HTTP 400
//!   `Invalid company apply url for job with externalPartnerId {id}, taskUrn urn:li:simpleJobPostingTask:{uuid}`;
//! - `employmentStatus` / `experienceLevel` / `workplaceTypes` values outside LinkedIn's lists:
//!   HTTP 422 `ERROR :: /{field} :: "{value}" is not an enum symbol`, or `enum type is not backed by
//!   a String` for a non-string; more than seven `alternateLocations`: HTTP 422 `The job contains
//!   more than seven locations. Please ensure maximum seven locations per job`; more than one
//!   `workplaceTypes` value: HTTP 200 with that element's entry 400 `The workplaceTypes field cannot
//!   have more than one value provided. Provided values [..]`;
//! - `/rest` takes `LinkedIn-Version` as `YYYYMM` or `YYYYMM.NN`: malformed is a 400 naming the
//!   header, a month before [`SandboxConfig::oldest_linkedin_version`] (default 202401) or after the
//!   current one a 426 naming it;
//! - a task lookup holding an id that is not a `urn:li:simpleJobPostingTask:` URN is refused as a
//!   whole, HTTP 400 `Batch key parameter value is invalid`;
//! - no `x-restli-method` is a 403 `Not enough permissions to access: POST /simpleJobPostings`,
//!   another method a 403 `Unpermitted fields present in REQUEST_BODY: ...`; an unknown path a
//!   404 `Resource {name} does not exist`.
//!
//! Knobs, each an in-process method on [`Sandbox`] and a `/_sandbox/...` control route:
//! [`Sandbox::mark_absent`] (`absent`), [`Sandbox::set_reclose_answer`] (`reclose-answer`),
//! [`Sandbox::set_string_statuses`] (`string-statuses`), [`Sandbox::set_daily_element_limit`]
//! (`daily-element-limit`), [`Sandbox::set_already_closed_rate`] (`already-closed-rate`: a seeded
//! share of jobs LinkedIn already closed or expired), [`Sandbox::set_random_faults`]
//! (`random-faults`: rates of random 500s, 429s and stalls, drawn from one generator seeded by
//! [`SandboxConfig::seed`]), plus the older faults, outages (with [`Fault`]'s constructors for
//! LinkedIn's integration and contract errors), token outages, a rotated client secret
//! ([`Sandbox::rotate_client_secret`], `client-secret`) and task rules ([`TaskRule`]: a
//! status after a delay, `PROCESSED` with or without an `errorMessage`). [`SandboxConfig::strict`]
//! (`job-closer sandbox --strict`) also enforces the spec's lengths and a company field.

mod api_gate;
mod config;
mod control;
mod judge;
mod postings;
mod scripting;
mod state;
mod tasks;
#[cfg(test)]
mod test_support;
mod token;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::{SandboxArgs, SandboxConfig};
pub use judge::{ALREADY_CLOSED_MESSAGE, RecloseAnswer};
pub use scripting::{Fault, RandomFaults, TaskRule};
pub(crate) use state::Stats;

use api_gate::linkedin_error;
use state::SandboxState;

/// Path of the OAuth token endpoint, relative to [`Sandbox::api_url`].
const TOKEN_PATH: &str = "/oauth/v2/accessToken";

/// Largest request body accepted. Above axum's 2 MB default because 100 full job elements with
/// long descriptions are legitimately bigger than that.
const MAX_REQUEST_BODY_BYTES: usize = 32 * 1024 * 1024;

/// How long [`Sandbox::shutdown`] lets open connections finish before cutting them off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A running sandbox. Dropping it or calling [`Sandbox::shutdown`] stops it.
pub struct Sandbox {
    addr: SocketAddr,
    state: Arc<SandboxState>,
    server: Option<JoinHandle<()>>,
}

impl Sandbox {
    /// Binds `listen` (port 0 picks a free port) and starts serving in the background.
    pub async fn start(listen: SocketAddr, config: SandboxConfig) -> std::io::Result<Sandbox> {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(SandboxState::new(config));
        let app = router(Arc::clone(&state));
        let stop_serving = state.shutdown.clone().cancelled_owned();
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app)
                .with_graceful_shutdown(stop_serving)
                .await
            {
                tracing::debug!(%error, "LinkedIn sandbox server failed");
            }
        });
        tracing::debug!(%addr, "LinkedIn sandbox started");
        Ok(Sandbox {
            addr,
            state,
            server: Some(server),
        })
    }

    /// The address the sandbox listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL of the API, e.g. `http://127.0.0.1:41234` (no trailing slash). A sandbox
    /// listening on every interface is reached through loopback.
    pub fn api_url(&self) -> String {
        let reachable_ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(reachable_ip, self.addr.port()))
    }

    /// URL of the OAuth token endpoint.
    pub fn token_url(&self) -> String {
        format!("{}{TOKEN_PATH}", self.api_url())
    }

    /// The configuration, with the client secret the token endpoint takes now.
    pub fn config(&self) -> SandboxConfig {
        SandboxConfig {
            client_secret: self.state.client_secret(),
            ..self.state.config.clone()
        }
    }

    /// A snapshot of what the sandbox has seen.
    pub fn stats(&self) -> Stats {
        self.state.stats()
    }

    /// The next `times` simpleJobPostings requests (that pass authentication) get `fault`,
    /// after any faults pushed earlier.
    pub fn push_fault(&self, fault: Fault, times: u32) {
        self.state.push_fault(fault, times);
    }

    /// The next `times` simpleJobPostingTasks requests (that pass authentication) get `fault`:
    /// a status, a hang, a garbled 200, or (`WrongCount200`) a 200 that leaves out the last id.
    pub fn push_task_fault(&self, fault: Fault, times: u32) {
        self.state.push_task_fault(fault, times);
    }

    /// Every simpleJobPostings request gets `fault` until `set_outage(None)`; scripted faults
    /// from [`Sandbox::push_fault`] are used up first.
    pub fn set_outage(&self, fault: Option<Fault>) {
        self.state.set_outage(fault);
    }

    /// Any request holding an element whose externalJobPostingId starts with `prefix` fails as a
    /// whole with a 500 — poison that only LinkedIn can see, for testing how the worker isolates it.
    pub fn set_poison_prefix(&self, prefix: Option<&str>) {
        self.state.set_poison_prefix(prefix.map(str::to_owned));
    }

    /// A CLOSE of any of these jobs is refused with LinkedIn's 409 "Cannot close job which is
    /// already closed or does not exist", answered as [`Sandbox::set_reclose_answer`] says (the
    /// job does not exist on LinkedIn). A CREATE or RENEW of the job lifts the mark.
    pub fn mark_absent<S: AsRef<str>>(&self, external_job_posting_ids: &[S]) {
        self.state.mark_absent(
            external_job_posting_ids
                .iter()
                .map(|id| id.as_ref().to_owned()),
        );
    }

    /// How a re-close (or a CLOSE of a job marked absent) is answered: the whole request HTTP 409
    /// ([`RecloseAnswer::Request`], the default) or HTTP 200 with that element's entry 409
    /// ([`RecloseAnswer::Element`]).
    pub fn set_reclose_answer(&self, answer: RecloseAnswer) {
        self.state.set_reclose_answer(answer);
    }

    /// Entries' `status` and `error.status` as numeric strings (`"202"`, `"422"`), as LinkedIn's
    /// spec types them, instead of numbers.
    pub fn set_string_statuses(&self, as_strings: bool) {
        self.state.set_string_statuses(as_strings);
    }

    /// Elements accepted per UTC day (LinkedIn's daily limit); once the day's count reaches it,
    /// every posting request is a 429 without `Retry-After` until 00:00 UTC. `None` lifts it.
    pub fn set_daily_element_limit(&self, limit: Option<u64>) {
        self.state.set_daily_element_limit(limit);
    }

    /// Rates of random 500s, 429s and stalled answers on every API call from now on (see
    /// [`RandomFaults`]); `RandomFaults::default()` turns them off.
    pub fn set_random_faults(&self, faults: RandomFaults) {
        self.state.set_random_faults(faults);
    }

    /// The seed the random answers are drawn with: [`SandboxConfig::seed`], or the random one
    /// picked when it was unset. Give it as `seed` again to draw the same answers.
    pub fn seed(&self) -> u64 {
        self.state.seed
    }

    /// A share (0 to 1) of the jobs the sandbox never accepted are already closed on LinkedIn (they
    /// expired, as postings do): a CLOSE of one is refused with the 409, answered as
    /// [`Sandbox::set_reclose_answer`] says. Which jobs is decided by [`SandboxConfig::seed`], the
    /// same for the same seed in any process; [`SandboxConfig::already_closed_rate`] is the rate at
    /// start and after [`Sandbox::reset`].
    pub fn set_already_closed_rate(&self, rate: f64) {
        self.state.set_already_closed_rate(rate);
    }

    /// The token endpoint answers `status` while set.
    pub fn set_token_outage(&self, status: Option<u16>) {
        self.state.set_token_outage(status);
    }

    /// Rotates the client secret, as LinkedIn's developer portal does: from now on the token
    /// endpoint answers the old one with 401 `invalid_client` "Client authentication failed", and
    /// every token issued so far is expired (LinkedIn does not document that tokens outlive the
    /// secret that got them, so the sandbox assumes the less friendly case).
    pub fn rotate_client_secret(&self, secret: &str) {
        self.state.rotate_client_secret(secret.to_owned());
    }

    /// Every access token issued so far, for tests that make sure none was logged.
    pub fn issued_tokens(&self) -> Vec<String> {
        self.state.issued_tokens()
    }

    /// Every token issued so far is expired from now on; later tokens are not affected.
    pub fn expire_tokens(&self) {
        self.state.expire_tokens();
    }

    /// Tasks of postings accepted from now on, whose externalJobPostingId starts with
    /// `external_id_prefix`, end as `rule` says. The longest matching prefix wins.
    pub fn set_task_rule(&self, external_id_prefix: &str, rule: TaskRule) {
        self.state.set_task_rule(external_id_prefix, rule);
    }

    /// Clears statistics, scripted faults, outages, task rules and the knobs (absent jobs, re-close
    /// answer, string statuses, daily limit and already-closed rate back to the configuration's); keeps the configuration,
    /// issued tokens, accepted tasks, the jobs closed and the day's count (LinkedIn's state).
    pub fn reset(&self) {
        self.state.reset();
    }

    /// Stops accepting connections, lets held requests go (hangs answer 503) and waits for the
    /// server to finish.
    pub async fn shutdown(mut self) {
        self.state.shutdown.cancel();
        if let Some(mut server) = self.server.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut server)
                .await
                .is_err()
        {
            tracing::debug!("LinkedIn sandbox connections outlived the grace period");
            server.abort();
        }
        tracing::debug!(addr = %self.addr, "LinkedIn sandbox stopped");
    }
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Sandbox")
            .field("addr", &self.addr)
            .field("client_id", &self.state.config.client_id)
            .finish_non_exhaustive()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // The server task notices and winds down by itself; nothing to wait for in a destructor.
        self.state.shutdown.cancel();
    }
}

/// Every route the sandbox answers.
fn router(state: Arc<SandboxState>) -> Router {
    Router::new()
        .route(TOKEN_PATH, post(token::issue_access_token))
        .route("/v2/simpleJobPostings", post(postings::batch_create))
        .route("/rest/simpleJobPostings", post(postings::batch_create))
        .route("/v2/simpleJobPostingTasks", get(tasks::task_statuses))
        .route("/rest/simpleJobPostingTasks", get(tasks::task_statuses))
        .merge(control::routes())
        .fallback(unknown_resource)
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BODY_BYTES))
        .with_state(state)
}

/// LinkedIn's 404 `Resource {name} does not exist`, so a client with a wrong path gets an answer
/// it can report.
async fn unknown_resource(uri: Uri) -> Response {
    tracing::debug!(path = uri.path(), "unknown resource");
    let name = uri
        .path()
        .rsplit('/')
        .find(|segment| !segment.is_empty())
        .unwrap_or("/");
    linkedin_error(
        StatusCode::NOT_FOUND,
        &format!("Resource {name} does not exist"),
    )
}

/// Runs `job-closer sandbox`: starts a sandbox from `args`, prints where it listens, and runs
/// until `shutdown` is cancelled.
pub(crate) async fn serve(args: SandboxArgs, shutdown: CancellationToken) -> std::io::Result<()> {
    let config = args.config();
    if let Err(problem) = config.random_faults.check() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            problem,
        ));
    }
    let sandbox = Sandbox::start(args.listen, config).await?;
    println!(
        "LinkedIn sandbox listening on http://{} (client id: {}, token url: {})",
        sandbox.addr(),
        sandbox.state.config.client_id,
        sandbox.token_url()
    );
    let random = sandbox.state.config.random_faults;
    if !random.is_off() {
        println!(
            "Random answers: {} 500s, {} 429s, {} stalls of up to {} ms (seed {})",
            random.server_error_rate,
            random.throttle_rate,
            random.stall_rate,
            random.stall_ms,
            sandbox.seed()
        );
    }
    shutdown.cancelled().await;
    sandbox.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::config::DEFAULT_OLDEST_LINKEDIN_VERSION;
    use super::test_support::{access_token, http_client, start_default};
    use super::*;

    #[tokio::test]
    async fn urls_point_at_the_bound_port() {
        let sandbox = start_default().await;
        let port = sandbox.addr().port();
        assert_ne!(port, 0);
        assert_eq!(sandbox.api_url(), format!("http://127.0.0.1:{port}"));
        assert_eq!(
            sandbox.token_url(),
            format!("http://127.0.0.1:{port}/oauth/v2/accessToken")
        );
    }

    #[tokio::test]
    async fn unspecified_address_is_reached_through_loopback() {
        let sandbox = Sandbox::start(([0, 0, 0, 0], 0).into(), SandboxConfig::default())
            .await
            .unwrap();
        assert_eq!(
            sandbox.api_url(),
            format!("http://127.0.0.1:{}", sandbox.addr().port())
        );
        access_token(&sandbox).await;
    }

    #[tokio::test]
    async fn unknown_paths_get_a_json_404() {
        let sandbox = start_default().await;
        let response = http_client()
            .get(format!("{}/v2/jobs", sandbox.api_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404);
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(
            body,
            serde_json::json!({"message": "Resource jobs does not exist", "status": 404})
        );
    }

    #[tokio::test]
    async fn shutdown_and_drop_stop_the_server() {
        let sandbox = start_default().await;
        let url = sandbox.token_url();
        access_token(&sandbox).await;
        sandbox.shutdown().await;
        assert!(http_client().post(&url).send().await.is_err());

        let dropped = start_default().await;
        let url = dropped.token_url();
        drop(dropped);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(http_client().post(&url).send().await.is_err());
    }

    #[tokio::test]
    async fn serve_runs_until_cancelled() {
        let args = SandboxArgs {
            listen: ([127, 0, 0, 1], 0).into(),
            client_id: "id".to_owned(),
            client_secret: "secret".to_owned(),
            token_lifetime_secs: 60,
            allow_contract: Vec::new(),
            latency_ms: 0,
            task_delay_ms: 0,
            strict: false,
            daily_element_limit: None,
            oldest_linkedin_version: DEFAULT_OLDEST_LINKEDIN_VERSION,
            already_closed_rate: 0.0,
            seed: None,
            server_error_rate: 0.0,
            throttle_rate: 0.0,
            stall_rate: 0.0,
            stall_ms: 3000,
        };
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(serve(args, shutdown.clone()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!running.is_finished());
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), running)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}
