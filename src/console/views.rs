//! The pages, as maud templates: compiled into the binary, nothing loaded at run time, and every
//! value escaped unless a template marks it otherwise (none here does, except the fixed doctype).
//! Plain HTML and the console's own stylesheet (`style.css`, served from the binary): no script,
//! no inline style (the Content-Security-Policy forbids both), nothing from elsewhere. Tables turn
//! into cards on a phone's width; every control is a link, a button or a form field, reachable with
//! the keyboard in reading order, with a skip link to the content.
//!
//! The templates only lay out what the handlers worked out ([`super::message`] for a dead letter in
//! words, [`super::chart`] for the chart); they decide nothing.

use super::actions::{Action, Done, Plan};
use super::cache::{GroupView, Snapshot};
use super::chart;
use super::message::{
    BodyView, age_words, explain, replay_command, shell_quote, size_text, value_text,
};
use super::selection::{FILTER_PARAMS, Page, Selection};
use crate::config::AmqpArgs;
use crate::dlq::amqp_json::{plain_headers, properties_json, typed_headers};
use crate::dlq::filter::Filter;
use crate::dlq::group::Group;
use crate::dlq::table::{Row, short_time};
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;
use std::time::Duration;
use time::OffsetDateTime;

/// The stylesheet, built in.
pub(crate) const STYLE: &str = include_str!("style.css");

/// Who is looking, as far as the buttons go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Access {
    /// Started without `--actions`: no buttons.
    ReadOnly,
    /// Actions are on; this browser has not signed in.
    SignedOut,
    SignedIn,
}

/// What every page knows: the queues, the selection it shows, who looks.
pub(crate) struct Context<'a> {
    pub(crate) amqp: &'a AmqpArgs,
    pub(crate) selection: &'a Selection,
    pub(crate) access: Access,
    pub(crate) now: OffsetDateTime,
}

/// How fresh the data of a page is.
pub(crate) struct Freshness {
    pub(crate) taken: OffsetDateTime,
    pub(crate) age: Duration,
    pub(crate) refreshing: bool,
    pub(crate) error: Option<String>,
    pub(crate) selected: u64,
    pub(crate) total: u64,
}

impl Freshness {
    pub(crate) fn of(snapshot: &Snapshot, refreshing: bool, error: Option<String>) -> Freshness {
        Freshness {
            taken: snapshot.taken,
            age: snapshot.age(),
            refreshing,
            error,
            selected: snapshot.selected(),
            total: snapshot.total,
        }
    }
}

/// `12,345`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn time_text(time: Option<&str>) -> String {
    time.map_or_else(|| "-".to_owned(), short_time)
}

fn utc(at: OffsetDateTime) -> String {
    crate::dead_letter::format_time(at)
}

/// The command-line flags of a filter, quoted for a shell.
fn flags_text(filter: &Filter) -> String {
    filter
        .flags()
        .into_iter()
        .map(|(name, value)| format!("--{name} {}", shell_quote(&value)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `job-closer dlq COMMAND [queue flags] [filter flags]`.
fn cli(amqp: &AmqpArgs, command: &str, filter: &Filter, extra: &str) -> String {
    let mut words = vec![format!("job-closer dlq {command}")];
    if amqp.dead_letter_queue != crate::config::DEFAULT_DEAD_LETTER_QUEUE {
        words.push(format!(
            "--dead-letter-queue {}",
            shell_quote(&amqp.dead_letter_queue)
        ));
    }
    if amqp.close_queue != crate::config::DEFAULT_CLOSE_QUEUE && command.starts_with("replay") {
        words.push(format!("--close-queue {}", shell_quote(&amqp.close_queue)));
    }
    let flags = flags_text(filter);
    if !flags.is_empty() {
        words.push(flags);
    }
    if !extra.is_empty() {
        words.push(extra.to_owned());
    }
    words.join(" ")
}

/// The frame around every page.
fn layout(
    context: &Context<'_>,
    title: &str,
    freshness: Option<&Freshness>,
    refresh_after: Option<u32>,
    content: Markup,
) -> Markup {
    let home = format!("/{}", context.selection.suffix());
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="referrer" content="no-referrer";
                @if let Some(seconds) = refresh_after {
                    meta http-equiv="refresh" content=(seconds);
                }
                title { (title) " · job-closer dead letters" }
                link rel="stylesheet" href="/style.css";
            }
            body {
                a.skip href="#main" { "Skip to the content" }
                header.top {
                    a.brand href=(home) { "job-closer" span { " dead letters" } }
                    span.queue title="DEAD_LETTER_QUEUE" { code { (context.amqp.dead_letter_queue) } }
                    nav {
                        @match context.access {
                            Access::ReadOnly => { span.mode { "read-only" } }
                            Access::SignedOut => { a href="/signin" { "Sign in for actions" } }
                            Access::SignedIn => {
                                form.inline method="post" action="/signout" {
                                    button.link type="submit" { "Sign out" }
                                }
                            }
                        }
                    }
                }
                @if let Some(freshness) = freshness {
                    (freshness_bar(freshness, context))
                }
                main id="main" { (content) }
                footer {
                    "Looking never removes, reorders or duplicates a dead letter. "
                    a href=(format!("/api/groups{}", context.selection.suffix())) { "JSON" }
                }
            }
        }
    }
}

fn freshness_bar(freshness: &Freshness, context: &Context<'_>) -> Markup {
    let stale = freshness.age.as_secs() >= 60;
    html! {
        div.fresh.stale[stale || freshness.error.is_some()] role="status" {
            "Read " strong { (age_words(time::Duration::try_from(freshness.age).unwrap_or_default())) " ago" }
            " (" (utc(freshness.taken)) "): "
            (thousands(freshness.selected)) " selected of " (thousands(freshness.total)) " in the queue."
            @if freshness.refreshing {
                " Reading the queue again…"
            } @else {
                " " a href=(refresh_link(context)) { "Read again" }
            }
            @if let Some(error) = &freshness.error {
                br;
                strong { "Reading it again failed: " } (error)
            }
        }
    }
}

/// The current page's link that asks for a fresh walk.
fn refresh_link(context: &Context<'_>) -> String {
    let query = context.selection.query_string();
    if query.is_empty() {
        "?refresh=1".to_owned()
    } else {
        format!("?{query}&refresh=1")
    }
}

/// The filter form, as the CLI's flags.
fn filter_form(context: &Context<'_>, action: &str) -> Markup {
    let field = |name: &'static str, label: &str, hint: &str| {
        let value = context.selection.get(name).unwrap_or_default().to_owned();
        let id = format!("f-{name}");
        html! {
            label for=(id) {
                span { (label) }
                input id=(id) type="text" name=(name) value=(value) placeholder=(hint) autocomplete="off";
            }
        }
    };
    let summary = if context.selection.is_empty() {
        "Select: since, until, contract, reason, status, text, job id, replays".to_owned()
    } else {
        format!("Selected: {}", context.selection.describe())
    };
    html! {
        details.filters open[!context.selection.is_empty()] {
            summary { (summary) }
            form.filters method="get" action=(action) {
            fieldset {
                legend { "Select dead letters" }
                (field("since", "Since", "12h, 7d or 2026-12-01T14:00:00Z"))
                (field("until", "Until", "90m, or an RFC 3339 time"))
                (field("contract", "Contract", "urn:li:contract:…"))
                (field("reason", "Reason", "rejected, invalid, …"))
                (field("status", "Status", "403"))
                (field("grep", "Text", "in the message or the body"))
                (field("id", "Job id", "externalJobPostingId"))
                (field("min-replays", "Replayed at least", "1"))
                div.buttons {
                    button type="submit" { "Apply" }
                    @if !context.selection.is_empty() {
                        a href=(action) { "Clear" }
                    }
                }
            }
            }
        }
    }
}

/// The action buttons for a selection (a group, or all of it): each a form that opens its
/// confirmation page (a GET: nothing moves until that page's own form is sent).
fn action_buttons(context: &Context<'_>, group: Option<&str>, count: u64) -> Markup {
    if context.access == Access::ReadOnly || count == 0 {
        return html! {};
    }
    let what = if group.is_some() {
        "this group"
    } else {
        "all selected"
    };
    let params: Vec<(&str, &str)> = FILTER_PARAMS
        .iter()
        .filter_map(|name| Some((*name, context.selection.get(name)?)))
        .chain(group.map(|group| ("group", group)))
        .collect();
    html! {
        div.actions {
            @for action in [Action::Replay, Action::Export, Action::Purge] {
                form method="get" action=(format!("/actions/{}", action.name())) {
                    @for (name, value) in &params {
                        input type="hidden" name=(name) value=(value);
                    }
                    button.(action.name()) type="submit" {
                        (action.verb()) " " (what) "…"
                    }
                }
            }
            @if context.access == Access::SignedOut {
                span.note { "(sign in first)" }
            }
        }
    }
}

fn contracts_cell(group: &Group, context: &Context<'_>) -> Markup {
    html! {
        @if !group.contracts.is_empty() {
            ul.contracts {
                @for (urn, count) in &group.contracts {
                    li {
                        a href=(contract_link(context, urn)) { (urn) }
                        " (" (thousands(*count)) ")"
                    }
                }
                @if group.other_contracts > 0 {
                    li { "others (" (thousands(group.other_contracts)) ")" }
                }
            }
        }
    }
}

/// The overview narrowed to one contract.
fn contract_link(context: &Context<'_>, urn: &str) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for name in FILTER_PARAMS {
        if name == "contract" {
            continue;
        }
        if let Some(value) = context.selection.get(name) {
            query.append_pair(name, value);
        }
    }
    query.append_pair("contract", urn);
    format!("/?{}", query.finish())
}

fn reasons_text(group: &Group) -> String {
    if group.reasons.is_empty() {
        "-".to_owned()
    } else {
        group.reasons.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

fn status_text(status: Option<i64>) -> String {
    status.map_or_else(|| "-".to_owned(), |s| s.to_string())
}

/// `/`: every group, newest first, and the chart.
pub(crate) fn overview(
    context: &Context<'_>,
    snapshot: &Snapshot,
    freshness: &Freshness,
) -> Markup {
    let groups = snapshot.newest_first();
    let summary = snapshot.filter.summary();
    let content = html! {
        h1 {
            (thousands(snapshot.selected())) " dead letter" @if snapshot.selected() != 1 { "s" }
            " in " (groups.len()) " group" @if groups.len() != 1 { "s" }
        }
        (filter_form(context, "/"))
        @if !summary.is_empty() && context.selection.is_empty() {
            p.selection { "This console shows only: " (summary) }
        }
        section aria-labelledby="when" {
            h2 id="when" { "When they failed" }
            (chart::render(&snapshot.hours, snapshot.untimed, "dead letter"))
        }
        section aria-labelledby="groups" {
            h2 id="groups" { "Failure groups" span.sub { " newest first" } }
            (action_buttons(context, None, snapshot.selected()))
            @if groups.is_empty() {
                p.empty { "Nothing here: no dead letter is selected." }
            } @else {
                table.groups {
                    thead {
                        tr {
                            th scope="col" { "Group" }
                            th.num scope="col" { "Count" }
                            th.num scope="col" { "Status" }
                            th scope="col" { "Reason" }
                            th scope="col" { "Message (variable parts folded)" }
                            th scope="col" { "Oldest (UTC)" }
                            th scope="col" { "Newest (UTC)" }
                            th.num scope="col" { "Replays" }
                            th scope="col" { "Contracts" }
                        }
                    }
                    tbody {
                        @for view in &groups {
                            (group_row(context, view))
                        }
                    }
                }
            }
        }
        section.cli aria-labelledby="cli" {
            h2 id="cli" { "The same on the command line" }
            pre { code { (cli(context.amqp, "stats", &snapshot.filter, "")) } }
        }
    };
    layout(context, "Overview", Some(freshness), None, content)
}

fn group_row(context: &Context<'_>, view: &GroupView) -> Markup {
    let group = &view.group;
    let link = format!("/groups/{}{}", group.id, context.selection.suffix());
    html! {
        tr {
            td data-label="Group" { a href=(link) { code { (group.id) } } }
            td.num data-label="Count" { (thousands(view.count())) }
            td.num data-label="Status" { (status_text(group.key.status)) }
            td data-label="Reason" { (reasons_text(group)) }
            td.message data-label="Message" { (group.key.message) }
            td data-label="Oldest" { (time_text(group.oldest.as_deref())) }
            td data-label="Newest" { (time_text(group.newest.as_deref())) }
            td.num data-label="Replays" { (group.max_replays) }
            td data-label="Contracts" { (contracts_cell(group, context)) }
        }
    }
}

/// A dead letter's row on a group page, with the link to its page.
pub(crate) struct MessageRow {
    pub(crate) row: Row,
    pub(crate) fingerprint: u64,
}

/// `/groups/GROUP`: the group, its chart and a page of its dead letters.
pub(crate) fn group_page(
    context: &Context<'_>,
    snapshot: &Snapshot,
    view: &GroupView,
    rows: &[MessageRow],
    page: Page,
    freshness: &Freshness,
) -> Markup {
    let group = &view.group;
    let total = view.count();
    let range = page.range(total);
    let mut in_group = snapshot.filter.clone();
    in_group.group = Some(group.id.clone());
    let page_link = |page: Page| {
        let query = context.selection.query_string();
        let sep = if query.is_empty() { "" } else { "&" };
        format!(
            "/groups/{}?{query}{sep}offset={}&limit={}",
            group.id, page.offset, page.limit
        )
    };
    let api = format!(
        "/api/groups/{}/messages?{}{}offset={}&limit={}",
        group.id,
        context.selection.query_string(),
        if context.selection.is_empty() {
            ""
        } else {
            "&"
        },
        page.offset,
        page.limit
    );
    let content = html! {
        nav.crumbs aria-label="Breadcrumb" {
            a href=(format!("/{}", context.selection.suffix())) { "All groups" }
            " › " code { (group.id) }
        }
        h1 {
            span.status { (status_text(group.key.status)) }
            " " (group.key.message)
        }
        dl.facts {
            div { dt { "Group" } dd { code { (group.id) } } }
            div { dt { "Dead letters" } dd { (thousands(total)) } }
            div { dt { "Reason" } dd { (reasons_text(group)) } }
            div { dt { "Oldest (UTC)" } dd { (time_text(group.oldest.as_deref())) } }
            div { dt { "Newest (UTC)" } dd { (time_text(group.newest.as_deref())) } }
            div { dt { "Most replays" } dd { (group.max_replays) } }
            @if !group.contracts.is_empty() {
                div.wide { dt { "Contracts" } dd { (contracts_cell(group, context)) } }
            }
        }
        (action_buttons(context, Some(&group.id), total))
        section aria-labelledby="when" {
            h2 id="when" { "When they failed" }
            (chart::render(&view.hours, view.untimed, "dead letter of this group"))
        }
        section aria-labelledby="letters" {
            h2 id="letters" {
                "Dead letters "
                span.sub {
                    @if total == 0 { "none" } @else {
                        (thousands(range.start + 1)) "–" (thousands(range.end)) " of " (thousands(total)) ", in queue order"
                    }
                }
            }
            @if !rows.is_empty() {
                table.letters {
                    thead {
                        tr {
                            th.num scope="col" { "Pos" }
                            th scope="col" { "External id" }
                            th.num scope="col" { "Status" }
                            th scope="col" { "Reason" }
                            th.num scope="col" { "Attempts" }
                            th.num scope="col" { "Replays" }
                            th scope="col" { "When (UTC)" }
                            th scope="col" { "Message" }
                        }
                    }
                    tbody {
                        @for message in rows {
                            (letter_row(context, message))
                        }
                    }
                }
            } @else if total > 0 {
                p.empty { "This page is past the last dead letter." }
            }
            nav.pager aria-label="Pages" {
                @if let Some(previous) = page.previous() {
                    a rel="prev" href=(page_link(previous)) { "← Previous " (page.limit) }
                }
                @if let Some(next) = page.next(total) {
                    a rel="next" href=(page_link(next)) { "Next " (page.limit) " →" }
                }
                a href=(api) { "This page as JSON" }
            }
        }
        section.cli aria-labelledby="cli" {
            h2 id="cli" { "The same on the command line" }
            pre { code {
                (cli(context.amqp, "list", &in_group, "")) "\n"
                (cli(context.amqp, "replay", &in_group, "--dry-run"))
            } }
        }
    };
    layout(
        context,
        &format!("Group {}", group.id),
        Some(freshness),
        None,
        content,
    )
}

fn letter_row(context: &Context<'_>, message: &MessageRow) -> Markup {
    let (cells, text) = &message.row;
    let link = format!(
        "/messages/{:016x}{}",
        message.fingerprint,
        context.selection.suffix()
    );
    let cell = |index: usize| cells.get(index).map(String::as_str).unwrap_or("-");
    html! {
        tr {
            td.num data-label="Pos" { a href=(link) { (cell(0)) } }
            td data-label="External id" { a href=(link) { (cell(1)) } }
            td.num data-label="Status" { (cell(2)) }
            td data-label="Reason" { (cell(3)) }
            td.num data-label="Attempts" { (cell(4)) }
            td.num data-label="Replays" { (cell(5)) }
            td data-label="When" { (cell(6)) }
            td.message data-label="Message" { (text) }
        }
    }
}

/// A dead letter, as a message page shows it.
pub(crate) struct MessageView<'a> {
    pub(crate) position: u64,
    pub(crate) body: &'a [u8],
    pub(crate) properties: &'a lapin::BasicProperties,
    pub(crate) described: &'a crate::dlq::record::Described,
    pub(crate) fingerprint: u64,
}

/// A message page: what it says in words, the command that sends it back, its body, every header
/// and property.
pub(crate) fn message_page(
    context: &Context<'_>,
    message: &MessageView<'_>,
    freshness: &Freshness,
) -> Markup {
    let described = message.described;
    let headers = message.properties.headers().as_ref();
    let plain = plain_headers(headers);
    let typed = typed_headers(headers);
    let properties = properties_json(message.properties);
    let body = BodyView::of(message.body);
    let (command, exact) = replay_command(described, context.amqp);
    let group_link = format!(
        "/groups/{}{}",
        described.group_id,
        context.selection.suffix()
    );
    let title = match &described.external_id {
        Some(id) => format!("Dead letter {id}"),
        None => format!("Dead letter at position {}", message.position),
    };
    let explained: Vec<(String, String)> = plain
        .as_object()
        .into_iter()
        .flat_map(|object| object.iter())
        .filter_map(|(name, value)| Some((name.clone(), explain(name, value, context.now)?)))
        .collect();
    let content = html! {
        nav.crumbs aria-label="Breadcrumb" {
            a href=(format!("/{}", context.selection.suffix())) { "All groups" }
            " › " a href=(group_link) { code { (described.group_id) } }
            " › position " (message.position)
        }
        h1 { (title) }
        p.lead {
            (status_text(described.recorded.status)) " · "
            (described.recorded.reason.as_deref().unwrap_or("no reason recorded")) " · "
            (time_text(described.dead_lettered_at.as_deref())) " UTC"
        }
        @if let Some(message_text) = &described.recorded.message {
            blockquote.error { (value_text(&Value::String(message_text.clone()))) }
        }
        section aria-labelledby="why" {
            h2 id="why" { "What the dead-letter headers say" }
            @if explained.is_empty() {
                p.note { "This message carries no failure record: it was published here by hand, or by a tool other than job-closer." }
            } @else {
                dl.explained {
                    @for (name, words) in &explained {
                        div { dt { code { (name) } } dd { (words) } }
                    }
                }
            }
        }
        section aria-labelledby="send-back" {
            h2 id="send-back" { "Send it back" }
            p { "Once the cause is fixed, this command moves this dead letter back to "
                code { (context.amqp.close_queue) } " (add " code { "--dry-run" } " to see it first):" }
            pre.command { code { (command) } }
            @if !exact {
                p.note { "It records no job id or no dead-letter time, so the command may also select other dead letters of its group: run it with --dry-run first." }
            }
        }
        section aria-labelledby="body" {
            h2 id="body" {
                "Body "
                span.sub {
                    (size_text(body.size))
                    @if body.json { ", JSON" }
                    @if body.not_utf8 { ", not valid UTF-8 (shown with � where it is not)" }
                }
            }
            @if body.is_cut() {
                p.note { "Showing the first " (size_text(body.shown)) " of " (size_text(body.size)) "; the whole body is in " a href=(format!("/api/messages/{:016x}{}", message.fingerprint, context.selection.suffix())) { "its record" } " (JSON)." }
            }
            pre.body { code { (body.text) } }
        }
        section aria-labelledby="headers" {
            h2 id="headers" { "Headers" }
            @if let Some(object) = plain.as_object().filter(|o| !o.is_empty()) {
                table.kv {
                    thead { tr { th scope="col" { "Header" } th scope="col" { "Type" } th scope="col" { "Value" } } }
                    tbody {
                        @for (name, value) in object {
                            tr {
                                th scope="row" { code { (name) } }
                                td data-label="Type" { (type_of(&typed, name)) }
                                td data-label="Value" { pre.value { (value_text(value)) } }
                            }
                        }
                    }
                }
            } @else {
                p.note { "No headers." }
            }
        }
        section aria-labelledby="properties" {
            h2 id="properties" { "Properties" }
            @if let Some(object) = properties.as_object().filter(|o| !o.is_empty()) {
                table.kv {
                    tbody {
                        @for (name, value) in object {
                            tr { th scope="row" { code { (name) } } td { (value_text(value)) } }
                        }
                    }
                }
            } @else {
                p.note { "No properties." }
            }
        }
    };
    layout(context, &title, Some(freshness), None, content)
}

/// The AMQP type of a header, from its typed view (`{"i32":403}` → `i32`).
fn type_of(typed: &Value, name: &str) -> String {
    typed
        .get(name)
        .and_then(Value::as_object)
        .and_then(|object| object.keys().next())
        .cloned()
        .unwrap_or_default()
}

/// The page shown while the first walk of a selection runs; it reloads itself (no script).
pub(crate) fn reading(context: &Context<'_>, read: u64, total: u64) -> Markup {
    let content = html! {
        h1 { "Reading the dead-letter queue…" }
        p role="status" {
            @if total > 0 {
                (thousands(read)) " of " (thousands(total)) " messages read. "
            }
            "This page reloads itself every two seconds until the walk is done; the queue stays as it is."
        }
    };
    layout(context, "Reading", None, Some(2), content)
}

/// An error page: what went wrong and the way back.
pub(crate) fn error_page(context: &Context<'_>, title: &str, detail: &str) -> Markup {
    let content = html! {
        h1 { (title) }
        p.problem { (detail) }
        p { a href=(format!("/{}", context.selection.suffix())) { "Back to the overview" } }
    };
    layout(context, title, None, None, content)
}

/// The sign-in form.
pub(crate) fn signin(context: &Context<'_>, form_token: &str, next: &str, failed: bool) -> Markup {
    let content = html! {
        h1 { "Sign in" }
        p { "Replay, export and purge need the console's token (the contents of DLQ_CONSOLE_TOKEN_FILE)." }
        @if failed {
            p.problem role="alert" { "That is not the token." }
        }
        form.signin method="post" action="/signin" {
            input type="hidden" name="csrf_token" value=(form_token);
            input type="hidden" name="next" value=(next);
            label for="token" { span { "Token" } input id="token" type="password" name="token" autocomplete="off" required autofocus; }
            div.buttons { button type="submit" { "Sign in" } }
        }
    };
    layout(context, "Sign in", None, None, content)
}

/// An action's confirmation: what would move, the bound that keeps it to that, and the button.
pub(crate) fn confirm(context: &Context<'_>, plan: &Plan) -> Markup {
    let action = plan.action;
    let amqp = context.amqp;
    let rest = plan.total.saturating_sub(plan.selected);
    let content = html! {
        h1 { (action.verb()) " " (thousands(plan.selected)) " dead letter" @if plan.selected != 1 { "s" } "?" }
        @if !plan.filter.is_empty() {
            p.selection { "Selected: " (plan.filter.summary()) }
        }
        p.what {
            @match action {
                Action::Replay => {
                    "Dry run: would move " (thousands(plan.selected)) " dead letter(s) to "
                    code { (amqp.close_queue) } " and leave " (thousands(rest)) " in "
                    code { (amqp.dead_letter_queue) } "; nothing was moved."
                }
                Action::Export => {
                    "Would write " (thousands(plan.selected)) " record(s) to "
                    code { (plan.archive.as_ref().map(|p| p.display().to_string()).unwrap_or_default()) }
                    ", synced to disk, and only then remove them from " code { (amqp.dead_letter_queue) }
                    " (leaving " (thousands(rest)) "). " code { "job-closer dlq import FILE" } " puts them back."
                }
                Action::Purge => {
                    "Would delete " (thousands(plan.selected)) " dead letter(s) from "
                    code { (amqp.dead_letter_queue) } " and leave " (thousands(rest)) ". They cannot be brought back."
                }
            }
        }
        p.bound {
            @match (&plan.until, plan.untimed) {
                (Some(until), _) => {
                    "Bound: at most these " (thousands(plan.selected)) ", dead-lettered until "
                    code { "--until " (until) } " (the newest shown): nothing dead-lettered after this dry run is touched."
                }
                (None, 0) => {
                    "Bound: at most these " (thousands(plan.selected)) ", from the first "
                    (thousands(plan.read)) " messages of the queue."
                }
                (None, untimed) => {
                    (thousands(untimed)) " of them record no dead-letter time, so no --until can bound them: at most "
                    (thousands(plan.selected)) " dead letters, from the first " (thousands(plan.read))
                    " messages of the queue, are " (action.past()) "."
                }
            }
        }
        @if plan.selected > 0 {
            form.confirm method="post" action=(format!("/actions/{}", action.name())) {
                input type="hidden" name="plan" value=(plan.id);
                input type="hidden" name="csrf_token" value=(plan.csrf);
                div.buttons {
                    button.(action.name()) type="submit" { (action.verb()) " " (thousands(plan.selected)) " dead letter(s)" }
                    a href=(plan.back) { "Cancel" }
                }
            }
        } @else {
            p.empty { "Nothing to do: no dead letter is selected." a href=(plan.back) { " Back" } }
        }
        section.cli aria-labelledby="cli" {
            h2 id="cli" { "The same on the command line" }
            pre { code { (cli(amqp, action.command(), &plan.bounded, &action.cli_extra(plan))) } }
        }
        @if !plan.rows.is_empty() {
            section aria-labelledby="which" {
                h2 id="which" { "Which "
                    span.sub { @if plan.selected as usize > plan.rows.len() { "the first " (plan.rows.len()) " of " (thousands(plan.selected)) } @else { "all of them" } }
                }
                table.letters {
                    thead { tr {
                        th.num scope="col" { "Pos" } th scope="col" { "External id" } th.num scope="col" { "Status" }
                        th scope="col" { "Reason" } th.num scope="col" { "Attempts" } th.num scope="col" { "Replays" }
                        th scope="col" { "When (UTC)" } th scope="col" { "Message" }
                    } }
                    tbody {
                        @for (cells, message) in &plan.rows {
                            tr {
                                @for (index, label) in ["Pos", "External id", "Status", "Reason", "Attempts", "Replays", "When"].iter().enumerate() {
                                    td.num[matches!(index, 0 | 2 | 4 | 5)] data-label=(label) { (cells.get(index).map(String::as_str).unwrap_or("-")) }
                                }
                                td.message data-label="Message" { (message) }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(
        context,
        &format!("{} dead letters", action.verb()),
        None,
        None,
        content,
    )
}

/// What an action did.
pub(crate) fn done(context: &Context<'_>, done: &Done) -> Markup {
    let content = html! {
        h1 { (done.headline) }
        @for line in &done.lines {
            p { (line) }
        }
        @if let Some(problem) = &done.problem {
            p.problem role="alert" { (problem) }
        }
        p { a href=(done.back) { "Back" } " · " a href=(format!("/{}", context.selection.suffix())) { "All groups" } }
    };
    layout(context, &done.headline, None, None, content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_get_thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(100_000), "100,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn the_command_line_names_the_queue_and_the_filters() {
        let mut amqp = crate::amqp::test_args(crate::config::QueueType::Classic, false);
        amqp.dead_letter_queue = crate::config::DEFAULT_DEAD_LETTER_QUEUE.into();
        let filter = Filter {
            contract: Some("urn:li:contract:9".into()),
            grep: Some("night nurse".into()),
            ..Filter::default()
        };
        assert_eq!(
            cli(&amqp, "stats", &filter, ""),
            "job-closer dlq stats --contract urn:li:contract:9 --grep 'night nurse'"
        );
        amqp.dead_letter_queue = "x.dead".into();
        assert_eq!(
            cli(&amqp, "list", &Filter::default(), "--json"),
            "job-closer dlq list --dead-letter-queue x.dead --json"
        );
    }
}
