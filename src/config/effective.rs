//! Values LiteFS derives when a key is left out: a Consul (or etcd) node's `lease.hostname`
//! is the machine's hostname, and its `lease.advertise-url` is `http://<hostname>:<port>`, the
//! port being `http.addr`'s. A static lease keeps both as written: there they name the primary.

use super::{machine_hostname, Config, LeaseType};

impl Config {
    /// Fills `lease.hostname` and `lease.advertise-url` for an electing lease (Consul, etcd)
    /// as LiteFS's `mount` does. The URL uses `https` when `http.cert-file` is set (an ltxd
    /// extension; LiteFS has no TLS). A hostname that cannot be read leaves both empty, and the
    /// lease backend then refuses to start with an error naming them.
    pub(super) fn fill_lease_identity(&mut self) {
        self.fill_lease_identity_with(&machine_hostname);
    }

    fn fill_lease_identity_with(&mut self, hostname: &dyn Fn() -> Option<String>) {
        if self.lease.kind == LeaseType::Static {
            return;
        }
        if self.lease.hostname.is_empty() {
            if let Some(name) = hostname() {
                self.lease.hostname = name;
            }
        }
        if self.lease.advertise_url.is_empty() && !self.lease.hostname.is_empty() {
            let scheme = if self.http.cert_file.is_empty() {
                "http"
            } else {
                "https"
            };
            self.lease.advertise_url =
                format!("{scheme}://{}:{}", self.lease.hostname, self.http_port());
        }
    }

    /// The port of `http.addr` (`":20202"`, `host:port`, `[::1]:port`); LiteFS's default
    /// port when the address has none that parses.
    pub fn http_port(&self) -> u16 {
        self.http
            .addr
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
            .unwrap_or(20202)
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, LeaseType};

    fn filled(kind: LeaseType, edit: impl FnOnce(&mut Config)) -> Config {
        let mut config = Config::new(kind);
        edit(&mut config);
        config.fill_lease_identity_with(&|| Some("box-1".to_string()));
        config
    }

    #[test]
    fn consul_and_etcd_default_to_the_machine_and_the_http_port() {
        for kind in [LeaseType::Consul, LeaseType::Etcd] {
            let config = filled(kind, |c| c.http.addr = ":30303".into());
            assert_eq!(config.lease.hostname, "box-1");
            assert_eq!(config.lease.advertise_url, "http://box-1:30303");
        }
    }

    #[test]
    fn written_values_and_static_leases_are_kept() {
        let config = filled(LeaseType::Consul, |c| {
            c.lease.hostname = "me".into();
            c.lease.advertise_url = "http://me.internal:1".into();
        });
        assert_eq!(config.lease.advertise_url, "http://me.internal:1");
        let config = filled(LeaseType::Consul, |c| c.lease.hostname = "me".into());
        assert_eq!(config.lease.advertise_url, "http://me:20202");
        let config = filled(LeaseType::Static, |_| {});
        assert_eq!(config.lease.hostname, "");
        assert_eq!(config.lease.advertise_url, "");
    }

    #[test]
    fn tls_advertises_https() {
        let config = filled(LeaseType::Etcd, |c| {
            c.http.addr = "0.0.0.0:8443".into();
            c.http.cert_file = "cert.pem".into();
        });
        assert_eq!(config.lease.advertise_url, "https://box-1:8443");
    }
}
