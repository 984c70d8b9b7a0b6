//! TLS for a process's listeners: a certificate and key from PEM files, re-read while serving,
//! and [`TlsListener`], which hands out connections once their handshake is done.
//!
//! One [`ServerTls`] serves every listener of a process (the scheduler's gRPC and HTTP ports):
//! each handshake takes the certificate of the moment. [`ServerTls::reload`] re-reads the files
//! every [`RELOAD_INTERVAL`]; a pair that changed and is valid replaces the served one (new
//! handshakes get it, open connections keep theirs), a pair that is not is logged once and the
//! previous certificate stays. cert-manager renews a Secret by swapping both files of the mounted
//! volume at once, so a renewal needs no restart.
//!
//! rustls with the aws-lc-rs provider: the one the S3 client already links.

use anyhow::Context;
use axum::extract::ConnectInfo;
use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use pixelfarm_core::{Error, ErrorKind, Result};
use rustls::crypto::{CryptoProvider, aws_lc_rs};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, version};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::settings::TlsSettings;

/// How often the certificate files are re-read: a renewed certificate is served at most this
/// long after its files change (cert-manager renews weeks before expiry).
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);
/// A connection that has not finished its handshake by then is closed, so a client that
/// connects and says nothing holds a socket, not a listener.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// ALPN of a gRPC listener (HTTP/2 only).
pub const ALPN_GRPC: &[&[u8]] = &[b"h2"];
/// ALPN of the HTTP listener (axum serves HTTP/1.1).
pub const ALPN_HTTP1: &[&[u8]] = &[b"http/1.1"];

/// The certificate a process serves, from the files of a `tls` settings section.
#[derive(Clone, Debug)]
pub struct ServerTls {
    cert: Arc<FileCert>,
}

#[derive(Debug)]
struct FileCert {
    /// The settings section, as errors and logs name it (`scheduler.tls`).
    field: String,
    files: TlsSettings,
    provider: Arc<CryptoProvider>,
    /// What handshakes present.
    served: RwLock<Arc<CertifiedKey>>,
    /// The file contents last read (served or refused), so an unchanged pair is not parsed again
    /// and a bad one is logged once.
    last_read: Mutex<(Vec<u8>, Vec<u8>)>,
}

/// What [`ServerTls::reload`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    /// The files hold what was read last time.
    Unchanged,
    /// A new certificate is served.
    Replaced,
    /// The files changed but cannot be served (the message says why); the previous certificate
    /// stays.
    Refused(String),
}

impl ServerTls {
    /// Read and check the files of `files`, named `field` in errors (`scheduler.tls`).
    ///
    /// # Errors
    /// `Invalid` naming the field, the file and what is wrong: unreadable, no PEM certificate or
    /// key in it, a key that is not the certificate's.
    pub fn load(field: &str, files: &TlsSettings) -> Result<Self> {
        let provider = Arc::new(aws_lc_rs::default_provider());
        let read = |f: &std::path::Path, name: &str| {
            std::fs::read(f).map_err(|e| {
                Error::invalid(format!("{field}.{name}: cannot read {}: {e}", f.display()))
            })
        };
        let cert = read(&files.cert_file, "cert_file")?;
        let key = read(&files.key_file, "key_file")?;
        let served = certified(field, files, &cert, &key, &provider)?;
        Ok(ServerTls {
            cert: Arc::new(FileCert {
                field: field.to_string(),
                files: files.clone(),
                provider,
                served: RwLock::new(Arc::new(served)),
                last_read: Mutex::new((cert, key)),
            }),
        })
    }

    /// An acceptor offering `alpn` ([`ALPN_GRPC`], [`ALPN_HTTP1`]) with the served certificate
    /// (TLS 1.2 and 1.3, no client certificates).
    ///
    /// # Errors
    /// `Permanent` when the crypto provider cannot do TLS 1.2 or 1.3 (not with aws-lc-rs).
    pub fn acceptor(&self, alpn: &[&[u8]]) -> Result<TlsAcceptor> {
        let mut config = ServerConfig::builder_with_provider(self.cert.provider.clone())
            .with_protocol_versions(&[&version::TLS13, &version::TLS12])
            .map_err(|e| Error::with_source(ErrorKind::Permanent, "tls provider", e))?
            .with_no_client_auth()
            .with_cert_resolver(self.cert.clone());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// Re-read the files; serve their pair if it changed and is valid.
    pub async fn reload(&self) -> Reload {
        let c = &self.cert;
        let read = match tokio::try_join!(
            tokio::fs::read(&c.files.cert_file),
            tokio::fs::read(&c.files.key_file)
        ) {
            Ok(pair) => pair,
            // Between the two swaps of a non-atomic rotation, or a volume being remounted: the
            // next pass reads them again.
            Err(e) => return Reload::Refused(format!("cannot read the files: {e}")),
        };
        if *c.last_read.lock().expect("tls state lock") == read {
            return Reload::Unchanged;
        }
        let outcome = match certified(&c.field, &c.files, &read.0, &read.1, &c.provider) {
            Ok(new) => {
                *c.served.write().expect("tls state lock") = Arc::new(new);
                Reload::Replaced
            }
            Err(e) => Reload::Refused(e.to_string()),
        };
        *c.last_read.lock().expect("tls state lock") = read;
        outcome
    }

    /// [`ServerTls::reload`] every [`RELOAD_INTERVAL`] until `stop`, logging each change.
    pub fn spawn_reload(&self, tasks: &mut JoinSet<anyhow::Result<()>>, stop: CancellationToken) {
        let tls = self.clone();
        tasks.spawn(async move {
            let c = &tls.cert;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(RELOAD_INTERVAL) => {}
                }
                match tls.reload().await {
                    Reload::Unchanged => {}
                    Reload::Replaced => tracing::info!(
                        field = %c.field,
                        cert_file = %c.files.cert_file.display(),
                        "serving the new tls certificate"
                    ),
                    Reload::Refused(why) => tracing::error!(
                        field = %c.field,
                        error = %why,
                        "the tls files changed but cannot be served; the previous certificate stays"
                    ),
                }
            }
        });
    }
}

impl ResolvesServerCert for FileCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.served.read().expect("tls state lock").clone())
    }
}

/// The served form of a PEM pair, or what is wrong with it (naming the field and the file).
fn certified(
    field: &str,
    files: &TlsSettings,
    cert: &[u8],
    key: &[u8],
    provider: &CryptoProvider,
) -> Result<CertifiedKey> {
    let (cert_file, key_file) = (files.cert_file.display(), files.key_file.display());
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::invalid(format!("{field}.cert_file: {cert_file}: {e}")))?;
    if chain.is_empty() {
        return Err(Error::invalid(format!(
            "{field}.cert_file: {cert_file} holds no PEM CERTIFICATE block"
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| {
        Error::invalid(format!(
            "{field}.key_file: {key_file}: no PEM private key (PKCS#8, RSA or EC): {e}"
        ))
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        Error::invalid(format!(
            "{field}: the key in {key_file} cannot serve the certificate in {cert_file}: {e}"
        ))
    })
}

/// A TCP listener whose connections come out with their TLS handshake done. Handshakes run
/// concurrently (each bounded by [`HANDSHAKE_TIMEOUT`]), so a slow or silent client delays only
/// itself; a failed one (an untrusted certificate on the client's side) is logged at debug and
/// dropped, and a client speaking plain text gets a `400` saying the port serves TLS.
pub struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<(TlsStream<TcpStream>, SocketAddr)>>,
}

impl TlsListener {
    /// Serve TLS with `acceptor` on `tcp`.
    pub fn new(tcp: TcpListener, acceptor: TlsAcceptor) -> Self {
        TlsListener {
            tcp,
            acceptor,
            handshakes: JoinSet::new(),
        }
    }

    /// The connections, as tonic's `serve_with_incoming*` takes them.
    pub fn into_stream(
        self,
    ) -> impl futures::Stream<Item = std::io::Result<TlsStream<TcpStream>>> + Send + 'static {
        futures::stream::unfold(self, |mut l| async move {
            let (io, _) = axum::serve::Listener::accept(&mut l).await;
            Some((Ok(io), l))
        })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            tokio::select! {
                // axum's accept of a TcpListener logs and backs off on errors (EMFILE).
                (tcp, peer) = axum::serve::Listener::accept(&mut self.tcp) => {
                    let acceptor = self.acceptor.clone();
                    self.handshakes.spawn(async move {
                        let shake = handshake(acceptor, tcp, peer);
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, shake).await {
                            Ok(done) => done,
                            Err(_) => {
                                tracing::debug!(%peer, "tls handshake timed out");
                                None
                            }
                        }
                    });
                }
                Some(done) = self.handshakes.join_next() => {
                    if let Ok(Some(conn)) = done {
                        return conn;
                    }
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// The peer of a TLS connection (axum derives `ConnectInfo<SocketAddr>` for TCP listeners
/// only).
#[derive(Debug, Clone, Copy)]
struct TlsPeer(SocketAddr);

impl Connected<IncomingStream<'_, TlsListener>> for TlsPeer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Self {
        TlsPeer(*stream.remote_addr())
    }
}

/// What a client speaking plain text to a TLS port gets before the connection closes: an
/// HTTP/1.1 answer, so `curl http://…` says what is wrong (a gRPC client still fails on it).
const PLAIN_TEXT_ANSWER: &[u8] = b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\n\
    connection: close\r\ncontent-length: 35\r\n\r\nthis port serves TLS: use https://\n";

/// The TLS handshake of one connection; `None` (logged at debug) when it fails.
async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Option<(TlsStream<TcpStream>, SocketAddr)> {
    let _ = tcp.set_nodelay(true);
    // A TLS client opens with a handshake record (content type 22); anything else is plain text.
    let mut first = [0u8; 1];
    if matches!(tcp.peek(&mut first).await, Ok(1) if first[0] != 22) {
        tracing::debug!(%peer, "plain text on a tls port");
        let mut tcp = tcp;
        let _ = tcp.write_all(PLAIN_TEXT_ANSWER).await;
        let _ = tcp.shutdown().await;
        return None;
    }
    match acceptor.accept(tcp).await {
        Ok(tls) => Some((tls, peer)),
        Err(e) => {
            tracing::debug!(%peer, error = %e, "tls handshake failed");
            None
        }
    }
}

/// Serve `app` over TLS on `listener` until `stop` fires (as [`crate::ops::serve`] does in
/// plain TCP).
///
/// # Errors
/// When the server fails.
pub async fn serve_http(
    listener: TlsListener,
    app: axum::Router,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    // With the peer's address as `ConnectInfo<SocketAddr>`, as over plain TCP (`ops::serve`):
    // the API limits failed authentications per address.
    let app = app.layer(axum::middleware::map_request(
        |mut req: axum::extract::Request| async move {
            if let Some(&ConnectInfo(TlsPeer(peer))) =
                req.extensions().get::<ConnectInfo<TlsPeer>>()
            {
                req.extensions_mut().insert(ConnectInfo(peer));
            }
            req
        },
    ));
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<TlsPeer>(),
    )
    .with_graceful_shutdown(async move { stop.cancelled().await })
    .await
    .context("https server failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openssl(dir: &std::path::Path, args: &[&str]) {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("the openssl command line tool");
        assert!(out.status.success(), "openssl {args:?}: {out:?}");
    }

    /// A self-signed certificate for `cn` into `cn.crt` / `cn.key`.
    fn self_signed(dir: &std::path::Path, cn: &str) -> TlsSettings {
        let (crt, key) = (format!("{cn}.crt"), format!("{cn}.key"));
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "1",
                "-subj",
                &format!("/CN={cn}"),
                "-keyout",
                &key,
                "-out",
                &crt,
            ],
        );
        TlsSettings {
            cert_file: dir.join(crt),
            key_file: dir.join(key),
        }
    }

    fn served(tls: &ServerTls) -> Vec<u8> {
        tls.cert.served.read().unwrap().cert[0].to_vec()
    }

    #[tokio::test]
    async fn bad_files_are_named_and_a_bad_rotation_keeps_the_old_pair() {
        let dir = tempfile::tempdir().unwrap();
        let a = self_signed(dir.path(), "a");
        let b = self_signed(dir.path(), "b");

        let missing = TlsSettings {
            cert_file: dir.path().join("nope.crt"),
            ..a.clone()
        };
        let e = ServerTls::load("scheduler.tls", &missing).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("scheduler.tls.cert_file: cannot read"),
            "{e}"
        );
        let swapped = TlsSettings {
            cert_file: a.key_file.clone(),
            key_file: a.cert_file.clone(),
        };
        let e = ServerTls::load("scheduler.tls", &swapped).unwrap_err();
        assert!(e.to_string().contains("no PEM CERTIFICATE block"), "{e}");
        let mismatched = TlsSettings {
            cert_file: a.cert_file.clone(),
            key_file: b.key_file.clone(),
        };
        let e = ServerTls::load("scheduler.tls", &mismatched).unwrap_err();
        assert!(
            e.to_string().contains("cannot serve the certificate"),
            "{e}"
        );

        // Serve a's pair from files of its own, then rotate them.
        let live = TlsSettings {
            cert_file: dir.path().join("tls.crt"),
            key_file: dir.path().join("tls.key"),
        };
        std::fs::copy(&a.cert_file, &live.cert_file).unwrap();
        std::fs::copy(&a.key_file, &live.key_file).unwrap();
        let tls = ServerTls::load("scheduler.tls", &live).unwrap();
        let a_der = served(&tls);
        assert_eq!(tls.reload().await, Reload::Unchanged);

        // Half a rotation (b's certificate, a's key): refused, a stays, and it is reported once.
        std::fs::copy(&b.cert_file, &live.cert_file).unwrap();
        let r = tls.reload().await;
        assert!(
            matches!(&r, Reload::Refused(why) if why.contains("cannot serve")),
            "{r:?}"
        );
        assert_eq!(served(&tls), a_der);
        assert_eq!(tls.reload().await, Reload::Unchanged);

        // The rest of it: b is served.
        std::fs::copy(&b.key_file, &live.key_file).unwrap();
        assert_eq!(tls.reload().await, Reload::Replaced);
        assert_ne!(served(&tls), a_der);
    }
}
