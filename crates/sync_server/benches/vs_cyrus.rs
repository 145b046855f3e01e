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

#[path = "../../../tests/support/cyrus_bench.rs"]
mod cyrus_bench;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cyrus_bench::*;

const BENCH: &str = "vs_cyrus";

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
        let dir = work_dir("VS_CYRUS_DIR", "vs_cyrus")?;
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
            cyrus_bin: cyrus_bin(),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Shared with the client bench: tests/support/cyrus_bench.rs (registry of started
// processes, toolkit runner, /proc readings, the COMPRESS-hiding relay, the corpus, the
// work dir).

/// Descendants of `pid` whose command line contains `tag` (csync's server under
/// VS_CYRUS_CSYNC_WRAP is the wrapper's child).
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
    // A tree: under VS_CYRUS_CSYNC_WRAP the server is the wrapper's child.
    register_tree(child.id(), &conf.display().to_string());
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
    unregister_tree(pid);
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

/// The work dir: the masters are kept with VS_CYRUS_REUSE_MASTER. Message files are ~40
/// KB on average (4 KiB blocks: ~45 KiB on disk), stored by the masters and by every
/// run's replica (all kept until the end), plus 1 GiB.
fn prepare_work_dir(s: &Settings) -> Result<()> {
    let copies = 1 + (s.runs * s.configs.len()) as u64;
    let need_kib = (s.messages + s.onebox) as u64 * 45 * copies + 1024 * 1024;
    let keep = |p: &Path| s.reuse_master && p.join(CORPUS_MARKER).exists();
    prepare_dir(BENCH, &s.dir, &keep, need_kib)
}

fn bench(s: &Settings) -> Result<()> {
    require_cyrus(&s.cyrus_bin)?;
    prepare_work_dir(s)?;
    let load_start = loadavg();
    let t_start = Instant::now();
    let mut corpora = Vec::new();
    let recipients = spread_recipients(s.users);
    corpora.push(make_corpus(
        s.reuse_master,
        "spread",
        s.dir.join("master"),
        recipients,
        s.messages,
        s.seed,
    )?);
    if s.onebox > 0 {
        corpora.push(make_corpus(
            s.reuse_master,
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
                settle_after_delete(BENCH);
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
    install_signal_handler(BENCH);
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
