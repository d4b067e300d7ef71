//! The TLS material the broker (`ssl://` listeners) and its clients (`ssl://` addresses) read
//! from PEM files, and the cryptography both use: one reader, so that both bound what they read
//! and both name the file, and what to do, when it is unusable.
//!
//! Errors are one sentence each, for the caller to wrap: brokerd stops at start (or keeps its
//! previous configuration on a reload), a client refuses to start.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::RootCertStore;
use std::path::Path;
use std::sync::Arc;

/// The largest PEM file read: certificate chains and keys are a few KiB, and a file far larger
/// is a mistake (a log, a disk image) that should not be read into memory whole.
pub const MAX_PEM_BYTES: u64 = 1 << 20;

/// The cryptography every TLS configuration here uses: ring, which builds with a C compiler
/// alone. rustls 0.23.48 deprecates it for lacking post-quantum key exchange; the provider that
/// has it (aws-lc-rs) needs cmake and nasm to build, which this project does not require.
#[allow(deprecated)]
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in the PEM file `path`, in order; at least one. `what` names the file for
/// the operator (an option, a config key).
pub fn certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path, what)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{what} {}: not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{what} {}: no certificate in it; give a PEM file with at least one \
             -----BEGIN CERTIFICATE----- block",
            path.display()
        ));
    }
    Ok(certs)
}

/// The CA certificates of the PEM file `path`, as the roots a peer's certificate must chain to.
pub fn roots(path: &Path, what: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for ca in certificates(path, what)? {
        roots.add(ca).map_err(|e| {
            format!(
                "{what} {}: a certificate in it is not a usable CA certificate: {e}",
                path.display()
            )
        })?;
    }
    Ok(roots)
}

/// The first private key in the PEM file `path` (PKCS#8, PKCS#1 or SEC1, unencrypted).
pub fn private_key(path: &Path, what: &str) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read(path, what)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        format!(
            "{what} {}: no private key found ({e}); give the PEM file holding the \
             certificate's private key (BEGIN PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY), \
             unencrypted",
            path.display()
        )
    })
}

/// A whole file, bounded by [`MAX_PEM_BYTES`].
fn read(path: &Path, what: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| {
        format!(
            "cannot read {what} {}: {e}; check the path and that this program's user may read it",
            path.display()
        )
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {what} {}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(format!(
            "{what} {} is larger than {MAX_PEM_BYTES} bytes: that is no PEM certificate or key",
            path.display()
        ));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_files_are_named_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = certificates(&missing, "--tls-cert-file").unwrap_err();
        assert!(
            err.starts_with("cannot read --tls-cert-file") && err.contains("missing.pem"),
            "{err}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not pem at all\n").unwrap();
        let err = certificates(&empty, "CA file").unwrap_err();
        assert!(err.contains("no certificate in it"), "{err}");
        let err = private_key(&empty, "--tls-key-file").unwrap_err();
        assert!(err.contains("no private key found"), "{err}");
        let huge = dir.path().join("huge.pem");
        std::fs::write(&huge, vec![b'x'; MAX_PEM_BYTES as usize + 1]).unwrap();
        let err = certificates(&huge, "CA file").unwrap_err();
        assert!(err.contains("is larger than"), "{err}");
    }
}
