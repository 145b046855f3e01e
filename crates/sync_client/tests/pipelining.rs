//! The folder pass sends a mailbox's `APPLY MAILBOX` and collects its reply only after
//! the next mailbox's `APPLY MESSAGE` (one-deep pipelining). These tests run the
//! library against csync's replica (in a thread of the test process) and check that
//! replies are matched to their commands: a plain multi-mailbox sync, a first mailbox
//! that needs the repair of §4.6 while later mailboxes are in flight, a failure
//! (`-O`) that leaves an uncollected reply behind on a connection that is used again,
//! and an upload the replica refuses while its reply was not yet awaited.

use std::path::{Path, PathBuf};

use csync_mailstore::Store;
use csync_mailstore::local::Flags;
use csync_sync_client::config::ClientConfig;
use csync_sync_client::conn::Connection;
use csync_sync_client::progress::Progress;
use csync_sync_client::sync::{SyncError, SyncOptions, Syncer};

#[path = "support/replica.rs"]
mod replica;
use replica::{open_store, start_replica};

const MAILBOXES: [&str; 4] = [
    "user.alice",
    "user.alice.Archive",
    "user.alice.Lists",
    "user.alice.Work",
];

struct Master {
    conf: PathBuf,
}

impl Master {
    fn new(dir: &Path, port: u16) -> Master {
        std::fs::create_dir_all(dir).unwrap();
        let conf = dir.join("imapd.conf");
        std::fs::write(
            &conf,
            format!(
                "configdirectory: {d}/conf\npartition-default: {d}/spool\n\
                 partition-archive: {d}/archive\n\
                 sync_host: 127.0.0.1:{port}\nsync_authname: repluser\nsync_password: secret\n\
                 csync_allow_plaintext: yes\n",
                d = dir.display()
            ),
        )
        .unwrap();
        Master { conf }
    }

    fn store(&self) -> Store {
        open_store(&self.conf)
    }

    fn connect(&self) -> Connection {
        let conf = csync_config::Config::from_file(&self.conf).unwrap();
        let client = ClientConfig::from_imapd(&conf, None, None).unwrap();
        Connection::connect(&client.connect).unwrap()
    }
}

fn message(n: u32, size: usize) -> Vec<u8> {
    let mut m = format!(
        "From: a@example.com\r\nTo: b@example.com\r\nSubject: m{n}\r\n\
         Message-ID: <pipe{n}@example.com>\r\n\r\n"
    )
    .into_bytes();
    while m.len() < size {
        m.extend_from_slice(format!("body of message {n}, padding padding\r\n").as_bytes());
    }
    m
}

fn sync_user(
    store: &mut Store,
    conn: &mut Connection,
    opts: &SyncOptions,
) -> Result<(), SyncError> {
    let mut progress = Progress::new(false);
    Syncer {
        store,
        conn,
        opts,
        progress: &mut progress,
    }
    .sync_user("alice")
}

/// (uid, GUID, flags) of every live record of a mailbox (an expunged record keeps
/// each side's own GUID after a split-brain repair, as in Cyrus).
fn records(store: &Store, name: &str) -> Vec<(u32, String, u8, Vec<String>)> {
    let m = store.mailbox(name).unwrap().unwrap();
    let mut out = Vec::new();
    store
        .for_each_record(m.id, 0, |r| {
            if r.record.is_expunged() {
                return Ok(());
            }
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

/// The replica holds the master's version of every mailbox of `names`.
fn assert_same<S: AsRef<str>>(master: &Store, replica: &Store, names: &[S]) {
    for name in names {
        let name = name.as_ref();
        let (a, b) = (
            master.mailbox(name).unwrap().unwrap(),
            replica.mailbox(name).unwrap().unwrap(),
        );
        assert_eq!(a.state.last_uid, b.state.last_uid, "{name}");
        assert_eq!(a.state.highestmodseq, b.state.highestmodseq, "{name}");
        assert_eq!(records(master, name), records(replica, name), "{name}");
    }
}

/// `per_mailbox` new messages in each mailbox of `names`, numbered from `first`.
fn fill<S: AsRef<str>>(store: &mut Store, names: &[S], first: u32, per_mailbox: u32) {
    let mut n = first;
    for name in names {
        for _ in 0..per_mailbox {
            store
                .deliver(
                    name.as_ref(),
                    &message(n, 2000 + 97 * n as usize)[..],
                    &Flags::default(),
                    None,
                )
                .unwrap();
            n += 1;
        }
    }
}

#[test]
fn pipelined_pass_matches_replies_to_mailboxes() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, replica_conf) = start_replica(&tmp.path().join("replica"));
    let master = Master::new(&tmp.path().join("master"), port);
    let mut store = master.store();
    for name in MAILBOXES {
        store.create_mailbox(name, None, None).unwrap();
    }
    fill(&mut store, &MAILBOXES, 1, 5);
    let opts = SyncOptions::default();
    let mut conn = master.connect();

    // Into an empty replica: every mailbox, every message.
    sync_user(&mut store, &mut conn, &opts).unwrap();
    assert_eq!(conn.deferred_pending(), 0);
    let replica = open_store(&replica_conf);
    assert_same(&store, &replica, &MAILBOXES);
    // One APPLY MESSAGE and one APPLY MAILBOX per mailbox.
    assert_eq!(conn.stats.applies, 2 * MAILBOXES.len() as u64);

    // Split brain in the first mailbox (the same uid holds different messages on the
    // two sides), while the later mailboxes have new messages too: the first one's
    // deferred APPLY MAILBOX fails, is repaired after the second one's upload went
    // out, and the pass goes on.
    let mut replica_store = open_store(&replica_conf);
    let uid = replica_store
        .deliver(
            "user.alice",
            &message(900, 3000)[..],
            &Flags::default(),
            None,
        )
        .unwrap();
    let replica_msg = records(&replica_store, "user.alice")
        .into_iter()
        .find(|r| r.0 == uid)
        .unwrap()
        .1;
    fill(&mut store, &MAILBOXES, 100, 2);
    assert_eq!(
        store.mailbox("user.alice").unwrap().unwrap().state.last_uid,
        uid + 1,
        "the master's new uids overlap the replica's"
    );
    // -O first: no repair, a clear error, and the reply of the mailbox in flight behind
    // the failing one must not be taken for the reply of a later command.
    let no_copyback = SyncOptions {
        no_copyback: true,
        ..SyncOptions::default()
    };
    match sync_user(&mut store, &mut conn, &no_copyback) {
        Err(SyncError::NoCopyback { mailbox }) => assert_eq!(mailbox, "user.alice"),
        other => panic!("expected NoCopyback, got {other:?}"),
    }
    assert_eq!(conn.deferred_pending(), 0);
    // The same connection, reused: a normal sync repairs and converges.
    sync_user(&mut store, &mut conn, &opts).unwrap();
    assert_eq!(conn.deferred_pending(), 0);
    let replica = open_store(&replica_conf);
    assert_same(&store, &replica, &MAILBOXES);
    // Both messages of the split brain are kept (§4.6).
    let guids: Vec<String> = records(&store, "user.alice")
        .into_iter()
        .map(|r| r.1)
        .collect();
    assert!(guids.contains(&replica_msg), "{guids:?}");

    // Converged: a second pass sends no APPLY at all.
    let before = conn.stats.applies;
    sync_user(&mut store, &mut conn, &opts).unwrap();
    assert_eq!(conn.stats.applies, before);
    let _ = conn.exit();
}

const USERS: [&str; 3] = ["alice", "bob", "carol"];

/// Every user in turn, as `sync_client -A` does: each user's last mailbox is carried
/// into the next user's pass (`expect_carry`: every time; a last mailbox without
/// changes is not). Returns each user's result; the failures recorded for carried
/// mailboxes are appended to `carried`.
fn sync_users(
    store: &mut Store,
    conn: &mut Connection,
    opts: &SyncOptions,
    expect_carry: bool,
    carried: &mut Vec<(String, String)>,
) -> Vec<Result<(), SyncError>> {
    let mut progress = Progress::new(false);
    let mut results = Vec::new();
    for (i, user) in USERS.iter().enumerate() {
        let mut s = Syncer {
            store,
            conn,
            opts,
            progress: &mut progress,
        };
        results.push(s.sync_user_then(user, USERS.get(i + 1).copied()));
        let last = store.user_mailboxes(user).unwrap().pop().unwrap();
        if expect_carry && i + 1 < USERS.len() {
            assert!(
                conn.carried.is_some(),
                "{user}: last mailbox not carried over"
            );
        }
        if let Some(c) = &conn.carried {
            // The hand-off happened: this user's last mailbox is still in flight.
            assert_eq!(
                (c.userid.as_str(), c.mailbox.as_str()),
                (*user, last.name())
            );
        }
        carried.append(&mut conn.carried_failures);
    }
    Syncer {
        store,
        conn,
        opts,
        progress: &mut progress,
    }
    .conclude_carried()
    .unwrap();
    carried.append(&mut conn.carried_failures);
    assert!(conn.carried.is_none());
    assert_eq!(conn.deferred_pending(), 0);
    results
}

fn user_mailbox_names(user: &str) -> [String; 2] {
    [format!("user.{user}"), format!("user.{user}.Archive")]
}

fn all_user_mailboxes() -> Vec<String> {
    USERS.iter().flat_map(|u| user_mailbox_names(u)).collect()
}

#[test]
fn last_mailbox_of_a_user_is_collected_in_the_next_users_pass() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, replica_conf) = start_replica(&tmp.path().join("replica"));
    let master = Master::new(&tmp.path().join("master"), port);
    let mut store = master.store();
    for user in USERS {
        for name in user_mailbox_names(user) {
            store.create_mailbox(&name, None, None).unwrap();
        }
    }
    fill(&mut store, &all_user_mailboxes(), 1, 4);
    let opts = SyncOptions::default();
    let mut conn = master.connect();
    let mut carried = Vec::new();

    let results = sync_users(&mut store, &mut conn, &opts, true, &mut carried);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(carried.is_empty(), "{carried:?}");
    assert_same(&store, &open_store(&replica_conf), &all_user_mailboxes());
    // Three GET USER (two of them sent ahead), an upload and an APPLY MAILBOX per
    // mailbox.
    assert_eq!(conn.stats.gets, 3);
    assert_eq!(conn.stats.applies, 2 * 6);

    // Split brain in alice's last mailbox, the one carried into bob's pass, with -O:
    // the failure is alice's, and bob and carol still sync.
    let last = store.user_mailboxes("alice").unwrap().pop().unwrap();
    let last = last.name().to_owned();
    let mut replica_store = open_store(&replica_conf);
    replica_store
        .deliver(&last, &message(900, 3000)[..], &Flags::default(), None)
        .unwrap();
    drop(replica_store);
    fill(&mut store, &all_user_mailboxes(), 100, 1);
    let no_copyback = SyncOptions {
        no_copyback: true,
        ..SyncOptions::default()
    };
    let results = sync_users(&mut store, &mut conn, &no_copyback, true, &mut carried);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert_eq!(carried.len(), 1, "{carried:?}");
    assert_eq!(carried[0].0, "alice");
    assert!(carried[0].1.contains(&last), "{carried:?}");
    let replica = open_store(&replica_conf);
    for user in ["bob", "carol"] {
        for name in user_mailbox_names(user) {
            assert_eq!(records(&store, &name), records(&replica, &name), "{name}");
        }
    }
    drop(replica);

    // Without -O the same connection repairs alice and everything converges.
    carried.clear();
    let results = sync_users(&mut store, &mut conn, &opts, false, &mut carried);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(carried.is_empty(), "{carried:?}");
    assert_same(&store, &open_store(&replica_conf), &all_user_mailboxes());
    let _ = conn.exit();
}

/// A mailbox's last `APPLY MESSAGE` is not awaited before its `APPLY MAILBOX` and the
/// next mailbox's upload. The replica refuses one (a partition it does not have):
/// the failure names that mailbox and command, its files are not taken as staged,
/// and the connection goes on matching replies to commands.
#[test]
fn a_refused_upload_fails_its_own_mailbox_only() {
    let tmp = tempfile::tempdir().unwrap();
    let (port, replica_conf) = start_replica(&tmp.path().join("replica"));
    let master = Master::new(&tmp.path().join("master"), port);
    let mut store = master.store();
    let refused = "user.alice.Lists";
    for name in MAILBOXES {
        let partition = (name == refused).then_some("archive");
        store.create_mailbox(name, partition, None).unwrap();
    }
    fill(&mut store, &MAILBOXES, 1, 3);
    let opts = SyncOptions::default();
    let mut conn = master.connect();

    let failed = sync_user(&mut store, &mut conn, &opts);
    let text = format!("{failed:?}");
    assert!(
        text.contains("APPLY MESSAGE") && text.contains(refused),
        "{text}"
    );
    assert_eq!(conn.deferred_pending(), 0);
    let replica = open_store(&replica_conf);
    assert!(replica.mailbox(refused).unwrap().is_none());
    // The mailboxes before the refused one were applied, whole.
    assert_same(&store, &replica, &MAILBOXES[..2]);
    drop(replica);

    // The same connection, with every mailbox on the replica's default partition:
    // everything converges, the refused files included.
    let opts = SyncOptions {
        partition: Some("default".into()),
        ..SyncOptions::default()
    };
    sync_user(&mut store, &mut conn, &opts).unwrap();
    assert_eq!(conn.deferred_pending(), 0);
    assert_same(&store, &open_store(&replica_conf), &MAILBOXES);
    let _ = conn.exit();
}
