//! Failure groups: which dead letters failed the same way, so an operator fixes one cause and replays
//! one group instead of reading 100,000 messages.
//!
//! A group is the HTTP status plus the error message with its variable parts folded: numbers, UUIDs,
//! long mixed ids, quoted values and the ids of LinkedIn URNs become placeholders. Two exceptions keep
//! what matters for the fix: a contract URN keeps its id (a 403 for contract 7 and one for contract 9
//! are two different problems, fixed in two different places), and the field path of LinkedIn's
//! `ERROR :: /title :: ...` messages is a word, not a value, so each field is its own group.
//! Everything here is pure; the walk that feeds it lives in [`super::scan`].

use crate::dead_letter::Recorded;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A group keeps at most this many distinct reasons, so a pathological queue cannot grow one without
/// bound.
const MAX_REASONS_PER_GROUP: usize = 8;
/// And at most this many distinct contracts (the count of the others is kept as a whole).
pub(crate) const MAX_CONTRACTS_PER_GROUP: usize = 16;

/// What dead letters of one group share.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct GroupKey {
    /// `x-error-status`, when the message carries one.
    pub(crate) status: Option<i64>,
    /// The folded error message, or a stand-in saying why there is none.
    pub(crate) message: String,
}

impl GroupKey {
    pub(crate) fn of(recorded: &Recorded) -> GroupKey {
        let message = match (&recorded.message, &recorded.reason) {
            (Some(message), _) => fold_message(message),
            // RabbitMQ's own dead letters (`x-death`) and hand-made messages have no message; the
            // reason is then all there is to tell them apart.
            (None, Some(reason)) => format!("(no error message; reason {reason})"),
            (None, None) => "(no failure recorded)".to_owned(),
        };
        GroupKey {
            status: recorded.status,
            message,
        }
    }

    /// A short id that stays the same across runs, machines and versions (FNV-1a, not `Hash`, whose
    /// output Rust does not promise to keep), so `stats` today and `replay --group` tomorrow agree.
    pub(crate) fn id(&self) -> String {
        let mut hash: u32 = 0x811c_9dc5;
        let status = self
            .status
            .map_or_else(|| "-".to_owned(), |s| s.to_string());
        for byte in status
            .bytes()
            .chain(std::iter::once(b'\n'))
            .chain(self.message.bytes())
        {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        format!("{hash:08x}")
    }
}

/// Checks a `--group` value: the 8 hex digits `stats` prints.
pub(crate) fn parse_group_id(text: &str) -> Result<String, String> {
    let id = text.trim().to_ascii_lowercase();
    if id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(id)
    } else {
        Err(format!(
            "a group id is the 8 hex digits `job-closer dlq stats` prints, got {text:?}"
        ))
    }
}

/// Folds the variable parts of an error message into placeholders (see the module doc).
pub(crate) fn fold_message(message: &str) -> String {
    let text = message.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut folded = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(first) = rest.chars().next() {
        let at_word_start = folded
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric());
        if first == '"'
            && let Some(end) = rest[1..].find('"')
        {
            folded.push_str("\"{value}\"");
            rest = &rest[end + 2..];
            continue;
        }
        if first == '\''
            && at_word_start
            && let Some(len) = single_quoted_len(rest)
        {
            folded.push_str("'{value}'");
            rest = &rest[len..];
            continue;
        }
        if at_word_start && rest.len() > 4 && rest[..4].eq_ignore_ascii_case("urn:") {
            let len = urn_len(rest);
            folded.push_str(&fold_urn(&rest[..len]));
            rest = &rest[len..];
            continue;
        }
        if at_word_start && let Some(len) = uuid_len(rest) {
            folded.push_str("{uuid}");
            rest = &rest[len..];
            continue;
        }
        if first.is_ascii_alphanumeric() {
            let len = rest
                .find(|c: char| !c.is_ascii_alphanumeric())
                .unwrap_or(rest.len());
            folded.push_str(fold_word(&rest[..len]));
            rest = &rest[len..];
            continue;
        }
        folded.push(first);
        rest = &rest[first.len_utf8()..];
    }
    folded
}

/// A run of ASCII letters and digits: a number, an opaque id, or a word to keep.
fn fold_word(word: &str) -> &str {
    let has_digit = word.bytes().any(|b| b.is_ascii_digit());
    let has_letter = word.bytes().any(|b| b.is_ascii_alphabetic());
    if !has_letter {
        "{n}"
    } else if has_digit && word.len() >= 12 {
        // Request ids, tokens, hashes; short ones like `v2` or `utf8` are words.
        "{id}"
    } else {
        word
    }
}

/// `'value'` at a word start, closed by a quote that ends a word (so "doesn't" is not a quote).
fn single_quoted_len(text: &str) -> Option<usize> {
    let inner = &text[1..];
    let mut offset = 0;
    while let Some(found) = inner[offset..].find('\'') {
        let close = offset + found;
        let after = inner[close + 1..].chars().next();
        if after.is_none_or(|c| !c.is_alphanumeric()) {
            return Some(close + 2);
        }
        offset = close + 1;
    }
    None
}

/// The length of a URN: up to whitespace, a quote or a comma, including a parenthesised compound id
/// (`urn:li:task:(urn:li:contract:1,42)`), without trailing sentence punctuation.
fn urn_len(text: &str) -> usize {
    let mut depth = 0usize;
    let mut end = text.len();
    for (index, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => {
                end = index;
                break;
            }
            ')' => depth -= 1,
            ',' | ';' if depth == 0 => {
                end = index;
                break;
            }
            '"' | '\'' | ']' | '}' => {
                end = index;
                break;
            }
            c if c.is_whitespace() => {
                end = index;
                break;
            }
            _ => {}
        }
    }
    text[..end].trim_end_matches(['.', ':']).len()
}

fn fold_urn(urn: &str) -> String {
    let mut parts = urn.splitn(4, ':');
    let (Some(scheme), Some(namespace), Some(kind), Some(id)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return urn.to_owned();
    };
    if kind.eq_ignore_ascii_case("contract") || id.is_empty() {
        // Contract 403s are fixed per contract: each contract is its own group.
        return urn.to_owned();
    }
    format!("{scheme}:{namespace}:{kind}:{{id}}")
}

/// `8-4-4-4-12` hex digits, not glued to more letters or digits.
fn uuid_len(text: &str) -> Option<usize> {
    let bytes = text.as_bytes();
    if bytes.len() < 36 {
        return None;
    }
    for (index, byte) in bytes[..36].iter().enumerate() {
        let ok = match index {
            8 | 13 | 18 | 23 => *byte == b'-',
            _ => byte.is_ascii_hexdigit(),
        };
        if !ok {
            return None;
        }
    }
    match bytes.get(36) {
        Some(next) if next.is_ascii_alphanumeric() => None,
        _ => Some(36),
    }
}

/// One failure group as `stats` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Group {
    pub(crate) id: String,
    pub(crate) key: GroupKey,
    pub(crate) count: u64,
    /// The distinct `x-error-reason`s seen (at most a few).
    pub(crate) reasons: BTreeSet<String>,
    pub(crate) oldest: Option<String>,
    pub(crate) newest: Option<String>,
    /// Queue position of the group's first dead letter: ties in count are shown in queue order.
    pub(crate) first_position: u64,
    /// The most times any dead letter of the group was replayed before (`x-replay-count`).
    pub(crate) max_replays: i64,
    /// How many dead letters name each contract in their body (at most
    /// [`MAX_CONTRACTS_PER_GROUP`] contracts; the rest are counted in `other_contracts`).
    pub(crate) contracts: BTreeMap<String, u64>,
    pub(crate) other_contracts: u64,
}

/// What [`Stats::add`] needs to know of one dead letter.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Member<'a> {
    pub(crate) reason: Option<&'a str>,
    pub(crate) dead_lettered_at: Option<&'a str>,
    pub(crate) position: u64,
    pub(crate) replays: i64,
    pub(crate) contract: Option<&'a str>,
}

/// Counts dead letters into groups as the walk goes; memory grows with the number of groups, not
/// with the number of messages.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    groups: HashMap<GroupKey, Group>,
    total: u64,
}

impl Stats {
    pub(crate) fn add(&mut self, key: GroupKey, member: Member<'_>) {
        let Member {
            reason,
            dead_lettered_at,
            position,
            replays,
            contract,
        } = member;
        self.total += 1;
        let group = self.groups.entry(key).or_insert_with_key(|key| Group {
            id: key.id(),
            key: key.clone(),
            count: 0,
            reasons: BTreeSet::new(),
            oldest: None,
            newest: None,
            first_position: position,
            max_replays: 0,
            contracts: BTreeMap::new(),
            other_contracts: 0,
        });
        group.count += 1;
        group.max_replays = group.max_replays.max(replays);
        if let Some(contract) = contract {
            let room = group.contracts.len() < MAX_CONTRACTS_PER_GROUP;
            match group.contracts.get_mut(contract) {
                Some(count) => *count += 1,
                None if room => {
                    group.contracts.insert(contract.to_owned(), 1);
                }
                None => group.other_contracts += 1,
            }
        }
        if let Some(reason) = reason
            && group.reasons.len() < MAX_REASONS_PER_GROUP
        {
            group.reasons.insert(reason.to_owned());
        }
        if let Some(at) = dead_lettered_at.and_then(parse_time) {
            if group
                .oldest
                .as_deref()
                .and_then(parse_time)
                .is_none_or(|oldest| at < oldest)
            {
                group.oldest = dead_lettered_at.map(str::to_owned);
            }
            if group
                .newest
                .as_deref()
                .and_then(parse_time)
                .is_none_or(|newest| at > newest)
            {
                group.newest = dead_lettered_at.map(str::to_owned);
            }
        }
    }

    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// The groups, largest first; equal counts in queue order.
    pub(crate) fn into_groups(self) -> Vec<Group> {
        let mut groups: Vec<Group> = self.groups.into_values().collect();
        groups.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(a.first_position.cmp(&b.first_position))
        });
        groups
    }
}

fn parse_time(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

#[cfg(test)]
impl GroupKey {
    /// A key with a status, as the tests here and in [`super::stats`] write one.
    pub(crate) fn new(status: i64, message: &str) -> GroupKey {
        GroupKey {
            status: Some(status),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_errors_are_grouped_by_field() {
        let title = "ERROR :: /title :: field is required but not found and has no default value\n";
        assert_eq!(
            fold_message(title),
            "ERROR :: /title :: field is required but not found and has no default value"
        );
        assert_ne!(
            fold_message(title),
            fold_message(&title.replace("/title", "/location"))
        );
        assert_eq!(
            fold_message("ERROR :: /elements/3/title :: field is required"),
            "ERROR :: /elements/{n}/title :: field is required"
        );
    }

    #[test]
    fn contract_403s_are_grouped_per_contract() {
        let seven = "Caller is not authorized to access the jobs for contract: urn:li:contract:7";
        let nine = "Caller is not authorized to access the jobs for contract: urn:li:contract:9.";
        assert_eq!(fold_message(seven), seven);
        assert_eq!(
            fold_message(nine),
            "Caller is not authorized to access the jobs for contract: urn:li:contract:9."
        );
        let key = |message: &str| {
            GroupKey::of(&Recorded {
                status: Some(403),
                message: Some(message.into()),
                ..Recorded::default()
            })
        };
        assert_ne!(key(seven).id(), key(nine).id());
        assert_eq!(key(seven).id(), key(&format!("{seven}  ")).id());
    }

    #[test]
    fn variable_parts_become_placeholders() {
        assert_eq!(
            fold_message(
                "Job urn:li:simpleJobPosting:12345 not found, task urn:li:simpleJobPostingTask:(urn:li:contract:1,99)."
            ),
            "Job urn:li:simpleJobPosting:{id} not found, task urn:li:simpleJobPostingTask:{id}."
        );
        assert_eq!(
            fold_message("request 0f8fad5b-d9cb-469f-a165-70867728950e failed after 3 attempts"),
            "request {uuid} failed after {n} attempts"
        );
        assert_eq!(
            fold_message(r#"ERROR :: /listedAt :: "yesterday" cannot be coerced to Long"#),
            r#"ERROR :: /listedAt :: "{value}" cannot be coerced to Long"#
        );
        assert_eq!(
            fold_message("value 'abc' doesn't match job-42 (trace AQEFk2x9Zq1a2b3c)"),
            "value '{value}' doesn't match job-{n} (trace {id})"
        );
        assert_eq!(
            fold_message("HTTP 503 with an empty body"),
            "HTTP {n} with an empty body"
        );
        assert_eq!(fold_message("v2 utf8 x-li-format"), "v2 utf8 x-li-format");
        assert_eq!(fold_message("unclosed \"quote"), "unclosed \"quote");
        assert_eq!(fold_message("é 12é"), "é {n}é");
    }

    #[test]
    fn messages_without_a_failure_record_still_group() {
        let broker = GroupKey::of(&Recorded {
            reason: Some("broker-rejected".into()),
            ..Recorded::default()
        });
        assert_eq!(broker.message, "(no error message; reason broker-rejected)");
        let bare = GroupKey::of(&Recorded::default());
        assert_eq!(bare.message, "(no failure recorded)");
        assert_ne!(broker.id(), bare.id());
    }

    #[test]
    fn group_ids_are_stable_and_parse_back() {
        let key = GroupKey::new(422, "ERROR :: /title :: field is required");
        // Pinned: a group id printed yesterday must still select the same group today.
        assert_eq!(key.id(), "951905d7");
        assert_eq!(parse_group_id(" 951905D7 ").unwrap(), "951905d7");
        assert!(parse_group_id("951905d").is_err());
        assert!(parse_group_id("951905dz").is_err());
    }

    #[test]
    fn stats_count_and_track_oldest_and_newest() {
        let mut stats = Stats::default();
        let a = GroupKey::new(403, "a");
        let b = GroupKey::new(422, "b");
        let member = |reason, at, position, replays, contract| Member {
            reason,
            dead_lettered_at: at,
            position,
            replays,
            contract,
        };
        let seven = Some("urn:li:contract:7");
        let nine = Some("urn:li:contract:9");
        stats.add(
            b.clone(),
            member(Some("invalid"), Some("2025-01-02T00:00:00Z"), 1, 0, seven),
        );
        stats.add(
            a.clone(),
            member(Some("rejected"), Some("2025-01-03T00:00:00Z"), 2, 2, seven),
        );
        stats.add(
            a.clone(),
            member(Some("rejected"), Some("2025-01-01T00:00:00.5Z"), 3, 0, nine),
        );
        stats.add(a.clone(), member(Some("task-failed"), None, 4, 1, seven));
        stats.add(b.clone(), member(None, Some("not a time"), 5, 0, None));
        assert_eq!(stats.total(), 5);
        let groups = stats.into_groups();
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].key, a);
        assert_eq!(groups[0].count, 3);
        assert_eq!(groups[0].oldest.as_deref(), Some("2025-01-01T00:00:00.5Z"));
        assert_eq!(groups[0].max_replays, 2);
        assert_eq!(
            groups[0].contracts,
            BTreeMap::from([
                ("urn:li:contract:7".to_owned(), 2),
                ("urn:li:contract:9".to_owned(), 1)
            ])
        );
        assert_eq!(groups[0].newest.as_deref(), Some("2025-01-03T00:00:00Z"));
        assert_eq!(
            groups[0].reasons.iter().collect::<Vec<_>>(),
            ["rejected", "task-failed"]
        );
        assert_eq!(groups[1].count, 2);
        assert_eq!(groups[1].oldest, groups[1].newest);
        assert_eq!(groups[1].first_position, 1);
        assert_eq!(groups[1].max_replays, 0);
        assert_eq!(groups[1].contracts.len(), 1);
    }

    #[test]
    fn a_group_keeps_a_bounded_number_of_contracts() {
        let mut stats = Stats::default();
        let key = GroupKey::new(403, "m");
        let urns: Vec<String> = (0..40).map(|n| format!("urn:li:contract:{n}")).collect();
        for (position, urn) in urns.iter().enumerate() {
            stats.add(
                key.clone(),
                Member {
                    position: position as u64,
                    contract: Some(urn),
                    ..Member::default()
                },
            );
        }
        let group = &stats.into_groups()[0];
        assert_eq!(group.contracts.len(), MAX_CONTRACTS_PER_GROUP);
        assert_eq!(group.other_contracts, 40 - MAX_CONTRACTS_PER_GROUP as u64);
    }
}
