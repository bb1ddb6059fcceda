//! Which dead letters a command acts on: the filters every `dlq` command takes, and the times they
//! are given in.
//!
//! Times (`--since`, `--until`, `--older-than`) are RFC 3339 or an age (`90m`, `12h`, `7d`) counted
//! back from when the command started; both bounds are inclusive and compare `x-dead-lettered-at`
//! (or the time of RabbitMQ's `x-death` record). A dead letter that records no time matches no time
//! filter: "what failed since the deploy" must not include what cannot say when it failed. Ages are
//! turned into instants once, when the arguments are parsed, so a walk of 100,000 messages that takes
//! a minute does not move its own bound while it runs.
//!
//! Filters read only what they need: a replay by status of 100,000 messages does not parse 100,000
//! bodies. Everything here is pure and works on a body and its properties, so `import` filters the
//! records of a file the same way the other commands filter the queue.

use super::group::{GroupKey, parse_group_id};
use crate::dead_letter::{Recorded, contract, external_id, format_time};
use clap::Args;
use lapin::BasicProperties;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

/// Which dead letters a command acts on; every given filter must match.
#[derive(Args, Clone, Debug, Default)]
pub(crate) struct Filter {
    /// Only dead letters with this x-error-status (HTTP status, e.g. 403).
    #[arg(long, value_name = "S")]
    pub(crate) status: Option<u16>,
    /// Only dead letters with this reason (invalid, rejected, retries-exhausted, task-failed,
    /// task-unknown; broker-rejected, broker-expired, broker-maxlen or broker-delivery_limit for
    /// RabbitMQ's own dead letters).
    #[arg(long, value_name = "R")]
    pub(crate) reason: Option<String>,
    /// Only the dead letter(s) with this externalJobPostingId.
    #[arg(long = "id", value_name = "EXTERNAL_ID")]
    pub(crate) external_id: Option<String>,
    /// Only the dead letters of this failure group (the id `dlq stats` prints).
    #[arg(long, value_name = "G", value_parser = parse_group_id)]
    pub(crate) group: Option<String>,
    /// Only dead letters dead-lettered at or after T: RFC 3339 (2026-12-01T14:00:00Z) or an age
    /// (90m, 12h, 7d ago).
    #[arg(long, value_name = "T", value_parser = parse_time_arg)]
    pub(crate) since: Option<OffsetDateTime>,
    /// Only dead letters dead-lettered at or before T: RFC 3339 or an age (7d: older than 7 days).
    #[arg(long, value_name = "T", value_parser = parse_time_arg)]
    pub(crate) until: Option<OffsetDateTime>,
    /// Only dead letters whose body names this contract (`"contract":"urn:li:contract:7"`).
    #[arg(long, value_name = "URN")]
    pub(crate) contract: Option<String>,
    /// Only dead letters whose error message or body contains TEXT (case-insensitive).
    #[arg(long, value_name = "TEXT")]
    pub(crate) grep: Option<String>,
    /// Only dead letters replayed at least N times before (x-replay-count).
    #[arg(long, value_name = "N")]
    pub(crate) min_replays: Option<u32>,
}

/// An RFC 3339 time or an age, as the command line gives it, resolved against the clock now.
pub(crate) fn parse_time_arg(text: &str) -> Result<OffsetDateTime, String> {
    parse_time(text, OffsetDateTime::now_utc())
}

/// An RFC 3339 time, or an age before `now`: a whole number with a unit, `s`, `m`, `h`, `d` or `w`.
pub(crate) fn parse_time(text: &str, now: OffsetDateTime) -> Result<OffsetDateTime, String> {
    let text = text.trim();
    if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(at);
    }
    let age = parse_age(text).ok_or_else(|| {
        format!(
            "{text:?} is neither an RFC 3339 time (2026-12-01T14:00:00Z) nor an age such as 90m, 12h or 7d"
        )
    })?;
    now.checked_sub(age)
        .ok_or_else(|| format!("{text:?} reaches back before the calendar"))
}

/// `90m`, `12h`, `7d`, `2w`, `30s`.
pub(crate) fn parse_age(text: &str) -> Option<Duration> {
    let unit_at = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(unit_at);
    let count: i64 = number.parse().ok()?;
    let seconds_per_unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return None,
    };
    Some(Duration::seconds(count.checked_mul(seconds_per_unit)?))
}

/// A message as the filters see it: the body and the properties (headers) it came with.
#[derive(Clone, Copy)]
pub(crate) struct Candidate<'a> {
    pub(crate) body: &'a [u8],
    pub(crate) properties: &'a BasicProperties,
}

impl Filter {
    pub(crate) fn is_empty(&self) -> bool {
        self.status.is_none()
            && self.reason.is_none()
            && self.external_id.is_none()
            && self.group.is_none()
            && self.since.is_none()
            && self.until.is_none()
            && self.contract.is_none()
            && self.grep.is_none()
            && self.min_replays.is_none()
    }

    /// Whether a dead letter is selected.
    pub(crate) fn matches(&self, candidate: Candidate<'_>) -> bool {
        if self.is_empty() {
            return true;
        }
        let recorded = Recorded::read(candidate.properties.headers().as_ref());
        self.matches_record(&recorded) && self.matches_body(&recorded, candidate.body)
    }

    /// The filters on the headers alone.
    fn matches_record(&self, recorded: &Recorded) -> bool {
        if let Some(status) = self.status
            && recorded.status != Some(i64::from(status))
        {
            return false;
        }
        if let Some(reason) = &self.reason
            && !recorded
                .reason
                .as_deref()
                .is_some_and(|recorded| recorded.eq_ignore_ascii_case(reason.trim()))
        {
            return false;
        }
        if let Some(group) = &self.group
            && GroupKey::of(recorded).id() != *group
        {
            return false;
        }
        if let Some(min) = self.min_replays
            && recorded.replay_count.unwrap_or(0) < i64::from(min)
        {
            return false;
        }
        self.matches_time(recorded.dead_lettered_at.as_deref())
    }

    fn matches_time(&self, dead_lettered_at: Option<&str>) -> bool {
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        let Some(at) = dead_lettered_at.and_then(|at| OffsetDateTime::parse(at, &Rfc3339).ok())
        else {
            return false;
        };
        self.since.is_none_or(|since| at >= since) && self.until.is_none_or(|until| at <= until)
    }

    /// The filters that look into the body (and, for `--grep`, the error message).
    fn matches_body(&self, recorded: &Recorded, body: &[u8]) -> bool {
        if let Some(id) = &self.external_id
            && external_id(body).as_deref() != Some(id.as_str())
        {
            return false;
        }
        if let Some(wanted) = &self.contract
            && contract(body).as_deref() != Some(wanted.trim())
        {
            return false;
        }
        if let Some(text) = &self.grep {
            let needle = text.to_lowercase();
            let in_message = recorded
                .message
                .as_deref()
                .is_some_and(|message| message.to_lowercase().contains(&needle));
            if !in_message
                && !String::from_utf8_lossy(body)
                    .to_lowercase()
                    .contains(&needle)
            {
                return false;
            }
        }
        true
    }

    /// The filters as the command line writes them, in the order `--help` lists them: what a
    /// page prints as the command that selects the same dead letters (times as RFC 3339).
    pub(crate) fn flags(&self) -> Vec<(&'static str, String)> {
        let mut flags = Vec::new();
        let mut flag = |name: &'static str, value: Option<String>| {
            if let Some(value) = value {
                flags.push((name, value));
            }
        };
        flag("status", self.status.map(|s| s.to_string()));
        flag("reason", self.reason.clone());
        flag("id", self.external_id.clone());
        flag("group", self.group.clone());
        flag("since", self.since.map(format_time));
        flag("until", self.until.map(format_time));
        flag("contract", self.contract.clone());
        flag("grep", self.grep.clone());
        flag("min-replays", self.min_replays.map(|n| n.to_string()));
        flags
    }

    /// The filters in words, for prompts and summaries: `status 403, reason rejected`.
    pub(crate) fn summary(&self) -> String {
        let time = |at: &OffsetDateTime| format_time(*at);
        let mut parts = Vec::new();
        let mut part = |name: &str, value: Option<String>| {
            if let Some(value) = value {
                parts.push(format!("{name} {value}"));
            }
        };
        part("status", self.status.map(|s| s.to_string()));
        part("reason", self.reason.clone());
        part("externalJobPostingId", self.external_id.clone());
        part("group", self.group.clone());
        part("since", self.since.as_ref().map(time));
        part("until", self.until.as_ref().map(time));
        part("contract", self.contract.clone());
        part("grep", self.grep.as_ref().map(|text| format!("{text:?}")));
        part("min-replays", self.min_replays.map(|n| n.to_string()));
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dead_letter;
    use lapin::types::{AMQPValue, FieldTable};
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-01 14:00:00 UTC);

    #[test]
    fn times_are_rfc_3339_or_ages_before_now() {
        for (text, expected) in [
            ("2026-11-30T08:00:00Z", datetime!(2026-11-30 08:00:00 UTC)),
            (
                "2026-11-30T10:00:00+02:00",
                datetime!(2026-11-30 08:00:00 UTC),
            ),
            ("90m", datetime!(2026-12-01 12:30:00 UTC)),
            ("12h", datetime!(2026-12-01 02:00:00 UTC)),
            (" 7d ", datetime!(2026-11-24 14:00:00 UTC)),
            ("1w", datetime!(2026-11-24 14:00:00 UTC)),
            ("30s", datetime!(2026-12-01 13:59:30 UTC)),
            ("0m", NOW),
        ] {
            assert_eq!(parse_time(text, NOW), Ok(expected), "{text:?}");
        }
        for bad in [
            "",
            "7",
            "d",
            "7x",
            "-7d",
            "7 d",
            "1.5h",
            "yesterday",
            "2026-11-30",
            "99999999999999999d",
        ] {
            assert!(parse_time(bad, NOW).is_err(), "{bad:?}");
        }
    }

    fn dead_letter(
        body: &str,
        at: Option<&str>,
        replays: Option<i32>,
    ) -> (Vec<u8>, BasicProperties) {
        let failure = dead_letter::contract_403();
        let properties = dead_letter::properties(&BasicProperties::default(), "close", &failure);
        let mut headers = properties.headers().clone().unwrap_or_default();
        if let Some(at) = at {
            headers.insert(
                dead_letter::DEAD_LETTERED_AT.into(),
                AMQPValue::LongString(at.into()),
            );
        } else {
            let mut inner = headers.inner().clone();
            inner.remove(dead_letter::DEAD_LETTERED_AT);
            headers = FieldTable::from(inner);
        }
        if let Some(replays) = replays {
            headers.insert(
                dead_letter::REPLAY_COUNT.into(),
                AMQPValue::LongInt(replays),
            );
        }
        (body.as_bytes().to_vec(), properties.with_headers(headers))
    }

    fn selects(filter: &Filter, letter: &(Vec<u8>, BasicProperties)) -> bool {
        filter.matches(Candidate {
            body: &letter.0,
            properties: &letter.1,
        })
    }

    #[test]
    fn time_bounds_are_inclusive_and_need_a_time() {
        let at = |t: &str| dead_letter("{}", Some(t), None);
        let window = Filter {
            since: Some(datetime!(2026-12-01 12:00:00 UTC)),
            until: Some(datetime!(2026-12-01 13:00:00 UTC)),
            ..Filter::default()
        };
        assert!(selects(&window, &at("2026-12-01T12:00:00Z")));
        assert!(selects(&window, &at("2026-12-01T12:30:00.250Z")));
        assert!(selects(&window, &at("2026-12-01T13:00:00Z")));
        assert!(!selects(&window, &at("2026-12-01T11:59:59.999Z")));
        assert!(!selects(&window, &at("2026-12-01T13:00:00.001Z")));
        assert!(!selects(&window, &at("not a time")));
        assert!(!selects(&window, &dead_letter("{}", None, None)));
        assert!(selects(&Filter::default(), &dead_letter("{}", None, None)));
    }

    #[test]
    fn contract_grep_and_replays_filter_the_body_the_message_and_the_count() {
        let letter = dead_letter(
            r#"{"externalJobPostingId":"J-1","contract":"urn:li:contract:7","title":"Night Nurse"}"#,
            Some("2026-12-01T12:00:00Z"),
            Some(2),
        );
        let bare = dead_letter("{}", None, None);
        let by_contract = |urn: &str| Filter {
            contract: Some(urn.into()),
            ..Filter::default()
        };
        let by_grep = |text: &str| Filter {
            grep: Some(text.into()),
            ..Filter::default()
        };
        let at_least_replayed = |count| Filter {
            min_replays: Some(count),
            ..Filter::default()
        };
        for (filter, candidate, selected) in [
            (by_contract("urn:li:contract:7"), &letter, true),
            (by_contract("urn:li:contract:9"), &letter, false),
            (by_grep("NIGHT nurse"), &letter, true),
            (by_grep("not AUTHORIZED"), &letter, true),
            (by_grep("day nurse"), &letter, false),
            (at_least_replayed(2), &letter, true),
            (at_least_replayed(3), &letter, false),
            (at_least_replayed(0), &bare, true),
            (at_least_replayed(1), &bare, false),
        ] {
            assert_eq!(selects(&filter, candidate), selected, "{filter:?}");
        }
        assert_eq!(contract(br#"["contract"]"#), None);
        assert_eq!(contract(br#"{"contract":7}"#), None);
        let all = Filter {
            status: Some(403),
            contract: Some("urn:li:contract:7".into()),
            grep: Some("nurse".into()),
            min_replays: Some(1),
            since: Some(datetime!(2026-12-01 00:00:00 UTC)),
            ..Filter::default()
        };
        assert!(selects(&all, &letter));
        assert_eq!(
            all.flags(),
            [
                ("status", "403".to_owned()),
                ("since", "2026-12-01T00:00:00.000Z".to_owned()),
                ("contract", "urn:li:contract:7".to_owned()),
                ("grep", "nurse".to_owned()),
                ("min-replays", "1".to_owned()),
            ]
        );
        assert_eq!(
            all.summary(),
            "status 403, since 2026-12-01T00:00:00.000Z, contract urn:li:contract:7, grep \"nurse\", min-replays 1"
        );
    }
}
