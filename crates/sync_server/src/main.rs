//! `sync_server`: the csync replica daemon.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use csync_sync_server::config::ServerConfig;
use csync_sync_server::server::{Shared, serve};
use tokio::net::TcpListener;

/// Cyrus-compatible replication server (the replica side of csync).
#[derive(Debug, Parser)]
#[command(name = "sync_server", version, about)]
struct Args {
    /// imapd.conf to read.
    #[arg(
        short = 'C',
        long = "config",
        value_name = "FILE",
        default_value = "/etc/imapd.conf"
    )]
    config: PathBuf,
    /// Address to listen on (repeatable). Default: the csync service port, 2005 when
    /// /etc/services has no csync entry (Debian's has none). Port 0 picks a free port.
    #[arg(long = "listen", value_name = "ADDR:PORT")]
    listen: Vec<String>,
    /// External security strength factor, as Cyrus's -p (accepted; csync offers
    /// plaintext mechanisms only under its own TLS or allowplaintext).
    #[arg(short = 'p', value_name = "SSF")]
    ssf: Option<u32>,
    /// Accepted for compatibility with Cyrus 3.6, where it has no effect either.
    #[arg(short = 'f', hide = true)]
    force: bool,
    /// More logging (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    verbose: u8,
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

fn addresses(listen: &[String]) -> anyhow::Result<Vec<SocketAddr>> {
    if listen.is_empty() {
        // Every address, IPv6 and IPv4 (a dual-stack socket; see `bind_default`).
        return Ok(vec![SocketAddr::from((
            std::net::Ipv6Addr::UNSPECIFIED,
            csync_port(),
        ))]);
    }
    let mut out = Vec::new();
    for spec in listen {
        let found: Vec<SocketAddr> = spec
            .to_socket_addrs()
            .with_context(|| format!("--listen {spec}: not ADDR:PORT"))?
            .collect();
        out.extend(found);
    }
    Ok(out)
}

fn main() -> ExitCode {
    // Usage errors exit 64 (EX_USAGE) like the Cyrus tools, not clap's 2.
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { 64 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let level = match args.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sync_server: {e:#}");
            ExitCode::from(e.downcast_ref::<ConfigFailure>().map_or(75, |_| 78))
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ConfigFailure(String);

fn run(args: Args) -> anyhow::Result<()> {
    let conf = csync_config::Config::from_file(&args.config)
        .map_err(|e| ConfigFailure(format!("{}: {e}", args.config.display())))?;
    let config = ServerConfig::from_imapd(&conf)
        .map_err(|e| ConfigFailure(format!("{}: {e:#}", args.config.display())))?;
    if config.admins.is_empty() {
        return Err(ConfigFailure(format!(
            "{}: no admins: set `admins:` to the identity the master authenticates as",
            args.config.display()
        ))
        .into());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Every session runs on a blocking thread of its own (server.rs): room for
        // all of them, and for the runtime's own blocking work besides.
        .max_blocking_threads(config.max_connections + 64)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let shared = Arc::new(Shared::new(config).map_err(|e| ConfigFailure(format!("{e:#}")))?);
        let mut listeners = Vec::new();
        let mut fds = listenfd::ListenFd::from_env();
        for i in 0..fds.len() {
            if let Some(std_listener) = fds.take_tcp_listener(i).context("socket activation")? {
                std_listener.set_nonblocking(true)?;
                listeners.push(TcpListener::from_std(std_listener)?);
            }
        }
        if listeners.is_empty() {
            for addr in addresses(&args.listen)? {
                let listener = match TcpListener::bind(addr).await {
                    Ok(l) => l,
                    // No IPv6 on this host: the default falls back to IPv4.
                    Err(_) if args.listen.is_empty() => {
                        let v4 = SocketAddr::from(([0, 0, 0, 0], addr.port()));
                        TcpListener::bind(v4)
                            .await
                            .with_context(|| format!("listening on {v4}"))?
                    }
                    Err(e) => return Err(e).with_context(|| format!("listening on {addr}")),
                };
                listeners.push(listener);
            }
        }
        use std::io::Write;
        for l in &listeners {
            // Tests and scripts read this line to learn the port.
            let _ = writeln!(
                std::io::stdout(),
                "sync_server: listening on {}",
                l.local_addr()?
            );
        }
        let _ = std::io::stdout().flush();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            wait_for_signal().await;
            let _ = stop_tx.send(true);
        });
        serve(shared, listeners, stop_rx).await
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    tokio::select! {
        _ = async { if let Some(t) = term.as_mut() { t.recv().await; } else { std::future::pending::<()>().await } } => {}
        _ = async { if let Some(i) = int.as_mut() { i.recv().await; } else { std::future::pending::<()>().await } } => {}
    }
}
