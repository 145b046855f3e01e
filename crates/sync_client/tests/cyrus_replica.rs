//! csync's `sync_client` against a real Cyrus IMAPd 3.6 (the toolkit of `tests/cyrus`).
//!
//! * `csync_master_to_cyrus_replica`: a csync store filled with `csyncadm` (users,
//!   folders with a space and a modified UTF-7 name, 32 messages one of which is over
//!   128 KiB, flags, expunges, a rename with a child, a delayed delete, another user's
//!   seen state, subscriptions, ACLs with `anyone` and a negative entry, a quota,
//!   shared and private annotations, sieve scripts) is replicated with `-u`, `-m` and
//!   `-A` into a real Cyrus replica. Then what Cyrus shows over IMAP (`dump.py`) equals
//!   `csyncadm dump`, a second run sends no APPLY, and `--verify` exits 0. On the same
//!   replica: a flag changed on both sides and one changed on the replica only are
//!   repaired by the conflict rules (§4.7, §9.4), and a split brain (the same uid
//!   holding different messages on the two sides) stops `-O` with exit 1 and is
//!   repaired without it, keeping both messages on both sides (§4.6).
//! * `cyrus_to_csync_to_cyrus_round_trip`: real Cyrus A → csync `sync_server` → csync
//!   `sync_client` (on the same store) → real Cyrus B; A and B are then identical by
//!   `dump.py diff`, and the csync store is identical to A by `csyncadm dump`.
//!
//! Cyrus 3.6 must be installed (see tests/cyrus/README.md); without it these tests
//! fail with the apt-get line. Every service listens on 127.0.0.1; every process a test
//! starts is stopped by a guard, on failure too. A failing test keeps its work
//! directory (logs of Cyrus and of every sync run, the dumps) and prints where it is;
//! `CSYNC_TEST_KEEP=1` keeps it always.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

const INSTALL: &str = "apt-get install -y --no-install-recommends cyrus-imapd cyrus-common \
                       cyrus-replication sasl2-bin libsasl2-modules openssl python3 gcc libc6-dev";

// ---------------------------------------------------------------------------------
// Tools

fn toolkit() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/cyrus")
}

fn kit(script: &str) -> Command {
    Command::new(toolkit().join(script))
}

/// Fails (never skips) when Cyrus or python3 is missing.
fn require_cyrus() {
    let bin = std::env::var_os("CYRUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/cyrus/bin"));
    let missing: Vec<&str> = ["master", "sync_server", "sync_client", "imapd", "lmtpd"]
        .into_iter()
        .filter(|p| !bin.join(p).is_file())
        .collect();
    assert!(
        missing.is_empty(),
        "real Cyrus IMAPd 3.6 is not installed ({} missing in {}); install it with:\n  {INSTALL}",
        missing.join(", "),
        bin.display()
    );
    let python = Command::new("python3").arg("--version").output();
    assert!(
        python.is_ok_and(|o| o.status.success()),
        "python3 is missing; install it with:\n  {INSTALL}"
    );
}

/// The binaries under test: sync_client from this package, csyncadm and sync_server
/// built (once per test process) by cargo in the same target directory and profile.
struct Bins {
    sync_client: PathBuf,
    csyncadm: PathBuf,
    sync_server: PathBuf,
}

fn bins() -> &'static Bins {
    static BINS: OnceLock<Bins> = OnceLock::new();
    BINS.get_or_init(|| {
        let sync_client = PathBuf::from(env!("CARGO_BIN_EXE_sync_client"));
        let profile_dir = sync_client
            .parent()
            .expect("target/<profile>")
            .to_path_buf();
        let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
        let mut build = Command::new(option_env!("CARGO").unwrap_or("cargo"));
        build
            .args([
                "build",
                "--quiet",
                "-p",
                "csync-admin",
                "-p",
                "csync-sync-server",
            ])
            .args(["--bin", "csyncadm", "--bin", "sync_server", "--target-dir"])
            .arg(&target_dir)
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let t = Instant::now();
        let status = build
            .status()
            .expect("running cargo to build csyncadm and sync_server");
        assert!(status.success(), "building csyncadm and sync_server failed");
        eprintln!(
            "built csyncadm and sync_server in {:.1}s",
            t.elapsed().as_secs_f64()
        );
        Bins {
            sync_client,
            csyncadm: profile_dir.join("csyncadm"),
            sync_server: profile_dir.join("sync_server"),
        }
    })
}

/// Runs a command, returns its output; panics with everything it printed unless it
/// exits 0.
fn run_ok(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs a command with `input` on stdin.
fn run_stdin(cmd: &mut Command, input: &[u8], what: &str) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

// ---------------------------------------------------------------------------------
// Guards

/// The test's directory: 0755 (Cyrus, running as `cyrus`, must enter it), removed
/// when the test passes, kept (and named) when it fails.
struct Workdir(Option<tempfile::TempDir>);

impl Workdir {
    fn new() -> Workdir {
        let dir = tempfile::Builder::new()
            .prefix("csync-cyrus-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        Workdir(Some(dir))
    }

    fn path(&self) -> &Path {
        self.0.as_ref().unwrap().path()
    }
}

impl Drop for Workdir {
    fn drop(&mut self) {
        let keep = std::env::var_os("CSYNC_TEST_KEEP").is_some();
        if (keep || std::thread::panicking())
            && let Some(dir) = self.0.take()
        {
            eprintln!("work directory kept: {}", dir.keep().display());
        }
    }
}

/// A running Cyrus instance; stopped (through its pid file) on drop.
struct Cyrus {
    dir: PathBuf,
    env: HashMap<String, String>,
}

impl Cyrus {
    fn start(dir: PathBuf, role: &str, extra: &[&str]) -> Cyrus {
        let mut cmd = kit("cyrus-instance.sh");
        cmd.arg("start").arg(&dir).args([role, "auto"]).args(extra);
        // The guard exists before the start so a half-started instance is stopped.
        let mut cyrus = Cyrus {
            dir: dir.clone(),
            env: HashMap::new(),
        };
        run_ok(&mut cmd, &format!("starting the Cyrus {role}"));
        cyrus.env = std::fs::read_to_string(dir.join("instance.env"))
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        cyrus
    }

    fn port(&self, key: &str) -> u16 {
        self.env[key].parse().unwrap()
    }

    /// `cyrusctl.py DIR script` with `script` on stdin.
    fn script(&self, script: &str) {
        run_stdin(
            kit("cyrusctl.py").arg(&self.dir).arg("script"),
            script.as_bytes(),
            "cyrusctl.py script",
        );
    }

    /// `cyrusctl.py DIR ARGS`.
    fn ctl(&self, args: &[&str]) -> String {
        let out = run_ok(kit("cyrusctl.py").arg(&self.dir).args(args), "cyrusctl.py");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The dump (JSON) of this instance, with `--deleted`.
    fn dump(&self, to: &Path) -> Value {
        run_ok(
            kit("dump.py")
                .arg(&self.dir)
                .arg("--deleted")
                .arg("-o")
                .arg(to),
            "dump.py",
        );
        serde_json::from_slice(&std::fs::read(to).unwrap()).unwrap()
    }
}

impl Drop for Cyrus {
    fn drop(&mut self) {
        let _ = kit("cyrus-instance.sh")
            .arg("stop")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .status();
    }
}

/// csync's sync_server; SIGTERM (then SIGKILL) on drop.
struct CsyncServer {
    child: Child,
    port: u16,
}

impl CsyncServer {
    fn start(conf: &Path, log: &Path) -> CsyncServer {
        let mut child = Command::new(&bins().sync_server)
            .arg("-C")
            .arg(conf)
            .args(["--listen", "127.0.0.1:0", "-v"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("starting csync's sync_server");
        let mut stdout = child.stdout.take().unwrap();
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while stdout.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut stdout, &mut std::io::sink());
        });
        let line = String::from_utf8_lossy(&line).into_owned();
        let port = line.rsplit(':').next().and_then(|p| p.trim().parse().ok());
        let mut server = CsyncServer { child, port: 0 };
        server.port = port.unwrap_or_else(|| {
            panic!(
                "sync_server did not report its port ({line:?}); see {}",
                log.display()
            )
        });
        server
    }
}

impl Drop for CsyncServer {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------
// The csync side

/// A csync store (imapd.conf + directories) driven with csyncadm and sync_client.
struct Csync {
    dir: PathBuf,
    conf: PathBuf,
    runs: u32,
}

impl Csync {
    /// The namespace of the Cyrus instances (altnamespace, unixhierarchysep), and a
    /// replica at 127.0.0.1:`sync_port` (repluser/secret; the Cyrus replicas offer
    /// PLAIN without TLS, hence csync_allow_plaintext).
    fn new(dir: PathBuf, sync_port: u16, extra: &str) -> Csync {
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("imapd.conf");
        std::fs::write(
            &conf,
            format!(
                "configdirectory: {d}/conf\npartition-default: {d}/spool\n\
                 defaultpartition: default\nservername: csync.test\n\
                 altnamespace: yes\nunixhierarchysep: yes\nvirtdomains: off\n\
                 sync_host: 127.0.0.1\nsync_port: {sync_port}\nsync_authname: repluser\n\
                 sync_password: secret\ncsync_allow_plaintext: yes\n{extra}",
                d = dir.display()
            ),
        )
        .unwrap();
        Csync { dir, conf, runs: 0 }
    }

    fn adm(&self, args: &[&str]) -> String {
        let out = run_ok(
            Command::new(&bins().csyncadm)
                .arg("-C")
                .arg(&self.conf)
                .args(args),
            &format!("csyncadm {}", args.join(" ")),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `sync_client -v ARGS`; keeps its stderr in `<dir>/sync-N.log`.
    fn sync(&mut self, args: &[&str]) -> Run {
        self.runs += 1;
        let out = Command::new(&bins().sync_client)
            .arg("-C")
            .arg(&self.conf)
            .arg("-v")
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let stderr = strip_ansi(&String::from_utf8_lossy(&out.stderr));
        let log = self.dir.join(format!("sync-{}.log", self.runs));
        std::fs::write(&log, format!("sync_client {}\n{stderr}", args.join(" "))).unwrap();
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr,
            log,
        }
    }

    /// A sync that must succeed.
    fn sync_ok(&mut self, args: &[&str]) -> Run {
        let run = self.sync(args);
        assert_eq!(
            run.code,
            Some(0),
            "sync_client {} failed:\n{}",
            args.join(" "),
            run.stderr
        );
        run
    }

    /// A second run right after a sync: only GETs (no APPLY, nothing uploaded).
    fn assert_converged(&mut self, args: &[&str]) {
        let run = self.sync_ok(args);
        let (gets, applies) = run.commands();
        assert_eq!(
            applies,
            0,
            "a second sync_client {} sent {applies} APPLY commands:\n{}",
            args.join(" "),
            run.stderr
        );
        assert!(gets > 0, "no GET in {}", run.stderr);
        let verify: Vec<&str> = std::iter::once("--verify")
            .chain(args.iter().copied())
            .collect();
        let run = self.sync(&verify);
        assert_eq!(
            run.code,
            Some(0),
            "sync_client {} found differences:\n{}{}",
            verify.join(" "),
            run.stdout,
            run.stderr
        );
        assert!(
            run.stdout.lines().all(|l| l.starts_with("OK ")),
            "{}",
            run.stdout
        );
        assert_eq!(run.commands().1, 0, "--verify sent APPLY: {}", run.stderr);
    }

    /// `csyncadm dump --deleted` as JSON (also written to `to`).
    fn dump(&self, to: &Path) -> Value {
        self.adm(&["dump", "--deleted", "-o", to.to_str().unwrap()]);
        serde_json::from_slice(&std::fs::read(to).unwrap()).unwrap()
    }
}

/// One sync_client run.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    log: PathBuf,
}

impl Run {
    /// (GET, APPLY) counts from the final `-v` line: `... N commands (G GET, A APPLY)`.
    fn commands(&self) -> (u64, u64) {
        let line = self
            .stderr
            .lines()
            .rev()
            .find(|l| l.contains(" GET, ") && l.contains(" APPLY)"))
            .unwrap_or_else(|| panic!("no summary line in {}", self.log.display()));
        let inner = line
            .split_once(" commands (")
            .map(|(_, rest)| rest)
            .unwrap_or_else(|| panic!("summary line {line:?}"));
        let mut numbers = inner
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<u64>().unwrap());
        (numbers.next().unwrap(), numbers.next().unwrap())
    }
}

fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `dump.py diff A B --ignore ...` must say IDENTICAL.
fn assert_same(a: &Path, b: &Path, ignore: &[&str], what: &str) {
    let mut cmd = kit("dump.py");
    cmd.arg("diff").arg(a).arg(b);
    if !ignore.is_empty() {
        cmd.arg("--ignore").arg(ignore.join(","));
    }
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{what}: {} and {} differ:\n{}{}",
        a.display(),
        b.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A message of about `size` bytes with CRLF line ends.
fn message(n: u32, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: Sender {n} <sender{n}@example.com>\r\nTo: someone@example.com\r\n\
         Subject: test message {n}\r\nDate: Tue, 14 Nov 2023 22:{:02}:00 +0000\r\n\
         Message-ID: <csync-test-{n}@example.com>\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=us-ascii\r\n\r\n",
        n % 60
    )
    .into_bytes();
    let mut line = 0u64;
    while m.len() < size {
        line += 1;
        let x = (u64::from(n) * 7919 + line * 104_729) % 1_000_003;
        m.extend_from_slice(
            format!("line {line} of message {n}: {x:07} lorem ipsum\r\n").as_bytes(),
        );
    }
    m
}

fn messages_of<'a>(dump: &'a Value, user: &str, mailbox: &str) -> &'a Vec<Value> {
    dump["users"][user]["mailboxes"][mailbox]["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no mailbox {mailbox} of {user} in the dump"))
}

fn sha1s(dump: &Value, user: &str, mailbox: &str) -> BTreeSet<String> {
    messages_of(dump, user, mailbox)
        .iter()
        .map(|m| m["sha1"].as_str().unwrap().to_owned())
        .collect()
}

fn flags_of(dump: &Value, user: &str, mailbox: &str, uid: u64) -> Vec<String> {
    messages_of(dump, user, mailbox)
        .iter()
        .find(|m| m["uid"] == uid)
        .unwrap_or_else(|| panic!("no uid {uid} in {mailbox} of {user}"))["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_owned())
        .collect()
}

fn step(t0: Instant, what: &str) {
    eprintln!("[{:6.1}s] {what}", t0.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------------
// csync master → Cyrus replica

/// Fills the csync store, phase 1: what the first `-u` sync carries.
fn fill_phase1(c: &Csync, msgs: &Path) {
    for name in [
        "user/alice",
        "user/alice/Work",
        "user/alice/Other Stuff",
        "user/alice/R&AOk-sum&AOk-",
        "user/alice/Projects",
        "user/alice/Projects/Sub",
        "user/bob",
        "user/bob/Shared",
        "user/carol",
        "user/carol/Tmp",
    ] {
        c.adm(&["create", name]);
    }
    std::fs::create_dir_all(msgs).unwrap();
    // 28 messages now (4 more in phase 2): sizes 1-20 KB, one of 200 KB.
    let plan: [(&str, u32); 9] = [
        ("user/alice", 10),
        ("user/alice/Work", 5),
        ("user/alice/Other Stuff", 2),
        ("user/alice/R&AOk-sum&AOk-", 2),
        ("user/alice/Projects", 1),
        ("user/alice/Projects/Sub", 2),
        ("user/bob", 3),
        ("user/bob/Shared", 2),
        ("user/carol/Tmp", 1),
    ];
    let mut n = 0u32;
    for (mailbox, count) in plan {
        for _ in 0..count {
            n += 1;
            let size = if n == 3 {
                200 * 1024
            } else {
                1000 + (n as usize * 733) % 20_000
            };
            let file = msgs.join(format!("{n}.eml"));
            std::fs::write(&file, message(n, size)).unwrap();
            let date = (1_700_000_000 + u64::from(n) * 3600).to_string();
            c.adm(&[
                "deliver",
                mailbox,
                file.to_str().unwrap(),
                "--internaldate",
                &date,
            ]);
        }
    }
    // The same message in two users' mailboxes (one file per mailbox on the replica,
    // one upload).
    c.adm(&["deliver", "user/bob", msgs.join("1.eml").to_str().unwrap()]);
    c.adm(&["flags", "user/alice", "1:3", "+\\Seen", "+\\Flagged"]);
    c.adm(&["flags", "user/alice", "2", "+$Label1", "+Junk"]);
    c.adm(&["flags", "user/bob", "1", "+\\Answered", "+\\Seen"]);
    c.adm(&["flags", "user/alice/Work", "1:*", "+\\Seen"]);
    c.adm(&["expunge", "user/alice", "4"]);
    c.adm(&["acl", "user/alice/Work", "bob", "lrs"]);
    c.adm(&["acl", "user/bob/Shared", "anyone", "lrs"]);
    // A negative entry (dump.py needs "r" to EXAMINE, so "s" is what carol loses).
    c.adm(&["acl", "user/bob/Shared", "-carol", "s"]);
    c.adm(&["seen", "bob", "user/alice/Work", "1:3"]);
    c.adm(&["subscribe", "alice", "user/alice"]);
    c.adm(&["subscribe", "alice", "user/alice/Work"]);
    c.adm(&["subscribe", "alice", "user/bob/Shared"]);
    c.adm(&["subscribe", "bob", "user/alice/Work"]);
    c.adm(&[
        "quota",
        "user/alice",
        "--storage",
        "100000",
        "--messages",
        "1000",
    ]);
    c.adm(&[
        "annotation",
        "user/alice/Work",
        "/shared/comment",
        "work stuff",
    ]);
    c.adm(&[
        "annotation",
        "user/alice/Work",
        "/private/comment",
        "alice's note",
        "--user",
        "alice",
    ]);
    c.adm(&["annotation", "user/bob", "/shared/comment", "bob's inbox"]);
    // Sieve scripts go to bob, who has no quota: a Cyrus replica keeps them as
    // messages of its own #sieve mailbox, which would count in a quota's usage.
    let vacation = msgs.join("vacation.sieve");
    std::fs::write(
        &vacation,
        "require [\"vacation\"];\r\nvacation :days 7 \"away\";\r\n",
    )
    .unwrap();
    let spam = msgs.join("spam.sieve");
    std::fs::write(
        &spam,
        "require [\"fileinto\"];\r\nif header :contains \"subject\" \"spam\" { fileinto \"Junk\"; }\r\n",
    )
    .unwrap();
    c.adm(&[
        "sieve",
        "bob",
        "put",
        "vacation",
        vacation.to_str().unwrap(),
        "--activate",
    ]);
    c.adm(&["sieve", "bob", "put", "spam", spam.to_str().unwrap()]);
}

/// Phase 2: changes after the first sync (new mail, flags, expunges, a rename with
/// a child, a delayed delete, a new script becoming active).
fn fill_phase2(c: &Csync, msgs: &Path) {
    for (n, mailbox) in [
        (29, "user/alice/Work"),
        (30, "user/alice/Work"),
        (31, "user/bob"),
        (32, "user/alice/Projects/Sub"),
    ] {
        let file = msgs.join(format!("{n}.eml"));
        std::fs::write(&file, message(n, 3000 + n as usize * 10)).unwrap();
        c.adm(&[
            "deliver",
            mailbox,
            file.to_str().unwrap(),
            "--flags",
            "$New",
        ]);
    }
    c.adm(&["flags", "user/alice/Work", "2", "-\\Seen", "+\\Answered"]);
    c.adm(&["flags", "user/bob", "2:*", "+\\Flagged"]);
    c.adm(&["expunge", "user/alice/Work", "1:2"]);
    c.adm(&["rename", "user/alice/Projects", "user/alice/Done"]);
    c.adm(&["subscribe", "alice", "user/alice/Done/Sub"]);
    c.adm(&["delete", "user/carol/Tmp"]);
    c.adm(&["sieve", "bob", "activate", "spam"]);
    c.adm(&["acl", "user/alice/Work", "carol", "lr"]);
}

#[test]
fn csync_master_to_cyrus_replica() {
    require_cyrus();
    let t0 = Instant::now();
    let work = Workdir::new();
    let w = work.path().to_path_buf();
    bins();
    step(t0, "start the Cyrus replica");
    let replica = Cyrus::start(w.join("replica"), "replica", &[]);
    let mut c = Csync::new(w.join("master"), replica.port("CYRUS_CSYNC_PORT"), "");
    let msgs = w.join("messages");

    step(t0, "fill the csync store (phase 1), sync -u");
    fill_phase1(&c, &msgs);
    let run = c.sync_ok(&["-u", "alice", "bob", "carol"]);
    // Cyrus offers COMPRESS, so the uploads above went through the deflate pool
    // (two or more threads on a multi-core machine) and Cyrus inflated them.
    assert!(
        run.stderr.contains("compressed=true"),
        "not compressed: {}",
        run.stderr
    );

    step(t0, "phase 2, sync -m, then -A");
    fill_phase2(&c, &msgs);
    c.sync_ok(&["-m", "user/alice/Work", "user/bob"]);
    c.sync_ok(&["-A"]);

    step(t0, "compare csyncadm dump with what Cyrus shows over IMAP");
    let csync_json = w.join("csync.json");
    let cyrus_json = w.join("cyrus.json");
    let ours = c.dump(&csync_json);
    let theirs = replica.dump(&cyrus_json);
    // `mailbox` (in `sieve` only): the Cyrus replica keeps bob's scripts in a #sieve
    // mailbox it made itself when it got APPLY SIEVE (its own uniqueid, uidvalidity and
    // counters); csync keeps them in a table, so its dump has no such block. The
    // scripts themselves (names, SHA-1, active) are compared.
    assert_same(&cyrus_json, &csync_json, &["mailbox"], "after -u, -m, -A");
    // The dumps are not trivially equal: the things this test built are in them.
    let alice = &ours["users"]["alice"]["mailboxes"];
    for name in [
        "INBOX",
        "Work",
        "Other Stuff",
        "R&AOk-sum&AOk-",
        "Done",
        "Done/Sub",
    ] {
        assert!(alice.get(name).is_some(), "alice has no {name}: {alice}");
    }
    assert!(alice.get("Projects").is_none());
    assert!(
        messages_of(&ours, "alice", "INBOX")
            .iter()
            .any(|m| m["size"].as_u64() > Some(128 * 1024))
    );
    assert_eq!(
        flags_of(&ours, "bob", "Other Users/alice/Work", 3),
        ["\\Seen"],
        "bob's seen state on alice's Work"
    );
    assert_eq!(
        ours["users"]["carol"]["mailboxes"]["Other Users/bob/Shared"]["myrights"],
        "lr"
    );
    assert_eq!(ours["users"]["bob"]["sieve"]["active"], "spam");
    let deleted = theirs["deleted"].as_array().unwrap();
    assert!(
        deleted.len() == 1
            && deleted[0]
                .as_str()
                .unwrap()
                .starts_with("DELETED.user.carol.Tmp."),
        "{deleted:?}"
    );
    let total: usize = ["alice", "bob", "carol"]
        .iter()
        .flat_map(|u| theirs["users"][u]["mailboxes"].as_object().unwrap().iter())
        .filter(|(name, _)| !name.starts_with("Other Users/"))
        .map(|(_, m)| m["messages"].as_array().map_or(0, Vec::len))
        .sum();
    assert!(total >= 25, "only {total} messages on the replica");

    step(t0, "a second run sends only GETs; --verify");
    c.assert_converged(&["-A"]);
    c.assert_converged(&["-u", "alice", "bob", "carol"]);

    step(
        t0,
        "a flag changed on the replica and on both sides (§4.7, §9.4)",
    );
    // Same modseq on both sides for uid 5 (master +$MasterFlag, replica +\Answered):
    // the master wins. Uid 6 changed on the replica only, with a higher modseq: the
    // replica's change is kept.
    replica.ctl(&[
        "--as",
        "alice",
        "store",
        "INBOX",
        "5",
        "+FLAGS",
        "\\Answered",
    ]);
    replica.ctl(&[
        "--as",
        "alice",
        "store",
        "INBOX",
        "6",
        "+FLAGS",
        "ReplicaFlag",
    ]);
    c.adm(&["flags", "user/alice", "5", "+$MasterFlag"]);
    let run = c.sync(&["--verify", "-u", "alice"]);
    assert_eq!(
        run.code,
        Some(1),
        "--verify missed the change:\n{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("DIFF alice user.alice: "),
        "{}",
        run.stdout
    );
    c.sync_ok(&["-u", "alice"]);
    let ours = c.dump(&csync_json);
    replica.dump(&cyrus_json);
    assert_same(
        &cyrus_json,
        &csync_json,
        &["mailbox"],
        "after the flag conflict",
    );
    let five = flags_of(&ours, "alice", "INBOX", 5);
    assert!(
        five.contains(&"$MasterFlag".to_owned()) && !five.contains(&"\\Answered".to_owned()),
        "{five:?}"
    );
    assert!(flags_of(&ours, "alice", "INBOX", 6).contains(&"ReplicaFlag".to_owned()));
    c.assert_converged(&["-u", "alice"]);

    step(t0, "split brain: the same uid holds different messages");
    let before = c.dump(&csync_json);
    let next_uid = before["users"]["alice"]["mailboxes"]["INBOX"]["uidnext"]
        .as_u64()
        .unwrap();
    let file = msgs.join("split.eml");
    std::fs::write(&file, message(1000, 5000)).unwrap();
    c.adm(&["deliver", "user/alice", file.to_str().unwrap()]);
    replica.ctl(&[
        "--as", "alice", "append", "INBOX", "--count", "1", "--seed", "4242",
    ]);
    let ours_before = c.dump(&csync_json);
    let theirs_before = replica.dump(&cyrus_json);
    let pick = |d: &Value| {
        messages_of(d, "alice", "INBOX")
            .iter()
            .find(|m| m["uid"] == next_uid)
            .unwrap_or_else(|| panic!("no uid {next_uid}"))["sha1"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (master_msg, replica_msg) = (pick(&ours_before), pick(&theirs_before));
    assert_ne!(master_msg, replica_msg);

    // -O: no copy-back, so no repair: a clear error and exit 1, nothing changed.
    let run = c.sync(&["-O", "-u", "alice"]);
    assert_eq!(run.code, Some(1), "sync_client -O:\n{}", run.stderr);
    assert!(
        run.stderr.contains(
            "user.alice: the replica has changes the master does not, and copy-back is off (-O)"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(
        sha1s(&c.dump(&csync_json), "alice", "INBOX"),
        sha1s(&ours_before, "alice", "INBOX")
    );
    assert_eq!(
        sha1s(&replica.dump(&cyrus_json), "alice", "INBOX"),
        sha1s(&theirs_before, "alice", "INBOX")
    );

    // Without -O: repaired as Cyrus does (§4.6), both messages kept on both sides.
    c.sync_ok(&["-u", "alice"]);
    let ours = c.dump(&csync_json);
    let theirs = replica.dump(&cyrus_json);
    assert_same(
        &cyrus_json,
        &csync_json,
        &["mailbox"],
        "after the split-brain repair",
    );
    for d in [&ours, &theirs] {
        let s = sha1s(d, "alice", "INBOX");
        assert!(s.contains(&master_msg) && s.contains(&replica_msg), "{s:?}");
        // Both got fresh uids; the contested uid is expunged on both sides.
        assert!(
            messages_of(d, "alice", "INBOX")
                .iter()
                .all(|m| m["uid"] != next_uid),
            "uid {next_uid} is still there"
        );
    }
    c.assert_converged(&["-u", "alice"]);
    c.assert_converged(&["-A"]);

    step(
        t0,
        "rolling: changes logged to the sync_log reach Cyrus with -R -1",
    );
    let mut conf = std::fs::read_to_string(&c.conf).unwrap();
    conf.push_str("sync_log: yes\nsync_repeat_interval: 0\n");
    std::fs::write(&c.conf, conf).unwrap();
    c.adm(&["create", "user/alice/Rolling"]);
    for n in 0..3 {
        let path = w.join(format!("rolling-{n}.eml"));
        std::fs::write(&path, message(900 + n, 2000)).unwrap();
        c.adm(&["deliver", "user/alice/Rolling", path.to_str().unwrap()]);
    }
    c.adm(&["flags", "user/alice/Rolling", "1", "+\\Flagged"]);
    c.adm(&["rename", "user/alice/Rolling", "user/alice/Rolled"]);
    c.adm(&["subscribe", "alice", "user/alice/Rolled"]);
    c.adm(&["quota", "user/alice", "--storage", "900000"]);
    let log = std::fs::read_to_string(c.dir.join("conf/sync/log")).unwrap();
    assert!(
        log.contains("RENAME user.alice.Rolling user.alice.Rolled"),
        "{log}"
    );
    c.sync_ok(&["-R", "-1"]);
    assert!(
        !c.dir.join("conf/sync/log").exists() && !c.dir.join("conf/sync/log-run").exists(),
        "the log file was processed and removed"
    );
    c.assert_converged(&["-A"]);
    let ours = c.dump(&csync_json);
    replica.dump(&cyrus_json);
    assert_same(
        &cyrus_json,
        &csync_json,
        &["mailbox"],
        "after rolling -R -1",
    );
    assert_eq!(messages_of(&ours, "alice", "Rolled").len(), 3);
    step(t0, "done");
}

// ---------------------------------------------------------------------------------
// Cyrus A → csync → Cyrus B

/// State built on the real master A, in two phases (the second after a first sync).
const ROUND_TRIP_PHASE1: &str = r#"adduser alice Work Archive
adduser bob Projects
adduser carol
deliver --to alice,bob,carol,alice+Work --count 20 --seed 11 --create
@alice append Archive --count 3 --seed 12 --flags "\Seen"
@bob append Projects --count 2 --seed 13
deliver --to bob --count 1 --seed 14 --min-size 140000 --max-size 150000
@alice store INBOX 1:3 +FLAGS \Seen \Flagged
@alice store INBOX 2 +FLAGS $Label1 Junk
@bob store INBOX 1:* +FLAGS \Seen
@carol store INBOX 1:* FLAGS \Answered
@alice expunge INBOX 4
@alice create "Work/Sub Folder" "R&AOk-sum&AOk-"
@carol create Tmp
@alice subscribe INBOX Work "Work/Sub Folder"
@bob subscribe INBOX Projects
@alice setacl Work bob lrsw
@alice setacl INBOX carol lr
setquota user/alice STORAGE 500000 MESSAGE 1000
@alice setmeta INBOX /shared/comment "alice's inbox"
@alice setmeta Work /private/comment "private note"
@bob store "Other Users/alice/Work" 1:3 +FLAGS \Seen
@alice sieve-put main --text 'require ["fileinto"];\nif header :contains "subject" "zzz" { fileinto "Work"; }\n'
@alice sieve-activate main
"#;

const ROUND_TRIP_PHASE2: &str = r#"deliver --to alice,bob+Projects --count 4 --seed 21
@alice rename Work Office
@alice store Office 1:2 +FLAGS \Deleted
@alice expunge Office 1
@carol delete Tmp
@bob setmeta Projects /shared/comment "projects"
@alice sieve-put second --text 'keep;\n'
"#;

#[test]
fn cyrus_to_csync_to_cyrus_round_trip() {
    require_cyrus();
    let t0 = Instant::now();
    let work = Workdir::new();
    let w = work.path().to_path_buf();
    bins();
    step(
        t0,
        "start csync's sync_server, Cyrus B (replica) and Cyrus A (master)",
    );
    let b = Cyrus::start(w.join("B"), "replica", &[]);
    // The csync store is the replica of A and the master of B: one imapd.conf.
    let mut mid = Csync::new(
        w.join("csync"),
        b.port("CYRUS_CSYNC_PORT"),
        "admins: repluser\nallowplaintext: yes\nsasl_mech_list: PLAIN LOGIN\n",
    );
    // (csyncadm passwd does not create the configuration directory.)
    std::fs::create_dir_all(mid.dir.join("conf")).unwrap();
    run_stdin(
        Command::new(&bins().csyncadm)
            .arg("-C")
            .arg(&mid.conf)
            .args(["passwd", "-p", "repluser"]),
        b"secret\n",
        "csyncadm passwd",
    );
    let server = CsyncServer::start(&mid.conf, &w.join("csync/sync_server.log"));
    let a = Cyrus::start(
        w.join("A"),
        "master",
        &["--sync-port", &server.port.to_string()],
    );

    step(t0, "A: phase 1, Cyrus sync_client -u into csync");
    a.script(ROUND_TRIP_PHASE1);
    run_ok(
        kit("sync.sh")
            .arg(&a.dir)
            .args(["-u", "alice", "bob", "carol"]),
        "sync.sh -u",
    );
    step(
        t0,
        "csync → B without SIEVE-MAILBOX: the #sieve mailbox is left out",
    );
    // A Cyrus replica refuses a #sieve mailbox unless SIEVE-MAILBOX was enabled
    // (NO IMAP_PROTOCOL_BAD_PARAMETERS, which used to fail the whole user).
    let nosieve = mid.dir.join("imapd-nosieve.conf");
    let text = std::fs::read_to_string(&mid.conf).unwrap();
    std::fs::write(&nosieve, text + "csync_sieve_mailbox: no\n").unwrap();
    let main_conf = std::mem::replace(&mut mid.conf, nosieve);
    mid.sync_ok(&["-u", "alice"]);
    let run = mid.sync(&["--verify", "-u", "alice"]);
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert!(!run.stdout.contains("#sieve"), "{}", run.stdout);
    mid.conf = main_conf;

    step(
        t0,
        "csync → B: -u (csync_sieve_mailbox: auto, so with SIEVE-MAILBOX)",
    );
    mid.sync_ok(&["-u", "alice", "bob", "carol"]);

    step(
        t0,
        "A: phase 2, Cyrus sync_client -A into csync; csync → B: -A",
    );
    a.script(ROUND_TRIP_PHASE2);
    run_ok(kit("sync.sh").arg(&a.dir).arg("-A"), "sync.sh -A");
    mid.sync_ok(&["-A"]);

    step(t0, "compare A, B and the csync store");
    let a_json = w.join("A.json");
    let b_json = w.join("B.json");
    let mid_json = w.join("csync.json");
    let a_dump = a.dump(&a_json);
    b.dump(&b_json);
    mid.dump(&mid_json);
    assert_same(&a_json, &b_json, &[], "Cyrus A and Cyrus B");
    assert_same(&a_json, &mid_json, &[], "Cyrus A and the csync store");
    // Not trivially equal: what A holds is there.
    assert!(
        a_dump["users"]["alice"]["mailboxes"]
            .get("Office")
            .is_some()
    );
    assert!(
        a_dump["users"]["alice"]["sieve"]["scripts"]
            .get("second")
            .is_some()
    );
    assert_eq!(a_dump["deleted"].as_array().map(Vec::len), Some(1));

    step(t0, "a second run sends only GETs; --verify");
    mid.assert_converged(&["-A"]);
    drop(server);
    step(t0, "done");
}
