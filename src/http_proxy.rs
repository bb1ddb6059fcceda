//! Which HTTP proxy a request goes through: `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` and
//! `NO_PROXY` as corporate hosts set them machine-wide, except that loopback never goes through a
//! proxy.
//!
//! reqwest honours those variables by itself, but for every URL, 127.0.0.1 included: with a
//! machine-wide `HTTP_PROXY`, `job-closer healthcheck` against `127.0.0.1:9464` and the in-process
//! sandbox would be answered by the proxy (a 502, or worse, the proxy's idea of localhost). So every
//! client is built with reqwest's own proxy detection off and these rules as a custom proxy: one
//! decision, [`ProxyRules::proxy_for`], used for the requests and for what `check` prints.
//!
//! Loopback is `localhost` (and `*.localhost`), `127.0.0.0/8` and `::1`. `NO_PROXY` takes host names
//! (matching the host and its subdomains; a leading `.` or `*.` is ignored), IP addresses, CIDR
//! ranges and `*`. A proxy given without a scheme is `http://`. Credentials in a proxy URL are sent
//! as `Proxy-Authorization: Basic` and are masked wherever the URL is shown.

use std::net::IpAddr;
use url::Url;

/// The proxy settings read from the environment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ProxyRules {
    https: Option<Setting>,
    http: Option<Setting>,
    all: Option<Setting>,
    no_proxy: Vec<String>,
}

/// One proxy variable: which one it was, and the proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Setting {
    name: &'static str,
    proxy: ProxyUrl,
}

/// A proxy URL; `Debug` and `Display` mask its password.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ProxyUrl(pub(crate) Url);

impl std::fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", masked(&self.0))
    }
}

impl std::fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&masked(&self.0))
    }
}

/// The proxy for one target, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// Through this proxy, chosen by this variable.
    Proxy {
        proxy: ProxyUrl,
        setting: &'static str,
    },
    /// Direct, because the target is loopback.
    Loopback,
    /// Direct, because `NO_PROXY` matches it.
    NoProxy,
    /// Direct: no proxy variable applies.
    Direct,
}

impl ProxyRules {
    /// From the process environment; lower-case names win over upper-case ones, as in curl.
    pub(crate) fn from_env() -> ProxyRules {
        ProxyRules::from_lookup(|name| std::env::var(name).ok())
    }

    /// From any variable lookup (tests give their own).
    pub(crate) fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> ProxyRules {
        let read = |lower: &'static str, upper: &'static str| {
            [lower, upper].into_iter().find_map(|name| {
                let value = lookup(name)?;
                let value = value.trim();
                if value.is_empty() {
                    return None;
                }
                let with_scheme = if value.contains("://") {
                    value.to_owned()
                } else {
                    format!("http://{value}")
                };
                Url::parse(&with_scheme).ok().map(|proxy| Setting {
                    name: upper,
                    proxy: ProxyUrl(proxy),
                })
            })
        };
        let no_proxy = ["no_proxy", "NO_PROXY"]
            .into_iter()
            .find_map(|name| lookup(name).filter(|value| !value.trim().is_empty()))
            .map(|value| {
                value
                    .split(',')
                    .map(|entry| entry.trim().to_ascii_lowercase())
                    .filter(|entry| !entry.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        ProxyRules {
            https: read("https_proxy", "HTTPS_PROXY"),
            http: read("http_proxy", "HTTP_PROXY"),
            all: read("all_proxy", "ALL_PROXY"),
            no_proxy,
        }
    }

    /// Where a request to `target` goes.
    pub(crate) fn route(&self, target: &Url) -> Route {
        if is_loopback(target) {
            return Route::Loopback;
        }
        let setting = match target.scheme() {
            "https" => self.https.as_ref().or(self.all.as_ref()),
            "http" => self.http.as_ref().or(self.all.as_ref()),
            _ => None,
        };
        let Some(setting) = setting else {
            return Route::Direct;
        };
        if self.excluded(target) {
            return Route::NoProxy;
        }
        Route::Proxy {
            proxy: setting.proxy.clone(),
            setting: setting.name,
        }
    }

    /// The proxy for `target`, or `None` to connect directly.
    pub(crate) fn proxy_for(&self, target: &Url) -> Option<Url> {
        match self.route(target) {
            Route::Proxy { proxy, .. } => Some(proxy.0),
            _ => None,
        }
    }

    /// Installs these rules in a client builder, replacing reqwest's own environment proxies.
    pub(crate) fn apply(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        let rules = self.clone();
        builder
            .no_proxy()
            .proxy(reqwest::Proxy::custom(move |target| {
                rules.proxy_for(target)
            }))
    }

    /// `NO_PROXY` as given, for `check`.
    pub(crate) fn no_proxy(&self) -> Option<String> {
        (!self.no_proxy.is_empty()).then(|| self.no_proxy.join(","))
    }

    fn excluded(&self, target: &Url) -> bool {
        let Some(host) = target.host_str() else {
            return false;
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let address: Option<IpAddr> = host.parse().ok();
        self.no_proxy.iter().any(|entry| {
            if entry == "*" {
                return true;
            }
            if let Some(address) = address {
                return ip_matches(entry, address);
            }
            let domain = entry.trim_start_matches("*.").trim_start_matches('.');
            // `host:port` entries match the host.
            let domain = domain.split(':').next().unwrap_or(domain);
            !domain.is_empty() && (host == domain || host.ends_with(&format!(".{domain}")))
        })
    }
}

/// An IP address entry (`10.1.2.3`) or a CIDR range (`10.0.0.0/8`, `fd00::/8`).
fn ip_matches(entry: &str, address: IpAddr) -> bool {
    let (network, bits) = match entry.split_once('/') {
        Some((network, bits)) => match bits.parse::<u32>() {
            Ok(bits) => (network, Some(bits)),
            Err(_) => return false,
        },
        None => (entry, None),
    };
    let Ok(network) = network
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
    else {
        return false;
    };
    match (network, address) {
        (IpAddr::V4(network), IpAddr::V4(address)) => {
            let bits = bits.unwrap_or(32).min(32);
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(network) & mask == u32::from(address) & mask
        }
        (IpAddr::V6(network), IpAddr::V6(address)) => {
            let bits = bits.unwrap_or(128).min(128);
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(network) & mask == u128::from(address) & mask
        }
        _ => false,
    }
}

/// `localhost`, `*.localhost`, `127.0.0.0/8` and `::1` (also IPv4-mapped): never proxied.
pub(crate) fn is_loopback(target: &Url) -> bool {
    match target.host() {
        Some(url::Host::Domain(domain)) => {
            let domain = domain.trim_end_matches('.').to_ascii_lowercase();
            domain == "localhost" || domain.ends_with(".localhost")
        }
        Some(url::Host::Ipv4(address)) => address.is_loopback(),
        Some(url::Host::Ipv6(address)) => {
            address.is_loopback() || address.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        None => false,
    }
}

/// A proxy URL with its password masked (and a user name kept, to tell accounts apart).
pub(crate) fn masked(proxy: &Url) -> String {
    let mut shown = proxy.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}

/// What `check` prints for one target: the route in words, credentials masked.
pub(crate) fn describe_route(route: &Route) -> String {
    match route {
        Route::Proxy { proxy, setting } => format!("through {proxy} ({setting})"),
        Route::Loopback => "direct (loopback is never proxied)".into(),
        Route::NoProxy => "direct (NO_PROXY)".into(),
        Route::Direct => "direct (no HTTPS_PROXY/HTTP_PROXY/ALL_PROXY set)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules for an environment holding just `vars`.
    fn rules_from(vars: &[(&str, &str)]) -> ProxyRules {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ProxyRules::from_lookup(move |name| {
            vars.iter()
                .find(|(key, _)| key == name)
                .map(|(_, value)| value.clone())
        })
    }

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    /// Asserts that a request to `target` goes through `proxy`.
    fn assert_proxied(rules: &ProxyRules, target: &str, proxy: &str) {
        assert_eq!(rules.proxy_for(&url(target)), Some(url(proxy)), "{target}");
    }

    #[test]
    fn loopback_never_goes_through_a_proxy() {
        let rules = rules_from(&[
            ("HTTP_PROXY", "http://proxy.corp:3128"),
            ("HTTPS_PROXY", "http://proxy.corp:3128"),
            ("ALL_PROXY", "http://proxy.corp:3128"),
        ]);
        for target in [
            "http://127.0.0.1:9464/readyz",
            "http://127.1.2.3/",
            "http://localhost:8080/v2/simpleJobPostings",
            "https://api.localhost/",
            "http://[::1]:9464/",
            "http://[::ffff:127.0.0.1]/",
        ] {
            assert_eq!(rules.route(&url(target)), Route::Loopback, "{target}");
        }
        assert_proxied(
            &rules,
            "https://api.linkedin.com/v2/simpleJobPostings",
            "http://proxy.corp:3128",
        );
    }

    #[test]
    fn each_scheme_takes_its_own_variable_then_all_proxy() {
        let rules = rules_from(&[
            ("HTTPS_PROXY", "secure:8443"),
            ("ALL_PROXY", "http://all:1"),
        ]);
        assert_eq!(
            rules.route(&url("https://api.linkedin.com/")),
            Route::Proxy {
                proxy: ProxyUrl(url("http://secure:8443")),
                setting: "HTTPS_PROXY"
            }
        );
        assert_proxied(&rules, "http://linkedin.test/", "http://all:1");
        assert_eq!(
            rules_from(&[]).route(&url("https://api.linkedin.com/")),
            Route::Direct
        );
        let lower_wins = rules_from(&[
            ("https_proxy", "http://lower:1"),
            ("HTTPS_PROXY", "http://upper:1"),
        ]);
        assert_proxied(&lower_wins, "https://x.example/", "http://lower:1");
    }

    #[test]
    fn no_proxy_matches_domains_addresses_and_ranges() {
        let rules = rules_from(&[
            ("HTTPS_PROXY", "http://proxy:3128"),
            ("HTTP_PROXY", "http://proxy:3128"),
            (
                "NO_PROXY",
                " .corp.example, linkedin.test:80,10.0.0.0/8, 192.168.1.7,fd00::/8",
            ),
        ]);
        for direct in [
            "https://a.corp.example/",
            "https://corp.example/",
            "http://linkedin.test/",
            "http://10.200.3.4/",
            "http://192.168.1.7/",
            "http://[fd12::1]/",
        ] {
            assert_eq!(rules.route(&url(direct)), Route::NoProxy, "{direct}");
        }
        for proxied in [
            "https://api.linkedin.com/",
            "https://notcorp.example/",
            "http://192.168.1.8/",
            "http://11.0.0.1/",
        ] {
            assert!(rules.proxy_for(&url(proxied)).is_some(), "{proxied}");
        }
        let everything = rules_from(&[("HTTPS_PROXY", "http://p:1"), ("no_proxy", "*")]);
        assert_eq!(
            everything.route(&url("https://api.linkedin.com/")),
            Route::NoProxy
        );
    }

    #[test]
    fn credentials_are_masked_when_shown() {
        let rules = rules_from(&[("HTTPS_PROXY", "http://alice:s3cr3t%40x@proxy:3128")]);
        let route = rules.route(&url("https://api.linkedin.com/"));
        let shown = describe_route(&route);
        assert!(shown.contains("alice:***@proxy:3128"), "{shown}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        let debug = format!("{route:?}{rules:?}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
    }
}
