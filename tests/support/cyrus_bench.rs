//! Pieces shared by the benchmarks that run against real Cyrus 3.6 instances
//! (`crates/sync_server/benches/vs_cyrus.rs`, `crates/sync_client/benches/vs_cyrus.rs`),
//! included by each with `#[path = "../../../tests/support/cyrus_bench.rs"] mod cyrus_bench;`.
//!
//! * a registry of every process a bench started (Cyrus instances by their directory,
//!   csync processes by pid and a string their command line must contain), stopped by
//!   [`cleanup`] at the end, on failure and on SIGINT/SIGTERM;
//! * running the toolkit of `tests/cyrus` ([`kit`], [`run`], [`env_of`]);
//! * `/proc` readings: CPU ticks, peak RSS, load average;
//! * [`Relay`], a loopback relay that hides `* COMPRESS DEFLATE` from a client, so a
//!   Cyrus replica (which always offers it) can be measured uncompressed;
//! * the corpus on a real Cyrus master ([`make_corpus`]: `cyrusctl.py deliver` by LMTP);
//! * the work dir ([`prepare_dir`]: refuses a directory that is not a bench's, checks
//!   that Cyrus can enter it and that the disk has room).
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

pub const INSTALL: &str = "apt-get install -y --no-install-recommends cyrus-imapd cyrus-common \
                           cyrus-replication sasl2-bin libsasl2-modules openssl python3 gcc libc6-dev";

// ---------------------------------------------------------------------------------------
// Settings helpers

pub fn env_usize(key: &str, default: usize) -> Result<usize> {
    match std::env::var(key) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .replace('_', "")
            .parse()
            .with_context(|| format!("{key}={v}: not a number")),
        _ => Ok(default),
    }
}

pub fn env_f64(key: &str, default: f64) -> Result<f64> {
    match std::env::var(key) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .with_context(|| format!("{key}={v}: not a number")),
        _ => Ok(default),
    }
}

pub fn env_flag(key: &str) -> bool {
    std::env::var(key).is_ok_and(|v| !v.is_empty() && v != "0" && v != "no")
}

/// The workspace root (every crate is at `crates/<name>`).
pub fn workspace() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    p.canonicalize().unwrap_or(p)
}

/// `$VAR`, else `<target dir>/<default_name>`, made absolute.
pub fn work_dir(var: &str, default_name: &str) -> Result<PathBuf> {
    let dir = match std::env::var_os(var) {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => {
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace().join("target"));
            target.join(default_name)
        }
    };
    Ok(if dir.is_absolute() {
        dir
    } else {
        std::env::current_dir()?.join(dir)
    })
}

pub fn cyrus_bin() -> PathBuf {
    std::env::var_os("CYRUS_BIN")
        .filter(|b| !b.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/cyrus/bin"))
}

// ---------------------------------------------------------------------------------------
// Everything started is registered here, and stopped by `cleanup` (end, error, signal).

#[derive(Default)]
struct Registry {
    /// Cyrus instance dirs (stopped with `cyrus-instance.sh stop`, which only signals the
    /// pids in the instance's own pid files).
    instances: Vec<PathBuf>,
    /// Our own processes: pid and a string its command line must contain.
    servers: Vec<(u32, String)>,
    /// Commands run to completion (a sync client and whatever it started): stopped with
    /// all their descendants.
    trees: Vec<(u32, String)>,
}

static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

pub fn register_instance(dir: &Path) {
    let mut r = REGISTRY.lock().unwrap_or_else(|e| e.into_inner());
    let r = r.get_or_insert_with(Registry::default);
    if !r.instances.iter().any(|d| d == dir) {
        r.instances.push(dir.to_owned());
    }
}

pub fn unregister_instance(dir: &Path) {
    if let Some(r) = REGISTRY.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        r.instances.retain(|d| d != dir);
    }
}

/// Registers a process we started; `tag` must appear in its command line (or, for a
/// re-executed bench binary, its environment) for `cleanup` to signal it.
pub fn register_server(pid: u32, tag: &str) {
    REGISTRY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(Registry::default)
        .servers
        .push((pid, tag.to_owned()));
}

pub fn unregister_server(pid: u32) {
    if let Some(r) = REGISTRY.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        r.servers.retain(|(p, _)| *p != pid);
    }
}

/// Registers a running command whose whole process tree `cleanup` stops.
pub fn register_tree(pid: u32, tag: &str) {
    REGISTRY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get_or_insert_with(Registry::default)
        .trees
        .push((pid, tag.to_owned()));
}

pub fn unregister_tree(pid: u32) {
    if let Some(r) = REGISTRY.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        r.trees.retain(|(p, _)| *p != pid);
    }
}

/// Every live descendant of `pid` (children before grandchildren).
fn descendants(pid: u32) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parents: Vec<(u32, u32)> = rd
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|p| proc_stat(p).map(|(pp, _, _, _)| (p, pp)))
        .collect();
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(child, pp) in &parents {
            if pp == parent && !out.contains(&child) {
                out.push(child);
                frontier.push(child);
            }
        }
    }
    out
}

/// SIGTERM to a registered command and everything it started (deepest first), then
/// SIGKILL to what is left after 5 s.
fn stop_tree(pid: u32, tag: &str) {
    if !cmdline_has(pid, tag) {
        return;
    }
    let mut all = descendants(pid);
    all.reverse();
    all.push(pid);
    let signal = |sig: &str, pids: &[u32]| {
        for p in pids {
            let _ = Command::new("kill").args([sig, &p.to_string()]).status();
        }
    };
    signal("-TERM", &all);
    let alive = |p: &u32| proc_state(*p).is_some_and(|s| s != 'Z');
    for _ in 0..50 {
        if !all.iter().any(alive) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let left: Vec<u32> = all.iter().copied().filter(alive).collect();
    signal("-KILL", &left);
}

/// True while `pid` is a live process whose command line or environment contains `tag`
/// (a reused pid never matches).
pub fn cmdline_has(pid: u32, tag: &str) -> bool {
    let has = |what: &str| {
        std::fs::read(format!("/proc/{pid}/{what}"))
            .map(|c| String::from_utf8_lossy(&c).contains(tag))
            .unwrap_or(false)
    };
    let zombie = proc_state(pid).is_some_and(|s| s == 'Z');
    !zombie && (has("cmdline") || has("environ"))
}

fn proc_state(pid: u32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 1..].trim_start().chars().next()
}

/// SIGTERM, up to 5 s, then SIGKILL, for one registered process.
pub fn stop_pid(pid: u32, tag: &str) {
    if cmdline_has(pid, tag) {
        let _ = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        for _ in 0..50 {
            if !cmdline_has(pid, tag) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if cmdline_has(pid, tag) {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    }
}

/// Held for the whole of a cleanup: a second caller (the main thread after a signal
/// made its command fail) waits until the first one has stopped everything.
static CLEANING: Mutex<()> = Mutex::new(());

/// Stops every registered process (each only if it is still the one we started).
pub fn cleanup() {
    let _cleaning = CLEANING.lock().unwrap_or_else(|e| e.into_inner());
    let taken = REGISTRY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
        .unwrap_or_default();
    for (pid, tag) in &taken.trees {
        stop_tree(*pid, tag);
    }
    for (pid, tag) in &taken.servers {
        stop_pid(*pid, tag);
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
pub fn install_signal_handler(bench: &'static str) {
    std::thread::spawn(move || {
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
            eprintln!("{bench}: interrupted; stopping what it started");
            cleanup();
            std::process::exit(130);
        });
    });
}

// ---------------------------------------------------------------------------------------
// Small helpers

/// A script of `tests/cyrus`.
pub fn kit(script: &str) -> Command {
    Command::new(workspace().join("tests/cyrus").join(script))
}

/// Runs a command to completion (registered, so an interrupted bench stops it and what
/// it started); on failure the error carries its output's tail.
pub fn run(cmd: &mut Command, what: &str) -> Result<String> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("{what}: cannot start {:?}", cmd.get_program()))?;
    let pid = child.id();
    register_tree(pid, &cmd.get_program().to_string_lossy());
    let out = child.wait_with_output();
    unregister_tree(pid);
    let out = out.with_context(|| format!("{what}: waiting for {:?}", cmd.get_program()))?;
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

/// `DIR/instance.env` of a Cyrus instance.
pub fn env_of(dir: &Path) -> Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(dir.join("instance.env"))
        .with_context(|| format!("{}/instance.env", dir.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

/// A port from an instance's `instance.env`.
pub fn env_port(dir: &Path, key: &str) -> Result<u16> {
    env_of(dir)?
        .get(key)
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("no {key} in {}/instance.env", dir.display()))
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

pub fn load1() -> f64 {
    loadavg()
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}

pub fn clk_tck() -> f64 {
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
pub fn proc_stat(pid: u32) -> Option<(u32, u64, u64, String)> {
    proc_stat_full(pid).map(|(pp, u, s, c, comm)| (pp, u + s, c, comm))
}

/// (ppid, utime, stime, cutime+cstime, comm) of a process, in ticks.
pub fn proc_stat_full(pid: u32) -> Option<(u32, u64, u64, u64, String)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = s.find('(')?;
    let close = s.rfind(')')?;
    let comm = s[open + 1..close].to_owned();
    let f: Vec<&str> = s[close + 1..].split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok());
    Some((n(1)? as u32, n(11)?, n(12)?, n(13)? + n(14)?, comm))
}

/// Peak resident set (VmHWM) in KiB.
pub fn vm_hwm_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

/// CPU of this process's reaped children, in ticks.
pub fn reaped_children_ticks() -> u64 {
    proc_stat(std::process::id()).map_or(0, |(_, _, c, _)| c)
}

/// Children of `ppid` whose comm is `name`.
pub fn children_named(ppid: u32, name: &str) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| proc_stat(pid).is_some_and(|(pp, _, _, comm)| pp == ppid && comm == name))
        .collect()
}

pub fn free_kib(dir: &Path) -> Result<u64> {
    let out = run(Command::new("df").arg("-Pk").arg(dir), "df")?;
    out.lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .context("cannot read df output")
}

/// Number and total size of the message files (`<uid>.`) under a spool.
pub fn spool_messages(root: &Path) -> Result<(u64, u64)> {
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

pub struct Relay {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    pub fn start(target: u16) -> Result<Relay> {
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
                        eprintln!("relay: {e:#}");
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
pub struct Corpus {
    pub name: &'static str,
    pub master: PathBuf,
    pub messages: u64,
    pub bytes: u64,
    pub mailboxes: usize,
    /// Seconds the LMTP delivery took (0: a kept master was reused).
    pub deliver_s: f64,
}

/// The file in a master's directory that says which corpus it holds.
pub const CORPUS_MARKER: &str = "vs_cyrus.corpus";

fn corpus_marker(recipients: &[String], count: usize, seed: u64) -> String {
    format!("count={count} seed={seed} to={}", recipients.join(","))
}

/// `users` users, each with an INBOX and the folders Archive and Lists (the LMTP
/// recipients `benchNNN`, `benchNNN+Archive`, `benchNNN+Lists`).
pub fn spread_recipients(users: usize) -> Vec<String> {
    (1..=users)
        .flat_map(|u| {
            let user = format!("bench{u:03}");
            [
                user.clone(),
                format!("{user}+Archive"),
                format!("{user}+Lists"),
            ]
        })
        .collect()
}

/// Starts the Cyrus master in `dir` and delivers `count` messages of generator `seed`
/// round-robin to `recipients` by LMTP (`cyrusctl.py deliver --create`), unless `reuse`
/// and the master there already holds exactly that corpus.
pub fn make_corpus(
    reuse: bool,
    name: &'static str,
    dir: PathBuf,
    recipients: Vec<String>,
    count: usize,
    seed: u64,
) -> Result<Corpus> {
    let marker = corpus_marker(&recipients, count, seed);
    let marker_file = dir.join(CORPUS_MARKER);
    let mailboxes = {
        let mut r = recipients.clone();
        r.sort();
        r.dedup();
        r.len()
    };
    let reuse = reuse && std::fs::read_to_string(&marker_file).is_ok_and(|m| m.trim() == marker);
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
        eprintln!("reusing the {name} corpus in {}", dir.display());
    } else {
        let _ = std::fs::remove_file(&marker_file);
        eprintln!(
            "delivering {count} messages by LMTP to {} mailboxes ({name} corpus) ...",
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
// Requirements and the work dir

/// Fails (with the install command) unless Cyrus 3.6, python3 and bash are there.
pub fn require_cyrus(cyrus_bin: &Path) -> Result<()> {
    let missing: Vec<String> = ["master", "sync_client", "sync_server", "lmtpd", "imapd"]
        .iter()
        .map(|p| cyrus_bin.join(p))
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

pub fn note_bulk_delete() {
    *LAST_BULK_DELETE.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
}

/// Waits until files this process deleted no longer slow down inode allocation: ext4
/// without a journal (this machine's) skips inodes freed in the last 60-360 s when it
/// allocates new ones, one inode-table lookup each (recently_deleted()), which cost up
/// to half of a replica's CPU in trials. So: 60 s after their deletion, once the inode
/// table is written back (dirty_expire 30 s).
pub fn settle_after_delete(bench: &str) {
    const SETTLE: Duration = Duration::from_secs(70);
    let last = *LAST_BULK_DELETE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(t) = last
        && t.elapsed() < SETTLE
    {
        let wait = SETTLE - t.elapsed();
        eprintln!(
            "{bench}: waiting {:.0} s: the old work dir was just removed, and ext4 avoids reusing \
             recently freed inodes",
            wait.as_secs_f64()
        );
        std::thread::sleep(wait);
    }
}

/// Makes `dir` the bench's work dir. It must be empty or carry the marker file `.vs_cyrus`
/// (anything else is refused); Cyrus instances a killed earlier run left there are
/// stopped, and everything but the marker and what `keep` selects is removed. Then:
/// every parent must be searchable (Cyrus runs as `cyrus` when we are root), and the
/// file system must have `need_kib` free.
pub fn prepare_dir(
    bench: &str,
    dir: &Path,
    keep: &dyn Fn(&Path) -> bool,
    need_kib: u64,
) -> Result<()> {
    let marker = dir.join(".vs_cyrus");
    if dir.exists() {
        let empty = std::fs::read_dir(dir)?.next().is_none();
        ensure!(
            empty || marker.exists(),
            "{} exists and is not a vs_cyrus work dir (no .vs_cyrus); choose another work dir",
            dir.display()
        );
        // Stop instances a killed earlier run may have left (their own pid files).
        for entry in std::fs::read_dir(dir)? {
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
        for entry in std::fs::read_dir(dir)? {
            let p = entry?.path();
            if p.file_name().is_some_and(|n| n == ".vs_cyrus") || keep(&p) {
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
    std::fs::create_dir_all(dir)?;
    std::fs::write(&marker, format!("work dir of the {bench} benchmark\n"))?;
    let mut p = dir.to_owned();
    loop {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p)?.permissions().mode();
        ensure!(
            mode & 0o001 != 0,
            "{} is not searchable by other users (mode {:o}); Cyrus cannot enter it. \
             Choose another work dir",
            p.display(),
            mode & 0o7777
        );
        if !p.pop() {
            break;
        }
    }
    let free = free_kib(dir)?;
    ensure!(
        free >= need_kib,
        "{}: {} MiB free, about {} MiB needed",
        dir.display(),
        free / 1024,
        need_kib / 1024
    );
    eprintln!(
        "{bench}: work dir {} ({} MiB free, ~{} MiB needed)",
        dir.display(),
        free / 1024,
        need_kib / 1024
    );
    Ok(())
}
