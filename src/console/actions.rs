//! The buttons: replay, export (an archive: `export --delete` into `--archive-dir`) and purge, for a
//! group or a whole selection, each in two steps, through the very code of the `dlq` commands.
//!
//! 1. A confirmation page ([`prepare`]) walks the selection as `dlq replay --dry-run` does
//!    ([`crate::dlq::replay::survey`]) and keeps a [`Plan`]: how many it selected, how far into the
//!    queue it read, and the `--until` bound of the newest dead letter it saw.
//! 2. Its form, sent with the plan's id and its own CSRF token, carries the plan out ([`execute`])
//!    with [`crate::dlq::replay::replay_selected`], [`crate::dlq::export::export_to`] or
//!    [`crate::dlq::purge::delete_selected`], bounded three ways: `--until` (nothing dead-lettered
//!    after the dry run), at most as many as it showed, and no further into the queue than it read.
//!    So the button moves what the page showed — less, if some of it went meanwhile; never more.
//!
//! A plan is used once (a reloaded result page cannot replay twice) and lives
//! [`super::auth::FORM_LIFETIME`]; the server keeps it, so the form carries no filter a page could
//! tamper with. Each action is logged at INFO with what it moved, and makes the cached walks stale.

use super::auth::{FORM_LIFETIME, random_token, same_secret};
use super::cache::Cache;
use crate::dead_letter::format_time;
use crate::dlq::edit::Edit;
use crate::dlq::export::export_to;
use crate::dlq::filter::Filter;
use crate::dlq::list::list_row;
use crate::dlq::output::Output;
use crate::dlq::purge::delete_selected;
use crate::dlq::replay::{replay_selected, survey};
use crate::dlq::scan::{DEAD_LETTER_SETTING, ready_count};
use crate::dlq::table::Row;
use crate::dlq::walk::Selection as WalkSelection;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Rows a confirmation page lists.
const ROWS_SHOWN: usize = 100;
/// Plans kept at most.
const MAX_PLANS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    Replay,
    Export,
    Purge,
}

impl Action {
    pub(crate) fn parse(name: &str) -> Option<Action> {
        match name {
            "replay" => Some(Action::Replay),
            "export" => Some(Action::Export),
            "purge" => Some(Action::Purge),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Action::Replay => "replay",
            Action::Export => "export",
            Action::Purge => "purge",
        }
    }

    pub(crate) fn verb(self) -> &'static str {
        match self {
            Action::Replay => "Replay",
            Action::Export => "Export",
            Action::Purge => "Purge",
        }
    }

    pub(crate) fn past(self) -> &'static str {
        match self {
            Action::Replay => "moved",
            Action::Export => "exported",
            Action::Purge => "deleted",
        }
    }

    /// The `dlq` command that does the same.
    pub(crate) fn command(self) -> &'static str {
        match self {
            Action::Replay => "replay",
            Action::Export => "export",
            Action::Purge => "purge",
        }
    }

    /// What that command needs beyond the filters to do what the plan does.
    pub(crate) fn cli_extra(self, plan: &Plan) -> String {
        match self {
            Action::Replay => format!("--limit {}", plan.selected),
            Action::Export => {
                let file = plan
                    .archive
                    .as_ref()
                    .map(|path| path.display().to_string())
                    .unwrap_or_default();
                format!("--delete {}", super::message::shell_quote(&file))
            }
            Action::Purge => "--yes".to_owned(),
        }
    }
}

/// What a confirmation page showed, kept until its form is sent.
pub(crate) struct Plan {
    pub(crate) id: String,
    pub(crate) csrf: String,
    pub(crate) action: Action,
    /// The selection as asked.
    pub(crate) filter: Filter,
    /// The selection with the dry run's `--until` bound.
    pub(crate) bounded: Filter,
    pub(crate) until: Option<String>,
    pub(crate) untimed: u64,
    pub(crate) selected: u64,
    /// Queue messages the dry run read.
    pub(crate) read: u64,
    pub(crate) total: u64,
    pub(crate) rows: Vec<Row>,
    /// Where an export writes.
    pub(crate) archive: Option<PathBuf>,
    /// The page to go back to.
    pub(crate) back: String,
    created: Instant,
}

/// What an action did, for its result page.
pub(crate) struct Done {
    pub(crate) headline: String,
    pub(crate) lines: Vec<String>,
    pub(crate) problem: Option<String>,
    pub(crate) back: String,
}

/// The plans of the confirmation pages served.
#[derive(Default)]
pub(crate) struct Plans {
    by_id: Mutex<HashMap<String, Plan>>,
}

impl Plans {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Plan>> {
        self.by_id
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn keep(&self, plan: Plan) {
        let mut plans = self.lock();
        plans.retain(|_, plan| plan.created.elapsed() < FORM_LIFETIME);
        if plans.len() >= MAX_PLANS
            && let Some(oldest) = plans
                .iter()
                .min_by_key(|(_, plan)| plan.created)
                .map(|(id, _)| id.clone())
        {
            plans.remove(&oldest);
        }
        plans.insert(plan.id.clone(), plan);
    }

    /// The plan a form names, if its CSRF token is the plan's; used up either way when it exists
    /// and the token matches.
    pub(crate) fn take(
        &self,
        action: Action,
        id: &str,
        csrf: Option<&str>,
    ) -> Result<Plan, PlanRefused> {
        let mut plans = self.lock();
        let plan = plans.get(id).ok_or(PlanRefused::Unknown)?;
        if !csrf.is_some_and(|csrf| same_secret(csrf, &plan.csrf)) {
            return Err(PlanRefused::Csrf);
        }
        if plan.action != action || plan.created.elapsed() >= FORM_LIFETIME {
            return Err(PlanRefused::Unknown);
        }
        plans.remove(id).ok_or(PlanRefused::Unknown)
    }
}

/// Why a form's plan is not carried out.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PlanRefused {
    /// No such plan: used already, expired, or never served.
    Unknown,
    /// The form's CSRF token is missing or is not the plan's.
    Csrf,
}

/// `dlq-3925736f-20261201T141500.123Z.jsonl` in the archive directory.
pub(crate) fn archive_path(dir: &Path, filter: &Filter, now: OffsetDateTime) -> PathBuf {
    let stamp: String = format_time(now)
        .chars()
        .filter(|c| !matches!(c, '-' | ':'))
        .collect();
    let what = filter.group.as_deref().unwrap_or("selection");
    dir.join(format!("dlq-{what}-{stamp}.jsonl"))
}

/// Walks the selection as a dry run and makes its plan.
pub(crate) async fn prepare(
    cache: &Cache,
    action: Action,
    filter: Filter,
    archive_dir: &Path,
    back: String,
    shutdown: &CancellationToken,
) -> Result<Plan, String> {
    let mut broker = cache.broker().await;
    let amqp = broker.amqp.clone();
    let mut rows: Vec<Row> = Vec::new();
    let surveyed = match broker.connection().await {
        Ok(connection) => {
            survey(
                connection,
                &amqp,
                WalkSelection::new(&filter, None),
                shutdown,
                true,
                |letter, described| {
                    if rows.len() < ROWS_SHOWN {
                        rows.push(list_row(letter.position, &letter.body, described));
                    }
                    Ok(true)
                },
            )
            .await
        }
        Err(error) => Err(error.into()),
    };
    if surveyed.is_err() {
        broker.reset().await;
    }
    drop(broker);
    let (walked, seen) = surveyed.map_err(|error| error.to_string())?;
    if walked.interrupted {
        return Err("the console is shutting down".into());
    }
    let until = seen.until_bound(&filter).map(str::to_owned);
    let mut bounded = filter.clone();
    if let Some(until) = &until {
        bounded.until = OffsetDateTime::parse(until, &Rfc3339).ok();
    }
    let archive = (action == Action::Export)
        .then(|| archive_path(archive_dir, &filter, OffsetDateTime::now_utc()));
    Ok(Plan {
        id: random_token(),
        csrf: random_token(),
        action,
        filter,
        bounded,
        until,
        untimed: seen.untimed,
        selected: walked.selected,
        read: walked.read,
        total: walked.total,
        rows,
        archive,
        back,
        created: Instant::now(),
    })
}

/// Carries a plan out, logs what moved, and makes the cached walks stale.
pub(crate) async fn execute(cache: &Cache, plan: Plan, shutdown: &CancellationToken) -> Done {
    let selection = WalkSelection {
        filter: &plan.bounded,
        limit: Some(plan.selected),
        within: Some(plan.read),
    };
    let summary = if plan.bounded.is_empty() {
        "everything".to_owned()
    } else {
        plan.bounded.summary()
    };
    let mut broker = cache.broker().await;
    let amqp = broker.amqp.clone();
    let (dead, close) = (&amqp.dead_letter_queue, &amqp.close_queue);
    let connection = match broker.connection().await {
        Ok(connection) => connection,
        Err(error) => {
            return Done {
                headline: format!("{} failed", plan.action.verb()),
                lines: vec!["Nothing was moved.".into()],
                problem: Some(error.to_string()),
                back: plan.back,
            };
        }
    };
    let outcome: Result<(u64, Vec<String>, Option<String>), String> = match plan.action {
        Action::Replay => {
            match replay_selected(connection, &amqp, selection, &Edit::default(), shutdown).await {
                Ok((moved, walked)) => {
                    let problem = moved
                        .failure
                        .map(|failure| failure.to_string())
                        .or_else(|| {
                            walked
                                .interrupted
                                .then(|| "interrupted: the console is shutting down".to_owned())
                        });
                    Ok((
                        moved.moved,
                        vec![format!(
                            "Moved {} dead letter(s) to '{close}'.",
                            moved.moved
                        )],
                        problem,
                    ))
                }
                Err(error) => Err(error.to_string()),
            }
        }
        Action::Export => {
            let path = plan.archive.clone().unwrap_or_default();
            let open = || Output::create_archive(&path);
            match export_to(connection, &amqp, selection, shutdown, true, open, true).await {
                Ok(exported) => Ok((
                    exported.written,
                    vec![
                        format!(
                            "Exported {} dead letter(s) to {}; removed them from '{dead}'.",
                            exported.written, exported.target
                        ),
                        format!(
                            "Put them back with: job-closer dlq import {}",
                            exported.target
                        ),
                    ],
                    exported
                        .walked
                        .interrupted
                        .then(|| "interrupted: the console is shutting down".to_owned()),
                )),
                Err(error) => Err(error.to_string()),
            }
        }
        Action::Purge => {
            match delete_selected(connection, &amqp, selection, shutdown, true).await {
                Ok(walked) => Ok((
                    walked.selected,
                    vec![format!(
                        "Deleted {} dead letter(s) from '{dead}'.",
                        walked.selected
                    )],
                    walked
                        .interrupted
                        .then(|| "interrupted: the console is shutting down".to_owned()),
                )),
                Err(error) => Err(error.to_string()),
            }
        }
    };
    let left = ready_count(connection, dead, DEAD_LETTER_SETTING)
        .await
        .ok()
        .map(u64::from);
    if outcome.is_err() {
        broker.reset().await;
    }
    drop(broker);
    cache.invalidate();
    let action = plan.action.name();
    match outcome {
        Ok((moved, mut lines, problem)) => {
            info!(
                action,
                moved,
                shown = plan.selected,
                left,
                selection = %summary,
                until = plan.until.as_deref().unwrap_or("-"),
                archive = plan.archive.as_ref().map(|p| p.display().to_string()).unwrap_or_default(),
                "Console {action}: {moved} dead letter(s) {}.",
                plan.action.past()
            );
            if let Some(left) = left {
                lines.push(format!("{} left in '{dead}'.", left));
            }
            if moved < plan.selected {
                lines.push(format!(
                    "The confirmation showed {}; the others were no longer there (another reader took them, or they changed).",
                    plan.selected
                ));
            }
            Done {
                headline: format!("{} {moved} dead letter(s)", capitalised(plan.action.past())),
                lines,
                problem,
                back: plan.back,
            }
        }
        Err(error) => {
            warn!(action, selection = %summary, %error, "Console action failed.");
            Done {
                headline: format!("{} failed", plan.action.verb()),
                lines: vec![
                    "What was not confirmed stays in the dead-letter queue; look at the overview for what is there now."
                        .into(),
                ],
                problem: Some(error),
                back: plan.back,
            }
        }
    }
}

fn capitalised(word: &str) -> String {
    let mut chars = word.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn plan(action: Action) -> Plan {
        Plan {
            id: random_token(),
            csrf: random_token(),
            action,
            filter: Filter::default(),
            bounded: Filter::default(),
            until: None,
            untimed: 0,
            selected: 3,
            read: 7,
            total: 7,
            rows: Vec::new(),
            archive: None,
            back: "/".into(),
            created: Instant::now(),
        }
    }

    #[test]
    fn a_plan_is_carried_out_once_and_only_with_its_csrf_token() {
        let plans = Plans::default();
        let replay = plan(Action::Replay);
        let (id, csrf) = (replay.id.clone(), replay.csrf.clone());
        plans.keep(replay);
        assert_eq!(
            plans.take(Action::Replay, &id, None).err(),
            Some(PlanRefused::Csrf)
        );
        assert_eq!(
            plans.take(Action::Replay, &id, Some("forged")).err(),
            Some(PlanRefused::Csrf)
        );
        assert_eq!(
            plans.take(Action::Purge, &id, Some(&csrf)).err(),
            Some(PlanRefused::Unknown),
            "a replay's plan does not purge"
        );
        assert!(plans.take(Action::Replay, &id, Some(&csrf)).is_ok());
        assert_eq!(
            plans.take(Action::Replay, &id, Some(&csrf)).err(),
            Some(PlanRefused::Unknown),
            "used up"
        );
        assert_eq!(
            plans
                .take(Action::Replay, "never-served", Some(&csrf))
                .err(),
            Some(PlanRefused::Unknown)
        );
        for _ in 0..MAX_PLANS + 5 {
            plans.keep(plan(Action::Purge));
        }
        assert!(plans.lock().len() <= MAX_PLANS);
    }

    #[test]
    fn actions_name_their_command_and_archives_their_selection() {
        for action in [Action::Replay, Action::Export, Action::Purge] {
            assert_eq!(Action::parse(action.name()), Some(action));
        }
        assert_eq!(Action::parse("delete"), None);
        let mut export = plan(Action::Export);
        let group = Filter {
            group: Some("3925736f".into()),
            ..Filter::default()
        };
        export.archive = Some(archive_path(
            Path::new("/srv/archive"),
            &group,
            datetime!(2026-12-01 14:15:00.123 UTC),
        ));
        assert_eq!(
            Action::Export.cli_extra(&export),
            "--delete /srv/archive/dlq-3925736f-20261201T141500.123Z.jsonl"
        );
        assert_eq!(Action::Replay.cli_extra(&export), "--limit 3");
        assert_eq!(Action::Purge.cli_extra(&export), "--yes");
        assert_eq!(capitalised("moved"), "Moved");
    }
}
