//! [`SecurityError`]: why TLS or token settings could not be used.

use std::path::PathBuf;

/// Why TLS or authentication settings could not be turned into a configuration.
///
/// Settings are named by their key without the transport's prefix (`cert-file`, not
/// `quic.cert-file`); the caller knows which transport it was configuring.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// A file could not be read.
    #[error("cannot read the {what} {path}: {source}")]
    Read {
        /// Which setting named the file (`cert-file`, `key-file`, `ca-file`).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A file is not valid PEM, or holds nothing of the expected kind.
    #[error("the {what} {path} is unusable: {reason}")]
    Pem {
        /// Which setting named the file.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A CA certificate cannot serve as a trust anchor.
    #[error("the ca-file {path} holds a certificate that cannot be a trust anchor: {source}")]
    BadCa {
        /// The CA file.
        path: PathBuf,
        /// rustls's reason.
        source: rustls::Error,
    },
    /// The certificate and key do not form a usable identity (for example, they do not match).
    #[error("the certificate {cert} and key {key} cannot be used together: {source}")]
    CertKey {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        source: rustls::Error,
    },
    /// A required setting is missing.
    #[error("{key} is required: {why}")]
    Missing {
        /// The missing key, without the transport's prefix.
        key: &'static str,
        /// Why it is needed.
        why: &'static str,
    },
    /// rustls refused to build a configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The client-certificate verifier could not be built.
    #[error("client certificate verification: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
    /// The insecure-dev certificate could not be generated.
    #[error("generating the insecure-dev certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// The token's environment variable is not set or not UTF-8.
    #[error("token-env names {name}, which is not set or not UTF-8")]
    TokenEnv {
        /// The variable's name.
        name: String,
    },
    /// A token is empty.
    #[error("the token is empty")]
    EmptyToken,
    /// Both `token` and `token-env` are set.
    #[error("token and token-env are both set; use one")]
    TokenConflict,
}
