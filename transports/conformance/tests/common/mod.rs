//! What the transports' conformance tests share: a test PKI written to temporary files.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use ltxd_transport_security::TlsFiles;

/// The files of a test PKI: a CA, a server certificate for 127.0.0.1 and localhost, and a client
/// certificate, all signed by the CA. The files live as long as the value.
pub struct Pki {
    _dir: tempfile::TempDir,
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn write_leaf(
    dir: &Path,
    name: &str,
    names: &[&str],
    ca: &rcgen::CertifiedIssuer<'_, rcgen::KeyPair>,
) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap()
            .signed_by(&key, ca)
            .unwrap();
    let (cert_path, key_path) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}

impl Pki {
    /// A new PKI, with a CA of its own.
    pub fn new() -> Pki {
        static CAS: AtomicUsize = AtomicUsize::new(0);
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        // Each CA has its own name, as unrelated CAs do.
        ca_params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("ltxd test CA {}", CAS.fetch_add(1, Ordering::SeqCst)),
        );
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca =
            rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().unwrap())
                .unwrap();
        let ca_path = dir.path().join("ca.crt");
        std::fs::write(&ca_path, ca.pem()).unwrap();
        let (server_cert, server_key) =
            write_leaf(dir.path(), "server", &["127.0.0.1", "localhost"], &ca);
        let (client_cert, client_key) = write_leaf(dir.path(), "client", &["replica"], &ca);
        Pki {
            _dir: dir,
            ca: ca_path,
            server_cert,
            server_key,
            client_cert,
            client_key,
        }
    }

    /// A server's settings: its certificate, and with `client_auth`, mTLS against the CA.
    pub fn server(&self, client_auth: bool) -> TlsFiles {
        TlsFiles {
            cert_file: Some(self.server_cert.clone()),
            key_file: Some(self.server_key.clone()),
            ca_file: Some(self.ca.clone()),
            client_auth,
            insecure_dev: false,
        }
    }

    /// A client's settings: the CA, and the client certificate to present under mTLS.
    pub fn client(&self) -> TlsFiles {
        TlsFiles {
            cert_file: Some(self.client_cert.clone()),
            key_file: Some(self.client_key.clone()),
            ca_file: Some(self.ca.clone()),
            client_auth: false,
            insecure_dev: false,
        }
    }
}
