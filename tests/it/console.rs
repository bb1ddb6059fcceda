//! End-to-end tests of the dead-letter console, `job-closer dlq serve`: the built binary against the
//! real RabbitMQ (`AMQP_URL`), dead letters in the worker's own format and hostile ones, every route
//! over HTTP, the JSON API held against `dlq stats --json` and `dlq list --json` from the same
//! binary, the buttons' guards and a replay moving exactly what its confirmation showed, and — in a
//! real browser, headless Chromium — the overview, a group page and a message page, whose DOM is
//! read and whose screenshots are saved under `target/console-screenshots/`.
//!
//! Each test owns its queues (tests/common's [`Queues`]) and its console process (killed on drop).

use crate::common;

use common::*;
use job_closer::dead_letter::{self, Failure, Reason};
use lapin::BasicProperties;
use lapin::types::AMQPValue;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Dead letters

/// A dead letter as the worker writes it.
fn dead(queues: &Queues, failure: &Failure) -> BasicProperties {
    let original = BasicProperties::default()
        .with_content_type("application/json".into())
        .with_message_id(uuid::Uuid::new_v4().to_string().into())
        .with_delivery_mode(2);
    dead_letter::properties(&original, &queues.close, failure)
}

fn with_header(properties: BasicProperties, name: &str, value: &str) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    headers.insert(name.into(), AMQPValue::LongString(value.into()));
    properties.with_headers(headers)
}

/// A time as the worker stamps it: RFC 3339, UTC, to the millisecond.
fn rfc3339(at: time::OffsetDateTime) -> String {
    let at = at.replace_millisecond(at.millisecond()).unwrap();
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

fn body(job: &Value) -> Vec<u8> {
    job.to_string().into_bytes()
}

fn untitled(id: &str) -> Vec<u8> {
    let mut job = job(id);
    job.as_object_mut().unwrap().remove("title");
    body(&job)
}

/// What [`seed`] put in the dead-letter queue.
struct Seeded {
    /// The bodies, in queue order.
    bodies: Vec<Vec<u8>>,
}

/// The dead-letter queue most tests start from: contract 403s (7 twice, 9 three times), untitled
/// jobs, a title holding a `<script>`, a header holding HTML, a 1 MiB body, a body that is not
/// UTF-8, and a message published by hand without any header.
async fn seed(queues: &Queues) -> Seeded {
    let mut script = job("XSS-1");
    script["title"] = Value::from("<script>document.title='owned'</script>Night Nurse");
    let huge = {
        let mut job = job("HUGE-1");
        job["description"] = Value::from("x".repeat(1024 * 1024));
        body(&job)
    };
    let c7 = |id: &str| {
        (
            body(&premium_job(id, "urn:li:contract:7")),
            dead(queues, &failure(Reason::Rejected, 403, &contract_403(7))),
        )
    };
    let c9 = |id: &str| {
        (
            body(&premium_job(id, "urn:li:contract:9")),
            dead(queues, &failure(Reason::Rejected, 403, &contract_403(9))),
        )
    };
    let messages = vec![
        (
            untitled("T-1"),
            dead(queues, &failure(Reason::Invalid, 422, TITLE_MISSING)),
        ),
        c7("C7-1"),
        c9("C9-1"),
        (
            untitled("T-2"),
            dead(queues, &failure(Reason::Invalid, 422, TITLE_MISSING)),
        ),
        c9("C9-2"),
        (
            body(&script),
            dead(
                queues,
                &failure(
                    Reason::Rejected,
                    400,
                    "ERROR :: /title :: <b>not</b> allowed",
                ),
            ),
        ),
        (
            body(&job("HTML-1")),
            with_header(
                dead(
                    queues,
                    &failure(Reason::RetriesExhausted, 503, "HTTP 503 with an empty body"),
                ),
                "x-producer-note",
                "<img src=x onerror=\"document.title='owned'\"><script>alert(1)</script>",
            ),
        ),
        c7("C7-2"),
        (
            huge,
            dead(
                queues,
                &failure(Reason::Rejected, 413, "Request entity too large"),
            ),
        ),
        (
            b"caf\xc3\xa9 \xff\xfe not UTF-8 <script>alert(2)</script>".to_vec(),
            dead(
                queues,
                &failure(Reason::Invalid, 422, "ERROR :: /body :: not JSON"),
            ),
        ),
        c9("C9-3"),
        (b"published by hand".to_vec(), BasicProperties::default()),
    ];
    // Each one dead-lettered at its own time, over the last day, so that "newest first" and the
    // chart have something to show; anything dead-lettered later (with the time of now) is newer.
    let start = time::OffsetDateTime::now_utc() - time::Duration::hours(26);
    let messages: Vec<(Vec<u8>, BasicProperties)> = messages
        .into_iter()
        .enumerate()
        .map(|(index, (body, properties))| {
            let at = start + time::Duration::minutes(127 * index as i64);
            let stamped = match properties.headers() {
                Some(_) => with_header(properties, dead_letter::DEAD_LETTERED_AT, &rfc3339(at)),
                None => properties,
            };
            (body, stamped)
        })
        .collect();
    let bodies = messages.iter().map(|(body, _)| body.clone()).collect();
    let channel = job_closer::confirm_channel(&queues.connection)
        .await
        .unwrap();
    publish_all(&channel, &queues.dead, messages).await;
    Seeded { bodies }
}

// ---------------------------------------------------------------------------------------------
// The console and the CLI

/// The environment of a console or a `dlq` command on a test's queues.
fn env_of(queues: &Queues) -> Vec<(String, String)> {
    vec![
        ("AMQP_URL".into(), amqp_url()),
        ("CLOSE_QUEUE".into(), queues.close.clone()),
        ("DEAD_LETTER_QUEUE".into(), queues.dead.clone()),
    ]
}

/// `job-closer dlq <args>` on the queues (warnings only: what it prints is its output).
async fn dlq(queues: &Queues, args: &[&str]) -> Run {
    cli(&["dlq"])
        .args(args)
        .envs(&env_of(queues))
        .within(Duration::from_secs(300))
        .run()
        .await
}

/// A running `job-closer dlq serve`, killed when dropped.
struct Console {
    process: WorkerProcess,
    base: String,
    http: reqwest::Client,
}

impl Console {
    /// Starts a console on a free port; `extra` are more arguments, `env` more settings.
    async fn start(queues: &Queues, extra: &[&str], env: &[(&str, &str)]) -> Console {
        let mut command = cli(&["dlq", "serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .envs(&env_of(queues));
        for (key, value) in env {
            command = command.env(key, value);
        }
        let process = command.spawn();
        let deadline = Instant::now() + Duration::from_secs(30);
        let base = loop {
            let log = process.log_text();
            if let Some(base) = log
                .lines()
                .find_map(|line| line.split("Dead-letter console on ").nth(1))
                .and_then(|rest| rest.split_whitespace().next())
            {
                break base.trim_end_matches('/').to_owned();
            }
            assert!(
                Instant::now() < deadline,
                "the console never said where it listens:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .unwrap();
        Console {
            process,
            base,
            http,
        }
    }

    /// A console with its buttons on: `token` in its token file, archives in the directory
    /// returned beside it.
    async fn with_actions(queues: &Queues, token: &str) -> (Console, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = token_file(dir.path(), token);
        let console = Console::start(
            queues,
            &["--actions", "--archive-dir", dir.path().to_str().unwrap()],
            &[("DLQ_CONSOLE_TOKEN_FILE", path.to_str().unwrap())],
        )
        .await;
        (console, dir)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn get_with(&self, path: &str, headers: HeaderMap) -> Answer {
        let response = self
            .http
            .get(self.url(path))
            .headers(headers)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        Answer::of(response).await
    }

    async fn get(&self, path: &str) -> Answer {
        self.get_with(path, HeaderMap::new()).await
    }

    async fn post(&self, path: &str, headers: HeaderMap, form: &[(&str, &str)]) -> Answer {
        let response = self
            .http
            .post(self.url(path))
            .headers(headers)
            .form(form)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        Answer::of(response).await
    }

    /// Presses a confirmation page's button: POSTs its plan and CSRF token to `path`.
    async fn press(&self, confirmation: &Answer, path: &str, headers: HeaderMap) -> Answer {
        let plan = confirmation.field("plan").expect("a plan");
        let csrf = confirmation.field("csrf_token").expect("a CSRF token");
        self.post(path, headers, &[("plan", &plan), ("csrf_token", &csrf)])
            .await
    }

    async fn json(&self, path: &str) -> Value {
        let answer = self.get(path).await;
        assert_eq!(answer.status, 200, "{path}: {}", answer.text);
        assert!(
            answer
                .header("content-type")
                .starts_with("application/json"),
            "{path}: {:?}",
            answer.headers
        );
        serde_json::from_str(&answer.text)
            .unwrap_or_else(|e| panic!("{path}: {e}: {}", answer.text))
    }
}

/// A response, read to its end.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HeaderMap,
    text: String,
}

impl Answer {
    async fn of(response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        Answer {
            status,
            headers,
            text,
        }
    }

    fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    /// The value of a hidden form field (`name="plan" value="..."`).
    fn field(&self, name: &str) -> Option<String> {
        let marker = format!("name=\"{name}\" value=\"");
        let start = self.text.find(&marker)? + marker.len();
        let end = self.text[start..].find('"')? + start;
        Some(self.text[start..end].to_owned())
    }

    /// Every `href` of the page, in order.
    fn links(&self) -> Vec<String> {
        self.text
            .split("href=\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .map(|href| href.replace("&amp;", "&"))
            .collect()
    }

    fn assert_secure(&self, what: &str) {
        assert_eq!(
            self.header("content-security-policy"),
            "default-src 'self'",
            "{what}: {:?}",
            self.headers
        );
        assert_eq!(self.header("x-content-type-options"), "nosniff", "{what}");
        assert_eq!(self.header("x-frame-options"), "DENY", "{what}");
    }
}

fn bearer(token: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    headers
}

fn cookie(value: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("cookie", HeaderValue::from_str(value).unwrap());
    headers
}

/// The stats line of a group, by its message.
fn group_of<'v>(groups: &'v [Value], message_part: &str) -> &'v Value {
    groups
        .iter()
        .find(|group| {
            group["message"]
                .as_str()
                .is_some_and(|m| m.contains(message_part))
        })
        .unwrap_or_else(|| panic!("no group with {message_part:?} in {groups:#?}"))
}

/// The bodies left in the dead-letter queue, in order (taken out).
async fn dead_bodies(queues: &Queues) -> Vec<Vec<u8>> {
    let drained = queues.drain(&queues.dead).await;
    drained.into_iter().map(|message| message.body).collect()
}

fn external_ids(records: &[Value]) -> Vec<String> {
    records
        .iter()
        .filter_map(|record| {
            record["body"]["externalJobPostingId"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The routes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_shows_what_the_cli_shows_and_leaves_the_queue_as_it_was() {
    let queues = Queues::declared("console").await;
    let seeded = seed(&queues).await;
    // The CLI first, alone on the queue: what the console must show.
    let stats = dlq(&queues, &["stats", "--json"]).await.ok().json_lines();
    let c9 = group_of(&stats, "urn:li:contract:9")["group"]
        .as_str()
        .unwrap()
        .to_owned();
    let listed = dlq(&queues, &["list", "--json", "--group", &c9])
        .await
        .ok()
        .json_lines();
    let invalid = dlq(&queues, &["stats", "--json", "--reason", "invalid"])
        .await
        .ok()
        .json_lines();
    let since = dlq(
        &queues,
        &["stats", "--json", "--contract", "urn:li:contract:7"],
    )
    .await
    .ok()
    .json_lines();

    let console = Console::start(&queues, &[], &[]).await;
    let api = console.json("/api/groups").await;
    assert_eq!(
        api["groups"].as_array().unwrap(),
        &stats,
        "the API is stats --json"
    );
    assert_eq!(api["selected"], seeded.bodies.len());
    let messages = console.json(&format!("/api/groups/{c9}/messages")).await;
    assert_eq!(
        messages["messages"].as_array().unwrap(),
        &listed,
        "the API is list --json"
    );
    assert_eq!(messages["total"], 3);
    assert_eq!(
        console.json("/api/groups?reason=invalid").await["groups"]
            .as_array()
            .unwrap(),
        &invalid
    );
    assert_eq!(
        console
            .json("/api/groups?contract=urn%3Ali%3Acontract%3A7")
            .await["groups"]
            .as_array()
            .unwrap(),
        &since
    );
    let paged = console
        .json(&format!("/api/groups/{c9}/messages?offset=1&limit=1"))
        .await;
    assert_eq!(paged["messages"].as_array().unwrap(), &listed[1..2]);
    assert_eq!(paged["next"], 2);

    let overview = console.get("/").await;
    assert_eq!(overview.status, 200, "{}", overview.text);
    overview.assert_secure("/");
    assert!(overview.header("content-type").starts_with("text/html"));
    for group in &stats {
        let id = group["group"].as_str().unwrap();
        assert!(
            overview.text.contains(&format!("/groups/{id}")),
            "{id} on the overview"
        );
    }
    assert!(
        overview.text.contains("<svg"),
        "the chart is server-rendered SVG"
    );
    assert!(overview.text.contains("urn:li:contract:9"));
    assert!(!overview.text.contains("<script"), "no script on any page");
    // Newest first: the 503 (7th) is newer than the untitled ones (1st, 4th).
    let position = |needle: &str| {
        overview
            .text
            .find(needle)
            .unwrap_or_else(|| panic!("{needle}"))
    };
    assert!(
        position("HTTP {n} with an empty body") < position("ERROR :: /title :: field is required")
    );

    let filtered = console.get("/?contract=urn%3Ali%3Acontract%3A9").await;
    assert!(filtered.text.contains(&format!("/groups/{c9}")));
    assert!(
        !filtered.text.contains("urn:li:contract:7"),
        "only contract 9 is selected"
    );
    let bad = console.get("/?since=yesterday").await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    bad.assert_secure("a 400");

    let group_page = console.get(&format!("/groups/{c9}")).await;
    assert_eq!(group_page.status, 200);
    for id in ["C9-1", "C9-2", "C9-3"] {
        assert!(group_page.text.contains(id), "{id}");
    }
    let message_link = group_page
        .links()
        .into_iter()
        .find(|link| link.starts_with("/messages/"))
        .expect("each row links to its message page");
    let message = console.get(&message_link).await;
    assert_eq!(message.status, 200, "{}", message.text);
    assert!(message.text.contains("C9-1"));
    assert!(
        message.text.contains("x-error-status")
            && message.text.contains("HTTP 403: LinkedIn refused")
    );
    assert!(message.text.contains("message_id"), "the properties");
    assert!(message.text.contains(&format!("job-closer dlq replay --dead-letter-queue {} --close-queue {} --group {c9} --id C9-1 --since ", queues.dead, queues.close)), "{}", message.text);
    assert!(
        message
            .text
            .contains("&quot;externalJobPostingId&quot;: &quot;C9-1&quot;"),
        "pretty-printed"
    );
    let record = console
        .json(&message_link.replace("/messages/", "/api/messages/"))
        .await;
    assert_eq!(
        record, listed[0],
        "a message's record is its list --json line"
    );
    assert_eq!(console.get("/messages/0123456789abcdef").await.status, 404);
    assert_eq!(
        console.get("/api/messages/0123456789abcdef").await.status,
        404
    );
    assert_eq!(console.get("/groups/00000000").await.status, 404);
    assert_eq!(console.get("/groups/not-a-group").await.status, 404);
    let missing = console.get("/no/such/page").await;
    assert_eq!(missing.status, 404);
    missing.assert_secure("a 404");
    let style = console.get("/style.css").await;
    assert!(style.header("content-type").starts_with("text/css"));
    style.assert_secure("the stylesheet");
    let refresh = console.get("/?refresh=1&contract=x").await;
    assert_eq!(refresh.status, 303);
    assert_eq!(refresh.header("location"), "/?contract=x");
    let foreign = {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("rebound.evil.example"));
        console.get_with("/", headers).await
    };
    assert_eq!(foreign.status, 421, "DNS rebinding is refused");

    // SIGTERM stops it, exit 0; the ground truth: every dead letter still there, in order, none twice.
    let mut console = console;
    let status = console.process.terminate(Duration::from_secs(30)).await;
    assert_eq!(status.code(), Some(0), "{}", console.process.log_text());
    let after = dead_bodies(&queues).await;
    assert_eq!(after, seeded.bodies);
    queues.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_pages_come_a_hundred_at_a_time_and_browsing_beside_a_worker_loses_nothing() {
    let queues = Queues::declared("console").await;
    let failure = failure(Reason::Rejected, 404, "job not found");
    let bulk: Vec<(Vec<u8>, BasicProperties)> = (0..250)
        .map(|i| (body(&job(&format!("B-{i:03}"))), dead(&queues, &failure)))
        .collect();
    let mut expected: Vec<Vec<u8>> = bulk.iter().map(|(body, _)| body.clone()).collect();
    let channel = job_closer::confirm_channel(&queues.connection)
        .await
        .unwrap();
    publish_all(&channel, &queues.dead, bulk).await;
    let console = Console::start(&queues, &["--max-age", "0s"], &[]).await;
    let groups = console.json("/api/groups").await;
    let group = groups["groups"][0]["group"].as_str().unwrap().to_owned();

    // A stand-in worker dead-letters more while the pages are read (each page walks again).
    let late_channel = job_closer::confirm_channel(&queues.connection)
        .await
        .unwrap();
    let dead_queue = queues.dead.clone();
    let late_failure = dead(&queues, &failure);
    let worker = tokio::spawn(async move {
        let mut late = Vec::new();
        for i in 0..60 {
            let body = body(&job(&format!("LATE-{i:02}")));
            publish_all(
                &late_channel,
                &dead_queue,
                vec![(body.clone(), late_failure.clone())],
            )
            .await;
            late.push(body);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        late
    });
    let first = console.get(&format!("/groups/{group}")).await;
    assert_eq!(first.status, 200, "{}", first.text);
    let rows = |answer: &Answer| answer.text.matches("href=\"/messages/").count() / 2;
    assert_eq!(rows(&first), 100, "100 a page");
    assert!(
        first.text.contains("B-000")
            && first.text.contains("B-099")
            && !first.text.contains("B-100")
    );
    assert!(
        first
            .text
            .contains(&format!("/groups/{group}?offset=100&amp;limit=100")),
        "a next link"
    );
    let third = console.get(&format!("/groups/{group}?offset=200")).await;
    assert!(third.text.contains("B-200") && third.text.contains("B-249"));
    let small = console
        .get(&format!("/groups/{group}?offset=10&limit=5"))
        .await;
    assert_eq!(rows(&small), 5);
    assert!(
        small.text.contains("B-010")
            && small.text.contains("B-014")
            && !small.text.contains("B-015")
    );
    assert_eq!(
        console
            .get(&format!("/groups/{group}?limit=0"))
            .await
            .status,
        400
    );
    for _ in 0..5 {
        assert_eq!(console.get("/").await.status, 200);
    }
    let late = worker.await.unwrap();
    drop(console);
    expected.extend(late);
    let after = dead_bodies(&queues).await;
    assert_eq!(after.len(), expected.len(), "none lost, none doubled");
    assert_eq!(after, expected, "none moved");
    queues.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_started_with_filters_shows_only_what_they_select() {
    let queues = Queues::declared("console").await;
    seed(&queues).await;
    let expected = dlq(
        &queues,
        &["stats", "--json", "--contract", "urn:li:contract:7"],
    )
    .await
    .ok()
    .json_lines();
    let console = Console::start(&queues, &["--contract", "urn:li:contract:7"], &[]).await;
    let api = console.json("/api/groups").await;
    assert_eq!(api["groups"].as_array().unwrap(), &expected);
    assert_eq!(api["selected"], 2);
    let overview = console.get("/").await;
    assert!(
        overview
            .text
            .contains("This console shows only: contract urn:li:contract:7")
    );
    let wider = console.get("/?contract=urn%3Ali%3Acontract%3A9").await;
    assert_eq!(
        wider.status, 400,
        "a link cannot widen the console's own filters"
    );
    assert!(wider.text.contains("--contract"), "{}", wider.text);
    let same = console
        .json("/api/groups?contract=urn%3Ali%3Acontract%3A7&since=2d")
        .await;
    assert_eq!(
        same["groups"].as_array().unwrap(),
        &expected,
        "narrowing is fine"
    );
    drop(console);
    queues.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_dead_letters_show_as_text() {
    let queues = Queues::declared("console").await;
    seed(&queues).await;
    let console = Console::start(&queues, &[], &[]).await;
    let stats = console.json("/api/groups").await;
    let groups = stats["groups"].as_array().unwrap();
    let page_of = |message_part: &str| {
        format!(
            "/groups/{}",
            group_of(groups, message_part)["group"].as_str().unwrap()
        )
    };
    let shared = &console;
    let message_page = |group_page: Answer| async move {
        let link = group_page
            .links()
            .into_iter()
            .find(|link| link.starts_with("/messages/"))
            .unwrap();
        shared.get(&link).await
    };

    let overview = console.get("/").await;
    assert!(
        overview.text.contains("&lt;b&gt;not&lt;/b&gt; allowed"),
        "a message is text"
    );
    let script = message_page(console.get(&page_of("<b>not</b>")).await).await;
    assert!(
        script.text.contains("&lt;script&gt;document.title="),
        "the title shows as text"
    );
    assert!(!script.text.contains("<script"), "{}", script.text);

    let html = message_page(console.get(&page_of("HTTP {n} with an empty body")).await).await;
    assert!(html.text.contains("x-producer-note"));
    assert!(
        html.text.contains("&lt;img src=x onerror="),
        "a header is text"
    );
    assert!(!html.text.contains("<img") && !html.text.contains("<script"));

    let huge = message_page(console.get(&page_of("too large")).await).await;
    assert_eq!(huge.status, 200);
    assert!(huge.text.contains("1.0 MiB"), "the size is shown");
    assert!(
        huge.text.contains("Showing the first 64.0 KiB"),
        "the body is cut"
    );
    assert!(huge.text.len() < 200 * 1024, "{} bytes", huge.text.len());
    assert!(
        huge.text.trim_end().ends_with("</html>"),
        "the page is whole"
    );
    let whole = huge
        .links()
        .into_iter()
        .find(|link| link.starts_with("/api/messages/"))
        .expect("a link to the whole record");
    let record = console.json(&whole).await;
    assert_eq!(
        record["body"]["description"].as_str().map(str::len),
        Some(1024 * 1024)
    );

    let broken = message_page(console.get(&page_of("not JSON")).await).await;
    assert_eq!(broken.status, 200);
    assert!(broken.text.contains("not valid UTF-8"));
    assert!(
        broken
            .text
            .contains("café \u{fffd}\u{fffd} not UTF-8 &lt;script&gt;alert(2)")
    );
    assert!(broken.text.trim_end().ends_with("</html>"));

    let by_hand = message_page(console.get(&page_of("(no failure recorded)")).await).await;
    assert!(by_hand.text.contains("carries no failure record"));
    assert!(by_hand.text.contains("published by hand"));
    queues.cleanup().await;
}

// ---------------------------------------------------------------------------------------------
// The buttons

fn token_file(dir: &Path, token: &str) -> PathBuf {
    let path = dir.join("console-token");
    std::fs::write(&path, format!("{token}\n")).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_are_refused_without_actions_without_the_token_and_without_the_csrf_token() {
    let queues = Queues::declared("console").await;
    let seeded = seed(&queues).await;
    let total = seeded.bodies.len() as u32;
    // --actions without a token file is a configuration error.
    let refused = cli(&["dlq", "serve", "--listen", "127.0.0.1:0", "--actions"])
        .envs(&env_of(&queues))
        .run()
        .await;
    assert_eq!(refused.code, Some(2), "{refused:#?}");
    assert!(
        refused.stderr.contains("DLQ_CONSOLE_TOKEN_FILE"),
        "{}",
        refused.stderr
    );

    let read_only = Console::start(&queues, &[], &[]).await;
    let group = read_only.json("/api/groups").await["groups"][0]["group"]
        .as_str()
        .unwrap()
        .to_owned();
    for path in [
        "/actions/replay",
        "/actions/purge",
        "/signin",
        "/",
        "/groups/x",
    ] {
        let answer = read_only
            .post(path, HeaderMap::new(), &[("group", group.as_str())])
            .await;
        assert_eq!(answer.status, 403, "POST {path}: {}", answer.text);
        answer.assert_secure("a refused POST");
        assert!(answer.text.contains("read-only"), "{}", answer.text);
    }
    let confirm = read_only
        .get(&format!("/actions/replay?group={group}"))
        .await;
    assert_eq!(confirm.status, 403, "no confirmation without --actions");
    assert!(
        !read_only.get("/").await.text.contains("/actions/"),
        "no buttons"
    );
    drop(read_only);

    let token = "console-test-token-7f3a";
    let (console, _dir) = Console::with_actions(&queues, token).await;
    let confirm_path = format!("/actions/replay?group={group}");
    let unsigned = console.get(&confirm_path).await;
    assert_eq!(unsigned.status, 401, "the confirmation needs the token");
    assert!(
        unsigned.text.contains("name=\"token\""),
        "it offers the sign-in form"
    );
    assert_eq!(
        console
            .get_with(&confirm_path, bearer("wrong"))
            .await
            .status,
        401
    );
    let confirmation = console.get_with(&confirm_path, bearer(token)).await;
    assert_eq!(confirmation.status, 200, "{}", confirmation.text);
    let plan = confirmation.field("plan").expect("a plan");
    let csrf = confirmation.field("csrf_token").expect("a CSRF token");
    let post = |headers: HeaderMap, form: Vec<(&'static str, String)>| {
        let console = &console;
        async move {
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            console.post("/actions/replay", headers, &form).await
        }
    };
    let no_token = post(
        HeaderMap::new(),
        vec![("plan", plan.clone()), ("csrf_token", csrf.clone())],
    )
    .await;
    assert_eq!(no_token.status, 401, "{}", no_token.text);
    let wrong_token = post(
        bearer("wrong"),
        vec![("plan", plan.clone()), ("csrf_token", csrf.clone())],
    )
    .await;
    assert_eq!(wrong_token.status, 401);
    let no_csrf = post(bearer(token), vec![("plan", plan.clone())]).await;
    assert_eq!(no_csrf.status, 403, "{}", no_csrf.text);
    let wrong_csrf = post(
        bearer(token),
        vec![("plan", plan.clone()), ("csrf_token", "forged".into())],
    )
    .await;
    assert_eq!(wrong_csrf.status, 403);
    let mut cross = bearer(token);
    cross.insert("origin", HeaderValue::from_static("https://evil.example"));
    let cross_site = post(
        cross,
        vec![("plan", plan.clone()), ("csrf_token", csrf.clone())],
    )
    .await;
    assert_eq!(cross_site.status, 403, "a form from another site");
    assert_eq!(queues.depth(&queues.dead).await, total, "nothing moved");
    assert_eq!(queues.depth(&queues.close).await, 0, "nothing moved");
    let log = console.process.log_text();
    assert!(!log.contains(token), "the token is never logged:\n{log}");
    drop(console);
    queues.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_moves_exactly_what_its_confirmation_showed() {
    let queues = Queues::declared("console").await;
    let seeded = seed(&queues).await;
    let before = queues.depth(&queues.dead).await;
    let token = "another-console-token";
    let (console, dir) = Console::with_actions(&queues, token).await;
    let groups = console.json("/api/groups").await;
    let groups = groups["groups"].as_array().unwrap();
    let c9 = group_of(groups, "urn:li:contract:9")["group"]
        .as_str()
        .unwrap()
        .to_owned();

    // Sign in with the form: a strict, HttpOnly cookie.
    let form = console.get("/signin?next=/groups/x").await;
    let form_token = form.field("csrf_token").unwrap();
    let wrong = console
        .post(
            "/signin",
            HeaderMap::new(),
            &[
                ("csrf_token", &form_token),
                ("token", "nope"),
                ("next", "/"),
            ],
        )
        .await;
    assert_eq!(wrong.status, 401);
    let form_token = wrong.field("csrf_token").unwrap();
    let no_csrf = console
        .post("/signin", HeaderMap::new(), &[("token", token)])
        .await;
    assert_eq!(
        no_csrf.status, 403,
        "the sign-in form has its CSRF token too"
    );
    let signed_in = console
        .post(
            "/signin",
            HeaderMap::new(),
            &[
                ("csrf_token", &form_token),
                ("token", token),
                ("next", "/groups/x"),
            ],
        )
        .await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.text);
    assert_eq!(signed_in.header("location"), "/groups/x");
    let set_cookie = signed_in.header("set-cookie");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(
        !set_cookie.contains(token),
        "the cookie is a session, not the token"
    );
    let session = cookie(set_cookie.split(';').next().unwrap());
    let group_page = console
        .get_with(&format!("/groups/{c9}"), session.clone())
        .await;
    for action in ["replay", "export", "purge"] {
        let form = format!("<form method=\"get\" action=\"/actions/{action}\"");
        assert!(group_page.text.contains(&form), "a {action} button");
    }
    assert!(
        group_page
            .text
            .contains(&format!("name=\"group\" value=\"{c9}\"")),
        "the buttons name the group"
    );

    // The confirmation is the dry run, with its bound.
    let confirmation = console
        .get_with(&format!("/actions/replay?group={c9}"), session.clone())
        .await;
    assert_eq!(confirmation.status, 200, "{}", confirmation.text);
    assert!(
        confirmation
            .text
            .contains("Dry run: would move 3 dead letter(s)"),
        "{}",
        confirmation.text
    );
    assert!(confirmation.text.contains("--until "), "the bound");
    let shown: BTreeSet<String> = ["C9-1", "C9-2", "C9-3"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for id in &shown {
        assert!(confirmation.text.contains(id.as_str()), "{id}");
    }
    assert_eq!(
        queues.depth(&queues.close).await,
        0,
        "a dry run moves nothing"
    );
    // Two more of the same group fail after the dry run: the button must not move them.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let channel = job_closer::confirm_channel(&queues.connection)
        .await
        .unwrap();
    let later: Vec<(Vec<u8>, BasicProperties)> = ["C9-LATE-1", "C9-LATE-2"]
        .iter()
        .map(|id| {
            (
                body(&premium_job(id, "urn:li:contract:9")),
                dead(&queues, &failure(Reason::Rejected, 403, &contract_403(9))),
            )
        })
        .collect();
    publish_all(&channel, &queues.dead, later).await;

    let done = console
        .press(&confirmation, "/actions/replay", session.clone())
        .await;
    assert_eq!(done.status, 200, "{}", done.text);
    assert!(
        done.text.contains("Moved 3 dead letter(s)"),
        "{}",
        done.text
    );
    let again = console
        .press(&confirmation, "/actions/replay", session.clone())
        .await;
    assert_eq!(again.status, 409, "a confirmation is used once");

    let moved = queues.drain(&queues.close).await;
    let moved_ids: BTreeSet<String> = moved.iter().filter_map(Drained::external_id).collect();
    assert_eq!(moved_ids, shown, "exactly what the dry run showed");
    for copy in &moved {
        assert_eq!(copy.header_int("x-replay-count"), Some(1));
        assert_eq!(copy.header_str("x-error-status"), None);
    }
    assert_eq!(
        queues.depth(&queues.dead).await,
        before - 3 + 2,
        "the rest stayed"
    );
    let log = console.process.log_text();
    let logged = log
        .lines()
        .find(|line| line.contains("Console replay"))
        .unwrap_or_else(|| panic!("no INFO line for the replay:\n{log}"));
    assert!(
        logged.contains("INFO") && logged.contains("moved=3"),
        "{logged}"
    );
    assert!(!log.contains(token), "the token is never logged");

    // Export (an archive) and purge go through the same two steps.
    let c7 = group_of(groups, "urn:li:contract:7")["group"]
        .as_str()
        .unwrap()
        .to_owned();
    let archive = console
        .get_with(&format!("/actions/export?group={c7}"), bearer(token))
        .await;
    assert!(
        archive.text.contains("Would write 2 record(s)"),
        "{}",
        archive.text
    );
    let archived = console
        .press(&archive, "/actions/export", bearer(token))
        .await;
    assert!(
        archived.text.contains("Exported 2 dead letter(s)"),
        "{}",
        archived.text
    );
    let files: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "jsonl"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let records: Vec<Value> = std::fs::read_to_string(&files[0])
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(external_ids(&records), ["C7-1", "C7-2"]);
    let untitled_group = group_of(groups, "ERROR :: /title :: field is required")["group"]
        .as_str()
        .unwrap()
        .to_owned();
    let purge = console
        .get_with(
            &format!("/actions/purge?group={untitled_group}"),
            bearer(token),
        )
        .await;
    assert!(
        purge.text.contains("Would delete 2 dead letter(s)"),
        "{}",
        purge.text
    );
    let purged = console.press(&purge, "/actions/purge", bearer(token)).await;
    assert!(
        purged.text.contains("Deleted 2 dead letter(s)"),
        "{}",
        purged.text
    );
    let left: Vec<Drained> = queues.drain(&queues.dead).await;
    assert_eq!(left.len(), seeded.bodies.len() - 3 - 2 - 2 + 2);
    let left_ids: Vec<String> = left.iter().filter_map(Drained::external_id).collect();
    assert!(left_ids.contains(&"C9-LATE-1".to_owned()) && !left_ids.contains(&"T-1".to_owned()));
    drop(console);
    queues.cleanup().await;
}

// ---------------------------------------------------------------------------------------------
// In a real browser

/// Headless Chromium (Debian's `chromium`, which `.ci/run` installs).
fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser", "google-chrome"] {
        for dir in std::env::var("PATH").unwrap_or_default().split(':') {
            let path = Path::new(dir).join(name);
            if path.is_file() {
                return path;
            }
        }
    }
    panic!("headless Chromium is not installed: apt-get install -y chromium (.ci/run installs it)");
}

/// Chromium with a fresh profile, loading `url`: `--dump-dom` prints the DOM, or a screenshot is
/// taken at `size` into `png`.
fn browse(url: &str, what: BrowserAsk<'_>) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--headless".to_owned(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--hide-scrollbars".into(),
        format!("--user-data-dir={}", profile.path().display()),
    ];
    match what {
        BrowserAsk::Dom => args.push("--dump-dom".into()),
        BrowserAsk::Screenshot { png, width, height } => {
            args.push(format!("--window-size={width},{height}"));
            args.push(format!("--screenshot={}", png.display()));
        }
    }
    args.push(url.to_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = cli_of(chromium(), &args)
        .env("HOME", profile.path().to_str().unwrap())
        .within(Duration::from_secs(90))
        .run_blocking();
    assert_eq!(run.code, Some(0), "chromium {url}: {run:#?}");
    run.stdout
}

enum BrowserAsk<'a> {
    Dom,
    Screenshot {
        png: &'a Path,
        width: u32,
        height: u32,
    },
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_shows_the_overview_a_group_and_a_message() {
    let queues = Queues::declared("console").await;
    let seeded = seed(&queues).await;
    let console = Console::start(&queues, &[], &[]).await;
    let groups = console.json("/api/groups").await;
    let groups = groups["groups"].as_array().unwrap();
    let c9 = group_of(groups, "urn:li:contract:9")["group"]
        .as_str()
        .unwrap()
        .to_owned();
    let xss = group_of(groups, "<b>not</b>")["group"]
        .as_str()
        .unwrap()
        .to_owned();
    let message_of = |group_page: &Answer| {
        group_page
            .links()
            .into_iter()
            .find(|link| link.starts_with("/messages/"))
            .unwrap()
    };
    let c9_message = message_of(&console.get(&format!("/groups/{c9}")).await);
    let xss_message = message_of(&console.get(&format!("/groups/{xss}")).await);
    let pages = [
        ("overview", "/".to_owned()),
        ("group", format!("/groups/{c9}")),
        ("message", c9_message),
        ("hostile-message", xss_message),
    ];
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let url = |path: &str| console.url(path);
    let (overview, group, message, hostile) = tokio::task::spawn_blocking({
        let urls: Vec<String> = pages.iter().map(|(_, path)| url(path)).collect();
        move || {
            let doms: Vec<String> = urls
                .iter()
                .map(|url| browse(url, BrowserAsk::Dom))
                .collect();
            (
                doms[0].clone(),
                doms[1].clone(),
                doms[2].clone(),
                doms[3].clone(),
            )
        }
    })
    .await
    .unwrap();
    assert!(overview.contains("dead letters in"), "{overview}");
    assert!(
        overview.contains("<svg") && overview.contains("class=\"bar\""),
        "the chart drew"
    );
    assert!(overview.contains(&format!("href=\"/groups/{c9}\"")));
    assert!(overview.contains("urn:li:contract:9"));
    assert!(group.contains("C9-1") && group.contains("C9-3"), "{group}");
    assert!(
        message.contains("C9-1") && message.contains("job-closer dlq replay --dead-letter-queue")
    );
    assert!(message.contains("x-error-reason"));
    // The title's script did not run (it would have renamed the page) and shows as text.
    assert!(
        hostile.contains("&lt;script&gt;document.title='owned'&lt;/script&gt;Night Nurse"),
        "{hostile}"
    );
    assert!(
        !hostile.contains("<title>owned</title>"),
        "the dead letter's script ran"
    );
    assert!(!hostile.contains("<script"), "no script element in the DOM");

    let mut saved = Vec::new();
    for (name, path) in &pages {
        for (width, height, form) in [(1280, 900, "laptop"), (390, 844, "phone")] {
            let png = shots.join(format!("{name}-{form}.png"));
            let _ = std::fs::remove_file(&png);
            let page_url = url(path);
            let target = png.clone();
            tokio::task::spawn_blocking(move || {
                browse(
                    &page_url,
                    BrowserAsk::Screenshot {
                        png: &target,
                        width,
                        height,
                    },
                )
            })
            .await
            .unwrap();
            let size = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
            assert!(size > 10_000, "{} is {size} bytes", png.display());
            saved.push(png);
        }
    }
    for png in &saved {
        println!("screenshot: {}", png.display());
    }
    drop(console);
    let after = dead_bodies(&queues).await;
    assert_eq!(after, seeded.bodies, "browsing moved nothing");
    queues.cleanup().await;
}

// ---------------------------------------------------------------------------------------------
// A big queue

/// The scale: 100,000 dead letters in 40 groups. Prints how long the first walk takes, and
/// then the overview and a group page answered from it (figures, not assertions: the machine is
/// shared). `cargo test --release --test it console:: -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "seeds 100,000 messages; run on demand"]
async fn a_hundred_thousand_dead_letters() {
    const N: usize = 100_000;
    let queues = Queues::declared("console").await;
    let channel = job_closer::confirm_channel(&queues.connection)
        .await
        .unwrap();
    let failures: Vec<BasicProperties> = (0..40)
        .map(|g| dead(&queues, &failure(Reason::Rejected, 403, &contract_403(g))))
        .collect();
    for chunk in 0..N / 10_000 {
        let messages: Vec<(Vec<u8>, BasicProperties)> = (chunk * 10_000..(chunk + 1) * 10_000)
            .map(|i| (body(&job(&format!("BIG-{i}"))), failures[i % 40].clone()))
            .collect();
        publish_all(&channel, &queues.dead, messages).await;
    }
    assert_eq!(queues.depth(&queues.dead).await, N as u32);
    let timed = |started: Instant| started.elapsed().as_secs_f64();
    // The CLI's own walk beside it, in the same run: the ratio is the figure.
    let started = Instant::now();
    let stats = dlq(&queues, &["stats", "--json"]).await.ok();
    let cli_stats = timed(started);
    assert_eq!(stats.json_lines().len(), 40);
    let console = Console::start(&queues, &["--max-age", "10m"], &[]).await;
    let started = Instant::now();
    let groups = console.json("/api/groups").await;
    let cold = timed(started);
    assert_eq!(groups["selected"], N);
    let group = groups["groups"][0]["group"].as_str().unwrap().to_owned();
    let started = Instant::now();
    let overview = console.get("/").await;
    let warm_overview = timed(started);
    assert!(
        overview.text.contains("100,000 dead letters in 40 groups"),
        "{}",
        &overview.text[..2000.min(overview.text.len())]
    );
    let started = Instant::now();
    let group_page = console.get(&format!("/groups/{group}?offset=2400")).await;
    let warm_group = timed(started);
    assert_eq!(group_page.status, 200);
    let link = group_page
        .links()
        .into_iter()
        .find(|l| l.starts_with("/messages/"))
        .unwrap();
    let started = Instant::now();
    let message = console.get(&link).await;
    let warm_message = timed(started);
    assert_eq!(message.status, 200);
    // Read again: the overview shows the walk it has, saying so, while the queue is read anew.
    assert_eq!(console.get("/?refresh=1").await.status, 303);
    let started = Instant::now();
    let stale = console.get("/").await;
    let stale_overview = timed(started);
    assert!(
        stale.text.contains("Reading the queue again"),
        "a stale page says so"
    );
    println!(
        "100,000 dead letters: dlq stats {cli_stats:.1} s; the console's first walk (GET /api/groups) {cold:.1} s; then from the cache: overview {:.0} ms, group page {:.0} ms, message page {:.0} ms; overview while reading again {:.0} ms",
        warm_overview * 1000.0,
        warm_group * 1000.0,
        warm_message * 1000.0,
        stale_overview * 1000.0
    );
    let rss = std::fs::read_to_string(format!("/proc/{}/status", console.process.child.id()))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        });
    println!("console peak RSS: {}", rss.unwrap_or_else(|| "?".into()));
    drop(console);
    assert_eq!(
        queues.depth(&queues.dead).await,
        N as u32,
        "browsing moved nothing"
    );
    queues.cleanup().await;
}
