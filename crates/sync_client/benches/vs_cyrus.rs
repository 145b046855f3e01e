//! csync's `sync_client` against Cyrus's own: full syncs and rolling-replication lag.
//!
//! ```sh
//! cargo bench -p csync-sync-client --bench vs_cyrus
//! VS_CYRUS_MESSAGES=20000 VS_CYRUS_USERS=100 cargo bench -p csync-sync-client --bench vs_cyrus
//! ```
//!
//! One corpus is generated deterministically and delivered once, by LMTP, to a real Cyrus
//! master (`tests/cyrus/cyrus-instance.sh`, `cyrusctl.py deliver`): VS_CYRUS_MESSAGES
//! messages of 1–200 KB (log-uniform, 30 % multipart) round-robin over the INBOX, Archive
//! and Lists folders of VS_CYRUS_USERS users. The csync master is a copy of it: the real
//! Cyrus `sync_client -A` replicates the Cyrus master once into an empty csync store
//! (csync's sync_server), so both masters hold the same messages, byte for byte, with the
//! same uids, internaldates, flags and uniqueids.
//!
//! **Full sync** (`sync_client -A`, every run into a new, empty replica), in three pairs,
//! each compressed and uncompressed:
//!
//! * `cyrus → cyrus`: the real Cyrus client of the Cyrus master into a real Cyrus 3.6
//!   replica (the reference);
//! * `csync → cyrus`: csync's client (this crate's binary, bench profile) of the csync
//!   master into a real Cyrus replica;
//! * `csync → csync`: csync's client into csync's sync_server.
//!
//! Cyrus always offers COMPRESS and its client always uses it: uncompressed runs into a
//! Cyrus replica go through a loopback relay (in this process) that removes
//! `* COMPRESS DEFLATE` from the banner; csync's sync_server gets `csync_compress: no`.
//! Before every run the page cache is written back (`sync`), so a run does not pay for
//! the previous run's writes. For every run: wall time, messages/s, MB/s (10^6 bytes of
//! message files), the client's CPU time (user + sys) and peak RSS (`getrusage(RUSAGE_CHILDREN)` in a wrapper process
//! around the client alone: for Cyrus that is `tests/cyrus/sync.sh`, whose bash and
//! `timeout` add a few ms and a few MiB, below its sync_client), and the 1-minute load
//! average before the run. Every run is checked: the client exits 0 and the replica holds
//! as many message files, of as many bytes, as the master. Then the ratios against
//! Cyrus → Cyrus and the targets: csync → csync wall <= 1/8 of Cyrus → Cyrus compressed
//! and <= 2/3 uncompressed, and the client's RSS flat in mailbox size, for which a second
//! pair of masters holds VS_CYRUS_ONEBOX messages in a single mailbox.
//!
//! **Rolling lag**: VS_CYRUS_LAG_RATE changes per second (half deliveries of new 1–200 KB
//! messages, half `\Flagged` toggles on random existing messages, the same deterministic
//! sequence for every master) for VS_CYRUS_LAG_SECONDS, on a master whose rolling client
//! follows its sync_log into a replica that was filled by a full sync just before:
//!
//! * Cyrus: deliveries by LMTP, toggles by IMAP `UID STORE` (as the user, proxy login)
//!   into the Cyrus master, its `sync_client -R` with `sync_repeat_interval: 1` (the
//!   toolkit's setting) into a Cyrus replica;
//! * csync: deliveries and toggles through the mailstore API in this process
//!   (`Store::deliver`, `Store::store_flags`, sync_log records as csyncadm writes them)
//!   into the csync master, csync's `sync_client -R -d N` into csync's sync_server, once
//!   for every N in VS_CYRUS_LAG_INTERVALS (`-d` is `sync_repeat_interval`: 0 starts a
//!   run at every write, 1 is the Cyrus setting).
//!
//! Lag = from the moment the change is committed on the master (LMTP `250`, IMAP tagged
//! `OK`, `Store::write` returned) to the moment the replica's copy of the mailbox has a
//! HIGHESTMODSEQ at least the master's right after the change. The replica is polled
//! every 2 ms by a thread of this process with a cheap check of only the mailboxes with
//! changes in flight: for Cyrus a 128-byte read of the replica's `cyrus.index` header
//! (index format 17, Cyrus 3.6), for csync one SQLite read through the mailstore API.
//! Printed: p50/p99/max over all changes, and per kind.
//!
//! Settings (environment):
//!
//! | variable | default | |
//! | --- | --- | --- |
//! | VS_CYRUS_MESSAGES | 5000 | corpus size |
//! | VS_CYRUS_USERS | 50 | users (3 mailboxes each) |
//! | VS_CYRUS_ONEBOX | = MESSAGES | messages of the one-mailbox corpus; 0 skips it |
//! | VS_CYRUS_RUNS | 2 | runs of every full-sync configuration (interleaved) |
//! | VS_CYRUS_CLIENT_CONFIGS | all | subset of `cyrus-cyrus-z,cyrus-cyrus-plain,csync-cyrus-z,csync-cyrus-plain,csync-csync-z,csync-csync-plain`; empty: no full syncs |
//! | VS_CYRUS_LAG_SECONDS | 20 | duration of the rolling load; 0 skips the lag part |
//! | VS_CYRUS_LAG_RATE | 50 | changes per second |
//! | VS_CYRUS_LAG_INTERVALS | 0,1 | csync's `sync_client -R -d` values to measure |
//! | VS_CYRUS_LAG_CYRUS | 1 | 0: no Cyrus rolling run |
//! | VS_CYRUS_SEED | 2024 | generator seed |
//! | VS_CYRUS_CLIENT_DIR | `<workspace>/target/vs_cyrus_client` | work dir (not /tmp: disk); wiped at start |
//! | VS_CYRUS_KEEP | unset | 1: keep the work dir (instances stopped) at the end |
//! | VS_CYRUS_REUSE_MASTER | unset | 1: reuse the masters of a kept work dir if they hold the same corpus (a lag run changes them, so then they are rebuilt) |
//! | VS_CYRUS_CLIENT_BIN | this crate's | another csync sync_client binary (before/after comparisons) |
//! | CYRUS_BIN | /usr/lib/cyrus/bin | Cyrus installation |
//!
//! Requirements: root or any user, Cyrus 3.6 (`cyrus-imapd cyrus-common
//! cyrus-replication sasl2-bin libsasl2-modules`), python3, gcc (see
//! tests/cyrus/README.md). Without Cyrus it fails (exit 1); it never skips silently.
//! Everything listens on 127.0.0.1 only. Every process it starts (Cyrus instances through
//! their pid files, csync servers and clients by pid) is stopped at the end, on failure,
//! and on SIGINT/SIGTERM. It is a benchmark, not a test: `cargo test` does not build or
//! run it, and a run without `--bench` (`cargo test --benches`) only prints that it
//! skipped. csync's sync_server runs as a child process of this binary (re-executed with
//! the server's configuration in its environment), built with the same profile.

#[path = "../../../tests/support/cyrus_bench.rs"]
mod cyrus_bench;

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cyrus_bench::*;

const BENCH: &str = "vs_cyrus (sync_client)";
/// Set in re-executed copies of this binary: `server` (csync's sync_server) or `rusage`
/// (the wrapper that measures one client run).
const ROLE_ENV: &str = "VS_CYRUS_CLIENT_ROLE";
const CONF_ENV: &str = "VS_CYRUS_CLIENT_SERVER_CONF";
const RUSAGE_OUT_ENV: &str = "VS_CYRUS_CLIENT_RUSAGE_OUT";

// ---------------------------------------------------------------------------------------
// Settings

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Pair {
    CyrusCyrus,
    CsyncCyrus,
    CsyncCsync,
}

impl Pair {
    fn label(self) -> &'static str {
        match self {
            Pair::CyrusCyrus => "cyrus -> cyrus",
            Pair::CsyncCyrus => "csync -> cyrus",
            Pair::CsyncCsync => "csync -> csync",
        }
    }

    fn csync_client(self) -> bool {
        self != Pair::CyrusCyrus
    }

    fn cyrus_replica(self) -> bool {
        self != Pair::CsyncCsync
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Config {
    pair: Pair,
    compress: bool,
}

impl Config {
    const ALL: [Config; 6] = [
        Config {
            pair: Pair::CyrusCyrus,
            compress: true,
        },
        Config {
            pair: Pair::CsyncCyrus,
            compress: true,
        },
        Config {
            pair: Pair::CsyncCsync,
            compress: true,
        },
        Config {
            pair: Pair::CyrusCyrus,
            compress: false,
        },
        Config {
            pair: Pair::CsyncCyrus,
            compress: false,
        },
        Config {
            pair: Pair::CsyncCsync,
            compress: false,
        },
    ];

    fn key(self) -> String {
        let pair = match self.pair {
            Pair::CyrusCyrus => "cyrus-cyrus",
            Pair::CsyncCyrus => "csync-cyrus",
            Pair::CsyncCsync => "csync-csync",
        };
        format!("{pair}-{}", if self.compress { "z" } else { "plain" })
    }
}

#[derive(Debug, Clone)]
struct Settings {
    messages: usize,
    users: usize,
    onebox: usize,
    runs: usize,
    configs: Vec<Config>,
    seed: u64,
    dir: PathBuf,
    keep: bool,
    reuse_master: bool,
    lag_seconds: f64,
    lag_rate: f64,
    lag_intervals: Vec<u64>,
    lag_cyrus: bool,
    client_bin: PathBuf,
    cyrus_bin: PathBuf,
}

impl Settings {
    fn from_env() -> Result<Settings> {
        let messages = env_usize("VS_CYRUS_MESSAGES", 5000)?;
        let users = env_usize("VS_CYRUS_USERS", 50)?;
        ensure!(
            messages >= 1 && users >= 1,
            "VS_CYRUS_MESSAGES and VS_CYRUS_USERS must be >= 1"
        );
        let configs = match std::env::var("VS_CYRUS_CLIENT_CONFIGS") {
            Ok(list) => {
                let mut out = Vec::new();
                for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
                    let c = Config::ALL
                        .into_iter()
                        .find(|c| c.key() == word)
                        .with_context(|| {
                            format!(
                                "VS_CYRUS_CLIENT_CONFIGS: unknown {word:?} (one of {})",
                                Config::ALL.map(|c| c.key()).join(", ")
                            )
                        })?;
                    out.push(c);
                }
                out
            }
            Err(_) => Config::ALL.to_vec(),
        };
        let lag_intervals = match std::env::var("VS_CYRUS_LAG_INTERVALS") {
            Ok(list) => list
                .split(',')
                .map(str::trim)
                .filter(|w| !w.is_empty())
                .map(|w| {
                    w.parse::<u64>()
                        .with_context(|| format!("VS_CYRUS_LAG_INTERVALS: {w:?} is not seconds"))
                })
                .collect::<Result<Vec<_>>>()?,
            Err(_) => vec![0, 1],
        };
        let lag_rate = env_f64("VS_CYRUS_LAG_RATE", 50.0)?;
        ensure!(lag_rate > 0.0, "VS_CYRUS_LAG_RATE must be > 0");
        Ok(Settings {
            messages,
            users,
            onebox: env_usize("VS_CYRUS_ONEBOX", messages)?,
            runs: env_usize("VS_CYRUS_RUNS", 2)?.max(1),
            configs,
            seed: env_usize("VS_CYRUS_SEED", 2024)? as u64,
            dir: work_dir("VS_CYRUS_CLIENT_DIR", "vs_cyrus_client")?,
            keep: env_flag("VS_CYRUS_KEEP"),
            reuse_master: env_flag("VS_CYRUS_REUSE_MASTER"),
            lag_seconds: env_f64("VS_CYRUS_LAG_SECONDS", 20.0)?.max(0.0),
            lag_rate,
            lag_intervals,
            lag_cyrus: std::env::var("VS_CYRUS_LAG_CYRUS").map_or(true, |v| v != "0"),
            client_bin: std::env::var_os("VS_CYRUS_CLIENT_BIN")
                .filter(|b| !b.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_sync_client"))),
            cyrus_bin: cyrus_bin(),
        })
    }

    fn lag_enabled(&self) -> bool {
        self.lag_seconds > 0.0 && (self.lag_cyrus || !self.lag_intervals.is_empty())
    }
}

// ---------------------------------------------------------------------------------------
// Re-executed roles: csync's sync_server, and the rusage wrapper

/// csync's sync_server on 127.0.0.1:0, as `sync_server -C conf --listen 127.0.0.1:0`
/// does it (same runtime, same library): prints `listening on ADDR`, stops on SIGTERM.
fn server_role() -> ExitCode {
    let Some(conf_path) = std::env::var_os(CONF_ENV) else {
        eprintln!("{CONF_ENV} not set");
        return ExitCode::from(64);
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let result = (|| -> Result<()> {
        let conf = csync_config::Config::from_file(PathBuf::from(&conf_path))?;
        let config = csync_sync_server::config::ServerConfig::from_imapd(&conf)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let shared = Arc::new(csync_sync_server::server::Shared::new(config)?);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            println!("listening on {}", listener.local_addr()?);
            std::io::stdout().flush()?;
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let mut term = signal(SignalKind::terminate())?;
            let mut int = signal(SignalKind::interrupt())?;
            tokio::spawn(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                let _ = stop_tx.send(true);
            });
            csync_sync_server::server::serve(shared, vec![listener], stop_rx).await
        })
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sync_server: {e:#}");
            ExitCode::from(75)
        }
    }
}

/// Runs its arguments as a command, then writes `exit-code utime-s stime-s maxrss-KiB`
/// of it (and its reaped descendants) from getrusage(RUSAGE_CHILDREN) to the file
/// named by RUSAGE_OUT_ENV. This process has no other children, so the figures are the
/// client's alone.
fn rusage_role() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let Some(out) = std::env::var_os(RUSAGE_OUT_ENV) else {
        eprintln!("{RUSAGE_OUT_ENV} not set");
        return ExitCode::from(64);
    };
    let Some((program, rest)) = args.split_first() else {
        eprintln!("no command");
        return ExitCode::from(64);
    };
    let status = match Command::new(program)
        .args(rest)
        .env_remove(ROLE_ENV)
        .env_remove(RUSAGE_OUT_ENV)
        .status()
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot start {}: {e}", program.to_string_lossy());
            return ExitCode::from(127);
        }
    };
    let code = status.code().unwrap_or(128);
    use nix::sys::resource::{UsageWho, getrusage};
    let text = match getrusage(UsageWho::RUSAGE_CHILDREN) {
        Ok(u) => {
            let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
            format!(
                "{code} {:.6} {:.6} {}\n",
                secs(u.user_time()),
                secs(u.system_time()),
                u.max_rss()
            )
        }
        Err(e) => format!("{code} error {e}\n"),
    };
    let _ = std::fs::write(out, text);
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// What the wrapper measured.
#[derive(Debug, Clone, Copy, Default)]
struct Measured {
    wall_s: f64,
    user_s: f64,
    sys_s: f64,
    rss_kib: u64,
}

/// Runs `program args` under the rusage wrapper, output to `log`.
fn measured(
    program: &Path,
    args: &[OsString],
    envs: &[(&str, OsString)],
    log: &Path,
    what: &str,
) -> Result<Measured> {
    let out = log.with_extension("rusage");
    let _ = std::fs::remove_file(&out);
    let log_file = std::fs::File::create(log).with_context(|| log.display().to_string())?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg(program)
        .args(args)
        .env(ROLE_ENV, "rusage")
        .env(RUSAGE_OUT_ENV, &out)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let t = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("{what}: starting"))?;
    register_tree(child.id(), &out.display().to_string());
    let status = child.wait();
    let wall_s = t.elapsed().as_secs_f64();
    unregister_tree(child.id());
    let status = status?;
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        bail!(
            "{what} failed ({status}); log {}:\n{}",
            log.display(),
            lines[lines.len().saturating_sub(25)..].join("\n")
        );
    }
    let text = std::fs::read_to_string(&out).with_context(|| out.display().to_string())?;
    let f: Vec<&str> = text.split_whitespace().collect();
    ensure!(f.len() == 4, "{what}: rusage wrapper wrote {text:?}");
    Ok(Measured {
        wall_s,
        user_s: f[1].parse()?,
        sys_s: f[2].parse()?,
        rss_kib: f[3].parse()?,
    })
}

// ---------------------------------------------------------------------------------------
// csync processes: the replica server, the master's configuration

/// The imapd.conf lines every csync store here shares (the tests/cyrus namespace).
fn namespace_conf(dir: &Path) -> String {
    format!(
        "configdirectory: {d}/conf\npartition-default: {d}/spool\n\
         altnamespace: yes\nunixhierarchysep: yes\nvirtdomains: off\nconversations: off\n",
        d = dir.display()
    )
}

/// A csync replica (sync_server) on a store in `dir`.
struct CsyncServer {
    child: Child,
    port: u16,
    tag: String,
}

impl CsyncServer {
    fn start(dir: &Path, compress: bool) -> Result<CsyncServer> {
        std::fs::create_dir_all(dir.join("conf"))?;
        std::fs::create_dir_all(dir.join("spool"))?;
        let conf = dir.join("replica.conf");
        let text = format!(
            "{}servername: csync-replica.test\nadmins: repluser\nallowplaintext: yes\n\
             sasl_mech_list: PLAIN LOGIN\nfailedloginpause: 0\ncsync_compress: {}\n",
            namespace_conf(dir),
            if compress { "yes" } else { "no" }
        );
        std::fs::write(&conf, text)?;
        let mut passwords = csync_auth::passwd::PasswordFile::new(dir.join("conf/csync.passwd"));
        passwords.set("repluser", "secret")?;
        passwords.save()?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("sync_server.log"))?;
        let tag = conf.display().to_string();
        let mut child = Command::new(std::env::current_exe()?)
            .env(ROLE_ENV, "server")
            .env(CONF_ENV, &conf)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("starting csync's sync_server")?;
        register_server(child.id(), &tag);
        let mut stdout = child.stdout.take().context("server stdout")?;
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while stdout.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        let line = String::from_utf8_lossy(&line).into_owned();
        let port = line
            .rsplit(':')
            .next()
            .and_then(|p| p.trim().parse().ok())
            .with_context(|| {
                format!(
                    "csync's sync_server did not report its port ({line:?}); see {}/sync_server.log",
                    dir.display()
                )
            })?;
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        });
        Ok(CsyncServer { child, port, tag })
    }

    fn stop(mut self) -> Result<()> {
        let pid = self.child.id();
        signal_pid(pid, &self.tag, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.child.try_wait()?.is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        unregister_server(pid);
        Ok(())
    }
}

/// A signal to a process we started, if it is still that process.
fn signal_pid(pid: u32, tag: &str, signal: nix::sys::signal::Signal) {
    if cmdline_has(pid, tag) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
    }
}

/// A csync master: a store (filled from the Cyrus master) and its client configuration.
#[derive(Debug, Clone)]
struct CsyncMaster {
    dir: PathBuf,
    conf: PathBuf,
    messages: u64,
    bytes: u64,
    fill_s: f64,
}

const FILLED_MARKER: &str = "vs_cyrus.filled";

/// The csync copy of a Cyrus master: the real Cyrus `sync_client -A` into csync's
/// sync_server on an empty store in `dir` (reused when it already holds that corpus).
fn make_csync_master(s: &Settings, corpus: &Corpus, dir: PathBuf) -> Result<CsyncMaster> {
    let corpus_marker = std::fs::read_to_string(corpus.master.join(CORPUS_MARKER))?;
    let marker = dir.join(FILLED_MARKER);
    let reuse = corpus.deliver_s == 0.0
        && s.reuse_master
        && std::fs::read_to_string(&marker).is_ok_and(|m| m == corpus_marker);
    let conf = dir.join("imapd.conf");
    let mut fill_s = 0.0;
    if reuse {
        eprintln!(
            "{BENCH}: reusing the csync copy of the {} corpus",
            corpus.name
        );
    } else {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
            note_bulk_delete();
        }
        std::fs::create_dir_all(&dir)?;
        eprintln!(
            "{BENCH}: copying the {} corpus into a csync store (Cyrus sync_client -A into csync's sync_server) ...",
            corpus.name
        );
        let server = CsyncServer::start(&dir, true)?;
        let t = Instant::now();
        let result = run(
            kit("sync.sh")
                .arg(&corpus.master)
                .args([
                    "-S",
                    &format!("127.0.0.1:{}", server.port),
                    "--timeout",
                    &(600 + corpus.messages / 10).to_string(),
                    "-A",
                ])
                .env("CYRUS_BIN", &s.cyrus_bin),
            "filling the csync master (Cyrus sync_client -A)",
        );
        fill_s = t.elapsed().as_secs_f64();
        server.stop()?;
        result?;
    }
    let (messages, bytes) = spool_messages(&dir.join("spool"))?;
    ensure!(
        (messages, bytes) == (corpus.messages, corpus.bytes),
        "the csync copy of the {} corpus holds {messages} message files / {bytes} bytes, \
         the Cyrus master {} / {}",
        corpus.name,
        corpus.messages,
        corpus.bytes
    );
    // The master's side: sync_log on (rolling), where the replica is comes from -S.
    let text = format!(
        "{}servername: csync-master.test\nsync_log: on\nsync_host: 127.0.0.1\n\
         sync_authname: repluser\nsync_password: secret\ncsync_allow_plaintext: yes\n\
         sync_reconnect_maxwait: 1\ncsync_reconnect_initial: 1\n",
        namespace_conf(&dir)
    );
    std::fs::write(&conf, text)?;
    std::fs::write(&marker, &corpus_marker)?;
    Ok(CsyncMaster {
        dir,
        conf,
        messages,
        bytes,
        fill_s,
    })
}

/// A rolling run changes a master: it must not be reused as "the corpus" later.
fn forget_masters(cyrus: &Corpus, csync: &CsyncMaster) {
    let _ = std::fs::remove_file(cyrus.master.join(CORPUS_MARKER));
    let _ = std::fs::remove_file(csync.dir.join(FILLED_MARKER));
}

// ---------------------------------------------------------------------------------------
// Full syncs

#[derive(Debug, Clone)]
struct RunResult {
    corpus: &'static str,
    config: Config,
    run: usize,
    m: Measured,
    messages: u64,
    bytes: u64,
    load1: f64,
}

fn start_cyrus_replica(dir: &Path) -> Result<u16> {
    register_instance(dir);
    run(
        kit("cyrus-instance.sh")
            .arg("start")
            .arg(dir)
            .args(["replica", "auto"]),
        "starting a Cyrus replica",
    )?;
    env_port(dir, "CYRUS_CSYNC_PORT")
}

fn stop_cyrus(dir: &Path) -> Result<()> {
    run(
        kit("cyrus-instance.sh").arg("stop").arg(dir),
        "stopping a Cyrus instance",
    )?;
    unregister_instance(dir);
    Ok(())
}

fn check_replica(messages: u64, bytes: u64, spool: &Path, what: &str) -> Result<()> {
    let (n, b) = spool_messages(spool)?;
    ensure!(
        (n, b) == (messages, bytes),
        "{what}: the replica holds {n} message files / {b} bytes, the master {messages} / {bytes}"
    );
    Ok(())
}

/// `sync_client -A` of the pair's master into 127.0.0.1:`port`, measured.
fn sync_all(
    s: &Settings,
    pair: Pair,
    corpus: &Corpus,
    csync: &CsyncMaster,
    port: u16,
    log: &Path,
) -> Result<Measured> {
    if pair.csync_client() {
        let args: Vec<OsString> = vec![
            "-C".into(),
            csync.conf.clone().into(),
            "-S".into(),
            format!("127.0.0.1:{port}").into(),
            "-v".into(),
            "-A".into(),
        ];
        measured(&s.client_bin, &args, &[], log, "csync sync_client -A")
    } else {
        let args: Vec<OsString> = vec![
            corpus.master.clone().into(),
            "-S".into(),
            format!("127.0.0.1:{port}").into(),
            "--timeout".into(),
            (600 + corpus.messages / 10).to_string().into(),
            "-A".into(),
        ];
        measured(
            &workspace().join("tests/cyrus/sync.sh"),
            &args,
            &[("CYRUS_BIN", s.cyrus_bin.clone().into())],
            log,
            "Cyrus sync_client -A",
        )
    }
}

fn full_sync(
    s: &Settings,
    corpus: &Corpus,
    csync: &CsyncMaster,
    config: Config,
    dir: PathBuf,
) -> Result<RunResult> {
    let load1 = load1();
    let log = PathBuf::from(format!("{}.client.log", dir.display()));
    let m = if config.pair.cyrus_replica() {
        let port = start_cyrus_replica(&dir)?;
        let relay = if config.compress {
            None
        } else {
            Some(Relay::start(port)?)
        };
        let target = relay.as_ref().map_or(port, |r| r.port);
        let m = sync_all(s, config.pair, corpus, csync, target, &log);
        drop(relay);
        let m = m.and_then(|m| {
            check_replica(
                corpus.messages,
                corpus.bytes,
                &dir.join("spool"),
                "Cyrus replica",
            )
            .map(|()| m)
        });
        stop_cyrus(&dir)?;
        m?
    } else {
        let server = CsyncServer::start(&dir, config.compress)?;
        let m = sync_all(s, config.pair, corpus, csync, server.port, &log).and_then(|m| {
            check_replica(
                csync.messages,
                csync.bytes,
                &dir.join("spool"),
                "csync replica",
            )
            .map(|()| m)
        });
        server.stop()?;
        m.with_context(|| format!("server log: {}/sync_server.log", dir.display()))?
    };
    Ok(RunResult {
        corpus: corpus.name,
        config,
        run: 0,
        m,
        messages: corpus.messages,
        bytes: corpus.bytes,
        load1,
    })
}

// ---------------------------------------------------------------------------------------
// Rolling lag: the change sequence

/// SplitMix64: small, deterministic, good enough for picking targets and bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One mailbox of the spread corpus, in every spelling the masters need.
#[derive(Debug, Clone)]
struct MailboxNames {
    user: String,
    /// `user.bench001.Archive`
    internal: String,
    /// `user/bench001/Archive` (mbpath, admin)
    external: String,
    /// `Archive` / `INBOX` (the user's own view)
    imap: String,
    /// `bench001+Archive` (LMTP)
    rcpt: String,
    /// Messages the corpus put there (uids 1..=count).
    count: u32,
}

fn spread_mailboxes(s: &Settings) -> Vec<MailboxNames> {
    let recipients = spread_recipients(s.users);
    let n = recipients.len();
    recipients
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let (user, folder) = match r.split_once('+') {
                Some((u, f)) => (u.to_owned(), Some(f.to_owned())),
                None => (r.clone(), None),
            };
            let count = (s.messages / n + usize::from(i < s.messages % n)) as u32;
            MailboxNames {
                internal: match &folder {
                    Some(f) => format!("user.{user}.{f}"),
                    None => format!("user.{user}"),
                },
                external: match &folder {
                    Some(f) => format!("user/{user}/{f}"),
                    None => format!("user/{user}"),
                },
                imap: folder.clone().unwrap_or_else(|| "INBOX".into()),
                rcpt: r.clone(),
                user,
                count,
            }
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Deliver,
    Flag,
}

#[derive(Debug, Clone)]
enum Op {
    Deliver {
        mailbox: usize,
        message: Arc<Vec<u8>>,
    },
    /// Toggle `\Flagged` on this uid.
    Flag { mailbox: usize, uid: u32 },
}

/// The change sequence: `rate * seconds` changes, half deliveries, half toggles,
/// targets uniform over the mailboxes (and, for toggles, over the corpus's uids).
fn lag_plan(s: &Settings, mailboxes: &[MailboxNames]) -> Vec<Op> {
    let n = (s.lag_rate * s.lag_seconds).round().max(1.0) as usize;
    let mut rng = Rng(s.seed ^ 0x1a6_0000);
    let nonce = format!(
        "{}.{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    (0..n)
        .map(|i| {
            let mailbox = rng.below(mailboxes.len() as u64) as usize;
            if rng.unit() < 0.5 {
                // The size from the plan's generator, the words from one of their own:
                // the plan does not depend on the (run-specific) header length.
                let (lo, hi) = (1024f64.ln(), (200.0f64 * 1024.0).ln());
                let size = (lo + rng.unit() * (hi - lo)).exp() as usize;
                let mut words = Rng(s.seed ^ (i as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
                let rcpt = &mailboxes[mailbox].rcpt;
                Op::Deliver {
                    mailbox,
                    message: Arc::new(lag_message(&mut words, size, i, rcpt, &nonce)),
                }
            } else {
                let count = u64::from(mailboxes[mailbox].count.max(1));
                Op::Flag {
                    mailbox,
                    uid: 1 + rng.below(count) as u32,
                }
            }
        })
        .collect()
}

/// A text message of about `target` bytes, CRLF, 7-bit.
fn lag_message(rng: &mut Rng, target: usize, i: usize, rcpt: &str, nonce: &str) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "replication",
        "mailbox",
        "lorem",
        "ipsum",
        "modseq",
        "quota",
        "record",
        "sieve",
        "dolor",
        "amet",
        "index",
        "message",
        "cyrus",
        "rolling",
        "consectetur",
        "partition",
    ];
    let mut m = format!(
        "Return-Path: <lag@example.net>\r\nFrom: \"Lag Test\" <lag@example.net>\r\n\
         To: <{rcpt}@example.test>\r\nSubject: rolling change {i}\r\n\
         Date: Wed, 01 Jan 2025 00:00:00 +0000\r\nMessage-ID: <lag.{nonce}.{i}@bench.example>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    )
    .into_bytes();
    let mut line = String::new();
    while m.len() < target {
        let w = WORDS[rng.below(WORDS.len() as u64) as usize];
        if line.len() + w.len() + 1 > 72 {
            m.extend_from_slice(line.as_bytes());
            m.extend_from_slice(b"\r\n");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(w);
    }
    m.extend_from_slice(line.as_bytes());
    m.extend_from_slice(b"\r\n");
    m
}

// ---------------------------------------------------------------------------------------
// Rolling lag: the masters

/// A master the changes go into. `apply` returns the mailbox and the HIGHESTMODSEQ the
/// replica must reach, and the moment the change was committed.
trait LagMaster {
    fn apply(&mut self, op: &Op) -> Result<(usize, u64, Instant)>;
}

/// A Cyrus index header's HIGHESTMODSEQ (format 17 of Cyrus 3.6: big-endian u64 at
/// offset 68; format 20 moved it to 72).
fn cyrus_index_hms(path: &Path) -> Result<u64> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(path).with_context(|| path.display().to_string())?;
    let mut h = [0u8; 128];
    f.read_exact_at(&mut h, 0)
        .with_context(|| path.display().to_string())?;
    let version = u32::from_be_bytes(h[8..12].try_into()?);
    let at = match version {
        13..=19 => 68,
        20 => 72,
        v => bail!("{}: index format {v} is not known here", path.display()),
    };
    Ok(u64::from_be_bytes(h[at..at + 8].try_into()?))
}

/// The metadata directory of each mailbox on a Cyrus instance (`mbpath`).
fn cyrus_mailbox_dirs(instance: &Path, mailboxes: &[MailboxNames]) -> Result<Vec<PathBuf>> {
    let mut cmd = kit("cyrus-instance.sh");
    cmd.arg("tool").arg(instance).args(["mbpath", "-m"]);
    for m in mailboxes {
        cmd.arg(&m.external);
    }
    let out = run(&mut cmd, "mbpath")?;
    let dirs: Vec<PathBuf> = out
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('/'))
        .map(PathBuf::from)
        .collect();
    ensure!(
        dirs.len() == mailboxes.len(),
        "mbpath printed {} paths for {} mailboxes:\n{out}",
        dirs.len(),
        mailboxes.len()
    );
    Ok(dirs)
}

/// A line-oriented session on a loopback socket (LMTP, IMAP).
struct TextConn {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl TextConn {
    fn connect(port: u16) -> Result<TextConn> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        Ok(TextConn {
            r: BufReader::new(s.try_clone()?),
            w: s,
        })
    }

    fn line(&mut self) -> Result<String> {
        let mut l = String::new();
        ensure!(self.r.read_line(&mut l)? > 0, "connection closed");
        Ok(l)
    }

    fn send(&mut self, b: &[u8]) -> Result<()> {
        self.w.write_all(b)?;
        Ok(())
    }

    /// An SMTP-style reply (`250-...` continued, `250 ...` last): its code.
    fn smtp_reply(&mut self) -> Result<(u32, String)> {
        loop {
            let l = self.line()?;
            ensure!(l.len() >= 4, "LMTP: short reply {l:?}");
            let code: u32 = l[..3].parse().with_context(|| format!("LMTP: {l:?}"))?;
            if l.as_bytes()[3] != b'-' {
                return Ok((code, l));
            }
        }
    }

    /// IMAP: reads up to the tagged reply; literals are read and dropped. Returns the
    /// untagged lines and fails unless the reply is OK.
    fn imap_reply(&mut self, tag: &str) -> Result<Vec<String>> {
        let mut lines = Vec::new();
        loop {
            let l = self.line()?;
            if let Some(n) = l
                .trim_end()
                .strip_suffix('}')
                .and_then(|x| x.rsplit_once('{'))
                .and_then(|(_, n)| n.trim_end_matches('+').parse::<usize>().ok())
            {
                let mut lit = vec![0; n];
                self.r.read_exact(&mut lit)?;
            }
            if let Some(rest) = l.strip_prefix(tag).and_then(|r| r.strip_prefix(' ')) {
                ensure!(rest.starts_with("OK"), "IMAP {tag}: {}", l.trim_end());
                return Ok(lines);
            }
            lines.push(l);
        }
    }
}

struct CyrusMaster {
    mailboxes: Vec<MailboxNames>,
    index: Vec<PathBuf>,
    lmtp_port: u16,
    imap_port: u16,
    admin: String,
    password: String,
    lmtp: Option<TextConn>,
    imap: HashMap<String, (TextConn, Option<String>)>,
    tags: u64,
}

impl CyrusMaster {
    fn new(instance: &Path, mailboxes: Vec<MailboxNames>) -> Result<CyrusMaster> {
        let env = env_of(instance)?;
        let dirs = cyrus_mailbox_dirs(instance, &mailboxes)?;
        Ok(CyrusMaster {
            index: dirs.iter().map(|d| d.join("cyrus.index")).collect(),
            mailboxes,
            lmtp_port: env_port(instance, "CYRUS_LMTP_PORT")?,
            imap_port: env_port(instance, "CYRUS_IMAP_PORT")?,
            admin: env.get("CYRUS_ADMIN").cloned().unwrap_or("admin".into()),
            password: env
                .get("CYRUS_PASSWORD")
                .cloned()
                .unwrap_or("secret".into()),
            lmtp: None,
            imap: HashMap::new(),
            tags: 0,
        })
    }

    fn lmtp(&mut self) -> Result<&mut TextConn> {
        if self.lmtp.is_none() {
            let mut c = TextConn::connect(self.lmtp_port)?;
            let (code, l) = c.smtp_reply()?;
            ensure!(code == 220, "LMTP greeting: {l:?}");
            c.send(b"LHLO vs-cyrus.example\r\n")?;
            let (code, l) = c.smtp_reply()?;
            ensure!(code == 250, "LHLO: {l:?}");
            self.lmtp = Some(c);
        }
        Ok(self.lmtp.as_mut().expect("just connected"))
    }

    fn tag(&mut self) -> String {
        self.tags += 1;
        format!("T{}", self.tags)
    }

    /// The user's IMAP session (proxy login: admin authenticates, acts as the user)
    /// with `mailbox` selected.
    fn imap(&mut self, user: &str, mailbox: &str) -> Result<&mut TextConn> {
        if !self.imap.contains_key(user) {
            use base64::Engine;
            let mut c = TextConn::connect(self.imap_port)?;
            let greeting = c.line()?;
            ensure!(greeting.starts_with("* OK"), "IMAP greeting: {greeting:?}");
            let tag = self.tag();
            c.send(format!("{tag} AUTHENTICATE PLAIN\r\n").as_bytes())?;
            let l = c.line()?;
            ensure!(l.starts_with('+'), "AUTHENTICATE: {l:?}");
            let cred = base64::engine::general_purpose::STANDARD
                .encode(format!("{user}\0{}\0{}", self.admin, self.password));
            c.send(format!("{cred}\r\n").as_bytes())?;
            c.imap_reply(&tag)?;
            self.imap.insert(user.to_owned(), (c, None));
        }
        let tag = self.tag();
        let (c, selected) = self.imap.get_mut(user).expect("just inserted");
        if selected.as_deref() != Some(mailbox) {
            c.send(format!("{tag} SELECT \"{mailbox}\"\r\n").as_bytes())?;
            c.imap_reply(&tag)?;
            *selected = Some(mailbox.to_owned());
        }
        Ok(c)
    }
}

impl LagMaster for CyrusMaster {
    fn apply(&mut self, op: &Op) -> Result<(usize, u64, Instant)> {
        let (mailbox, committed) = match op {
            Op::Deliver { mailbox, message } => {
                let rcpt = self.mailboxes[*mailbox].rcpt.clone();
                let c = self.lmtp()?;
                c.send(
                    format!("MAIL FROM:<lag@example.net>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n")
                        .as_bytes(),
                )?;
                for what in ["MAIL FROM", "RCPT TO"] {
                    let (code, l) = c.smtp_reply()?;
                    ensure!(code == 250, "LMTP {what}: {l:?}");
                }
                let (code, l) = c.smtp_reply()?;
                ensure!(code == 354, "LMTP DATA: {l:?}");
                let mut data = Vec::with_capacity(message.len() + 64);
                for line in message.split_inclusive(|&b| b == b'\n') {
                    if line.first() == Some(&b'.') {
                        data.push(b'.');
                    }
                    data.extend_from_slice(line);
                }
                data.extend_from_slice(b".\r\n");
                c.send(&data)?;
                let (code, l) = c.smtp_reply()?;
                let committed = Instant::now();
                ensure!(code == 250, "LMTP delivery to {rcpt}: {l:?}");
                (*mailbox, committed)
            }
            Op::Flag { mailbox, uid } => {
                let (user, name) = (
                    self.mailboxes[*mailbox].user.clone(),
                    self.mailboxes[*mailbox].imap.clone(),
                );
                let (t1, t2) = (self.tag(), self.tag());
                let c = self.imap(&user, &name)?;
                c.send(format!("{t1} UID FETCH {uid} (FLAGS)\r\n").as_bytes())?;
                let lines = c.imap_reply(&t1)?;
                let flagged = lines.iter().any(|l| l.contains("\\Flagged"));
                let sign = if flagged { '-' } else { '+' };
                c.send(
                    format!("{t2} UID STORE {uid} {sign}FLAGS.SILENT (\\Flagged)\r\n").as_bytes(),
                )?;
                c.imap_reply(&t2)?;
                (*mailbox, Instant::now())
            }
        };
        let hms = cyrus_index_hms(&self.index[mailbox])?;
        Ok((mailbox, hms, committed))
    }
}

struct CsyncLagMaster {
    store: csync_mailstore::Store,
    mailboxes: Vec<MailboxNames>,
}

impl CsyncLagMaster {
    fn open(conf: &Path, mailboxes: Vec<MailboxNames>) -> Result<CsyncLagMaster> {
        let conf = csync_config::Config::from_file(conf)?;
        let mut store =
            csync_mailstore::Store::open(csync_mailstore::StoreConfig::from_imapd(&conf)?)?;
        store.set_changelog(Some(Box::new(csync_synclog::SyncLog::from_config(&conf)?)));
        Ok(CsyncLagMaster { store, mailboxes })
    }
}

impl LagMaster for CsyncLagMaster {
    fn apply(&mut self, op: &Op) -> Result<(usize, u64, Instant)> {
        use csync_mailstore::local::{FlagOp, Flags};
        let (mailbox, committed) = match op {
            Op::Deliver { mailbox, message } => {
                let name = &self.mailboxes[*mailbox].internal;
                self.store
                    .deliver(name, &message[..], &Flags::default(), None)?;
                (*mailbox, Instant::now())
            }
            Op::Flag { mailbox, uid } => {
                let name = &self.mailboxes[*mailbox].internal;
                let m = self.store.real_mailbox(name)?;
                let rec = self
                    .store
                    .record(m.id, *uid)?
                    .with_context(|| format!("{name} has no uid {uid}"))?;
                let flag = Flags::parse(["\\Flagged"])?;
                let op = if rec.record.system_flags.contains(flag.system) {
                    FlagOp::Remove
                } else {
                    FlagOp::Add
                };
                let changed = self.store.store_flags(name, &[*uid], op, &flag)?;
                ensure!(
                    changed == 1,
                    "{name} uid {uid}: flag change changed nothing"
                );
                (*mailbox, Instant::now())
            }
        };
        let hms = self
            .store
            .mailbox(&self.mailboxes[mailbox].internal)?
            .context("mailbox vanished")?
            .state
            .highestmodseq;
        Ok((mailbox, hms, committed))
    }
}

// ---------------------------------------------------------------------------------------
// Rolling lag: the poller and the load

#[derive(Debug, Clone, Copy)]
struct InFlight {
    mailbox: usize,
    target: u64,
    committed: Instant,
    kind: Kind,
    counted: bool,
}

#[derive(Default)]
struct Tracker {
    in_flight: Vec<InFlight>,
    lags: Vec<(Kind, Duration)>,
    polls: u64,
    probes: u64,
    error: Option<String>,
}

/// Polls every 2 ms until `stop`, for the mailboxes with changes in flight only:
/// `probe(mailbox)` is the replica's HIGHESTMODSEQ there.
fn poller(
    tracker: Arc<Mutex<Tracker>>,
    stop: Arc<AtomicBool>,
    mut probe: impl FnMut(usize) -> Result<u64>,
) {
    let mut seen: BTreeMap<usize, u64> = BTreeMap::new();
    while !stop.load(Ordering::SeqCst) {
        let wanted: Vec<(usize, u64)> = {
            let t = tracker.lock().unwrap_or_else(|e| e.into_inner());
            let mut w: BTreeMap<usize, u64> = BTreeMap::new();
            for f in &t.in_flight {
                let e = w.entry(f.mailbox).or_insert(f.target);
                *e = (*e).min(f.target);
            }
            w.into_iter().collect()
        };
        seen.clear();
        let mut probes = 0;
        for (mailbox, _) in &wanted {
            match probe(*mailbox) {
                Ok(v) => {
                    seen.insert(*mailbox, v);
                }
                Err(e) => {
                    // A replica file being replaced is retried; persistent errors show.
                    let mut t = tracker.lock().unwrap_or_else(|e| e.into_inner());
                    t.error = Some(format!("{e:#}"));
                }
            }
            probes += 1;
        }
        let now = Instant::now();
        {
            let mut t = tracker.lock().unwrap_or_else(|e| e.into_inner());
            t.polls += 1;
            t.probes += probes;
            let mut done = Vec::new();
            t.in_flight.retain(|f| {
                let arrived = seen.get(&f.mailbox).is_some_and(|&v| v >= f.target);
                if arrived && f.counted {
                    done.push((f.kind, now.saturating_duration_since(f.committed)));
                }
                !arrived
            });
            t.lags.extend(done);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[derive(Debug, Clone)]
struct LagResult {
    label: String,
    changes: usize,
    seconds: f64,
    lags: Vec<(Kind, Duration)>,
    client_cpu_s: f64,
    load1: f64,
    polls_per_s: f64,
    note: String,
}

/// Applies the first two changes untimed, waiting for each (the rolling client is
/// connected, caches are warm), then the rest at the plan's rate; then waits until
/// every change is on the replica.
fn drive(
    s: &Settings,
    master: &mut dyn LagMaster,
    plan: &[Op],
    tracker: &Arc<Mutex<Tracker>>,
    client_ticks: &dyn Fn() -> u64,
) -> Result<(f64, f64, f64)> {
    let wait_empty = |limit: Duration| -> Result<()> {
        let t = Instant::now();
        loop {
            let (empty, error) = {
                let t = tracker.lock().unwrap_or_else(|e| e.into_inner());
                (t.in_flight.is_empty(), t.error.clone())
            };
            if empty {
                return Ok(());
            }
            ensure!(
                t.elapsed() < limit,
                "changes still not on the replica after {limit:?} (last poll error: {})",
                error.unwrap_or_else(|| "none".into())
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    // Warm-up, not counted.
    for op in plan.iter().take(2) {
        let (mailbox, target, committed) = master.apply(op)?;
        tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .in_flight
            .push(InFlight {
                mailbox,
                target,
                committed,
                kind: Kind::Deliver,
                counted: false,
            });
        wait_empty(Duration::from_secs(120)).context("warm-up change")?;
    }
    let plan = &plan[2.min(plan.len())..];
    let ticks0 = client_ticks();
    let start = Instant::now();
    let period = Duration::from_secs_f64(1.0 / s.lag_rate);
    for (i, op) in plan.iter().enumerate() {
        let due = start + period * i as u32;
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let (mailbox, target, committed) = master.apply(op)?;
        tracker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .in_flight
            .push(InFlight {
                mailbox,
                target,
                committed,
                kind: match op {
                    Op::Deliver { .. } => Kind::Deliver,
                    Op::Flag { .. } => Kind::Flag,
                },
                counted: true,
            });
    }
    let load_s = start.elapsed().as_secs_f64();
    wait_empty(Duration::from_secs(180))?;
    let total_s = start.elapsed().as_secs_f64();
    let cpu = (client_ticks().saturating_sub(ticks0)) as f64 / clk_tck();
    Ok((load_s, total_s, cpu))
}

fn lag_result(
    label: String,
    tracker: &Arc<Mutex<Tracker>>,
    load_s: f64,
    total_s: f64,
    cpu: f64,
    load1: f64,
    note: String,
) -> LagResult {
    let t = tracker.lock().unwrap_or_else(|e| e.into_inner());
    LagResult {
        label,
        changes: t.lags.len(),
        seconds: load_s,
        lags: t.lags.clone(),
        client_cpu_s: cpu,
        load1,
        polls_per_s: t.polls as f64 / total_s.max(1e-9),
        note,
    }
}

/// Cyrus: a fresh replica, filled by the Cyrus client (-A), then the Cyrus master's
/// rolling client (sync_repeat_interval: 1) and the changes by LMTP and IMAP.
fn lag_cyrus(s: &Settings, corpus: &Corpus, plan: &[Op], dir: PathBuf) -> Result<LagResult> {
    let mailboxes = spread_mailboxes(s);
    let port = start_cyrus_replica(&dir)?;
    run(
        kit("sync.sh")
            .arg(&corpus.master)
            .args([
                "-S",
                &format!("127.0.0.1:{port}"),
                "--timeout",
                &(600 + corpus.messages / 10).to_string(),
                "-A",
            ])
            .env("CYRUS_BIN", &s.cyrus_bin),
        "Cyrus sync_client -A (before the rolling run)",
    )?;
    // The corpus's delivery filled the master's sync_log: the rolling client starts on
    // an empty one (the replica is up to date).
    for f in ["log", "log-run"] {
        let _ = std::fs::remove_file(corpus.master.join("conf/sync").join(f));
    }
    let mut master = CyrusMaster::new(&corpus.master, mailboxes.clone())?;
    let replica_index: Vec<PathBuf> = master
        .index
        .iter()
        .map(|p| {
            p.strip_prefix(&corpus.master)
                .map(|rel| dir.join(rel))
                .unwrap_or_else(|_| p.clone())
        })
        .collect();
    for (m, r) in master.index.iter().zip(&replica_index) {
        let (a, b) = (cyrus_index_hms(m)?, cyrus_index_hms(r)?);
        ensure!(
            a == b,
            "after -A, {} has HIGHESTMODSEQ {a} on the master and {b} on the replica",
            m.display()
        );
    }
    run(
        kit("sync.sh")
            .arg(&corpus.master)
            .args(["-S", &format!("127.0.0.1:{port}"), "rolling-start"])
            .env("CYRUS_BIN", &s.cyrus_bin),
        "starting the Cyrus rolling sync_client",
    )?;
    let rolling_pid: Option<u32> = std::fs::read_to_string(corpus.master.join("run/rolling.pid"))
        .ok()
        .and_then(|p| p.trim().parse().ok());
    let tracker = Arc::new(Mutex::new(Tracker::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let poll = {
        let (tracker, stop) = (tracker.clone(), stop.clone());
        std::thread::spawn(move || poller(tracker, stop, |m| cyrus_index_hms(&replica_index[m])))
    };
    let load1 = load1();
    let ticks = move || rolling_pid.and_then(proc_stat).map_or(0, |p| p.1);
    let driven = drive(s, &mut master, plan, &tracker, &ticks);
    stop.store(true, Ordering::SeqCst);
    let _ = poll.join();
    let stopped = run(
        kit("sync.sh").arg(&corpus.master).arg("rolling-stop"),
        "stopping the Cyrus rolling sync_client",
    );
    drop(master);
    stop_cyrus(&dir)?;
    let (load_s, total_s, cpu) = driven?;
    stopped?;
    Ok(lag_result(
        "cyrus -> cyrus  Cyrus sync_client -R, sync_repeat_interval 1".into(),
        &tracker,
        load_s,
        total_s,
        cpu,
        load1,
        String::new(),
    ))
}

/// csync: a fresh csync replica, filled by csync's client (-A), then csync's rolling
/// client (`-R -d interval`) and the changes through the mailstore API.
fn lag_csync(
    s: &Settings,
    csync: &CsyncMaster,
    plan: &[Op],
    interval: u64,
    dir: PathBuf,
) -> Result<LagResult> {
    let mailboxes = spread_mailboxes(s);
    let server = CsyncServer::start(&dir, true)?;
    let result = (|| -> Result<LagResult> {
        let args: Vec<OsString> = vec![
            "-C".into(),
            csync.conf.clone().into(),
            "-S".into(),
            format!("127.0.0.1:{}", server.port).into(),
            "-A".into(),
        ];
        measured(
            &s.client_bin,
            &args,
            &[],
            &dir.with_extension("fill.log"),
            "csync sync_client -A (before the rolling run)",
        )?;
        let sync_dir = csync.dir.join("conf/sync");
        if sync_dir.exists() {
            std::fs::remove_dir_all(&sync_dir)?;
        }
        let replica_conf = dir.join("replica.conf");
        let log = dir.with_extension("rolling.log");
        let client = Command::new(&s.client_bin)
            .arg("-C")
            .arg(&csync.conf)
            .args(["-S", &format!("127.0.0.1:{}", server.port)])
            .args(["-R", "-v", "-d", &interval.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting csync's rolling sync_client")?;
        let pid = client.id();
        let tag = csync.conf.display().to_string();
        register_server(pid, &tag);
        let mut client = Guarded::new(client, &tag);
        let tracker = Arc::new(Mutex::new(Tracker::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let poll = {
            let (tracker, stop) = (tracker.clone(), stop.clone());
            let names: Vec<String> = mailboxes.iter().map(|m| m.internal.clone()).collect();
            std::thread::spawn(move || {
                let store = csync_config::Config::from_file(&replica_conf)
                    .map_err(anyhow::Error::from)
                    .and_then(|c| Ok(csync_mailstore::StoreConfig::from_imapd(&c)?))
                    .and_then(|c| Ok(csync_mailstore::Store::open(c)?));
                match store {
                    Ok(store) => poller(tracker, stop, |m| {
                        Ok(store
                            .mailbox(&names[m])?
                            .map_or(0, |mb| mb.state.highestmodseq))
                    }),
                    Err(e) => {
                        tracker.lock().unwrap_or_else(|e| e.into_inner()).error =
                            Some(format!("opening the replica store: {e:#}"))
                    }
                }
            })
        };
        let mut master = CsyncLagMaster::open(&csync.conf, mailboxes)?;
        let load1 = load1();
        let ticks = move || proc_stat(pid).map_or(0, |p| p.1);
        let driven = drive(s, &mut master, plan, &tracker, &ticks);
        stop.store(true, Ordering::SeqCst);
        let _ = poll.join();
        drop(master);
        let exit = client.stop()?;
        let (load_s, total_s, cpu) =
            driven.with_context(|| format!("client log: {}", log.display()))?;
        ensure!(
            exit.success(),
            "csync's rolling sync_client exited with {exit}; see {}",
            log.display()
        );
        // The replica must now equal the master (what the lag check assumed).
        let args: Vec<OsString> = vec![
            "-C".into(),
            csync.conf.clone().into(),
            "-S".into(),
            format!("127.0.0.1:{}", server.port).into(),
            "--verify".into(),
            "-A".into(),
        ];
        measured(
            &s.client_bin,
            &args,
            &[],
            &dir.with_extension("verify.log"),
            "csync sync_client --verify -A (after the rolling run)",
        )?;
        Ok(lag_result(
            format!("csync -> csync  csync sync_client -R -d {interval}"),
            &tracker,
            load_s,
            total_s,
            cpu,
            load1,
            String::new(),
        ))
    })();
    server.stop()?;
    result
}

/// A child we started, stopped with SIGTERM (then SIGKILL) when dropped.
struct Guarded {
    child: Option<Child>,
    tag: String,
}

impl Guarded {
    fn new(child: Child, tag: &str) -> Guarded {
        Guarded {
            child: Some(child),
            tag: tag.to_owned(),
        }
    }

    /// SIGTERM; waits up to 20 s for the exit status.
    fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let mut child = self.child.take().context("already stopped")?;
        let pid = child.id();
        signal_pid(pid, &self.tag, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(st) = child.try_wait()? {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break child.wait()?;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        unregister_server(pid);
        Ok(status)
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
    }
}

/// `sync(1)`: the previous run's dirty pages are written back before the next run
/// starts, so its fsyncs do not wait behind them (on this VM that made some runs 2-3
/// times slower than the same run after it).
fn flush_page_cache() {
    let _ = Command::new("sync").status();
}

// ---------------------------------------------------------------------------------------
// Report

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn print_runs(results: &[RunResult]) {
    println!(
        "{:<7} {:<15} {:<5} {:>3} {:>7} {:>6} {:>6} {:>12} {:>13} {:>11} {:>6}",
        "corpus",
        "pair",
        "comp",
        "run",
        "wall s",
        "msg/s",
        "MB/s",
        "client CPU s",
        "(usr + sys)",
        "client RSS",
        "load1"
    );
    for r in results {
        println!(
            "{:<7} {:<15} {:<5} {:>3} {:>7.2} {:>6.0} {:>6.1} {:>12.2} {:>13} {:>7.1} MiB {:>6.2}",
            r.corpus,
            r.config.pair.label(),
            if r.config.compress { "on" } else { "off" },
            r.run,
            r.m.wall_s,
            r.messages as f64 / r.m.wall_s,
            r.bytes as f64 / 1e6 / r.m.wall_s,
            r.m.user_s + r.m.sys_s,
            format!("{:.2} + {:.2}", r.m.user_s, r.m.sys_s),
            r.m.rss_kib as f64 / 1024.0,
            r.load1,
        );
    }
}

struct Summary {
    wall: f64,
    /// The fastest run (less sensitive to a stall of the shared disk or CPU).
    best: f64,
    cpu: f64,
    rss_kib: u64,
}

fn summarize(results: &[RunResult], corpus: &str, config: Config) -> Option<Summary> {
    let rs: Vec<&RunResult> = results
        .iter()
        .filter(|r| r.corpus == corpus && r.config == config)
        .collect();
    if rs.is_empty() {
        return None;
    }
    Some(Summary {
        wall: mean(&rs.iter().map(|r| r.m.wall_s).collect::<Vec<_>>()),
        best: rs.iter().map(|r| r.m.wall_s).fold(f64::INFINITY, f64::min),
        cpu: mean(
            &rs.iter()
                .map(|r| r.m.user_s + r.m.sys_s)
                .collect::<Vec<_>>(),
        ),
        rss_kib: rs.iter().map(|r| r.m.rss_kib).max().unwrap_or(0),
    })
}

fn print_ratios(results: &[RunResult], corpora: &[&'static str], messages: &[(u64, usize)]) {
    println!();
    println!(
        "ratios vs cyrus -> cyrus (means over runs, and best run vs best run; < 1: faster / less \
         than Cyrus; targets on the means)"
    );
    println!(
        "{:<7} {:<15} {:<5} {:>10} {:>10} {:>12} {:>12}   target",
        "corpus", "pair", "comp", "wall", "best wall", "client CPU", "client RSS"
    );
    for corpus in corpora {
        for compress in [true, false] {
            let reference = Config {
                pair: Pair::CyrusCyrus,
                compress,
            };
            let Some(cy) = summarize(results, corpus, reference) else {
                continue;
            };
            for pair in [Pair::CsyncCyrus, Pair::CsyncCsync] {
                let Some(cs) = summarize(results, corpus, Config { pair, compress }) else {
                    continue;
                };
                let wall = cs.wall / cy.wall;
                let target = match (pair, compress) {
                    (Pair::CsyncCsync, true) => format!(
                        "wall <= 1/8 (0.125): {}",
                        if wall <= 0.125 { "met" } else { "MISSED" }
                    ),
                    (Pair::CsyncCsync, false) => format!(
                        "wall <= 2/3 (0.667): {}",
                        if wall <= 2.0 / 3.0 { "met" } else { "MISSED" }
                    ),
                    _ => String::new(),
                };
                println!(
                    "{:<7} {:<15} {:<5} {:>10.3} {:>10.3} {:>12.3} {:>12.3}   {}",
                    corpus,
                    pair.label(),
                    if compress { "on" } else { "off" },
                    wall,
                    cs.best / cy.best,
                    cs.cpu / cy.cpu,
                    cs.rss_kib as f64 / cy.rss_kib as f64,
                    target
                );
            }
        }
    }
    if corpora.len() == 2 {
        println!();
        println!(
            "client peak RSS vs mailbox size: {} ({} msgs in {} mailboxes, {:.0} per mailbox) -> {} ({} msgs in 1 mailbox)",
            corpora[0],
            messages[0].0,
            messages[0].1,
            messages[0].0 as f64 / messages[0].1 as f64,
            corpora[1],
            messages[1].0,
        );
        for config in Config::ALL {
            let (Some(a), Some(b)) = (
                summarize(results, corpora[0], config),
                summarize(results, corpora[1], config),
            ) else {
                continue;
            };
            let flat = if config.pair.csync_client() {
                // Flat: the one big mailbox costs at most 10 % or 4 MiB more.
                let grew = b.rss_kib.saturating_sub(a.rss_kib) as f64;
                if grew <= (a.rss_kib as f64 * 0.10).max(4096.0) {
                    "flat: met"
                } else {
                    "flat: MISSED"
                }
            } else {
                ""
            };
            println!(
                "  {:<15} {:<5} {:>7.1} MiB -> {:>7.1} MiB  ({:+.1} MiB)  {flat}",
                config.pair.label(),
                if config.compress { "on" } else { "off" },
                a.rss_kib as f64 / 1024.0,
                b.rss_kib as f64 / 1024.0,
                (b.rss_kib as f64 - a.rss_kib as f64) / 1024.0,
            );
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank.
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn print_lags(s: &Settings, lags: &[LagResult]) {
    println!();
    println!(
        "rolling lag: {:.0} changes/s for {:.0} s (half deliveries of 1-200 KB, half \\Flagged toggles), \
         commit on the master -> the replica has it; replica polled every 2 ms",
        s.lag_rate, s.lag_seconds
    );
    println!(
        "{:<58} {:<7} {:>7} {:>6} {:>7} {:>7} {:>8} {:>8} {:>9} {:>6}  target",
        "client",
        "kind",
        "changes",
        "rate/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "mean ms",
        "client s",
        "load1",
    );
    for l in lags {
        let mut rows: Vec<(&str, Vec<f64>)> = vec![(
            "all",
            l.lags.iter().map(|(_, d)| d.as_secs_f64() * 1e3).collect(),
        )];
        for (kind, name) in [(Kind::Deliver, "deliver"), (Kind::Flag, "flag")] {
            rows.push((
                name,
                l.lags
                    .iter()
                    .filter(|(k, _)| *k == kind)
                    .map(|(_, d)| d.as_secs_f64() * 1e3)
                    .collect(),
            ));
        }
        for (i, (what, mut v)) in rows.into_iter().enumerate() {
            v.sort_by(f64::total_cmp);
            let p99 = percentile(&v, 99.0);
            let target = if i == 0 && l.label.starts_with("csync") && l.label.ends_with("-d 0") {
                format!("p99 < 50 ms: {}", if p99 < 50.0 { "met" } else { "MISSED" })
            } else {
                String::new()
            };
            println!(
                "{:<58} {:<7} {:>7} {:>6} {:>7.1} {:>7.1} {:>8.1} {:>8.1} {:>9} {:>6}  {}",
                if i == 0 { l.label.as_str() } else { "" },
                what,
                v.len(),
                if i == 0 {
                    format!("{:.1}", l.changes as f64 / l.seconds)
                } else {
                    String::new()
                },
                percentile(&v, 50.0),
                p99,
                v.last().copied().unwrap_or(f64::NAN),
                mean(&v),
                if i == 0 {
                    format!("{:.2}", l.client_cpu_s)
                } else {
                    String::new()
                },
                if i == 0 {
                    format!("{:.2}", l.load1)
                } else {
                    String::new()
                },
                target
            );
        }
        if !l.note.is_empty() {
            println!("  {}", l.note);
        }
    }
    let polls: Vec<String> = lags
        .iter()
        .map(|l| format!("{:.0}", l.polls_per_s))
        .collect();
    println!(
        "  (replica polls per second: {}; 'client s' = the rolling client's CPU during the load)",
        polls.join(", ")
    );
}

// ---------------------------------------------------------------------------------------

fn bench(s: &Settings) -> Result<()> {
    require_cyrus(&s.cyrus_bin)?;
    ensure!(
        s.client_bin.is_file(),
        "no csync sync_client at {}",
        s.client_bin.display()
    );
    // Masters (Cyrus and csync copy) plus every run's replica (all kept until the end),
    // ~45 KiB on disk per message, plus 1 GiB.
    let copies = (2 + s.runs * s.configs.len()) as u64;
    let lag_copies = if s.lag_enabled() {
        (s.lag_intervals.len() + usize::from(s.lag_cyrus)) as u64
    } else {
        0
    };
    let need_kib = (s.messages + s.onebox) as u64 * 45 * copies
        + s.messages as u64 * 45 * lag_copies
        + 1024 * 1024;
    let reuse = s.reuse_master;
    prepare_dir(
        BENCH,
        &s.dir,
        &|p: &Path| reuse && (p.join(CORPUS_MARKER).exists() || p.join(FILLED_MARKER).exists()),
        need_kib,
    )?;
    let load_start = loadavg();
    let t_start = Instant::now();
    let mut corpora = vec![make_corpus(
        s.reuse_master,
        "spread",
        s.dir.join("cyrus-master"),
        spread_recipients(s.users),
        s.messages,
        s.seed,
    )?];
    if s.onebox > 0 && !s.configs.is_empty() {
        corpora.push(make_corpus(
            s.reuse_master,
            "onebox",
            s.dir.join("cyrus-master-onebox"),
            vec!["bigbox".to_owned()],
            s.onebox,
            s.seed + 1,
        )?);
    }
    let mut csync_masters = Vec::new();
    for c in &corpora {
        let dir = s.dir.join(format!("csync-master-{}", c.name));
        csync_masters.push(make_csync_master(s, c, dir)?);
    }
    let mut results = Vec::new();
    for (corpus, csync) in corpora.iter().zip(&csync_masters) {
        for run_no in 1..=s.runs {
            for &config in &s.configs {
                eprintln!(
                    "{BENCH}: {} corpus, {} compress {}, run {run_no}/{} (load {})",
                    corpus.name,
                    config.pair.label(),
                    if config.compress { "on" } else { "off" },
                    s.runs,
                    loadavg()
                );
                let dir = s
                    .dir
                    .join(format!("{}-{}-{run_no}", corpus.name, config.key()));
                settle_after_delete(BENCH);
                flush_page_cache();
                let mut r = full_sync(s, corpus, csync, config, dir).with_context(|| {
                    format!(
                        "{} corpus, {}, compress {}, run {run_no}",
                        corpus.name,
                        config.pair.label(),
                        config.compress
                    )
                })?;
                r.run = run_no;
                results.push(r);
            }
        }
    }
    let mut lags = Vec::new();
    if s.lag_enabled() {
        let plan = lag_plan(s, &spread_mailboxes(s));
        let (corpus, csync) = (&corpora[0], &csync_masters[0]);
        forget_masters(corpus, csync);
        if s.lag_cyrus {
            eprintln!(
                "{BENCH}: rolling lag, Cyrus -> Cyrus ({} changes, load {})",
                plan.len(),
                loadavg()
            );
            settle_after_delete(BENCH);
            flush_page_cache();
            lags.push(
                lag_cyrus(s, corpus, &plan, s.dir.join("lag-cyrus"))
                    .context("rolling lag, Cyrus")?,
            );
        }
        for &interval in &s.lag_intervals {
            flush_page_cache();
            eprintln!(
                "{BENCH}: rolling lag, csync -> csync, -d {interval} ({} changes, load {})",
                plan.len(),
                loadavg()
            );
            lags.push(
                lag_csync(
                    s,
                    csync,
                    &plan,
                    interval,
                    s.dir.join(format!("lag-csync-d{interval}")),
                )
                .with_context(|| format!("rolling lag, csync -d {interval}"))?,
            );
        }
    }
    for c in &corpora {
        stop_cyrus(&c.master)?;
    }
    println!();
    println!(
        "vs_cyrus (sync_client): csync sync_client {} vs Cyrus 3.6 sync_client; client = {}",
        env!("CARGO_PKG_VERSION"),
        s.client_bin.display()
    );
    for (c, m) in corpora.iter().zip(&csync_masters) {
        println!(
            "  corpus {:<7} {} messages, {:.1} MB of message files, {} mailboxes ({} users), \
             1-200 KB log-uniform, seed {}; LMTP delivery {}; csync copy {}",
            c.name,
            c.messages,
            c.bytes as f64 / 1e6,
            c.mailboxes,
            if c.name == "spread" { s.users } else { 1 },
            if c.name == "spread" {
                s.seed
            } else {
                s.seed + 1
            },
            if c.deliver_s > 0.0 {
                format!("{:.1} s", c.deliver_s)
            } else {
                "reused".into()
            },
            if m.fill_s > 0.0 {
                format!("{:.1} s", m.fill_s)
            } else {
                "reused".into()
            },
        );
    }
    println!(
        "  {} CPUs; load average at start {load_start}, at end {}; every run into an empty replica; \
         MB = 10^6 bytes of message files",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );
    if !results.is_empty() {
        println!();
        println!("full sync (sync_client -A)");
        print_runs(&results);
        let names: Vec<&'static str> = corpora.iter().map(|c| c.name).collect();
        let sizes: Vec<(u64, usize)> = corpora.iter().map(|c| (c.messages, c.mailboxes)).collect();
        print_ratios(&results, &names, &sizes);
    }
    if !lags.is_empty() {
        print_lags(s, &lags);
    }
    println!();
    println!("total {:.0} s", t_start.elapsed().as_secs_f64());
    Ok(())
}

fn main() -> ExitCode {
    match std::env::var(ROLE_ENV).as_deref() {
        Ok("server") => return server_role(),
        Ok("rusage") => return rusage_role(),
        _ => {}
    }
    // `cargo bench` passes --bench; `cargo test --benches` does not: then only say so.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "vs_cyrus: a benchmark; run it with `cargo bench -p csync-sync-client --bench vs_cyrus`"
        );
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{BENCH}: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    install_signal_handler(BENCH);
    let result = std::panic::catch_unwind(|| bench(&settings));
    cleanup();
    match result {
        Ok(Ok(())) => {
            if !settings.keep {
                let _ = std::fs::remove_dir_all(&settings.dir);
            } else {
                eprintln!("{BENCH}: kept {}", settings.dir.display());
            }
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("{BENCH}: FAILED: {e:#}");
            if settings.dir.exists() {
                eprintln!("{BENCH}: work dir kept: {}", settings.dir.display());
            }
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!(
                "{BENCH}: FAILED (panic); work dir kept: {}",
                settings.dir.display()
            );
            ExitCode::FAILURE
        }
    }
}
