//! What sync_client reads from imapd.conf (spec §7.1, §7.4), channel-prefixed where
//! Cyrus allows it (`<channel>_sync_host`, ...).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use csync_config::{Config, DurationUnit};

use crate::conn::ConnectOptions;

/// The replica to talk to and how.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    pub connect: ConnectOptions,
    /// `sync_repeat_interval` (default 1 s; 0 allowed): the minimum time between two
    /// rolling runs (the batching window) and the fallback poll.
    pub repeat_interval: Duration,
    /// `sync_reconnect_maxwait` (default 20 min; zero or less: uncapped).
    pub reconnect_maxwait: Option<Duration>,
    /// `csync_reconnect_initial` (default 15 s, as Cyrus): the first wait before
    /// reconnecting; it doubles up to `reconnect_maxwait`.
    pub reconnect_initial: Duration,
    /// `csync_quarantine_retry` (default 1 h; 0: never): how long a quarantined user
    /// stays set aside before rolling mode tries it again on its own.
    pub quarantine_retry: Option<Duration>,
    /// `sync_shutdown_file`.
    pub shutdown_file: Option<PathBuf>,
    /// `csync_metrics_listen`: where rolling mode serves Prometheus metrics.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `csync_sieve_mailbox`: when to ask the replica for SIEVE-MAILBOX.
    pub sieve_mailbox: SieveMailbox,
}

/// `csync_sieve_mailbox: auto | yes | no` (default `auto`): how sieve scripts travel.
///
/// csync keeps the scripts it is given (`csyncadm sieve`, legacy `APPLY SIEVE`) in its
/// own table and replicates them with the script commands (§4.8), which need
/// SIEVE-MAILBOX off. A store filled by a Cyrus 3.6 master holds them as `#sieve`
/// mailboxes instead, which replicate only with SIEVE-MAILBOX on (a Cyrus replica
/// refuses a `#sieve` mailbox otherwise). `auto` turns SIEVE-MAILBOX on when the store
/// has a `#sieve` mailbox; with it on, table scripts are not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SieveMailbox {
    Auto,
    Yes,
    No,
}

impl ClientConfig {
    /// Decides `connect.sieve_mailbox` for this store (see [`SieveMailbox`]).
    pub fn resolve_sieve_mailbox(
        &mut self,
        store: &csync_mailstore::Store,
    ) -> Result<(), csync_mailstore::StoreError> {
        self.connect.sieve_mailbox = match self.sieve_mailbox {
            SieveMailbox::Yes => true,
            SieveMailbox::No => false,
            SieveMailbox::Auto => crate::sync::store_has_sieve_mailboxes(store)?,
        };
        Ok(())
    }
}

/// `host`, `host:port`, `host:port/tls` (spec §1.1). A UNIX socket path is refused:
/// csync speaks TCP only.
pub fn parse_host(spec: &str) -> anyhow::Result<(String, Option<u16>, bool)> {
    if spec.starts_with('/') {
        bail!("sync_host {spec}: UNIX sockets are not supported; use host:port");
    }
    let mut parts = spec.split('/');
    let hostport = parts.next().unwrap_or_default();
    let mut tls = false;
    for opt in parts {
        match opt {
            "tls" => tls = true,
            "noauth" => {
                bail!("sync_host {spec}: /noauth is not supported (csync always authenticates)")
            }
            "" => {}
            other => bail!("sync_host {spec}: unknown option /{other}"),
        }
    }
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.starts_with('[') => (
            h.trim_start_matches('[').trim_end_matches(']').to_owned(),
            Some(
                p.parse()
                    .with_context(|| format!("sync_host {spec}: bad port"))?,
            ),
        ),
        _ => (hostport.to_owned(), None),
    };
    if host.is_empty() {
        bail!("sync_host {spec}: no host");
    }
    Ok((host, port, tls))
}

fn csync_port() -> u16 {
    std::fs::read_to_string("/etc/services")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let mut words = line.split_whitespace();
                (words.next() == Some("csync"))
                    .then(|| words.next()?.strip_suffix("/tcp")?.parse().ok())
                    .flatten()
            })
        })
        .unwrap_or(2005)
}

impl ClientConfig {
    /// Reads the settings of `channel` (None: the default channel); `server`
    /// overrides `sync_host` (`-S`).
    pub fn from_imapd(
        conf: &Config,
        channel: Option<&str>,
        server: Option<&str>,
    ) -> anyhow::Result<ClientConfig> {
        let look = conf.channel(channel);
        let key_name = |k: &str| match channel {
            Some(c) => format!("{c}_{k} or {k}"),
            None => k.to_owned(),
        };
        let host_spec = match server {
            Some(s) => s.to_owned(),
            None => look
                .string("sync_host")
                .map(str::to_owned)
                .with_context(|| format!("no replica: set {} or use -S", key_name("sync_host")))?,
        };
        let (host, port_in_host, implicit_tls) = parse_host(&host_spec)?;
        let port = match port_in_host {
            Some(p) => p,
            None => match look.string("sync_port") {
                Some(p) => p
                    .parse()
                    .with_context(|| format!("sync_port {p}: not a port"))?,
                None => csync_port(),
            },
        };
        let authname = look
            .string("sync_authname")
            .map(str::to_owned)
            .with_context(|| {
                format!(
                    "set {} (the replica's admin login)",
                    key_name("sync_authname")
                )
            })?;
        let password = look
            .string("sync_password")
            .map(str::to_owned)
            .with_context(|| format!("set {}", key_name("sync_password")))?;
        let realm = look.string("sync_realm");
        let authname = match realm {
            Some(r) if !authname.contains('@') => format!("{authname}@{r}"),
            _ => authname,
        };
        let seconds = |key: &str, default: i64| -> anyhow::Result<i64> {
            Ok(look
                .duration(key, DurationUnit::Seconds)
                .with_context(|| key.to_owned())?
                .unwrap_or(default))
        };
        let timeout = seconds("sync_timeout", 30 * 60)?.max(3) as u64;
        let repeat = seconds("sync_repeat_interval", 1)?.max(0) as u64;
        let maxwait = seconds("sync_reconnect_maxwait", 20 * 60)?;
        let reconnect_initial = seconds("csync_reconnect_initial", 15)?.max(0) as u64;
        let quarantine_retry = seconds("csync_quarantine_retry", 60 * 60)?;
        let tls = tls_config(conf, channel)?;
        Ok(ClientConfig {
            connect: ConnectOptions {
                host,
                port,
                implicit_tls,
                authname,
                password,
                authzid: None,
                allow_plaintext: look
                    .switch("csync_allow_plaintext")
                    .context("csync_allow_plaintext")?
                    .unwrap_or(false),
                require_tls: look
                    .switch("csync_require_tls")
                    .context("csync_require_tls")?
                    .unwrap_or(false),
                require_compress: false,
                compress_level: look
                    .int("csync_compress_level")
                    .context("csync_compress_level")?
                    .unwrap_or(1)
                    .clamp(0, 9) as u32,
                compress_threads: match look
                    .int("csync_compress_threads")
                    .context("csync_compress_threads")?
                {
                    Some(n) => n.clamp(1, 64) as usize,
                    None => default_compress_threads(),
                },
                sieve_mailbox: false,
                staged_limit: match look
                    .int("csync_staged_limit")
                    .context("csync_staged_limit")?
                {
                    Some(n) => n.clamp(1, i64::from(u32::MAX)) as usize,
                    None => crate::conn::DEFAULT_STAGED_LIMIT,
                },
                connect_timeout: Duration::from_secs(seconds("client_timeout", 10)?.max(1) as u64),
                timeout: Duration::from_secs(timeout),
                tls: Some(tls),
            },
            repeat_interval: Duration::from_secs(repeat),
            reconnect_maxwait: (maxwait > 0).then(|| Duration::from_secs(maxwait as u64)),
            reconnect_initial: Duration::from_secs(reconnect_initial),
            quarantine_retry: (quarantine_retry > 0)
                .then(|| Duration::from_secs(quarantine_retry as u64)),
            shutdown_file: look.string("sync_shutdown_file").map(PathBuf::from),
            metrics_listen: look
                .string("csync_metrics_listen")
                .map(|a| {
                    a.parse()
                        .with_context(|| format!("csync_metrics_listen {a}: not ADDR:PORT"))
                })
                .transpose()?,
            sieve_mailbox: match look.string("csync_sieve_mailbox") {
                None | Some("auto") => SieveMailbox::Auto,
                Some(_) => match look
                    .switch("csync_sieve_mailbox")
                    .context("csync_sieve_mailbox (auto, yes or no)")?
                {
                    Some(true) => SieveMailbox::Yes,
                    _ => SieveMailbox::No,
                },
            },
        })
    }
}

/// The TLS client settings: `tls_client_ca_file` (trust exactly these: a site CA, or
/// the replica's own certificate to pin it), else the system's trust store;
/// `csync_tls_verify: no` turns verification off (the Cyrus client never verifies;
/// csync does unless told not to).
fn tls_config(conf: &Config, channel: Option<&str>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let look = conf.channel(channel);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let verify = look
        .switch("csync_tls_verify")
        .context("csync_tls_verify")?
        .unwrap_or(true);
    if !verify {
        return Ok(Arc::new(
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
                .with_no_client_auth(),
        ));
    }
    let mut roots = rustls::RootCertStore::empty();
    match look.string("tls_client_ca_file") {
        Some(file) => {
            for cert in CertificateDer::pem_file_iter(file)
                .with_context(|| format!("tls_client_ca_file {file}"))?
            {
                roots
                    .add(cert.with_context(|| format!("tls_client_ca_file {file}"))?)
                    .with_context(|| format!("tls_client_ca_file {file}"))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                let _ = roots.add(cert);
            }
        }
    }
    Ok(Arc::new(
        builder.with_root_certificates(roots).with_no_client_auth(),
    ))
}

/// `csync_tls_verify: no`: accept any certificate (still encrypted, not authenticated).
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _: &rustls_pki_types::CertificateDer<'_>,
        _: &[rustls_pki_types::CertificateDer<'_>],
        _: &rustls_pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls_pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls_pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Threads compressing message uploads when `csync_compress_threads` is not set:
/// every core up to four (more rarely pays: the replica's disk sets the pace).
pub fn default_compress_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_forms() {
        assert_eq!(
            parse_host("replica").unwrap(),
            ("replica".into(), None, false)
        );
        assert_eq!(
            parse_host("replica:2005").unwrap(),
            ("replica".into(), Some(2005), false)
        );
        assert_eq!(
            parse_host("replica:2005/tls").unwrap(),
            ("replica".into(), Some(2005), true)
        );
        assert_eq!(
            parse_host("[::1]:2005").unwrap(),
            ("::1".into(), Some(2005), false)
        );
        assert!(parse_host("/var/run/sync.sock").is_err());
        assert!(parse_host("h:1/noauth").is_err());
        assert!(parse_host("h:x").is_err());
    }
}
