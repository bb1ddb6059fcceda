//! What a test can script while a sandbox runs: [`Fault`]s for job posting requests,
//! [`TaskRule`]s for how posting tasks end, and [`RandomFaults`], rates of random 500s, 429s and
//! stalls drawn from the sandbox's seeded generator ([`super::SandboxConfig::seed`]). All travel as
//! JSON through the control API, so their serde shape is part of the sandbox's interface.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A scripted misbehaviour of `POST simpleJobPostings`, applied after authentication and the
/// `x-restli-method` check, before the body is looked at; or of `GET simpleJobPostingTasks`
/// (pushed with [`super::Sandbox::push_task_fault`]), applied after authentication, where
/// `WrongCount200` leaves the last requested id out of an otherwise good answer.
///
/// JSON (serde's default enum shape): `{"Status":{"status":429,"retry_after_secs":5}}`, `"Hang"`,
/// `"Garbage200"`, `"WrongCount200"`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fault {
    /// The whole request fails with this HTTP status and LinkedIn's error body shape
    /// `{"message":..,"status":..}`, plus a `Retry-After` header when given.
    Status {
        status: u16,
        #[serde(default)]
        retry_after_secs: Option<u64>,
        #[serde(default)]
        message: Option<String>,
    },
    /// Never answer: the request is held open for ten minutes (then 504) or until the sandbox
    /// shuts down (then 503), so the client's timeout is what ends it.
    Hang,
    /// HTTP 200 whose body cannot be parsed.
    Garbage200,
    /// HTTP 200 with one entry fewer than the request had elements, so entries cannot be matched
    /// to elements by position.
    WrongCount200,
}

impl Fault {
    /// A whole-request failure with LinkedIn's body `{"message":..,"status":..}` and no
    /// `Retry-After`.
    pub fn linkedin(status: u16, message: impl Into<String>) -> Fault {
        Fault::Status {
            status,
            retry_after_secs: None,
            message: Some(message.into()),
        }
    }

    /// 403 `Not enough permissions to access: POST /simpleJobPostings` (the integration lacks the
    /// permission).
    pub fn not_enough_permissions() -> Fault {
        Fault::linkedin(403, super::postings::NOT_ENOUGH_PERMISSIONS_MESSAGE)
    }

    /// 403 `Unpermitted fields present in REQUEST_BODY: ... [/elements]` (the integration sends
    /// the wrong Rest.li method).
    #[cfg(test)]
    pub(crate) fn unpermitted_fields() -> Fault {
        Fault::linkedin(403, super::postings::UNPERMITTED_FIELDS_MESSAGE)
    }

    /// 404 `Resource simpleJobPostings does not exist` (the integration's URL is wrong).
    pub fn resource_does_not_exist() -> Fault {
        Fault::linkedin(404, "Resource simpleJobPostings does not exist")
    }

    /// 402 `Insufficient job slots for contract = {contract} for purchase flow`.
    #[cfg(test)]
    pub(crate) fn insufficient_job_slots(contract: &str) -> Fault {
        Fault::linkedin(
            402,
            format!("Insufficient job slots for contract = {contract} for purchase flow"),
        )
    }

    /// 402 `Insufficient lifetime budget for contract: {contract}`.
    #[cfg(test)]
    pub(crate) fn insufficient_budget(contract: &str) -> Fault {
        Fault::linkedin(
            402,
            format!("Insufficient lifetime budget for contract: {contract}"),
        )
    }

    /// 403 `Caller is not authorized to access the jobs for contract: {contract}`.
    #[cfg(test)]
    pub(crate) fn contract_not_authorized(contract: &str) -> Fault {
        Fault::linkedin(
            403,
            format!("Caller is not authorized to access the jobs for contract: {contract}"),
        )
    }
}

/// Rates of random misbehaviour of every API call (simpleJobPostings and simpleJobPostingTasks),
/// for soaks: each call that passes the gate and carries no scripted fault draws once from the
/// sandbox's generator, seeded by [`super::SandboxConfig::seed`], so a run with the same seed and
/// the same calls in the same order draws the same answers.
///
/// JSON: `{"server_error_rate":0.05,"throttle_rate":0.03,"stall_rate":0.02,"stall_ms":3000}`
/// (every field optional, 0 by default).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RandomFaults {
    /// Share of calls answered 500 `Internal Server Error` (LinkedIn's body), 0 to 1. Nothing
    /// they hold is taken.
    pub server_error_rate: f64,
    /// Share of calls answered 429 `Too Many Requests` without `Retry-After`, 0 to 1; shares one
    /// draw with `server_error_rate`.
    pub throttle_rate: f64,
    /// Share of the other calls whose answer, decided and taken (a close is done), is held back for
    /// between half of `stall_ms` and `stall_ms`: a client that gives up first sends the close
    /// again and is told it is already closed (409).
    pub stall_rate: f64,
    pub stall_ms: u64,
}

/// What a random draw does to one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RandomAnswer {
    Normal,
    ServerError,
    Throttled,
    /// Answered normally, this long after being decided.
    Stalled(Duration),
}

impl RandomFaults {
    /// A rate outside 0..=1 (or not a number) cannot be drawn from.
    pub(crate) fn check(&self) -> Result<(), String> {
        for (name, rate) in [
            ("server_error_rate", self.server_error_rate),
            ("throttle_rate", self.throttle_rate),
            ("stall_rate", self.stall_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err(format!("{name} must be between 0 and 1, got {rate}"));
            }
        }
        Ok(())
    }

    pub(crate) fn is_off(&self) -> bool {
        self.server_error_rate <= 0.0 && self.throttle_rate <= 0.0 && self.stall_rate <= 0.0
    }

    /// The answer for three uniform draws in `[0, 1)`: which fault (`pick`), whether a normal answer
    /// stalls (`stall`), and for how long (`length`).
    pub(crate) fn answer(&self, pick: f64, stall: f64, length: f64) -> RandomAnswer {
        if pick < self.server_error_rate {
            return RandomAnswer::ServerError;
        }
        if pick < self.server_error_rate + self.throttle_rate {
            return RandomAnswer::Throttled;
        }
        if stall < self.stall_rate && self.stall_ms > 0 {
            let half = self.stall_ms as f64 / 2.0;
            let millis = half + half * length.clamp(0.0, 1.0);
            return RandomAnswer::Stalled(Duration::from_millis(millis as u64));
        }
        RandomAnswer::Normal
    }
}

/// The task statuses LinkedIn documents for simpleJobPostingTasks.
pub(crate) const TASK_STATUSES: [&str; 4] = ["SUCCEEDED", "FAILED", "IN_PROGRESS", "PROCESSED"];

/// How the tasks of matching postings end: `IN_PROGRESS` until `after` has passed since the
/// posting was accepted, then `status`.
///
/// JSON: `{"status":"FAILED","after_ms":100,"error_message":"Job was dropped: true"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRule {
    /// `SUCCEEDED`, `FAILED`, `IN_PROGRESS` (forever) or `PROCESSED`.
    pub status: String,
    #[serde(rename = "after_ms", with = "duration_as_millis")]
    pub after: Duration,
    /// The `errorMessage` of a `FAILED` task (a generic one is used when absent) or of a
    /// `PROCESSED` one ("processed by LinkedIn but also failed payload validation"; without it,
    /// `PROCESSED` means processed successfully).
    #[serde(default)]
    pub error_message: Option<String>,
}

impl TaskRule {
    /// `PROCESSED` after `after`, without `errorMessage`: processed successfully.
    #[cfg(test)]
    pub(crate) fn processed(after: Duration) -> TaskRule {
        TaskRule {
            status: "PROCESSED".to_owned(),
            after,
            error_message: None,
        }
    }

    /// `PROCESSED` after `after`, with `errorMessage`: processed, but failed payload validation.
    #[cfg(test)]
    pub(crate) fn processed_with_error(
        after: Duration,
        error_message: impl Into<String>,
    ) -> TaskRule {
        TaskRule {
            error_message: Some(error_message.into()),
            ..TaskRule::processed(after)
        }
    }

    /// The rule every task follows unless a prefix rule matches it.
    pub(crate) fn default_success(task_delay: Duration) -> TaskRule {
        TaskRule {
            status: "SUCCEEDED".to_owned(),
            after: task_delay,
            error_message: None,
        }
    }
}

/// Durations travel as whole milliseconds, which is what shell scripts and test fixtures write.
mod duration_as_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        duration: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        serializer.serialize_u64(millis)
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fault_json_shape() {
        let fault = Fault::Status {
            status: 429,
            retry_after_secs: Some(5),
            message: None,
        };
        assert_eq!(
            serde_json::to_value(&fault).unwrap(),
            json!({"Status": {"status": 429, "retry_after_secs": 5, "message": null}})
        );
        let short: Fault = serde_json::from_value(json!({"Status": {"status": 503}})).unwrap();
        assert_eq!(
            short,
            Fault::Status {
                status: 503,
                retry_after_secs: None,
                message: None
            }
        );
        let hang: Fault = serde_json::from_value(json!("Hang")).unwrap();
        assert_eq!(hang, Fault::Hang);
    }

    #[test]
    fn task_rule_serializes_after_as_millis() {
        let rule = TaskRule {
            status: "FAILED".to_owned(),
            after: Duration::from_millis(1500),
            error_message: Some("dropped".to_owned()),
        };
        let value = serde_json::to_value(&rule).unwrap();
        assert_eq!(
            value,
            json!({"status": "FAILED", "after_ms": 1500, "error_message": "dropped"})
        );
        let back: TaskRule = serde_json::from_value(value).unwrap();
        assert_eq!(back, rule);
        let without_message: TaskRule =
            serde_json::from_value(json!({"status": "SUCCEEDED", "after_ms": 0})).unwrap();
        assert_eq!(without_message.error_message, None);
    }

    #[test]
    fn random_faults_json_shape_and_defaults() {
        let faults: RandomFaults =
            serde_json::from_value(json!({"server_error_rate": 0.1, "stall_ms": 2000})).unwrap();
        assert_eq!(
            faults,
            RandomFaults {
                server_error_rate: 0.1,
                stall_ms: 2000,
                ..RandomFaults::default()
            }
        );
        assert!(RandomFaults::default().is_off());
        assert!(!faults.is_off());
        let refused = RandomFaults {
            throttle_rate: 1.5,
            ..RandomFaults::default()
        };
        assert!(refused.check().unwrap_err().contains("throttle_rate"));
        let nan = RandomFaults {
            stall_rate: f64::NAN,
            ..RandomFaults::default()
        };
        assert!(nan.check().is_err());
    }

    #[test]
    fn one_draw_picks_the_fault_another_the_stall() {
        let faults = RandomFaults {
            server_error_rate: 0.1,
            throttle_rate: 0.2,
            stall_rate: 0.5,
            stall_ms: 4000,
        };
        assert_eq!(faults.answer(0.05, 0.0, 0.0), RandomAnswer::ServerError);
        assert_eq!(faults.answer(0.25, 0.0, 0.0), RandomAnswer::Throttled);
        assert_eq!(
            faults.answer(0.35, 0.4, 0.0),
            RandomAnswer::Stalled(Duration::from_secs(2))
        );
        assert_eq!(
            faults.answer(0.35, 0.4, 0.999_999),
            RandomAnswer::Stalled(Duration::from_millis(3999))
        );
        assert_eq!(faults.answer(0.35, 0.6, 0.0), RandomAnswer::Normal);
        assert_eq!(
            RandomFaults::default().answer(0.0, 0.0, 0.0),
            RandomAnswer::Normal
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]
        /// Over many draws, each fault comes about as often as its rate says, and a stall lasts
        /// between half of `stall_ms` and `stall_ms`.
        #[test]
        fn rates_are_kept(
            server_error_rate in 0.0f64..0.3,
            throttle_rate in 0.0f64..0.3,
            stall_rate in 0.0f64..0.5,
            seed in proptest::prelude::any::<u64>(),
        ) {
            use rand::{RngExt, SeedableRng};
            let faults = RandomFaults { server_error_rate, throttle_rate, stall_rate, stall_ms: 1000 };
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let draws = 20_000;
            let (mut errors, mut throttles, mut stalls) = (0u32, 0u32, 0u32);
            for _ in 0..draws {
                match faults.answer(rng.random(), rng.random(), rng.random()) {
                    RandomAnswer::ServerError => errors += 1,
                    RandomAnswer::Throttled => throttles += 1,
                    RandomAnswer::Stalled(length) => {
                        proptest::prop_assert!((500..=1000).contains(&(length.as_millis() as u64)));
                        stalls += 1;
                    }
                    RandomAnswer::Normal => {}
                }
            }
            let share = |n: u32| f64::from(n) / f64::from(draws);
            let normal_share = 1.0 - server_error_rate - throttle_rate;
            proptest::prop_assert!((share(errors) - server_error_rate).abs() < 0.02);
            proptest::prop_assert!((share(throttles) - throttle_rate).abs() < 0.02);
            proptest::prop_assert!((share(stalls) - normal_share * stall_rate).abs() < 0.02);
        }
    }
}
