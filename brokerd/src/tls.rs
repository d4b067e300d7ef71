//! TLS for `ssl://` listeners (ActiveMQ's `stomp+ssl`): the server's certificate chain and key,
//! and optionally the CA that client certificates must chain to, read from PEM files into one
//! rustls [`ServerConfig`].
//!
//! The configuration is built at start, where any problem stops brokerd with a message naming
//! the file and what to do, and again on each SIGHUP ([`crate::reload`]), where a problem keeps
//! the previous configuration. Each accepted connection takes the configuration current at that
//! moment; a connection keeps the one it started with for its whole life, so a reload never
//! disturbs an open connection.

use anyhow::Context;
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;
use std::path::PathBuf;
use std::sync::Arc;

/// Where the TLS material lives (brokerd's `--tls-*-file` options, lockd's `tls_*_file` keys).
#[derive(Debug, Clone)]
pub struct Files {
    /// The server's certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// The private key of the leaf certificate (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, every client must present a certificate that chains to one of these CAs (PEM).
    pub client_ca: Option<PathBuf>,
}

/// Reads `files` into a server configuration. Errors name the file and what to do about it: an
/// unreadable file, one without a certificate or key, a key that does not belong to the
/// certificate, a CA file without a usable CA.
pub fn load(files: &Files) -> anyhow::Result<ServerConfig> {
    let chain =
        tls_files::certificates(&files.cert, "--tls-cert-file").map_err(anyhow::Error::msg)?;
    let key = tls_files::private_key(&files.key, "--tls-key-file").map_err(anyhow::Error::msg)?;
    let provider = tls_files::provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("the TLS library refused its own default protocol versions")?;
    let builder = match &files.client_ca {
        Some(ca_file) => {
            let roots =
                tls_files::roots(ca_file, "--tls-client-ca-file").map_err(anyhow::Error::msg)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .with_context(|| {
                    format!(
                        "--tls-client-ca-file {}: cannot verify client certificates with it",
                        ca_file.display()
                    )
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    builder.with_single_cert(chain, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => anyhow::anyhow!(
            "--tls-key-file {} does not belong to the certificate in --tls-cert-file {}: give \
             the key the certificate was issued for",
            files.key.display(),
            files.cert.display()
        ),
        other => anyhow::anyhow!(
            "--tls-key-file {} with --tls-cert-file {}: {other}; give an RSA, ECDSA or Ed25519 \
             key and its certificate",
            files.key.display(),
            files.cert.display()
        ),
    })
}
