//! How the admin commands (`ltxd status`, `ltxd promote`) reach a running node's HTTP API.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use ltxd::config::{process_env, Config};
use ltxd_http::HttpConnector;

/// Which node to ask, and how.
#[derive(Args)]
pub struct NodeArgs {
    /// The node's URL. Without it, the node at `http.addr` of the configuration.
    #[arg(long)]
    url: Option<String>,
    /// The configuration file, to find `http.addr` (same search as `ltxd mount`).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The node's `http.token`, when it requires one (or set `LTXD_TOKEN`).
    #[arg(long, env = "LTXD_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl NodeArgs {
    /// The node's URL and a client for it.
    pub fn client(&self) -> anyhow::Result<(String, HttpConnector)> {
        let url = match &self.url {
            Some(url) => url.clone(),
            None => url_from_config(self.config.as_deref())?,
        };
        let token = self
            .token
            .as_deref()
            .map(ltxd_transport_security::Token::new)
            .transpose()
            .context("--token")?;
        Ok((url, HttpConnector::with_security(None, token)))
    }
}

/// The URL of the node the configuration describes.
fn url_from_config(config: Option<&std::path::Path>) -> anyhow::Result<String> {
    let (config, _) = Config::load(config, &process_env)?;
    let addr = &config.http.addr;
    let addr = match addr.strip_prefix(':') {
        Some(port) => format!("127.0.0.1:{port}"),
        None => addr.replace("0.0.0.0", "127.0.0.1"),
    };
    Ok(format!("http://{addr}"))
}
