//! A LinkedIn stand-in (placeholder; being written).
use std::net::SocketAddr;
use std::time::Duration;
#[derive(Clone, Debug, Default)]
pub struct SandboxConfig {
    pub client_id: String,
    pub client_secret: String,
    pub token_lifetime: Duration,
}
pub struct Sandbox;
impl Sandbox {
    pub async fn start(_l: SocketAddr, _c: SandboxConfig) -> std::io::Result<Sandbox> {
        todo!()
    }
    pub fn api_url(&self) -> String {
        todo!()
    }
    pub fn token_url(&self) -> String {
        todo!()
    }
    pub fn config(&self) -> SandboxConfig {
        todo!()
    }
}
#[derive(clap::Args, Clone, Debug)]
pub struct SandboxArgs {}
pub async fn serve(
    _a: SandboxArgs,
    _s: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    todo!()
}
