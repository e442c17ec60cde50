//! LiteFS's `mount` flags, with LiteFS's meaning, and `--check-config`.

use std::path::{Path, PathBuf};

use clap::Args;

use ltxd::config::{process_env, Config, LoadOptions};

/// The flags `litefs mount` takes besides `-config` (single-dash spellings are accepted, and
/// Go's `-flag=false`).
#[derive(Args, Debug, Default)]
pub struct LitefsFlags {
    /// Do not expand environment variables in the configuration file.
    #[arg(long = "no-expand-env", action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub no_expand_env: bool,
    /// LiteFS: do not unmount whatever is mounted at fuse.dir before mounting. Accepted; ltxd
    /// never unmounts a live mount (it clears only a dead one, on which mounting would fail).
    #[arg(long = "skip-unmount", action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub skip_unmount: bool,
    /// Log every FUSE request (sets fuse.debug).
    #[arg(long = "fuse.debug", action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub fuse_debug: bool,
    /// Log at debug level (sets log.debug).
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub debug: bool,
    /// LiteFS: write the trace log to stdout. Accepted; ltxd warns that it writes none.
    #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub tracing: bool,
    /// Print the configuration as it will be used (defaults filled in, secrets hidden), then
    /// exit without mounting.
    #[arg(long = "check-config")]
    pub check_config: bool,
}

/// Loads the configuration and applies the flags that override it, as LiteFS does.
pub fn load(path: Option<&Path>, flags: &LitefsFlags) -> anyhow::Result<(Config, PathBuf)> {
    let options = LoadOptions {
        no_expand_env: flags.no_expand_env,
    };
    let (mut config, path) = Config::load_with(path, &process_env, &options)?;
    if flags.fuse_debug {
        config.fuse.debug = true;
    }
    if flags.debug {
        config.log.debug = true;
    }
    Ok((config, path))
}

/// Logs one warning for each set key ltxd does not act on, and for `-tracing`.
pub fn warn_unacted(config: &Config, flags: &LitefsFlags) {
    for row in config.unacted() {
        tracing::warn!(
            "{}: accepted but not acted on by ltxd yet; {}",
            row.key,
            row.instead
        );
    }
    if flags.tracing {
        tracing::warn!(
            "-tracing: accepted but not acted on by ltxd yet; no trace log is written \
             (LTXD_LOG=trace logs the same events to stderr)"
        );
    }
}

/// The configuration as `--check-config` prints it: every secret replaced.
pub fn printable(config: &Config) -> String {
    let mut shown = config.clone();
    for secret in [
        &mut shown.http.token,
        &mut shown.quic.token,
        &mut shown.lease.etcd.password,
        &mut shown.backup.auth_token,
    ] {
        if !secret.is_empty() {
            *secret = "<redacted>".to_string();
        }
    }
    shown.lease.consul.url = without_userinfo(&shown.lease.consul.url);
    for endpoint in &mut shown.lease.etcd.endpoints {
        *endpoint = without_userinfo(endpoint);
    }
    format!("{shown:#?}")
}

/// A URL with its `user:password@` part replaced (Consul URLs carry their ACL token there).
fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://<redacted>@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use ltxd::config::{Config, LeaseType};

    #[test]
    fn secrets_are_hidden() {
        let mut config = Config::new(LeaseType::Consul);
        config.http.token = "s3cret-http".into();
        config.quic.token = "s3cret-quic".into();
        config.lease.etcd.password = "s3cret-etcd".into();
        config.backup.auth_token = "s3cret-backup".into();
        config.lease.consul.url = "https://:s3cret-acl@consul.example/prefix/".into();
        let shown = super::printable(&config);
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("https://<redacted>@consul.example/prefix/"));
        assert_eq!(
            super::without_userinfo("http://etcd:2379/x@y"),
            "http://etcd:2379/x@y"
        );
    }
}
