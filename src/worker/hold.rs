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
//! Rejected: a fixed-interval health probe of its own (a GET proves nothing about POST permissions,
//! and a synthetic close would close a real job).

use crate::linkedin::classify::Failure;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{error, info};

/// The ERROR for a continuing fault is repeated at most this often.
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(60);

pub(crate) struct Hold {
    blocked: watch::Sender<bool>,
    probing: AtomicBool,
    /// When the ERROR was last logged, and for which fault.
    last_logged: Mutex<Option<(Instant, Failure)>>,
    gauge: Gauge,
}

impl Hold {
    pub(crate) fn new(gauge: Gauge) -> Hold {
        Hold {
            blocked: watch::Sender::new(false),
            probing: AtomicBool::new(false),
            last_logged: Mutex::new(None),
            gauge,
        }
    }

    pub(crate) fn is_blocked(&self) -> bool {
        *self.blocked.borrow()
    }

    /// Changes of the hold, for the session loop.
    pub(crate) fn watch(&self) -> watch::Receiver<bool> {
        self.blocked.subscribe()
    }

    /// A sender met an integration fault. Returns whether it is the prober from now on (the first
    /// one while nobody probes); any other sender gives its elements back.
    pub(crate) fn block(&self, failure: &Failure) -> bool {
        self.gauge.set(1);
        self.blocked
            .send_if_modified(|blocked| !std::mem::replace(blocked, true));
        self.log(failure);
        self.probing
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// The probe met the fault again.
    pub(crate) fn still_blocked(&self, failure: &Failure) {
        self.log(failure);
    }

    /// The prober stopped without a verdict (shutdown, a lost session, or its element settled
    /// otherwise): the hold opens quietly, so that consuming resumes and the next request finds out
    /// whether the fault lasts — never a hold with nobody probing.
    pub(crate) fn stop_probing(&self) {
        self.probing.store(false, Ordering::SeqCst);
        self.gauge.set(0);
        self.blocked
            .send_if_modified(|blocked| std::mem::replace(blocked, false));
    }

    /// LinkedIn answered the probe as a request again.
    pub(crate) fn open(&self) {
        self.probing.store(false, Ordering::SeqCst);
        self.gauge.set(0);
        if self
            .blocked
            .send_if_modified(|blocked| std::mem::replace(blocked, false))
        {
            info!("LinkedIn accepts requests again; consuming again.");
            if let Ok(mut last) = self.last_logged.lock() {
                *last = None;
            }
        }
    }

    fn log(&self, failure: &Failure) {
        let now = Instant::now();
        let due = match self.last_logged.lock() {
            Ok(mut last) => {
                // Once a minute, and whenever the fault changes (a 403 window turning into 404s).
                let due = last.as_ref().is_none_or(|(at, logged)| {
                    now.duration_since(*at) >= LOG_EVERY || logged != failure
                });
                if due {
                    *last = Some((now, failure.clone()));
                }
                due
            }
            Err(_) => true,
        };
        if due {
            error!(
                status = failure.status,
                error_message = %failure.message,
                fix = fix_for(failure),
                "LinkedIn refuses the integration itself; holding: nothing is dead-lettered, nothing new is taken, one request probes per backoff step."
            );
        }
    }
}

/// What an operator should change for this integration fault.
pub(crate) fn fix_for(failure: &Failure) -> &'static str {
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

    #[tokio::test(start_paused = true)]
    async fn one_prober_at_a_time_and_the_gauge_follows() {
        let gauge = Gauge::default();
        let hold = Hold::new(gauge.clone());
        let mut changes = hold.watch();
        let fault = Failure::new(404, "Resource simpleJobPostings does not exist");
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

    #[test]
    fn each_fault_names_its_fix() {
        assert!(fix_for(&Failure::new(426, "too old")).contains("LINKEDIN_API_VERSION"));
        assert!(
            fix_for(&Failure::new(400, "bad LinkedIn-Version header"))
                .contains("LINKEDIN_API_VERSION")
        );
        assert!(
            fix_for(&Failure::new(404, "Resource x does not exist")).contains("LINKEDIN_API_URL")
        );
        assert!(
            fix_for(&Failure::new(
                403,
                "Unpermitted fields present in REQUEST_BODY"
            ))
            .contains("x-restli-method")
        );
        assert!(
            fix_for(&Failure::new(
                403,
                "Not enough permissions to access: POST /simpleJobPostings"
            ))
            .contains("permission")
        );
    }
}
