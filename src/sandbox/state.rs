//! The sandbox's memory, shared by every handler: issued tokens, accepted posting tasks, scripted
//! faults and rules, and the [`Stats`] tests assert on. All of it sits behind one mutex that is
//! never held across an `.await`, so each handler sees and changes it atomically.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::api_gate::LinkedInError;
use super::config::SandboxConfig;
use super::judge::{Entry, Operation, RecloseAnswer, Situation, Verdict, judge};
use super::scripting::{Fault, RandomAnswer, RandomFaults, TaskRule};

/// Length of issued access tokens; long enough that guessing one is hopeless.
const ACCESS_TOKEN_LENGTH: usize = 64;

/// What the sandbox has seen since it started or was last reset.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Every POST to the token endpoint, successful or not.
    pub token_requests: u64,
    pub tokens_issued: u64,
    /// Every POST to simpleJobPostings that reached the handler.
    pub requests: u64,
    /// Elements per simpleJobPostings request that got past authentication (and the
    /// `x-restli-method` check) and had an `elements` array of objects, in arrival order.
    /// Requests answered with a scripted fault are included.
    pub request_sizes: Vec<usize>,
    /// HTTP status of each simpleJobPostings answer.
    pub responses_by_status: BTreeMap<u16, u64>,
    /// externalJobPostingId -> number of CLOSE elements accepted (per-element 202). A job is
    /// closed once: re-closes are refused with a 409 and counted in `refused_closes` instead.
    pub closed: BTreeMap<String, u64>,
    /// externalJobPostingId -> CLOSE elements refused with LinkedIn's 409 "Cannot close job which
    /// is already closed or does not exist" (a re-close, or a job marked absent), whether the 409
    /// answered the whole request or just that element.
    #[serde(default)]
    pub refused_closes: BTreeMap<String, u64>,
    /// Per-element statuses returned inside HTTP 200 answers (202, 422, ...), including the
    /// entries of a [`super::Fault::WrongCount200`] answer.
    pub(crate) element_statuses: BTreeMap<u16, u64>,
    /// Highest number of simpleJobPostings requests in the handler at once. A request counts
    /// from arrival, through the configured latency, until it is answered.
    pub max_concurrent_requests: usize,
    /// GET simpleJobPostingTasks calls.
    pub task_queries: u64,
    /// Task ids asked about, over all task queries.
    pub task_ids_queried: u64,
    /// Statuses answered per task id over all task queries (`NOT_FOUND` for unknown ids).
    #[serde(default)]
    pub task_statuses: BTreeMap<String, u64>,
    /// externalJobPostingId -> the status its latest task lookup answered.
    #[serde(default)]
    pub last_task_status: BTreeMap<String, String>,
    /// `LinkedIn-Version` header values seen on `/rest` calls.
    pub linkedin_versions: BTreeSet<String>,
    /// Random answers given ([`super::RandomFaults`]), by kind: `"500"`, `"429"`, `"stall"`.
    #[serde(default)]
    pub random_faults: BTreeMap<String, u64>,
}

/// Whether a bearer token may be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenValidity {
    Valid,
    Expired,
    Unknown,
}

/// A posting the sandbox accepted (per-element 202): the asynchronous task LinkedIn would run.
#[derive(Clone, Debug)]
pub(crate) struct PostingTask {
    pub(crate) external_job_posting_id: String,
    pub(crate) job_posting_urn: String,
    pub(crate) accepted_at: Instant,
    /// Decided when the posting is accepted, so a rule set later does not rewrite history.
    pub(crate) rule: TaskRule,
}

/// State shared by all handlers of one sandbox.
pub(crate) struct SandboxState {
    pub(crate) config: SandboxConfig,
    /// The seed the random answers are drawn with: the configuration's, or a random one.
    pub(crate) seed: u64,
    /// Cancelled when the sandbox stops, so held requests (latency, hangs) let go at once.
    pub(crate) shutdown: CancellationToken,
    postings_in_flight: AtomicUsize,
    memory: Mutex<Memory>,
}

#[derive(Default)]
struct Memory {
    stats: Stats,
    scripted_faults: VecDeque<Fault>,
    /// Faults for the next simpleJobPostingTasks requests.
    task_faults: VecDeque<Fault>,
    outage: Option<Fault>,
    token_outage: Option<u16>,
    /// The client secret the token endpoint takes now: the configuration's until rotated.
    client_secret: String,
    /// externalJobPostingId prefix whose elements make the whole request fail with a 500.
    poison_prefix: Option<String>,
    /// Access token -> when it stops being valid.
    token_expiry: HashMap<String, Instant>,
    /// Task URN -> task.
    tasks: HashMap<String, PostingTask>,
    /// externalJobPostingId prefix -> rule.
    task_rules: BTreeMap<String, TaskRule>,
    /// externalJobPostingId -> the LinkedIn job posting number it was given, so re-posting the
    /// same job (as closing does) refers to the same `urn:li:jobPosting`.
    job_posting_numbers: HashMap<String, u64>,
    /// Jobs this sandbox closed; a CLOSE of one of them is refused with a 409. LinkedIn's state:
    /// `reset` keeps it. A CREATE or RENEW opens the job again.
    closed_jobs: HashSet<String>,
    /// Jobs marked as not existing ([`super::Sandbox::mark_absent`]): a CLOSE gets the 409.
    absent_jobs: HashSet<String>,
    reclose_answer: RecloseAnswer,
    /// Entries' `status` and `error.status` as numeric strings.
    string_statuses: bool,
    /// Elements accepted per UTC day before every posting request is a 429.
    daily_element_limit: Option<u64>,
    /// The share of jobs never accepted here that are already closed on LinkedIn.
    already_closed_rate: f64,
    /// The UTC day (days since the Unix epoch) `accepted_today` counts, and its count.
    accepted_day: u64,
    accepted_today: u64,
    random_faults: RandomFaults,
    draws: Draws,
}

/// The sandbox's one random generator, seeded from [`SandboxConfig::seed`].
struct Draws(rand::rngs::StdRng);

impl Default for Draws {
    fn default() -> Draws {
        Draws(rand::rngs::StdRng::seed_from_u64(0))
    }
}

/// One simpleJobPostings request being handled; counts towards the concurrency statistic until
/// dropped.
pub(crate) struct InFlightPosting<'a> {
    state: &'a SandboxState,
}

impl Drop for InFlightPosting<'_> {
    fn drop(&mut self) {
        self.state.postings_in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl SandboxState {
    pub(crate) fn new(mut config: SandboxConfig) -> SandboxState {
        // One seed for every random choice, resolved once: what the judge reads from the
        // configuration is the seed the draws use.
        let seed = *config.seed.get_or_insert_with(rand::random);
        let memory = Memory {
            daily_element_limit: config.daily_element_limit,
            client_secret: config.client_secret.clone(),
            random_faults: config.random_faults,
            draws: Draws(rand::rngs::StdRng::seed_from_u64(seed)),
            already_closed_rate: config.already_closed_rate,
            ..Memory::default()
        };
        SandboxState {
            config,
            seed,
            shutdown: CancellationToken::new(),
            postings_in_flight: AtomicUsize::new(0),
            memory: Mutex::new(memory),
        }
    }

    fn memory(&self) -> MutexGuard<'_, Memory> {
        // A panicking test thread must not turn every later request into a second panic.
        self.memory
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn stats(&self) -> Stats {
        self.memory().stats.clone()
    }

    /// Clears statistics, scripted faults, outages and task rules. Issued tokens and accepted
    /// tasks stay: a client mid-run must not see its token or task ids vanish.
    pub(crate) fn reset(&self) {
        let mut memory = self.memory();
        memory.stats = Stats::default();
        memory.scripted_faults.clear();
        memory.task_faults.clear();
        memory.outage = None;
        memory.poison_prefix = None;
        memory.token_outage = None;
        memory.task_rules.clear();
        memory.absent_jobs.clear();
        memory.reclose_answer = RecloseAnswer::default();
        memory.string_statuses = false;
        memory.daily_element_limit = self.config.daily_element_limit;
        memory.already_closed_rate = self.config.already_closed_rate;
        memory.random_faults = self.config.random_faults;
    }

    // --- random answers ---

    pub(crate) fn set_random_faults(&self, faults: RandomFaults) {
        self.memory().random_faults = faults;
    }

    /// Draws this call's random answer (always three draws, so that the sequence depends only on
    /// the seed and the number of calls) and counts it.
    pub(crate) fn draw_random_answer(&self) -> RandomAnswer {
        let mut memory = self.memory();
        if memory.random_faults.is_off() {
            return RandomAnswer::Normal;
        }
        let rng = &mut memory.draws.0;
        let (pick, stall, length) = (rng.random(), rng.random(), rng.random());
        let answer = memory.random_faults.answer(pick, stall, length);
        let kind = match answer {
            RandomAnswer::Normal => return answer,
            RandomAnswer::ServerError => "500",
            RandomAnswer::Throttled => "429",
            RandomAnswer::Stalled(_) => "stall",
        };
        *memory
            .stats
            .random_faults
            .entry(kind.to_owned())
            .or_default() += 1;
        answer
    }

    // --- token endpoint ---

    pub(crate) fn count_token_request(&self) {
        self.memory().stats.token_requests += 1;
    }

    pub(crate) fn token_outage(&self) -> Option<u16> {
        self.memory().token_outage
    }

    pub(crate) fn set_token_outage(&self, status: Option<u16>) {
        self.memory().token_outage = status;
    }

    /// The client secret the token endpoint takes now.
    pub(crate) fn client_secret(&self) -> String {
        self.memory().client_secret.clone()
    }

    /// A new client secret, as LinkedIn's developer portal makes one: from now on the token endpoint
    /// refuses the old one, and the tokens issued so far are expired.
    pub(crate) fn rotate_client_secret(&self, secret: String) {
        self.memory().client_secret = secret;
        self.expire_tokens();
    }

    pub(crate) fn issue_token(&self) -> String {
        let token: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(ACCESS_TOKEN_LENGTH)
            .map(char::from)
            .collect();
        let expires_at = Instant::now() + self.config.token_lifetime;
        let mut memory = self.memory();
        memory.token_expiry.insert(token.clone(), expires_at);
        memory.stats.tokens_issued += 1;
        token
    }

    pub(crate) fn token_validity(&self, token: &str) -> TokenValidity {
        match self.memory().token_expiry.get(token) {
            None => TokenValidity::Unknown,
            Some(expires_at) if Instant::now() >= *expires_at => TokenValidity::Expired,
            Some(_) => TokenValidity::Valid,
        }
    }

    /// Every access token issued so far (tests look for them in logs, where they must not be).
    pub(crate) fn issued_tokens(&self) -> Vec<String> {
        self.memory().token_expiry.keys().cloned().collect()
    }

    pub(crate) fn expire_tokens(&self) {
        let now = Instant::now();
        for expires_at in self.memory().token_expiry.values_mut() {
            *expires_at = (*expires_at).min(now);
        }
    }

    // --- simpleJobPostings ---

    /// Counts a request arriving at the simpleJobPostings handler; it stays "in the handler"
    /// until the returned guard is dropped.
    pub(crate) fn enter_posting_request(&self) -> InFlightPosting<'_> {
        let in_flight = self.postings_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        let mut memory = self.memory();
        memory.stats.requests += 1;
        memory.stats.max_concurrent_requests = memory.stats.max_concurrent_requests.max(in_flight);
        InFlightPosting { state: self }
    }

    pub(crate) fn record_linkedin_version(&self, version: &str) {
        self.memory()
            .stats
            .linkedin_versions
            .insert(version.to_owned());
    }

    pub(crate) fn record_request_size(&self, elements: usize) {
        self.memory().stats.request_sizes.push(elements);
    }

    pub(crate) fn record_posting_response(&self, status: u16) {
        *self
            .memory()
            .stats
            .responses_by_status
            .entry(status)
            .or_default() += 1;
    }

    pub(crate) fn record_element_status(&self, status: u16) {
        *self
            .memory()
            .stats
            .element_statuses
            .entry(status)
            .or_default() += 1;
    }

    pub(crate) fn push_fault(&self, fault: Fault, times: u32) {
        let mut memory = self.memory();
        for _ in 0..times {
            memory.scripted_faults.push_back(fault.clone());
        }
    }

    pub(crate) fn set_outage(&self, fault: Option<Fault>) {
        self.memory().outage = fault;
    }

    pub(crate) fn set_poison_prefix(&self, prefix: Option<String>) {
        self.memory().poison_prefix = prefix;
    }

    /// The fault this request gets: the next scripted one (used up), else the outage, if any.
    pub(crate) fn take_fault(&self) -> Option<Fault> {
        let mut memory = self.memory();
        memory
            .scripted_faults
            .pop_front()
            .or_else(|| memory.outage.clone())
    }

    /// Records an accepted posting (a per-element 202) and returns its task URN.
    #[cfg(test)]
    pub(crate) fn accept_posting(&self, external_job_posting_id: &str, is_close: bool) -> String {
        let operation = if is_close {
            Operation::Close
        } else {
            Operation::Create
        };
        self.memory()
            .accept_posting(&self.config, external_job_posting_id, operation)
    }

    pub(crate) fn mark_absent(&self, external_job_posting_ids: impl IntoIterator<Item = String>) {
        self.memory().absent_jobs.extend(external_job_posting_ids);
    }

    pub(crate) fn set_reclose_answer(&self, answer: RecloseAnswer) {
        self.memory().reclose_answer = answer;
    }

    pub(crate) fn set_string_statuses(&self, as_strings: bool) {
        self.memory().string_statuses = as_strings;
    }

    pub(crate) fn string_statuses(&self) -> bool {
        self.memory().string_statuses
    }

    pub(crate) fn set_daily_element_limit(&self, limit: Option<u64>) {
        self.memory().daily_element_limit = limit;
    }

    pub(crate) fn set_already_closed_rate(&self, rate: f64) {
        self.memory().already_closed_rate = rate.clamp(0.0, 1.0);
    }

    /// Answers the elements of a request that passed the gate and carried no scripted fault:
    /// the daily limit, then [`judge`], then what the verdict changes (tasks, closed jobs, stats).
    /// One lock for all of it, so two requests closing the same job cannot both be accepted.
    /// `Ok` holds the response entries in request order; `Err` refuses the whole request.
    pub(crate) fn answer_elements(
        &self,
        elements: &[Map<String, Value>],
        utc_day: u64,
    ) -> Result<Vec<Value>, LinkedInError> {
        let refused_task_urn = new_task_urn();
        let mut guard = self.memory();
        let memory = &mut *guard;
        if memory.accepted_day != utc_day {
            memory.accepted_day = utc_day;
            memory.accepted_today = 0;
        }
        if let Some(limit) = memory.daily_element_limit
            && memory.accepted_today >= limit
        {
            return Err(LinkedInError::new(
                StatusCode::TOO_MANY_REQUESTS,
                DAILY_LIMIT_MESSAGE,
            ));
        }
        let accepted = &memory.job_posting_numbers;
        let ever_accepted = |id: &str| accepted.contains_key(id);
        let situation = Situation {
            config: &self.config,
            poison_prefix: memory.poison_prefix.as_deref(),
            reclose_answer: memory.reclose_answer,
            closed: &memory.closed_jobs,
            absent: &memory.absent_jobs,
            ever_accepted: &ever_accepted,
            already_closed_rate: memory.already_closed_rate,
            refused_task_urn: &refused_task_urn,
        };
        match judge(elements, &situation) {
            Verdict::Refused {
                error,
                refused_closes,
            } => {
                for external_id in refused_closes {
                    memory.count_refused_close(external_id);
                }
                Err(error)
            }
            Verdict::Answered(entries) => Ok(entries
                .into_iter()
                .map(|entry| memory.record_entry(&self.config, entry))
                .collect()),
        }
    }

    // --- simpleJobPostingTasks ---

    pub(crate) fn set_task_rule(&self, external_id_prefix: &str, rule: TaskRule) {
        self.memory()
            .task_rules
            .insert(external_id_prefix.to_owned(), rule);
    }

    pub(crate) fn count_task_query(&self, task_ids: usize) {
        let mut memory = self.memory();
        memory.stats.task_queries += 1;
        memory.stats.task_ids_queried += task_ids as u64;
    }

    pub(crate) fn push_task_fault(&self, fault: Fault, times: u32) {
        let mut memory = self.memory();
        for _ in 0..times {
            memory.task_faults.push_back(fault.clone());
        }
    }

    /// The fault this task lookup gets, if any (used up).
    pub(crate) fn take_task_fault(&self) -> Option<Fault> {
        self.memory().task_faults.pop_front()
    }

    /// Records the status a task lookup answered for one id (of a known posting, if any).
    pub(crate) fn record_task_status(&self, external_job_posting_id: Option<&str>, status: &str) {
        let mut memory = self.memory();
        *memory
            .stats
            .task_statuses
            .entry(status.to_owned())
            .or_default() += 1;
        if let Some(external_id) = external_job_posting_id {
            memory
                .stats
                .last_task_status
                .insert(external_id.to_owned(), status.to_owned());
        }
    }

    pub(crate) fn task(&self, task_urn: &str) -> Option<PostingTask> {
        self.memory().tasks.get(task_urn).cloned()
    }
}

/// LinkedIn's answer once an application's daily limit is spent (it resets at 00:00 UTC).
pub(crate) const DAILY_LIMIT_MESSAGE: &str =
    "Resource level throttle APPLICATION DAY limit for calls to this resource is reached.";

fn new_task_urn() -> String {
    format!("urn:li:simpleJobPostingTask:{}", uuid::Uuid::new_v4())
}

/// An entry's `status` (or `error.status`): a number, or with string statuses on, its digits as
/// a string (LinkedIn's spec types them as strings; its samples show numbers).
pub(crate) fn status_value(status: u16, as_string: bool) -> Value {
    if as_string {
        json!(status.to_string())
    } else {
        json!(status)
    }
}

/// The entry of an accepted element: its task.
pub(crate) fn accepted_entry(task_urn: &str, string_statuses: bool) -> Value {
    json!({
        "id": task_urn,
        "location": format!("/simpleJobPostings/{}", task_urn.replace(':', "%3A")),
        "status": status_value(202, string_statuses),
    })
}

/// The entry of a refused element, in LinkedIn's shape.
pub(crate) fn failed_entry(status: u16, message: &str, string_statuses: bool) -> Value {
    let status = status_value(status, string_statuses);
    json!({"error": {"message": message, "status": status}, "status": status})
}

impl Memory {
    fn count_refused_close(&mut self, external_id: &str) {
        *self
            .stats
            .refused_closes
            .entry(external_id.to_owned())
            .or_default() += 1;
    }

    /// Records what one entry of an answered request changes and renders it.
    fn record_entry(&mut self, config: &SandboxConfig, entry: Entry<'_>) -> Value {
        match entry {
            Entry::Accepted {
                external_id,
                operation,
            } => {
                let task_urn = self.accept_posting(config, external_id, operation);
                *self.stats.element_statuses.entry(202).or_default() += 1;
                accepted_entry(&task_urn, self.string_statuses)
            }
            Entry::Failed {
                status,
                message,
                refused_close,
            } => {
                if let Some(external_id) = refused_close {
                    self.count_refused_close(external_id);
                }
                *self.stats.element_statuses.entry(status).or_default() += 1;
                failed_entry(status, &message, self.string_statuses)
            }
        }
    }

    /// Records an accepted posting: its task, the job's open or closed state, the day's count.
    fn accept_posting(
        &mut self,
        config: &SandboxConfig,
        external_job_posting_id: &str,
        operation: Operation,
    ) -> String {
        let task_urn = new_task_urn();
        let rule = self
            .task_rule_for(external_job_posting_id)
            .unwrap_or_else(|| TaskRule::default_success(config.task_delay));
        let job_posting_number = *self
            .job_posting_numbers
            .entry(external_job_posting_id.to_owned())
            .or_insert_with(|| rand::rng().random_range(1_000_000_000..10_000_000_000));
        self.tasks.insert(
            task_urn.clone(),
            PostingTask {
                external_job_posting_id: external_job_posting_id.to_owned(),
                job_posting_urn: format!("urn:li:jobPosting:{job_posting_number}"),
                accepted_at: Instant::now(),
                rule,
            },
        );
        self.accepted_today += 1;
        match operation {
            Operation::Close => {
                self.closed_jobs.insert(external_job_posting_id.to_owned());
                *self
                    .stats
                    .closed
                    .entry(external_job_posting_id.to_owned())
                    .or_default() += 1;
            }
            Operation::Create | Operation::Renew => {
                self.closed_jobs.remove(external_job_posting_id);
                self.absent_jobs.remove(external_job_posting_id);
            }
            Operation::Update => {}
        }
        task_urn
    }

    /// The rule with the longest prefix of `external_job_posting_id`, if any.
    fn task_rule_for(&self, external_job_posting_id: &str) -> Option<TaskRule> {
        self.task_rules
            .iter()
            .filter(|(prefix, _)| external_job_posting_id.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map(|(_, rule)| rule.clone())
    }
}

impl PostingTask {
    /// The task's status `elapsed` after its posting was accepted.
    pub(crate) fn status_after(&self, elapsed: Duration) -> &str {
        if elapsed < self.rule.after {
            "IN_PROGRESS"
        } else {
            &self.rule.status
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> SandboxState {
        SandboxState::new(SandboxConfig::default())
    }

    #[test]
    fn longest_matching_prefix_wins() {
        let state = state();
        let rule = |status: &str| TaskRule {
            status: status.to_owned(),
            after: Duration::ZERO,
            error_message: None,
        };
        state.set_task_rule("job-", rule("FAILED"));
        state.set_task_rule("job-keep-", rule("PROCESSED"));
        let status_of = |external_id: &str| {
            let urn = state.accept_posting(external_id, true);
            state
                .task(&urn)
                .unwrap()
                .status_after(Duration::ZERO)
                .to_owned()
        };
        assert_eq!(status_of("job-keep-1"), "PROCESSED");
        assert_eq!(status_of("job-2"), "FAILED");
        assert_eq!(status_of("other"), "SUCCEEDED");
    }

    #[test]
    fn same_job_keeps_its_job_posting_urn() {
        let state = state();
        let first = state.accept_posting("A", false);
        let second = state.accept_posting("A", true);
        assert_eq!(
            state.task(&first).unwrap().job_posting_urn,
            state.task(&second).unwrap().job_posting_urn
        );
        assert_eq!(state.stats().closed.get("A"), Some(&1));
    }

    #[test]
    fn scripted_faults_come_before_the_outage_and_are_used_up() {
        let state = state();
        state.set_outage(Some(Fault::Garbage200));
        state.push_fault(Fault::Hang, 2);
        assert_eq!(state.take_fault(), Some(Fault::Hang));
        assert_eq!(state.take_fault(), Some(Fault::Hang));
        assert_eq!(state.take_fault(), Some(Fault::Garbage200));
        state.set_outage(None);
        assert_eq!(state.take_fault(), None);
    }

    #[test]
    fn expire_tokens_spares_later_tokens() {
        let state = state();
        let old = state.issue_token();
        state.expire_tokens();
        let new = state.issue_token();
        assert_eq!(state.token_validity(&old), TokenValidity::Expired);
        assert_eq!(state.token_validity(&new), TokenValidity::Valid);
        assert_eq!(state.token_validity("made-up"), TokenValidity::Unknown);
    }

    #[test]
    fn concurrency_is_the_high_water_mark() {
        let state = state();
        {
            let _first = state.enter_posting_request();
            let _second = state.enter_posting_request();
        }
        let _third = state.enter_posting_request();
        let stats = state.stats();
        assert_eq!(stats.requests, 3);
        assert_eq!(stats.max_concurrent_requests, 2);
    }
}
