//! Prometheus metrics of rolling replication, served on `csync_metrics_listen`
//! (`GET /metrics`). The backlog, the lag and the quarantine are read from the
//! channel's files at scrape time, so they are true even while a run is stuck; the
//! counters are kept by the rolling loop.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tracing::{info, warn};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

/// What the rolling loop counts.
#[derive(Debug, Default)]
pub struct ClientMetrics {
    pub runs: Counter,
    pub records: Counter,
    pub messages_sent: Counter,
    pub message_bytes_sent: Counter,
    pub errors: Family<KindLabels, Counter>,
    pub connected: Gauge,
    pub last_success: Gauge<f64, AtomicU64>,
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl ClientMetrics {
    pub fn error(&self, kind: &str) {
        self.errors
            .get_or_create(&KindLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    pub fn succeeded(&self, records: usize, messages: u64, bytes: u64) {
        self.runs.inc();
        self.records.inc_by(records as u64);
        self.messages_sent.inc_by(messages);
        self.message_bytes_sent.inc_by(bytes);
        self.last_success.set(now_secs());
    }
}

/// The channel's files the scrape reads.
#[derive(Clone, Debug)]
pub struct ChannelFiles {
    pub channel: String,
    pub log_dir: PathBuf,
}

/// Records (lines) and bytes of `log` and `log-run`, and the age of the oldest
/// unprocessed record: a log file is created by the first record written into it,
/// so its birth time (or, where the filesystem has none, its change time at the
/// latest) is when the oldest record in it was written.
fn backlog(dir: &Path) -> (u64, u64, f64) {
    let mut records = 0;
    let mut bytes = 0;
    let mut oldest: Option<SystemTime> = None;
    for name in ["log-run", "log"] {
        let path = dir.join(name);
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.len() == 0 {
            continue;
        }
        bytes += meta.len();
        if let Ok(mut f) = std::fs::File::open(&path) {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = f.read(&mut buf) {
                if n == 0 {
                    break;
                }
                records += buf[..n].iter().filter(|&&b| b == b'\n').count() as u64;
            }
        }
        let born = meta.created().or_else(|_| meta.modified()).ok();
        oldest = match (oldest, born) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    let lag = oldest
        .and_then(|t| SystemTime::now().duration_since(t).ok())
        .map_or(0.0, |d| d.as_secs_f64());
    (records, bytes, lag)
}

fn quarantined(dir: &Path) -> u64 {
    std::fs::read_to_string(dir.join("quarantine"))
        .map(|s| {
            s.lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
                .count() as u64
        })
        .unwrap_or(0)
}

/// The metrics text for one scrape.
pub fn render(metrics: &ClientMetrics, files: &ChannelFiles) -> String {
    let (records, bytes, lag) = backlog(&files.log_dir);
    let backlog_records: Gauge = Gauge::default();
    backlog_records.set(records as i64);
    let backlog_bytes: Gauge = Gauge::default();
    backlog_bytes.set(bytes as i64);
    let lag_seconds: Gauge<f64, AtomicU64> = Gauge::default();
    lag_seconds.set(lag);
    let quarantine: Gauge = Gauge::default();
    quarantine.set(quarantined(&files.log_dir) as i64);
    let mut r = Registry::with_prefix_and_labels(
        "csync_client",
        [(
            std::borrow::Cow::Borrowed("channel"),
            std::borrow::Cow::Owned(files.channel.clone()),
        )]
        .into_iter(),
    );
    r.register(
        "lag_seconds",
        "Age of the oldest sync_log record not yet replicated (0: none)",
        lag_seconds,
    );
    r.register(
        "backlog_records",
        "sync_log records waiting (log and log-run)",
        backlog_records,
    );
    r.register(
        "backlog_bytes",
        "Bytes of sync_log waiting (log and log-run)",
        backlog_bytes,
    );
    r.register(
        "quarantined",
        "Users or mailboxes set aside in the quarantine",
        quarantine,
    );
    r.register(
        "runs",
        "Log files processed completely",
        metrics.runs.clone(),
    );
    r.register("records", "Log records processed", metrics.records.clone());
    r.register(
        "messages_sent",
        "Message files uploaded",
        metrics.messages_sent.clone(),
    );
    r.register(
        "message_bytes_sent",
        "Bytes of message files uploaded",
        metrics.message_bytes_sent.clone(),
    );
    r.register("errors", "Failures by kind", metrics.errors.clone());
    r.register(
        "connected",
        "1 while connected to the replica",
        metrics.connected.clone(),
    );
    r.register(
        "last_success_timestamp_seconds",
        "Unix time of the last completely processed log file",
        metrics.last_success.clone(),
    );
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &r).is_err() {
        out.clear();
    }
    out
}

/// Serves `/metrics` on a thread for the life of the process.
pub fn serve(addr: SocketAddr, metrics: Arc<ClientMetrics>, files: ChannelFiles) {
    let listener = match TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => {
            warn!("metrics: cannot listen on {addr}: {e}");
            return;
        }
    };
    if let Ok(local) = listener.local_addr() {
        info!("metrics on http://{local}/metrics");
    }
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else {
                continue;
            };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let body = render(&metrics, &files);
            let _ = write!(
                stream,
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
}
