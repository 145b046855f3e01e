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
use csync_sync_client::rolling::lock::UserLocks;
use csync_sync_client::rolling::quarantine::Subject;
use csync_sync_client::sync::{SyncOptions, Syncer};
use tracing::{error, info};

/// Replicate mailboxes to a Cyrus-compatible replica (the master side of csync).
///
/// Exactly one mode: -u, -m, -A, -s, -r, -R or --release.
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
    #[arg(short = 'u', long = "user", visible_alias = "userids", group = "mode")]
    user: bool,
    /// Mailbox mode: the arguments are mailbox names (admin external form)
    #[arg(
        short = 'm',
        long = "mailbox",
        visible_alias = "mailboxes",
        group = "mode"
    )]
    mailbox: bool,
    /// All users and shared mailboxes (optionally from a prefix on)
    #[arg(short = 'A', long = "all", visible_alias = "all-users", group = "mode")]
    all: bool,
    /// META only (seen, subscriptions, sieve) for the listed users
    #[arg(
        short = 's',
        long = "meta",
        visible_alias = "sieve-mode",
        group = "mode"
    )]
    meta: bool,
    /// Rolling replication from the sync_log, in the background
    #[arg(short = 'r', long = "rolling", group = "mode")]
    rolling: bool,
    /// Rolling replication in the foreground
    #[arg(short = 'R', long = "foreground-rolling", group = "mode")]
    foreground_rolling: bool,
    /// Release quarantined users (or shared mailboxes) of the channel: the arguments
    #[arg(long = "release", group = "mode")]
    release: bool,
    /// Rolling: process one log file, then exit
    #[arg(short = '1', long = "rolling-once")]
    once: bool,
    /// Read userids / mailbox names from FILE (`#` comments; - for stdin); rolling:
    /// process FILE once as a sync_log, leaving it in place
    #[arg(
        short = 'f',
        long = "file",
        visible_alias = "input-file",
        value_name = "FILE"
    )]
    file: Option<PathBuf>,
    /// Rolling: RESTART and reconnect after a session of this many seconds
    #[arg(
        short = 't',
        long = "timeout",
        value_name = "SECS",
        default_value_t = 600
    )]
    timeout: u64,
    /// Rolling: minimum seconds between log runs (default sync_repeat_interval)
    #[arg(short = 'd', long = "delay", value_name = "SECS")]
    min_delta: Option<u64>,
    /// Rolling: exit when this file appears (default sync_shutdown_file)
    #[arg(short = 'F', long = "shutdown-file", value_name = "FILE")]
    shutdown_file: Option<PathBuf>,
    /// Do not retry a failed connection to the replica; exit instead
    #[arg(short = 'o', long = "connect-once")]
    connect_once: bool,
    /// Rolling: skip users another sync_client is syncing (their work is re-logged)
    #[arg(short = 'N', long = "skip-locked")]
    skip_locked: bool,
    /// Target partition on the replica (-u, -m)
    #[arg(
        short = 'p',
        long = "partition",
        visible_alias = "dest-partition",
        value_name = "PARTITION"
    )]
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
    #[arg(short = 'w', long = "delayed-startup", value_name = "SECS")]
    delay: Option<u64>,
    /// Verbose: -v shows what is done, -vv also the protocol
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    verbose: u8,
    /// Log actions (accepted for compatibility: everything goes to the log anyway)
    #[arg(short = 'l', long = "log", visible_alias = "verbose-logging")]
    log: bool,
    /// With -u, -m or -A: change nothing, compare with the replica and print
    /// OK/DIFF lines; exit 0 when everything matches, 1 otherwise
    #[arg(long = "verify", conflicts_with_all = ["meta", "no_copyback"])]
    verify: bool,
    /// Userids, mailbox names, or the -A prefix
    args: Vec<String>,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            // Usage errors exit with EX_USAGE, as Cyrus's; --help and --version with 0.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 64 } else { 0 });
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
    let rolling = args.rolling || args.foreground_rolling;
    let modes = [
        args.user,
        args.mailbox,
        args.all,
        args.meta,
        rolling,
        args.release,
    ]
    .iter()
    .filter(|m| **m)
    .count();
    if modes != 1 {
        return Err(Usage(
            "exactly one mode is required: -u, -m, -A, -s, -r, -R or --release".into(),
        )
        .into());
    }
    if args.once && !rolling {
        return Err(Usage("-1 goes with -r or -R".into()).into());
    }
    if args.verify && (rolling || args.release) {
        return Err(Usage("--verify goes with -u, -m or -A".into()).into());
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
    client
        .resolve_sieve_mailbox(&store)
        .context("reading the local store")?;
    let opts = SyncOptions {
        partition: args.partition.clone(),
        no_copyback: args.no_copyback,
        local: args.local,
    };
    if args.verify {
        return verify(&args, &store, &client, &opts);
    }
    if args.release {
        return release(&args, &store);
    }
    if rolling {
        return rolling_mode(&args, &conf, &mut store, &client, &opts);
    }
    let list = items(&args)?;
    if (args.user || args.mailbox || args.meta) && list.is_empty() {
        return Err(Usage("no userids or mailboxes given".into()).into());
    }
    let mut progress = Progress::new(args.verbose == 0);
    let mut failures = 0u32;
    let mut conn = connect(&client, &opts)?;
    // The per-user sync lock a rolling client takes too (`-N` there skips these users).
    let locks = UserLocks::new(
        &store.config().configdirectory,
        &client.connect.host,
        client.connect.port,
    );
    if args.user || args.meta {
        for userid in &list {
            let _lock = locks.wait(&Subject::User(userid.clone()));
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
        // A user's last mailbox may still be committing on the replica while the next
        // user syncs (Syncer::sync_user_then): its lock is held until then.
        let mut previous_lock = None;
        for (i, userid) in users.iter().enumerate() {
            let lock = locks.wait(&Subject::User(userid.clone()));
            let mut s = Syncer {
                store: &mut store,
                conn: &mut conn,
                opts: &opts,
                progress: &mut progress,
            };
            let result = s.sync_user_then(userid, users.get(i + 1).map(String::as_str));
            failures += report_carried_failures(&mut conn);
            if let Err(e) = result {
                failures += 1;
                error!("SYNCERROR: user {userid}: {e}");
                eprintln!("sync_client: user {userid}: {e}");
                // Errors disconnect; the next item reconnects (§4.11).
                conn.discard_deferred();
                failures += report_carried_failures(&mut conn);
                conn = connect(&client, &opts)?;
            }
            previous_lock = Some(lock);
        }
        let mut s = Syncer {
            store: &mut store,
            conn: &mut conn,
            opts: &opts,
            progress: &mut progress,
        };
        let carried = s.conclude_carried();
        failures += report_carried_failures(&mut conn);
        if carried.is_err() {
            conn = connect(&client, &opts)?;
        }
        drop(previous_lock);
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
        "done in {:.1}s: {} users, {} mailboxes updated or checked, {} messages ({} bytes) sent, {} commands ({} GET, {} APPLY), {} wire bytes out",
        progress.elapsed().as_secs_f64(),
        progress.users,
        progress.mailboxes,
        stats.messages_sent,
        stats.message_bytes_sent,
        stats.commands,
        stats.gets,
        stats.applies,
        stats.wire_bytes_out
    );
    Ok(if failures > 0 { 1 } else { 0 })
}

/// `--verify`: the read-only comparison (`verify.rs`); never sends APPLY FORCE.
fn verify(
    args: &Args,
    store: &Store,
    client: &ClientConfig,
    opts: &SyncOptions,
) -> anyhow::Result<u8> {
    use csync_sync_client::verify::{Scope, Verifier};
    let list = items(args)?;
    let scope = if args.user {
        Scope::Users(list)
    } else if args.mailbox {
        let ns = store.namespace();
        let names = list.iter().map(|n| ns.to_internal(n));
        Scope::Mailboxes(
            names
                .collect::<Result<_, _>>()
                .map_err(|e| Usage(e.to_string()))?,
        )
    } else {
        Scope::All(list.first().cloned())
    };
    if matches!(&scope, Scope::Users(l) | Scope::Mailboxes(l) if l.is_empty()) {
        return Err(Usage("no userids or mailboxes given".into()).into());
    }
    let mut conn = Connection::connect(&client.connect)
        .with_context(|| format!("replica {}:{}", client.connect.host, client.connect.port))?;
    let mut out = std::io::stdout().lock();
    let summary = Verifier {
        store,
        conn: &mut conn,
        opts,
        out: &mut out,
        summary: Default::default(),
    }
    .run(&scope)?;
    let stats = conn.exit()?;
    info!(
        "verify: {} checked, {} differ; {} commands ({} GET, {} APPLY)",
        summary.checked, summary.differing, stats.commands, stats.gets, stats.applies
    );
    Ok(if summary.converged() { 0 } else { 1 })
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

/// Set in the re-executed child of `-r`: it stays in the foreground (and calls setsid).
const FOREGROUND_ENV: &str = "CSYNC_SYNC_CLIENT_FOREGROUND";

/// The channel of `-n` (`None`: the default channel).
fn channel_of(args: &Args) -> anyhow::Result<csync_synclog::Channel> {
    match &args.channel {
        None => Ok(csync_synclog::Channel::Default),
        Some(name) => {
            csync_synclog::Channel::named(name).map_err(|e| Usage(format!("-n {name}: {e}")).into())
        }
    }
}

/// `-r`, `-R`: rolling replication (see `rolling.rs`).
fn rolling_mode(
    args: &Args,
    conf: &csync_config::Config,
    store: &mut Store,
    client: &ClientConfig,
    opts: &SyncOptions,
) -> anyhow::Result<u8> {
    use csync_sync_client::rolling::{Control, Exit, Rolling, RollingOptions};
    let channel = channel_of(args)?;
    let in_background = std::env::var_os(FOREGROUND_ENV).is_some();
    if args.rolling
        && args.file.is_none()
        && std::env::var_os("CYRUS_ISDAEMON").is_none()
        && !in_background
    {
        return background();
    }
    if in_background && args.rolling {
        // Leave the terminal's session (its hangups and Ctrl-C); fails harmlessly when
        // already a session leader.
        let _ = nix::unistd::setsid();
    }
    // Before any other thread exists, so every thread inherits the blocked signals.
    let control = Control::new();
    control.handle_signals()?;
    let config_dir = store.config().configdirectory.clone();
    let deleted_prefix = store.namespace().deletedprefix.clone();
    let mut ropts = RollingOptions::new(channel.clone(), config_dir, &deleted_prefix, client);
    ropts.once = args.once;
    ropts.session_timeout = std::time::Duration::from_secs(args.timeout.max(1));
    if let Some(secs) = args.min_delta {
        ropts.interval = std::time::Duration::from_secs(secs);
    }
    if let Some(file) = &args.shutdown_file {
        ropts.shutdown_file = Some(file.clone());
    }
    ropts.connect_once = args.connect_once;
    ropts.skip_locked = args.skip_locked;
    if args.file.is_none() {
        let logging = conf.switch_or("sync_log", false).unwrap_or(false);
        let channels = conf.sync_log_channels().unwrap_or_default();
        if !logging || !channels.contains(&channel) {
            tracing::warn!(
                "{}: this configuration does not log to channel {channel} \
                 (sync_log, sync_log_channels); waiting for other writers",
                args.config.display()
            );
        }
    }
    let log_dir = ropts.log_dir();
    let mut rolling = Rolling::new(store, client, opts, ropts, control);
    if let Some(addr) = client.metrics_listen {
        let metrics = std::sync::Arc::new(csync_sync_client::metrics::ClientMetrics::default());
        csync_sync_client::metrics::serve(
            addr,
            metrics.clone(),
            csync_sync_client::metrics::ChannelFiles {
                channel: channel.to_string(),
                log_dir,
            },
        );
        rolling.set_metrics(metrics);
    }
    let exit = match &args.file {
        Some(file) => {
            let contents = if file.as_os_str() == "-" {
                csync_synclog::read_from(std::io::stdin().lock())?
            } else {
                csync_synclog::read_file(file)?
            };
            for skipped in &contents.skipped {
                tracing::warn!(
                    "{}:{}: skipped: {}",
                    file.display(),
                    skipped.line,
                    skipped.reason
                );
            }
            rolling.run_records(&contents.records)?
        }
        None => rolling.run()?,
    };
    Ok(match exit {
        Exit::Done | Exit::Stopped => 0,
        Exit::Failed => 1,
    })
}

/// `-r` outside `cyrus.conf`'s DAEMON section: the same command again, in the
/// background (a re-exec rather than fork(2), which would need unsafe code).
fn background() -> anyhow::Result<u8> {
    let exe = std::env::current_exe().context("finding the sync_client executable")?;
    let child = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env(FOREGROUND_ENV, "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting sync_client in the background")?;
    info!(
        "rolling replication runs in the background as process {}",
        child.id()
    );
    Ok(0)
}

/// `--release USER...`: returns quarantined users (or shared mailboxes) to the log.
fn release(args: &Args, store: &Store) -> anyhow::Result<u8> {
    if args.args.is_empty() {
        return Err(Usage(
            "--release needs the userids (or shared mailbox names) to release".into(),
        )
        .into());
    }
    let channel = channel_of(args)?;
    let released = csync_sync_client::rolling::release(
        &store.config().configdirectory,
        &channel,
        &store.namespace().deletedprefix,
        &args.args,
    )?;
    for subject in &released {
        println!("released {subject}");
    }
    let missing: Vec<&String> = args
        .args
        .iter()
        .filter(|n| !released.iter().any(|s| s.is_named(n)))
        .collect();
    for name in &missing {
        eprintln!("sync_client: {name} is not in the quarantine of channel {channel}");
    }
    Ok(if missing.is_empty() { 0 } else { 1 })
}

/// Reports the failures of mailboxes carried over from one user to the next
/// (`Syncer::sync_user_then`) under their own user; returns how many.
fn report_carried_failures(conn: &mut Connection) -> u32 {
    let failed = std::mem::take(&mut conn.carried_failures);
    for (userid, e) in &failed {
        error!("SYNCERROR: user {userid}: {e}");
        eprintln!("sync_client: user {userid}: {e}");
    }
    u32::try_from(failed.len()).unwrap_or(u32::MAX)
}
