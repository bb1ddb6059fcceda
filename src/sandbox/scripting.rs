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
    /// The `errorMessage` of a `FAILED` task; a generic one is used when absent.
    #[serde(default)]
    pub error_message: Option<String>,
}

impl TaskRule {
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

    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        let millis = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        serializer.serialize_u64(millis)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
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
