//! `sync_client`: replicate a csync store to a Cyrus 3.6 compatible replica.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use csync_mailstore::{Store, StoreConfig};
use csync_sync_client::config::ClientConfig;
use csync_sync_client::conn::Connection;
use csync_sync_client::progress::Progress;
use csync_sync_client::sync::{SyncOptions, Syncer};
use tracing::{error, info};

/// Replicate mailboxes to a Cyrus-compatible replica (the master side of csync).
///
/// Exactly one mode: -u, -m, -A, -s, -r or -R.
#[derive(Debug, Parser)]
#[command(name = "sync_client", version, about)]
struct Args {
    /// imapd.conf to read
    #[arg(
        short = 'C',
        long = "config",
        value_name = "FILE",
        default_value = "/etc/imapd.conf"
    )]
    config: PathBuf,
    /// Replica: host, host:port or host:port/tls (overrides sync_host)
    #[arg(short = 'S', long = "server", value_name = "HOST")]
    server: Option<String>,
    /// Channel: <channel>_sync_* settings and the channel's sync_log
    #[arg(short = 'n', long = "channel", value_name = "CHANNEL")]
    channel: Option<String>,
    /// User mode: the arguments are userids
    #[arg(short = 'u', long = "user", group = "mode")]
    user: bool,
    /// Mailbox mode: the arguments are mailbox names (admin external form)
    #[arg(short = 'm', long = "mailbox", group = "mode")]
    mailbox: bool,
    /// All users and shared mailboxes (optionally from a prefix on)
    #[arg(short = 'A', long = "all", group = "mode")]
    all: bool,
    /// META only (seen, subscriptions, sieve) for the listed users
    #[arg(short = 's', long = "meta", group = "mode")]
    meta: bool,
    /// Read userids / mailbox names from FILE (`#` comments; - for stdin)
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// Target partition on the replica (-u, -m)
    #[arg(short = 'p', long = "partition", value_name = "PARTITION")]
    partition: Option<String>,
    /// Use the LOCAL_ command spellings (no MUPDATE on a Murder replica)
    #[arg(short = 'L', long = "local-only")]
    local: bool,
    /// No copy-back: send APPLY FORCE and never repair the master from the replica
    #[arg(short = 'O', long = "no-copyback")]
    no_copyback: bool,
    /// Require compression (fail if the replica does not offer it)
    #[arg(short = 'z', long = "require-compression")]
    require_compress: bool,
    /// Sleep this many seconds before starting (to attach a debugger)
    #[arg(short = 'w', long = "delay", value_name = "SECS")]
    delay: Option<u64>,
    /// Verbose: -v shows what is done, -vv also the protocol
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    verbose: u8,
    /// Log actions (accepted for compatibility: everything goes to the log anyway)
    #[arg(short = 'l', long = "log")]
    log: bool,
    /// Userids, mailbox names, or the -A prefix
    args: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
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
        .init();
    if let Some(secs) = args.delay {
        std::thread::sleep(std::time::Duration::from_secs(secs));
    }
    match run(args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("sync_client: {e:#}");
            ExitCode::from(if e.downcast_ref::<Usage>().is_some() {
                64
            } else if e.downcast_ref::<ConfigProblem>().is_some() {
                78
            } else {
                75
            })
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(String);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct ConfigProblem(String);

/// Names from the command line or from `-f` (one per line, `#` comments).
fn items(args: &Args) -> anyhow::Result<Vec<String>> {
    let mut out = args.args.clone();
    if let Some(file) = &args.file {
        let reader: Box<dyn BufRead> = if file.as_os_str() == "-" {
            Box::new(std::io::BufReader::new(std::io::stdin()))
        } else {
            Box::new(std::io::BufReader::new(
                std::fs::File::open(file).with_context(|| format!("{}", file.display()))?,
            ))
        };
        for line in reader.lines() {
            let line = line?;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            out.push(line.to_owned());
        }
    }
    Ok(out)
}

fn run(args: Args) -> anyhow::Result<u8> {
    let modes = [args.user, args.mailbox, args.all, args.meta]
        .iter()
        .filter(|m| **m)
        .count();
    if modes != 1 {
        return Err(Usage("exactly one mode is required: -u, -m, -A or -s".into()).into());
    }
    let conf = csync_config::Config::from_file(&args.config)
        .map_err(|e| ConfigProblem(format!("{}: {e}", args.config.display())))?;
    let mut client =
        ClientConfig::from_imapd(&conf, args.channel.as_deref(), args.server.as_deref())
            .map_err(|e| ConfigProblem(format!("{}: {e:#}", args.config.display())))?;
    client.connect.require_compress = args.require_compress;
    let store_config = StoreConfig::from_imapd(&conf)
        .map_err(|e| ConfigProblem(format!("{}: {e}", args.config.display())))?;
    let mut store = Store::open(store_config).context("opening the local store")?;
    let opts = SyncOptions {
        partition: args.partition.clone(),
        no_copyback: args.no_copyback,
        local: args.local,
    };
    let list = items(&args)?;
    if (args.user || args.mailbox || args.meta) && list.is_empty() {
        return Err(Usage("no userids or mailboxes given".into()).into());
    }
    let mut progress = Progress::new(args.verbose == 0);
    let mut failures = 0u32;
    let mut conn = connect(&client, &opts)?;
    if args.user || args.meta {
        for userid in &list {
            let mut s = Syncer {
                store: &mut store,
                conn: &mut conn,
                opts: &opts,
                progress: &mut progress,
            };
            let result = if args.user {
                s.sync_user(userid)
            } else {
                s.sync_meta(userid)
            };
            if let Err(e) = result {
                failures += 1;
                error!("SYNCERROR: user {userid}: {e}");
                eprintln!("sync_client: user {userid}: {e}");
                if e.is_connection() {
                    conn = connect(&client, &opts)?;
                }
            }
        }
    } else if args.mailbox {
        let ns = store.namespace().clone();
        let names: Vec<String> = list
            .iter()
            .map(|n| ns.to_internal(n))
            .collect::<Result<_, _>>()
            .map_err(|e| Usage(format!("{e}")))?;
        let mut s = Syncer {
            store: &mut store,
            conn: &mut conn,
            opts: &opts,
            progress: &mut progress,
        };
        if let Err(e) = s.sync_mailboxes(&names) {
            failures += 1;
            error!("SYNCERROR: mailboxes {}: {e}", names.join(" "));
            eprintln!("sync_client: {e}");
        }
    } else {
        let prefix = list.first().cloned();
        let (users, shared) = all_work(&store, prefix.as_deref())?;
        progress.total_users = Some(users.len() as u64);
        for userid in &users {
            let mut s = Syncer {
                store: &mut store,
                conn: &mut conn,
                opts: &opts,
                progress: &mut progress,
            };
            if let Err(e) = s.sync_user(userid) {
                failures += 1;
                error!("SYNCERROR: user {userid}: {e}");
                eprintln!("sync_client: user {userid}: {e}");
                // Errors disconnect; the next item reconnects (§4.11).
                conn = connect(&client, &opts)?;
            }
        }
        for name in &shared {
            let mut s = Syncer {
                store: &mut store,
                conn: &mut conn,
                opts: &opts,
                progress: &mut progress,
            };
            if let Err(e) = s.sync_mailboxes(std::slice::from_ref(name)) {
                failures += 1;
                error!("SYNCERROR: mailbox {name}: {e}");
                eprintln!("sync_client: mailbox {name}: {e}");
                conn = connect(&client, &opts)?;
            }
        }
    }
    progress.finish();
    let stats = conn.exit()?;
    info!(
        "done in {:.1}s: {} users, {} mailboxes updated or checked, {} messages ({} bytes) sent, {} commands, {} wire bytes out",
        progress.elapsed().as_secs_f64(),
        progress.users,
        progress.mailboxes,
        stats.messages_sent,
        stats.message_bytes_sent,
        stats.commands,
        stats.wire_bytes_out
    );
    Ok(if failures > 0 { 1 } else { 0 })
}

fn connect(client: &ClientConfig, opts: &SyncOptions) -> anyhow::Result<Connection> {
    let mut conn = Connection::connect(&client.connect)
        .with_context(|| format!("replica {}:{}", client.connect.host, client.connect.port))?;
    if opts.no_copyback {
        let reply = conn.command(&csync_protocol::Command::Apply(
            csync_protocol::ApplyCommand::Force,
        ))?;
        anyhow::ensure!(
            reply.status() == csync_protocol::SyncStatus::Ok,
            "APPLY FORCE: {}",
            reply.text()
        );
    }
    Ok(conn)
}

/// `-A`: the users in order, then the shared mailboxes; `DELETED.*` mailboxes are
/// reached through their users (§4.11).
fn all_work(store: &Store, prefix: Option<&str>) -> anyhow::Result<(Vec<String>, Vec<String>)> {
    let ns = store.namespace().clone();
    let mut users: Vec<String> = Vec::new();
    let mut shared: Vec<String> = Vec::new();
    store.for_each_mailbox(prefix, |m| {
        if m.is_tombstone() || ns.is_deleted(m.name()) {
            return Ok(());
        }
        match &m.owner {
            Some(owner) => {
                if users.last() != Some(owner) && !users.contains(owner) {
                    users.push(owner.clone());
                }
            }
            None => shared.push(m.name().to_owned()),
        }
        Ok(())
    })?;
    Ok((users, shared))
}
