//! csync's `sync_server` against Cyrus's own, fed by the real Cyrus 3.6 `sync_client -A`.
//!
//! ```sh
//! cargo bench -p csync-sync-server --bench vs_cyrus
//! VS_CYRUS_MESSAGES=20000 VS_CYRUS_USERS=100 cargo bench -p csync-sync-server --bench vs_cyrus
//! ```
//!
//! One corpus is generated deterministically and delivered once, by LMTP, to a real Cyrus
//! master (`tests/cyrus/cyrus-instance.sh`, `cyrusctl.py deliver`): VS_CYRUS_MESSAGES
//! messages of 1–200 KB (log-uniform, 30 % multipart) round-robin over the INBOX, Archive
//! and Lists folders of VS_CYRUS_USERS users. The real `sync_client -A` of that master
//! (`tests/cyrus/sync.sh`) then replicates it, each run into a new, empty replica, in four
//! configurations (runs interleaved):
//!
//! * `cyrus  compress`: a real Cyrus 3.6 replica (its sync_server under its master); it
//!   offers COMPRESS DEFLATE and the client always uses it (Cyrus's default).
//! * `cyrus  plain`: the same through a loopback relay (in this process) that removes
//!   `* COMPRESS DEFLATE` from the banner; Cyrus has no setting to turn it off.
//! * `csync  compress`: csync's sync_server (this crate's binary, bench profile), default.
//! * `csync  plain`: csync's sync_server with `csync_compress: no`.
//!
//! For every run: wall time of `sync_client -A`, messages/s, MB/s (10^6 bytes of message
//! files), server CPU (user+sys from /proc/<pid>/stat: for Cyrus, the sync_server
//! processes that are children of the replica's master, sampled before and after (and
//! every 200 ms, in case one exits); for csync, its sync_server process), the servers'
//! peak RSS (VmHWM), the client's CPU (sync_client, reaped), and the 1-minute load
//! average before the run. Every run is checked: sync_client exits 0 and the replica
//! holds as many message files, of as many bytes, as the master. Then the ratios
//! csync / Cyrus and the issue's targets: CPU per message <= 1/3, uncompressed wall
//! <= 1/2, and RSS flat in mailbox size, for which a second master holds
//! VS_CYRUS_ONEBOX messages in a single mailbox, replicated the same way.
//!
//! Replicas are removed at the end, not between runs: on ext4 without a journal (this
//! project's VMs) freeing thousands of inodes makes the next thousands of file creations
//! slow for 60-360 s (`recently_deleted()` in the inode allocator), which once doubled a
//! run's server CPU. A run that follows a bulk removal by this process waits 70 s.
//! The default size takes about 10 minutes (two LMTP deliveries of ~50 s each) and up to
//! ~4 GB of disk until the end; 20,000 messages (and a 20,000-message mailbox) about 35
//! minutes and ~15 GB. The free space is checked first.
//!
//! Settings (environment):
//!
//! | variable | default | |
//! | --- | --- | --- |
//! | VS_CYRUS_MESSAGES | 5000 | corpus size (20000 is the other size the issue names) |
//! | VS_CYRUS_USERS | 50 | users (3 mailboxes each) |
//! | VS_CYRUS_ONEBOX | = MESSAGES | messages of the one-mailbox corpus; 0 skips it |
//! | VS_CYRUS_RUNS | 2 | runs of every configuration (interleaved) |
//! | VS_CYRUS_CONFIGS | all | subset of `cyrus-z,cyrus-plain,csync-z,csync-plain` |
//! | VS_CYRUS_SEED | 2024 | generator seed |
//! | VS_CYRUS_DIR | `<workspace>/target/vs_cyrus` | work dir (not /tmp: disk); wiped at start |
//! | VS_CYRUS_KEEP | unset | 1: keep the work dir (instances stopped) at the end |
//! | VS_CYRUS_REUSE_MASTER | unset | 1: reuse the masters of a run made with VS_CYRUS_KEEP=1 if their corpus is the same (skips delivery) |
//! | VS_CYRUS_PERF | unset | `stat`: count the servers' instructions (`perf stat -p`; steadier than CPU time on a busy host, but perf adds to the CPU figures); `record`: `perf record -g -p` into the work dir |
//! | VS_CYRUS_CSYNC_BIN | this crate's | another csync sync_server binary (before/after comparisons) |
//! | VS_CYRUS_CSYNC_WRAP | unset | command prefix for csync's server (profiling: `strace -c -f -o FILE`); figures are still the server's, slowed by the wrapper |
//! | CYRUS_BIN | /usr/lib/cyrus/bin | Cyrus installation |
//!
//! Requirements: root or any user, Cyrus 3.6 (`cyrus-imapd cyrus-common
//! cyrus-replication sasl2-bin libsasl2-modules`), python3, gcc (see
//! tests/cyrus/README.md). Without Cyrus it fails (exit 1); it never skips silently.
//! Everything listens on 127.0.0.1 only. Every process it starts (Cyrus instances through
//! their pid files, csync servers by pid) is stopped at the end, on failure, and on
//! SIGINT/SIGTERM. It is a benchmark, not a test: `cargo test` does not build or run it,
//! and a run without `--bench` (`cargo test --benches`) only prints that it skipped.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

const INSTALL: &str = "apt-get install -y --no-install-recommends cyrus-imapd cyrus-common \
                       cyrus-replication sasl2-bin libsasl2-modules openssl python3 gcc libc6-dev";

// ---------------------------------------------------------------------------------------
// Settings

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
    /// VS_CYRUS_PERF: attach `perf stat` or `perf record` to the servers.
    perf: Option<String>,
    csync_wrap: Vec<String>,
    csync_bin: PathBuf,
    cyrus_bin: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Server {
    Cyrus,
    Csync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Config {
    server: Server,
    compress: bool,
}

impl Config {
    const ALL: [Config; 4] = [
        Config {
            server: Server::Cyrus,
            compress: true,
        },
        Config {
            server: Server::Cyrus,
            compress: false,
        },
        Config {
            server: Server::Csync,
            compress: true,
        },
        Config {
            server: Server::Csync,
            compress: false,
        },
    ];

    fn key(self) -> &'static str {
        match (self.server, self.compress) {
            (Server::Cyrus, true) => "cyrus-z",
            (Server::Cyrus, false) => "cyrus-plain",
            (Server::Csync, true) => "csync-z",
            (Server::Csync, false) => "csync-plain",
        }
    }

    fn label(self) -> String {
        format!(
            "{} {}",
            match self.server {
                Server::Cyrus => "cyrus",
                Server::Csync => "csync",
            },
            if self.compress { "compress" } else { "plain" }
        )
    }
}

fn env_usize(key: &str, default: usize) -> Result<usize> {
    match std::env::var(key) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .replace('_', "")
            .parse()
            .with_context(|| format!("{key}={v}: not a number")),
        _ => Ok(default),
    }
}

fn env_flag(key: &str) -> bool {
    std::env::var(key).is_ok_and(|v| !v.is_empty() && v != "0" && v != "no")
}

fn workspace() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    p.canonicalize().unwrap_or(p)
}

impl Settings {
    fn from_env() -> Result<Settings> {
        let messages = env_usize("VS_CYRUS_MESSAGES", 5000)?;
        let users = env_usize("VS_CYRUS_USERS", 50)?;
        ensure!(
            messages >= 1 && users >= 1,
            "VS_CYRUS_MESSAGES and VS_CYRUS_USERS must be >= 1"
        );
        let configs = match std::env::var("VS_CYRUS_CONFIGS") {
            Ok(list) if !list.trim().is_empty() => {
                let mut out = Vec::new();
                for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
                    let c = Config::ALL
                        .into_iter()
                        .find(|c| c.key() == word)
                        .with_context(|| {
                            format!("VS_CYRUS_CONFIGS: unknown {word:?} (cyrus-z, cyrus-plain, csync-z, csync-plain)")
                        })?;
                    out.push(c);
                }
                out
            }
            _ => Config::ALL.to_vec(),
        };
        let dir = match std::env::var_os("VS_CYRUS_DIR") {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => {
                let target = std::env::var_os("CARGO_TARGET_DIR")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| workspace().join("target"));
                target.join("vs_cyrus")
            }
        };
        let dir = if dir.is_absolute() {
            dir
        } else {
            std::env::current_dir()?.join(dir)
        };
        Ok(Settings {
            messages,
            users,
            onebox: env_usize("VS_CYRUS_ONEBOX", messages)?,
            runs: env_usize("VS_CYRUS_RUNS", 2)?.max(1),
            configs,
            seed: env_usize("VS_CYRUS_SEED", 2024)? as u64,
            dir,
            keep: env_flag("VS_CYRUS_KEEP"),
            reuse_master: env_flag("VS_CYRUS_REUSE_MASTER"),
            perf: match std::env::var("VS_CYRUS_PERF").unwrap_or_default().as_str() {
                "" => None,
                m @ ("stat" | "record") => Some(m.to_owned()),
                other => bail!("VS_CYRUS_PERF={other}: stat or record"),
            },
            csync_wrap: std::env::var("VS_CYRUS_CSYNC_WRAP")
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            csync_bin: std::env::var_os("VS_CYRUS_CSYNC_BIN")
                .filter(|b| !b.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_sync_server"))),
            cyrus_bin: std::env::var_os("CYRUS_BIN")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/usr/lib/cyrus/bin")),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Everything started is registered here, and stopped by `cleanup` (end, error, signal).

#[derive(Default)]
struct Registry {
    /// Cyrus instance dirs (stopped with `cyrus-instance.sh stop`, which only signals the
    /// pids in the instance's own pid files).
    instances: Vec<PathBuf>,
    /// csync servers: pid and a string its command line must contain.
    servers: Vec<(u32, String)>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

fn register_instance(dir: &Path) {
    let mut r = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let r = r.get_or_insert_with(Registry::default);
    if !r.instances.iter().any(|d| d == dir) {
        r.instances.push(dir.to_owned());
    }
}

fn unregister_instance(dir: &Path) {
    if let Some(r) = REGISTRY.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        r.instances.retain(|d| d != dir);
    }
}

fn register_server(pid: u32, tag: &str) {
    REGISTRY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(Registry::default)
        .servers
        .push((pid, tag.to_owned()));
}

fn unregister_server(pid: u32) {
    if let Some(r) = REGISTRY.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        r.servers.retain(|(p, _)| *p != pid);
    }
}

fn cmdline_has(pid: u32, tag: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(tag))
        .unwrap_or(false)
}

/// Descendants of `pid` whose command line contains `tag`.
fn descendants_with(pid: u32, tag: &str) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(u32, u32)> = rd
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| Some((p, proc_stat(p)?.0)))
        .collect();
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(child, pp) in &parents {
            if pp == parent {
                frontier.push(child);
                if cmdline_has(child, tag) {
                    found.push(child);
                }
            }
        }
    }
    found
}

/// Stops every registered process (each only if it is still the one we started).
fn cleanup() {
    let taken = REGISTRY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .unwrap_or_default();
    for (pid, tag) in &taken.servers {
        // A server under VS_CYRUS_CSYNC_WRAP is a descendant of the registered pid.
        for server in descendants_with(*pid, tag) {
            let _ = Command::new("kill")
                .args(["-TERM", &server.to_string()])
                .status();
        }
        if cmdline_has(*pid, tag) {
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            for _ in 0..50 {
                if !cmdline_has(*pid, tag) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if cmdline_has(*pid, tag) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
    for dir in &taken.instances {
        let _ = kit("cyrus-instance.sh")
            .args(["stop".as_ref(), dir.as_os_str()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// On SIGINT/SIGTERM: stop what we started, then exit.
fn install_signal_handler() {
    std::thread::spawn(|| {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                return;
            };
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            eprintln!("vs_cyrus: interrupted; stopping what it started");
            cleanup();
            std::process::exit(130);
        });
    });
}

// ---------------------------------------------------------------------------------------
// Small helpers

fn kit(script: &str) -> Command {
    Command::new(workspace().join("tests/cyrus").join(script))
}

/// Runs a command to completion; on failure the error carries its output's tail.
fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("{what}: cannot start {:?}", cmd.get_program()))?;
    if !out.status.success() {
        let tail = |b: &[u8]| {
            let s = String::from_utf8_lossy(b);
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(25)..].join("\n")
        };
        bail!(
            "{what} failed ({}):\n{}\n{}",
            out.status,
            tail(&out.stdout),
            tail(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn env_of(dir: &Path) -> Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(dir.join("instance.env"))
        .with_context(|| format!("{}/instance.env", dir.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn load1() -> f64 {
    loadavg()
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

fn clk_tck() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// (ppid, utime+stime ticks, cutime+cstime ticks, comm) of a process.
fn proc_stat(pid: u32) -> Option<(u32, u64, u64, String)> {
    proc_stat_full(pid).map(|(pp, u, s, c, comm)| (pp, u + s, c, comm))
}

/// (ppid, utime, stime, cutime+cstime, comm) of a process, in ticks.
fn proc_stat_full(pid: u32) -> Option<(u32, u64, u64, u64, String)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s[open + 1..close].to_owned();
    let f: Vec<&str> = s[close + 1..].split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some((n(1)? as u32, n(11)?, n(12)?, n(13)? + n(14)?, comm))
}

/// Peak resident set (VmHWM) in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

/// CPU of this process's reaped children (sync.sh, timeout, sync_client), in ticks.
fn reaped_children_ticks() -> u64 {
    proc_stat(std::process::id()).map_or(0, |(_, _, c, _)| c)
}

/// Children of `ppid` whose comm is `name`.
fn children_named(ppid: u32, name: &str) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| proc_stat(pid).is_some_and(|(pp, _, _, comm)| pp == ppid && comm == name))
        .collect()
}

fn free_kib(dir: &Path) -> Result<u64> {
    let out = run(Command::new("df").arg("-Pk").arg(dir), "df")?;
    out.lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .context("cannot read df output")
}

/// Number and total size of the message files (`<uid>.`) under a spool.
fn spool_messages(root: &Path) -> Result<(u64, u64)> {
    let mut count = 0;
    let mut bytes = 0;
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| dir.display().to_string()),
        };
        for entry in rd {
            let entry = entry?;
            let ft = entry.file_type()?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if ft.is_dir() {
                stack.push(entry.path());
            } else if ft.is_file()
                && name.len() > 1
                && name.ends_with('.')
                && name[..name.len() - 1].bytes().all(|b| b.is_ascii_digit())
            {
                count += 1;
                bytes += entry.metadata()?.len();
            }
        }
    }
    Ok((count, bytes))
}

// ---------------------------------------------------------------------------------------
// The relay that hides COMPRESS from the client (Cyrus replica, compression off)

struct Relay {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    fn start(target: u16) -> Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").context("relay: bind")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut sessions = Vec::new();
            for client in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                sessions.push(std::thread::spawn(move || {
                    if let Err(e) = relay_session(client, target) {
                        eprintln!("vs_cyrus: relay: {e:#}");
                    }
                }));
            }
            for s in sessions {
                let _ = s.join();
            }
        });
        Ok(Relay {
            port,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn relay_session(client: TcpStream, target: u16) -> Result<()> {
    let upstream = TcpStream::connect(("127.0.0.1", target)).context("relay: connect")?;
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    let mut to_client = client.try_clone()?;
    let mut banner = BufReader::new(upstream.try_clone()?);
    // The banner: `* SASL ...`, `* COMPRESS DEFLATE`, ..., `* OK ...`.
    loop {
        let mut line = Vec::new();
        if banner.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        if line.eq_ignore_ascii_case(b"* COMPRESS DEFLATE\r\n") {
            continue;
        }
        to_client.write_all(&line)?;
        if line.starts_with(b"* OK") || !line.starts_with(b"* ") {
            break;
        }
    }
    to_client.write_all(banner.buffer())?;
    drop(banner);
    let (mut c_in, mut u_out) = (client.try_clone()?, upstream.try_clone()?);
    let up = std::thread::spawn(move || {
        let _ = pump(&mut c_in, &mut u_out);
        let _ = u_out.shutdown(Shutdown::Write);
    });
    let mut u_in = upstream;
    let _ = pump(&mut u_in, &mut to_client);
    let _ = to_client.shutdown(Shutdown::Write);
    let _ = up.join();
    Ok(())
}

fn pump(from: &mut TcpStream, to: &mut TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buf[..n])?;
    }
}

// ---------------------------------------------------------------------------------------
// Corpus on a real Cyrus master

#[derive(Debug, Clone)]
struct Corpus {
    name: &'static str,
    master: PathBuf,
    messages: u64,
    bytes: u64,
    mailboxes: usize,
    deliver_s: f64,
}

fn corpus_marker(recipients: &[String], count: usize, seed: u64) -> String {
    format!("count={count} seed={seed} to={}", recipients.join(","))
}

fn make_corpus(
    s: &Settings,
    name: &'static str,
    dir: PathBuf,
    recipients: Vec<String>,
    count: usize,
    seed: u64,
) -> Result<Corpus> {
    let marker = corpus_marker(&recipients, count, seed);
    let marker_file = dir.join("vs_cyrus.corpus");
    let mailboxes = {
        let mut r = recipients.clone();
        r.sort();
        r.dedup();
        r.len()
    };
    let reuse =
        s.reuse_master && std::fs::read_to_string(&marker_file).is_ok_and(|m| m.trim() == marker);
    let mut start = kit("cyrus-instance.sh");
    start.arg("start").arg(&dir).args(["master", "auto"]);
    if !reuse {
        start.arg("--fresh");
    }
    register_instance(&dir);
    run(
        &mut start,
        &format!("starting the Cyrus master {}", dir.display()),
    )?;
    let mut deliver_s = 0.0;
    if reuse {
        eprintln!("vs_cyrus: reusing the {name} corpus in {}", dir.display());
    } else {
        let _ = std::fs::remove_file(&marker_file);
        eprintln!(
            "vs_cyrus: delivering {count} messages by LMTP to {} mailboxes ({name} corpus) ...",
            mailboxes
        );
        let t = Instant::now();
        run(
            kit("cyrusctl.py")
                .arg(&dir)
                .args(["deliver", "--to", &recipients.join(",")])
                .args(["--count", &count.to_string(), "--seed", &seed.to_string()])
                .arg("--create"),
            "LMTP delivery (cyrusctl.py deliver)",
        )?;
        deliver_s = t.elapsed().as_secs_f64();
        std::fs::write(&marker_file, format!("{marker}\n"))?;
    }
    let (messages, bytes) = spool_messages(&dir.join("spool"))?;
    ensure!(
        messages == count as u64,
        "the master holds {messages} message files, not {count} (see {}/log/cyrus.log)",
        dir.display()
    );
    Ok(Corpus {
        name,
        master: dir,
        messages,
        bytes,
        mailboxes,
        deliver_s,
    })
}

// ---------------------------------------------------------------------------------------
// One replication run

impl RunResult {
    fn cpu(&self) -> f64 {
        self.server_user_s + self.server_sys_s
    }
}

#[derive(Debug, Clone)]
struct RunResult {
    corpus: &'static str,
    config: Config,
    run: usize,
    wall_s: f64,
    messages: u64,
    bytes: u64,
    server_user_s: f64,
    server_sys_s: f64,
    server_rss_kib: u64,
    client_cpu_s: f64,
    load1: f64,
    note: String,
}

/// Times `sync_client -A` of `corpus` against 127.0.0.1:`port`.
fn timed_sync(
    s: &Settings,
    corpus: &Corpus,
    port: u16,
    server_pids: &[u32],
    note: &mut String,
) -> Result<(f64, f64)> {
    let timeout = (600 + corpus.messages / 10).to_string();
    let perf = if let Some(mode) = &s.perf {
        Some(PerfStat::attach(mode, server_pids, &s.dir)?)
    } else {
        None
    };
    let c0 = reaped_children_ticks();
    let t = Instant::now();
    let result = run(
        kit("sync.sh")
            .arg(&corpus.master)
            .args([
                "-S",
                &format!("127.0.0.1:{port}"),
                "--timeout",
                &timeout,
                "-A",
            ])
            .env("CYRUS_BIN", &s.cyrus_bin),
        "sync_client -A",
    );
    let wall = t.elapsed().as_secs_f64();
    let client = (reaped_children_ticks() - c0) as f64 / clk_tck();
    if let Some(p) = perf {
        note.push_str(&p.finish()?);
    }
    result?;
    Ok((wall, client))
}

/// `perf stat -p` or `perf record -p` on the server processes for the duration of a sync
/// (VS_CYRUS_PERF): instruction counts are steadier than CPU time on a busy host.
struct PerfStat {
    child: Child,
    out: PathBuf,
    record: bool,
}

impl PerfStat {
    fn attach(mode: &str, pids: &[u32], dir: &Path) -> Result<PerfStat> {
        ensure!(!pids.is_empty(), "perf: no server process to attach to");
        let record = mode == "record";
        let out = dir.join(format!(
            "perf-{}-{}.{}",
            mode,
            pids[0],
            if record { "data" } else { "csv" }
        ));
        let list: Vec<String> = pids.iter().map(u32::to_string).collect();
        let mut perf = Command::new("perf");
        if record {
            perf.args(["record", "-g"]);
        } else {
            perf.args([
                "stat",
                "-x",
                ",",
                "-e",
                "instructions:u,instructions:k,context-switches",
            ]);
        }
        let child = perf
            .arg("-o")
            .arg(&out)
            .args(["-p", &list.join(",")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("perf (VS_CYRUS_PERF)")?;
        std::thread::sleep(Duration::from_millis(300));
        Ok(PerfStat { child, out, record })
    }

    fn finish(mut self) -> Result<String> {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        self.child.wait()?;
        if self.record {
            return Ok(format!("profile: {}", self.out.display()));
        }
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let mut parts = Vec::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let f: Vec<&str> = line.split(',').collect();
            if f.len() >= 3
                && let Ok(v) = f[0].parse::<f64>()
            {
                let name = f[2].trim_end_matches(":u").trim_end_matches(":k");
                let name = match (name, f[2]) {
                    ("instructions", n) if n.ends_with(":u") => "Minstr usr".to_owned(),
                    ("instructions", _) => "Minstr sys".to_owned(),
                    (other, _) => other.to_owned(),
                };
                if name.starts_with("Minstr") {
                    parts.push(format!("{name} {:.0}", v / 1e6));
                } else {
                    parts.push(format!("{name} {v:.0}"));
                }
            }
        }
        Ok(parts.join(", "))
    }
}

fn check_replica(corpus: &Corpus, spool: &Path, what: &str) -> Result<()> {
    let (n, b) = spool_messages(spool)?;
    ensure!(
        (n, b) == (corpus.messages, corpus.bytes),
        "{what}: the replica holds {n} message files / {b} bytes, the master {} / {}",
        corpus.messages,
        corpus.bytes
    );
    Ok(())
}

/// Per-pid CPU ticks and VmHWM of the sync_server children of a Cyrus master, sampled.
struct Sampler {
    stop: Arc<AtomicBool>,
    seen: Arc<Samples>,
    thread: Option<JoinHandle<()>>,
    master_pid: u32,
}

/// pid -> (utime, stime, VmHWM KiB), the largest seen.
type Samples = Mutex<BTreeMap<u32, (u64, u64, u64)>>;

fn sample_into(master_pid: u32, seen: &Samples) {
    for pid in children_named(master_pid, "sync_server") {
        let (Some((_, user, sys, _, _)), Some(hwm)) = (proc_stat_full(pid), vm_hwm_kib(pid)) else {
            continue;
        };
        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        let e = seen.entry(pid).or_insert((0, 0, 0));
        e.0 = e.0.max(user);
        e.1 = e.1.max(sys);
        e.2 = e.2.max(hwm);
    }
}

impl Sampler {
    fn start(master_pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let (flag, map) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                sample_into(master_pid, &map);
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Sampler {
            stop,
            seen,
            thread: Some(thread),
            master_pid,
        }
    }

    fn finish(mut self) -> BTreeMap<u32, (u64, u64, u64)> {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        sample_into(self.master_pid, &self.seen);
        std::mem::take(&mut *self.seen.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn run_cyrus(s: &Settings, corpus: &Corpus, compress: bool, dir: PathBuf) -> Result<RunResult> {
    register_instance(&dir);
    run(
        kit("cyrus-instance.sh")
            .arg("start")
            .arg(&dir)
            .args(["replica", "auto"]),
        "starting the Cyrus replica",
    )?;
    let env = env_of(&dir)?;
    let port: u16 = env
        .get("CYRUS_CSYNC_PORT")
        .and_then(|p| p.parse().ok())
        .context("no CYRUS_CSYNC_PORT in the replica's instance.env")?;
    let master_pid: u32 = std::fs::read_to_string(dir.join("run/master.pid"))?
        .trim()
        .parse()
        .context("replica run/master.pid")?;
    let relay = if compress {
        None
    } else {
        Some(Relay::start(port)?)
    };
    let target = relay.as_ref().map_or(port, |r| r.port);
    // The start-up probe leaves an idle sync_server: count only what it does from now.
    let before: BTreeMap<u32, (u64, u64)> = children_named(master_pid, "sync_server")
        .into_iter()
        .filter_map(|pid| proc_stat_full(pid).map(|p| (pid, (p.1, p.2))))
        .collect();
    let master_reaped0 = proc_stat(master_pid).map_or(0, |p| p.2);
    let load = load1();
    let sampler = Sampler::start(master_pid);
    let mut note = String::new();
    let idle: Vec<u32> = before.keys().copied().collect();
    let sync = timed_sync(s, corpus, target, &idle, &mut note);
    let seen = sampler.finish();
    let master_reaped = proc_stat(master_pid).map_or(0, |p| p.2) - master_reaped0;
    drop(relay);
    let (wall, client) = sync?;
    let (mut user, mut sys) = (0, 0);
    let mut rss = 0;
    let mut gone = 0;
    for (pid, (u, s, hwm)) in &seen {
        let (bu, bs) = before.get(pid).copied().unwrap_or((0, 0));
        if u + s > bu + bs {
            user += u - bu;
            sys += s - bs;
            rss = rss.max(*hwm);
        }
        if proc_stat(*pid).is_none() {
            gone += 1;
        }
    }
    if gone > 0 || master_reaped > 0 {
        // A sync_server that exited: its last sample may miss up to 200 ms; the master's
        // reaped-children time has the exact figure (idle imapd/lmtpd add nothing).
        note.push_str(&format!(
            "{gone} sync_server exited; master reaped {master_reaped} ticks"
        ));
    }
    check_replica(corpus, &dir.join("spool"), "Cyrus replica")?;
    run(
        kit("cyrus-instance.sh").arg("stop").arg(&dir),
        "stopping the Cyrus replica",
    )?;
    unregister_instance(&dir);
    Ok(RunResult {
        corpus: corpus.name,
        config: Config {
            server: Server::Cyrus,
            compress,
        },
        run: 0,
        wall_s: wall,
        messages: corpus.messages,
        bytes: corpus.bytes,
        server_user_s: user as f64 / clk_tck(),
        server_sys_s: sys as f64 / clk_tck(),
        server_rss_kib: rss,
        client_cpu_s: client,
        load1: load,
        note,
    })
}

fn start_csync(s: &Settings, dir: &Path, compress: bool) -> Result<(Child, u16)> {
    ensure!(!dir.exists(), "{} exists", dir.display());
    std::fs::create_dir_all(dir.join("conf"))?;
    std::fs::create_dir_all(dir.join("spool"))?;
    let conf = dir.join("imapd.conf");
    // The same namespace settings as the Cyrus instances of tests/cyrus.
    let text = format!(
        "configdirectory: {d}/conf\npartition-default: {d}/spool\n\
         servername: csync-replica.test\nadmins: repluser\nallowplaintext: yes\n\
         sasl_mech_list: PLAIN LOGIN\naltnamespace: yes\nunixhierarchysep: yes\n\
         virtdomains: off\nconversations: off\nfailedloginpause: 0\n\
         csync_compress: {c}\n",
        d = dir.display(),
        c = if compress { "yes" } else { "no" }
    );
    std::fs::write(&conf, text)?;
    let mut passwords = csync_auth::passwd::PasswordFile::new(dir.join("conf/csync.passwd"));
    passwords.set("repluser", "secret")?;
    passwords.save()?;
    let log = std::fs::File::create(dir.join("sync_server.log"))?;
    let server = &s.csync_bin;
    let mut cmd = match s.csync_wrap.split_first() {
        Some((prog, args)) => {
            let mut c = Command::new(prog);
            c.args(args).arg(server);
            c
        }
        None => Command::new(server),
    };
    let mut child = cmd
        .arg("-C")
        .arg(&conf)
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .context("starting csync's sync_server")?;
    register_server(child.id(), &conf.display().to_string());
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
    // Keep draining stdout so the server can never block on it.
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut stdout, &mut std::io::sink());
    });
    Ok((child, port))
}

fn stop_csync(mut child: Child, tag: &str) -> Result<()> {
    let pid = child.id();
    // Under VS_CYRUS_CSYNC_WRAP the server is the wrapper's descendant: stop it first,
    // so the wrapper (perf, strace...) ends with it and writes its output.
    let wrapped = descendants_with(pid, tag);
    for server in &wrapped {
        let _ = Command::new("kill")
            .args(["-TERM", &server.to_string()])
            .status();
    }
    if wrapped.is_empty() {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    unregister_server(pid);
    Ok(())
}

fn run_csync(s: &Settings, corpus: &Corpus, compress: bool, dir: PathBuf) -> Result<RunResult> {
    let (child, port) = start_csync(s, &dir, compress)?;
    let tag = dir.join("imapd.conf").display().to_string();
    // The server itself, also when it runs under VS_CYRUS_CSYNC_WRAP.
    let pid = descendants_with(child.id(), &tag)
        .first()
        .copied()
        .unwrap_or(child.id());
    let base = proc_stat_full(pid).map_or((0, 0), |p| (p.1, p.2));
    let load = load1();
    let mut note = if s.csync_wrap.is_empty() {
        String::new()
    } else {
        format!("under {}; ", s.csync_wrap.join(" "))
    };
    let sync = timed_sync(s, corpus, port, &[pid], &mut note);
    let end = proc_stat_full(pid).map_or((0, 0), |p| (p.1, p.2));
    let (user, sys) = (end.0.saturating_sub(base.0), end.1.saturating_sub(base.1));
    let rss = vm_hwm_kib(pid).unwrap_or(0);
    let checked = sync.and_then(|(wall, client)| {
        check_replica(corpus, &dir.join("spool"), "csync replica").map(|()| (wall, client))
    });
    stop_csync(child, &tag)?;
    let (wall, client) =
        checked.with_context(|| format!("server log: {}/sync_server.log", dir.display()))?;
    Ok(RunResult {
        corpus: corpus.name,
        config: Config {
            server: Server::Csync,
            compress,
        },
        run: 0,
        wall_s: wall,
        messages: corpus.messages,
        bytes: corpus.bytes,
        server_user_s: user as f64 / clk_tck(),
        server_sys_s: sys as f64 / clk_tck(),
        server_rss_kib: rss,
        client_cpu_s: client,
        load1: load,
        note,
    })
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
        "{:<8} {:<15} {:>3} {:>7} {:>6} {:>6} {:>9} {:>11} {:>10} {:>12} {:>8} {:>6}  note",
        "corpus",
        "server",
        "run",
        "wall s",
        "msg/s",
        "MB/s",
        "srv CPU s",
        "(usr + sys)",
        "CPU ms/msg",
        "srv peak RSS",
        "client s",
        "load1",
    );
    for r in results {
        println!(
            "{:<8} {:<15} {:>3} {:>7.2} {:>6.0} {:>6.1} {:>9.2} {:>11} {:>10.3} {:>8.1} MiB {:>8.2} {:>6.2}  {}",
            r.corpus,
            r.config.label(),
            r.run,
            r.wall_s,
            r.messages as f64 / r.wall_s,
            r.bytes as f64 / 1e6 / r.wall_s,
            r.cpu(),
            format!("{:.2} + {:.2}", r.server_user_s, r.server_sys_s),
            r.cpu() * 1000.0 / r.messages as f64,
            r.server_rss_kib as f64 / 1024.0,
            r.client_cpu_s,
            r.load1,
            r.note
        );
    }
}

struct Summary {
    wall: f64,
    cpu_per_msg: f64,
    /// Best (lowest) of the runs: a busy host only ever adds time.
    best_wall: f64,
    best_cpu_per_msg: f64,
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
    let walls: Vec<f64> = rs.iter().map(|r| r.wall_s).collect();
    let cpus: Vec<f64> = rs.iter().map(|r| r.cpu() / r.messages as f64).collect();
    Some(Summary {
        wall: mean(&walls),
        cpu_per_msg: mean(&cpus),
        best_wall: walls.iter().copied().fold(f64::INFINITY, f64::min),
        best_cpu_per_msg: cpus.iter().copied().fold(f64::INFINITY, f64::min),
        rss_kib: rs.iter().map(|r| r.server_rss_kib).max().unwrap_or(0),
    })
}

fn print_ratios(results: &[RunResult], corpora: &[Corpus]) {
    println!();
    println!(
        "csync / Cyrus (lower is better for csync): mean of the runs, and best run against \
         best run (the targets are judged on both)"
    );
    println!(
        "{:<8} {:<11} {:>19} {:>15} {:>9}   targets",
        "corpus", "compression", "CPU/msg mean best", "wall mean best", "peak RSS"
    );
    for corpus in corpora {
        for compress in [true, false] {
            let cy = summarize(
                results,
                corpus.name,
                Config {
                    server: Server::Cyrus,
                    compress,
                },
            );
            let cs = summarize(
                results,
                corpus.name,
                Config {
                    server: Server::Csync,
                    compress,
                },
            );
            let (Some(cy), Some(cs)) = (cy, cs) else {
                continue;
            };
            let cpu = cs.cpu_per_msg / cy.cpu_per_msg;
            let best_cpu = cs.best_cpu_per_msg / cy.best_cpu_per_msg;
            let wall = cs.wall / cy.wall;
            let best_wall = cs.best_wall / cy.best_wall;
            let verdict = |mean: f64, best: f64, limit: f64| match (mean <= limit, best <= limit) {
                (true, true) => "met",
                (false, false) => "MISSED",
                _ => "met in one of mean/best",
            };
            let mut targets = vec![format!(
                "CPU/msg <= 0.33: {}",
                verdict(cpu, best_cpu, 1.0 / 3.0)
            )];
            if !compress {
                targets.push(format!("wall <= 0.50: {}", verdict(wall, best_wall, 0.5)));
            }
            println!(
                "{:<8} {:<11} {:>9.3} {:>9.3} {:>7.3} {:>7.3} {:>9.3}   {}",
                corpus.name,
                if compress { "on" } else { "off" },
                cpu,
                best_cpu,
                wall,
                best_wall,
                cs.rss_kib as f64 / cy.rss_kib as f64,
                targets.join("; ")
            );
        }
    }
    if corpora.len() == 2 {
        let (spread, one) = (&corpora[0], &corpora[1]);
        println!();
        println!(
            "peak RSS vs mailbox size: {} ({} msgs / {} mailboxes = {:.0} per mailbox) vs {} ({} msgs in 1 mailbox)",
            spread.name,
            spread.messages,
            spread.mailboxes,
            spread.messages as f64 / spread.mailboxes as f64,
            one.name,
            one.messages
        );
        for config in Config::ALL {
            let (Some(a), Some(b)) = (
                summarize(results, spread.name, config),
                summarize(results, one.name, config),
            ) else {
                continue;
            };
            println!(
                "  {:<15} {:>7.1} MiB -> {:>7.1} MiB  ({:+.1} MiB, x{:.2})",
                config.label(),
                a.rss_kib as f64 / 1024.0,
                b.rss_kib as f64 / 1024.0,
                (b.rss_kib as f64 - a.rss_kib as f64) / 1024.0,
                b.rss_kib as f64 / a.rss_kib as f64
            );
        }
    }
}

// ---------------------------------------------------------------------------------------

fn require_cyrus(s: &Settings) -> Result<()> {
    let missing: Vec<String> = ["master", "sync_client", "sync_server", "lmtpd", "imapd"]
        .iter()
        .map(|p| s.cyrus_bin.join(p))
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if !missing.is_empty() {
        bail!(
            "Cyrus IMAPd 3.6 is not installed (missing {}).\nInstall it with:\n  {INSTALL}\n\
             or point CYRUS_BIN at an installation.",
            missing.join(", ")
        );
    }
    for tool in ["python3", "bash"] {
        ensure!(
            Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|st| st.success()),
            "{tool} is required (tests/cyrus)"
        );
    }
    Ok(())
}

static LAST_BULK_DELETE: Mutex<Option<Instant>> = Mutex::new(None);

fn note_bulk_delete() {
    *LAST_BULK_DELETE.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
}

/// Waits until files this process deleted no longer slow down inode allocation (see
/// the comment in `bench`): 60 s after their deletion, once the inode table is written
/// back (dirty_expire 30 s).
fn settle_after_delete() {
    const SETTLE: Duration = Duration::from_secs(70);
    let last = *LAST_BULK_DELETE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(t) = last
        && t.elapsed() < SETTLE
    {
        let wait = SETTLE - t.elapsed();
        eprintln!(
            "vs_cyrus: waiting {:.0} s: the old work dir was just removed, and ext4 avoids reusing \
             recently freed inodes",
            wait.as_secs_f64()
        );
        std::thread::sleep(wait);
    }
}

/// The work dir is ours if it is empty or carries our marker; anything else is refused.
fn prepare_dir(s: &Settings) -> Result<()> {
    let marker = s.dir.join(".vs_cyrus");
    if s.dir.exists() {
        let empty = std::fs::read_dir(&s.dir)?.next().is_none();
        ensure!(
            empty || marker.exists(),
            "{} exists and is not a vs_cyrus work dir (no .vs_cyrus); set VS_CYRUS_DIR",
            s.dir.display()
        );
        // Stop instances a killed earlier run may have left (their own pid files).
        for entry in std::fs::read_dir(&s.dir)? {
            let p = entry?.path();
            if p.join("instance.env").exists() {
                let _ = kit("cyrus-instance.sh")
                    .arg("stop")
                    .arg(&p)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        for entry in std::fs::read_dir(&s.dir)? {
            let p = entry?.path();
            let keep_master = s.reuse_master && p.join("vs_cyrus.corpus").exists();
            if p.file_name().is_some_and(|n| n == ".vs_cyrus") || keep_master {
                continue;
            }
            if p.is_dir() {
                std::fs::remove_dir_all(&p).with_context(|| p.display().to_string())?;
                note_bulk_delete();
            } else {
                std::fs::remove_file(&p)?;
            }
        }
    }
    std::fs::create_dir_all(&s.dir)?;
    std::fs::write(
        &marker,
        "work dir of cargo bench -p csync-sync-server --bench vs_cyrus\n",
    )?;
    // Cyrus runs as `cyrus` when we are root: every parent must be searchable.
    let mut p = s.dir.clone();
    loop {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p)?.permissions().mode();
        ensure!(
            mode & 0o001 != 0,
            "{} is not searchable by other users (mode {:o}); Cyrus cannot enter it. Set VS_CYRUS_DIR",
            p.display(),
            mode & 0o7777
        );
        if !p.pop() {
            break;
        }
    }
    // Message files ~40 KB on average (4 KiB blocks: ~45 KiB on disk), stored by the
    // masters and by every run's replica (all kept until the end), plus 1 GiB.
    let copies = 1 + (s.runs * s.configs.len()) as u64;
    let need_kib = (s.messages + s.onebox) as u64 * 45 * copies + 1024 * 1024;
    let free = free_kib(&s.dir)?;
    ensure!(
        free >= need_kib,
        "{}: {} MiB free, about {} MiB needed",
        s.dir.display(),
        free / 1024,
        need_kib / 1024
    );
    eprintln!(
        "vs_cyrus: work dir {} ({} MiB free, ~{} MiB needed)",
        s.dir.display(),
        free / 1024,
        need_kib / 1024
    );
    Ok(())
}

fn bench(s: &Settings) -> Result<()> {
    require_cyrus(s)?;
    prepare_dir(s)?;
    let load_start = loadavg();
    let t_start = Instant::now();
    let mut corpora = Vec::new();
    let recipients: Vec<String> = (1..=s.users)
        .flat_map(|u| {
            let user = format!("bench{u:03}");
            [
                user.clone(),
                format!("{user}+Archive"),
                format!("{user}+Lists"),
            ]
        })
        .collect();
    corpora.push(make_corpus(
        s,
        "spread",
        s.dir.join("master"),
        recipients,
        s.messages,
        s.seed,
    )?);
    if s.onebox > 0 {
        corpora.push(make_corpus(
            s,
            "onebox",
            s.dir.join("master-onebox"),
            vec!["bigbox".to_owned()],
            s.onebox,
            s.seed + 1,
        )?);
    }
    let mut results = Vec::new();
    for corpus in &corpora {
        for run_no in 1..=s.runs {
            for &config in &s.configs {
                eprintln!(
                    "vs_cyrus: {} corpus, {}, run {run_no}/{} (load {})",
                    corpus.name,
                    config.label(),
                    s.runs,
                    loadavg()
                );
                // Every run gets its own new replica; all are removed at the end. Removing
                // one between runs would make the next run pay for it: ext4 without a
                // journal (this machine's) skips inodes freed in the last 60-360 s when
                // it allocates new ones, one inode-table lookup each (recently_deleted()),
                // which cost up to half of a replica's CPU in trials.
                let dir = s
                    .dir
                    .join(format!("{}-{}-{run_no}", corpus.name, config.key()));
                settle_after_delete();
                let mut r = match config.server {
                    Server::Cyrus => run_cyrus(s, corpus, config.compress, dir),
                    Server::Csync => run_csync(s, corpus, config.compress, dir),
                }
                .with_context(|| {
                    format!("{} corpus, {}, run {run_no}", corpus.name, config.label())
                })?;
                r.run = run_no;
                results.push(r);
            }
        }
    }
    // Stop the masters before printing.
    for c in &corpora {
        run(
            kit("cyrus-instance.sh").arg("stop").arg(&c.master),
            "stopping a Cyrus master",
        )?;
        unregister_instance(&c.master);
    }
    println!();
    println!(
        "vs_cyrus: real Cyrus 3.6 sync_client -A -> Cyrus 3.6 sync_server vs csync sync_server {}",
        env!("CARGO_PKG_VERSION")
    );
    for c in &corpora {
        println!(
            "  corpus {:<7} {} messages, {:.1} MB of message files, {} mailboxes ({} users), \
             1-200 KB log-uniform, seed {}; LMTP delivery {}",
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
            }
        );
    }
    if s.csync_bin.as_path() != Path::new(env!("CARGO_BIN_EXE_sync_server")) {
        println!("  csync server: {}", s.csync_bin.display());
    }
    println!(
        "  {} CPUs; load average at start {load_start}, at end {}; each run from an empty replica; \
         MB = 10^6 bytes of message files",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg()
    );
    println!();
    print_runs(&results);
    print_ratios(&results, &corpora);
    println!();
    println!("total {:.0} s", t_start.elapsed().as_secs_f64());
    Ok(())
}

fn main() -> ExitCode {
    // `cargo bench` passes --bench; `cargo test --benches` does not: then only say so.
    if !std::env::args().any(|a| a == "--bench") {
        println!(
            "vs_cyrus: a benchmark; run it with `cargo bench -p csync-sync-server --bench vs_cyrus`"
        );
        return ExitCode::SUCCESS;
    }
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vs_cyrus: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    install_signal_handler();
    let result = std::panic::catch_unwind(|| bench(&settings));
    cleanup();
    match result {
        Ok(Ok(())) => {
            if !settings.keep {
                let _ = std::fs::remove_dir_all(&settings.dir);
            } else {
                eprintln!("vs_cyrus: kept {}", settings.dir.display());
            }
            ExitCode::SUCCESS
        }
        Ok(Err(e)) => {
            eprintln!("vs_cyrus: FAILED: {e:#}");
            eprintln!("vs_cyrus: work dir kept: {}", settings.dir.display());
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!(
                "vs_cyrus: FAILED (panic); work dir kept: {}",
                settings.dir.display()
            );
            ExitCode::FAILURE
        }
    }
}
