//! What every request passes and every response carries, decided by small pure functions.
//!
//! - **The headers** ([`SECURITY_HEADERS`]): `Content-Security-Policy: default-src 'self'` (no
//!   script, no inline style, nothing from elsewhere: a `<script>` a dead letter smuggled past the
//!   escaping would still not run), `X-Content-Type-Options: nosniff` (a body is never sniffed into
//!   HTML), `X-Frame-Options: DENY` (no framing, so no clickjacking of the buttons),
//!   `Referrer-Policy: no-referrer` (a link out never carries a selection) and `Cache-Control:
//!   no-store` (dead letters hold personal data; no cache keeps them).
//! - **The host** ([`host_allowed`]): only `localhost`, IP addresses and the names given with
//!   `--allow-host`. A web page elsewhere can point a name of its own at 127.0.0.1 (DNS
//!   rebinding) and read the console as if it were its own site; refusing foreign names stops it.
//! - **Read-only** ([`refused_method`]): without `--actions` every method but GET and HEAD is
//!   refused, whatever the path.
//! - **Signed in**: with `--actions`, every POST but the sign-in form's needs the token (checked
//!   by the router's guard with [`super::auth::Auth::allows`]) before any handler reads its form.
//! - **Cross-site** ([`cross_site`]): a POST another site's page sends is refused before anything
//!   else looks at it, on top of the `SameSite=Strict` cookie and the per-form CSRF token.

use axum::http::header::{HOST, ORIGIN};
use axum::http::{HeaderMap, Method};
use std::net::IpAddr;

/// The headers on every response.
pub(crate) const SECURITY_HEADERS: [(&str, &str); 5] = [
    ("content-security-policy", "default-src 'self'"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-store"),
];

/// The host part of a `Host` header (`[::1]:8025` → `::1`, `localhost:8025` → `localhost`).
fn host_name(host: &str) -> &str {
    let host = host.trim();
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Whether a request's `Host` names this console: localhost, an IP address, or an allowed name.
/// A request without one (HTTP/1.0) is let through: no browser sends such a request.
pub(crate) fn host_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(host) = headers.get(HOST) else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let name = host_name(host).trim_end_matches('.');
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok()
        || allowed
            .iter()
            .any(|allowed| allowed.trim().eq_ignore_ascii_case(name))
}

/// Whether a read-only console refuses this method.
pub(crate) fn refused_method(method: &Method, actions: bool) -> bool {
    !actions && method != Method::GET && method != Method::HEAD
}

/// Whether a request comes from another site's page: its `Origin` names another host than its
/// `Host`, or the browser says so (`Sec-Fetch-Site: cross-site`).
pub(crate) fn cross_site(headers: &HeaderMap) -> bool {
    if headers
        .get("sec-fetch-site")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|site| site.eq_ignore_ascii_case("cross-site"))
    {
        return true;
    }
    let Some(origin) = headers.get(ORIGIN).and_then(|value| value.to_str().ok()) else {
        return false;
    };
    let origin_host = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    let host = headers
        .get(HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default();
    origin == "null" || !origin_host.eq_ignore_ascii_case(host.trim())
}

/// Where a sign-in goes next: a path of this console, or the overview.
pub(crate) fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(path) if path.starts_with('/') && !path.starts_with("//") && !path.contains('\\') => {
            path
        }
        _ => "/",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        headers
    }

    #[test]
    fn only_local_names_addresses_and_allowed_names_reach_the_console() {
        let allowed = vec!["dlq.example.com".to_owned()];
        for host in [
            "127.0.0.1:8025",
            "localhost:8025",
            "LOCALHOST",
            "[::1]:8025",
            "10.0.0.5",
            "dlq.example.com",
            "DLQ.example.com.:443",
        ] {
            assert!(host_allowed(&with(&[("host", host)]), &allowed), "{host}");
        }
        for host in [
            "evil.example",
            "127.0.0.1.evil.example:8025",
            "localhost.evil",
        ] {
            assert!(!host_allowed(&with(&[("host", host)]), &allowed), "{host}");
        }
        assert!(host_allowed(&HeaderMap::new(), &[]));
    }

    #[test]
    fn a_read_only_console_takes_only_gets() {
        assert!(!refused_method(&Method::GET, false));
        assert!(!refused_method(&Method::HEAD, false));
        assert!(refused_method(&Method::POST, false));
        assert!(refused_method(&Method::DELETE, false));
        assert!(!refused_method(&Method::POST, true));
    }

    #[test]
    fn posts_from_other_sites_are_recognised() {
        let host = ("host", "127.0.0.1:8025");
        assert!(!cross_site(&with(&[host])));
        assert!(!cross_site(&with(&[
            host,
            ("origin", "http://127.0.0.1:8025")
        ])));
        assert!(cross_site(&with(&[
            host,
            ("origin", "https://evil.example")
        ])));
        assert!(cross_site(&with(&[host, ("origin", "null")])));
        assert!(cross_site(&with(&[host, ("sec-fetch-site", "cross-site")])));
        assert!(!cross_site(&with(&[
            host,
            ("sec-fetch-site", "same-origin")
        ])));
    }

    #[test]
    fn a_sign_in_goes_back_only_to_a_page_of_the_console() {
        assert_eq!(
            safe_next(Some("/groups/3925736f?since=1h")),
            "/groups/3925736f?since=1h"
        );
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/\\evil",
            "groups",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }
}
