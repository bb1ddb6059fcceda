//! An HTTP forward proxy of the test's own, on 127.0.0.1: every request, whatever host it names
//! (`http://linkedin.test/...`), is forwarded to one upstream on 127.0.0.1 (the sandbox), and the
//! proxy records what it saw. Or, as a corporate proxy gone wrong, it answers everything with 502.
//! It never connects anywhere but its upstream.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// One request the proxy saw: its request line and its `Proxy-Authorization`, if any.
#[derive(Clone, Debug)]
pub struct Seen {
    pub request_line: String,
    pub proxy_authorization: Option<String>,
}

pub struct HttpProxy {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    stop: CancellationToken,
}

impl HttpProxy {
    /// Forwards to `upstream`; `None` answers 502 to everything.
    pub async fn start(upstream: Option<SocketAddr>) -> HttpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (seen_, stop_) = (seen.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = stop_.cancelled() => return,
                };
                let Ok((client, _)) = accepted else { continue };
                let seen = seen_.clone();
                tokio::spawn(async move {
                    let _ = serve(client, upstream, seen).await;
                });
            }
        });
        HttpProxy { addr, seen, stop }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for HttpProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One request per connection: the answer is relayed and the connection closed.
async fn serve(
    mut client: TcpStream,
    upstream: Option<SocketAddr>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    {
        // Read the request head.
        let head_end = loop {
            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let read = client.read(&mut chunk).await?;
            if read == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&chunk[..read]);
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap_or_default().to_owned();
        let headers: Vec<&str> = lines.filter(|l| !l.is_empty()).collect();
        let header = |name: &str| {
            headers.iter().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
        };
        seen.lock().unwrap().push(Seen {
            request_line: request_line.clone(),
            proxy_authorization: header("proxy-authorization"),
        });
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buffer.len() < head_end + length {
            let read = client.read(&mut chunk).await?;
            if read == 0 {
                return Ok(());
            }
            buffer.extend_from_slice(&chunk[..read]);
        }
        let body = buffer[head_end..head_end + length].to_vec();
        buffer.drain(..head_end + length);
        let Some(upstream) = upstream else {
            client
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 11\r\nconnection: close\r\n\r\nbad gateway")
                .await?;
            return Ok(());
        };
        // `GET http://host/path HTTP/1.1` becomes `GET /path HTTP/1.1`, sent with `connection: close`.
        let mut parts = request_line.splitn(3, ' ');
        let (method, target, version) = (
            parts.next().unwrap_or("GET"),
            parts.next().unwrap_or("/"),
            parts.next().unwrap_or("HTTP/1.1"),
        );
        let path = match target.split_once("://") {
            Some((_, rest)) => rest.find('/').map(|i| &rest[i..]).unwrap_or("/").to_owned(),
            None => target.to_owned(),
        };
        let mut request = format!("{method} {path} {version}\r\n");
        for line in &headers {
            let key = line
                .split(':')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            if key.starts_with("proxy-") || key == "connection" {
                continue;
            }
            request.push_str(line);
            request.push_str("\r\n");
        }
        request.push_str("connection: close\r\n\r\n");
        let mut server = TcpStream::connect(upstream).await?;
        server.write_all(request.as_bytes()).await?;
        server.write_all(&body).await?;
        let mut answer = Vec::new();
        server.read_to_end(&mut answer).await?;
        client.write_all(&answer).await?;
        // The upstream answer may lack a length (close-delimited); close to be safe.
        Ok(())
    }
}
