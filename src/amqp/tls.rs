//! TLS to the broker: the private CA added to the platform's roots, the client certificate for
//! mutual TLS, and certificate errors that name what failed.
//!
//! The broker gets its own rustls configuration, built once from `AMQP_TLS_CA_FILE`,
//! `AMQP_TLS_CERT_FILE` and `AMQP_TLS_KEY_FILE` when the settings are read, so that a bad file is a
//! configuration error (exit 2) before anything connects, not a failure at every reconnect. The CA
//! certificates are *extra* roots of the platform verifier (`rustls-platform-verifier`, the one
//! reqwest and lapin already use): a broker certificate from the company CA and one from a public CA
//! both verify, and LinkedIn's HTTP client never sees the company CA at all.
//!
//! Rejected: `SSL_CERT_FILE`, which replaces the roots of every TLS client in the process (LinkedIn
//! calls would stop trusting LinkedIn); and lapin's `OwnedTLSConfig`, which adds the CA the same way
//! but gives no hook to say *which* certificate failed: its errors read `UnknownIssuer` without the
//! issuer. Here the verifier is wrapped so that a refusal names the broker certificate's subject,
//! issuer and names, and where the trusted roots came from.
//!
//! Certificate mistakes are told in words that say what to do, each naming its setting
//! ([`certificate_problem`], a pure function of what a certificate says and the time): an X.509 v1
//! certificate, as plain `openssl x509 -req` makes without an extension file (rustls takes only v3;
//! its own error for a client certificate reads like a key mismatch), an expired or not yet valid
//! one with its dates, a key that really does not match its certificate, and an unknown issuer with
//! the CA file that was read and what it holds. The client certificate is checked when the settings
//! are read (exit 2, the same words in `job-closer check`); the broker's when it is presented.
//!
//! Nothing read from a file is ever printed: errors name the setting and the path, and describe a
//! PEM problem without quoting the text (a key file must not reach a log because it was malformed).

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A TLS file that cannot be used, by the setting that named it.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsFileError {
    #[error("cannot read {setting} {path}: {source}")]
    Unreadable {
        setting: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{setting} {path} is not usable: {why}")]
    BadPem {
        setting: &'static str,
        path: PathBuf,
        why: String,
    },
    #[error(
        "AMQP_TLS_CERT_FILE and AMQP_TLS_KEY_FILE go together (a client certificate needs its key); only {given} is set"
    )]
    HalfIdentity { given: &'static str },
    #[error("the TLS configuration for the broker cannot be built: {0}")]
    Build(String),
}

/// What a certificate says about itself, for `check` and for certificate errors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct CertificateSummary {
    pub(crate) subject: String,
    pub(crate) issuer: String,
    /// DNS names and IP addresses of its subjectAltName extension.
    pub(crate) names: Vec<String>,
    /// The X.509 version: 1, 2 or 3.
    pub(crate) version: u32,
    /// Valid from and until, in Unix seconds.
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
}

impl CertificateSummary {
    pub(crate) fn of(der: &[u8]) -> Option<CertificateSummary> {
        let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
        let mut names = Vec::new();
        if let Ok(Some(extension)) = certificate.subject_alternative_name() {
            for name in &extension.value.general_names {
                match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => {
                        names.push((*dns).to_owned())
                    }
                    x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                        if let Some(ip) = ip_text(bytes) {
                            names.push(ip)
                        }
                    }
                    _ => {}
                }
            }
        }
        let validity = certificate.validity();
        Some(CertificateSummary {
            subject: certificate.subject().to_string(),
            issuer: certificate.issuer().to_string(),
            names,
            version: certificate.version().0 + 1,
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
        })
    }

    /// "valid from … to …".
    fn validity(&self) -> String {
        format!(
            "valid from {} to {}",
            date_text(self.not_before),
            date_text(self.not_after)
        )
    }
}

/// A Unix time as `2026-01-31 23:59:59 UTC`.
fn date_text(unix: i64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|at| at.format(&format).ok())
        .unwrap_or_else(|| format!("{unix} (Unix time)"))
}

/// Unix seconds now, by this machine's clock.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| since.as_secs() as i64)
        .unwrap_or_default()
}

/// What is wrong with a certificate by itself at `now` (Unix seconds), in words that say what to
/// do; `None` when nothing is. `whose` says what it is ("it" for a file's, "the broker's
/// certificate" …).
pub(crate) fn certificate_problem(
    summary: &CertificateSummary,
    now: i64,
    whose: &str,
) -> Option<String> {
    if summary.version < 3 {
        return Some(format!(
            "{whose} is an X.509 v{} certificate, as plain `openssl x509 -req` makes without an extension file, and TLS here takes only X.509 v3: re-issue it as X.509 v3, e.g. with an extension file (`openssl x509 -req ... -extfile cert.ext`, the file holding e.g. `basicConstraints=CA:FALSE`)",
            summary.version
        ));
    }
    if now > summary.not_after {
        return Some(format!(
            "{whose} expired on {} ({}): renew it",
            date_text(summary.not_after),
            summary.validity()
        ));
    }
    if now < summary.not_before {
        return Some(format!(
            "{whose} is not valid before {} ({}; this machine's clock says {}): check the clock, or re-issue it",
            date_text(summary.not_before),
            summary.validity(),
            date_text(now)
        ));
    }
    None
}

fn ip_text(bytes: &[u8]) -> Option<String> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|octets| std::net::Ipv4Addr::from(octets).to_string()),
        16 => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|octets| std::net::Ipv6Addr::from(octets).to_string()),
        _ => None,
    }
}

/// The client certificate for mutual TLS.
#[derive(Clone)]
pub(crate) struct ClientIdentity {
    pub(crate) cert_file: PathBuf,
    pub(crate) key_file: PathBuf,
    pub(crate) summary: Option<CertificateSummary>,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("subject", &self.summary.as_ref().map(|s| &s.subject))
            .finish()
    }
}

/// The broker's TLS settings, read and checked: used for every `amqps://` node.
#[derive(Clone)]
pub(crate) struct BrokerTls {
    pub(crate) ca_file: Option<PathBuf>,
    /// How many CA certificates `AMQP_TLS_CA_FILE` holds.
    pub(crate) extra_roots: usize,
    pub(crate) client: Option<ClientIdentity>,
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for BrokerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerTls")
            .field("ca_file", &self.ca_file)
            .field("extra_roots", &self.extra_roots)
            .field("client", &self.client)
            .finish()
    }
}

impl BrokerTls {
    /// Reads the files and builds the rustls configuration; every problem names its setting.
    pub(crate) fn load(
        ca_file: Option<&Path>,
        cert_file: Option<&Path>,
        key_file: Option<&Path>,
    ) -> Result<BrokerTls, TlsFileError> {
        let extra_roots = match ca_file {
            Some(path) => read_certificates("AMQP_TLS_CA_FILE", path)?,
            None => Vec::new(),
        };
        let identity = read_identity(cert_file, key_file)?;
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(
            extra_roots.iter().cloned(),
            provider.clone(),
        )
        .map_err(|error| match ca_file {
            Some(path) => TlsFileError::BadPem {
                setting: "AMQP_TLS_CA_FILE",
                path: path.to_path_buf(),
                why: format!("a certificate in it cannot be used as a root ({error})"),
            },
            None => TlsFileError::Build(error.to_string()),
        })?;
        let verifier = NamingVerifier {
            inner: verifier,
            ca_file: ca_file.map(Path::to_path_buf),
            ca_subjects: extra_roots
                .iter()
                .filter_map(|der| CertificateSummary::of(der))
                .map(|summary| summary.subject)
                .collect(),
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| TlsFileError::Build(error.to_string()))?
            .dangerous()
            // Not a bypass: NamingVerifier delegates every decision to the platform verifier and
            // only rewords its refusals.
            .with_custom_certificate_verifier(Arc::new(verifier));
        let (config, client) = match identity {
            None => (builder.with_no_client_auth(), None),
            Some((cert_file, key_file, chain, key)) => {
                let summary = chain.first().and_then(|der| CertificateSummary::of(der));
                check_client_chain(&cert_file, &chain, unix_now())?;
                let config = builder.with_client_auth_cert(chain, key).map_err(|error| {
                    key_refused(&cert_file, &key_file, summary.as_ref(), &error)
                })?;
                (
                    config,
                    Some(ClientIdentity {
                        cert_file,
                        key_file,
                        summary,
                    }),
                )
            }
        };
        Ok(BrokerTls {
            ca_file: ca_file.map(Path::to_path_buf),
            extra_roots: extra_roots.len(),
            client,
            config: Arc::new(config),
        })
    }

    pub(crate) fn client_config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }
}

/// The client certificate chain of AMQP_TLS_CERT_FILE, each certificate by itself: rustls would
/// refuse a v1 one in words about the key, and the broker an expired one in words about nothing.
fn check_client_chain(
    cert_file: &Path,
    chain: &[CertificateDer<'static>],
    now: i64,
) -> Result<(), TlsFileError> {
    for (index, der) in chain.iter().enumerate() {
        let whose = if chain.len() == 1 {
            "it".to_owned()
        } else {
            format!("its certificate {} of {}", index + 1, chain.len())
        };
        let problem = CertificateSummary::of(der)
            .and_then(|summary| certificate_problem(&summary, now, &whose));
        if let Some(why) = problem {
            return Err(TlsFileError::BadPem {
                setting: "AMQP_TLS_CERT_FILE",
                path: cert_file.to_path_buf(),
                why,
            });
        }
    }
    Ok(())
}

/// rustls refused the client certificate with its key: a key that really does not match, or
/// something about the pair it names.
fn key_refused(
    cert_file: &Path,
    key_file: &Path,
    summary: Option<&CertificateSummary>,
    error: &rustls::Error,
) -> TlsFileError {
    let subject = summary
        .map(|s| format!(" (subject \"{}\")", s.subject))
        .unwrap_or_default();
    let why = match error {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => format!(
            "it is not the key of the certificate in AMQP_TLS_CERT_FILE {}{subject}: give the key that certificate was issued for (or the certificate of this key)",
            cert_file.display()
        ),
        other => format!(
            "it cannot be used with the certificate in AMQP_TLS_CERT_FILE {}{subject} ({other})",
            cert_file.display()
        ),
    };
    TlsFileError::BadPem {
        setting: "AMQP_TLS_KEY_FILE",
        path: key_file.to_path_buf(),
        why,
    }
}

/// The client certificate's files, its chain and its key.
type Identity = (
    PathBuf,
    PathBuf,
    Vec<CertificateDer<'static>>,
    PrivateKeyDer<'static>,
);

/// The client identity for mutual TLS: both files or neither.
fn read_identity(
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
) -> Result<Option<Identity>, TlsFileError> {
    match (cert_file, key_file) {
        (None, None) => Ok(None),
        (Some(_), None) => Err(TlsFileError::HalfIdentity {
            given: "AMQP_TLS_CERT_FILE",
        }),
        (None, Some(_)) => Err(TlsFileError::HalfIdentity {
            given: "AMQP_TLS_KEY_FILE",
        }),
        (Some(cert), Some(key)) => Ok(Some((
            cert.to_path_buf(),
            key.to_path_buf(),
            read_certificates("AMQP_TLS_CERT_FILE", cert)?,
            read_key(key)?,
        ))),
    }
}

fn read_file(setting: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|source| TlsFileError::Unreadable {
        setting,
        path: path.to_path_buf(),
        source,
    })
}

/// Every `CERTIFICATE` block of a PEM file; none at all is an error.
fn read_certificates(
    setting: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let bytes = read_file(setting, path)?;
    let bad = |why: String| TlsFileError::BadPem {
        setting,
        path: path.to_path_buf(),
        why,
    };
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| bad(describe_pem_error(&error)))?;
    if certificates.is_empty() {
        return Err(bad(
            "it holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    for (index, der) in certificates.iter().enumerate() {
        if x509_parser::parse_x509_certificate(der).is_err() {
            return Err(bad(format!(
                "PEM certificate {} of {} is not a valid X.509 certificate",
                index + 1,
                certificates.len()
            )));
        }
    }
    Ok(certificates)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let bytes = read_file("AMQP_TLS_KEY_FILE", path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|error| TlsFileError::BadPem {
        setting: "AMQP_TLS_KEY_FILE",
        path: path.to_path_buf(),
        why: match error {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "it holds no PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC; an encrypted key is not supported)".into()
            }
            other => describe_pem_error(&other),
        },
    })
}

/// A PEM problem in words, never with the text it choked on (it may be a key).
fn describe_pem_error(error: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error;
    match error {
        Error::MissingSectionEnd { .. } => "a PEM block has no -----END line".into(),
        Error::IllegalSectionStart { .. } => "a PEM -----BEGIN line is malformed".into(),
        Error::Base64Decode(_) => "a PEM block is not valid base64".into(),
        Error::Io(error) => format!("reading it failed ({})", error.kind()),
        Error::NoItemsFound => "it holds no PEM block of the expected kind".into(),
        _ => "it is not valid PEM".into(),
    }
}

/// The platform verifier, with refusals that say which certificate failed and why.
#[derive(Debug)]
struct NamingVerifier {
    inner: rustls_platform_verifier::Verifier,
    ca_file: Option<PathBuf>,
    /// The subjects of the certificates AMQP_TLS_CA_FILE holds.
    ca_subjects: Vec<String>,
}

/// A certificate refusal in words; carried inside rustls's error so it reaches the caller.
#[derive(Debug)]
struct CertificateProblem(String);

impl std::fmt::Display for CertificateProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CertificateProblem {}

impl NamingVerifier {
    fn roots(&self) -> String {
        match &self.ca_file {
            Some(path) => format!(
                "the system roots and AMQP_TLS_CA_FILE {} (which holds {})",
                path.display(),
                self.ca_subjects
                    .iter()
                    .map(|subject| format!("\"{subject}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            None => "the system roots (set AMQP_TLS_CA_FILE to add a private CA)".into(),
        }
    }

    fn explain(
        &self,
        error: rustls::Error,
        end_entity: &CertificateDer<'_>,
        server_name: &ServerName<'_>,
        now: UnixTime,
    ) -> rustls::Error {
        let rustls::Error::InvalidCertificate(problem) = &error else {
            return error;
        };
        let summary = CertificateSummary::of(end_entity);
        let (subject, issuer, names) = match &summary {
            Some(s) => (s.subject.as_str(), s.issuer.as_str(), s.names.join(", ")),
            None => ("(unreadable)", "(unreadable)", String::new()),
        };
        let host = server_name.to_str();
        let whose = format!(
            "the broker's certificate for \"{host}\" (subject \"{subject}\", issuer \"{issuer}\")"
        );
        // By itself wrong (v1, out of its dates): that is what to fix, whatever rustls named first.
        let by_itself = summary.as_ref().and_then(|summary| {
            let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
            certificate_problem(summary, now, &whose).map(|why| {
                format!(
                    "{why} (the broker's ssl_options.certfile; job-closer checks it against {})",
                    self.roots()
                )
            })
        });
        let text = match (by_itself, problem) {
            (Some(text), _) => text,
            (None, CertificateError::UnknownIssuer) => format!(
                "the broker's certificate (subject \"{subject}\") was issued by \"{issuer}\", which is not trusted: it is not among {}",
                self.roots()
            ),
            (
                None,
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            ) => {
                format!(
                    "the broker's certificate is not valid for the host name \"{host}\" of AMQP_URL: it is for {} (subject \"{subject}\", issuer \"{issuer}\"); connect by one of those names",
                    if names.is_empty() {
                        "no names".to_owned()
                    } else {
                        names
                    }
                )
            }
            (None, other) => format!("{whose} was refused: {other}"),
        };
        rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
            CertificateProblem(text),
        ))))
    }
}

impl ServerCertVerifier for NamingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|error| self.explain(error, end_entity, server_name, now))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SettingFiles;

    #[test]
    fn missing_and_malformed_files_name_the_setting_never_the_content() {
        let files = SettingFiles::new();
        let missing = files.path("nope.pem");
        let error = BrokerTls::load(Some(&missing), None, None).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("AMQP_TLS_CA_FILE"), "{text}");
        assert!(text.contains("nope.pem"), "{text}");

        let garbage = files.write("ca.pem", "sekrit-garbage-line\n");
        let text = BrokerTls::load(Some(&garbage), None, None)
            .unwrap_err()
            .to_string();
        assert!(text.contains("AMQP_TLS_CA_FILE"), "{text}");
        assert!(!text.contains("sekrit"), "{text}");

        let broken = files.write("key.pem", "-----BEGIN PRIVATE KEY-----\nc2Vrcml0LWtleQ==\n");
        let text = BrokerTls::load(None, Some(&garbage), Some(&broken))
            .unwrap_err()
            .to_string();
        assert!(text.contains("AMQP_TLS_CERT_FILE"), "{text}");
        assert!(!text.contains("c2VrcmL0"), "{text}");

        let text = BrokerTls::load(None, None, Some(&broken))
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("AMQP_TLS_CERT_FILE and AMQP_TLS_KEY_FILE go together"),
            "{text}"
        );
    }

    #[test]
    fn a_certificate_by_itself_is_told_what_to_do() {
        let day = 86_400;
        let summary = CertificateSummary {
            subject: "CN=client".into(),
            issuer: "CN=CA".into(),
            names: Vec::new(),
            version: 3,
            not_before: 1_767_225_600, // 2026-01-01
            not_after: 1_767_225_600 + 30 * day,
        };
        assert_eq!(
            certificate_problem(&summary, summary.not_before + day, "it"),
            None
        );
        let v1 = CertificateSummary {
            version: 1,
            ..summary.clone()
        };
        let text = certificate_problem(&v1, summary.not_before + day, "it").unwrap();
        assert!(text.starts_with("it is an X.509 v1 certificate"), "{text}");
        assert!(
            text.contains("re-issue it as X.509 v3, e.g. with an extension file"),
            "{text}"
        );
        let text = certificate_problem(&summary, summary.not_after + 1, "it").unwrap();
        assert!(
            text.contains("expired on 2026-01-31 00:00:00 UTC")
                && text.contains("valid from 2026-01-01 00:00:00 UTC to 2026-01-31 00:00:00 UTC"),
            "{text}"
        );
        let text = certificate_problem(&summary, summary.not_before - day, "it").unwrap();
        assert!(
            text.contains("not valid before 2026-01-01 00:00:00 UTC")
                && text.contains("clock says 2025-12-31 00:00:00 UTC"),
            "{text}"
        );
        // v1 first: re-issuing fixes the dates too.
        let old_v1 = CertificateSummary {
            version: 1,
            ..summary.clone()
        };
        assert!(
            certificate_problem(&old_v1, summary.not_after + 1, "it")
                .unwrap()
                .contains("v1")
        );
    }

    #[test]
    fn no_files_is_the_platform_roots_alone() {
        let tls = BrokerTls::load(None, None, None).unwrap();
        assert_eq!(tls.extra_roots, 0);
        assert!(tls.client.is_none());
    }
}
