//! A throwaway PKI for the TLS tests and the TLS benchmark, made with Debian's openssl: a test
//! CA, a server certificate for 127.0.0.1 and localhost signed by it, a client certificate signed
//! by it, and an unrelated CA that must be refused. Files are world-readable, because under root
//! brokerd runs as nobody and must read the key.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The files of one test PKI, in its own directory.
pub struct Pki {
    /// Keeps the directory alive.
    _dir: tempfile::TempDir,
    pub dir: PathBuf,
    /// The CA that signs the server and client certificates.
    pub ca: PathBuf,
    /// A CA that signed nothing here: trusting it alone must fail.
    pub wrong_ca: PathBuf,
    /// Where the broker reads its certificate and key; [`Pki::reissue_server`] replaces them.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// The serial of the first server certificate (hex 1001), as openssl's `-set_serial` takes it.
pub const FIRST_SERVER_SERIAL: u64 = 0x1001;

impl Pki {
    /// Makes the CA, the server certificate (serial [`FIRST_SERVER_SERIAL`], subject
    /// `CN=broker-1001`) and the client certificate.
    pub fn new() -> Pki {
        let dir = tempfile::Builder::new()
            .prefix("ha-tls-")
            .tempdir()
            .expect("tempdir");
        let path = dir.path().to_path_buf();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        let file = |name: &str| path.join(name);
        let pki = Pki {
            ca: file("ca.pem"),
            wrong_ca: file("wrong-ca.pem"),
            server_cert: file("server.pem"),
            server_key: file("server.key"),
            client_cert: file("client.pem"),
            client_key: file("client.key"),
            dir: path,
            _dir: dir,
        };
        pki.self_signed("ca", "Test CA");
        pki.self_signed("wrong-ca", "Wrong CA");
        pki.issue("client", "test-client", 0x77, "extendedKeyUsage=clientAuth");
        pki.reissue_server(FIRST_SERVER_SERIAL);
        pki
    }

    /// Issues a new server certificate and key (serial `serial`, subject `CN=broker-SERIAL`
    /// in hex) over the files the broker reads, as an operator renewing it would.
    pub fn reissue_server(&self, serial: u64) {
        let name = format!("server-{serial:x}");
        self.issue(
            &name,
            &format!("broker-{serial:x}"),
            serial,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth",
        );
        // Renamed into place, so the broker never reads a half-written file.
        fs::rename(self.dir.join(format!("{name}.pem")), &self.server_cert).unwrap();
        fs::rename(self.dir.join(format!("{name}.key")), &self.server_key).unwrap();
    }

    /// A key whose certificate is not the server's: the CA's key.
    pub fn mismatched_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    fn self_signed(&self, name: &str, subject: &str) {
        openssl(
            &self.dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={subject}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pem"),
            ],
        );
        self.readable(name);
    }

    /// Issues `name.pem` and `name.key` signed by the CA. `extensions` are never empty: without
    /// any, openssl makes a version 1 certificate, which rustls refuses.
    fn issue(&self, name: &str, subject: &str, serial: u64, extensions: &str) {
        openssl(
            &self.dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={subject}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ],
        );
        let mut args: Vec<String> = [
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            &format!("0x{serial:x}"),
            "-days",
            "2",
            "-out",
            &format!("{name}.pem"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let file = self.dir.join(format!("{name}.ext"));
        fs::write(&file, format!("{extensions}\n")).unwrap();
        args.extend(["-extfile".into(), file.display().to_string()]);
        openssl(
            &self.dir,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        );
        self.readable(name);
    }

    fn readable(&self, name: &str) {
        for ext in ["pem", "key"] {
            let file = self.dir.join(format!("{name}.{ext}"));
            fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}

/// Runs /usr/bin/openssl in `dir`; panics with its stderr if it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
