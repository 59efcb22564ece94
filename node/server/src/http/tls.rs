//! TLS for client connections: rustls driven sans-IO.
//!
//! The connection's socket is non-blocking; rustls reads ciphertext from it and writes records
//! to it with plain `read(2)`/`write(2)` calls, and the core waits for readiness (io_uring poll
//! or epoll) when the socket has nothing to give or take. So TLS keeps the exact timeout
//! semantics of plain connections (timeouts wrap readiness waits, never an in-flight read),
//! and records go from rustls's buffer to the socket without another copy.
//!
//! Certificates are read from PEM files and reloaded on SIGHUP; a reload affects new
//! connections only (open ones keep the config they started with).

use std::io::{self, Read, Write};
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use serde::{Deserialize, Serialize};

/// `[tls]`: the node terminates TLS on its registry port.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// Private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA bundle (PEM) that client certificates must chain to: turns on mTLS.
    #[serde(default)]
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: `optional` (a certificate logs its subject's CN in as a user; others
    /// may still use passwords and tokens) or `required` (no certificate, no connection).
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Certificate revocation list(s) for client certificates (PEM or DER; re-read on SIGHUP
    /// with the certificates): a revoked certificate gets no connection.
    #[serde(default)]
    pub client_crl: Option<PathBuf>,
}

/// Whether client certificates are required.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Asked for, not required.
    #[default]
    Optional,
    /// Required.
    Required,
}

/// The server side of TLS, shared by every core: the current rustls config.
pub struct Acceptor {
    cfg: TlsConfig,
    current: RwLock<Arc<ServerConfig>>,
}

/// A certificate, key or CA could not be loaded: names the file.
#[derive(Debug, thiserror::Error)]
#[error("tls: {0}")]
pub struct TlsError(pub String);

fn load(cfg: &TlsConfig) -> Result<ServerConfig, TlsError> {
    berth_internal_api::tls::server_config(
        &cfg.cert,
        &cfg.key,
        cfg.client_ca.as_deref(),
        cfg.client_crl.as_deref(),
        cfg.client_auth == ClientAuth::Required,
        &[b"http/1.1"],
    )
    .map_err(TlsError)
}

impl Acceptor {
    /// Load the certificate and key.
    pub fn new(cfg: &TlsConfig) -> Result<Acceptor, TlsError> {
        Ok(Acceptor { cfg: cfg.clone(), current: RwLock::new(Arc::new(load(cfg)?)) })
    }

    /// Re-read the files (SIGHUP). New connections use them; open ones are not touched.
    pub fn reload(&self) -> Result<(), TlsError> {
        let sc = load(&self.cfg)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(sc);
        Ok(())
    }

    /// A server session for a new connection.
    pub fn session(&self) -> Result<rustls::ServerConnection, TlsError> {
        let cfg = self.current.read().unwrap_or_else(|p| p.into_inner()).clone();
        rustls::ServerConnection::new(cfg).map_err(|e| TlsError(e.to_string()))
    }
}

/// `read(2)`/`write(2)` on a non-blocking socket, for rustls's `read_tls`/`write_tls`.
pub(crate) struct Fd(pub RawFd);

impl Read for Fd {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: reading into a valid, exclusively borrowed buffer from a descriptor the
        // connection owns for the call's duration.
        let n = unsafe { libc::read(self.0, buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

impl Write for Fd {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: as above; MSG_NOSIGNAL: a closed peer is an error, not SIGPIPE.
        let n = unsafe { libc::send(self.0, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Set `O_NONBLOCK` on a socket for good (TLS connections never use io_uring reads or
/// writes, only readiness).
pub(crate) fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor the caller owns.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The common name of the client certificate's subject, if the client sent one (mTLS).
pub fn peer_common_name(session: &rustls::ServerConnection) -> Option<String> {
    let cert = session.peer_certificates()?.first()?;
    common_name(cert.as_ref())
}

/// The subject's common name of a DER certificate (already verified by rustls).
fn common_name(der_bytes: &[u8]) -> Option<String> {
    use der::Decode as _;
    let cert = x509_cert::Certificate::from_der(der_bytes).ok()?;
    let cn = const_oid_cn();
    let atv = cert.tbs_certificate().subject().iter().find(|atv| atv.oid == cn)?;
    atv.value
        .decode_as::<der::asn1::Utf8StringRef<'_>>()
        .map(|s| s.as_str().to_owned())
        .ok()
        .or_else(|| atv.value.decode_as::<der::asn1::PrintableStringRef<'_>>().map(|s| s.as_str().to_owned()).ok())
}

fn const_oid_cn() -> der::asn1::ObjectIdentifier {
    der::asn1::ObjectIdentifier::new_unwrap("2.5.4.3")
}
