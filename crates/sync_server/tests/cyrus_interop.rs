//! The real Cyrus IMAPd 3.6 `sync_client` (Debian's, in /usr/lib/cyrus/bin) against
//! csync's `sync_server`: a real Cyrus master, started and driven with the toolkit in
//! tests/cyrus, replicates into csync in every sync_client mode (`-u`, `-m` with
//! external names, `-A`, `-R -1`, rolling `-R`, `-z`), compressed, uncompressed and
//! over STARTTLS, and repairs a change made on the replica (spec §4.6, §9.4).
//!
//! After every replication:
//! * a second identical run of the Cyrus client sends nothing but GET / RESTART /
//!   EXIT (Cyrus's own proof that every mailbox header, ACL, annotation, quota,
//!   subscription, seen record and both CRCs match);
//! * `Store::verify` with hashing is clean;
//! * the master's `dump.py` state is compared field by field with csync's store;
//! * a recording proxy between the two shows the transport really was compressed,
//!   plain or TLS.
//!
//! Cyrus missing is a failure (with the apt-get line), never a skip. On failure (or
//! with KEEP=1) the work directory is kept and named: the Cyrus log, every sync run's
//! `--trace` log, the master dumps and our server's log are in it. The summary (counts
//! compared and wall time of each sync run per phase) shows with `--nocapture`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use csync_mailstore::local::{FlagOp, Flags};
use csync_mailstore::{Mailbox, Store, StoreConfig};
use csync_protocol::compress::Inflater;
use csync_protocol::mailbox::SystemFlags;
use serde_json::Value;
use sha1::{Digest, Sha1};

const APT_LINE: &str = "apt-get install -y --no-install-recommends cyrus-imapd cyrus-common \
    cyrus-replication cyrus-clients sasl2-bin libsasl2-modules openssl python3 gcc libc6-dev";

/// Annotations dump.py leaves out (server-computed, see its IGNORED_ANNOTATIONS).
const IGNORED_ANNOTATIONS: [&str; 13] = [
    "uniqueid",
    "synccrcs",
    "size",
    "partition",
    "server",
    "lastupdate",
    "lastpop",
    "foldermodseq",
    "annotsize",
    "hasalarms",
    "pop3newuidl",
    "sharedseen",
    "duplicatedeliver",
];

// ---------------------------------------------------------------------------------
// What users do on the master, phase by phase (cyrusctl.py script syntax).

/// Before `-u`: 3 users, 32 messages (LMTP, APPEND, COPY; two above 128 KiB), folders
/// with a space, a dot and non-ASCII (modified UTF-7) in their names, system flags and
/// keywords, expunges, a rename with a child, a delayed delete, subscriptions, ACLs,
/// quotas, shared and private annotations, bob's seen state on alice's folder, an
/// active sieve script (the #sieve mailbox with SIEVE-MAILBOX).
const CHANGES_U: &str = r#"
adduser alice Work Archive.2024
adduser bob Projects Projects/Q1
adduser carol
deliver --to alice,bob,carol,alice+Work --count 20 --seed 7 --max-size 60000 --create
deliver --to bob,alice --count 2 --seed 21 --min-size 140000 --max-size 190000
@alice append Archive.2024 --count 3 --seed 8 --flags "\Seen"
@bob append Projects/Q1 --count 3 --seed 9
@alice create "Work/Sub Folder" "Entw&APw-rfe"
@alice append "Entw&APw-rfe" --count 2 --seed 12 --flags "\Draft"
@alice copy INBOX 1:2 Archive.2024
@alice store INBOX 1:3 +FLAGS \Seen \Flagged
@alice store INBOX 2 +FLAGS $Label1 Junk
@bob store INBOX 1:* +FLAGS \Seen
@bob store INBOX 2 -FLAGS \Seen
@carol store INBOX 1:* FLAGS \Answered $Forwarded
@alice expunge INBOX 4
@bob expunge INBOX 1:2
@bob rename Projects Projects-old
@carol create Tmp
@carol delete Tmp
@alice subscribe INBOX Work "Work/Sub Folder" Archive.2024 "Entw&APw-rfe"
@bob subscribe INBOX Projects-old/Q1
@alice setacl Work bob lrsw
@alice setacl INBOX carol lr
setquota user/alice STORAGE 500000 MESSAGE 1000
setquota user/bob STORAGE 100000
@alice setmeta INBOX /shared/comment "alice's inbox"
@alice setmeta Work /private/comment "private note"
@bob store "Other Users/alice/Work" 1:3 +FLAGS \Seen
@alice sieve-put main --text 'require ["fileinto"];\nif header :contains "subject" "zzz" { fileinto "Work"; }\n'
@alice sieve-activate main
"#;

/// Before `-m`: changes inside the mailboxes named on the command line only.
const CHANGES_M: &str = r#"
deliver --to alice+Work,bob --count 4 --seed 30 --start 50
@alice store Work 1:2 +FLAGS \Answered $Done
@alice store "Entw&APw-rfe" 1 -FLAGS \Draft
@alice store "Entw&APw-rfe" 2 +FLAGS \Deleted
@alice expunge Work 3
@alice setacl "Work/Sub Folder" carol lrs
@alice setmeta Work /shared/comment "work stuff"
@alice setmeta "Work/Sub Folder" /private/comment "sub note"
@bob store INBOX 3 +FLAGS \Flagged
"#;

/// Before `-A` (uncompressed): a new user, a large message, MOVE, a rename with a
/// child, a folder delete, ACL removal, quotas, subscriptions, seen, a sieve script
/// that is not active.
const CHANGES_A: &str = r#"
adduser dave Notes
deliver --to carol,bob,dave --count 5 --seed 40 --start 100 --max-size 40000
deliver --to dave --count 1 --seed 41 --min-size 150000 --max-size 180000
@carol store INBOX 1 +FLAGS \Seen
@bob rename Projects-old Projects-2
@alice create Trash
@alice move INBOX 5 Trash
@alice delete Trash
@carol setmeta INBOX /private/comment "carol was here"
@alice deleteacl INBOX carol
setquota user/carol MESSAGE 50
setquota user/dave STORAGE 1000
@dave subscribe INBOX Notes
@bob unsubscribe INBOX
@bob store "Other Users/alice/Work" 4 +FLAGS \Seen
@bob sieve-put vacation --text 'require ["vacation"];\nvacation :days 3 "away";\n'
"#;

/// Before `-R -1` (TLS): the accumulated sync log is replayed as well. (`delquota`
/// keeps the root without limits: Cyrus sends `APPLY QUOTA` with no resource.)
const CHANGES_R1: &str = r#"
deliver --to alice,dave --count 2 --seed 50 --start 300
@alice store INBOX 1 -FLAGS \Flagged
setquota user/bob STORAGE 200000 MESSAGE 300
delquota user/dave
@alice setmeta Work /shared/comment NIL
@dave create "Notes/Sub.Dot"
@dave append "Notes/Sub.Dot" --count 1 --seed 51
@dave subscribe "Notes/Sub.Dot"
"#;

/// While the rolling client runs (TLS): a user deletion among others.
const CHANGES_ROLLING: &str = r#"
deliver --to alice,bob --count 2 --seed 11 --start 200
@alice store INBOX 1:* +FLAGS $Rolling
@alice expunge Work 1
@bob unsubscribe Projects-2/Q1
@alice sieve-put second --text 'keep;\n'
@alice sieve-activate second
@alice setmeta INBOX /shared/comment NIL
deluser carol
"#;

/// Before `-z -A`.
const CHANGES_Z: &str = r#"
deliver --to alice,bob,dave --count 3 --seed 60 --start 400
@dave store INBOX 1:* +FLAGS \Seen
@bob store INBOX 1 +FLAGS $Final
"#;

// ---------------------------------------------------------------------------------
// The toolkit, Cyrus, our server.

fn kit(script: &str) -> Command {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/cyrus");
    Command::new(dir.join(script))
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}

/// Fails (never skips) when the real Cyrus or a tool the toolkit needs is missing.
fn require_cyrus() {
    let bin = std::env::var_os("CYRUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/cyrus/bin"));
    let mut missing: Vec<String> = [
        "master",
        "imapd",
        "lmtpd",
        "timsieved",
        "ctl_cyrusdb",
        "sync_client",
    ]
    .iter()
    .map(|p| bin.join(p))
    .filter(|p| !p.is_file())
    .map(|p| p.display().to_string())
    .collect();
    if !on_path("saslpasswd2") && !Path::new("/usr/sbin/saslpasswd2").is_file() {
        missing.push("saslpasswd2".into());
    }
    for tool in ["python3", "openssl"] {
        if !on_path(tool) {
            missing.push(tool.into());
        }
    }
    assert!(
        missing.is_empty(),
        "Cyrus IMAPd 3.6 is not installed (missing: {}). This test needs the real Cyrus \
         and does not skip. Install it with:\n  {APT_LINE}\n(or set CYRUS_BIN to the \
         directory holding master/imapd/sync_client)",
        missing.join(" ")
    );
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The work directory: Cyrus (user cyrus) must be able to enter it. Removed at the
/// end unless the test failed (then its path is printed) or KEEP=1.
#[derive(Debug)]
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn new() -> WorkDir {
        let path = tempfile::Builder::new()
            .prefix("csync-cyrus-interop.")
            .tempdir_in("/tmp")
            .unwrap()
            .keep();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        WorkDir { path }
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("KEEP").is_some_and(|v| v == "1") {
            eprintln!(
                "cyrus_interop: work directory kept: {} (master/log: Cyrus log and sync \
                 runs; csync/server.log: our server)",
                self.path.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// Our sync_server on a free loopback port; stopped (SIGTERM, then SIGKILL) on drop.
#[derive(Debug)]
struct CsyncServer {
    child: Child,
    _stdout: ChildStdout,
    port: u16,
}

impl CsyncServer {
    /// Writes `<root>/<name>.conf` (defaults, with `extra` lines replacing a default
    /// with the same key) and starts the server with it.
    fn start(root: &Path, name: &str, extra: &[String]) -> CsyncServer {
        let mut lines = vec![
            format!("configdirectory: {}/conf", root.display()),
            format!("partition-default: {}/spool", root.display()),
            "servername: csync-replica.test".to_owned(),
            "admins: repluser".to_owned(),
            "allowplaintext: yes".to_owned(),
            "failedloginpause: 0".to_owned(),
            "altnamespace: yes".to_owned(),
            "unixhierarchysep: yes".to_owned(),
        ];
        for e in extra {
            let key = e.split(':').next().unwrap_or_default();
            lines.retain(|l| l.split(':').next() != Some(key));
            lines.push(e.clone());
        }
        let conf = root.join(format!("{name}.conf"));
        std::fs::write(&conf, lines.join("\n") + "\n").unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.join("server.log"))
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_sync_server"))
            .arg("-C")
            .arg(&conf)
            .args(["--listen", "127.0.0.1:0", "-v"])
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while stdout.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        let line = String::from_utf8_lossy(&line).into_owned();
        let port = line
            .strip_prefix("sync_server: listening on ")
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "sync_server did not start ({line:?}); see {}",
                    root.join("server.log").display()
                )
            });
        CsyncServer {
            child,
            _stdout: stdout,
            port,
        }
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

/// A Cyrus master instance; `cyrus-instance.sh stop` on drop (it also stops a rolling
/// sync_client).
#[derive(Debug)]
struct CyrusMaster {
    dir: PathBuf,
}

impl CyrusMaster {
    fn start(dir: &Path, sync_port: u16) -> CyrusMaster {
        let out = kit("cyrus-instance.sh")
            .arg("start")
            .arg(dir)
            .args(["master", "auto", "--sync-port", &sync_port.to_string()])
            .output()
            .unwrap();
        let master = CyrusMaster {
            dir: dir.to_owned(),
        };
        assert!(
            out.status.success(),
            "cyrus-instance.sh start failed:\n{}\n(if Cyrus is missing: {APT_LINE})",
            output_text(&out)
        );
        master
    }
}

impl Drop for CyrusMaster {
    fn drop(&mut self) {
        if self.dir.join("instance.env").exists() {
            let _ = kit("cyrus-instance.sh")
                .arg("stop")
                .arg(&self.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

// ---------------------------------------------------------------------------------
// A recording proxy between Cyrus's sync_client and our server: the bytes prove which
// transport was used, independently of what either side logs.

const WIRE_CAP: usize = 256 * 1024;

/// The first bytes of both directions of one connection.
#[derive(Debug, Default, Clone)]
struct Wire {
    /// Client to server.
    up: Vec<u8>,
    /// Server to client.
    down: Vec<u8>,
}

type Wires = Arc<Mutex<Vec<Arc<Mutex<Wire>>>>>;

#[derive(Debug)]
struct Proxy {
    port: u16,
    target: Arc<AtomicU16>,
    wires: Wires,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let target = Arc::new(AtomicU16::new(0));
        let wires: Wires = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (t, w, s) = (target.clone(), wires.clone(), stop.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                // When our server is down the client sees a closed connection.
                let Ok(server) = TcpStream::connect(("127.0.0.1", t.load(Ordering::SeqCst))) else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let wire = Arc::new(Mutex::new(Wire::default()));
                w.lock().unwrap().push(wire.clone());
                pump(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    wire.clone(),
                    true,
                );
                pump(server, client, wire, false);
            }
        });
        Proxy {
            port,
            target,
            wires,
            stop,
        }
    }

    fn count(&self) -> usize {
        self.wires.lock().unwrap().len()
    }

    fn since(&self, first: usize) -> Vec<Wire> {
        self.wires.lock().unwrap()[first..]
            .iter()
            .map(|w| w.lock().unwrap().clone())
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, wire: Arc<Mutex<Wire>>, up: bool) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            {
                let mut w = wire.lock().unwrap();
                let side = if up { &mut w.up } else { &mut w.down };
                let room = WIRE_CAP.saturating_sub(side.len());
                side.extend_from_slice(&buf[..n.min(room)]);
            }
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    Compressed,
    Plain,
    Tls,
}

/// The greeting lines (up to `* OK`) at the start of `down`.
fn greeting(down: &[u8]) -> Vec<String> {
    let mut lines = Vec::new();
    for line in down.split(|&b| b == b'\n') {
        let l = String::from_utf8_lossy(line).trim_end().to_owned();
        let done = l.starts_with("* OK");
        lines.push(l);
        if done {
            break;
        }
    }
    lines
}

/// Checks one connection used `expect`.
fn check_wire(w: &Wire, expect: Transport) -> Result<(), String> {
    let greet = greeting(&w.down);
    let has = |l: &str| greet.iter().any(|g| g == l);
    let fail = |what: &str| Err(format!("{what}; greeting {greet:?}"));
    match expect {
        Transport::Compressed => {
            if !has("* COMPRESS DEFLATE") {
                return fail("COMPRESS not offered");
            }
            let Some(pos) = find(&w.up, b"COMPRESS DEFLATE\r\n") else {
                return fail("the client did not send COMPRESS DEFLATE");
            };
            if find(&w.up[..pos], b"AUTHENTICATE ").is_none() {
                return fail("no AUTHENTICATE before COMPRESS");
            }
            if find(&w.down, b"\r\nOK DEFLATE active\r\n").is_none() {
                return fail("the server did not activate DEFLATE");
            }
            let compressed = &w.up[pos + 18..];
            if find(compressed, b"APPLY CAPABILITIES").is_some() {
                return fail("commands after COMPRESS travel in clear");
            }
            let mut plain = Vec::new();
            Inflater::new()
                .decompress(compressed, &mut plain)
                .map_err(|e| format!("client stream after COMPRESS is not raw DEFLATE: {e}"))?;
            if find(&plain, b"APPLY CAPABILITIES (SIEVE-MAILBOX)\r\n").is_none() {
                return Err(format!(
                    "inflated client stream lacks APPLY CAPABILITIES: {:?}",
                    String::from_utf8_lossy(&plain[..plain.len().min(200)])
                ));
            }
            Ok(())
        }
        Transport::Plain => {
            if greet.iter().any(|g| g.starts_with("* COMPRESS")) {
                return fail("COMPRESS offered with csync_compress: no");
            }
            if find(&w.up, b"COMPRESS").is_some() {
                return fail("the client sent COMPRESS");
            }
            if find(&w.up, b"AUTHENTICATE ").is_none()
                || find(&w.up, b"APPLY CAPABILITIES (SIEVE-MAILBOX)\r\n").is_none()
            {
                return fail("commands not readable in clear");
            }
            Ok(())
        }
        Transport::Tls => {
            if !has("* STARTTLS") || greet.iter().any(|g| g.starts_with("* SASL")) {
                return fail("expected STARTTLS and no SASL mechanism before TLS");
            }
            if !w.up.starts_with(b"STARTTLS\r\n") || w.up.get(10) != Some(&0x16) {
                return fail("the client did not start with STARTTLS and a TLS handshake");
            }
            let Some(pos) = find(&w.down, b"\r\nOK Begin TLS negotiation now\r\n") else {
                return fail("the server did not begin TLS");
            };
            if w.down.get(pos + 32) != Some(&0x16) {
                return fail("no TLS handshake record after OK Begin TLS negotiation now");
            }
            for clear in [
                &b"AUTHENTICATE"[..],
                b"COMPRESS DEFLATE\r\n",
                b"GET ",
                b"APPLY ",
            ] {
                if find(&w.up[10..], clear).is_some() {
                    return fail("readable commands inside the TLS session");
                }
            }
            Ok(())
        }
    }
}

// ---------------------------------------------------------------------------------
// Running the Cyrus client and reading its trace.

#[derive(Debug)]
struct SyncRun {
    log: PathBuf,
    /// The first line of every command the client sent (`>TIME>COMMAND` in the trace).
    sent: Vec<String>,
    secs: f64,
}

impl SyncRun {
    fn sent_starting(&self, prefix: &str) -> usize {
        self.sent.iter().filter(|s| s.starts_with(prefix)).count()
    }

    fn changes(&self) -> Vec<&String> {
        self.sent
            .iter()
            .filter(|s| !(s.starts_with("GET ") || s.as_str() == "RESTART" || s.as_str() == "EXIT"))
            .collect()
    }
}

/// `>1795306916>GET USER alice` lines: what the client sent. Every command starts a
/// flush (the client never pipelines), so every command's first line has the prefix;
/// later chunks of a long command (message bodies) have it too, but only follow an
/// APPLY.
fn parse_sent(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix('>')?;
            let (stamp, cmd) = rest.split_once('>')?;
            (!stamp.is_empty() && stamp.bytes().all(|b| b.is_ascii_digit())).then(|| cmd.to_owned())
        })
        .collect()
}

#[derive(Debug, Default)]
struct PhaseSummary {
    phase: String,
    runs: Vec<(String, f64)>,
    users: usize,
    mailboxes: usize,
    messages: usize,
    connections: usize,
}

// ---------------------------------------------------------------------------------
// The comparison of dump.py's view of the master with csync's store.

#[derive(Debug, Default)]
struct Counts {
    users: usize,
    mailboxes: usize,
    messages: usize,
    noselect: usize,
    large_messages: usize,
}

/// A user-view name (altnamespace, unixhierarchysep) as the internal name.
fn internal_name(viewer: &str, view: &str) -> String {
    let comp = |c: &str| c.replace('.', "^");
    let (mut name, rest): (String, Option<&str>) = if view == "INBOX" {
        (format!("user.{}", comp(viewer)), None)
    } else if let Some(r) = view.strip_prefix("Other Users/") {
        let (owner, rest) = match r.split_once('/') {
            Some((o, rest)) => (o, Some(rest)),
            None => (r, None),
        };
        (format!("user.{}", comp(owner)), rest)
    } else if let Some(r) = view.strip_prefix("Shared Folders/") {
        return r.split('/').map(comp).collect::<Vec<_>>().join(".");
    } else {
        (format!("user.{}", comp(viewer)), Some(view))
    };
    for part in rest.into_iter().flat_map(|r| r.split('/')) {
        name.push('.');
        name.push_str(&comp(part));
    }
    name
}

fn owner_of(name: &str) -> Option<&str> {
    name.strip_prefix("user.")?.split('.').next()
}

fn is_sieve(m: &Mailbox) -> bool {
    m.state
        .mboxtype
        .as_deref()
        .is_some_and(|t| t.starts_with('f'))
}

/// `1:3,5` → {1,2,3,5}.
fn uid_set(seq: &str) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    for part in seq.split(',').filter(|p| !p.is_empty()) {
        let (a, b) = part.split_once(':').unwrap_or((part, part));
        let (a, b): (u32, u32) = (a.parse().unwrap(), b.parse().unwrap());
        out.extend(a.min(b)..=a.max(b));
    }
    out
}

/// `id TAB rights TAB ...` as a map.
fn acl_map(acl: &str) -> BTreeMap<String, String> {
    let parts: Vec<&str> = acl.split('\t').filter(|p| !p.is_empty()).collect();
    parts
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| (c[0].to_owned(), c[1].to_owned()))
        .collect()
}

fn num(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not a number in the dump: {v}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Compares the master's dump with csync's store; every difference is collected.
fn compare(store: &Store, dump: &Value) -> Result<Counts, Vec<String>> {
    let mut diffs = Vec::new();
    let mut counts = Counts::default();
    let users = dump["users"].as_object().expect("dump without users");

    let dump_users: BTreeSet<&str> = users.keys().map(String::as_str).collect();
    let our_users: BTreeSet<String> = store
        .users()
        .unwrap()
        .into_iter()
        .filter(|u| {
            store
                .mailbox(&format!("user.{u}"))
                .unwrap()
                .is_some_and(|m| m.is_real())
        })
        .collect();
    let our_users_ref: BTreeSet<&str> = our_users.iter().map(String::as_str).collect();
    if dump_users != our_users_ref {
        diffs.push(format!(
            "users: master {dump_users:?}, csync {our_users_ref:?}"
        ));
    }

    for (user, u) in users {
        counts.users += 1;
        let mut own = BTreeSet::new();
        for (view, mb) in u["mailboxes"].as_object().expect("mailboxes") {
            let name = internal_name(user, view);
            if owner_of(&name) == Some(user.as_str()) {
                own.insert(name.clone());
            }
            compare_mailbox(store, user, view, &name, mb, &mut diffs, &mut counts);
        }
        let ours: BTreeSet<String> = store
            .user_mailboxes(user)
            .unwrap()
            .into_iter()
            .filter(|m| !m.is_tombstone() && !is_sieve(m) && !m.name().starts_with("DELETED."))
            .map(|m| m.name().to_owned())
            .collect();
        if ours != own {
            diffs.push(format!("{user}: mailboxes: master {own:?}, csync {ours:?}"));
        }

        let want: BTreeSet<String> = strings(&u["subscriptions"])
            .iter()
            .map(|s| internal_name(user, s))
            .collect();
        // LSUB leaves out subscriptions of mailboxes that do not exist (a Cyrus RENAME
        // leaves the old name subscribed): the full list is what the second run's
        // GET USER already compared (no APPLY SUB/UNSUB).
        let have: BTreeSet<String> = store
            .subscriptions(user)
            .unwrap()
            .into_iter()
            .filter(|s| store.mailbox(s).unwrap().is_some_and(|m| m.is_real()))
            .collect();
        if want != have {
            diffs.push(format!(
                "{user}: subscriptions: master {want:?}, csync {have:?}"
            ));
        }

        let quota = u["quota"].as_object().expect("quota");
        for (root_view, resources) in quota {
            let root = internal_name(user, root_view);
            let want: BTreeMap<String, u64> = resources
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), num(&v[1])))
                .collect();
            let Some(q) = store.quota(&root).unwrap() else {
                diffs.push(format!("{user}: quota root {root} missing"));
                continue;
            };
            let have: BTreeMap<String, u64> = [
                ("STORAGE", q.storage),
                ("MESSAGE", q.message),
                ("X-ANNOTATION-STORAGE", q.annotation_storage),
                ("X-NUM-FOLDERS", q.num_folders),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_owned(), u64::from(v))))
            .collect();
            if want != have {
                diffs.push(format!(
                    "{user}: quota {root}: master {want:?}, csync {have:?}"
                ));
            }
        }
        // A root the master no longer has must be gone here too.
        let own_root = internal_name(user, "INBOX");
        let listed: BTreeSet<String> = quota.keys().map(|r| internal_name(user, r)).collect();
        if store.quota(&own_root).unwrap().is_some() && !listed.contains(&own_root) {
            diffs.push(format!(
                "{user}: csync has quota root {own_root}, the master none"
            ));
        }

        compare_sieve(store, user, &u["sieve"], &mut diffs);
    }

    if let Some(deleted) = dump.get("deleted") {
        let want: BTreeSet<String> = strings(deleted).into_iter().collect();
        let mut have = BTreeSet::new();
        store
            .for_each_mailbox(Some("DELETED."), |m| {
                if m.name().starts_with("DELETED.") && !m.is_tombstone() {
                    have.insert(m.name().to_owned());
                }
                Ok(())
            })
            .unwrap();
        if want != have {
            diffs.push(format!(
                "DELETED mailboxes: master {want:?}, csync {have:?}"
            ));
        }
    }

    if diffs.is_empty() {
        Ok(counts)
    } else {
        Err(diffs)
    }
}

#[allow(clippy::too_many_arguments)]
fn compare_mailbox(
    store: &Store,
    viewer: &str,
    view: &str,
    name: &str,
    mb: &Value,
    diffs: &mut Vec<String>,
    counts: &mut Counts,
) {
    let what = format!("{viewer}: {view:?} ({name})");
    if mb.get("noselect").and_then(Value::as_bool) == Some(true) {
        counts.noselect += 1;
        return;
    }
    let m = match store.mailbox(name).unwrap() {
        Some(m) if m.is_real() => m,
        other => {
            diffs.push(format!("{what}: not in csync's store ({other:?})"));
            return;
        }
    };
    counts.mailboxes += 1;
    let s = &m.state;
    let mut field = |key: &str, ours: u64| {
        let theirs = num(&mb[key]);
        if theirs != ours {
            diffs.push(format!("{what}: {key}: master {theirs}, csync {ours}"));
        }
    };
    field("uidvalidity", u64::from(s.uidvalidity));
    field("uidnext", u64::from(s.last_uid) + 1);
    field("highestmodseq", s.highestmodseq);
    if mb["mailboxid"].as_str() != Some(s.uniqueid.as_str()) {
        diffs.push(format!(
            "{what}: mailboxid: master {}, csync {}",
            mb["mailboxid"], s.uniqueid
        ));
    }
    if let Some(acl) = mb.get("acl").and_then(Value::as_object) {
        let want: BTreeMap<String, String> = acl
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
        let have = acl_map(&s.acl);
        if want != have {
            diffs.push(format!("{what}: acl: master {want:?}, csync {have:?}"));
        }
    }

    // Annotations as the viewer sees them: shared ones and the viewer's private ones.
    let want: BTreeMap<String, String> = mb["annotations"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect();
    let have: BTreeMap<String, String> = store
        .mailbox_annotations(m.id)
        .unwrap()
        .into_iter()
        .filter_map(|a| {
            let scope = match a.userid.as_str() {
                "" => "/shared",
                u if u == viewer => "/private",
                _ => return None,
            };
            let ignored = IGNORED_ANNOTATIONS
                .iter()
                .any(|i| a.entry == format!("/vendor/cmu/cyrus-imapd/{i}"));
            (!ignored).then(|| {
                (
                    format!("{scope}{}", a.entry),
                    String::from_utf8_lossy(a.value.as_ref()).into_owned(),
                )
            })
        })
        .collect();
    if want != have {
        diffs.push(format!(
            "{what}: annotations: master {want:?}, csync {have:?}"
        ));
    }

    let want_roots: Vec<String> = strings(&mb["quotaroots"])
        .iter()
        .map(|r| internal_name(viewer, r))
        .collect();
    let have_roots: Vec<String> = s.quotaroot.iter().cloned().collect();
    if want_roots != have_roots {
        diffs.push(format!(
            "{what}: quotaroots: master {want_roots:?}, csync {have_roots:?}"
        ));
    }

    // Records. \Seen is the owner's record flag, or the viewer's seen state.
    let owner = owner_of(name) == Some(viewer);
    let seen: BTreeSet<u32> = if owner {
        BTreeSet::new()
    } else {
        store
            .seen(viewer)
            .unwrap()
            .into_iter()
            .find(|r| r.uniqueid == s.uniqueid)
            .map(|r| uid_set(&r.seenuids))
            .unwrap_or_default()
    };
    let mut ours = Vec::new();
    store
        .for_each_record(m.id, 0, |r| {
            if !r.record.is_expunged() {
                ours.push(r.record);
            }
            Ok(())
        })
        .unwrap();
    let theirs = mb["messages"].as_array().unwrap();
    field_usize(
        diffs,
        &what,
        "exists",
        num(&mb["exists"]),
        ours.len() as u64,
    );
    let their_uids: Vec<u64> = theirs.iter().map(|t| num(&t["uid"])).collect();
    let our_uids: Vec<u64> = ours.iter().map(|r| u64::from(r.uid)).collect();
    if their_uids != our_uids {
        diffs.push(format!(
            "{what}: uids: master {their_uids:?}, csync {our_uids:?}"
        ));
        return;
    }
    for (t, r) in theirs.iter().zip(&ours) {
        counts.messages += 1;
        let uid = r.uid;
        let mut flags: Vec<String> = SystemFlags::ALL
            .iter()
            .filter(|(f, _)| {
                *f != SystemFlags::EXPUNGED
                    && *f != SystemFlags::SEEN
                    && r.system_flags.contains(*f)
            })
            .map(|(_, n)| (*n).to_owned())
            .collect();
        let is_seen = if owner {
            r.system_flags.contains(SystemFlags::SEEN)
        } else {
            seen.contains(&uid)
        };
        if is_seen {
            flags.push("\\Seen".into());
        }
        flags.extend(r.user_flags.iter().cloned());
        flags.sort();
        let want_flags = strings(&t["flags"]);
        if want_flags != flags {
            diffs.push(format!(
                "{what} uid {uid}: flags: master {want_flags:?}, csync {flags:?}"
            ));
        }
        let mut f = |key: &str, ours: u64| {
            field_usize(diffs, &format!("{what} uid {uid}"), key, num(&t[key]), ours)
        };
        f("internaldate", r.internaldate);
        f("size", u64::from(r.size));
        f("modseq", r.modseq);
        if t["sha1"].as_str() != Some(r.guid.to_string().as_str()) {
            diffs.push(format!(
                "{what} uid {uid}: sha1: master {}, csync GUID {}",
                t["sha1"], r.guid
            ));
        }
        if r.size > 128 * 1024 {
            counts.large_messages += 1;
        }
    }
}

fn field_usize(diffs: &mut Vec<String>, what: &str, key: &str, theirs: u64, ours: u64) {
    if theirs != ours {
        diffs.push(format!("{what}: {key}: master {theirs}, csync {ours}"));
    }
}

/// The #sieve mailbox (3.6 keeps the scripts there as messages; the active one is
/// \Flagged; each message's Subject is the script name and its body the script).
fn compare_sieve(store: &Store, user: &str, sieve: &Value, diffs: &mut Vec<String>) {
    let name = format!("user.{user}.#sieve");
    let m = store.mailbox(&name).unwrap().filter(Mailbox::is_real);
    let (want, m) = match (sieve.as_object(), m) {
        (None, None) => return,
        (Some(want), Some(m)) => (want, m),
        (want, m) => {
            diffs.push(format!(
                "{user}: #sieve: master {want:?}, csync {:?}",
                m.map(|m| m.state)
            ));
            return;
        }
    };
    let mb = &want["mailbox"];
    let count = store.message_count(m.id).unwrap();
    let s = &m.state;
    for (key, ours) in [
        ("exists", count),
        ("uidnext", u64::from(s.last_uid) + 1),
        ("uidvalidity", u64::from(s.uidvalidity)),
        ("highestmodseq", s.highestmodseq),
    ] {
        field_usize(diffs, &format!("{user}: #sieve"), key, num(&mb[key]), ours);
    }
    if mb["mailboxid"].as_str() != Some(s.uniqueid.as_str()) {
        diffs.push(format!("{user}: #sieve mailboxid differs"));
    }
    // The scripts themselves, from the message files.
    let mut scripts = BTreeMap::new();
    let mut active = None;
    let mut records = Vec::new();
    store
        .for_each_record(m.id, 0, |r| {
            if !r.record.is_expunged() {
                records.push(r.record);
            }
            Ok(())
        })
        .unwrap();
    for r in records {
        let bytes = std::fs::read(store.message_path(&m, r.uid).unwrap()).unwrap();
        let split = find(&bytes, b"\r\n\r\n")
            .map(|p| p + 4)
            .unwrap_or(bytes.len());
        let headers = String::from_utf8_lossy(&bytes[..split]);
        let subject = headers
            .lines()
            .find_map(|l| l.strip_prefix("Subject: "))
            .unwrap_or_default()
            .trim()
            .to_owned();
        let sha1: String = Sha1::digest(&bytes[split..])
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if r.system_flags.contains(SystemFlags::FLAGGED) {
            active = Some(subject.clone());
        }
        scripts.insert(subject, sha1);
    }
    let want_scripts: BTreeMap<String, String> = want["scripts"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect();
    if want_scripts != scripts {
        diffs.push(format!(
            "{user}: sieve scripts: master {want_scripts:?}, csync {scripts:?}"
        ));
    }
    if want["active"].as_str().map(str::to_owned) != active {
        diffs.push(format!(
            "{user}: active sieve script: master {}, csync {active:?}",
            want["active"]
        ));
    }
}

// ---------------------------------------------------------------------------------
// The harness.

/// Fields drop in order: the master (and its rolling client) first, then our
/// server, the proxy, and the work directory last.
#[derive(Debug)]
struct Harness {
    master: CyrusMaster,
    server: Option<CsyncServer>,
    proxy: Proxy,
    csync: PathBuf,
    store_config: StoreConfig,
    summary: Vec<PhaseSummary>,
    runs: usize,
    work: WorkDir,
}

impl Harness {
    fn new() -> Harness {
        require_cyrus();
        let work = WorkDir::new();
        let csync = work.path.join("csync");
        std::fs::create_dir_all(csync.join("conf")).unwrap();
        std::fs::create_dir_all(csync.join("spool")).unwrap();
        let mut passwords = csync_auth::passwd::PasswordFile::new(csync.join("conf/csync.passwd"));
        passwords.set("repluser", "secret").unwrap();
        passwords.save().unwrap();
        let proxy = Proxy::start();
        let server = CsyncServer::start(&csync, "compressed", &[]);
        proxy.target.store(server.port, Ordering::SeqCst);
        let master = CyrusMaster::start(&work.path.join("master"), proxy.port);
        let conf = csync_config::Config::from_file(csync.join("compressed.conf")).unwrap();
        let store_config = StoreConfig::from_imapd(&conf).unwrap();
        Harness {
            master,
            server: Some(server),
            proxy,
            csync,
            store_config,
            summary: Vec::new(),
            runs: 0,
            work,
        }
    }

    fn restart_server(&mut self, name: &str, extra: &[String]) {
        self.server = None;
        let server = CsyncServer::start(&self.csync, name, extra);
        self.proxy.target.store(server.port, Ordering::SeqCst);
        self.server = Some(server);
    }

    fn store(&self) -> Store {
        Store::open(self.store_config.clone()).unwrap()
    }

    fn ctl(&self, script: &str) {
        let mut child = kit("cyrusctl.py")
            .arg(&self.master.dir)
            .arg("script")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "cyrusctl.py script failed:\n{}",
            output_text(&out)
        );
    }

    fn next_log(&mut self, label: &str) -> PathBuf {
        self.runs += 1;
        let safe: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        self.master
            .dir
            .join("log")
            .join(format!("run-{:02}-{safe}.log", self.runs))
    }

    /// Runs `sync.sh DIR --trace ARGS`; its exit code must be `want_ok`'s.
    fn run_sync(&mut self, args: &[&str], want_ok: bool) -> SyncRun {
        let log = self.next_log(&args.join(" "));
        let started = Instant::now();
        let out = kit("sync.sh")
            .arg(&self.master.dir)
            .args(["--trace", "--timeout", "120", "--log"])
            .arg(&log)
            .args(args)
            .output()
            .unwrap();
        let secs = started.elapsed().as_secs_f64();
        let text = std::fs::read(&log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        assert_eq!(
            out.status.success(),
            want_ok,
            "sync_client {args:?}: exit status {:?}; log {}:\n{}\n{}",
            out.status.code(),
            log.display(),
            tail(&text, 40),
            output_text(&out)
        );
        SyncRun {
            log,
            sent: parse_sent(&text),
            secs,
        }
    }

    fn sync(&mut self, phase: &mut PhaseSummary, args: &[&str]) -> SyncRun {
        let run = self.run_sync(args, true);
        phase.runs.push((args.join(" "), run.secs));
        run
    }

    /// After a replication: the identical runs in `rechecks` send only GET / RESTART /
    /// EXIT, every connection of the phase used `transport`, the store verifies, and
    /// it equals the master's dump. Returns the dump.
    fn check(
        &mut self,
        phase: &mut PhaseSummary,
        first_wire: usize,
        transport: Transport,
        rechecks: &[&[&str]],
    ) -> Value {
        for args in rechecks {
            let run = self.sync(phase, args);
            let changes = run.changes();
            assert!(
                changes.is_empty(),
                "{}: the run after the replication ({args:?}) still changed the replica \
                 (log {}):\n{}",
                phase.phase,
                run.log.display(),
                changes
                    .iter()
                    .map(|c| format!("  {}", &c[..c.len().min(300)]))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            let rolling_log = args.contains(&"-R");
            assert!(
                rolling_log || run.sent_starting("GET ") > 0,
                "{}: no GET in the trace of {args:?} ({}): is --trace working?",
                phase.phase,
                run.log.display()
            );
        }

        // Complete: the proxy records bytes before it forwards them, and the client
        // has read its last reply.
        let wires = self.proxy.since(first_wire);
        assert!(!wires.is_empty(), "{}: no connection seen", phase.phase);
        for (i, w) in wires.iter().enumerate() {
            if let Err(e) = check_wire(w, transport) {
                panic!(
                    "{}: connection {} of the phase was not {transport:?}: {e}",
                    phase.phase,
                    i + 1
                );
            }
        }
        phase.connections = wires.len();

        let store = self.store();
        let report = store.verify(None, true).unwrap();
        assert!(
            report.is_clean(),
            "{}: csync's store does not verify: {:#?}",
            phase.phase,
            report.problems
        );

        let dump_file = format!("dump-{}.json", self.summary.len() + 1);
        let dump = self.dump_master(&dump_file);
        match compare(&store, &dump) {
            Ok(c) => {
                phase.users = c.users;
                phase.mailboxes = c.mailboxes;
                phase.messages = c.messages;
                assert!(c.messages > 0 && c.mailboxes > 0, "nothing compared");
                if self.summary.is_empty() {
                    assert!(
                        c.large_messages > 0,
                        "no message above 128 KiB was compared"
                    );
                }
            }
            Err(diffs) => panic!(
                "{}: csync's store differs from the Cyrus master ({} differences; master \
                 dump {}):\n  {}",
                phase.phase,
                diffs.len(),
                self.work.path.join(&dump_file).display(),
                diffs.join("\n  ")
            ),
        }
        dump
    }

    /// `dump.py --deleted` of the master into the work directory.
    fn dump_master(&self, file: &str) -> Value {
        let path = self.work.path.join(file);
        let out = kit("dump.py")
            .arg(&self.master.dir)
            .arg("--deleted")
            .arg("-o")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "dump.py failed:\n{}",
            output_text(&out)
        );
        let dump: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(dump["format"], "cyrus-test-dump/1");
        dump
    }

    fn server_log(&self) -> String {
        std::fs::read(self.csync.join("server.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|l| &l[..l.len().min(300)])
        .collect::<Vec<_>>()
        .join("\n")
}

fn new_phase(name: &str) -> PhaseSummary {
    PhaseSummary {
        phase: name.to_owned(),
        ..PhaseSummary::default()
    }
}

/// Non-expunged uids of a mailbox in our store.
fn live_uids(store: &Store, name: &str) -> Vec<u32> {
    let m = store.real_mailbox(name).unwrap();
    let mut uids = Vec::new();
    store
        .for_each_record(m.id, 0, |r| {
            if !r.record.is_expunged() {
                uids.push(r.record.uid);
            }
            Ok(())
        })
        .unwrap();
    uids
}

fn dump_flags(dump: &Value, user: &str, mailbox: &str, uid: u32) -> Vec<String> {
    dump["users"][user]["mailboxes"][mailbox]["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["uid"] == uid)
        .map(|m| strings(&m["flags"]))
        .unwrap_or_default()
}

#[test]
fn real_cyrus_master_replicates_into_csync() {
    let started = Instant::now();
    let mut h = Harness::new();

    // 1. -u, compressed (our server offers COMPRESS; Cyrus always takes it).
    let mut p = new_phase("-u (compressed)");
    h.ctl(CHANGES_U);
    let w = h.proxy.count();
    let users = ["-u", "alice", "bob", "carol"];
    let run = h.sync(&mut p, &users);
    assert!(run.sent_starting("APPLY MESSAGE") > 0 && run.sent_starting("APPLY MAILBOX") > 0);
    assert!(
        run.sent
            .iter()
            .any(|s| s.starts_with("APPLY MAILBOX %(UNIQUEID ")
                && s.contains(" MBOXNAME user.alice.Entw&APw-rfe ")),
        "the non-ASCII folder did not travel as modified UTF-7"
    );
    h.check(&mut p, w, Transport::Compressed, &[&users]);
    h.summary.push(p);

    // 2. -m with external names (user/alice/Work), compressed.
    let mut p = new_phase("-m (compressed)");
    h.ctl(CHANGES_M);
    let w = h.proxy.count();
    let mailboxes = [
        "-m",
        "user/alice/Work",
        "user/alice/Work/Sub Folder",
        "user/alice/Entw&APw-rfe",
        "user/bob",
    ];
    let run = h.sync(&mut p, &mailboxes);
    assert!(
        run.sent.iter().any(|s| s
            == "GET MAILBOXES (user.alice.Work \"user.alice.Work.Sub Folder\" \
                user.alice.Entw&APw-rfe user.bob)"),
        "-m did not ask for the internal names: {:?}",
        run.sent
    );
    assert!(run.sent_starting("APPLY MAILBOX") >= 4);
    h.check(&mut p, w, Transport::Compressed, &[&mailboxes]);
    h.summary.push(p);

    // 3. -A without compression (csync_compress: no); -z must then fail.
    let mut p = new_phase("-A (uncompressed)");
    h.restart_server("uncompressed", &["csync_compress: no".to_owned()]);
    h.ctl(CHANGES_A);
    let w = h.proxy.count();
    let run = h.sync(&mut p, &["-A"]);
    assert!(run.sent.iter().any(|s| s == "GET USER dave"));
    assert!(run.sent_starting("APPLY RENAME") > 0, "no rename sent");
    h.check(&mut p, w, Transport::Plain, &[&["-A"]]);
    let refused = h.run_sync(&["-z", "-u", "bob"], false);
    let text = std::fs::read_to_string(&refused.log).unwrap_or_default();
    assert!(
        text.contains("Failed to enable compression"),
        "sync_client -z against a server without COMPRESS: {}",
        tail(&text, 10)
    );
    h.summary.push(p);

    // 4. -R -1 over STARTTLS: no plaintext mechanism without TLS, so the client must
    //    STARTTLS (and then does not compress).
    let mut p = new_phase("-R -1 (STARTTLS)");
    let (cert, key) = (h.csync.join("cert.pem"), h.csync.join("key.pem"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-subj", "/CN=csync-replica.test"])
        .args([
            "-addext",
            "subjectAltName=DNS:csync-replica.test,IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl req: {}", output_text(&out));
    let tls_conf = [
        "allowplaintext: no".to_owned(),
        "sasl_mech_list: PLAIN LOGIN".to_owned(),
        format!("tls_server_cert: {}", cert.display()),
        format!("tls_server_key: {}", key.display()),
    ];
    h.restart_server("tls", &tls_conf);
    let tls_logins_before = h
        .server_log()
        .matches("(replication admin) over TLS")
        .count();
    h.ctl(CHANGES_R1);
    let w = h.proxy.count();
    let run = h.sync(&mut p, &["-R", "-1"]);
    assert!(!run.changes().is_empty(), "-R -1 sent no change");
    assert!(
        run.sent
            .iter()
            .any(|s| s.starts_with("APPLY QUOTA %(ROOT user.dave "))
    );
    h.check(&mut p, w, Transport::Tls, &[&["-R", "-1"], &["-A"]]);
    let tls_logins = h
        .server_log()
        .matches("(replication admin) over TLS")
        .count();
    assert!(
        tls_logins >= tls_logins_before + p.connections,
        "our server logged {} TLS logins for {} connections",
        tls_logins - tls_logins_before,
        p.connections
    );
    h.summary.push(p);

    // 5. Rolling replication over TLS, with a user deletion.
    let mut p = new_phase("rolling -R (STARTTLS)");
    let w = h.proxy.count();
    let rolling_log = h.next_log("rolling");
    let rolling = Instant::now();
    let out = kit("sync.sh")
        .arg(&h.master.dir)
        .args(["--trace", "--log"])
        .arg(&rolling_log)
        .arg("rolling-start")
        .output()
        .unwrap();
    assert!(out.status.success(), "rolling-start: {}", output_text(&out));
    h.ctl(CHANGES_ROLLING);
    for action in [&["rolling-wait", "60"][..], &["rolling-stop"]] {
        let out = kit("sync.sh")
            .arg(&h.master.dir)
            .args(action)
            .output()
            .unwrap();
        let log = std::fs::read_to_string(&rolling_log).unwrap_or_default();
        assert!(
            out.status.success(),
            "{action:?}: {}\nrolling log:\n{}",
            output_text(&out),
            tail(&log, 40)
        );
    }
    p.runs.push((
        "rolling-start … rolling-stop".into(),
        rolling.elapsed().as_secs_f64(),
    ));
    let sent = parse_sent(&std::fs::read_to_string(&rolling_log).unwrap());
    assert!(sent.iter().any(|s| s == "APPLY UNUSER carol"), "{sent:?}");
    assert!(sent.iter().any(|s| {
        s.starts_with("APPLY RENAME %(OLDMBOXNAME user.carol NEWMBOXNAME DELETED.user.carol.")
    }));
    let dump = h.check(&mut p, w, Transport::Tls, &[&["-R", "-1"], &["-A"]]);
    assert!(dump["users"].get("carol").is_none());
    assert!(
        strings(&dump["deleted"])
            .iter()
            .any(|d| d.starts_with("DELETED.user.carol.") && !d.contains(".Tmp.")),
        "no tombstone of carol on the master: {}",
        dump["deleted"]
    );
    h.summary.push(p);

    // 6. A change on the replica (as a local change would be made, with a higher
    //    modseq) is repaired by the next sync like on a Cyrus replica (§4.6, §9.4):
    //    the replica's record has the higher modseq and a later LAST_UPDATED, so its
    //    flags win and reach the master; a master change on another message stays.
    let mut p = new_phase("repair of a replica change (compressed)");
    h.restart_server("compressed", &[]);
    let uids = live_uids(&h.store(), "user.alice");
    let (replica_uid, master_uid) = (uids[0], uids[1]);
    {
        let mut store = h.store();
        let before = store
            .real_mailbox("user.alice")
            .unwrap()
            .state
            .highestmodseq;
        let changed = store
            .store_flags(
                "user.alice",
                &[replica_uid],
                FlagOp::Add,
                &Flags::parse(["$ReplicaMade", "\\Answered"]).unwrap(),
            )
            .unwrap();
        assert_eq!(changed, 1);
        let after = store
            .real_mailbox("user.alice")
            .unwrap()
            .state
            .highestmodseq;
        assert!(after > before);
    }
    h.ctl(&format!(
        "@alice store INBOX {master_uid} +FLAGS $MasterMade\n"
    ));
    // The comparison sees both changes before the sync (it is not vacuous).
    let before = h.dump_master("dump-before-repair.json");
    let diffs = compare(&h.store(), &before).expect_err("the changes are not seen");
    for uid in [replica_uid, master_uid] {
        let prefix = format!("alice: \"INBOX\" (user.alice) uid {uid}: flags:");
        assert!(
            diffs.iter().any(|d| d.starts_with(&prefix)),
            "no flag difference for uid {uid}: {diffs:#?}"
        );
    }
    let w = h.proxy.count();
    let run = h.sync(&mut p, &["-u", "alice"]);
    assert!(
        run.sent.iter().any(|s| s == "GET FULLMAILBOX user.alice"),
        "the conflict did not lead to a full update: {:?}",
        run.sent
    );
    let dump = h.check(&mut p, w, Transport::Compressed, &[&["-u", "alice"]]);
    let flags = dump_flags(&dump, "alice", "INBOX", replica_uid);
    assert!(
        flags.contains(&"$ReplicaMade".to_owned()) && flags.contains(&"\\Answered".to_owned()),
        "the replica's newer flags did not win: {flags:?}"
    );
    assert!(dump_flags(&dump, "alice", "INBOX", master_uid).contains(&"$MasterMade".to_owned()));
    h.summary.push(p);

    // 7. sync_client -z (compression required) against our server.
    let mut p = new_phase("-z -A (compression required)");
    h.ctl(CHANGES_Z);
    let w = h.proxy.count();
    let run = h.sync(&mut p, &["-z", "-A"]);
    assert!(run.sent_starting("APPLY MESSAGE") > 0);
    h.check(&mut p, w, Transport::Compressed, &[&["-z", "-A"]]);
    h.summary.push(p);

    println!(
        "Cyrus sync_client -> csync sync_server, {:.1} s in all:",
        started.elapsed().as_secs_f64()
    );
    for p in &h.summary {
        let runs: Vec<String> = p
            .runs
            .iter()
            .map(|(args, secs)| format!("`{args}` {secs:.2} s"))
            .collect();
        println!(
            "  {:<42} {} users, {:>2} mailboxes, {:>3} messages compared, {} connection(s); runs: {}",
            p.phase,
            p.users,
            p.mailboxes,
            p.messages,
            p.connections,
            runs.join(", ")
        );
    }
}
