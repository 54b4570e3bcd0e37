//! Optional TLS (rustls, `ring` provider) on the client port: loading PEM certificates and keys
//! with errors that name the file, the server's acceptor, and the client's connector and stream.
//!
//! The simulator never turns TLS on: rustls draws its nonces and keys from the operating system
//! (ring's `SecureRandom`), which is outside the seed, so a simulated run with TLS would not replay.
//! The code compiles in both builds; simulated members use plain streams.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::{Deserialize, Serialize};

use crate::rt::io::{AsyncRead, AsyncWrite, ReadBuf};
use crate::rt::net::TcpStream;

pub use tokio_rustls::{TlsAcceptor, TlsConnector};

/// Where a TLS server finds its certificate chain and private key (PEM files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (PEM, one or more `CERTIFICATE` blocks).
    pub cert_file: PathBuf,
    /// The private key of the leaf (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// A certificate, key or CA file that cannot be used, or a TLS setting rustls refuses.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} file {path}: {source}")]
    Read { what: &'static str, path: PathBuf, source: io::Error },
    #[error("{what} file {path}: no PEM `CERTIFICATE` block found")]
    NoCertificate { what: &'static str, path: PathBuf },
    #[error("{what} file {path}: bad PEM: {message}")]
    Pem { what: &'static str, path: PathBuf, message: String },
    #[error("key file {path}: no PEM private key (PKCS#8, PKCS#1 or SEC1) found")]
    NoKey { path: PathBuf },
    #[error("CA file {path}: certificate not usable as a trust anchor: {message}")]
    BadCa { path: PathBuf, message: String },
    #[error("TLS certificate {cert} with key {key}: {message}")]
    Server { cert: PathBuf, key: PathBuf, message: String },
    #[error("TLS client setup: {0}")]
    Client(String),
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
}

/// The one crypto provider: ring (no aws-lc, so the build needs only a C compiler).
// rustls deprecates its ring provider for lacking post-quantum key exchange; ring is kept on
// purpose (no aws-lc, which needs cmake and more to build).
#[allow(deprecated)]
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(what: &'static str, path: &Path) -> Result<String, TlsError> {
    crate::rt::read_config_file(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate in a PEM file; an error if there is none.
pub fn load_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { what, path: path.to_path_buf(), message: e.to_string() })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { what, path: path.to_path_buf() });
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let text = read("key", path)?;
    PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoKey { path: path.to_path_buf() },
        e => TlsError::Pem { what: "key", path: path.to_path_buf(), message: e.to_string() },
    })
}

/// The server side: loads and checks the certificate chain and key (the key must match the leaf).
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs("certificate", &files.cert_file)?;
    let key = load_key(&files.key_file)?;
    let err = |message: String| TlsError::Server {
        cert: files.cert_file.clone(),
        key: files.key_file.clone(),
        message,
    };
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| err(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| err(e.to_string()))?;
    Ok(Arc::new(config))
}

/// The server's acceptor for `files`.
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    Ok(TlsAcceptor::from(server_config(files)?))
}

/// How a client reaches a TLS server: whom it trusts and, optionally, the name it expects in the
/// server's certificate (default: the IP address it connects to).
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Trusts the CA certificates in the PEM file `ca_file` (and nothing else).
    pub fn from_ca_file(ca_file: &Path) -> Result<ClientTls, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in load_certs("CA", ca_file)? {
            roots
                .add(cert)
                .map_err(|e| TlsError::BadCa { path: ca_file.to_path_buf(), message: e.to_string() })?;
        }
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Client(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(ClientTls { connector: TlsConnector::from(Arc::new(config)), server_name: None })
    }

    /// Expects `name` (a DNS name or IP address) in the server's certificate instead of the IP
    /// address connected to.
    pub fn with_server_name(mut self, name: &str) -> Result<ClientTls, TlsError> {
        let n = ServerName::try_from(name.to_string()).map_err(|_| TlsError::ServerName(name.to_string()))?;
        self.server_name = Some(n);
        Ok(self)
    }

    /// Runs the TLS handshake over `tcp`, connected to `addr`.
    pub async fn connect(&self, addr: SocketAddr, tcp: TcpStream) -> io::Result<ClientStream> {
        let name = self.server_name.clone().unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
        let tls = self.connector.connect(name, tcp).await?;
        Ok(MaybeTls::Tls(Box::new(tls)))
    }
}

/// A TCP connection, plain or with TLS (as the client or as the server side).
#[derive(Debug)]
pub enum MaybeTls {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Server(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// A client's connection: plain TCP or TLS over TCP.
pub type ClientStream = MaybeTls;

macro_rules! each_stream {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            MaybeTls::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            MaybeTls::Tls($s) => {
                let $s = Pin::new($s.as_mut());
                $e
            }
            MaybeTls::Server($s) => {
                let $s = Pin::new($s.as_mut());
                $e
            }
        }
    };
}

impl AsyncRead for MaybeTls {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        each_stream!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for MaybeTls {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        each_stream!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_stream!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each_stream!(self, s => s.poll_shutdown(cx))
    }
}

/// `[cluster.tls]`: the peer port speaks TLS, under (not instead of) the SPAKE2 handshake. Each
/// member presents `cert_file`/`key_file` and checks its peers' certificates against `ca_file`
/// for the host of the peer's Raft address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerTlsFiles {
    /// This member's certificate chain (PEM), valid for the host of its Raft address.
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
    /// The CA certificate(s) that signed every member's certificate (PEM).
    pub ca_file: PathBuf,
}

/// Loaded peer TLS: the acceptor for inbound and the connector for outbound peer connections.
#[derive(Clone)]
pub struct PeerTls {
    pub acceptor: TlsAcceptor,
    pub connector: ClientTls,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTls").finish_non_exhaustive()
    }
}

impl PeerTls {
    /// Loads and checks the three files.
    pub fn load(files: &PeerTlsFiles) -> Result<PeerTls, TlsError> {
        let acceptor =
            acceptor(&TlsFiles { cert_file: files.cert_file.clone(), key_file: files.key_file.clone() })?;
        Ok(PeerTls { acceptor, connector: ClientTls::from_ca_file(&files.ca_file)? })
    }

    /// Dials: the TLS handshake over `tcp`, checking the certificate for the host of `addr`
    /// (`host:port`, a DNS name or an IP address).
    pub async fn connect(&self, addr: &str, tcp: TcpStream) -> io::Result<MaybeTls> {
        let host =
            addr.rsplit_once(':').map_or(addr, |(h, _)| h).trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("bad peer host {host:?}")))?;
        let tls = self.connector.connector.connect(name, tcp).await?;
        Ok(MaybeTls::Tls(Box::new(tls)))
    }

    /// Accepts: the TLS handshake of an inbound connection.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<MaybeTls> {
        Ok(MaybeTls::Server(Box::new(self.acceptor.accept(tcp).await?)))
    }
}
