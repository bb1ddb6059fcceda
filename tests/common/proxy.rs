//! A TCP proxy between the worker and RabbitMQ that a test can cut: every open connection is dropped
//! at once, as when a network partition or a broker restart kills the socket, and new connections can
//! be refused for a while. It cuts only this test's worker, not every client of the shared broker.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub struct Proxy {
    pub addr: SocketAddr,
    generation: Arc<Mutex<CancellationToken>>,
    refusing: Arc<AtomicBool>,
    stop: CancellationToken,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let generation = Arc::new(Mutex::new(CancellationToken::new()));
        let refusing = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        let (gen_, refusing_, stop_) = (generation.clone(), refusing.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = stop_.cancelled() => return,
                };
                let Ok((mut client, _)) = accepted else {
                    continue;
                };
                if refusing_.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let cut = gen_.lock().unwrap().clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.cancelled() => {}
                    }
                });
            }
        });
        Proxy {
            addr,
            generation,
            refusing,
            stop,
        }
    }

    /// Drops every connection open now.
    pub fn cut(&self) {
        let mut current = self.generation.lock().unwrap();
        current.cancel();
        *current = CancellationToken::new();
    }

    /// While refusing, new connections are closed as soon as they are accepted.
    pub fn refuse(&self, refusing: bool) {
        self.refusing.store(refusing, Ordering::SeqCst);
    }

    /// The broker URL through this proxy, keeping the credentials and vhost of `url`.
    pub fn amqp_url(&self, url: &str) -> String {
        let mut parsed = url::Url::parse(url).unwrap();
        parsed.set_host(Some("127.0.0.1")).unwrap();
        parsed.set_port(Some(self.addr.port())).unwrap();
        parsed.to_string()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.cut();
    }
}

/// Where the broker in `url` listens.
pub fn upstream_of(url: &str) -> SocketAddr {
    let parsed = url::Url::parse(url).unwrap();
    let host = parsed.host_str().unwrap_or("127.0.0.1");
    let port = parsed.port().unwrap_or(5672);
    use std::net::ToSocketAddrs;
    (host, port).to_socket_addrs().unwrap().next().unwrap()
}
