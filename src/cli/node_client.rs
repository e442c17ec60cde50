//! How the admin commands (`ltxd status`, `ltxd promote`, `ltxd export`, `ltxd import`) reach a
//! running node's HTTP API.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use ltxd::config::{process_env, Config};
use ltxd_http::HttpConnector;
use ltxd_transport_security::{client_config, Token};

/// Which node to ask, and how.
#[derive(Args)]
pub struct NodeArgs {
    /// The node's URL. Without it, the node at `http.addr` of the configuration.
    #[arg(long)]
    url: Option<String>,
    /// The configuration file (same search as `ltxd mount`): its `http.addr` gives the URL
    /// when `--url` is not set, and its `http.token` (or `token-env`) and TLS keys are used.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The node's `http.token`, when it requires one (or set `LTXD_TOKEN`); it overrides the
    /// configuration's.
    #[arg(long, env = "LTXD_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl NodeArgs {
    /// The node's URL and a client for it.
    pub fn client(&self) -> anyhow::Result<(String, HttpConnector)> {
        // An explicit --url without --config needs no file.
        let config = match (&self.url, &self.config) {
            (Some(_), None) => None,
            (_, path) => Some(Config::load(path.as_deref(), &process_env)?.0),
        };
        let url = match (&self.url, &config) {
            (Some(url), _) => url.clone(),
            (None, Some(config)) => url_of(config),
            (None, None) => anyhow::bail!("give --url or --config"),
        };
        let security = config.as_ref().map(|c| c.http.security());
        let token = match (&self.token, &security) {
            (Some(token), _) => Some(Token::new(token).context("--token")?),
            (None, Some(security)) => super::mount::token("http", security)?,
            (None, None) => None,
        };
        let tls = match &security {
            Some(s) if !s.ca_file.is_empty() || s.insecure_dev => {
                Some(client_config(&super::mount::tls_files(s)).context("http.ca-file")?)
            }
            _ => None,
        };
        Ok((url, HttpConnector::with_security(tls, token)))
    }
}

/// The URL of the node the configuration describes, on this machine: `https` when the node
/// serves TLS (`http.cert-file`, or `insecure-dev`).
fn url_of(config: &Config) -> String {
    let addr = &config.http.addr;
    let addr = match addr.strip_prefix(':') {
        Some(port) => format!("127.0.0.1:{port}"),
        None => addr.replace("0.0.0.0", "127.0.0.1"),
    };
    let tls = !config.http.cert_file.is_empty() || config.http.insecure_dev;
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{addr}")
}
