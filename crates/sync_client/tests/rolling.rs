//! Rolling replication end to end: the `sync_client` binary in `-R` mode against
//! csync's own replica, changes made through the mailstore API on the master, the
//! replica read back through the same API.
//!
//! The replica runs in a child process of this test binary (the `replica_process`
//! entry below, re-executed with the replica's configuration in the environment), so
//! it can be killed with SIGKILL and restarted on the same port like a real daemon.

use std::collections::BTreeMap;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use csync_mailstore::local::{FlagOp, Flags};
use csync_mailstore::{Store, StoreConfig};
use csync_protocol::mailbox::{MailboxState, Record};
use csync_sync_client::config::ClientConfig;
use csync_sync_client::conn::Connection;
use csync_sync_client::progress::Progress;
use csync_sync_client::sync::{SyncOptions, Syncer};
use csync_synclog::SyncLog;

const REPLICA_CONF_ENV: &str = "CSYNC_TEST_REPLICA_CONF";
const REPLICA_PORT_ENV: &str = "CSYNC_TEST_REPLICA_PORT";

/// Not a test: the body of the replica child process. Without the environment it
/// returns at once.
#[test]
fn replica_process() {
    let Some(conf) = std::env::var_os(REPLICA_CONF_ENV) else {
        return;
    };
    let port: u16 = std::env::var(REPLICA_PORT_ENV)
        .ok()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let conf = csync_config::Config::from_file(PathBuf::from(conf)).expect("replica imapd.conf");
    let config = csync_sync_server::config::ServerConfig::from_imapd(&conf).expect("config");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let shared = Arc::new(csync_sync_server::server::Shared::new(config).expect("shared"));
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_reuseaddr(true).expect("SO_REUSEADDR");
        socket
            .bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
            .expect("bind");
        let listener = socket.listen(128).expect("listen");
        let (_stop, stopped) = tokio::sync::watch::channel(false);
        let _ = csync_sync_server::server::serve(shared, vec![listener], stopped).await;
    });
    std::process::exit(0);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// csync's replica on a fixed loopback port, restartable.
struct Replica {
    dir: PathBuf,
    conf: PathBuf,
    port: u16,
    child: Option<Child>,
    starts: u32,
}

impl Replica {
    fn new(root: &Path, extra: &str) -> Replica {
        let dir = root.join("replica");
        fs::create_dir_all(dir.join("conf")).unwrap();
        let conf = dir.join("imapd.conf");
        let mut text = format!(
            "configdirectory: {d}/conf\npartition-default: {d}/spool\nservername: replica.test\n\
             admins: repluser\nallowplaintext: yes\nfailedloginpause: 0\n",
            d = dir.display()
        );
        text.push_str(extra);
        fs::write(&conf, text).unwrap();
        let mut passwords = csync_auth::passwd::PasswordFile::new(dir.join("conf/csync.passwd"));
        passwords.set("repluser", "secret").unwrap();
        passwords.save().unwrap();
        let mut replica = Replica {
            dir,
            conf,
            port: free_port(),
            child: None,
            starts: 0,
        };
        replica.start();
        replica
    }

    fn start(&mut self) {
        assert!(self.child.is_none());
        self.starts += 1;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("replica.log"))
            .unwrap();
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "replica_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(REPLICA_CONF_ENV, &self.conf)
            .env(REPLICA_PORT_ENV, self.port.to_string())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let port = self.port;
        wait_for("the replica to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_ok()
        });
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn store(&self) -> Store {
        let conf = csync_config::Config::from_file(&self.conf).unwrap();
        Store::open(StoreConfig::from_imapd(&conf).unwrap()).unwrap()
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The master: its configuration, a store handle that logs to the sync_log, and the
/// rolling sync_client process.
struct Master {
    dir: PathBuf,
    conf: PathBuf,
    client: Option<Child>,
    starts: u32,
}

impl Master {
    fn new(root: &Path, replica: &Replica, extra: &str) -> Master {
        Master::with_port(root, replica.port, extra)
    }

    fn with_port(root: &Path, port: u16, extra: &str) -> Master {
        let dir = root.join("master");
        fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("imapd.conf");
        let mut text = format!(
            "configdirectory: {d}/conf\npartition-default: {d}/spool\npartition-other: {d}/other\n\
             sync_log: on\nsync_host: 127.0.0.1:{port}\nsync_authname: repluser\n\
             sync_password: secret\ncsync_allow_plaintext: yes\nsync_reconnect_maxwait: 1\n\
             csync_quarantine_retry: 0\n",
            d = dir.display(),
        );
        text.push_str(extra);
        if !extra.contains("sync_repeat_interval") {
            text.push_str("sync_repeat_interval: 0\n");
        }
        fs::write(&conf, text).unwrap();
        Master {
            dir,
            conf,
            client: None,
            starts: 0,
        }
    }

    fn store(&self) -> Store {
        let conf = csync_config::Config::from_file(&self.conf).unwrap();
        let mut store = Store::open(StoreConfig::from_imapd(&conf).unwrap()).unwrap();
        store.set_changelog(Some(Box::new(SyncLog::from_config(&conf).unwrap())));
        store
    }

    fn log_dir(&self) -> PathBuf {
        self.dir.join("conf/sync")
    }

    fn client_log(&self) -> PathBuf {
        self.dir.join("sync_client.log")
    }

    fn start_client(&mut self, extra_args: &[&str]) {
        assert!(self.client.is_none());
        self.starts += 1;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.client_log())
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sync_client"))
            .arg("-C")
            .arg(&self.conf)
            .arg("-R")
            .arg("-v")
            .args(extra_args)
            .env("CSYNC_RECONNECT_INITIAL_MS", "20")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.client = Some(child);
    }

    fn kill_client(&mut self) {
        if let Some(mut child) = self.client.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM; the client finishes its item, says EXIT and exits 0.
    fn stop_client(&mut self) -> std::process::ExitStatus {
        let mut child = self.client.take().expect("a running client");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                panic!("sync_client ignored SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.client_log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(60)..].join("\n")
    }

    /// A `-u` run through the library: what it sends when everything is in sync.
    fn user_sync_stats(&self, users: &[&str]) -> csync_sync_client::conn::Stats {
        let conf = csync_config::Config::from_file(&self.conf).unwrap();
        let client = ClientConfig::from_imapd(&conf, None, None).unwrap();
        let mut store = self.store();
        let mut conn = Connection::connect(&client.connect).unwrap();
        let before = conn.stats;
        let opts = SyncOptions::default();
        let mut progress = Progress::new(false);
        for user in users {
            Syncer {
                store: &mut store,
                conn: &mut conn,
                opts: &opts,
                progress: &mut progress,
            }
            .sync_user(user)
            .unwrap();
        }
        let mut stats = conn.stats;
        stats.commands -= before.commands;
        stats.gets -= before.gets;
        stats.applies -= before.applies;
        let _ = conn.exit();
        stats
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        if std::env::var_os("CSYNC_TEST_SHOW_LOGS").is_some() {
            eprintln!("--- sync_client log ---\n{}", self.log_tail());
        }
        self.kill_client();
    }
}

fn message(n: u64, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: Alice <alice@example.com>\r\nTo: Bob <bob@example.com>\r\nSubject: message {n}\r\n\
         Date: Tue, 14 Nov 2023 22:15:00 +0000\r\nMessage-ID: <m{n}@example.com>\r\n\r\n"
    )
    .into_bytes();
    while m.len() < size {
        m.extend_from_slice(
            format!("line {n} of the body, padding padding padding\r\n").as_bytes(),
        );
    }
    m
}

fn deliver(store: &mut Store, mailbox: &str, n: u64) -> u32 {
    store
        .deliver(mailbox, &message(n, 300)[..], &Flags::default(), None)
        .unwrap()
}

fn flags(words: &[&str]) -> Flags {
    Flags::parse(words.iter().copied()).unwrap()
}

/// Everything replicated, read through the store API.
#[derive(Debug, PartialEq)]
struct Snapshot {
    mailboxes: BTreeMap<String, (MailboxState, Vec<(Record, bool)>)>,
    users: BTreeMap<String, String>,
    quotas: BTreeMap<String, String>,
    server_annotations: String,
}

fn snapshot(store: &Store) -> Snapshot {
    let mut mailboxes = BTreeMap::new();
    let mut list = Vec::new();
    store
        .for_each_mailbox(None, |m| {
            if m.is_real() {
                list.push(m);
            }
            Ok(())
        })
        .unwrap();
    for m in list {
        let mut state = m.state.clone();
        state.annotations = store.mailbox_annotations(m.id).unwrap();
        let mut records = Vec::new();
        store
            .for_each_record(m.id, 0, |r| {
                records.push((r.record, r.has_file));
                Ok(())
            })
            .unwrap();
        mailboxes.insert(m.name().to_owned(), (state, records));
    }
    let mut users = BTreeMap::new();
    for user in store.users().unwrap() {
        let mut sieve = Vec::new();
        for entry in store.sieve_entries(&user).unwrap() {
            let name = entry.filename.trim_end_matches(".script").to_owned();
            let script = store.sieve_script(&user, &name).unwrap();
            sieve.push((entry, script));
        }
        users.insert(
            user.clone(),
            format!(
                "seen {:?}\nsubscriptions {:?}\nsieve {:?}",
                store.seen(&user).unwrap(),
                store.subscriptions(&user).unwrap(),
                sieve
            ),
        );
    }
    let mut quotas = BTreeMap::new();
    for root in store.quota_roots().unwrap() {
        let q = store.quota(&root).unwrap();
        quotas.insert(root, format!("{q:?}"));
    }
    Snapshot {
        mailboxes,
        users,
        quotas,
        server_annotations: format!("{:?}", store.annotations_of("").unwrap()),
    }
}

/// The first difference between two snapshots, for the failure message.
fn difference(master: &Snapshot, replica: &Snapshot) -> Option<String> {
    let names: std::collections::BTreeSet<&String> = master
        .mailboxes
        .keys()
        .chain(replica.mailboxes.keys())
        .collect();
    for name in names {
        match (master.mailboxes.get(name), replica.mailboxes.get(name)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(a), Some(b)) => {
                if a.0 != b.0 {
                    return Some(format!(
                        "{name}: header\n master {:?}\nreplica {:?}",
                        a.0, b.0
                    ));
                }
                let uids: Vec<(u32, bool)> = a.1.iter().map(|(r, f)| (r.uid, *f)).collect();
                let ruids: Vec<(u32, bool)> = b.1.iter().map(|(r, f)| (r.uid, *f)).collect();
                return Some(format!(
                    "{name}: records\n master {uids:?}\nreplica {ruids:?}"
                ));
            }
            (a, b) => {
                return Some(format!(
                    "{name}: on the master {}, on the replica {}",
                    a.is_some(),
                    b.is_some()
                ));
            }
        }
    }
    if master.users != replica.users {
        return Some(format!(
            "users\n master {:?}\nreplica {:?}",
            master.users, replica.users
        ));
    }
    if master.quotas != replica.quotas {
        return Some(format!(
            "quotas\n master {:?}\nreplica {:?}",
            master.quotas, replica.quotas
        ));
    }
    if master.server_annotations != replica.server_annotations {
        return Some(format!(
            "server annotations\n master {}\nreplica {}",
            master.server_annotations, replica.server_annotations
        ));
    }
    None
}

/// Waits until the replica holds exactly what the master holds, and its files hash
/// to their GUIDs.
fn wait_converged(master: &Master, master_store: &Store, replica: &Replica, timeout: Duration) {
    let replica_store = replica.store();
    let start = Instant::now();
    loop {
        let a = snapshot(master_store);
        let b = snapshot(&replica_store);
        let Some(last) = difference(&a, &b) else {
            break;
        };
        if start.elapsed() > timeout {
            let log = fs::read_to_string(master.client_log()).unwrap_or_default();
            let notable: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("quarantine") || l.contains("ERROR"))
                .take(40)
                .collect();
            panic!(
                "the replica did not converge in {timeout:?}: {last}\nquarantine: {}\n\
                 --- errors ---\n{}\n--- sync_client log ---\n{}",
                quarantine_text(master),
                notable.join("\n"),
                master.log_tail()
            );
        }
        // Snapshots read every record of both stores: do not starve the client.
        std::thread::sleep(Duration::from_millis(100));
    }
    let report = replica_store.verify(None, true).unwrap();
    assert!(report.is_clean(), "replica files: {:?}", report.problems);
}

fn quarantine_text(master: &Master) -> String {
    fs::read_to_string(master.log_dir().join("quarantine")).unwrap_or_default()
}

/// Every kind of change made through the mailstore API reaches the replica; a USER
/// sync afterwards has nothing left to send.
#[test]
fn changes_reach_the_replica() {
    let tmp = tempfile::tempdir().unwrap();
    let replica = Replica::new(tmp.path(), "");
    let mut master = Master::new(tmp.path(), &replica, "");
    let mut store = master.store();
    master.start_client(&[]);

    for user in ["alice", "bob", "carol"] {
        store
            .create_mailbox(&format!("user.{user}"), None, None)
            .unwrap();
    }
    for folder in ["Sent", "Trash", "Old", "Gone"] {
        store
            .create_mailbox(&format!("user.alice.{folder}"), None, None)
            .unwrap();
    }
    store.create_mailbox("shared.lists", None, None).unwrap();
    let mut n = 0;
    let mut next = || {
        n += 1;
        n
    };
    let mut uids = Vec::new();
    for _ in 0..5 {
        uids.push(deliver(&mut store, "user.alice", next()));
    }
    deliver(&mut store, "user.alice.Sent", next());
    deliver(&mut store, "user.alice.Old", next());
    deliver(&mut store, "user.bob", next());
    deliver(&mut store, "user.carol", next());
    deliver(&mut store, "shared.lists", next());
    // a big one, streamed
    store
        .deliver(
            "user.bob",
            &message(next(), 3 << 20)[..],
            &Flags::default(),
            None,
        )
        .unwrap();
    store
        .store_flags(
            "user.alice",
            &uids[..2],
            FlagOp::Add,
            &flags(&["\\Seen", "$Label1"]),
        )
        .unwrap();
    store
        .store_flags(
            "user.alice",
            &uids[2..3],
            FlagOp::Add,
            &flags(&["\\Deleted"]),
        )
        .unwrap();
    store.expunge("user.alice", None).unwrap();
    store
        .rename_mailbox("user.alice.Trash", "user.alice.Junk", None)
        .unwrap();
    store.delete_mailbox("user.alice.Old").unwrap();
    store.subscribe("alice", "user.alice.Sent", true).unwrap();
    store.subscribe("alice", "shared.lists", true).unwrap();
    store.subscribe("bob", "shared.lists", true).unwrap();
    store.subscribe("bob", "shared.lists", false).unwrap();
    store
        .set_quota("user.alice", Some(100_000), Some(5000))
        .unwrap();
    store
        .set_annotation("user.alice.Sent", "/comment", "", Some(b"sent mail"))
        .unwrap();
    store
        .set_annotation("", "/motd", "", Some(b"welcome"))
        .unwrap();
    store.set_acl("shared.lists", "bob", Some("lrs")).unwrap();
    store.set_seen("bob", "shared.lists", &[1]).unwrap();
    store
        .put_sieve(
            "alice",
            "main",
            b"require \"fileinto\";\nif header :contains \"subject\" \"x\" { fileinto \"INBOX.Junk\"; }\n",
            true,
        )
        .unwrap();
    wait_converged(&master, &store, &replica, Duration::from_secs(30));

    // Later changes, including removals, keep flowing.
    store.delete_mailbox("user.alice.Gone").unwrap();
    store.delete_user("carol").unwrap();
    store.remove_quota("user.alice").unwrap();
    store.activate_sieve("alice", None).unwrap();
    deliver(&mut store, "user.alice.Junk", next());
    wait_converged(&master, &store, &replica, Duration::from_secs(30));
    assert!(
        replica
            .store()
            .mailbox("user.carol")
            .unwrap()
            .is_none_or(|m| !m.is_real()),
        "carol is gone from the replica"
    );

    let status = master.stop_client();
    assert!(status.success(), "sync_client exit status {status}");
    assert!(!master.log_dir().join("log-run").exists());
    // A -u run now only reads: one GET USER per user, no APPLY, no upload.
    let stats = master.user_sync_stats(&["alice", "bob"]);
    assert_eq!(stats.applies, 0, "{stats:?}\n{}", master.log_tail());
    assert_eq!(stats.gets, 2, "{stats:?}");
    assert_eq!(stats.messages_sent, 0);
    assert!(quarantine_text(&master).is_empty());
}

/// With `sync_repeat_interval: 0` the change is on the replica well within a second
/// of the delivery returning.
#[test]
fn latency_after_a_delivery() {
    let tmp = tempfile::tempdir().unwrap();
    let replica = Replica::new(tmp.path(), "");
    let mut master = Master::new(tmp.path(), &replica, "");
    let mut store = master.store();
    store.create_mailbox("user.dave", None, None).unwrap();
    master.start_client(&[]);
    let replica_store = replica.store();
    let arrived = |uid: u32| {
        replica_store
            .mailbox("user.dave")
            .unwrap()
            .is_some_and(|m| m.state.last_uid >= uid)
    };
    wait_for("user.dave on the replica", Duration::from_secs(20), || {
        arrived(0)
    });
    let mut times = Vec::new();
    for n in 0..20 {
        let uid = deliver(&mut store, "user.dave", n);
        let start = Instant::now();
        wait_for(
            "the delivery on the replica",
            Duration::from_secs(10),
            || arrived(uid),
        );
        times.push(start.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    times.sort();
    let median = times[times.len() / 2];
    let max = times[times.len() - 1];
    eprintln!("latency: median {median:?}, max {max:?}");
    assert!(median < Duration::from_secs(1), "median {median:?}");
    assert!(max < Duration::from_secs(2), "max {max:?}");
    assert!(master.stop_client().success());
}

/// A leftover `log-run` is processed first; a user the replica cannot take (its
/// partition is unknown there) is quarantined while another user's changes keep
/// arriving; `--release` brings it back once the replica can take it.
#[test]
fn leftover_run_and_quarantine() {
    let tmp = tempfile::tempdir().unwrap();
    let mut replica = Replica::new(tmp.path(), "");
    let mut master = Master::new(tmp.path(), &replica, "");
    let mut store = master.store();
    store.create_mailbox("user.good", None, None).unwrap();
    store
        .create_mailbox("user.bad", Some("other"), None)
        .unwrap();
    deliver(&mut store, "user.good", 1);
    deliver(&mut store, "user.bad", 2);
    // A run that died: its work file is left behind; new records go to a new log.
    let log_dir = master.log_dir();
    fs::rename(log_dir.join("log"), log_dir.join("log-run")).unwrap();
    store.create_mailbox("user.good.Later", None, None).unwrap();
    deliver(&mut store, "user.good.Later", 3);

    master.start_client(&[]);
    let replica_store = replica.store();
    let has = |name: &str, uid: u32| {
        replica_store
            .mailbox(name)
            .unwrap()
            .is_some_and(|m| m.state.last_uid >= uid)
    };
    wait_for("good's mail", Duration::from_secs(30), || {
        has("user.good", 1) && has("user.good.Later", 1)
    });
    wait_for("bad in quarantine", Duration::from_secs(30), || {
        quarantine_text(&master).contains("\tbad\t")
    });
    let log = fs::read_to_string(master.client_log()).unwrap();
    assert!(log.contains("Reprocessing sync log file"), "{log}");
    let line = quarantine_text(&master);
    let fields: Vec<&str> = line.trim_end().split('\t').collect();
    assert_eq!(fields.len(), 5, "{line}");
    assert_eq!(fields[1], "bad");
    assert!(fields[0].ends_with('Z'), "{line}");
    assert!(!has("user.bad", 1));

    // Everyone else keeps flowing; bad's new records are held, not lost.
    let uid = deliver(&mut store, "user.good", 4);
    deliver(&mut store, "user.bad", 5);
    wait_for("good's next mail", Duration::from_secs(10), || {
        has("user.good", uid)
    });
    wait_for("bad's record held", Duration::from_secs(10), || {
        fs::read_to_string(log_dir.join("quarantine-log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("user.bad"))
            .count()
            >= 2
    });
    assert!(!has("user.bad", 1));

    // The replica gets the partition; the admin releases the user.
    replica.kill();
    let conf = fs::read_to_string(&replica.conf).unwrap();
    fs::write(
        &replica.conf,
        format!("{conf}partition-other: {}/other\n", replica.dir.display()),
    )
    .unwrap();
    replica.start();
    let out = Command::new(env!("CARGO_BIN_EXE_sync_client"))
        .arg("-C")
        .arg(&master.conf)
        .args(["--release", "bad"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "released user bad\n");
    wait_converged(&master, &store, &replica, Duration::from_secs(30));
    assert!(quarantine_text(&master).is_empty());
    assert!(!log_dir.join("quarantine-log").exists());
    assert!(master.stop_client().success());
}

/// A tiny deterministic generator (no dependency needed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Random changes on the master until told to stop; returns how many were made.
fn writer(mut store: Store, stop: Arc<AtomicBool>, seed: u64) -> u64 {
    let mut rng = Lcg(seed);
    let users = ["u0", "u1", "u2", "u3", "u4"];
    let mut folders: Vec<String> = users.iter().map(|u| format!("user.{u}")).collect();
    let mut made = 0u64;
    let mut n = 1000u64;
    while !stop.load(Ordering::SeqCst) {
        let user = users[rng.below(users.len() as u64) as usize];
        let mine: Vec<String> = folders
            .iter()
            .filter(|f| f.starts_with(&format!("user.{user}")))
            .cloned()
            .collect();
        let folder = mine[rng.below(mine.len() as u64) as usize].clone();
        let roll = rng.below(100);
        let result = if roll < 55 {
            n += 1;
            store
                .deliver(
                    &folder,
                    &message(n, 200 + (n as usize % 5000))[..],
                    &Flags::default(),
                    None,
                )
                .map(|_| ())
        } else if roll < 75 {
            let last = store
                .mailbox(&folder)
                .unwrap()
                .map_or(0, |m| m.state.last_uid);
            let uid = 1 + rng.below(u64::from(last.max(1))) as u32;
            let f = if rng.below(2) == 0 {
                "\\Seen"
            } else {
                "$Label"
            };
            let op = if rng.below(3) == 0 {
                FlagOp::Remove
            } else {
                FlagOp::Add
            };
            store
                .store_flags(&folder, &[uid], op, &flags(&[f]))
                .map(|_| ())
        } else if roll < 85 {
            let last = store
                .mailbox(&folder)
                .unwrap()
                .map_or(0, |m| m.state.last_uid);
            let uid = 1 + rng.below(u64::from(last.max(1))) as u32;
            store.expunge(&folder, Some(&[uid])).map(|_| ())
        } else if roll < 90 {
            store.subscribe(user, &folder, rng.below(2) == 0)
        } else if roll < 95 && mine.len() < 6 {
            n += 1;
            let name = format!("user.{user}.f{n}");
            let r = store.create_mailbox(&name, None, None).map(|_| ());
            if r.is_ok() {
                folders.push(name);
            }
            r
        } else if mine.len() > 1 {
            let old = mine[1 + rng.below(mine.len() as u64 - 1) as usize].clone();
            n += 1;
            let new = format!("user.{user}.r{n}");
            let r = store.rename_mailbox(&old, &new, None);
            if r.is_ok() {
                folders.retain(|f| f != &old);
                folders.push(new);
            }
            r
        } else {
            Ok(())
        };
        if let Err(e) = result {
            panic!("master change failed: {e}");
        }
        made += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    made
}

/// Under load, the replica is killed and restarted and the client is SIGKILLed and
/// restarted many times; in the end the replica equals the master and nothing was
/// quarantined or left in the log.
#[test]
fn survives_kills_under_load() {
    let tmp = tempfile::tempdir().unwrap();
    let mut replica = Replica::new(tmp.path(), "");
    let mut master = Master::new(tmp.path(), &replica, "");
    let mut store = master.store();
    for u in ["u0", "u1", "u2", "u3", "u4"] {
        store
            .create_mailbox(&format!("user.{u}"), None, None)
            .unwrap();
    }
    master.start_client(&[]);
    let stop = Arc::new(AtomicBool::new(false));
    let writer_store = master.store();
    let writer_stop = stop.clone();
    let writer = std::thread::spawn(move || writer(writer_store, writer_stop, 7));

    let target = 50;
    let budget = Duration::from_secs(40);
    let start = Instant::now();
    let mut rng = Lcg(11);
    let (mut replica_kills, mut client_kills) = (0u32, 0u32);
    while (replica_kills < target || client_kills < target) && start.elapsed() < budget {
        std::thread::sleep(Duration::from_millis(100 + rng.below(250)));
        let kill_replica = client_kills >= target || (replica_kills < target && rng.below(2) == 0);
        if kill_replica {
            replica.kill();
            std::thread::sleep(Duration::from_millis(rng.below(100)));
            replica.start();
            replica_kills += 1;
        } else {
            master.kill_client();
            master.start_client(&[]);
            client_kills += 1;
        }
    }
    stop.store(true, Ordering::SeqCst);
    let made = writer.join().unwrap();
    eprintln!(
        "{made} changes, {replica_kills} replica kills, {client_kills} client kills in {:?}",
        start.elapsed()
    );
    assert!(replica_kills >= 10 && client_kills >= 10);
    let converging = Instant::now();
    wait_converged(&master, &store, &replica, Duration::from_secs(90));
    eprintln!("converged {:?} after the last change", converging.elapsed());
    let log = fs::read_to_string(master.client_log()).unwrap_or_default();
    let strikes = log.lines().filter(|l| l.contains(": strike ")).count();
    eprintln!("{strikes} strikes against users (five in a row quarantine one)");
    // Every record was applied: the log is empty and nothing was set aside.
    let log_dir = master.log_dir();
    wait_for("the log to drain", Duration::from_secs(20), || {
        !log_dir.join("log").exists() && !log_dir.join("log-run").exists()
    });
    assert!(
        quarantine_text(&master).is_empty(),
        "quarantined: {}\n{}",
        quarantine_text(&master),
        master.log_tail()
    );
    assert!(!log_dir.join("quarantine-log").exists());
    assert!(master.stop_client().success());
    drop(store);
    let stats = master.user_sync_stats(&["u0", "u1", "u2", "u3", "u4"]);
    assert_eq!(stats.applies, 0, "{stats:?}");
}

/// Runs sync_client with `args` to its end (at most 30 s).
fn run_client(master: &Master, args: &[&str]) -> (std::process::ExitStatus, String) {
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sync_client"))
        .arg("-C")
        .arg(&master.conf)
        .args(args)
        .env("CSYNC_RECONNECT_INITIAL_MS", "20")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(out.reopen().unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("sync_client {args:?} did not finish");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (status, fs::read_to_string(out.path()).unwrap_or_default())
}

/// `-1`, `-f`, the shutdown file, `-o` and `-r`'s move to the background.
#[test]
fn one_shot_and_daemon_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut replica = Replica::new(tmp.path(), "");
    let master = Master::new(tmp.path(), &replica, "");
    let mut store = master.store();
    let replica_store = replica.store();
    let last_uid = |name: &str| {
        replica_store
            .mailbox(name)
            .unwrap()
            .map_or(0, |m| m.state.last_uid)
    };

    // -1 without a log: nothing to do.
    let (status, err) = run_client(&master, &["-R", "-1"]);
    assert!(status.success(), "{err}");

    // -1 processes the log once and exits.
    store.create_mailbox("user.erin", None, None).unwrap();
    deliver(&mut store, "user.erin", 1);
    let (status, err) = run_client(&master, &["-R", "-1"]);
    assert!(status.success(), "{err}");
    assert_eq!(last_uid("user.erin"), 1);
    assert!(!master.log_dir().join("log").exists());
    assert!(!master.log_dir().join("log-run").exists());

    // -f FILE: that file once, left in place; the channel's log is not touched.
    deliver(&mut store, "user.erin", 2);
    let saved = tmp.path().join("saved-log");
    fs::write(&saved, "USER erin\n").unwrap();
    let (status, err) = run_client(&master, &["-R", "-f", saved.to_str().unwrap()]);
    assert!(status.success(), "{err}");
    assert_eq!(last_uid("user.erin"), 2);
    assert!(saved.exists());
    assert!(master.log_dir().join("log").exists());

    // The shutdown file stops the daemon (and is removed).
    let shutdown = tmp.path().join("shutdown");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sync_client"))
        .arg("-C")
        .arg(&master.conf)
        .args(["-R", "-F", shutdown.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the log to be processed", Duration::from_secs(20), || {
        !master.log_dir().join("log").exists()
    });
    fs::write(&shutdown, "").unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no shutdown");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success());
    assert!(!shutdown.exists());

    // -r goes to the background at once; the daemon keeps replicating.
    /// Stops the background client even when an assertion fails.
    struct Stop<'a>(&'a Path);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = fs::write(self.0, "");
            let start = Instant::now();
            while self.0.exists() && start.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
    let stop = Stop(&shutdown);
    let (status, err) = run_client(&master, &["-r", "-F", shutdown.to_str().unwrap()]);
    assert!(status.success(), "{err}");
    let uid = deliver(&mut store, "user.erin", 3);
    wait_for(
        "the background client's work",
        Duration::from_secs(20),
        || last_uid("user.erin") >= uid,
    );
    fs::write(&shutdown, "").unwrap();
    wait_for(
        "the background client to stop",
        Duration::from_secs(20),
        || !shutdown.exists(),
    );
    drop(stop);

    // -o: a replica that is not there ends the client (EX_TEMPFAIL) instead of waiting.
    replica.kill();
    deliver(&mut store, "user.erin", 4);
    let (status, err) = run_client(&master, &["-R", "-o"]);
    assert_eq!(status.code(), Some(75), "{err}");
    assert!(err.contains("cannot connect"), "{err}");
    // The work is still there for later.
    assert!(master.log_dir().join("log").exists() || master.log_dir().join("log-run").exists());
}

/// `-N`: a user another sync_client is working on is skipped and re-logged, the
/// others go on, and the skipped work is done once the lock is free.
#[test]
fn skip_locked_users() {
    let tmp = tempfile::tempdir().unwrap();
    let replica = Replica::new(tmp.path(), "");
    let mut master = Master::new(tmp.path(), &replica, "");
    let mut store = master.store();
    store.create_mailbox("user.frank", None, None).unwrap();
    store.create_mailbox("user.gina", None, None).unwrap();
    let locks = csync_sync_client::rolling::lock::UserLocks::new(
        &master.dir.join("conf"),
        "127.0.0.1",
        replica.port,
    );
    let held = locks
        .try_lock(&csync_sync_client::rolling::quarantine::Subject::User(
            "frank".into(),
        ))
        .unwrap()
        .expect("lock");
    master.start_client(&["-N"]);
    let replica_store = replica.store();
    let has = |name: &str| replica_store.mailbox(name).unwrap().is_some();
    wait_for("gina", Duration::from_secs(20), || has("user.gina"));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!has("user.frank"));
    // frank's work waits in the log, not lost.
    wait_for("frank's work re-logged", Duration::from_secs(20), || {
        fs::read_to_string(master.log_dir().join("log"))
            .unwrap_or_default()
            .contains("user.frank")
            || fs::read_to_string(master.log_dir().join("log-run"))
                .unwrap_or_default()
                .contains("user.frank")
    });
    drop(held);
    wait_converged(&master, &store, &replica, Duration::from_secs(20));
    assert!(master.stop_client().success());
}

/// A replica that is down does not slow the master's writers, and what they did
/// arrives once it is back.
#[test]
fn writers_do_not_wait_for_a_dead_replica() {
    let tmp = tempfile::tempdir().unwrap();
    let mut replica = Replica::new(tmp.path(), "");
    let mut master = Master::new(tmp.path(), &replica, "");
    let mut store = master.store();
    store.create_mailbox("user.hal", None, None).unwrap();
    master.start_client(&[]);
    wait_converged(&master, &store, &replica, Duration::from_secs(20));
    replica.kill();
    let mut slowest = Duration::ZERO;
    for n in 0..50 {
        let start = Instant::now();
        deliver(&mut store, "user.hal", n);
        slowest = slowest.max(start.elapsed());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        slowest < Duration::from_secs(1),
        "a delivery took {slowest:?}"
    );
    replica.start();
    wait_converged(&master, &store, &replica, Duration::from_secs(30));
    assert!(master.stop_client().success());
}

/// A TCP proxy in front of the replica that drops the connection whenever the master
/// sends anything about `user.<victim>`: what a Cyrus replica does when it crashes on
/// a user's data (an unknown partition kills its process, spec §10.1).
fn killing_proxy(replica_port: u16, victim: &'static str) -> u16 {
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(server) = TcpStream::connect((Ipv4Addr::LOCALHOST, replica_port)) else {
                continue;
            };
            let (mut c_in, mut s_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
            let (mut s_in, mut c_out) = (server, client);
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut s_in, &mut c_out);
                let _ = c_out.shutdown(Shutdown::Both);
            });
            std::thread::spawn(move || {
                let needle = format!("user.{victim}");
                let mut tail: Vec<u8> = Vec::new();
                let mut buf = [0u8; 16 * 1024];
                loop {
                    let n = match c_in.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    tail.extend_from_slice(&buf[..n]);
                    if tail.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                        break;
                    }
                    if s_out.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    let keep = tail.len().saturating_sub(needle.len());
                    tail.drain(..keep);
                }
                let _ = c_in.shutdown(Shutdown::Both);
                let _ = s_out.shutdown(Shutdown::Both);
            });
        }
    });
    port
}

/// A user whose work keeps killing the connection is quarantined after five aborted
/// runs in a row; the other users' changes then flow again.
#[test]
fn connection_killing_user_is_quarantined() {
    let tmp = tempfile::tempdir().unwrap();
    let replica = Replica::new(tmp.path(), "csync_compress: no\n");
    let proxy = killing_proxy(replica.port, "evil");
    let mut master = Master::with_port(tmp.path(), proxy, "");
    let mut store = master.store();
    store.create_mailbox("user.evil", None, None).unwrap();
    store.create_mailbox("user.nice", None, None).unwrap();
    deliver(&mut store, "user.evil", 1);
    deliver(&mut store, "user.nice", 2);
    master.start_client(&[]);
    let replica_store = replica.store();
    let last_uid = |name: &str| {
        replica_store
            .mailbox(name)
            .unwrap()
            .map_or(0, |m| m.state.last_uid)
    };
    wait_for("nice's mail", Duration::from_secs(30), || {
        last_uid("user.nice") >= 1
    });
    let line = quarantine_text(&master);
    assert!(line.contains("\tevil\t"), "{line}\n{}", master.log_tail());
    let uid = deliver(&mut store, "user.nice", 3);
    deliver(&mut store, "user.evil", 4);
    wait_for("nice's next mail", Duration::from_secs(10), || {
        last_uid("user.nice") >= uid
    });
    assert_eq!(last_uid("user.evil"), 0);
    assert!(master.stop_client().success());
}
