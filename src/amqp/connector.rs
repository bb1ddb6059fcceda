//! Connecting to one node of a cluster: the node list of `AMQP_URL`, tried in turn from a random
//! start, over plain TCP or the broker's own TLS configuration.
//!
//! Every command goes through a [`Connector`]. Each connection attempt first reads `AMQP_URL_FILE`
//! and `AMQP_PASSWORD_FILE` again ([`BrokerSettings::current_nodes`]), so that a worker whose broker
//! password was rotated reconnects with the new one. One connection attempt tries each node once, starting
//! with the node after the one used last: a node that died costs the next node's connect, not an
//! outage, and only when every node refused does the caller back off. The first start is random so
//! that replicas given the same list spread over the cluster instead of all landing on the first
//! node. Every attempt after the very first counts in `job_closer_broker_reconnects_total`.
//!
//! Rejected: lapin's `auto_recover`, which reconnects to the *same* URL and replays the topology
//! behind the worker's back, while the worker must know a session ended to give its in-hand
//! deliveries back; and a load balancer in front of the cluster, one more single point of failure.
//!
//! The TCP socket is opened here and handed to lapin (`Connection::connector`), so that an
//! `amqps://` node gets [`super::tls::BrokerTls`]'s rustls configuration — the private CA, the client
//! certificate, and refusals that name the certificate — rather than lapin's defaults. A duplicate
//! of the socket is kept ([`Severer`]): a connection the broker blocks (see [`super::flow`]) can no
//! longer be closed politely, since lapin writes nothing on it, and must still end with its session
//! instead of delivering its stale publishes once the alarm clears.

use super::AmqpError;
use super::settings::BrokerSettings;
use crate::config::{AmqpArgs, AmqpUrl, ConfigError};
use lapin::tcp::{AsyncTcpStream, RustlsConnector};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{Connection, ConnectionProperties};
use prometheus_client::metrics::counter::Counter;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{debug, info, warn};

/// A node that accepts TCP but never completes the handshake must not hold up the others.
pub(crate) const NODE_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection and the node it went to.
pub(crate) struct Connected {
    pub(crate) connection: Connection,
    pub(crate) node: AmqpUrl,
    /// Position of the node in the list, from 0.
    pub(crate) index: usize,
    /// Ends the connection's socket when a polite close cannot.
    pub(crate) severer: Severer,
}

/// A duplicate of a connection's TCP socket, to shut it down under lapin.
#[derive(Clone, Default)]
pub(crate) struct Severer(Arc<Mutex<Option<std::net::TcpStream>>>);

impl Severer {
    /// Shuts the socket down both ways: lapin's I/O loop fails at once, and with it every publish
    /// and consumer of the connection; the broker sees the connection closed.
    pub(crate) fn sever(&self) {
        let socket = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(socket) = socket.as_ref() {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }

    fn keep(&self, socket: std::net::TcpStream) {
        *self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(socket);
    }
}

/// Closes `connection` politely within `within`, or else severs its socket: a blocked connection
/// never sends its close.
pub(crate) async fn close_or_sever(connection: &Connection, severer: &Severer, within: Duration) {
    if connection.status().connected() {
        let closed =
            tokio::time::timeout(within, connection.close(200, "job-closer done".into())).await;
        if closed.is_ok() {
            return;
        }
        debug!("The connection did not close in time; severing its socket.");
    }
    severer.sever();
}

/// Opens connections to the nodes of one cluster, one node at a time, in rotation.
pub(crate) struct Connector {
    settings: BrokerSettings,
    connection_name: String,
    /// The node the next attempt starts with.
    next: AtomicUsize,
    attempts: AtomicU64,
    reconnects: Option<Counter>,
    node_timeout: Duration,
}

impl Connector {
    pub(crate) fn new(settings: BrokerSettings, connection_name: impl Into<String>) -> Connector {
        let start = match settings.nodes.len() {
            0 | 1 => 0,
            count => rand::random_range(0..count),
        };
        Connector {
            settings,
            connection_name: connection_name.into(),
            next: AtomicUsize::new(start),
            attempts: AtomicU64::new(0),
            reconnects: None,
            node_timeout: NODE_TIMEOUT,
        }
    }

    /// Reads the broker settings (files included) and makes a connector of them.
    pub(crate) fn from_args(
        args: &AmqpArgs,
        connection_name: impl Into<String>,
    ) -> Result<Connector, ConfigError> {
        Ok(Connector::new(args.broker()?, connection_name))
    }

    /// Counts every connection attempt after the first (`job_closer_broker_reconnects_total`).
    pub(crate) fn count_reconnects(mut self, counter: Counter) -> Connector {
        self.reconnects = Some(counter);
        self
    }

    /// Tries every node once, starting with the one after the node used last; the first that
    /// completes the AMQP handshake wins. Fails only when none did, with each node's reason.
    pub(crate) async fn connect(&self) -> Result<Connected, AmqpError> {
        // AMQP_URL_FILE and AMQP_PASSWORD_FILE as they are now: a rotated password is taken here.
        let nodes = &self.settings.current_nodes();
        let count = nodes.len();
        if count == 0 {
            return Err(AmqpError::Unreachable {
                failures: "at no node: AMQP_URL names none".into(),
            });
        }
        let start = self.next.load(Ordering::SeqCst) % count;
        let mut failures = Vec::new();
        for offset in 0..count {
            let index = (start + offset) % count;
            let node = &nodes[index];
            if self.attempts.fetch_add(1, Ordering::SeqCst) > 0
                && let Some(counter) = &self.reconnects
            {
                counter.inc();
            }
            // Whatever happens, the next attempt starts after this node: if it fails later, the
            // next connect goes elsewhere first.
            self.next.store(index + 1, Ordering::SeqCst);
            debug!(node = %node, position = index + 1, nodes = count, "Connecting to RabbitMQ.");
            let severer = Severer::default();
            let connecting = self.connect_node(node, &self.connection_name, &severer);
            match tokio::time::timeout(self.node_timeout, connecting).await {
                Ok(Ok(connection)) => {
                    info!(node = %node, position = index + 1, nodes = count, "Connected to RabbitMQ.");
                    return Ok(Connected {
                        connection,
                        node: node.clone(),
                        index,
                        severer,
                    });
                }
                Ok(Err(error)) => {
                    // The certificate errors of `super::tls`, in words.
                    let why = explain(&error.to_string(), node, nodes, &self.settings);
                    if count > 1 {
                        warn!(node = %node, error = %why, "RabbitMQ node unreachable; trying the next one.");
                    }
                    if count == 1 {
                        if why == error.to_string() {
                            return Err(AmqpError::Connect {
                                url: node.redacted(),
                                source: error,
                            });
                        }
                        return Err(AmqpError::Unreachable {
                            failures: format!("at {}: {why}", node.redacted()),
                        });
                    }
                    failures.push(format!("{}: {why}", node.redacted()));
                }
                Err(_) => {
                    let why = format!("no AMQP handshake within {} s", self.node_timeout.as_secs());
                    if count > 1 {
                        warn!(node = %node, error = %why, "RabbitMQ node unreachable; trying the next one.");
                    }
                    failures.push(format!("{}: {why}", node.redacted()));
                }
            }
        }
        Err(AmqpError::Unreachable {
            failures: format!("at any of its {count} nodes: {}", failures.join("; ")),
        })
    }

    /// A further connection named `connection_name` to the node `beside` went to, with the very
    /// URL (and password) it used: e.g. the worker's publishing connection beside its consuming one.
    /// Not a reconnect; fails if that node does not answer. The first connection already got past
    /// TLS and the login, so its error is given as lapin words it.
    pub(crate) async fn connect_beside(
        &self,
        beside: &Connected,
        connection_name: &str,
    ) -> Result<Connected, AmqpError> {
        let node = &beside.node;
        let severer = Severer::default();
        let connecting = self.connect_node(node, connection_name, &severer);
        match tokio::time::timeout(self.node_timeout, connecting).await {
            Ok(Ok(connection)) => Ok(Connected {
                connection,
                node: node.clone(),
                index: beside.index,
                severer,
            }),
            Ok(Err(source)) => Err(AmqpError::Connect {
                url: node.redacted(),
                source,
            }),
            Err(_) => Err(AmqpError::Unreachable {
                failures: format!(
                    "at {}: no AMQP handshake within {} s",
                    node.redacted(),
                    self.node_timeout.as_secs()
                ),
            }),
        }
    }

    async fn connect_node(
        &self,
        node: &AmqpUrl,
        connection_name: &str,
        severer: &Severer,
    ) -> Result<Connection, lapin::Error> {
        // Checked when the settings were read; lapin's own error would quote the URL.
        let uri: AMQPUri = node
            .expose()
            .parse()
            .map_err(|_| std::io::Error::other("not a valid AMQP URL"))?;
        let properties =
            ConnectionProperties::default().with_connection_name(connection_name.to_owned().into());
        let runtime = lapin::runtime::default_runtime()?;
        let tls = RustlsConnector::from(self.settings.tls.client_config());
        let tls = Arc::new(tls);
        let severer = severer.clone();
        Connection::connector(
            uri,
            runtime,
            async move |uri: AMQPUri, runtime: async_rs::TokioRuntime| {
                open_stream(uri, runtime, tls.clone(), &severer).await
            },
            properties,
        )
        .await
    }
}

/// Resolves the node's host, connects (keeping a duplicate of the socket in `severer`), and for
/// `amqps://` runs the TLS handshake.
async fn open_stream(
    uri: AMQPUri,
    runtime: async_rs::TokioRuntime,
    tls: Arc<RustlsConnector>,
    severer: &Severer,
) -> lapin::Result<AsyncTcpStream<<async_rs::TokioRuntime as async_rs::traits::Reactor>::TcpStream>>
{
    use async_rs::traits::Reactor;
    let host = uri.authority.host.clone();
    let addresses: Vec<std::net::SocketAddr> =
        tokio::net::lookup_host((host.as_str(), uri.authority.port))
            .await?
            .collect();
    let tcp = runtime.tcp_connect(addresses).await?;
    severer.keep(std::net::TcpStream::from(
        tcp.get_ref().as_fd().try_clone_to_owned()?,
    ));
    let stream = AsyncTcpStream::Plain(tcp);
    match uri.scheme {
        AMQPScheme::AMQP => Ok(stream),
        AMQPScheme::AMQPS => Ok(stream.into_rustls(&tls, &host).await?),
    }
}

/// A failure in words, with what to do about the usual TLS ones.
fn explain(error: &str, node: &AmqpUrl, nodes: &[AmqpUrl], settings: &BrokerSettings) -> String {
    let error = &certificate_problem_in_words(error);
    let hint = tls_hint(error, node, nodes, settings);
    if hint.is_empty() {
        error.to_owned()
    } else {
        format!("{error} ({hint})")
    }
}

/// rustls shows a custom certificate error in its `Debug` form
/// (`Other(OtherError(CertificateProblem("...")))`); this brings back the words of
/// [`super::tls`]'s explanation.
fn certificate_problem_in_words(error: &str) -> String {
    const START: &str = "Other(OtherError(CertificateProblem(\"";
    const END: &str = "\")))";
    let Some(begin) = error.find(START) else {
        return error.to_owned();
    };
    let inner_start = begin + START.len();
    let Some(length) = error[inner_start..].rfind(END) else {
        return error.to_owned();
    };
    let inner = error[inner_start..inner_start + length]
        .replace("\\\"", "\"")
        .replace("\\\\", "\\");
    format!(
        "{}{inner}{}",
        &error[..begin],
        &error[inner_start + length + END.len()..]
    )
}

/// The broker's alerts say little; this says what probably caused them.
fn tls_hint(error: &str, node: &AmqpUrl, nodes: &[AmqpUrl], settings: &BrokerSettings) -> String {
    let client = settings.tls.client.as_ref();
    if error.contains("CertificateRequired")
        || (error.contains("HandshakeFailure") && client.is_none() && node.is_tls())
    {
        return match client {
            None => "the broker requires a client certificate: set AMQP_TLS_CERT_FILE and AMQP_TLS_KEY_FILE".into(),
            Some(identity) => format!(
                "the broker did not accept the client certificate {}",
                identity.cert_file.display()
            ),
        };
    }
    if let Some(identity) = client
        && (error.contains("UnknownCA")
            || error.contains("BadCertificate")
            || error.contains("DecryptError")
            || error.contains("AccessDenied"))
    {
        let subject = identity
            .summary
            .as_ref()
            .map(|s| format!("subject \"{}\", issuer \"{}\"", s.subject, s.issuer))
            .unwrap_or_else(|| "unreadable".into());
        return format!(
            "the broker refused the client certificate in AMQP_TLS_CERT_FILE ({subject}): is its issuer among the broker's trusted CAs?"
        );
    }
    // Over TLS 1.3 a broker that refuses the client's certificate (or its absence) often just
    // closes the connection after the handshake.
    let closed_on_us = error.contains("Connection reset")
        || error.contains("connection reset")
        || error.contains("unexpected end of file")
        || error.contains("UnexpectedEof");
    if node.is_tls() && closed_on_us {
        return match client {
            None => "the broker closed the TLS connection: if it requires client certificates (verify_peer, fail_if_no_peer_cert), set AMQP_TLS_CERT_FILE and AMQP_TLS_KEY_FILE".into(),
            Some(identity) => {
                let subject = identity
                    .summary
                    .as_ref()
                    .map(|s| format!("subject \"{}\", issuer \"{}\"", s.subject, s.issuer))
                    .unwrap_or_else(|| "unreadable".into());
                format!(
                    "the broker closed the TLS connection: it may have refused the client certificate in AMQP_TLS_CERT_FILE ({subject}); is its issuer among the broker's trusted CAs?"
                )
            }
        };
    }
    if !node.is_tls() && closed_on_us && nodes.iter().any(AmqpUrl::is_tls) {
        return "is this a TLS port? use amqps://".into();
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificate_problems_read_as_words() {
        let raw = r#"IO error: invalid peer certificate: Other(OtherError(CertificateProblem("the broker's certificate is not valid for the host name \"127.0.0.1\"")))"#;
        assert_eq!(
            certificate_problem_in_words(raw),
            r#"IO error: invalid peer certificate: the broker's certificate is not valid for the host name "127.0.0.1""#
        );
        assert_eq!(
            certificate_problem_in_words("IO error: refused"),
            "IO error: refused"
        );
    }
}
