//! Prometheus metrics of the replica, served on a loopback address when
//! `csync_metrics_listen` is set (`GET /metrics`, text exposition format).

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::{info, warn};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabels {
    /// `GET USER`, `APPLY MAILBOX`, ...
    pub command: String,
    /// `ok` or the Cyrus status code (`IMAP_SYNC_CHECKSUM`, ...).
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

/// Everything the replica counts.
#[derive(Debug, Default)]
pub struct Metrics {
    pub connections: Gauge,
    pub sessions: Counter,
    pub logins: Family<ResultLabels, Counter>,
    pub commands: Family<CommandLabels, Counter>,
    pub messages_received: Counter,
    pub message_bytes_received: Counter,
    pub records_applied: Counter,
    pub last_apply: Gauge<f64, AtomicU64>,
    pub refused_connections: Counter,
}

impl Metrics {
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("csync_server");
        r.register(
            "connections",
            "Open replication sessions",
            self.connections.clone(),
        );
        r.register("sessions", "Sessions accepted", self.sessions.clone());
        r.register(
            "logins",
            "AUTHENTICATE results (admin, not_admin, failed)",
            self.logins.clone(),
        );
        r.register(
            "commands",
            "Commands by name and result",
            self.commands.clone(),
        );
        r.register(
            "messages_received",
            "Message files received (APPLY MESSAGE)",
            self.messages_received.clone(),
        );
        r.register(
            "message_bytes_received",
            "Bytes of message files received",
            self.message_bytes_received.clone(),
        );
        r.register(
            "records_applied",
            "Records in successful APPLY MAILBOX commands",
            self.records_applied.clone(),
        );
        r.register(
            "last_apply_timestamp_seconds",
            "Unix time of the last successful APPLY",
            self.last_apply.clone(),
        );
        r.register(
            "refused_connections",
            "Connections refused over csync_max_connections",
            self.refused_connections.clone(),
        );
        r
    }

    pub fn command(&self, command: &str, result: &str) {
        self.commands
            .get_or_create(&CommandLabels {
                command: command.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    pub fn login(&self, result: &str) {
        self.logins
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }

    pub fn applied_now(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.last_apply.set(now);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry()).is_err() {
            out.clear();
        }
        out
    }
}

/// Serves `/metrics` until the process ends. Any request gets the current metrics: a
/// scraper is the only client, and nothing here is secret, but it binds where told
/// (loopback in the samples).
pub async fn serve(addr: SocketAddr, metrics: std::sync::Arc<Metrics>) {
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            warn!("metrics: cannot listen on {addr}: {e}");
            return;
        }
    };
    if let Ok(local) = listener.local_addr() {
        info!("metrics on http://{local}/metrics");
        // stdout may be closed by whoever started us: never let that kill a task.
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), "sync_server: metrics on {local}");
    }
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let mut request = [0u8; 1024];
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut request))
                    .await;
            let body = metrics.render();
            let head = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
