//! Whole-store behaviour: local changes, their sync_log records, CRCs, names, files.

use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};

use csync_mailstore::local::{FlagOp, Flags};
use csync_mailstore::txn::ChangeLog;
use csync_mailstore::{DeleteMode, FileSource, LogEntry, Store, StoreConfig, StoreError};
use csync_protocol::crc::SyncCrcs;
use csync_protocol::mailbox::{MailboxState, Record, SystemFlags};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<LogEntry>>>);

impl ChangeLog for Captured {
    fn append(&self, entries: &[LogEntry]) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.0.lock().unwrap().extend_from_slice(entries);
        Ok(())
    }
}

impl Captured {
    fn take(&self) -> Vec<LogEntry> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn store() -> (tempfile::TempDir, Store, Captured) {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(StoreConfig::single_dir(dir.path())).unwrap();
    let log = Captured::default();
    store.set_changelog(Some(Box::new(log.clone())));
    (dir, store, log)
}

const M1: &[u8] = b"From: Alice <alice@example.com>\r\nTo: John <john@example.com>\r\nSubject: first\r\nDate: Tue, 14 Nov 2023 22:15:00 +0000\r\nMessage-ID: <m1@example.com>\r\n\r\nHello John.\r\n";

fn s(x: &str) -> String {
    x.to_owned()
}

fn recomputed(store: &Store, name: &str) -> SyncCrcs {
    let m = store.real_mailbox(name).unwrap();
    let mut crcs = SyncCrcs::new();
    store
        .for_each_record(m.id, 0, |r| {
            crcs.add(&r.record);
            Ok(())
        })
        .unwrap();
    crcs
}

fn assert_crcs_current(store: &Store, name: &str) {
    let m = store.real_mailbox(name).unwrap();
    let c = recomputed(store, name);
    assert_eq!(
        (m.state.sync_crc, m.state.sync_crc_annot),
        (c.basic, Some(c.annot)),
        "{name}"
    );
}

#[test]
fn mutations_write_the_records_cyrus_writes() {
    let (_dir, mut store, log) = store();
    store.create_mailbox("user.john", None, None).unwrap();
    assert_eq!(log.take(), vec![LogEntry::Mailbox(s("user.john"))]);

    let uid = store
        .deliver("user.john", M1, &Flags::default(), Some(1700000100))
        .unwrap();
    assert_eq!(uid, 1);
    assert_eq!(log.take(), vec![LogEntry::Append(s("user.john"))]);
    let m = store.real_mailbox("user.john").unwrap();
    assert_eq!(m.state.last_uid, 1);
    assert_eq!(m.state.highestmodseq, 2);
    let rec = store.record(m.id, 1).unwrap().unwrap();
    assert_eq!(
        rec.record.guid.to_hex(),
        "edaa9f52a858bda063269730eb4f9881ad296e5e"
    );
    assert_eq!(rec.record.size, 162);
    assert_eq!(rec.record.createdmodseq, 2);
    assert_crcs_current(&store, "user.john");

    let seen = Flags::parse(["\\Seen", "$Label1", "Junk"]).unwrap();
    assert_eq!(
        store
            .store_flags("user.john", &[1], FlagOp::Add, &seen)
            .unwrap(),
        1
    );
    assert_eq!(log.take(), vec![LogEntry::Mailbox(s("user.john"))]);
    assert_crcs_current(&store, "user.john");

    store
        .deliver("user.john", &b"second\r\n"[..], &Flags::default(), None)
        .unwrap();
    log.take();
    let deleted = Flags::parse(["\\Deleted"]).unwrap();
    store
        .store_flags("user.john", &[2], FlagOp::Add, &deleted)
        .unwrap();
    assert_eq!(store.expunge("user.john", None).unwrap(), 1);
    let rec = store.record(m.id, 2).unwrap().unwrap();
    assert!(rec.record.is_expunged());
    assert_crcs_current(&store, "user.john");
    log.take();

    store
        .create_mailbox("user.john.Other Stuff", None, None)
        .unwrap();
    store
        .create_mailbox("user.john.Other Stuff.Sub", None, None)
        .unwrap();
    log.take();
    store
        .rename_mailbox("user.john.Other Stuff", "user.john.Archive", None)
        .unwrap();
    assert_eq!(
        log.take(),
        vec![
            LogEntry::Rename(s("user.john.Other Stuff"), s("user.john.Archive")),
            LogEntry::Mailbox(s("user.john.Other Stuff")),
            LogEntry::Mailbox(s("user.john.Archive")),
            LogEntry::Rename(s("user.john.Other Stuff.Sub"), s("user.john.Archive.Sub")),
            LogEntry::Mailbox(s("user.john.Other Stuff.Sub")),
            LogEntry::Mailbox(s("user.john.Archive.Sub")),
        ]
    );
    assert!(store.mailbox("user.john.Archive.Sub").unwrap().is_some());

    store.delete_mailbox("user.john.Archive.Sub").unwrap();
    let entries = log.take();
    assert!(matches!(&entries[0], LogEntry::Rename(a, b)
        if a == "user.john.Archive.Sub" && b.starts_with("DELETED.user.john.Archive.Sub.")));

    store.subscribe("john", "user.john.Archive", true).unwrap();
    assert_eq!(
        log.take(),
        vec![LogEntry::Sub(s("john"), s("user.john.Archive"))]
    );
    store
        .set_quota("user.john", Some(10240), Some(500))
        .unwrap();
    assert_eq!(log.take(), vec![LogEntry::Quota(s("user.john"))]);
    assert_eq!(
        store
            .real_mailbox("user.john.Archive")
            .unwrap()
            .state
            .quotaroot
            .as_deref(),
        Some("user.john")
    );
    store.set_acl("user.john", "anyone", Some("lr")).unwrap();
    assert_eq!(log.take(), vec![LogEntry::Mailbox(s("user.john"))]);
    assert_eq!(
        store.real_mailbox("user.john").unwrap().state.acl,
        "john\tlrswipkxtecdan\tanyone\tlr\t"
    );
    store
        .set_annotation("user.john", "/comment", "", Some(b"hello"))
        .unwrap();
    assert_eq!(log.take(), vec![LogEntry::Mailbox(s("user.john"))]);
    store.set_annotation("", "/motd", "", Some(b"hi")).unwrap();
    assert_eq!(log.take(), vec![LogEntry::Annotation(String::new())]);
    store
        .put_sieve("john", "myfilter", b"keep;\r\n", true)
        .unwrap();
    assert_eq!(log.take(), vec![LogEntry::Meta(s("john"))]);
    let sieve = store.sieve_entries("john").unwrap();
    assert_eq!(sieve.len(), 2);
    assert_eq!(sieve[1].filename, "myfilter.bc");

    store.create_mailbox("user.alice", None, None).unwrap();
    log.take();
    store.set_seen("john", "user.alice", &[1, 2, 3, 5]).unwrap();
    let alice = store.real_mailbox("user.alice").unwrap();
    assert_eq!(
        log.take(),
        vec![LogEntry::Seen(s("john"), alice.state.uniqueid.clone())]
    );
    assert_eq!(store.seen("john").unwrap()[0].seenuids, "1:3,5");

    let report = store.verify(None, true).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);

    store.delete_user("john").unwrap();
    assert_eq!(log.take(), vec![LogEntry::Unuser(s("john"))]);
    assert!(store.user_mailboxes("john").unwrap().is_empty());
    assert!(store.subscriptions("john").unwrap().is_empty());
    let report = store.verify(None, true).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
}

#[test]
fn immediate_delete_leaves_a_tombstone() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = StoreConfig::single_dir(dir.path());
    config.delete_mode = DeleteMode::Immediate;
    let mut store = Store::open(config).unwrap();
    let log = Captured::default();
    store.set_changelog(Some(Box::new(log.clone())));
    store.create_mailbox("user.bob", None, None).unwrap();
    store.create_mailbox("user.bob.Old", None, None).unwrap();
    store
        .deliver("user.bob.Old", M1, &Flags::default(), None)
        .unwrap();
    let path = store
        .message_path(&store.real_mailbox("user.bob.Old").unwrap(), 1)
        .unwrap();
    assert!(path.is_file());
    log.take();
    store.delete_mailbox("user.bob.Old").unwrap();
    assert_eq!(log.take(), vec![LogEntry::Unmailbox(s("user.bob.Old"))]);
    let tomb = store.mailbox("user.bob.Old").unwrap().unwrap();
    assert!(tomb.is_tombstone());
    assert!(!path.exists());
    assert!(store.verify(None, false).unwrap().is_clean());
}

#[test]
fn same_message_is_hard_linked_within_a_partition() {
    let (_dir, mut store, _log) = store();
    store.create_mailbox("user.john", None, None).unwrap();
    store.create_mailbox("user.john.Sent", None, None).unwrap();
    store
        .deliver("user.john", M1, &Flags::default(), None)
        .unwrap();
    store
        .deliver("user.john.Sent", M1, &Flags::default(), None)
        .unwrap();
    let a = store
        .message_path(&store.real_mailbox("user.john").unwrap(), 1)
        .unwrap();
    let b = store
        .message_path(&store.real_mailbox("user.john.Sent").unwrap(), 1)
        .unwrap();
    assert_eq!(
        std::fs::metadata(a).unwrap().ino(),
        std::fs::metadata(b).unwrap().ino()
    );
}

#[test]
fn a_failed_transaction_changes_nothing() {
    let (_dir, mut store, log) = store();
    let state = MailboxState {
        uniqueid: s("c200jgj6thb3ssu8ep4jb0il"),
        mboxname: s("user.john"),
        uidvalidity: 1795299501,
        partition: s("default"),
        acl: s("john\tlrswipkxtecdan\t"),
        options: s("P"),
        ..MailboxState::default()
    };
    let guid = csync_protocol::Guid::parse(b"edaa9f52a858bda063269730eb4f9881ad296e5e").unwrap();
    let record = |uid: u32| Record {
        uid,
        modseq: 2,
        last_updated: 1795299500,
        internaldate: 1700000100,
        size: 162,
        guid,
        ..Record::default()
    };
    // The second record's bytes do not hash to its GUID: the whole apply must vanish.
    let err = store
        .write(|txn| {
            let m = txn.create_mailbox(&state)?;
            txn.put_record(&m, &record(1), FileSource::Reader(Box::new(M1)))?;
            txn.put_record(
                &m,
                &record(2),
                FileSource::Reader(Box::new(&b"tampered"[..])),
            )?;
            Ok(())
        })
        .unwrap_err();
    assert!(matches!(err, StoreError::GuidMismatch { .. }), "{err}");
    assert!(store.mailbox("user.john").unwrap().is_none());
    assert!(log.take().is_empty());
    let report = store.verify(None, false).unwrap();
    assert!(report.is_clean());
    // What the failed transaction wrote is gone or at least unreferenced leftovers.
    store.repair(&report).unwrap();
    assert!(store.verify(None, false).unwrap().leftovers.is_empty());

    // The same apply with good bytes commits, CRCs maintained.
    store
        .write(|txn| {
            let mut m = txn.create_mailbox(&state)?;
            txn.put_record(&m, &record(1), FileSource::Reader(Box::new(M1)))?;
            let mut expunged = record(2);
            expunged.system_flags = SystemFlags::DELETED | SystemFlags::EXPUNGED;
            txn.put_record(&m, &expunged, FileSource::Keep)?;
            m.state.last_uid = 2;
            m.state.highestmodseq = 3;
            txn.update_header(&m)
        })
        .unwrap();
    assert_crcs_current(&store, "user.john");
    let m = store.real_mailbox("user.john").unwrap();
    assert_eq!(
        m.state.sync_crc, 2870106367,
        "matches the worked example of the spec"
    );
}

#[test]
fn path_escapes_are_refused_and_change_nothing() {
    let (dir, mut store, log) = store();
    for name in ["user.john/../../etc", "../user", "user..x", "", "user.\0"] {
        assert!(
            matches!(
                store.create_mailbox(name, None, None),
                Err(StoreError::BadName { .. })
            ),
            "{name:?}"
        );
    }
    assert!(matches!(
        store.create_mailbox("user.john", Some("../../etc"), None),
        Err(StoreError::BadName { .. })
    ));
    assert!(matches!(
        store.create_mailbox("user.john", Some("nosuch"), None),
        Err(StoreError::UnknownPartition(_))
    ));
    let bad_uniqueid = MailboxState {
        uniqueid: s("../../../tmp/x"),
        mboxname: s("user.john"),
        partition: s("default"),
        ..MailboxState::default()
    };
    assert!(matches!(
        store.write(|txn| txn.create_mailbox(&bad_uniqueid).map(|_| ())),
        Err(StoreError::BadName { .. })
    ));
    assert!(store.put_sieve("john", "../evil", b"x", false).is_err());
    assert!(store.subscribe("../john", "user.john", true).is_err());
    assert!(log.take().is_empty());
    assert!(store.users().unwrap().is_empty());
    let entries: Vec<_> = std::fs::read_dir(dir.path().join("spool"))
        .unwrap()
        .collect();
    assert!(entries.is_empty(), "nothing was created in the partition");
}

#[test]
fn records_stream_in_uid_order_with_annotations() {
    let (_dir, mut store, _log) = store();
    store.create_mailbox("user.john", None, None).unwrap();
    for i in 0..50 {
        store
            .deliver(
                "user.john",
                format!("message {i}\r\n").as_bytes(),
                &Flags::default(),
                None,
            )
            .unwrap();
    }
    let m = store.real_mailbox("user.john").unwrap();
    let mut uids = Vec::new();
    store
        .for_each_record(m.id, 25, |r| {
            uids.push(r.record.uid);
            Ok(())
        })
        .unwrap();
    // modseq of uid n is n + 1, so modseq > 25 means uid >= 25.
    assert_eq!(uids, (25..=50).collect::<Vec<_>>());
}

#[test]
fn expunge_of_a_uid_list_touches_only_those_uids() {
    let (_dir, mut store, _log) = store();
    store.create_mailbox("user.john", None, None).unwrap();
    for i in 0..5 {
        store
            .deliver(
                "user.john",
                format!("message {i}\r\n").as_bytes(),
                &Flags::default(),
                None,
            )
            .unwrap();
    }
    let m = store.real_mailbox("user.john").unwrap();
    assert_eq!(store.message_count(m.id).unwrap(), 5);
    // Unsorted, with a uid that does not exist.
    assert_eq!(store.expunge("user.john", Some(&[4, 9, 2])).unwrap(), 2);
    let mut expunged = Vec::new();
    store
        .for_each_record(m.id, 0, |r| {
            if r.record.is_expunged() {
                expunged.push(r.record.uid);
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(expunged, [2, 4]);
    assert_eq!(store.message_count(m.id).unwrap(), 3);
    assert_crcs_current(&store, "user.john");
}

#[test]
fn repair_keeps_what_was_committed_after_verify_looked() {
    let (_dir, mut store, _log) = store();
    store.create_mailbox("user.john", None, None).unwrap();
    store
        .deliver("user.john", M1, &Flags::default(), None)
        .unwrap();
    let m = store.real_mailbox("user.john").unwrap();
    let dir = store.mailbox_dir(&m).unwrap();
    // An interrupted transaction left uid 2's file; a stray file; two delivery
    // temporaries, one of a delivery that may still be running.
    std::fs::write(dir.join("2."), b"partial").unwrap();
    std::fs::write(dir.join("7."), b"stray").unwrap();
    let fresh_tmp = dir.join(".deliver-1-1.tmp");
    std::fs::write(&fresh_tmp, b"streaming").unwrap();
    let old_tmp = dir.join(".deliver-2-2.tmp");
    std::fs::write(&old_tmp, b"abandoned").unwrap();
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&old_tmp)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    let report = store.verify(None, true).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    assert_eq!(report.leftovers.len(), 4, "{:?}", report.leftovers);

    // On a live server, uid 2 is delivered between verify and repair.
    assert_eq!(
        store
            .deliver("user.john", &b"second\r\n"[..], &Flags::default(), None)
            .unwrap(),
        2
    );
    assert_eq!(store.repair(&report).unwrap(), 2);
    assert_eq!(std::fs::read(dir.join("2.")).unwrap(), b"second\r\n");
    assert!(!dir.join("7.").exists());
    assert!(!old_tmp.exists());
    let after = store.verify(None, true).unwrap();
    assert!(after.is_clean(), "{:?}", after.problems);
    assert_eq!(after.leftovers, vec![fresh_tmp]);
}

/// The exact sync_log lines local changes write, through the real sync_log writer,
/// for names with spaces, quotes, braces, dots (`^`) and modified UTF-7.
#[test]
fn local_changes_write_exact_sync_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::single_dir(dir.path());
    let conf_dir = config.configdirectory.clone();
    let mut store = Store::open(config).unwrap();
    let log = csync_synclog::SyncLog::new(&conf_dir, vec![csync_synclog::Channel::Default]);
    store.set_changelog(Some(Box::new(log)));
    store.create_mailbox("user.john", None, None).unwrap();
    store
        .create_mailbox("user.john.Other Stuff", None, None)
        .unwrap();
    store
        .create_mailbox("user.john.a \"q\" {x}", None, None)
        .unwrap();
    store.create_mailbox("user.john^doe", None, None).unwrap();
    store
        .create_mailbox("user.john.J&AOQ-rg", None, None)
        .unwrap();
    store
        .deliver("user.john.Other Stuff", M1, &Flags::default(), None)
        .unwrap();
    store
        .store_flags(
            "user.john.Other Stuff",
            &[1],
            FlagOp::Add,
            &Flags::parse(["\\Seen"]).unwrap(),
        )
        .unwrap();
    store
        .rename_mailbox("user.john.Other Stuff", "user.john.Archive 2024", None)
        .unwrap();
    store.subscribe("john.doe", "user.john^doe", true).unwrap();
    store.set_quota("user.john", Some(100), None).unwrap();
    store.set_annotation("", "/motd", "", Some(b"hi")).unwrap();
    store.put_sieve("john", "main", b"keep;", true).unwrap();
    store.delete_user("john.doe").unwrap();
    let text = std::fs::read_to_string(conf_dir.join("sync/log")).unwrap();
    assert_eq!(
        text,
        "MAILBOX user.john\n\
         MAILBOX \"user.john.Other Stuff\"\n\
         MAILBOX \"user.john.a \\\"q\\\" \\{x\\}\"\n\
         MAILBOX user.john^doe\n\
         MAILBOX user.john.J&AOQ-rg\n\
         APPEND \"user.john.Other Stuff\"\n\
         MAILBOX \"user.john.Other Stuff\"\n\
         RENAME \"user.john.Other Stuff\" \"user.john.Archive 2024\"\n\
         MAILBOX \"user.john.Other Stuff\"\n\
         MAILBOX \"user.john.Archive 2024\"\n\
         SUB john.doe user.john^doe\n\
         QUOTA user.john\n\
         ANNOTATION \"\"\n\
         META john\n\
         UNUSER john.doe\n"
    );
}

#[test]
fn a_renamed_mailbox_counts_against_the_quota_root_of_its_new_name() {
    let (_dir, mut store, _log) = store();
    store.create_mailbox("user.john", None, None).unwrap();
    store.create_mailbox("user.anna", None, None).unwrap();
    store.set_quota("user.john", Some(100), None).unwrap();
    store.set_quota("user.anna", Some(100), None).unwrap();
    store.create_mailbox("user.john.Box", None, None).unwrap();
    assert_eq!(
        store
            .real_mailbox("user.john.Box")
            .unwrap()
            .state
            .quotaroot
            .as_deref(),
        Some("user.john")
    );
    store
        .rename_mailbox("user.john.Box", "user.anna.Box", None)
        .unwrap();
    assert_eq!(
        store
            .real_mailbox("user.anna.Box")
            .unwrap()
            .state
            .quotaroot
            .as_deref(),
        Some("user.anna")
    );
}

#[test]
fn create_makes_missing_parents_real_mailboxes_first() {
    let (_dir, mut store, log) = store();
    store.create_mailbox("user.john.A.B.C", None, None).unwrap();
    for name in [
        "user.john",
        "user.john.A",
        "user.john.A.B",
        "user.john.A.B.C",
    ] {
        assert!(store.real_mailbox(name).is_ok(), "{name}");
    }
    assert_eq!(
        log.take(),
        [
            "user.john",
            "user.john.A",
            "user.john.A.B",
            "user.john.A.B.C"
        ]
        .map(|n| LogEntry::Mailbox(s(n)))
    );
    store
        .create_mailbox("shared.lists.dev", None, None)
        .unwrap();
    assert!(store.real_mailbox("shared").is_ok());
    assert!(store.real_mailbox("shared.lists").is_ok());
    assert!(store.mailbox("user").unwrap().is_none());
}

#[test]
fn deleting_the_same_name_twice_in_one_second_keeps_both_copies() {
    let (_dir, mut store, _log) = store();
    store.create_mailbox("user.john.X", None, None).unwrap();
    store.delete_mailbox("user.john.X").unwrap();
    store.create_mailbox("user.john.X", None, None).unwrap();
    store.delete_mailbox("user.john.X").unwrap();
    let deleted: Vec<String> = store
        .user_mailboxes("john")
        .unwrap()
        .into_iter()
        .filter(|m| m.name().starts_with("DELETED."))
        .map(|m| m.name().to_owned())
        .collect();
    assert_eq!(deleted.len(), 2, "{deleted:?}");
}
