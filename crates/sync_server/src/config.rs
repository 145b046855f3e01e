//! What sync_server reads from imapd.conf (spec §7.2, §7.4), with Cyrus's defaults.

use std::path::PathBuf;
use std::time::Duration;

use csync_config::{Config, DurationUnit};
use csync_mailstore::StoreConfig;

/// The server's settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub store: StoreConfig,
    /// `servername`: greeting and SASL realm.
    pub servername: String,
    /// `admins`: the identities that may replicate.
    pub admins: Vec<String>,
    /// `allowplaintext`: PLAIN/LOGIN without TLS.
    pub allowplaintext: bool,
    /// `sync_timeout` (default 30m, at least 3 s).
    pub timeout: Duration,
    /// `failedloginpause` (default 3 s).
    pub failed_login_pause: Duration,
    /// `tls_server_cert` / `tls_server_key`: STARTTLS is offered when both are set.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// `csync_compress` (default yes): offer COMPRESS DEFLATE. Turning it off is how a
    /// site (or a benchmark) runs uncompressed with a Cyrus client, which has no
    /// option to refuse compression.
    pub offer_compress: bool,
    /// `csync_sieve_mailbox` (default yes): offer SIEVE-MAILBOX like Cyrus 3.6.
    pub offer_sieve_mailbox: bool,
    /// Deflate level for what the server sends (`csync_compress_level`, default 1:
    /// replies are small and latency matters more than ratio).
    pub compress_level: u32,
    /// `sync_log_chain`: log what is applied, for onward replication.
    pub sync_log_chain: bool,
    /// `csync_max_connections` (default 200).
    pub max_connections: usize,
    /// `maxliteral` (Debian: 128 KiB), `maxword`/`maxquoted`.
    pub max_literal: u32,
    pub max_word: usize,
    /// `csync_password_file` (default `<configdirectory>/csync.passwd`).
    pub password_file: PathBuf,
    /// `sasl_pwcheck_method`: `csync` password file (default) or `saslauthd`.
    pub pwcheck_saslauthd: bool,
    /// `sasl_saslauthd_path`.
    pub saslauthd_path: Option<PathBuf>,
    /// `sasl_mech_list`: restricts the mechanisms offered.
    pub mech_list: Option<Vec<String>>,
    /// The replica's sync_log writer: suppressed unless `sync_log_chain` (§6.1).
    pub synclog: csync_synclog::SyncLog,
    /// `csync_metrics_listen`: where to serve Prometheus metrics (off when unset).
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// The version string in the greeting (`* OK <servername> Cyrus sync server <v>`):
/// the Cyrus client reads nothing from it, people do.
pub fn banner_version() -> String {
    format!("csync-{}", env!("CARGO_PKG_VERSION"))
}

impl ServerConfig {
    pub fn from_imapd(conf: &Config) -> anyhow::Result<ServerConfig> {
        use anyhow::Context;
        let store = StoreConfig::from_imapd(conf).context("store settings")?;
        let switch = |key: &str, default: bool| -> anyhow::Result<bool> {
            conf.switch_or(key, default)
                .with_context(|| format!("{key} in {}", conf.path().display()))
        };
        let duration = |key: &str, default: u64| -> anyhow::Result<Duration> {
            Ok(
                match conf
                    .duration(key, DurationUnit::Seconds)
                    .with_context(|| format!("{key} in {}", conf.path().display()))?
                {
                    Some(s) if s > 0 => Duration::from_secs(s as u64),
                    Some(_) => Duration::ZERO,
                    None => Duration::from_secs(default),
                },
            )
        };
        let int = |key: &str, default: i64| -> anyhow::Result<i64> {
            Ok(conf
                .int(key)
                .with_context(|| format!("{key} in {}", conf.path().display()))?
                .unwrap_or(default))
        };
        let servername = conf
            .string("servername")
            .map(str::to_owned)
            .unwrap_or_else(hostname);
        let timeout = duration("sync_timeout", 30 * 60)?.max(Duration::from_secs(3));
        let words = |key: &str| -> Option<Vec<String>> {
            conf.string(key)
                .map(|v| v.split_whitespace().map(str::to_owned).collect())
        };
        Ok(ServerConfig {
            password_file: conf
                .string("csync_password_file")
                .map(PathBuf::from)
                .unwrap_or_else(|| store.configdirectory.join("csync.passwd")),
            store,
            servername,
            admins: words("admins").unwrap_or_default(),
            allowplaintext: switch("allowplaintext", false)?,
            timeout,
            failed_login_pause: duration("failedloginpause", 3)?,
            tls_cert: conf.string("tls_server_cert").map(PathBuf::from),
            tls_key: conf.string("tls_server_key").map(PathBuf::from),
            offer_compress: switch("csync_compress", true)?,
            // The key is shared with sync_client, where `auto` is its default: for
            // offering, `auto` is yes.
            offer_sieve_mailbox: conf.string("csync_sieve_mailbox") == Some("auto")
                || switch("csync_sieve_mailbox", true)?,
            compress_level: int("csync_compress_level", 1)?.clamp(0, 9) as u32,
            sync_log_chain: switch("sync_log_chain", false)?,
            max_connections: int("csync_max_connections", 200)?.max(1) as usize,
            max_literal: int("maxliteral", 128 * 1024)?.clamp(1024, u32::MAX as i64) as u32,
            max_word: int("maxword", 128 * 1024)?.max(1024) as usize,
            pwcheck_saslauthd: conf
                .string("sasl_pwcheck_method")
                .is_some_and(|m| m.split_whitespace().any(|w| w == "saslauthd")),
            saslauthd_path: conf.string("sasl_saslauthd_path").map(PathBuf::from),
            mech_list: words("sasl_mech_list"),
            synclog: csync_synclog::SyncLog::for_sync_server(conf).context("sync_log settings")?,
            metrics_listen: conf
                .string("csync_metrics_listen")
                .map(|a| {
                    a.parse()
                        .with_context(|| format!("csync_metrics_listen {a}: not ADDR:PORT"))
                })
                .transpose()?,
        })
    }

    /// TLS is configured (STARTTLS offered).
    pub fn tls_configured(&self) -> bool {
        self.tls_cert.is_some() && self.tls_key.is_some()
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
