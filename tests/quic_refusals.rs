//! A replica that a QUIC primary refuses says why in its own log, at WARN, as over HTTP: a
//! primary certificate from another CA, no client certificate under mTLS, and a wrong token.
//! Before, it logged nothing at the default level and sat with an empty mount.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{free_port, free_udp_port, Node};

/// A CA, and a leaf certificate it signed for `names`, written under `dir` as `<name>.crt` and
/// `<name>.key`; returns the CA's file.
struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    file: PathBuf,
}

impl Ca {
    fn new(dir: &Path, name: &str) -> Ca {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("ltxd test CA {name}"));
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let issuer =
            rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        let file = dir.join(format!("{name}.crt"));
        std::fs::write(&file, issuer.pem()).unwrap();
        Ca { issuer, file }
    }

    /// A certificate for `names` signed by this CA: its certificate and key files.
    fn leaf(&self, dir: &Path, name: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap()
                .signed_by(&key, &self.issuer)
                .unwrap();
        let (cert_file, key_file) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        (cert_file, key_file)
    }
}

/// A static-lease node serving HTTP on a port of its own, with the `quic:` section `quic`.
fn node(advertise_url: &str, candidate: bool, quic: &str) -> Node {
    let port = free_port();
    let lease = format!(
        "  type: static\n  hostname: primary-host\n  advertise-url: {advertise_url}\n  reconnect-delay: 50ms\n  candidate: {candidate}\n"
    );
    Node::configured(
        &format!("127.0.0.1:{port}"),
        "",
        advertise_url,
        &lease,
        &format!("quic:\n{quic}"),
        None,
    )
}

/// Waits until `node`'s log has a WARN line containing each of `needles`.
fn wait_for_warning(node: &Node, needles: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = node.daemon_log();
        let found = log
            .lines()
            .any(|line| line.contains("WARN") && needles.iter().all(|n| line.contains(n)));
        if found {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no WARN line with {needles:?} in the replica's log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn each_quic_refusal_is_logged_on_the_refused_replica() {
    let pki = tempfile::tempdir().unwrap();
    let dir = pki.path();
    let ca = Ca::new(dir, "ca");
    let other_ca = Ca::new(dir, "other-ca");
    let (server_cert, server_key) = ca.leaf(dir, "server", &["127.0.0.1", "localhost"]);
    let (client_cert, client_key) = ca.leaf(dir, "client", &["replica"]);
    let quic_port = free_udp_port();
    let url = format!("quic://127.0.0.1:{quic_port}");
    let primary = node(
        &url,
        true,
        &format!(
            "  addr: 127.0.0.1:{quic_port}\n  cert-file: {}\n  key-file: {}\n  ca-file: {}\n  client-auth: true\n  token: s3cret\n",
            server_cert.display(),
            server_key.display(),
            ca.file.display()
        ),
    );
    primary.sqlite("app.db", "CREATE TABLE t (x INTEGER);");

    let client = |ca_file: &Path, certificate: bool, token: &str| {
        let mut quic = format!("  ca-file: {}\n  token: {token}\n", ca_file.display());
        if certificate {
            quic.push_str(&format!(
                "  cert-file: {}\n  key-file: {}\n",
                client_cert.display(),
                client_key.display()
            ));
        }
        node(&url, false, &quic)
    };

    // The primary's certificate does not chain to the replica's CA.
    let wrong_ca = client(&other_ca.file, true, "s3cret");
    wait_for_warning(&wrong_ca, &["UnknownIssuer"]);
    drop(wrong_ca);

    // mTLS, and the replica has no certificate.
    let no_certificate = client(&ca.file, false, "s3cret");
    wait_for_warning(&no_certificate, &["peer sent no certificates"]);
    drop(no_certificate);

    // The right TLS, the wrong token.
    let wrong_token = client(&ca.file, true, "wrong");
    wait_for_warning(&wrong_token, &["401", "wrong token"]);
    drop(wrong_token);

    // And with everything right, the replica follows.
    let replica = client(&ca.file, true, "s3cret");
    let deadline = Instant::now() + Duration::from_secs(30);
    while replica
        .sqlite_result("app.db", "SELECT count(*) FROM t;")
        .is_err()
    {
        assert!(Instant::now() < deadline, "{}", replica.daemon_log());
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(primary);
}
