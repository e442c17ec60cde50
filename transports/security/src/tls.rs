//! [`TlsFiles`] and the rustls server and client configurations built from them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::SecurityError;

/// The names in the certificate that `insecure-dev` generates.
const INSECURE_DEV_NAMES: [&str; 2] = ["localhost", "ltxd-insecure-dev"];

/// A transport's TLS settings: `<transport>.cert-file`, `.key-file`, `.ca-file`, `.client-auth`
/// and `.insecure-dev`.
///
/// One node uses the same files in both directions: `cert-file` and `key-file` are its identity,
/// as a server and (under mTLS) as a client; `ca-file` verifies the other side, the server's
/// certificate on a client, and client certificates on a server when `client-auth` is on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// The node's certificate chain (PEM), leaf first.
    pub cert_file: Option<PathBuf>,
    /// The private key of the certificate (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// The CA certificates (PEM) that peers' certificates must chain to.
    pub ca_file: Option<PathBuf>,
    /// A server demands a client certificate that chains to `ca-file` (mTLS).
    pub client_auth: bool,
    /// Development only: a server without `cert-file` generates a self-signed certificate, and
    /// a client accepts any server certificate. Both log a warning.
    pub insecure_dev: bool,
}

/// The crypto provider of every configuration built here: ring.
fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server's TLS configuration, with what it was built to demand of clients.
#[derive(Debug)]
pub struct ServerTls {
    /// The rustls configuration.
    pub config: ServerConfig,
    /// True when `config` was built with a verifier that refuses every client without a
    /// certificate chaining to `ca-file` (mTLS). Set where the verifier is installed, so a
    /// transport can decide from what exists whether its peers are authenticated.
    pub verifies_clients: bool,
}

/// A server configuration (TLS 1.3, ring, no ALPN: the transport sets its own); see
/// [`server_tls`], which also says whether it verifies clients.
pub fn server_config(files: &TlsFiles) -> Result<ServerConfig, SecurityError> {
    server_tls(files).map(|tls| tls.config)
}

/// A server configuration (TLS 1.3, ring, no ALPN: the transport sets its own).
///
/// It needs `cert-file` and `key-file`, except under `insecure-dev`, where a missing pair is
/// replaced by a self-signed one generated now. With `client-auth` it needs `ca-file` and refuses
/// clients without a certificate that chains to it.
pub fn server_tls(files: &TlsFiles) -> Result<ServerTls, SecurityError> {
    let provider = crypto_provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let verifies_clients = files.client_auth;
    let builder = if verifies_clients {
        let ca_file = files.ca_file.as_deref().ok_or(SecurityError::Missing {
            key: "ca-file",
            why: "client-auth verifies client certificates against it",
        })?;
        let roots = load_roots(ca_file)?;
        let verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = match identity(files, "a TLS server needs a certificate")? {
        Some(Identity {
            cert,
            key,
            chain,
            private_key,
        }) => builder
            .with_single_cert(chain, private_key)
            .map_err(|source| cert_key_error(cert, key, source))?,
        None => {
            tracing::warn!(
                "insecure-dev: serving TLS with a self-signed certificate generated at start-up; \
                 peers cannot verify this node, so use this only for development"
            );
            let generated = rcgen::generate_simple_self_signed(
                INSECURE_DEV_NAMES.map(str::to_string).to_vec(),
            )?;
            let key = PrivatePkcs8KeyDer::from(generated.signing_key.serialize_der());
            builder.with_single_cert(vec![generated.cert.der().clone()], key.into())?
        }
    };
    Ok(ServerTls {
        config,
        verifies_clients,
    })
}

/// A client configuration (TLS 1.3, ring, no ALPN: the transport sets its own).
///
/// The server's certificate must chain to `ca-file`, except under `insecure-dev`, where any
/// server certificate is accepted with a warning on each handshake. When `cert-file` and
/// `key-file` are set, the client presents them to servers that ask (mTLS).
pub fn client_config(files: &TlsFiles) -> Result<ClientConfig, SecurityError> {
    let provider = crypto_provider();
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let builder = if files.insecure_dev {
        tracing::warn!(
            "insecure-dev: this node will accept any server certificate; use this only for \
             development"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(InsecureDevVerifier {
                algorithms: provider.signature_verification_algorithms,
            }))
    } else {
        let ca_file = files.ca_file.as_deref().ok_or(SecurityError::Missing {
            key: "ca-file",
            why: "a TLS client verifies the server's certificate against it \
                  (or set insecure-dev for development)",
        })?;
        builder.with_root_certificates(load_roots(ca_file)?)
    };
    if files.cert_file.is_none() && files.key_file.is_none() {
        return Ok(builder.with_no_client_auth());
    }
    match identity(files, "a client certificate needs its key")? {
        Some(Identity {
            cert,
            key,
            chain,
            private_key,
        }) => builder
            .with_client_auth_cert(chain, private_key)
            .map_err(|source| cert_key_error(cert, key, source)),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// A certificate chain and its key, loaded from the files that name them.
struct Identity<'a> {
    cert: &'a Path,
    key: &'a Path,
    chain: Vec<CertificateDer<'static>>,
    private_key: PrivateKeyDer<'static>,
}

fn cert_key_error(cert: &Path, key: &Path, source: rustls::Error) -> SecurityError {
    SecurityError::CertKey {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        source,
    }
}

/// The identity the settings name; `None` when neither file is set and `insecure-dev` allows
/// that; an error when only one of them is set.
fn identity<'a>(
    files: &'a TlsFiles,
    why: &'static str,
) -> Result<Option<Identity<'a>>, SecurityError> {
    match (files.cert_file.as_deref(), files.key_file.as_deref()) {
        (Some(cert), Some(key)) => Ok(Some(Identity {
            cert,
            key,
            chain: load_certs(cert)?,
            private_key: load_key(key)?,
        })),
        (None, None) if files.insecure_dev => Ok(None),
        (None, key) => Err(SecurityError::Missing {
            key: "cert-file",
            why: if key.is_some() {
                "key-file is set"
            } else {
                why
            },
        }),
        (Some(_), None) => Err(SecurityError::Missing {
            key: "key-file",
            why: "cert-file is set",
        }),
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|source| SecurityError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn pem_error(what: &'static str, path: &Path, reason: impl ToString) -> SecurityError {
    SecurityError::Pem {
        what,
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn load_pem_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, SecurityError> {
    let bytes = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| pem_error(what, path, err))?;
    if certs.is_empty() {
        return Err(pem_error(what, path, "it holds no CERTIFICATE block"));
    }
    Ok(certs)
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, SecurityError> {
    load_pem_certs("cert-file", path)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, SecurityError> {
    let bytes = read("key-file", path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|err| match err {
        rustls::pki_types::pem::Error::NoItemsFound => {
            pem_error("key-file", path, "it holds no PRIVATE KEY block")
        }
        err => pem_error("key-file", path, err),
    })
}

fn load_roots(path: &Path) -> Result<RootCertStore, SecurityError> {
    let mut roots = RootCertStore::empty();
    for cert in load_pem_certs("ca-file", path)? {
        roots.add(cert).map_err(|source| SecurityError::BadCa {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(roots)
}

/// The client's verifier under `insecure-dev`: any certificate is accepted, with a warning, but
/// the handshake signature must still be valid for the certificate presented.
#[derive(Debug)]
struct InsecureDevVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for InsecureDevVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        tracing::warn!(
            server = server_name.to_str().as_ref(),
            "insecure-dev: accepting the server's certificate without verifying it"
        );
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA and a leaf it signed for `localhost`, written as PEM files into `dir`.
    fn write_pki(dir: &Path) -> TlsFiles {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let files = TlsFiles {
            cert_file: Some(dir.join("node.crt")),
            key_file: Some(dir.join("node.key")),
            ca_file: Some(dir.join("ca.crt")),
            client_auth: true,
            insecure_dev: false,
        };
        std::fs::write(files.cert_file.as_ref().unwrap(), leaf.pem()).unwrap();
        std::fs::write(files.key_file.as_ref().unwrap(), leaf_key.serialize_pem()).unwrap();
        std::fs::write(files.ca_file.as_ref().unwrap(), ca.pem()).unwrap();
        files
    }

    #[test]
    fn real_files_build_both_sides_with_ring() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_pki(dir.path());
        let server = server_config(&files).unwrap();
        let client = client_config(&files).unwrap();
        assert!(client.client_auth_cert_resolver.has_certs());
        assert!(server.alpn_protocols.is_empty() && client.alpn_protocols.is_empty());
        let ring = rustls::crypto::ring::default_provider();
        assert_eq!(
            client.crypto_provider().cipher_suites,
            ring.cipher_suites,
            "the ring provider"
        );
    }

    #[test]
    fn errors_name_the_file_and_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = write_pki(dir.path());

        let missing = dir.path().join("absent.crt");
        files.cert_file = Some(missing.clone());
        let err = server_config(&files).unwrap_err();
        assert!(
            matches!(&err, SecurityError::Read { what: "cert-file", path, .. } if *path == missing)
        );
        assert!(err.to_string().contains("absent.crt"), "{err}");

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        files.cert_file = Some(garbage.clone());
        let err = server_config(&files).unwrap_err();
        assert!(
            matches!(
                &err,
                SecurityError::Pem {
                    what: "cert-file",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("garbage.pem"), "{err}");

        files.ca_file = Some(garbage.clone());
        let err = client_config(&files).unwrap_err();
        assert!(
            matches!(
                &err,
                SecurityError::Pem {
                    what: "ca-file",
                    ..
                }
            ),
            "{err}"
        );

        let other = tempfile::tempdir().unwrap();
        let mut mismatched = write_pki(dir.path());
        mismatched.key_file = write_pki(other.path()).key_file;
        let err = server_config(&mismatched).unwrap_err();
        assert!(matches!(err, SecurityError::CertKey { .. }), "{err}");

        mismatched.key_file = mismatched.cert_file.clone();
        let err = server_config(&mismatched).unwrap_err();
        assert!(err.to_string().contains("no PRIVATE KEY"), "{err}");
    }

    #[test]
    fn missing_material_is_refused_unless_insecure_dev() {
        let none = TlsFiles::default();
        assert!(matches!(
            server_config(&none),
            Err(SecurityError::Missing {
                key: "cert-file",
                ..
            })
        ));
        assert!(matches!(
            client_config(&none),
            Err(SecurityError::Missing { key: "ca-file", .. })
        ));
        let half = TlsFiles {
            cert_file: Some("node.crt".into()),
            insecure_dev: true,
            ..TlsFiles::default()
        };
        assert!(matches!(
            server_config(&half),
            Err(SecurityError::Missing {
                key: "key-file",
                ..
            })
        ));
        let mtls_without_ca = TlsFiles {
            client_auth: true,
            insecure_dev: true,
            ..TlsFiles::default()
        };
        assert!(matches!(
            server_config(&mtls_without_ca),
            Err(SecurityError::Missing { key: "ca-file", .. })
        ));

        let dev = TlsFiles {
            insecure_dev: true,
            ..TlsFiles::default()
        };
        server_config(&dev).unwrap();
        let client = client_config(&dev).unwrap();
        assert!(!client.client_auth_cert_resolver.has_certs());
    }
}
