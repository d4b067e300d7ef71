//! TLS for `ssl://` listeners (ActiveMQ's `stomp+ssl`): the server's certificate chain and key,
//! and optionally the CA that client certificates must chain to, read from PEM files into one
//! rustls [`ServerConfig`].
//!
//! The configuration is built at start, where any problem stops brokerd with a message naming
//! the file and what to do, and again on each SIGHUP ([`crate::reload`]), where a problem keeps
//! the previous configuration. Each accepted connection takes the configuration current at that
//! moment; a connection keeps the one it started with for its whole life, so a reload never
//! disturbs an open connection.

use anyhow::{bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The largest PEM file read: certificate chains and keys are a few KiB, and a file far larger
/// is a mistake (a log, a disk image) that should not be read into memory whole.
const MAX_PEM_BYTES: u64 = 1 << 20;

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

/// The cryptography every TLS configuration here uses: ring, which builds with a C compiler
/// alone. rustls 0.23.48 deprecates it for lacking post-quantum key exchange; the provider that
/// has it (aws-lc-rs) needs cmake and nasm to build, which this project does not require.
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads `files` into a server configuration. Errors name the file and what to do about it: an
/// unreadable file, one without a certificate or key, a key that does not belong to the
/// certificate, a CA file without a usable CA.
pub fn load(files: &Files) -> anyhow::Result<ServerConfig> {
    let chain = certificates(&files.cert, "--tls-cert-file")?;
    let key_pem = read(&files.key, "--tls-key-file")?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        anyhow::anyhow!(
            "--tls-key-file {}: no private key found ({e}); give the PEM file holding the \
             certificate's private key (BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY), \
             unencrypted",
            files.key.display()
        )
    })?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("the TLS library refused its own default protocol versions")?;
    let builder = match &files.client_ca {
        Some(ca_file) => {
            let mut roots = RootCertStore::empty();
            for ca in certificates(ca_file, "--tls-client-ca-file")? {
                roots.add(ca).with_context(|| {
                    format!(
                        "--tls-client-ca-file {}: a certificate in it is not a usable CA \
                         certificate",
                        ca_file.display()
                    )
                })?;
            }
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

/// Every certificate in a PEM file, in order; at least one.
fn certificates(path: &Path, option: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let pem = read(path, option)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("{option} {}: not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        bail!(
            "{option} {}: no certificate in it; give a PEM file with at least one \
             -----BEGIN CERTIFICATE----- block",
            path.display()
        );
    }
    Ok(certs)
}

/// A whole file, bounded by [`MAX_PEM_BYTES`].
fn read(path: &Path, option: &str) -> anyhow::Result<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| {
        anyhow::anyhow!(
            "cannot read {option} {}: {e}; check the path and that brokerd's user may read it",
            path.display()
        )
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| anyhow::anyhow!("cannot read {option} {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        bail!(
            "{option} {} is larger than {MAX_PEM_BYTES} bytes: that is no PEM certificate or key",
            path.display()
        );
    }
    Ok(bytes)
}
