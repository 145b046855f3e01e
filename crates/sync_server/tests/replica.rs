//! The replica's answers to hostile and conflicting input (spec §3.4.3, §9.7, §10.1):
//! every one gets its exact Cyrus reply where Cyrus has one, a clear `NO` where Cyrus
//! crashes, and leaves the store unchanged and consistent.

use csync_mailstore::{Store, StoreConfig};
use csync_protocol::decode::{Decoder, Mode};
use csync_sync_server::replica::Replica;
use csync_sync_server::staging::Staging;

#[path = "support/reply.rs"]
mod reply;
use reply::execute_line;

const M1: &[u8] = b"From: Alice <alice@example.com>\r\nTo: John <john@example.com>\r\nSubject: first\r\nDate: Tue, 14 Nov 2023 22:15:00 +0000\r\nMessage-ID: <m1@example.com>\r\n\r\nHello John.\r\n";
const M1_GUID: &str = "edaa9f52a858bda063269730eb4f9881ad296e5e";

struct Harness {
    _dir: tempfile::TempDir,
    replica: Replica,
    decoder: Decoder,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::single_dir(dir.path());
        let store = Store::open(config.clone()).unwrap();
        Harness {
            _dir: dir,
            replica: Replica::new(store, Staging::new(&config), true),
            decoder: Decoder::new(Mode::Commands),
        }
    }

    /// Sends one command line; returns the reply as Cyrus would write it.
    fn send(&mut self, input: &[u8]) -> String {
        let feed = self.decoder.feed(input, &mut self.replica.staging).unwrap();
        assert!(
            feed.complete && feed.consumed == input.len(),
            "one whole line"
        );
        execute_line(&mut self.replica, &self.decoder)
    }

    fn upload_m1(&mut self) {
        let mut line =
            format!("APPLY MESSAGE (%{{default {M1_GUID} {}}}\r\n", M1.len()).into_bytes();
        line.extend_from_slice(M1);
        line.extend_from_slice(b")\r\n");
        assert_eq!(self.send(&line), "OK success\r\n");
    }

    fn mailbox_line(&self, extra: &str, records: &str) -> Vec<u8> {
        format!(
            "APPLY MAILBOX %(UNIQUEID c200jgj6thb3ssu8ep4jb0il MBOXNAME user.john SYNC_CRC 0 \
             SYNC_CRC_ANNOT 0 LAST_UID 1 HIGHESTMODSEQ 2 RECENTUID 0 RECENTTIME 0 \
             LAST_APPENDDATE 0 POP3_LAST_LOGIN 0 POP3_SHOW_AFTER 0 UIDVALIDITY 1795299501 \
             PARTITION default ACL \"john\tlrswipkxtecdan\t\" OPTIONS P{extra} RECORD ({records}))\r\n"
        )
        .into_bytes()
    }

    fn record(uid: u32, modseq: u64, guid: &str, flags: &str) -> String {
        format!(
            "%(UID {uid} MODSEQ {modseq} LAST_UPDATED 1795299500 FLAGS ({flags}) \
             INTERNALDATE 1700000100 SIZE {} GUID {guid})",
            M1.len()
        )
    }

    fn state(&self) -> String {
        match self.replica.store.mailbox("user.john").unwrap() {
            Some(m) => format!(
                "{} last_uid={} modseq={} crc={}",
                m.state.uniqueid, m.state.last_uid, m.state.highestmodseq, m.state.sync_crc
            ),
            None => "absent".into(),
        }
    }

    fn assert_clean(&self) {
        let report = self.replica.store.verify(None, true).unwrap();
        assert!(report.is_clean(), "{:?}", report.problems);
    }
}

#[test]
fn an_append_without_a_staged_file_is_refused_cleanly() {
    // Cyrus aborts (SIGABRT) here; csync answers and changes nothing.
    let mut h = Harness::new();
    let reply = h.send(&h.mailbox_line("", &Harness::record(1, 2, M1_GUID, "")));
    assert_eq!(reply, "NO IMAP_PROTOCOL_ERROR Protocol error\r\n");
    assert_eq!(h.state(), "absent");
    h.assert_clean();
}

#[test]
fn bytes_that_do_not_hash_to_their_guid_are_never_stored() {
    let mut h = Harness::new();
    let mut line = format!("APPLY MESSAGE (%{{default {M1_GUID} 5}}\r\n").into_bytes();
    line.extend_from_slice(b"false)\r\n");
    assert_eq!(h.send(&line), "OK success\r\n");
    let reply = h.send(&h.mailbox_line("", &Harness::record(1, 2, M1_GUID, "")));
    assert_eq!(reply, "NO IMAP_PROTOCOL_ERROR Protocol error\r\n");
    assert_eq!(h.state(), "absent");
    h.assert_clean();
}

#[test]
fn apply_then_conflicts() {
    let mut h = Harness::new();
    h.upload_m1();
    let rec = Harness::record(1, 2, M1_GUID, "\\Seen");
    assert_eq!(h.send(&h.mailbox_line("", &rec)), "OK success\r\n");
    let before = h.state();
    assert!(before.starts_with("c200jgj6thb3ssu8ep4jb0il last_uid=1 modseq=2"));

    // SINCE_MODSEQ that is not the replica's: changed since last sync.
    let since = h.mailbox_line(" SINCE_MODSEQ 1 SINCE_CRC 0 SINCE_CRC_ANNOT 0", "");
    assert_eq!(
        h.send(&since),
        "NO IMAP_SYNC_CHANGED Changed since last sync\r\n"
    );
    // A master behind the replica: checksum failure.
    let behind = String::from_utf8(h.mailbox_line("", ""))
        .unwrap()
        .replace("HIGHESTMODSEQ 2", "HIGHESTMODSEQ 1");
    assert_eq!(
        h.send(behind.as_bytes()),
        "NO IMAP_SYNC_CHECKSUM Checksum Failure\r\n"
    );
    // A different message under the same uid: checksum failure.
    let other = Harness::record(1, 3, "a5f0fcfe63afae3c2c053ba493b705b452261b27", "");
    let line = String::from_utf8(h.mailbox_line("", &other))
        .unwrap()
        .replace("HIGHESTMODSEQ 2", "HIGHESTMODSEQ 3");
    assert_eq!(
        h.send(line.as_bytes()),
        "NO IMAP_SYNC_CHECKSUM Checksum Failure\r\n"
    );
    // A CRC that does not match what was applied: CHECKSUM, changes kept (as Cyrus).
    let wrong_crc = String::from_utf8(h.mailbox_line("", &Harness::record(1, 3, M1_GUID, "")))
        .unwrap()
        .replace("HIGHESTMODSEQ 2", "HIGHESTMODSEQ 3")
        .replace("SYNC_CRC 0", "SYNC_CRC 7");
    assert_eq!(
        h.send(wrong_crc.as_bytes()),
        "NO IMAP_SYNC_CHECKSUM Checksum Failure\r\n"
    );
    // The same name with another uniqueid, replica not empty: moved.
    let moved = String::from_utf8(h.mailbox_line("", ""))
        .unwrap()
        .replace("c200jgj6thb3ssu8ep4jb0il", "zzzzzzzzzzzzzzzzzzzzzzzz")
        .replace("HIGHESTMODSEQ 2", "HIGHESTMODSEQ 9");
    assert_eq!(
        h.send(moved.as_bytes()),
        "NO IMAP_MAILBOX_MOVED Mailbox exists with another name or uniqueid\r\n"
    );
    // APPLY EXPUNGE with the wrong uniqueid: moved.
    assert_eq!(
        h.send(b"APPLY EXPUNGE %(MBOXNAME user.john UNIQUEID nope UID (1))\r\n"),
        "NO IMAP_MAILBOX_MOVED Mailbox exists with another name or uniqueid\r\n"
    );
    h.assert_clean();
}

#[test]
fn an_empty_mailbox_with_another_uniqueid_is_replaced() {
    let mut h = Harness::new();
    let empty = String::from_utf8(h.mailbox_line("", ""))
        .unwrap()
        .replace("LAST_UID 1", "LAST_UID 0");
    assert_eq!(h.send(empty.as_bytes()), "OK success\r\n");
    let replaced = empty.replace("c200jgj6thb3ssu8ep4jb0il", "newid0000000000000000000");
    assert_eq!(h.send(replaced.as_bytes()), "OK success\r\n");
    assert!(h.state().starts_with("newid0000000000000000000"));
}

#[test]
fn hostile_names_and_partitions_are_refused() {
    let mut h = Harness::new();
    let escape = String::from_utf8(h.mailbox_line("", ""))
        .unwrap()
        .replace("c200jgj6thb3ssu8ep4jb0il", "../../../../tmp/pwned");
    assert_eq!(
        h.send(escape.as_bytes()),
        "NO IMAP_PROTOCOL_BAD_PARAMETERS\r\n"
    );
    let partition = String::from_utf8(h.mailbox_line("", ""))
        .unwrap()
        .replace("PARTITION default", "PARTITION ../../etc");
    assert_eq!(
        h.send(partition.as_bytes()),
        "NO IMAP_PROTOCOL_BAD_PARAMETERS\r\n"
    );
    let name = String::from_utf8(h.mailbox_line("", ""))
        .unwrap()
        .replace("MBOXNAME user.john", "MBOXNAME \"user.john/../x\"");
    assert!(h.send(name.as_bytes()).starts_with("NO "));
    assert_eq!(
        h.send(b"APPLY RESERVE %(PARTITION nosuch MBOXNAME (user.john) GUID (edaa9f52a858bda063269730eb4f9881ad296e5e))\r\n"),
        "NO IMAP_PROTOCOL_BAD_PARAMETERS\r\n"
    );
    assert_eq!(h.state(), "absent");
    assert!(h.replica.store.users().unwrap().is_empty());
    h.assert_clean();
}

#[test]
fn reserve_finds_existing_copies_and_lists_the_missing() {
    let mut h = Harness::new();
    h.upload_m1();
    assert_eq!(
        h.send(&h.mailbox_line("", &Harness::record(1, 2, M1_GUID, ""))),
        "OK success\r\n"
    );
    assert_eq!(h.send(b"RESTART\r\n"), "OK Restarting\r\n");
    let reply = h.send(
        format!(
            "APPLY RESERVE %(PARTITION default MBOXNAME (user.john) GUID ({M1_GUID} \
             a5f0fcfe63afae3c2c053ba493b705b452261b27))\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(
        reply,
        "* MISSING (a5f0fcfe63afae3c2c053ba493b705b452261b27)\r\nOK success\r\n"
    );
    // The reserved copy can be appended to another mailbox without an upload.
    let sent = String::from_utf8(h.mailbox_line("", &Harness::record(1, 2, M1_GUID, "")))
        .unwrap()
        .replace("c200jgj6thb3ssu8ep4jb0il", "sent00000000000000000000")
        .replace("MBOXNAME user.john", "MBOXNAME user.john.Sent");
    assert_eq!(h.send(sent.as_bytes()), "OK success\r\n");
    h.assert_clean();
}

#[test]
fn session_level_replies_of_the_spec() {
    let mut h = Harness::new();
    assert_eq!(
        h.send(b"APPLY CAPABILITIES (SIEVE-MAILBOX FOO)\r\n"),
        "* ENABLED (SIEVE-MAILBOX)\r\nOK success\r\n"
    );
    assert_eq!(h.send(b"GET USER nobody\r\n"), "OK success\r\n");
    assert_eq!(
        h.send(b"GET FULLMAILBOX user.nobody\r\n"),
        "NO IMAP_MAILBOX_NONEXISTENT No Such Mailbox\r\n"
    );
    assert_eq!(
        h.send(b"APPLY UNMAILBOX user.nobody\r\n"),
        "NO IMAP_MAILBOX_NONEXISTENT No Such Mailbox\r\n"
    );
    assert_eq!(
        h.send(b"GET FOO x\r\n"),
        "NO IMAP_PROTOCOL_ERROR Protocol error\r\n"
    );
    assert_eq!(
        h.send(b"APPLY MAILBOX %(UNIQUEID x)\r\n"),
        "NO IMAP_PROTOCOL_BAD_PARAMETERS\r\n"
    );
    assert_eq!(h.send(b"APPLY UNUSER \"\"\r\n"), "OK success\r\n");
    assert_eq!(h.send(b"NOOP\r\n"), "OK Noop completed\r\n");
}

#[test]
fn unuser_deletes_the_users_tree_but_keeps_its_deleted_mailboxes() {
    // A Cyrus master deleting a user (delete_mode: delayed) renames the INBOX to
    // DELETED.user.<u>.<hex>, then sends UNUSER. Cyrus 3.6's replica deletes only the
    // user's live tree (mboxlist_usermboxtree without MBOXTREE_DELETED): the DELETED.*
    // mailboxes stay, as they do on the master (found with the real sync_client,
    // tests/cyrus_interop.rs).
    let mut h = Harness::new();
    h.upload_m1();
    let rec = Harness::record(1, 2, M1_GUID, "");
    assert_eq!(h.send(&h.mailbox_line("", &rec)), "OK success\r\n");
    let sent = String::from_utf8(h.mailbox_line("", &rec))
        .unwrap()
        .replace("c200jgj6thb3ssu8ep4jb0il", "sent00000000000000000000")
        .replace("MBOXNAME user.john", "MBOXNAME user.john.Sent");
    assert_eq!(h.send(sent.as_bytes()), "OK success\r\n");
    let drafts = String::from_utf8(h.mailbox_line("", ""))
        .unwrap()
        .replace("c200jgj6thb3ssu8ep4jb0il", "drafts000000000000000000")
        .replace("MBOXNAME user.john", "MBOXNAME user.john.Drafts")
        .replace("LAST_UID 1", "LAST_UID 0");
    assert_eq!(h.send(drafts.as_bytes()), "OK success\r\n");
    // The folder deleted earlier, then the user.
    for (old, new) in [
        ("user.john.Sent", "DELETED.user.john.Sent.6B0218D3"),
        ("user.john", "DELETED.user.john.6B0218D4"),
    ] {
        assert_eq!(
            h.send(
                format!(
                    "APPLY RENAME %(OLDMBOXNAME {old} NEWMBOXNAME {new} PARTITION default \
                     UIDVALIDITY 1795299501)\r\n"
                )
                .as_bytes()
            ),
            "OK success\r\n"
        );
    }
    assert_eq!(h.send(b"APPLY UNUSER john\r\n"), "OK success\r\n");

    let store = &h.replica.store;
    for gone in ["user.john", "user.john.Drafts", "user.john.Sent"] {
        assert!(
            store.mailbox(gone).unwrap().is_none_or(|m| !m.is_real()),
            "{gone} survived UNUSER"
        );
    }
    for kept in [
        "DELETED.user.john.Sent.6B0218D3",
        "DELETED.user.john.6B0218D4",
    ] {
        let m = store
            .mailbox(kept)
            .unwrap()
            .filter(|m| m.is_real())
            .unwrap_or_else(|| panic!("{kept} was deleted by UNUSER"));
        assert_eq!(store.message_count(m.id).unwrap(), 1, "{kept}");
        assert!(store.message_path(&m, 1).unwrap().is_file(), "{kept}");
    }
    h.assert_clean();
}

#[test]
fn a_message_uploaded_again_leaves_the_staged_and_stored_copies_intact() {
    // A GUID sent again while staged is checked under a temporary name: corrupt bytes
    // must not replace the good staged copy, and good ones must not touch the file
    // that the staged copy is already linked to in a mailbox.
    let mut h = Harness::new();
    h.upload_m1();
    let one = Harness::record(1, 2, M1_GUID, "");
    assert_eq!(h.send(&h.mailbox_line("", &one)), "OK success\r\n");
    h.upload_m1();
    let mut corrupt =
        format!("APPLY MESSAGE (%{{default {M1_GUID} {}}}\r\n", M1.len()).into_bytes();
    corrupt.extend(std::iter::repeat_n(b'x', M1.len()));
    corrupt.extend_from_slice(b")\r\n");
    assert_eq!(h.send(&corrupt), "OK success\r\n");
    let both = format!("{one} {}", Harness::record(2, 3, M1_GUID, ""));
    let line = String::from_utf8(h.mailbox_line("", &both))
        .unwrap()
        .replace("LAST_UID 1 HIGHESTMODSEQ 2", "LAST_UID 2 HIGHESTMODSEQ 3");
    assert_eq!(h.send(line.as_bytes()), "OK success\r\n");
    let store = &h.replica.store;
    let m = store.mailbox("user.john").unwrap().unwrap();
    for uid in [1, 2] {
        assert_eq!(
            std::fs::read(store.message_path(&m, uid).unwrap()).unwrap(),
            M1,
            "uid {uid}"
        );
    }
    h.assert_clean();
}
