//! The admin API over TLS: an `axum::serve` listener that accepts TCP, completes TLS
//! handshakes in their own tasks (a slow handshake holds up no one; 10 s at most), and hands
//! over finished streams. The certificate is re-read on SIGHUP for new connections.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::AdminTls;

type Current = Arc<RwLock<Arc<ServerConfig>>>;

fn load(cfg: &AdminTls) -> Result<ServerConfig, String> {
    berth_internal_api::tls::server_config(&cfg.cert, &cfg.key, None, None, false, &[b"http/1.1"])
}

/// A TLS listener for `axum::serve`.
pub struct TlsListener {
    rx: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Start accepting on `tcp` with the certificate of `cfg`; SIGHUP reloads it.
    pub fn start(tcp: TcpListener, cfg: AdminTls) -> Result<TlsListener, String> {
        let local = tcp.local_addr().map_err(|e| e.to_string())?;
        let current: Current = Arc::new(RwLock::new(Arc::new(load(&cfg)?)));
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let reload = current.clone();
        tokio::spawn(async move {
            let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
            while hup.recv().await.is_some() {
                match load(&cfg) {
                    Ok(sc) => {
                        *reload.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(sc);
                        tracing::info!("SIGHUP: admin API certificate reloaded");
                    }
                    Err(e) => tracing::error!(error = %e, "SIGHUP: admin API certificate not reloaded"),
                }
            }
        });
        tokio::spawn(async move {
            loop {
                let (sock, addr) = match tcp.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let acceptor = TlsAcceptor::from(current.read().unwrap_or_else(|p| p.into_inner()).clone());
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(sock)).await {
                        Ok(Ok(s)) => {
                            let _ = tx.send((s, addr)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { rx, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(x) => x,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
