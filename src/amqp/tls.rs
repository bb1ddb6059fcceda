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
        Some(CertificateSummary {
            subject: certificate.subject().to_string(),
            issuer: certificate.issuer().to_string(),
            names,
        })
    }
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
                let config = builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|error| TlsFileError::BadPem {
                        setting: "AMQP_TLS_KEY_FILE",
                        path: key_file.clone(),
                        why: format!(
                            "the key does not go with the certificate in AMQP_TLS_CERT_FILE ({error})"
                        ),
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
            Some(path) => format!("the system roots and AMQP_TLS_CA_FILE {}", path.display()),
            None => "the system roots (set AMQP_TLS_CA_FILE to add a private CA)".into(),
        }
    }

    fn explain(
        &self,
        error: rustls::Error,
        end_entity: &CertificateDer<'_>,
        server_name: &ServerName<'_>,
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
        let text = match problem {
            CertificateError::UnknownIssuer => format!(
                "the broker's certificate (subject \"{subject}\") was issued by \"{issuer}\", which is not trusted: it is not among {}",
                self.roots()
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!(
                    "the broker's certificate is not valid for the host name \"{host}\" of AMQP_URL: it is for {} (subject \"{subject}\", issuer \"{issuer}\"); connect by one of those names",
                    if names.is_empty() {
                        "no names".to_owned()
                    } else {
                        names
                    }
                )
            }
            other => format!(
                "the broker's certificate for \"{host}\" (subject \"{subject}\", issuer \"{issuer}\") was refused: {other}"
            ),
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
            .map_err(|error| self.explain(error, end_entity, server_name))
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
    fn no_files_is_the_platform_roots_alone() {
        let tls = BrokerTls::load(None, None, None).unwrap();
        assert_eq!(tls.extra_roots, 0);
        assert!(tls.client.is_none());
    }
}
