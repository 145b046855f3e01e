//! `csync_staged_limit`: the client remembers the (partition, GUID) pairs it staged on
//! the replica only up to a limit, then sends `RESTART` between two users (never in
//! a user's folder pass), so a long `-A` run keeps a bounded set.
//!
//! The `sync_client` binary runs `-A -vv` against csync's replica (in a thread of
//! this test process). Every user holds the same message besides its own ones: with
//! a small limit, `RESTART` comes before every user but the first and before the
//! shared mailbox, and that message is uploaded again after each one (the replica
//! dropped its staging area, so the client must have forgotten it too); without the
//! key, no `RESTART` and that message goes once. Either way the replica ends equal
//! to the master (`sync_client --verify -A`, the records of every mailbox, and the
//! replica's files hashed against their GUIDs).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use csync_mailstore::Store;
use csync_mailstore::local::Flags;

#[path = "support/replica.rs"]
mod replica;
use replica::{open_store, start_replica};

const USERS: [&str; 4] = ["ann", "bob", "cat", "dan"];
const SHARED: &str = "shared";
/// Messages of its own in each user's INBOX (and one in the shared mailbox).
const OWN: u32 = 3;

/// The master's imapd.conf for a replica on `port`, with `extra` keys.
fn master_conf(dir: &Path, name: &str, port: u16, extra: &str) -> PathBuf {
    let conf = dir.join(name);
    std::fs::write(
        &conf,
        format!(
            "configdirectory: {d}/conf\npartition-default: {d}/spool\n\
             sync_host: 127.0.0.1:{port}\nsync_authname: repluser\nsync_password: secret\n\
             csync_allow_plaintext: yes\n{extra}",
            d = dir.display()
        ),
    )
    .unwrap();
    conf
}

fn message(tag: &str, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: a@example.com\r\nTo: b@example.com\r\nSubject: {tag}\r\n\
         Message-ID: <{tag}@example.com>\r\n\r\n"
    )
    .into_bytes();
    while m.len() < size {
        m.extend_from_slice(format!("body of {tag}, padding padding\r\n").as_bytes());
    }
    m
}

/// Each user: INBOX with `OWN` messages of its own and the common one, and a
/// subfolder with the common one again; a shared mailbox with one of its own and the
/// common one.
fn fill(store: &mut Store) {
    let common = message("common", 3000);
    let deliver = |store: &mut Store, name: &str, body: &[u8]| {
        store.deliver(name, body, &Flags::default(), None).unwrap();
    };
    for user in USERS {
        let inbox = format!("user.{user}");
        let sub = format!("user.{user}.Sub");
        store.create_mailbox(&inbox, None, None).unwrap();
        store.create_mailbox(&sub, None, None).unwrap();
        for n in 0..OWN {
            deliver(store, &inbox, &message(&format!("{user}-{n}"), 2000));
        }
        deliver(store, &inbox, &common);
        deliver(store, &sub, &common);
    }
    store.create_mailbox(SHARED, None, None).unwrap();
    deliver(store, SHARED, &message("shared-0", 2000));
    deliver(store, SHARED, &common);
}

fn sync_client(conf: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sync_client"))
        .arg("-C")
        .arg(conf)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// What a `-A -vv` run did.
struct Run {
    log: String,
}

impl Run {
    fn all(conf: &Path) -> Run {
        let out = sync_client(conf, &["-A", "-vv"]);
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "sync_client -A failed:\n{log}");
        Run { log }
    }

    /// The commands sent, in order (the `-vv` "sending" lines), up to EXIT.
    fn commands(&self) -> Vec<&str> {
        self.log
            .lines()
            .filter(|l| l.contains(" sending "))
            .filter_map(|l| l.split_once("command=").map(|(_, c)| c.trim()))
            .collect()
    }

    /// Where each user's sync and the shared mailbox's begin, and every RESTART.
    fn outline(&self) -> Vec<String> {
        self.commands()
            .into_iter()
            .filter(|c| {
                c.starts_with("GET USER") || c.starts_with("GET MAILBOXES") || *c == "RESTART"
            })
            .map(str::to_owned)
            .collect()
    }

    /// Messages uploaded, from the closing summary line.
    fn messages_sent(&self) -> u64 {
        let line = self
            .log
            .lines()
            .find(|l| l.contains("done in"))
            .unwrap_or_else(|| panic!("no summary line:\n{}", self.log));
        let (before, _) = line.split_once(" messages (").unwrap();
        before.rsplit(' ').next().unwrap().parse().unwrap()
    }
}

/// (uid, GUID, flags) of every record of a mailbox.
fn records(store: &Store, name: &str) -> Vec<(u32, String, u8, Vec<String>)> {
    let m = store
        .mailbox(name)
        .unwrap()
        .unwrap_or_else(|| panic!("{name} is missing"));
    let mut out = Vec::new();
    store
        .for_each_record(m.id, 0, |r| {
            out.push((
                r.record.uid,
                r.record.guid.to_string(),
                r.record.system_flags.bits(),
                r.record.user_flags.clone(),
            ));
            Ok(())
        })
        .unwrap();
    out
}

/// The replica equals the master: `--verify -A` (every mailbox field, both CRCs,
/// quotas, subscriptions, seen), the records of every mailbox, and its files hash to
/// their GUIDs.
fn assert_replica_equal(conf: &Path, master: &Store, replica_conf: &Path) {
    let out = sync_client(conf, &["--verify", "-A"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && !report.contains("DIFF"),
        "--verify -A:\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replica = open_store(replica_conf);
    let mut names: Vec<String> = Vec::new();
    for user in USERS {
        names.push(format!("user.{user}"));
        names.push(format!("user.{user}.Sub"));
    }
    names.push(SHARED.to_owned());
    for name in &names {
        let (a, b) = (
            master.mailbox(name).unwrap().unwrap(),
            replica.mailbox(name).unwrap().unwrap(),
        );
        assert_eq!(a.state.uniqueid, b.state.uniqueid, "{name}");
        assert_eq!(a.state.last_uid, b.state.last_uid, "{name}");
        assert_eq!(a.state.highestmodseq, b.state.highestmodseq, "{name}");
        assert_eq!(records(master, name), records(&replica, name), "{name}");
    }
    let files = replica.verify(None, true).unwrap();
    assert!(files.is_clean(), "replica files: {:?}", files.problems);
}

#[test]
fn staged_limit_restarts_between_users() {
    let tmp = tempfile::tempdir().unwrap();
    let master_dir = tmp.path().join("master");
    std::fs::create_dir_all(&master_dir).unwrap();
    let (limited_port, limited_replica) = start_replica(&tmp.path().join("replica-limited"));
    let (plain_port, plain_replica) = start_replica(&tmp.path().join("replica-plain"));
    // A user stages OWN + 1 files (the common one once: the subfolder's copy is
    // already staged), so a limit of OWN + 1 is reached after every user.
    let limited = master_conf(
        &master_dir,
        "limited.conf",
        limited_port,
        &format!("csync_staged_limit: {}\n", OWN + 1),
    );
    let plain = master_conf(&master_dir, "plain.conf", plain_port, "");
    let mut store = open_store(&limited);
    fill(&mut store);

    let run = Run::all(&limited);
    let get_user = |u: &str| format!("GET USER {u}");
    let mut expected: Vec<String> = Vec::new();
    for (i, user) in USERS.iter().enumerate() {
        if i > 0 {
            expected.push("RESTART".into());
        }
        expected.push(get_user(user));
    }
    expected.push("RESTART".into());
    expected.push(format!("GET MAILBOXES ({SHARED})"));
    assert_eq!(run.outline(), expected, "{}", run.log);
    assert_eq!(
        run.log
            .matches("staged-entry limit reached: RESTART")
            .count(),
        USERS.len(),
        "{}",
        run.log
    );
    // Every RESTART comes once the previous item is complete: its last command was
    // an APPLY MAILBOX or later (never between APPLY MESSAGE and its APPLY MAILBOX).
    let commands = run.commands();
    for (i, c) in commands.iter().enumerate() {
        if *c == "RESTART" {
            let previous = commands[..i]
                .iter()
                .rev()
                .find(|c| c.starts_with("APPLY MESSAGE") || c.starts_with("APPLY MAILBOX"))
                .unwrap();
            assert!(previous.starts_with("APPLY MAILBOX"), "{}", run.log);
        }
    }
    // After each RESTART the common message went again: the replica's staging
    // area was dropped, and the client's set with it.
    let items = (USERS.len() + 1) as u64;
    let own = USERS.len() as u64 * u64::from(OWN) + 1;
    assert_eq!(run.messages_sent(), own + items, "{}", run.log);
    assert_replica_equal(&limited, &store, &limited_replica);

    // A second run has nothing to send and nothing staged: no RESTART.
    let again = Run::all(&limited);
    assert!(
        !again.outline().iter().any(|c| c == "RESTART"),
        "{}",
        again.log
    );
    assert_eq!(again.messages_sent(), 0, "{}", again.log);

    // The same store without the key (default limit): no RESTART, and the common
    // message went once.
    let run = Run::all(&plain);
    assert!(!run.outline().iter().any(|c| c == "RESTART"), "{}", run.log);
    assert_eq!(run.messages_sent(), own + 1, "{}", run.log);
    assert_replica_equal(&plain, &store, &plain_replica);
}
