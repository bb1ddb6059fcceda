//! Who may press a button: the token from `DLQ_CONSOLE_TOKEN_FILE`, given once on the sign-in form
//! (which sets a session cookie) or on every request as `Authorization: Bearer TOKEN`; and the
//! one-time form tokens that make every action form a form this console served (CSRF).
//!
//! The token is kept only as its SHA-256 digest and a candidate is compared digest to digest in
//! constant time ([`subtle`]), so neither its bytes nor its length can be timed out of the
//! console. It never reaches a log, a page or a cookie: the cookie holds a random session id
//! (`HttpOnly`, so no script can read it; `SameSite=Strict`, so no other site's page can send it;
//! `Path=/`), valid for [`SESSION_LIFETIME`] and forgotten on sign-out or restart. Not `Secure`:
//! the console speaks plain HTTP, on loopback by default; put a TLS proxy in front of it for
//! anything else. Rejected: the token itself in the cookie (a cookie store is not a secret store),
//! and HTTP Basic (browsers keep sending it and offer no sign-out).
//!
//! Form tokens are random, single-use and short-lived ([`FORM_LIFETIME`]); the store is bounded,
//! the oldest going first. A form token only proves the form came from here; the session or bearer
//! token still has to come with it.

use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, COOKIE};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// The session cookie's name.
pub(crate) const COOKIE_NAME: &str = "job_closer_console";
/// How long a sign-in lasts.
pub(crate) const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// How long a served form (sign-in, an action's confirmation) may wait before it is sent.
pub(crate) const FORM_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Sessions and form tokens kept at most, each.
const MAX_KEPT: usize = 1024;

/// A random, URL-safe token of 256 bits.
pub(crate) fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

fn digest(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// Whether two secrets are the same, in time that depends on neither.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    bool::from(digest(a).ct_eq(&digest(b)))
}

/// The token of `Authorization: Bearer TOKEN`.
pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// The value of the cookie `name` among a request's `Cookie` headers.
pub(crate) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.trim().split_once('=')?;
            (key == name).then_some(value)
        })
}

/// The `Set-Cookie` value that signs a browser in.
pub(crate) fn session_cookie(session: &str) -> String {
    format!(
        "{COOKIE_NAME}={session}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        SESSION_LIFETIME.as_secs()
    )
}

/// The `Set-Cookie` value that signs it out.
pub(crate) fn cleared_cookie() -> String {
    format!("{COOKIE_NAME}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Random tokens with an expiry, bounded in number.
#[derive(Default)]
struct Tokens {
    by_token: HashMap<String, Instant>,
}

impl Tokens {
    fn insert(&mut self, token: String, expires: Instant) {
        let now = Instant::now();
        self.by_token.retain(|_, expiry| *expiry > now);
        if self.by_token.len() >= MAX_KEPT
            && let Some(oldest) = self
                .by_token
                .iter()
                .min_by_key(|(_, expiry)| **expiry)
                .map(|(token, _)| token.clone())
        {
            self.by_token.remove(&oldest);
        }
        self.by_token.insert(token, expires);
    }

    /// Whether `token` is kept and unexpired; `take` removes it (single use).
    fn check(&mut self, token: &str, take: bool) -> bool {
        let now = Instant::now();
        let live = self.by_token.get(token).is_some_and(|expiry| *expiry > now);
        if take || !live {
            self.by_token.remove(token);
        }
        live
    }
}

/// The console's token and what was handed out on its strength.
pub(crate) struct Auth {
    token_digest: [u8; 32],
    sessions: Mutex<Tokens>,
    forms: Mutex<Tokens>,
}

impl Auth {
    pub(crate) fn new(token: &str) -> Auth {
        Auth {
            token_digest: digest(token),
            sessions: Mutex::new(Tokens::default()),
            forms: Mutex::new(Tokens::default()),
        }
    }

    /// Whether `candidate` is the token.
    pub(crate) fn is_token(&self, candidate: &str) -> bool {
        bool::from(digest(candidate).ct_eq(&self.token_digest))
    }

    /// Whether a request carries the token (bearer) or a live session cookie.
    pub(crate) fn allows(&self, headers: &HeaderMap) -> bool {
        if let Some(token) = bearer(headers) {
            return self.is_token(token);
        }
        cookie(headers, COOKIE_NAME)
            .is_some_and(|session| lock(&self.sessions).check(session, false))
    }

    /// A new session (after a sign-in with the token).
    pub(crate) fn start_session(&self) -> String {
        let session = random_token();
        lock(&self.sessions).insert(session.clone(), Instant::now() + SESSION_LIFETIME);
        session
    }

    /// Forgets the session of a request.
    pub(crate) fn end_session(&self, headers: &HeaderMap) {
        if let Some(session) = cookie(headers, COOKIE_NAME) {
            lock(&self.sessions).check(session, true);
        }
    }

    /// A token for one form this console serves.
    pub(crate) fn form_token(&self) -> String {
        let token = random_token();
        lock(&self.forms).insert(token.clone(), Instant::now() + FORM_LIFETIME);
        token
    }

    /// Whether a form came with a token this console served and nobody used yet; uses it up.
    pub(crate) fn take_form_token(&self, token: Option<&str>) -> bool {
        token.is_some_and(|token| lock(&self.forms).check(token, true))
    }
}

/// A lock whose holder cannot have left it half-updated: each update is one map operation.
fn lock(tokens: &Mutex<Tokens>) -> std::sync::MutexGuard<'_, Tokens> {
    tokens
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn the_token_is_checked_as_a_bearer_or_through_a_session() {
        let auth = Auth::new("s3cret-token");
        assert!(auth.is_token("s3cret-token"));
        assert!(
            !auth.is_token("s3cret-toke") && !auth.is_token("") && !auth.is_token("s3cret-token ")
        );
        assert!(auth.allows(&headers(&[("authorization", "Bearer s3cret-token")])));
        assert!(auth.allows(&headers(&[("authorization", "bearer  s3cret-token ")])));
        assert!(!auth.allows(&headers(&[("authorization", "Bearer wrong")])));
        assert!(!auth.allows(&headers(&[("authorization", "Basic s3cret-token")])));
        assert!(!auth.allows(&HeaderMap::new()));
        let session = auth.start_session();
        let cookie = format!("other=1; {COOKIE_NAME}={session}");
        let signed_in = headers(&[("cookie", "theme=dark"), ("cookie", &cookie)]);
        assert!(auth.allows(&signed_in));
        assert!(!auth.allows(&headers(&[("cookie", &format!("{COOKIE_NAME}=forged"))])));
        auth.end_session(&signed_in);
        assert!(!auth.allows(&signed_in), "signed out");
        assert!(same_secret("a", "a") && !same_secret("a", "b"));
    }

    #[test]
    fn the_cookie_is_strict_and_out_of_scripts_reach() {
        let set = session_cookie("abc");
        for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
            assert!(set.contains(attribute), "{set}");
        }
        assert!(cleared_cookie().contains("Max-Age=0"));
    }

    #[test]
    fn form_tokens_are_single_use_and_bounded() {
        let auth = Auth::new("t");
        let token = auth.form_token();
        assert!(!auth.take_form_token(None));
        assert!(!auth.take_form_token(Some("made-up")));
        assert!(auth.take_form_token(Some(&token)));
        assert!(!auth.take_form_token(Some(&token)), "used up");
        let first = auth.form_token();
        for _ in 0..MAX_KEPT {
            auth.form_token();
        }
        assert!(!auth.take_form_token(Some(&first)), "the oldest went first");
        assert_eq!(random_token().len(), 43);
        assert_ne!(random_token(), random_token());
    }
}
