//! What a link names: the CLI's filters as query parameters (`since`, `until`, `contract`, `grep`,
//! `reason`, `min-replays`, and `status` and `id` beside them), read into the very
//! [`Filter`] the `dlq` commands take, and a page of a list (`offset`, `limit`).
//!
//! A console started with filters of its own (`dlq serve --contract urn:li:contract:7`) shows only
//! what they select: a link narrows that selection, never widens it. Time bounds narrow to the
//! tighter one; any other filter the console already fixes may be repeated but not changed (a clear
//! 400, not a page that silently ignores half of its link). Times are RFC 3339 or an age, as on the
//! command line; an age is counted back from the walk that reads the queue, so the cache is keyed by
//! the text of the link ([`Selection::key`]), not by the instant it resolved to.
//!
//! Everything here is pure.

use crate::dlq::filter::{Filter, parse_time};
use std::collections::BTreeMap;
use time::OffsetDateTime;

/// The query parameters that select dead letters, in the order links write them.
pub(crate) const FILTER_PARAMS: [&str; 8] = [
    "since",
    "until",
    "contract",
    "grep",
    "reason",
    "min-replays",
    "status",
    "id",
];

/// Dead letters a group page shows unless `limit` says otherwise.
pub(crate) const PAGE: u64 = 100;
/// The most one page or one API answer holds.
pub(crate) const MAX_PAGE: u64 = 1000;

/// The selection a request names: its filter parameters as given (blank ones dropped).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Selection {
    params: BTreeMap<&'static str, String>,
}

impl Selection {
    /// The filter parameters of a query; other parameters (paging) are left to their readers.
    pub(crate) fn from_query(query: &BTreeMap<String, String>) -> Selection {
        let params = FILTER_PARAMS
            .iter()
            .filter_map(|name| {
                let value = query.get(*name)?.trim();
                (!value.is_empty()).then(|| (*name, value.to_owned()))
            })
            .collect();
        Selection { params }
    }

    /// One more parameter (the tests, and links that add one).
    #[cfg(test)]
    pub(crate) fn with(mut self, name: &'static str, value: &str) -> Selection {
        self.params.insert(name, value.to_owned());
        self
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// What the cache knows this selection by: the parameters as written, in a fixed order.
    pub(crate) fn key(&self) -> String {
        self.query_string()
    }

    /// `since=12h&contract=urn%3Ali%3Acontract%3A9`: the selection as a link's query (no `?`).
    pub(crate) fn query_string(&self) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        for name in FILTER_PARAMS {
            if let Some(value) = self.params.get(name) {
                query.append_pair(name, value);
            }
        }
        query.finish()
    }

    /// `?` and the query, or nothing for the whole queue: what a link appends.
    pub(crate) fn suffix(&self) -> String {
        if self.is_empty() {
            String::new()
        } else {
            format!("?{}", self.query_string())
        }
    }

    /// The parameters in words, as given: `since 12h, contract urn:li:contract:9`.
    pub(crate) fn describe(&self) -> String {
        FILTER_PARAMS
            .iter()
            .filter_map(|name| Some(format!("{name} {}", self.params.get(name)?)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// A parameter as given, for the filter form.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }

    /// The filter this selection means within the console's own, ages counted back from `now`.
    pub(crate) fn filter(&self, base: &Filter, now: OffsetDateTime) -> Result<Filter, String> {
        let mut filter = base.clone();
        for (name, text) in &self.params {
            match *name {
                "since" => {
                    let since = parse_time(text, now).map_err(|why| format!("since: {why}"))?;
                    filter.since = Some(filter.since.map_or(since, |base| base.max(since)));
                }
                "until" => {
                    let until = parse_time(text, now).map_err(|why| format!("until: {why}"))?;
                    filter.until = Some(filter.until.map_or(until, |base| base.min(until)));
                }
                "contract" => narrow(&mut filter.contract, "contract", text.clone())?,
                "grep" => narrow(&mut filter.grep, "grep", text.clone())?,
                "reason" => narrow(&mut filter.reason, "reason", text.clone())?,
                "id" => narrow(&mut filter.external_id, "id", text.clone())?,
                "min-replays" => {
                    let min: u32 = text
                        .parse()
                        .map_err(|_| format!("min-replays must be a whole number, got {text:?}"))?;
                    filter.min_replays = Some(filter.min_replays.map_or(min, |base| base.max(min)));
                }
                "status" => {
                    let status: u16 = text
                        .parse()
                        .map_err(|_| format!("status must be an HTTP status, got {text:?}"))?;
                    narrow(&mut filter.status, "status", status)?;
                }
                _ => {}
            }
        }
        Ok(filter)
    }
}

/// Sets a filter the console leaves open; one it fixes may only be repeated.
fn narrow<T: PartialEq + std::fmt::Debug>(
    slot: &mut Option<T>,
    name: &str,
    value: T,
) -> Result<(), String> {
    match slot {
        Some(fixed) if *fixed != value => Err(format!(
            "this console shows only {name} {fixed:?} (its --{name}); the link asks for {value:?}"
        )),
        _ => {
            *slot = Some(value);
            Ok(())
        }
    }
}

/// A page of a list: where it starts and how many it shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Page {
    pub(crate) offset: u64,
    pub(crate) limit: u64,
}

impl Page {
    /// `offset` and `limit` of a query; `limit` defaults to `default` and is at most [`MAX_PAGE`].
    pub(crate) fn from_query(
        query: &BTreeMap<String, String>,
        default: u64,
    ) -> Result<Page, String> {
        let number = |name: &str| -> Result<Option<u64>, String> {
            match query.get(name).map(|text| text.trim()) {
                None | Some("") => Ok(None),
                Some(text) => text
                    .parse()
                    .map(Some)
                    .map_err(|_| format!("{name} must be a whole number, got {text:?}")),
            }
        };
        let offset = number("offset")?.unwrap_or(0);
        let limit = number("limit")?.unwrap_or(default);
        if limit == 0 || limit > MAX_PAGE {
            return Err(format!("limit must be 1 to {MAX_PAGE}, got {limit}"));
        }
        Ok(Page { offset, limit })
    }

    /// The indices of `total` items this page shows.
    pub(crate) fn range(&self, total: u64) -> std::ops::Range<u64> {
        let start = self.offset.min(total);
        start..start.saturating_add(self.limit).min(total)
    }

    /// The page before, if this one does not start at the beginning.
    pub(crate) fn previous(&self) -> Option<Page> {
        (self.offset > 0).then(|| Page {
            offset: self.offset.saturating_sub(self.limit),
            limit: self.limit,
        })
    }

    /// The page after, if `total` items reach past this one.
    pub(crate) fn next(&self, total: u64) -> Option<Page> {
        let end = self.offset.saturating_add(self.limit);
        (end < total).then_some(Page {
            offset: end,
            limit: self.limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-01 14:00:00 UTC);

    fn query(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_link_names_the_cli_filters() {
        let selection = Selection::from_query(&query(&[
            ("since", "12h"),
            ("contract", "urn:li:contract:9"),
            ("grep", " nurse "),
            ("reason", "Rejected"),
            ("min-replays", "1"),
            ("status", "403"),
            ("offset", "100"),
            ("until", ""),
        ]));
        assert_eq!(
            selection.query_string(),
            "since=12h&contract=urn%3Ali%3Acontract%3A9&grep=nurse&reason=Rejected&min-replays=1&status=403"
        );
        let filter = selection.filter(&Filter::default(), NOW).unwrap();
        assert_eq!(filter.since, Some(datetime!(2026-12-01 02:00:00 UTC)));
        assert_eq!(filter.until, None, "a blank parameter is no filter");
        assert_eq!(filter.contract.as_deref(), Some("urn:li:contract:9"));
        assert_eq!(filter.grep.as_deref(), Some("nurse"));
        assert_eq!(filter.reason.as_deref(), Some("Rejected"));
        assert_eq!(filter.min_replays, Some(1));
        assert_eq!(filter.status, Some(403));
        assert_eq!(
            selection.describe(),
            "since 12h, contract urn:li:contract:9, grep nurse, reason Rejected, min-replays 1, status 403"
        );
        assert_eq!(Selection::default().suffix(), "");
        assert_eq!(
            Selection::default().with("id", "J 1").suffix(),
            "?id=J+1",
            "values are encoded"
        );
    }

    #[test]
    fn bad_values_say_which_parameter() {
        for (name, value, says) in [
            ("since", "yesterday", "since:"),
            ("until", "7x", "until:"),
            ("min-replays", "-1", "min-replays"),
            ("status", "forbidden", "status"),
        ] {
            let selection = Selection::default().with(name, value);
            let error = selection.filter(&Filter::default(), NOW).unwrap_err();
            assert!(error.contains(says), "{name}={value}: {error}");
        }
    }

    #[test]
    fn a_link_narrows_the_consoles_own_filters_and_never_widens_them() {
        let base = Filter {
            contract: Some("urn:li:contract:7".into()),
            since: Some(datetime!(2026-12-01 00:00:00 UTC)),
            until: Some(datetime!(2026-12-01 12:00:00 UTC)),
            min_replays: Some(2),
            ..Filter::default()
        };
        let narrowed = Selection::default()
            .with("since", "2026-11-01T00:00:00Z")
            .with("until", "2026-12-01T06:00:00Z")
            .with("contract", "urn:li:contract:7")
            .with("min-replays", "1")
            .filter(&base, NOW)
            .unwrap();
        assert_eq!(narrowed.since, base.since, "the later since");
        assert_eq!(narrowed.until, Some(datetime!(2026-12-01 06:00:00 UTC)));
        assert_eq!(narrowed.min_replays, Some(2));
        let refused = Selection::default()
            .with("contract", "urn:li:contract:9")
            .filter(&base, NOW)
            .unwrap_err();
        assert!(refused.contains("--contract"), "{refused}");
    }

    #[test]
    fn pages_default_to_a_hundred_and_stay_bounded() {
        let page = Page::from_query(&query(&[]), PAGE).unwrap();
        assert_eq!(
            page,
            Page {
                offset: 0,
                limit: 100
            }
        );
        assert_eq!(page.range(30), 0..30);
        assert_eq!(page.previous(), None);
        assert_eq!(page.next(100), None);
        assert_eq!(
            page.next(101),
            Some(Page {
                offset: 100,
                limit: 100
            })
        );
        let second = Page::from_query(&query(&[("offset", "150"), ("limit", "50")]), PAGE).unwrap();
        assert_eq!(second.range(180), 150..180);
        assert_eq!(second.range(10), 10..10);
        assert_eq!(
            second.previous(),
            Some(Page {
                offset: 100,
                limit: 50
            })
        );
        for bad in [
            ("limit", "0"),
            ("limit", "1001"),
            ("offset", "-1"),
            ("limit", "x"),
        ] {
            assert!(Page::from_query(&query(&[bad]), PAGE).is_err(), "{bad:?}");
        }
    }

    proptest! {
        /// Walking a list page by page shows every item once, in order.
        #[test]
        fn pages_cover_a_list_exactly_once(total in 0u64..5000, limit in 1u64..=MAX_PAGE) {
            let mut page = Page { offset: 0, limit };
            let mut seen = 0;
            loop {
                let range = page.range(total);
                prop_assert_eq!(range.start, seen);
                seen = range.end;
                match page.next(total) {
                    Some(next) => page = next,
                    None => break,
                }
            }
            prop_assert_eq!(seen, total);
        }
    }
}
