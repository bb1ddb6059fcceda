//! Whether and where traces are exported, from the standard OpenTelemetry environment variables —
//! a pure function of a lookup, so that every rule is a unit test and `check` prints the same
//! decision `run` acts on.
//!
//! Tracing is off unless an OTLP endpoint is set (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, used as
//! given, or `OTEL_EXPORTER_OTLP_ENDPOINT`, to which `/v1/traces` is added, as the specification
//! says), and `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn it off whatever else is
//! set. The settings are read here rather than left to the SDK's own environment handling because
//! the SDK falls back to `localhost:4318` when nothing is set — an exporter nobody asked for — and
//! silently ignores what it does not understand, where a configuration error (exit 2) is what an
//! operator needs: `grpc` is not built in, and a misspelt sampler would otherwise sample
//! everything or nothing.

use percent_encoding::percent_decode_str;
use url::Url;

/// The service name when neither `OTEL_SERVICE_NAME` nor `service.name` in
/// `OTEL_RESOURCE_ATTRIBUTES` says otherwise.
pub(crate) const DEFAULT_SERVICE_NAME: &str = "job-closer";

/// What the environment asks for.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Setting {
    /// Nothing is exported; the reason, for `check`.
    Off(&'static str),
    On(Export),
}

/// Where and how spans are exported.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Export {
    /// The full URL spans are POSTed to (`…/v1/traces`).
    pub(crate) endpoint: Url,
    /// Sent with every export (an API key, usually): never logged or printed.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) service_name: String,
    /// `OTEL_RESOURCE_ATTRIBUTES` but `service.name` (which is [`Export::service_name`]).
    pub(crate) resource: Vec<(String, String)>,
    pub(crate) sampler: Sampler,
}

/// `OTEL_TRACES_SAMPLER` (and its argument, for the ratio samplers).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Sampler {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    /// Follows a sampled parent's decision; roots decide by the inner sampler.
    ParentBased(Root),
}

/// What a parent-based sampler does for a root span.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Root {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
}

impl Sampler {
    /// The specification's name for it, as `check` prints it.
    pub(crate) fn describe(&self) -> String {
        match self {
            Sampler::AlwaysOn => "always_on".into(),
            Sampler::AlwaysOff => "always_off".into(),
            Sampler::Ratio(ratio) => format!("traceidratio {ratio}"),
            Sampler::ParentBased(Root::AlwaysOn) => "parentbased_always_on".into(),
            Sampler::ParentBased(Root::AlwaysOff) => "parentbased_always_off".into(),
            Sampler::ParentBased(Root::Ratio(ratio)) => {
                format!("parentbased_traceidratio {ratio}")
            }
        }
    }
}

/// A tracing setting that cannot be acted on: a configuration error (exit 2).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error(
        "{variable}={value:?}: job-closer exports traces over OTLP/HTTP only; set it to http/protobuf (collectors take it on port 4318)"
    )]
    Protocol {
        variable: &'static str,
        value: String,
    },
    #[error("{variable} is not a usable http(s) URL: {why}")]
    Endpoint { variable: &'static str, why: String },
    #[error(
        "OTEL_TRACES_SAMPLER={0:?} is not one of always_on, always_off, traceidratio, parentbased_always_on, parentbased_always_off, parentbased_traceidratio"
    )]
    Sampler(String),
    #[error("OTEL_TRACES_SAMPLER_ARG={0:?} is not a ratio between 0 and 1")]
    SamplerArg(String),
    #[error("{variable} must be a comma-separated list of key=value pairs; entry {entry} is not")]
    Pairs {
        variable: &'static str,
        entry: usize,
    },
    #[error("OTEL_TRACES_EXPORTER={0:?}: job-closer exports traces with otlp (or none)")]
    Exporter(String),
}

/// Reads the tracing settings through `lookup` (the environment, in production). An empty value
/// counts as unset, as the specification asks.
pub(crate) fn read(lookup: impl Fn(&str) -> Option<String>) -> Result<Setting, SettingsError> {
    let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
    if get("OTEL_SDK_DISABLED").is_some_and(|value| value.trim().eq_ignore_ascii_case("true")) {
        return Ok(Setting::Off("OTEL_SDK_DISABLED=true"));
    }
    match get("OTEL_TRACES_EXPORTER").map(|value| value.trim().to_ascii_lowercase()) {
        Some(exporter) if exporter == "none" => {
            return Ok(Setting::Off("OTEL_TRACES_EXPORTER=none"));
        }
        Some(exporter) if exporter != "otlp" => return Err(SettingsError::Exporter(exporter)),
        _ => {}
    }
    let endpoint = match (
        get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
        get("OTEL_EXPORTER_OTLP_ENDPOINT"),
    ) {
        (Some(traces), _) => parse_endpoint("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &traces, false)?,
        (None, Some(base)) => parse_endpoint("OTEL_EXPORTER_OTLP_ENDPOINT", &base, true)?,
        (None, None) => {
            return Ok(Setting::Off(
                "neither OTEL_EXPORTER_OTLP_ENDPOINT nor OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set",
            ));
        }
    };
    for variable in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(protocol) = get(variable) {
            if protocol.trim() != "http/protobuf" {
                return Err(SettingsError::Protocol {
                    variable,
                    value: protocol,
                });
            }
            // The signal's own setting wins; the general one is not looked at.
            break;
        }
    }
    // The signal's own headers add to (and override) the general ones.
    let mut headers = pairs(
        "OTEL_EXPORTER_OTLP_HEADERS",
        get("OTEL_EXPORTER_OTLP_HEADERS"),
    )?;
    for (key, value) in pairs(
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        get("OTEL_EXPORTER_OTLP_TRACES_HEADERS"),
    )? {
        headers.retain(|(known, _)| !known.eq_ignore_ascii_case(&key));
        headers.push((key, value));
    }
    let mut resource = pairs("OTEL_RESOURCE_ATTRIBUTES", get("OTEL_RESOURCE_ATTRIBUTES"))?;
    let named = resource
        .iter()
        .position(|(key, _)| key == "service.name")
        .map(|at| resource.remove(at).1);
    let service_name = get("OTEL_SERVICE_NAME")
        .map(|name| name.trim().to_owned())
        .or(named)
        .unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned());
    let sampler = sampler(get("OTEL_TRACES_SAMPLER"), get("OTEL_TRACES_SAMPLER_ARG"))?;
    Ok(Setting::On(Export {
        endpoint,
        headers,
        service_name,
        resource,
        sampler,
    }))
}

fn parse_endpoint(variable: &'static str, value: &str, base: bool) -> Result<Url, SettingsError> {
    let invalid = |why: String| SettingsError::Endpoint { variable, why };
    let mut url = Url::parse(value.trim()).map_err(|error| invalid(error.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid(format!("{} is not an http(s) URL", redacted(&url))));
    }
    if base {
        let path = format!("{}/v1/traces", url.path().trim_end_matches('/'));
        url.set_path(&path);
    }
    Ok(url)
}

/// `key=value,key=value` with percent-encoded values (W3C Baggage's format, which the
/// specification uses for headers and resource attributes).
fn pairs(
    variable: &'static str,
    value: Option<String>,
) -> Result<Vec<(String, String)>, SettingsError> {
    let Some(value) = value else {
        return Ok(Vec::new());
    };
    let mut pairs = Vec::new();
    for (index, entry) in value.split(',').enumerate() {
        if entry.trim().is_empty() {
            continue;
        }
        let bad = || SettingsError::Pairs {
            variable,
            entry: index + 1,
        };
        let (key, value) = entry.split_once('=').ok_or_else(bad)?;
        let key = decode(key).ok_or_else(bad)?;
        let value = decode(value).ok_or_else(bad)?;
        if key.is_empty() {
            return Err(bad());
        }
        pairs.push((key, value));
    }
    Ok(pairs)
}

fn decode(text: &str) -> Option<String> {
    percent_decode_str(text.trim())
        .decode_utf8()
        .ok()
        .map(|decoded| decoded.into_owned())
}

fn sampler(name: Option<String>, arg: Option<String>) -> Result<Sampler, SettingsError> {
    let ratio = || match &arg {
        None => Ok(1.0),
        Some(text) => text
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|ratio| (0.0..=1.0).contains(ratio))
            .ok_or_else(|| SettingsError::SamplerArg(text.clone())),
    };
    let name = name.map(|name| name.trim().to_ascii_lowercase());
    Ok(match name.as_deref() {
        None | Some("parentbased_always_on") => Sampler::ParentBased(Root::AlwaysOn),
        Some("parentbased_always_off") => Sampler::ParentBased(Root::AlwaysOff),
        Some("parentbased_traceidratio") => Sampler::ParentBased(Root::Ratio(ratio()?)),
        Some("always_on") => Sampler::AlwaysOn,
        Some("always_off") => Sampler::AlwaysOff,
        Some("traceidratio") => Sampler::Ratio(ratio()?),
        Some(other) => return Err(SettingsError::Sampler(other.to_owned())),
    })
}

/// The endpoint as `check` prints it: no user name or password, no query (either may hold a key).
pub(crate) fn redacted(url: &Url) -> String {
    let mut shown = url.clone();
    // Only fails for URLs that cannot have credentials, which then have none to hide.
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read_from(vars: &[(&str, &str)]) -> Result<Setting, SettingsError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        read(|name| vars.get(name).cloned())
    }

    fn on(vars: &[(&str, &str)]) -> Export {
        match read_from(vars) {
            Ok(Setting::On(export)) => export,
            other => panic!("expected tracing on, got {other:?}"),
        }
    }

    #[test]
    fn nothing_set_is_off_and_says_why() {
        assert!(
            matches!(read_from(&[]), Ok(Setting::Off(why)) if why.contains("OTEL_EXPORTER_OTLP_ENDPOINT"))
        );
        assert!(matches!(
            read_from(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "  ")]),
            Ok(Setting::Off(_))
        ));
    }

    #[test]
    fn the_general_endpoint_gets_the_traces_path_and_the_signal_one_is_taken_as_given() {
        let export = on(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")]);
        assert_eq!(export.endpoint.as_str(), "http://collector:4318/v1/traces");
        let export = on(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otel.example/base/")]);
        assert_eq!(
            export.endpoint.as_str(),
            "https://otel.example/base/v1/traces"
        );
        let export = on(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:9999/custom"),
        ]);
        assert_eq!(export.endpoint.as_str(), "http://c:9999/custom");
    }

    #[test]
    fn disabled_wins_over_an_endpoint() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        assert_eq!(
            read_from(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")]),
            Ok(Setting::Off("OTEL_SDK_DISABLED=true"))
        );
        assert_eq!(
            read_from(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]),
            Ok(Setting::Off("OTEL_TRACES_EXPORTER=none"))
        );
        assert!(matches!(
            read_from(&[endpoint, ("OTEL_SDK_DISABLED", "false")]),
            Ok(Setting::On(_))
        ));
        assert!(matches!(
            read_from(&[endpoint, ("OTEL_TRACES_EXPORTER", "zipkin")]),
            Err(SettingsError::Exporter(_))
        ));
    }

    #[test]
    fn grpc_is_a_configuration_error_and_the_signal_protocol_wins() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        let error = read_from(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).unwrap_err();
        assert!(error.to_string().contains("http/protobuf"), "{error}");
        assert!(matches!(
            read_from(&[
                endpoint,
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
            ]),
            Ok(Setting::On(_))
        ));
        assert!(matches!(
            read_from(&[
                endpoint,
                ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")
            ]),
            Err(SettingsError::Protocol { .. })
        ));
    }

    #[test]
    fn bad_endpoints_are_configuration_errors() {
        for bad in ["collector:4318", "ftp://collector", "not a url"] {
            assert!(
                matches!(
                    read_from(&[("OTEL_EXPORTER_OTLP_ENDPOINT", bad)]),
                    Err(SettingsError::Endpoint { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn headers_are_decoded_and_the_signal_headers_override() {
        let export = on(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "api-key=abc%3D%3D, x-tenant = acme",
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "X-Tenant=beta"),
        ]);
        assert_eq!(
            export.headers,
            vec![
                ("api-key".to_owned(), "abc==".to_owned()),
                ("X-Tenant".to_owned(), "beta".to_owned())
            ]
        );
        assert_eq!(
            read_from(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "a=1,novalue"),
            ]),
            Err(SettingsError::Pairs {
                variable: "OTEL_EXPORTER_OTLP_HEADERS",
                entry: 2
            })
        );
    }

    #[test]
    fn the_service_name_comes_from_its_variable_then_the_resource_then_the_default() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        assert_eq!(on(&[endpoint]).service_name, "job-closer");
        let export = on(&[
            endpoint,
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "service.name=from-resource,deployment.environment=prod",
            ),
        ]);
        assert_eq!(export.service_name, "from-resource");
        assert_eq!(
            export.resource,
            vec![("deployment.environment".to_owned(), "prod".to_owned())]
        );
        let export = on(&[
            endpoint,
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-resource"),
            ("OTEL_SERVICE_NAME", "closer-eu"),
        ]);
        assert_eq!(export.service_name, "closer-eu");
    }

    #[test]
    fn samplers_default_to_parent_based_and_reject_what_they_do_not_know() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        assert_eq!(
            on(&[endpoint]).sampler,
            Sampler::ParentBased(Root::AlwaysOn)
        );
        assert_eq!(
            on(&[endpoint, ("OTEL_TRACES_SAMPLER", "always_on")]).sampler,
            Sampler::AlwaysOn
        );
        assert_eq!(
            on(&[
                endpoint,
                ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25")
            ])
            .sampler,
            Sampler::ParentBased(Root::Ratio(0.25))
        );
        assert_eq!(
            on(&[endpoint, ("OTEL_TRACES_SAMPLER", "traceidratio")]).sampler,
            Sampler::Ratio(1.0)
        );
        assert!(matches!(
            read_from(&[endpoint, ("OTEL_TRACES_SAMPLER", "sometimes")]),
            Err(SettingsError::Sampler(_))
        ));
        assert!(matches!(
            read_from(&[
                endpoint,
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "2")
            ]),
            Err(SettingsError::SamplerArg(_))
        ));
    }

    #[test]
    fn the_printed_endpoint_has_no_credentials_or_query() {
        let url = Url::parse("https://user:s3cret@otel.example:4318/v1/traces?api_key=k").unwrap();
        let shown = redacted(&url);
        assert_eq!(shown, "https://otel.example:4318/v1/traces");
        assert!(!shown.contains("s3cret") && !shown.contains("user"));
    }
}
