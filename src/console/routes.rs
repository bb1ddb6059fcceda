//! The console's URLs, each a thin handler: read the request, ask the cache or an action, hand the
//! result to a template or to JSON.
//!
//! | URL | what |
//! |---|---|
//! | `GET /` | the overview: the chart and every group, newest first |
//! | `GET /groups/GROUP` | a group and a page of its dead letters (`offset`, `limit`, 100 a page) |
//! | `GET /messages/ID` | one dead letter (ID: its fingerprint, the same from one walk to the next) |
//! | `GET /api/groups` | `{"groups": [...]}`: the lines of `dlq stats --json` |
//! | `GET /api/groups/GROUP/messages` | `{"messages": [...]}`: the records of `dlq list --json` |
//! | `GET /api/messages/ID` | one dead letter's record, whole (a message page cuts a long body) |
//! | `GET /style.css` | the stylesheet |
//! | `GET`, `POST /signin`; `POST /signout` | the token, for the buttons |
//! | `GET /actions/ACTION`, `POST /actions/ACTION` | a button's confirmation, and doing it |
//!
//! Every page and API call takes the selection's query parameters ([`super::selection`]).
//! [`guard`] runs before each handler and adds the security headers after it.

use super::actions::{self, Action, PlanRefused, Plans};
use super::auth::{Auth, cleared_cookie, session_cookie};
use super::cache::{Cache, Looked, Patience, Snapshot};
use super::guard::{SECURITY_HEADERS, cross_site, host_allowed, refused_method, safe_next};
use super::selection::{MAX_PAGE, PAGE, Page, Selection};
use super::views::{self, Access, Context, Freshness, MessageRow, MessageView};
use crate::config::AmqpArgs;
use crate::dlq::group::parse_group_id;
use crate::dlq::list::list_row;
use axum::Router;
use axum::extract::{Form, Path, Query, Request, State};
use axum::http::header::{CONTENT_TYPE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use maud::Markup;
use serde::Serialize;
use serde_json::value::RawValue;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Everything the handlers share.
pub(crate) struct Console {
    pub(crate) cache: Arc<Cache>,
    pub(crate) amqp: AmqpArgs,
    /// Set when the buttons are on.
    pub(crate) auth: Option<Auth>,
    pub(crate) plans: Plans,
    pub(crate) archive_dir: PathBuf,
    pub(crate) allowed_hosts: Vec<String>,
    pub(crate) shutdown: CancellationToken,
}

type Shared = Arc<Console>;
type Params = Query<BTreeMap<String, String>>;

/// How long a wrong token waits for its answer: guessing goes slowly.
const WRONG_TOKEN_DELAY: Duration = Duration::from_millis(500);

pub(crate) fn router(console: Shared) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/groups/{group}", get(group_page))
        .route("/messages/{id}", get(message_page))
        .route("/api/groups", get(api_groups))
        .route("/api/groups/{group}/messages", get(api_messages))
        .route("/api/messages/{id}", get(api_message))
        .route("/style.css", get(style))
        .route("/signin", get(signin_form).post(signin))
        .route("/signout", post(signout))
        .route("/actions/{action}", get(confirm).post(act))
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(console.clone(), guard))
        .with_state(console)
}

/// What every request passes before its handler, and the headers every response gets after it.
async fn guard(State(console): State<Shared>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let mut response = if !host_allowed(headers, &console.allowed_hosts) {
        plain(
            StatusCode::MISDIRECTED_REQUEST,
            "This console answers only to localhost, IP addresses and the names given with --allow-host.",
        )
    } else if refused_method(request.method(), console.auth.is_some()) {
        plain(
            StatusCode::FORBIDDEN,
            "This console is read-only: start it with --actions and DLQ_CONSOLE_TOKEN_FILE to replay, export or purge.",
        )
    } else if request.method() == axum::http::Method::POST && cross_site(headers) {
        plain(
            StatusCode::FORBIDDEN,
            "Refused: this form was sent from another site.",
        )
    } else if request.method() == axum::http::Method::POST
        && request.uri().path() != "/signin"
        && !console
            .auth
            .as_ref()
            .is_some_and(|auth| auth.allows(headers))
    {
        plain(StatusCode::UNAUTHORIZED, SIGN_IN_FIRST)
    } else {
        next.run(request).await
    };
    let response_headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        response_headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    response
}

fn plain(status: StatusCode, text: &'static str) -> Response {
    (status, [(CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
}

fn page(status: StatusCode, markup: Markup) -> Response {
    (status, markup).into_response()
}

fn access(console: &Console, headers: &HeaderMap) -> Access {
    match &console.auth {
        None => Access::ReadOnly,
        Some(auth) if auth.allows(headers) => Access::SignedIn,
        Some(_) => Access::SignedOut,
    }
}

fn context<'a>(console: &'a Console, selection: &'a Selection, headers: &HeaderMap) -> Context<'a> {
    Context {
        amqp: &console.amqp,
        selection,
        access: access(console, headers),
        now: OffsetDateTime::now_utc(),
    }
}

/// `?refresh=1`: every walk is read again; the browser goes on to the same page without it (so
/// that a reload does not ask again).
fn refreshed(console: &Console, query: &BTreeMap<String, String>, uri: &Uri) -> Option<Response> {
    query.get("refresh")?;
    console.cache.invalidate();
    let mut rest = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in query.iter().filter(|(name, _)| *name != "refresh") {
        rest.append_pair(name, value);
    }
    let rest = rest.finish();
    let location = if rest.is_empty() {
        uri.path().to_owned()
    } else {
        format!("{}?{rest}", uri.path())
    };
    Some(see_other(&location, None))
}

fn see_other(location: &str, cookie: Option<String>) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(LOCATION, value);
    }
    if let Some(cookie) = cookie.and_then(|cookie| HeaderValue::from_str(&cookie).ok()) {
        response.headers_mut().insert(SET_COOKIE, cookie);
    }
    response
}

/// The snapshot a page is drawn from, or the page to show instead (progress, or an error).
async fn snapshot_for(
    console: &Console,
    context: &Context<'_>,
) -> Result<(Arc<Snapshot>, Freshness), Response> {
    match console.cache.look(context.selection, Patience::Page).await {
        Err(bad) => Err(page(
            StatusCode::BAD_REQUEST,
            views::error_page(context, "This link's selection is wrong", &bad),
        )),
        Ok(Looked::Reading { read, total }) => {
            Err(page(StatusCode::OK, views::reading(context, read, total)))
        }
        Ok(Looked::Failed { error }) => Err(page(
            StatusCode::SERVICE_UNAVAILABLE,
            views::error_page(context, "Cannot read the dead-letter queue", &error),
        )),
        Ok(Looked::Ready {
            snapshot,
            refreshing,
            error,
        }) => {
            let freshness = Freshness::of(&snapshot, refreshing, error);
            Ok((snapshot, freshness))
        }
    }
}

async fn overview(
    State(console): State<Shared>,
    Query(query): Params,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if let Some(redirect) = refreshed(&console, &query, &uri) {
        return redirect;
    }
    let selection = Selection::from_query(&query);
    let context = context(&console, &selection, &headers);
    match snapshot_for(&console, &context).await {
        Ok((snapshot, freshness)) => page(
            StatusCode::OK,
            views::overview(&context, &snapshot, &freshness),
        ),
        Err(response) => response,
    }
}

async fn group_page(
    State(console): State<Shared>,
    Path(group): Path<String>,
    Query(query): Params,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if let Some(redirect) = refreshed(&console, &query, &uri) {
        return redirect;
    }
    let selection = Selection::from_query(&query);
    let context = context(&console, &selection, &headers);
    let Ok(group) = parse_group_id(&group) else {
        return page(
            StatusCode::NOT_FOUND,
            views::error_page(
                &context,
                "No such group",
                "A group id is the 8 hex digits the overview shows.",
            ),
        );
    };
    let page_asked = match Page::from_query(&query, PAGE) {
        Ok(page_asked) => page_asked,
        Err(bad) => {
            return page(
                StatusCode::BAD_REQUEST,
                views::error_page(&context, "This link's page is wrong", &bad),
            );
        }
    };
    let (snapshot, freshness) = match snapshot_for(&console, &context).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let Some(view) = snapshot.group(&group) else {
        return page(
            StatusCode::NOT_FOUND,
            views::error_page(
                &context,
                "No such group here",
                &format!(
                    "No selected dead letter is in group {group} (now): it may have been replayed, archived or purged."
                ),
            ),
        );
    };
    let letters = match snapshot.letters(view, page_asked.range(view.count())) {
        Ok(letters) => letters,
        Err(error) => return spool_failed(&context, &error.to_string()),
    };
    let rows: Vec<MessageRow> = letters
        .iter()
        .map(|letter| MessageRow {
            row: list_row(letter.position, &letter.body, &letter.described),
            fingerprint: letter.fingerprint,
        })
        .collect();
    page(
        StatusCode::OK,
        views::group_page(&context, &snapshot, view, &rows, page_asked, &freshness),
    )
}

fn spool_failed(context: &Context<'_>, error: &str) -> Response {
    page(
        StatusCode::INTERNAL_SERVER_ERROR,
        views::error_page(context, "Cannot read the console's copy of the walk", error),
    )
}

async fn message_page(
    State(console): State<Shared>,
    Path(id): Path<String>,
    Query(query): Params,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    if let Some(redirect) = refreshed(&console, &query, &uri) {
        return redirect;
    }
    let selection = Selection::from_query(&query);
    let context = context(&console, &selection, &headers);
    let missing = |context: &Context<'_>| {
        page(
            StatusCode::NOT_FOUND,
            views::error_page(
                context,
                "No such dead letter here",
                "It is not among the selected dead letters (now): it may have been replayed, archived or purged.",
            ),
        )
    };
    let Ok(fingerprint) = u64::from_str_radix(id.trim(), 16) else {
        return missing(&context);
    };
    let (snapshot, freshness) = match snapshot_for(&console, &context).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    match snapshot.find(fingerprint) {
        None => missing(&context),
        Some(Err(error)) => spool_failed(&context, &error.to_string()),
        Some(Ok(letter)) => {
            let view = MessageView {
                position: letter.position,
                body: &letter.body,
                properties: &letter.properties,
                described: &letter.described,
                fingerprint: letter.fingerprint,
            };
            page(
                StatusCode::OK,
                views::message_page(&context, &view, &freshness),
            )
        }
    }
}

fn json(status: StatusCode, body: String) -> Response {
    (status, [(CONTENT_TYPE, "application/json")], body).into_response()
}

fn json_error(status: StatusCode, error: &str) -> Response {
    json(status, serde_json::json!({ "error": error }).to_string())
}

/// The snapshot an API call answers from: it waits for the walk (a script wants the data).
async fn snapshot_for_script(
    console: &Console,
    selection: &Selection,
) -> Result<Arc<Snapshot>, Response> {
    match console.cache.look(selection, Patience::Script).await {
        Err(bad) => Err(json_error(StatusCode::BAD_REQUEST, &bad)),
        Ok(Looked::Ready { snapshot, .. }) => Ok(snapshot),
        Ok(Looked::Reading { .. }) => Err(json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the dead-letter queue is still being read; try again",
        )),
        Ok(Looked::Failed { error }) => Err(json_error(StatusCode::SERVICE_UNAVAILABLE, &error)),
    }
}

/// One line of JSON text as a value to embed as it is (it was serialised by `dlq`'s own code).
fn raw(line: &str) -> Option<&RawValue> {
    serde_json::from_str(line).ok()
}

async fn api_groups(State(console): State<Shared>, Query(query): Params) -> Response {
    let selection = Selection::from_query(&query);
    let snapshot = match snapshot_for_script(&console, &selection).await {
        Ok(snapshot) => snapshot,
        Err(response) => return response,
    };
    #[derive(Serialize)]
    struct Groups<'a> {
        groups: Vec<&'a RawValue>,
        selected: u64,
        total: u64,
        read_at: String,
    }
    let answer = Groups {
        groups: snapshot
            .groups
            .iter()
            .filter_map(|view| raw(&view.json))
            .collect(),
        selected: snapshot.selected(),
        total: snapshot.total,
        read_at: crate::dead_letter::format_time(snapshot.taken),
    };
    json(
        StatusCode::OK,
        serde_json::to_string(&answer).unwrap_or_default(),
    )
}

async fn api_messages(
    State(console): State<Shared>,
    Path(group): Path<String>,
    Query(query): Params,
) -> Response {
    let Ok(group) = parse_group_id(&group) else {
        return json_error(StatusCode::NOT_FOUND, "a group id is 8 hex digits");
    };
    let asked = match Page::from_query(&query, MAX_PAGE) {
        Ok(asked) => asked,
        Err(bad) => return json_error(StatusCode::BAD_REQUEST, &bad),
    };
    let selection = Selection::from_query(&query);
    let snapshot = match snapshot_for_script(&console, &selection).await {
        Ok(snapshot) => snapshot,
        Err(response) => return response,
    };
    let Some(view) = snapshot.group(&group) else {
        return json_error(
            StatusCode::NOT_FOUND,
            &format!("no selected dead letter is in group {group}"),
        );
    };
    let total = view.count();
    let records = match snapshot.records(view, asked.range(total)) {
        Ok(records) => records,
        Err(error) => return json_error(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string()),
    };
    #[derive(Serialize)]
    struct Messages<'a> {
        group: &'a str,
        total: u64,
        offset: u64,
        limit: u64,
        next: Option<u64>,
        messages: Vec<&'a RawValue>,
    }
    let answer = Messages {
        group: &group,
        total,
        offset: asked.offset,
        limit: asked.limit,
        next: asked.next(total).map(|next| next.offset),
        messages: records.iter().filter_map(|record| raw(record)).collect(),
    };
    json(
        StatusCode::OK,
        serde_json::to_string(&answer).unwrap_or_default(),
    )
}

async fn api_message(
    State(console): State<Shared>,
    Path(id): Path<String>,
    Query(query): Params,
) -> Response {
    let missing = || {
        json_error(
            StatusCode::NOT_FOUND,
            "no such dead letter among those selected (now)",
        )
    };
    let Ok(fingerprint) = u64::from_str_radix(id.trim(), 16) else {
        return missing();
    };
    let selection = Selection::from_query(&query);
    let snapshot = match snapshot_for_script(&console, &selection).await {
        Ok(snapshot) => snapshot,
        Err(response) => return response,
    };
    match snapshot.record_of(fingerprint) {
        None => missing(),
        Some(Ok(record)) => json(StatusCode::OK, record),
        Some(Err(error)) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string()),
    }
}

async fn style() -> Response {
    ([(CONTENT_TYPE, "text/css; charset=utf-8")], views::STYLE).into_response()
}

async fn not_found(State(console): State<Shared>, headers: HeaderMap) -> Response {
    let selection = Selection::default();
    let context = context(&console, &selection, &headers);
    page(
        StatusCode::NOT_FOUND,
        views::error_page(&context, "Not found", "The console has no such page."),
    )
}

const SIGN_IN_FIRST: &str = "Sign in first: an action needs the console's token (the sign-in form, or Authorization: Bearer TOKEN).";

fn no_such_action(context: &Context<'_>) -> Response {
    page(
        StatusCode::NOT_FOUND,
        views::error_page(
            context,
            "No such action",
            "The console can replay, export (archive) and purge.",
        ),
    )
}

fn read_only(context: &Context<'_>) -> Response {
    page(
        StatusCode::FORBIDDEN,
        views::error_page(
            context,
            "This console is read-only",
            "Start it with --actions and DLQ_CONSOLE_TOKEN_FILE to replay, export or purge.",
        ),
    )
}

async fn signin_form(
    State(console): State<Shared>,
    Query(query): Params,
    headers: HeaderMap,
) -> Response {
    let selection = Selection::default();
    let context = context(&console, &selection, &headers);
    let Some(auth) = &console.auth else {
        return read_only(&context);
    };
    let next = safe_next(query.get("next").map(String::as_str));
    page(
        StatusCode::OK,
        views::signin(&context, &auth.form_token(), next, false),
    )
}

async fn signin(
    State(console): State<Shared>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let selection = Selection::default();
    let context = context(&console, &selection, &headers);
    let Some(auth) = &console.auth else {
        return read_only(&context);
    };
    let next = safe_next(form.get("next").map(String::as_str)).to_owned();
    if !auth.take_form_token(form.get("csrf_token").map(String::as_str)) {
        return page(
            StatusCode::FORBIDDEN,
            views::signin(&context, &auth.form_token(), &next, false),
        );
    }
    let token = form.get("token").map(String::as_str).unwrap_or_default();
    if !auth.is_token(token) {
        warn!("Console sign-in refused: wrong token.");
        tokio::time::sleep(WRONG_TOKEN_DELAY).await;
        return page(
            StatusCode::UNAUTHORIZED,
            views::signin(&context, &auth.form_token(), &next, true),
        );
    }
    info!("Console sign-in.");
    see_other(&next, Some(session_cookie(&auth.start_session())))
}

async fn signout(State(console): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(auth) = &console.auth {
        auth.end_session(&headers);
    }
    see_other("/", Some(cleared_cookie()))
}

/// The selection of an action: the link's filters, and the group when it names one.
fn action_filter(
    console: &Console,
    query: &BTreeMap<String, String>,
) -> Result<crate::dlq::filter::Filter, String> {
    let selection = Selection::from_query(query);
    let mut filter = selection.filter(console.cache.base(), OffsetDateTime::now_utc())?;
    if let Some(group) = query.get("group").filter(|group| !group.trim().is_empty()) {
        let group = parse_group_id(group)?;
        if filter.group.as_ref().is_some_and(|fixed| *fixed != group) {
            return Err(format!(
                "this console shows only group {} (its --group)",
                filter.group.as_deref().unwrap_or_default()
            ));
        }
        filter.group = Some(group);
    }
    Ok(filter)
}

async fn confirm(
    State(console): State<Shared>,
    Path(action): Path<String>,
    Query(query): Params,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let selection = Selection::from_query(&query);
    let context = context(&console, &selection, &headers);
    let Some(auth) = &console.auth else {
        return read_only(&context);
    };
    let Some(action) = Action::parse(&action) else {
        return no_such_action(&context);
    };
    if context.access != Access::SignedIn {
        let next = uri
            .path_and_query()
            .map_or("/", |path| path.as_str())
            .to_owned();
        return page(
            StatusCode::UNAUTHORIZED,
            views::signin(&context, &auth.form_token(), &next, false),
        );
    }
    let filter = match action_filter(&console, &query) {
        Ok(filter) => filter,
        Err(bad) => {
            return page(
                StatusCode::BAD_REQUEST,
                views::error_page(&context, "This link's selection is wrong", &bad),
            );
        }
    };
    let back = match &filter.group {
        Some(group) => format!("/groups/{group}{}", selection.suffix()),
        None => format!("/{}", selection.suffix()),
    };
    match actions::prepare(
        &console.cache,
        action,
        filter,
        &console.archive_dir,
        back,
        &console.shutdown,
    )
    .await
    {
        Ok(plan) => {
            let markup = views::confirm(&context, &plan);
            console.plans.keep(plan);
            page(StatusCode::OK, markup)
        }
        Err(error) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            views::error_page(&context, "Cannot read the dead-letter queue", &error),
        ),
    }
}

async fn act(
    State(console): State<Shared>,
    Path(action): Path<String>,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let selection = Selection::default();
    let context = context(&console, &selection, &headers);
    if console.auth.is_none() {
        return read_only(&context);
    }
    let Some(action) = Action::parse(&action) else {
        return no_such_action(&context);
    };
    // The guard let no POST without the token through; this handler does not rely on it alone.
    if context.access != Access::SignedIn {
        return plain(StatusCode::UNAUTHORIZED, SIGN_IN_FIRST);
    }
    let plan_id = form.get("plan").map(String::as_str).unwrap_or_default();
    let csrf = form.get("csrf_token").map(String::as_str);
    let plan = match console.plans.take(action, plan_id, csrf) {
        Ok(plan) => plan,
        Err(PlanRefused::Csrf) => {
            warn!(
                action = action.name(),
                "Console action refused: missing or wrong CSRF token."
            );
            return page(
                StatusCode::FORBIDDEN,
                views::error_page(
                    &context,
                    "Refused: this form's CSRF token is missing or wrong",
                    "Nothing was moved. Open the confirmation page again and use its button.",
                ),
            );
        }
        Err(PlanRefused::Unknown) => {
            return page(
                StatusCode::CONFLICT,
                views::error_page(
                    &context,
                    "This confirmation was used already, or has expired",
                    "Nothing was moved by this request. Open the confirmation page again to see what is there now.",
                ),
            );
        }
    };
    let done = actions::execute(&console.cache, plan, &console.shutdown).await;
    page(StatusCode::OK, views::done(&context, &done))
}
