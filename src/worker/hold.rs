//! Holding the worker while the integration is broken: an answer that no message can cause (403 "Not
//! enough permissions to access", 403 "Unpermitted fields present in REQUEST_BODY", 404, a refused
//! `LinkedIn-Version`) would come back for every request, so dead-lettering on it would drain the
//! close queue into the dead-letter queue within minutes of a bad deploy.
//!
//! Instead the first sender to meet one blocks the [`Hold`] and becomes its prober: it keeps a single
//! element and sends it once per backoff step (capped at `RETRY_MAX_MS`, spending no retry budget)
//! until LinkedIn answers it as a request again; every other sender gives its elements back. The
//! session loop watches the hold: it stops consuming, gives back what is batched, and `/readyz` turns
//! 503 with `job_closer_linkedin_blocked` at 1. One ERROR names the fault and the fix, at most once a
//! minute (and again when the fault changes). When the probe gets through, the hold opens and the worker carries on by itself.
//!
//! Refused client credentials (the token endpoint's 400/401, e.g. a rotated secret) hold the worker
//! the same way, as [`Fault::Credentials`]: no request can be made without a token, so every batch
//! would fail alike. Its probe is the token request itself, which the token cache already allows
//! only once per step of its backoff for the whole worker; the first sender or task lookup to meet
//! the refusal becomes the prober, and the hold opens as soon as a token is had ([`Hold::token_had`]).
//!
//! Rejected: a fixed-interval health probe of its own (a GET proves nothing about POST permissions,
//! and a synthetic close would close a real job); for refused credentials, a token-probing task of
//! its own (a second timer beside the token backoff, and one more thing to stop on shutdown).

use crate::linkedin::classify::Failure;
use crate::metrics::{LinkedInHold, Metrics};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{error, info};

/// The ERROR for a continuing fault is repeated at most this often.
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(60);

/// What holds the worker: answers that no message can cause.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// LinkedIn refuses the integration itself (403 permissions, 404, a refused `LinkedIn-Version`):
    /// probed with one element per backoff step.
    Integration(Failure),
    /// The token endpoint refuses the client credentials (400/401): probed by the token backoff's
    /// one request per step; the hold opens as soon as a token is had.
    Credentials(Failure),
}

impl Fault {
    fn failure(&self) -> &Failure {
        match self {
            Fault::Integration(failure) | Fault::Credentials(failure) => failure,
        }
    }

    fn kind(&self) -> LinkedInHold {
        match self {
            Fault::Integration(_) => LinkedInHold::Integration,
            Fault::Credentials(_) => LinkedInHold::Credentials,
        }
    }
}

pub(crate) struct Hold {
    blocked: watch::Sender<bool>,
    probing: AtomicBool,
    /// The fault holding the worker, while one does.
    fault: Mutex<Option<Fault>>,
    /// When the ERROR was last logged, and for which fault.
    last_logged: Mutex<Option<(Instant, Fault)>>,
    metrics: Arc<Metrics>,
}

impl Hold {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Hold {
        Hold {
            blocked: watch::Sender::new(false),
            probing: AtomicBool::new(false),
            fault: Mutex::new(None),
            last_logged: Mutex::new(None),
            metrics,
        }
    }

    pub(crate) fn is_blocked(&self) -> bool {
        *self.blocked.borrow()
    }

    /// Changes of the hold, for the session loop.
    pub(crate) fn watch(&self) -> watch::Receiver<bool> {
        self.blocked.subscribe()
    }

    /// A sender (or a task lookup) met a fault. Returns whether it is the prober from now on (the
    /// first one while nobody probes); any other sender gives its elements back.
    pub(crate) fn block(&self, fault: &Fault) -> bool {
        self.set_fault(Some(fault.clone()));
        self.blocked
            .send_if_modified(|blocked| !std::mem::replace(blocked, true));
        self.log(fault);
        self.probing
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// The probe met a fault again (perhaps another one: a token refused, then the permission).
    pub(crate) fn still_blocked(&self, fault: &Fault) {
        self.set_fault(Some(fault.clone()));
        self.log(fault);
    }

    /// The prober stopped without a verdict (shutdown, a lost session, or its element settled
    /// otherwise): the hold opens quietly, so that consuming resumes and the next request finds out
    /// whether the fault lasts — never a hold with nobody probing.
    pub(crate) fn stop_probing(&self) {
        self.probing.store(false, Ordering::SeqCst);
        self.set_fault(None);
        self.blocked
            .send_if_modified(|blocked| std::mem::replace(blocked, false));
    }

    /// LinkedIn answered the probe as a request again.
    pub(crate) fn open(&self) {
        let fault = self.current();
        self.probing.store(false, Ordering::SeqCst);
        self.set_fault(None);
        if self
            .blocked
            .send_if_modified(|blocked| std::mem::replace(blocked, false))
        {
            match fault {
                Some(Fault::Credentials(_)) => {
                    info!("The token endpoint gave a token again; consuming again.")
                }
                _ => info!("LinkedIn accepts requests again; consuming again."),
            }
            if let Ok(mut last) = self.last_logged.lock() {
                *last = None;
            }
        }
    }

    /// The prober got a token. If refused credentials were the hold, it is over (and the caller is
    /// no longer the prober): returns whether it opened.
    pub(crate) fn token_had(&self) -> bool {
        if matches!(self.current(), Some(Fault::Credentials(_))) {
            self.open();
            return true;
        }
        false
    }

    fn current(&self) -> Option<Fault> {
        self.fault.lock().ok().and_then(|fault| fault.clone())
    }

    fn set_fault(&self, fault: Option<Fault>) {
        self.metrics
            .set_linkedin_hold(fault.as_ref().map(Fault::kind));
        if let Ok(mut current) = self.fault.lock() {
            *current = fault;
        }
    }

    fn log(&self, fault: &Fault) {
        let now = Instant::now();
        let due = match self.last_logged.lock() {
            Ok(mut last) => {
                // Once a minute, and whenever the fault changes (a 403 window turning into 404s).
                let due = last.as_ref().is_none_or(|(at, logged)| {
                    now.duration_since(*at) >= LOG_EVERY || logged != fault
                });
                if due {
                    *last = Some((now, fault.clone()));
                }
                due
            }
            Err(_) => true,
        };
        if !due {
            return;
        }
        let failure = fault.failure();
        match fault {
            Fault::Integration(_) => error!(
                status = failure.status,
                error_message = %failure.message,
                fix = fix_for(fault),
                "LinkedIn refuses the integration itself; holding: nothing is dead-lettered, nothing new is taken, one request probes per backoff step."
            ),
            Fault::Credentials(_) => error!(
                status = failure.status,
                error_message = %failure.message,
                fix = fix_for(fault),
                "LinkedIn's token endpoint refuses the client credentials; holding: nothing is dead-lettered, nothing new is taken, one token request per backoff step."
            ),
        }
    }
}

/// What an operator should change for this fault.
pub(crate) fn fix_for(fault: &Fault) -> &'static str {
    let failure = match fault {
        Fault::Credentials(_) => {
            return "check LINKEDIN_CLIENT_ID and LINKEDIN_CLIENT_SECRET / LINKEDIN_CLIENT_SECRET_FILE: a rotated secret written to LINKEDIN_CLIENT_SECRET_FILE is picked up within seconds, without a restart";
        }
        Fault::Integration(failure) => failure,
    };
    let message = failure.message.as_str();
    if message.to_ascii_lowercase().contains("linkedin-version") || failure.status == 426 {
        "set LINKEDIN_API_VERSION to a version LinkedIn lists as active (YYYYMM or YYYYMM.NN), or unset it for /v2"
    } else if failure.status == 404 {
        "check LINKEDIN_API_URL (and LINKEDIN_API_VERSION, which selects /rest instead of /v2): the endpoint does not exist there"
    } else if message.contains("Unpermitted fields") {
        "the x-restli-method: batch_create header does not reach LinkedIn; check proxies between job-closer and LinkedIn"
    } else {
        "grant the LinkedIn application the Job Posting API permission (and check that x-restli-method: batch_create reaches LinkedIn)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn integration(status: u16, message: &str) -> Fault {
        Fault::Integration(Failure::new(status, message))
    }

    #[tokio::test(start_paused = true)]
    async fn one_prober_at_a_time_and_the_gauge_follows() {
        let metrics = Arc::new(Metrics::new());
        let gauge = metrics.linkedin_blocked.clone();
        let hold = Hold::new(metrics.clone());
        let mut changes = hold.watch();
        let fault = integration(404, "Resource simpleJobPostings does not exist");
        assert!(hold.block(&fault), "the first becomes the prober");
        assert!(!hold.block(&fault), "the others give back");
        assert!(hold.is_blocked());
        assert_eq!(gauge.get(), 1);
        assert!(changes.has_changed().unwrap());
        changes.borrow_and_update();
        hold.open();
        assert!(!hold.is_blocked());
        assert_eq!(gauge.get(), 0);
        assert!(changes.has_changed().unwrap());
        assert!(hold.block(&fault), "a new fault has a new prober");
        hold.stop_probing();
        assert!(!hold.is_blocked(), "never a hold with nobody probing");
        assert_eq!(gauge.get(), 0);
        assert!(hold.block(&fault));
    }

    #[tokio::test(start_paused = true)]
    async fn refused_credentials_hold_until_a_token_is_had_and_readyz_names_them() {
        let metrics = Arc::new(Metrics::new());
        let hold = Hold::new(metrics.clone());
        let refused = Fault::Credentials(Failure::new(401, "Client authentication failed"));
        assert!(hold.block(&refused));
        assert_eq!(metrics.linkedin_blocked.get(), 1);
        assert!(metrics.not_ready_because()[0].contains("client credentials"));
        // A token had while the integration holds opens nothing.
        hold.still_blocked(&integration(404, "Resource x does not exist"));
        assert!(!hold.token_had());
        assert!(hold.is_blocked());
        assert!(metrics.not_ready_because()[0].contains("integration"));
        hold.still_blocked(&refused);
        assert!(hold.token_had());
        assert!(!hold.is_blocked());
        assert_eq!(metrics.linkedin_blocked.get(), 0);
        assert!(hold.block(&refused), "the next fault has a prober again");
    }

    #[test]
    fn each_fault_names_its_fix() {
        assert!(fix_for(&integration(426, "too old")).contains("LINKEDIN_API_VERSION"));
        assert!(
            fix_for(&integration(400, "bad LinkedIn-Version header"))
                .contains("LINKEDIN_API_VERSION")
        );
        assert!(
            fix_for(&integration(404, "Resource x does not exist")).contains("LINKEDIN_API_URL")
        );
        assert!(
            fix_for(&integration(
                403,
                "Unpermitted fields present in REQUEST_BODY"
            ))
            .contains("x-restli-method")
        );
        assert!(
            fix_for(&integration(
                403,
                "Not enough permissions to access: POST /simpleJobPostings"
            ))
            .contains("permission")
        );
        let refused = fix_for(&Fault::Credentials(Failure::new(401, "invalid_client")));
        for setting in [
            "LINKEDIN_CLIENT_ID",
            "LINKEDIN_CLIENT_SECRET",
            "LINKEDIN_CLIENT_SECRET_FILE",
        ] {
            assert!(refused.contains(setting), "{refused}");
        }
    }
}
