//! The broker settings resolved: `AmqpArgs` (what the command line and environment say) with its
//! files read — `AMQP_URL_FILE`, `AMQP_PASSWORD_FILE` and the TLS files — into the node list and the
//! TLS configuration a [`super::connector::Connector`] uses.
//!
//! `AMQP_URL_FILE` and `AMQP_PASSWORD_FILE` are read again before every reconnect
//! ([`BrokerSettings::current_nodes`]): a rotated broker password is a file change, not a restart.
//! When a file went bad (unreadable, empty, or a URL list that does not parse) the last good value
//! stays in force, and [`crate::secret_file`] says so. The TLS files are read once: a certificate
//! is replaced by a restart, which also re-checks it.
//!
//! It lives here rather than in `config` because resolving means building the broker's TLS
//! configuration ([`super::tls`]): `config` stays below `amqp` in the module graph.

use super::tls::BrokerTls;
use crate::config::{AmqpArgs, AmqpUrl, AmqpUrls, ConfigError, Secret, read_secret_file};
use crate::secret_file::SecretFile;
use std::sync::Arc;

/// Where `AMQP_URL` came from, for `check`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UrlSource {
    Env,
    File,
}

/// The broker settings, resolved: the nodes (with `AMQP_PASSWORD_FILE` applied) and TLS.
#[derive(Clone, Debug)]
pub(crate) struct BrokerSettings {
    /// The nodes as the settings said when they were read.
    pub(crate) nodes: Vec<AmqpUrl>,
    pub(crate) url_source: UrlSource,
    pub(crate) tls: BrokerTls,
    files: NodeFiles,
}

/// Where the nodes come from, to be read again.
#[derive(Clone, Debug)]
struct NodeFiles {
    /// `AMQP_URL` (the setting), for when there is no `AMQP_URL_FILE`.
    urls: AmqpUrls,
    url_file: Option<Arc<SecretFile>>,
    password_file: Option<Arc<SecretFile>>,
}

/// Whether a URL list read from `AMQP_URL_FILE` can be used; why not, never quoting a password.
fn usable_urls(text: &str) -> Result<(), String> {
    text.parse::<AmqpUrls>().map(|_| ())
}

/// The nodes of `urls`, each with `password` when `AMQP_PASSWORD_FILE` gives one.
fn nodes_of(urls: AmqpUrls, password: Option<&Secret>) -> Vec<AmqpUrl> {
    let nodes = urls.into_nodes();
    match password {
        Some(password) => nodes
            .iter()
            .map(|node| node.with_password(password.expose()))
            .collect(),
        None => nodes,
    }
}

impl AmqpArgs {
    /// Reads the files and checks them, before anything connects: every problem is a configuration
    /// error naming its setting (exit 2), never quoting a file.
    pub(crate) fn broker(&self) -> Result<BrokerSettings, ConfigError> {
        let files = &self.files;
        let (urls, url_source, url_file) = match &files.amqp_url_file {
            Some(path) => {
                let text = read_secret_file("AMQP_URL_FILE", path)?;
                let urls: AmqpUrls = text.parse().map_err(|why| ConfigError::AmqpUrl {
                    setting: "AMQP_URL_FILE",
                    why,
                })?;
                let file = SecretFile::new(
                    "AMQP_URL_FILE",
                    "broker URL list",
                    path.clone(),
                    Secret::new(text),
                )
                .checked_by(usable_urls);
                (urls, UrlSource::File, Some(Arc::new(file)))
            }
            None => (self.amqp_url.clone(), UrlSource::Env, None),
        };
        let password_file = match &files.amqp_password_file {
            Some(path) => {
                let password = Secret::new(read_secret_file("AMQP_PASSWORD_FILE", path)?);
                Some(Arc::new(SecretFile::new(
                    "AMQP_PASSWORD_FILE",
                    "broker password",
                    path.clone(),
                    password,
                )))
            }
            None => None,
        };
        let password = password_file.as_ref().map(|file| file.value());
        let nodes = nodes_of(urls, password.as_ref());
        let tls = BrokerTls::load(
            files.amqp_tls_ca_file.as_deref(),
            files.amqp_tls_cert_file.as_deref(),
            files.amqp_tls_key_file.as_deref(),
        )
        .map_err(|error| ConfigError::Tls(error.to_string()))?;
        Ok(BrokerSettings {
            nodes,
            url_source,
            tls,
            files: NodeFiles {
                urls: self.amqp_url.clone(),
                url_file,
                password_file,
            },
        })
    }
}

impl BrokerSettings {
    /// The nodes as the files say now: `AMQP_URL_FILE` and `AMQP_PASSWORD_FILE` read again (each
    /// keeps its last good value when it went bad). Without them, the nodes as they were read.
    pub(crate) fn current_nodes(&self) -> Vec<AmqpUrl> {
        let files = &self.files;
        if files.url_file.is_none() && files.password_file.is_none() {
            return self.nodes.clone();
        }
        let urls = match &files.url_file {
            Some(file) => {
                file.reread();
                match file.value().expose().parse::<AmqpUrls>() {
                    Ok(urls) => urls,
                    // Never: only usable lists are taken in.
                    Err(_) => return self.nodes.clone(),
                }
            }
            None => files.urls.clone(),
        };
        let password = files.password_file.as_ref().map(|file| {
            file.reread();
            file.value()
        });
        nodes_of(urls, password.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AmqpFileArgs, QueueType, SettingFiles};

    #[test]
    fn the_password_file_replaces_every_password_and_the_url_file_wins() {
        let files = SettingFiles::new();
        let password = files.write("password", "p@ss:w/o%rd#?,\n");
        let url_file = files.write("url", "amqp://app:old@n1:5672/%2f,amqp://app@n2:5672/%2f\n");
        let args = AmqpArgs {
            amqp_url: "amqp://env:envpw@elsewhere/%2f".parse().unwrap(),
            files: AmqpFileArgs {
                amqp_url_file: Some(url_file.clone()),
                amqp_password_file: Some(password.clone()),
                ..AmqpFileArgs::default()
            },
            close_queue: "c".into(),
            dead_letter_queue: "d".into(),
            queue_type: QueueType::Classic,
            single_active_consumer: false,
            delivery_limit: 20,
        };
        let broker = args.broker().unwrap();
        assert_eq!(broker.url_source, UrlSource::File);
        assert_eq!(broker.nodes.len(), 2);
        for node in &broker.nodes {
            let parsed: lapin::uri::AMQPUri = node.expose().parse().unwrap();
            assert_eq!(parsed.authority.userinfo.username, "app");
            assert_eq!(parsed.authority.userinfo.password, "p@ss:w/o%rd#?,");
            assert!(!node.to_string().contains("p@ss"), "{node}");
        }
        let shown = format!("{broker:?}");
        assert!(!shown.contains("ss:w"), "{shown}");

        // Read again before a reconnect: a new password and URL list are taken, a bad file keeps
        // the last good value.
        files.write("password", "n3w\n");
        files.write("url", "amqp://app@n3:5672/%2f\n");
        let nodes = broker.current_nodes();
        assert_eq!(nodes.len(), 1);
        let parsed: lapin::uri::AMQPUri = nodes[0].expose().parse().unwrap();
        assert_eq!(parsed.authority.host, "n3");
        assert_eq!(parsed.authority.userinfo.password, "n3w");
        files.write("url", "http://app:filepw@n4\n");
        std::fs::remove_file(&password).unwrap();
        assert_eq!(broker.current_nodes(), nodes);
        files.write("password", "p@ss:w/o%rd#?,\n");
        files.write("url", "amqp://app:old@n1:5672/%2f\n");

        files.write("password", "\n");
        let error = args.broker().unwrap_err().to_string();
        assert!(
            error.contains("AMQP_PASSWORD_FILE") && error.contains("empty"),
            "{error}"
        );
        let missing = AmqpArgs {
            files: AmqpFileArgs {
                amqp_url_file: Some(files.path("absent")),
                ..AmqpFileArgs::default()
            },
            ..args.clone()
        };
        let error = missing.broker().unwrap_err().to_string();
        assert!(
            error.contains("AMQP_URL_FILE") && error.contains("absent"),
            "{error}"
        );
        files.write("url", "http://app:filepw@n1\n");
        let error = AmqpArgs {
            files: AmqpFileArgs {
                amqp_url_file: Some(url_file),
                ..AmqpFileArgs::default()
            },
            ..args
        }
        .broker()
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("AMQP_URL_FILE") && !error.contains("filepw"),
            "{error}"
        );
    }
}
