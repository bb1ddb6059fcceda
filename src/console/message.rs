//! What a message page says about one dead letter, worked out before any HTML: the body as a
//! person reads it (pretty-printed JSON in its own key order, or text, cut with its size when it is
//! long), each dead-letter header in words, and the exact `job-closer dlq replay` command that
//! sends this one dead letter back.
//!
//! Nothing here trusts the dead letter: a body may be a megabyte, not UTF-8, or HTML; a header may
//! hold anything. Values are cut here ([`BODY_SHOWN`], [`VALUE_SHOWN`]) and escaped by the
//! templates. Everything is pure.

use crate::config::{AmqpArgs, DEFAULT_CLOSE_QUEUE, DEFAULT_DEAD_LETTER_QUEUE};
use crate::dead_letter;
use crate::dlq::record::Described;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The most of a body a page shows.
pub(crate) const BODY_SHOWN: usize = 64 * 1024;
/// The most of one header value a page shows.
pub(crate) const VALUE_SHOWN: usize = 4 * 1024;

/// A body as a page shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BodyView {
    pub(crate) text: String,
    /// Pretty-printed JSON (the whole body, which is JSON).
    pub(crate) json: bool,
    /// The body is not valid UTF-8: the text shows U+FFFD for what is not.
    pub(crate) not_utf8: bool,
    /// Bytes of the body shown, of `size`.
    pub(crate) shown: usize,
    pub(crate) size: usize,
}

impl BodyView {
    pub(crate) fn of(body: &[u8]) -> BodyView {
        let size = body.len();
        let not_utf8 = std::str::from_utf8(body).is_err();
        if size <= BODY_SHOWN
            && let Some(pretty) = pretty_json(body)
        {
            return BodyView {
                text: pretty,
                json: true,
                not_utf8,
                shown: size,
                size,
            };
        }
        let shown = utf8_cut(body, BODY_SHOWN);
        BodyView {
            text: String::from_utf8_lossy(&body[..shown]).into_owned(),
            json: false,
            not_utf8,
            shown,
            size,
        }
    }

    pub(crate) fn is_cut(&self) -> bool {
        self.shown < self.size
    }
}

/// A JSON body indented, its keys in the order they were sent (a `serde_json::Value` would sort
/// them, and the page would not show what the producer sent).
fn pretty_json(body: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(body.len() * 2);
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let mut serializer = serde_json::Serializer::with_formatter(
        &mut out,
        serde_json::ser::PrettyFormatter::with_indent(b"  "),
    );
    serde_transcode::transcode(&mut deserializer, &mut serializer).ok()?;
    deserializer.end().ok()?;
    String::from_utf8(out).ok()
}

/// How many bytes of `bytes` to keep at most `max` without splitting a UTF-8 character (bytes that
/// are not UTF-8 are cut anywhere).
fn utf8_cut(bytes: &[u8], max: usize) -> usize {
    if bytes.len() <= max {
        return bytes.len();
    }
    let mut end = max;
    // A continuation byte (10xxxxxx) is never where a character starts.
    while end > 0 && max - end < 4 && bytes[end] & 0b1100_0000 == 0b1000_0000 {
        end -= 1;
    }
    if max - end >= 4 { max } else { end }
}

/// `1.0 MiB`, `12.3 KiB`, `512 bytes`.
pub(crate) fn size_text(bytes: usize) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if bytes < 1024 {
        format!("{bytes} bytes")
    } else if b < KIB * KIB {
        format!("{:.1} KiB", b / KIB)
    } else {
        format!("{:.1} MiB", b / KIB / KIB)
    }
}

/// A header value as text: strings as they are, anything else as JSON; cut at [`VALUE_SHOWN`]
/// bytes with a note of the whole size.
pub(crate) fn value_text(value: &Value) -> String {
    let text = match value {
        Value::String(text) => text.clone(),
        Value::Array(_) | Value::Object(_) => {
            serde_json::to_string_pretty(value).unwrap_or_default()
        }
        other => other.to_string(),
    };
    if text.len() <= VALUE_SHOWN {
        return text;
    }
    let cut = dead_letter::truncate_utf8(&text, VALUE_SHOWN);
    format!("{cut}… ({} in all)", size_text(text.len()))
}

/// A dead-letter header in words, for the headers job-closer and RabbitMQ write; `None` for others.
pub(crate) fn explain(name: &str, value: &Value, now: OffsetDateTime) -> Option<String> {
    let int = value.as_i64();
    let text = value.as_str();
    Some(match name {
        dead_letter::STATUS => status_words(int?),
        dead_letter::MESSAGE => {
            "What LinkedIn answered (for a job that failed job-closer's own checks, a message in LinkedIn's style).".to_owned()
        }
        dead_letter::REASON => reason_words(text?),
        dead_letter::ATTEMPTS => match int? {
            0 => "It was never sent to LinkedIn.".to_owned(),
            1 => "One request to LinkedIn was made for it.".to_owned(),
            n => format!("{n} requests to LinkedIn were made for it."),
        },
        dead_letter::ORIGINAL_QUEUE => format!("It came from the queue '{}'.", text?),
        dead_letter::DEAD_LETTERED_AT => {
            let at = OffsetDateTime::parse(text?, &Rfc3339).ok()?;
            format!("Dead-lettered {} ago.", age_words(now - at))
        }
        dead_letter::TASK_ID => {
            "The close task LinkedIn created for it; its outcome is what failed.".to_owned()
        }
        dead_letter::REPLAY_COUNT => match int? {
            0 => "Never sent back before.".to_owned(),
            1 => "Sent back once already with `dlq replay`, and it failed again.".to_owned(),
            n => format!("Sent back {n} times already with `dlq replay`, and it failed again."),
        },
        dead_letter::EDITED_FIELDS => format!(
            "An edited replay changed these body fields: {}.",
            text?.replace(',', ", ")
        ),
        dead_letter::X_DEATH => deaths_words(value)?,
        name if dead_letter::BROKER_DEATH_HEADERS.contains(&name) => {
            let which = if name.starts_with("x-first") {
                "first"
            } else {
                "last"
            };
            format!("RabbitMQ's summary of the {which} time it dead-lettered this message.")
        }
        _ => return None,
    })
}

fn status_words(status: i64) -> String {
    let meaning = match status {
        200 => "LinkedIn accepted the close; what failed is its task (see x-task-id)",
        400 => "LinkedIn found the request malformed",
        401 => "LinkedIn did not accept the token",
        403 => "LinkedIn refused: the application may not post for this job or contract",
        404 => "LinkedIn does not know the job",
        408 => "LinkedIn did not answer in time",
        409 => "LinkedIn found it in conflict with the job's state",
        422 => "the job failed validation (LinkedIn's, or job-closer's own before sending)",
        429 => "LinkedIn throttled the application",
        500..=599 => "LinkedIn failed, or could not be reached",
        _ => "the HTTP status of the answer",
    };
    format!("HTTP {status}: {meaning}.")
}

fn reason_words(reason: &str) -> String {
    match reason {
        "invalid" => "It failed job-closer's own checks and was never sent. Fix the body (`replay --set`) or the producer.".to_owned(),
        "rejected" => "LinkedIn said no. Sent back unchanged, it fails the same way until the cause is fixed.".to_owned(),
        "retries-exhausted" => "A failure that usually passes (a timeout, a 5xx, throttling) outlasted the retry budget. Sending it back is usually enough.".to_owned(),
        "task-failed" => "LinkedIn accepted the close, then its task failed.".to_owned(),
        "task-unknown" => "The close task's outcome could not be learnt in time; the job may or may not be closed.".to_owned(),
        other => format!("Reason '{other}'."),
    }
}

/// RabbitMQ's `x-death` records in words: why, from where, how often.
fn deaths_words(value: &Value) -> Option<String> {
    let records = value.as_array()?;
    let lines: Vec<String> = records
        .iter()
        .filter_map(|record| {
            let reason = record.get("reason")?.as_str()?;
            let queue = record.get("queue").and_then(Value::as_str).unwrap_or("?");
            let count = record.get("count").and_then(Value::as_i64).unwrap_or(1);
            Some(format!(
                "{reason} in '{queue}' ({count} time{})",
                if count == 1 { "" } else { "s" }
            ))
        })
        .collect();
    (!lines.is_empty()).then(|| {
        format!(
            "RabbitMQ itself dead-lettered this message: {}.",
            lines.join("; ")
        )
    })
}

/// `3 h 5 min`, `12 s`, `2 d 4 h`.
pub(crate) fn age_words(age: time::Duration) -> String {
    let seconds = age.whole_seconds().max(0);
    let (days, hours, minutes) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60);
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3600 => format!("{minutes} min"),
        3600..86_400 => format!("{} h {minutes} min", seconds / 3600),
        _ => format!("{days} d {hours} h"),
    }
}

/// The command that sends this one dead letter back, and whether it can select no other: it names
/// the group, the `externalJobPostingId` and the dead-letter time to the millisecond (both bounds),
/// as far as the dead letter records them.
pub(crate) fn replay_command(described: &Described, amqp: &AmqpArgs) -> (String, bool) {
    let mut words = vec!["job-closer".to_owned(), "dlq".into(), "replay".into()];
    let mut flag = |name: &str, value: &str| {
        words.push(format!("--{name}"));
        words.push(shell_quote(value));
    };
    if amqp.dead_letter_queue != DEFAULT_DEAD_LETTER_QUEUE {
        flag("dead-letter-queue", &amqp.dead_letter_queue);
    }
    if amqp.close_queue != DEFAULT_CLOSE_QUEUE {
        flag("close-queue", &amqp.close_queue);
    }
    flag("group", &described.group_id);
    if let Some(id) = &described.external_id {
        flag("id", id);
    }
    if let Some(at) = &described.dead_lettered_at {
        flag("since", at);
        flag("until", at);
    }
    let exact = described.external_id.is_some() && described.dead_lettered_at.is_some();
    (words.join(" "), exact)
}

/// A word for a POSIX shell: as it is when it is plainly safe, else in single quotes.
pub(crate) fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.,:/@%+=".contains(&b));
    if safe {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dlq::record::describe_parts;
    use lapin::BasicProperties;
    use proptest::prelude::*;
    use serde_json::json;
    use time::macros::datetime;

    #[test]
    fn a_json_body_is_indented_in_its_own_order() {
        let view = BodyView::of(br#"{"z":1,"a":[true,null],"title":"<b>"}"#);
        assert!(view.json && !view.not_utf8 && !view.is_cut());
        assert_eq!(
            view.text,
            "{\n  \"z\": 1,\n  \"a\": [\n    true,\n    null\n  ],\n  \"title\": \"<b>\"\n}"
        );
        let text = BodyView::of(b"not json {");
        assert!(!text.json);
        assert_eq!(text.text, "not json {");
        assert!(!BodyView::of(br#"{"a":1} trailing"#).json);
    }

    #[test]
    fn a_huge_or_broken_body_is_cut_with_its_size() {
        let huge = vec![b'x'; 1024 * 1024];
        let view = BodyView::of(&huge);
        assert!(view.is_cut() && !view.json);
        assert_eq!((view.shown, view.size), (BODY_SHOWN, 1024 * 1024));
        assert_eq!(size_text(view.size), "1.0 MiB");
        let broken = BodyView::of(b"caf\xc3\xa9 \xff\xfe end");
        assert!(broken.not_utf8 && !broken.json);
        assert_eq!(broken.text, "café \u{fffd}\u{fffd} end");
        let mut accents = vec![b'a'];
        accents.extend("é".repeat(BODY_SHOWN).bytes());
        let view = BodyView::of(&accents);
        assert!(view.text.ends_with('é') && view.shown <= BODY_SHOWN);
        assert_eq!(size_text(1536), "1.5 KiB");
        assert_eq!(size_text(12), "12 bytes");
    }

    #[test]
    fn dead_letter_headers_are_explained() {
        let now = datetime!(2026-12-01 14:00:00 UTC);
        let words = |name: &str, value: Value| explain(name, &value, now).unwrap_or_default();
        assert!(words("x-error-status", json!(403)).starts_with("HTTP 403: LinkedIn refused"));
        assert!(words("x-error-reason", json!("invalid")).contains("never sent"));
        assert_eq!(
            words("x-attempts", json!(0)),
            "It was never sent to LinkedIn."
        );
        assert_eq!(
            words("x-dead-lettered-at", json!("2026-12-01T10:55:00.000Z")),
            "Dead-lettered 3 h 5 min ago."
        );
        assert!(words("x-replay-count", json!(2)).contains("2 times"));
        assert_eq!(
            words(
                "x-death",
                json!([{"reason": "expired", "queue": "close", "count": 3}])
            ),
            "RabbitMQ itself dead-lettered this message: expired in 'close' (3 times)."
        );
        assert!(words("x-last-death-reason", json!("rejected")).contains("last"));
        assert_eq!(explain("x-custom", &json!("<b>"), now), None);
        assert_eq!(explain("x-attempts", &json!("three"), now), None);
    }

    #[test]
    fn long_header_values_are_cut() {
        assert_eq!(value_text(&json!("<script>")), "<script>");
        assert_eq!(value_text(&json!(403)), "403");
        let long = value_text(&json!("y".repeat(10_000)));
        assert!(long.ends_with("… (9.8 KiB in all)"), "{}", &long[4000..]);
    }

    #[test]
    fn the_replay_command_names_this_dead_letter_only() {
        let failure = dead_letter::contract_403();
        let properties = dead_letter::properties(&BasicProperties::default(), "close", &failure);
        let described = describe_parts(br#"{"externalJobPostingId":"JOB 1's"}"#, &properties);
        let mut amqp = crate::amqp::test_args(crate::config::QueueType::Classic, false);
        amqp.dead_letter_queue = DEFAULT_DEAD_LETTER_QUEUE.into();
        amqp.close_queue = DEFAULT_CLOSE_QUEUE.into();
        let (command, exact) = replay_command(&described, &amqp);
        let at = described.dead_lettered_at.clone().unwrap();
        assert_eq!(
            command,
            format!(
                "job-closer dlq replay --group {} --id 'JOB 1'\\''s' --since {at} --until {at}",
                described.group_id
            )
        );
        assert!(exact);
        amqp.dead_letter_queue = "other.dead".into();
        let bare = describe_parts(b"hand-made", &BasicProperties::default());
        let (command, exact) = replay_command(&bare, &amqp);
        assert!(
            command.starts_with("job-closer dlq replay --dead-letter-queue other.dead --group ")
        );
        assert!(!exact);
    }

    proptest! {
        /// Whatever the word, the shell reads back exactly that word.
        #[test]
        fn shell_quoting_round_trips(word in "\\PC*") {
            let quoted = shell_quote(&word);
            let unquoted = match quoted.strip_prefix('\'').and_then(|q| q.strip_suffix('\'')) {
                Some(inner) => inner.replace(r"'\''", "'"),
                None => quoted.clone(),
            };
            prop_assert_eq!(unquoted, word);
        }

        /// A cut body never splits a character of a UTF-8 body.
        #[test]
        fn cuts_keep_utf8_whole(text in "\\PC{0,200}", max in 0usize..300) {
            let end = utf8_cut(text.as_bytes(), max);
            prop_assert!(end <= max || end == text.len());
            prop_assert!(text.is_char_boundary(end));
        }
    }
}
