//! What a test can script while a sandbox runs: [`Fault`]s for job posting requests and
//! [`TaskRule`]s for how posting tasks end. Both travel as JSON through the control API, so their
//! serde shape is part of the sandbox's interface.

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
}
