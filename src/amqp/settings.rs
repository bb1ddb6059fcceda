//! The broker settings resolved: `AmqpArgs` (what the command line and environment say) with its
//! files read — `AMQP_URL_FILE`, `AMQP_PASSWORD_FILE` and the TLS files — into the node list and the
//! TLS configuration a [`super::connector::Connector`] uses.
//!
//! It lives here rather than in `config` because resolving means building the broker's TLS
//! configuration ([`super::tls`]): `config` stays below `amqp` in the module graph.

use super::tls::BrokerTls;
use crate::config::{AmqpArgs, AmqpUrl, AmqpUrls, ConfigError, Secret, read_secret_file};

/// Where `AMQP_URL` came from, for `check`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UrlSource {
    Env,
    File,
}

/// The broker settings, resolved: the nodes (with `AMQP_PASSWORD_FILE` applied) and TLS.
#[derive(Clone, Debug)]
pub(crate) struct BrokerSettings {
    pub(crate) nodes: Vec<AmqpUrl>,
    pub(crate) url_source: UrlSource,
    pub(crate) tls: BrokerTls,
}

impl AmqpArgs {
    /// Reads the files and checks them, before anything connects: every problem is a configuration
    /// error naming its setting (exit 2), never quoting a file.
    pub(crate) fn broker(&self) -> Result<BrokerSettings, ConfigError> {
        let files = &self.files;
        let (urls, url_source) = match &files.amqp_url_file {
            Some(path) => {
                let text = read_secret_file("AMQP_URL_FILE", path)?;
                let urls: AmqpUrls = text.parse().map_err(|why| ConfigError::AmqpUrl {
                    setting: "AMQP_URL_FILE",
                    why,
                })?;
                (urls, UrlSource::File)
            }
            None => (self.amqp_url.clone(), UrlSource::Env),
        };
        let mut nodes = urls.into_nodes();
        if let Some(path) = &files.amqp_password_file {
            let password = Secret::new(read_secret_file("AMQP_PASSWORD_FILE", path)?);
            nodes = nodes
                .iter()
                .map(|node| node.with_password(password.expose()))
                .collect();
        }
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
        })
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
