//! Listening, the connection limit and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tracing::{info, warn};

use crate::config::ServerConfig;

/// What every session shares.
pub struct Shared {
    pub config: ServerConfig,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("servername", &self.config.servername)
            .finish()
    }
}

impl Shared {
    pub fn new(config: ServerConfig) -> anyhow::Result<Shared> {
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(crate::conn::tls_acceptor(cert, key)?),
            _ => None,
        };
        // Fail at start on settings that cannot work (unreadable password file...).
        crate::auth::authenticator(&config)?;
        Ok(Shared {
            config,
            tls,
            metrics: Arc::default(),
        })
    }

    /// Where applied changes are logged: with `sync_log_chain` (a relay) to every
    /// channel; otherwise to none but the unsuppressable ones, so a plain replica never
    /// feeds changes back (no loops).
    pub fn changelog(&self) -> Option<Box<dyn csync_mailstore::txn::ChangeLog>> {
        // The writer itself is suppressed unless chaining (only unsuppressable
        // channels such as `squatter` are written then).
        Some(Box::new(self.config.synclog.clone()))
    }
}

/// Accepts connections on `listeners` until `shutdown` turns true, then waits for the
/// sessions to finish their command in flight and say BYE.
pub async fn serve(
    shared: Arc<Shared>,
    listeners: Vec<TcpListener>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    crate::staging::clean_stale(&shared.config.store);
    if let Some(addr) = shared.config.metrics_listen {
        tokio::spawn(crate::metrics::serve(addr, shared.metrics.clone()));
    }
    let limit = Arc::new(Semaphore::new(shared.config.max_connections));
    let mut tasks = tokio::task::JoinSet::new();
    let (accepted_tx, mut accepted_rx) = tokio::sync::mpsc::channel(64);
    for listener in listeners {
        let tx = accepted_tx.clone();
        let mut stop = shutdown.clone();
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.changed() => return,
                    r = listener.accept() => match r {
                        Ok((stream, addr)) => {
                            if tx.send((stream, addr)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            warn!("accept failed: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        }
                    }
                }
            }
        });
    }
    drop(accepted_tx);
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.changed() => break,
            next = accepted_rx.recv() => {
                let Some((stream, addr)) = next else { break };
                handle(stream, addr, &shared, &limit, &shutdown, &mut sessions).await;
            }
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
        }
    }
    info!("shutting down: waiting for {} session(s)", sessions.len());
    while sessions.join_next().await.is_some() {}
    tasks.abort_all();
    Ok(())
}

async fn handle(
    stream: tokio::net::TcpStream,
    addr: SocketAddr,
    shared: &Arc<Shared>,
    limit: &Arc<Semaphore>,
    shutdown: &watch::Receiver<bool>,
    sessions: &mut tokio::task::JoinSet<()>,
) {
    let Ok(permit) = limit.clone().try_acquire_owned() else {
        shared.metrics.refused_connections.inc();
        warn!(
            "refusing {addr}: {} connections already",
            shared.config.max_connections
        );
        let mut stream = stream;
        use tokio::io::AsyncWriteExt;
        let _ = stream
            .write_all(b"* BYE Too many connections, try again later\r\n")
            .await;
        return;
    };
    let shared = shared.clone();
    let shutdown = shutdown.clone();
    shared.metrics.sessions.inc();
    shared.metrics.connections.inc();
    // A session on a thread of its own: most of its work is file I/O (staging,
    // fsyncs, the index), which on a runtime worker each had to go through
    // `block_in_place`, handing the worker to another thread every time. Here the
    // blocking calls run in place, and its socket reads still wait on the runtime.
    let runtime = tokio::runtime::Handle::current();
    sessions.spawn_blocking(move || {
        runtime.block_on(crate::session::run(stream, shared.clone(), shutdown));
        shared.metrics.connections.dec();
        drop(permit);
    });
}
