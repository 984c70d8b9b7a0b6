//! TLS for the end-to-end tests: a CA and the server certificates it signs, made at test time with
//! the `openssl` command line tool, and a client that reports what a TLS listener serves.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A server's certificate chain and key files (`scheduler.tls`).
#[derive(Clone, Debug)]
pub struct ServerFiles {
    /// PEM certificate.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
    /// PEM certificate of the CA that signed it (what a client must trust).
    pub ca_file: PathBuf,
}

/// A private certificate authority in a temporary folder.
pub struct TestCa {
    dir: tempfile::TempDir,
    /// The CA's PEM certificate.
    pub ca_file: PathBuf,
}

/// Run the `openssl` command line tool in `dir`, failing the test when it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("the `openssl` command line tool is needed (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const EC_KEY: [&str; 4] = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];

impl TestCa {
    /// A new CA (P-256, valid for two days) with a name of its own.
    pub fn new() -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        let subject = format!("/CN=pixelfarm e2e CA {}", uuid::Uuid::new_v4().simple());
        let mut args = vec!["req", "-x509", "-nodes", "-days", "2"];
        args.extend(EC_KEY);
        args.extend([
            "-subj",
            &subject,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ]);
        openssl(dir.path(), &args);
        let ca_file = dir.path().join("ca.crt");
        TestCa { dir, ca_file }
    }

    /// A server certificate for 127.0.0.1 and localhost signed by this CA, in `NAME.crt` and
    /// `NAME.key`.
    pub fn issue(&self, name: &str) -> ServerFiles {
        let d = self.dir.path();
        let (crt, key, csr, ext) = (
            format!("{name}.crt"),
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.ext"),
        );
        std::fs::write(
            d.join(&ext),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let mut args = vec!["req", "-nodes", "-subj", "/CN=localhost"];
        args.extend(EC_KEY);
        args.extend(["-keyout", &key, "-out", &csr]);
        openssl(d, &args);
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &crt,
            ],
        );
        ServerFiles {
            cert_file: d.join(crt),
            key_file: d.join(key),
            ca_file: self.ca_file.clone(),
        }
    }
}

impl Default for TestCa {
    fn default() -> Self {
        TestCa::new()
    }
}

/// The DER of the first certificate in a PEM file.
pub fn leaf_der(cert_file: &Path) -> Vec<u8> {
    CertificateDer::pem_file_iter(cert_file)
        .unwrap()
        .next()
        .expect("a PEM certificate")
        .unwrap()
        .to_vec()
}

/// A TLS connection to `addr` (as `localhost`) trusting only `ca_file`, offering the protocols
/// of `alpn`.
///
/// # Errors
/// When the connection or the handshake fails (an untrusted certificate included).
pub async fn connect(
    addr: SocketAddr,
    ca_file: &Path,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .map_err(|_| std::io::Error::other("tls handshake timed out"))?
}

/// The DER of the certificate the listener at `addr` (gRPC or HTTP) serves now.
///
/// # Errors
/// As [`connect`].
pub async fn served_certificate(addr: SocketAddr, ca_file: &Path) -> std::io::Result<Vec<u8>> {
    let tls = connect(addr, ca_file, &[b"h2", b"http/1.1"]).await?;
    let certs = tls.get_ref().1.peer_certificates().unwrap_or_default();
    Ok(certs.first().map(|c| c.to_vec()).unwrap_or_default())
}

/// `GET https://localhost{path}` on `addr` trusting `ca_file`: the status and the body.
///
/// # Errors
/// As [`connect`], and when the answer is not HTTP.
pub async fn https_get(
    addr: SocketAddr,
    ca_file: &Path,
    path: &str,
) -> std::io::Result<(u16, String)> {
    let mut tls = connect(addr, ca_file, &[b"http/1.1"]).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    tls.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut buf)).await;
    match read {
        Ok(Ok(_)) => {}
        // A server that closes without close_notify: what arrived is the whole answer.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(std::io::Error::other("no answer within 10 s")),
    }
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {text:.80}")))?;
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_string()))
}
