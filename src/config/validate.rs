//! Checks across keys, made after parsing. Each failure names one key.

use std::path::Path;

use super::{BackupType, Config, LeaseType, SyncMode};

/// A failed check: the key at fault and what is wrong.
pub(super) type Failure = (String, String);

fn fail(key: &str, message: impl Into<String>) -> Result<(), Failure> {
    Err((key.to_string(), message.into()))
}

impl Config {
    /// Every check, in the order the keys usually appear in a file; the first failure wins.
    pub(super) fn check(&self) -> Result<(), Failure> {
        for (i, exec) in self.exec.iter().enumerate() {
            let problem = match super::split_command(&exec.cmd) {
                None => "cannot be split into words: a quote is not closed, or a backslash ends it",
                Some(words) if words.is_empty() => "the command must not be empty",
                Some(_) => continue,
            };
            let key = if self.exec.len() == 1 {
                "exec".to_string()
            } else {
                format!("exec[{i}].cmd")
            };
            return Err((key, problem.into()));
        }
        if self.data.dir.is_empty() {
            return fail("data.dir", "must not be empty");
        }
        if self.fuse.dir.is_empty() {
            return fail("fuse.dir", "must not be empty");
        }
        if Path::new(&self.data.dir) == Path::new(&self.fuse.dir) {
            return fail(
                "data.dir",
                format!(
                    "must differ from fuse.dir (both are {:?}): the store cannot live inside \
                     its own mount",
                    self.data.dir
                ),
            );
        }
        if self.proxy.target.is_empty() {
            // The proxy is off; its other keys are ignored.
        } else if self.proxy.addr.is_empty() {
            return fail("proxy.addr", "required when proxy.target is set");
        } else if self.proxy.db.is_empty() {
            return fail("proxy.db", "required when proxy.target is set");
        }
        self.check_transports()?;
        self.check_lease()?;
        if self.backup.kind == Some(BackupType::File) && self.backup.path.is_empty() {
            return fail("backup.path", "required when backup.type is file");
        }
        if self.backup.kind == Some(BackupType::S3) && self.backup.bucket.is_empty() {
            return fail("backup.bucket", "required when backup.type is s3");
        }
        if self.backup.kind.is_some() && self.backup.retention.is_zero() {
            return fail("backup.retention", "must be more than zero");
        }
        if self.replication.sync != SyncMode::Off && self.replication.sync_timeout.is_zero() {
            return fail(
                "replication.sync-timeout",
                "must be more than zero when replication.sync is on",
            );
        }
        Ok(())
    }

    fn check_transports(&self) -> Result<(), Failure> {
        if let Err(why) = check_listen_address(&self.http.addr) {
            return fail("http.addr", why);
        }
        if self.http.header_read_timeout.is_zero() {
            return fail("http.header-read-timeout", "must be greater than zero");
        }
        if self.http.idle_timeout.is_zero() {
            return fail("http.idle-timeout", "must be greater than zero");
        }
        if self.http.max_streams_per_peer == 0 {
            return fail("http.max-streams-per-peer", "must be at least 1");
        }
        if self.http.max_subscriptions == 0 {
            return fail("http.max-subscriptions", "must be at least 1");
        }
        for (section, security) in [
            ("http", self.http.security()),
            ("quic", self.quic.security()),
        ] {
            if !security.token.is_empty() && !security.token_env.is_empty() {
                return fail(
                    &format!("{section}.token-env"),
                    "set token or token-env, not both",
                );
            }
            if security.client_auth && security.ca_file.is_empty() {
                return fail(
                    &format!("{section}.ca-file"),
                    "required with client-auth: it verifies the client certificates",
                );
            }
            if security.client_auth && security.cert_file.is_empty() && !security.insecure_dev {
                return fail(
                    &format!("{section}.cert-file"),
                    "required with client-auth: client certificates are verified in a TLS \
                     handshake, and without cert-file and key-file (or insecure-dev) this node \
                     would serve cleartext that authenticates nobody",
                );
            }
            if security.cert_file.is_empty() != security.key_file.is_empty() {
                return fail(
                    &format!("{section}.key-file"),
                    "cert-file and key-file go together",
                );
            }
        }
        if self.quic.max_connections == 0 {
            return fail("quic.max-connections", "must be at least 1");
        }
        if self.quic.max_streams == 0 {
            return fail("quic.max-streams", "must be at least 1");
        }
        let quic = self.quic.security();
        if !self.quic.addr.is_empty() && quic.cert_file.is_empty() && !quic.insecure_dev {
            return fail(
                "quic.cert-file",
                "QUIC needs TLS material (cert-file and key-file), or an explicit \
                 insecure-dev: true for development",
            );
        }
        Ok(())
    }

    fn check_lease(&self) -> Result<(), Failure> {
        let lease = &self.lease;
        match lease.kind {
            LeaseType::Static => {
                if !lease.candidate && lease.advertise_url.is_empty() {
                    return fail(
                        "lease.advertise-url",
                        "required on a static replica (lease.candidate: false): set it to the \
                         primary's URL, such as http://primary:20202",
                    );
                }
            }
            LeaseType::Consul => {
                if lease.consul.url.is_empty() {
                    return fail("lease.consul.url", "required when lease.type is consul");
                }
                if lease.consul.key.is_empty() {
                    return fail("lease.consul.key", "required when lease.type is consul");
                }
            }
            LeaseType::Etcd => {
                let etcd = &lease.etcd;
                if etcd.endpoints.is_empty() {
                    return fail(
                        "lease.etcd.endpoints",
                        "at least one endpoint URL is required when lease.type is etcd",
                    );
                }
                if let Some(i) = etcd.endpoints.iter().position(|e| e.trim().is_empty()) {
                    return Err((
                        format!("lease.etcd.endpoints[{i}]"),
                        "an endpoint must not be empty".into(),
                    ));
                }
                if etcd.key.is_empty() {
                    return fail("lease.etcd.key", "required when lease.type is etcd");
                }
                if !etcd.cert_file.is_empty() && etcd.key_file.is_empty() {
                    return fail("lease.etcd.key-file", "required when cert-file is set");
                }
                if etcd.cert_file.is_empty() && !etcd.key_file.is_empty() {
                    return fail("lease.etcd.cert-file", "required when key-file is set");
                }
                if !etcd.password.is_empty() && etcd.username.is_empty() {
                    return fail("lease.etcd.username", "required when password is set");
                }
            }
        }
        if lease.candidate && !lease.databases.is_empty() {
            return fail(
                "lease.databases",
                "only allowed on replicas (lease.candidate: false): a candidate must hold \
                 every database",
            );
        }
        Ok(())
    }
}

/// Whether `addr` is a listen address: `:PORT`, `HOST:PORT` or `[IPv6]:PORT`, the host an IP
/// address or a host name, the port a number up to 65535.
fn check_listen_address(addr: &str) -> Result<(), String> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(format!(
            "{addr:?} is not a listen address: write HOST:PORT, or :PORT for every interface"
        ));
    };
    if port.parse::<u16>().is_err() {
        return Err(format!(
            "{addr:?}: the port {port:?} is not a number from 0 to 65535"
        ));
    }
    let bracketed = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    let valid_host = match bracketed {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            host.is_empty()
                || host.parse::<std::net::Ipv4Addr>().is_ok()
                || host.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                })
        }
    };
    if !valid_host {
        return Err(format!(
            "{addr:?}: the host {host:?} is neither an IP address nor a host name"
        ));
    }
    Ok(())
}
