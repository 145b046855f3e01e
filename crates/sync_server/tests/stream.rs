//! `APPLY MAILBOX` lines whose RECORD items are streamed (a real Cyrus client sends a
//! whole mailbox, 20,000 records and more, in one line): the replica must answer and
//! store exactly what it does for the same line taken whole, commit nothing of a line
//! that fails anywhere (a late record, a malformed tail, a cut connection), and keep
//! the decoder's arena at one batch.

use csync_mailstore::{Store, StoreConfig};
use csync_protocol::Guid;
use csync_protocol::command::{ApplyCommand, Command};
use csync_protocol::crc::SyncCrcs;
use csync_protocol::decode::{Decoder, Mode};
use csync_protocol::encode::{Encoder, LiteralStyle};
use csync_protocol::mailbox::{Annotation, MailboxState, Record, Since, SystemFlags};
use csync_protocol::response::SyncStatus;
use csync_sync_server::replica::{RECORD_BATCH, Replica, StreamEnd};
use csync_sync_server::staging::Staging;

/// A replica fed the way the session feeds it: in chunks, with RECORD items streamed
/// in batches of `batch` (0: every line whole).
struct Harness {
    _dir: tempfile::TempDir,
    replica: Replica,
    decoder: Decoder,
    chunk: usize,
    /// Largest the decoder's arena has been (heap bytes).
    arena_high_water: usize,
    /// Lines applied as they streamed (not kept whole after their first batch).
    streamed_lines: usize,
}

impl Harness {
    fn new(batch: usize, chunk: usize) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::single_dir(dir.path());
        let store = Store::open(config.clone()).unwrap();
        let mut decoder = Decoder::new(Mode::Commands);
        decoder.stream_records(batch);
        Harness {
            _dir: dir,
            replica: Replica::new(store, Staging::new(&config), true),
            decoder,
            chunk,
            arena_high_water: 0,
            streamed_lines: 0,
        }
    }

    fn whole() -> Harness {
        Harness::new(0, 64 * 1024)
    }

    /// Feeds bytes, taking every batch; true when a line completed (it must be the
    /// last byte of `input`).
    fn feed(&mut self, input: &[u8]) -> bool {
        let mut pos = 0;
        while pos < input.len() {
            let end = input.len().min(pos + self.chunk);
            let feed = self
                .decoder
                .feed(&input[pos..end], &mut self.replica.staging)
                .unwrap();
            pos += feed.consumed;
            self.arena_high_water = self.arena_high_water.max(self.decoder.dlist().heap_bytes());
            if feed.records {
                self.replica.stream_records(&mut self.decoder);
            }
            if feed.complete {
                assert_eq!(pos, input.len(), "one line at a time");
                self.streamed_lines += usize::from(self.replica.is_streaming());
                return true;
            }
        }
        false
    }

    /// Sends one command line; returns the reply as the session would write it.
    fn send(&mut self, input: &[u8]) -> String {
        assert!(self.feed(input), "the line did not complete");
        if let Some(end) = self.replica.finish_stream(&self.decoder) {
            return match end {
                StreamEnd::Refused(e) => format!("{}\r\n", e.reply),
                StreamEnd::Applied { outcome, .. } => match outcome {
                    Ok(()) => format!("{}\r\n", SyncStatus::Ok.line()),
                    Err(f) => format!("{}\r\n", f.status.line()),
                },
            };
        }
        execute_line(&mut self.replica, &self.decoder)
    }

    fn upload(&mut self, messages: &[Message]) {
        let mut line = b"APPLY MESSAGE (".to_vec();
        for (i, m) in messages.iter().enumerate() {
            if i > 0 {
                line.push(b' ');
            }
            line.extend_from_slice(
                format!("%{{default {} {}}}\r\n", m.guid, m.body.len()).as_bytes(),
            );
            line.extend_from_slice(&m.body);
        }
        line.extend_from_slice(b")\r\n");
        assert_eq!(self.send(&line), "OK success\r\n");
    }

    /// Every mailbox with every field and record, and whether each record's file is
    /// there: two stores that dump the same hold the same.
    fn dump(&self) -> String {
        let store = &self.replica.store;
        let mut out = String::new();
        for name in ["user.john", "user.john.Big", "user.john.Gone"] {
            let Some(m) = store.mailbox(name).unwrap() else {
                out.push_str(&format!("{name} absent\n"));
                continue;
            };
            out.push_str(&format!("{:?}\n", m.state));
            if !m.is_real() {
                continue;
            }
            store
                .for_each_record(m.id, 0, |r| {
                    let file = store.message_path(&m, r.record.uid).unwrap().is_file();
                    out.push_str(&format!("{:?} {} file={file}\n", r.record, r.has_file));
                    Ok(())
                })
                .unwrap();
        }
        out
    }

    fn assert_clean(&self) {
        let report = self.replica.store.verify(None, false).unwrap();
        assert!(report.is_clean(), "{:?}", report.problems);
    }
}

struct Message {
    body: Vec<u8>,
    guid: Guid,
}

fn messages(n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| {
            let body = format!(
                "From: Alice <alice@example.com>\r\nSubject: message {i}\r\n\r\nBody {i}.\r\n"
            )
            .into_bytes();
            let (guid, _) = csync_mailstore::files::hash_reader(&body[..]).unwrap();
            Message { body, guid }
        })
        .collect()
}

/// `n` records of every shape, over the given messages: flags, user flags, virtual and
/// real annotations, expunged ones.
fn records(n: u32, messages: &[Message], modseq_base: u64) -> Vec<Record> {
    (1..=n)
        .map(|uid| {
            let m = &messages[uid as usize % messages.len()];
            let mut r = Record {
                uid,
                modseq: modseq_base + u64::from(uid),
                last_updated: 1_795_299_500,
                internaldate: 1_700_000_000 + u64::from(uid),
                size: m.body.len() as u32,
                guid: m.guid,
                createdmodseq: u64::from(uid),
                ..Record::default()
            };
            if uid % 3 == 0 {
                r.system_flags.insert(SystemFlags::SEEN);
            }
            if uid % 5 == 0 {
                r.system_flags.insert(SystemFlags::FLAGGED);
                r.user_flags.push("$Label1".into());
            }
            if uid % 11 == 0 {
                r.system_flags.insert(SystemFlags::EXPUNGED);
            }
            if uid % 13 == 0 {
                r.thrid = 0x1f00 + u64::from(uid);
                r.annotations.push(Annotation {
                    entry: "/comment".into(),
                    userid: String::new(),
                    modseq: 3,
                    value: format!("note \"{uid}\"").into_bytes(),
                });
            }
            r
        })
        .collect()
}

fn mailbox(name: &str, uniqueid: &str, records: Vec<Record>) -> MailboxState {
    let crcs = SyncCrcs::of_records(records.iter().filter(|r| !r.is_expunged()));
    MailboxState {
        uniqueid: uniqueid.into(),
        mboxname: name.into(),
        sync_crc: crcs.basic,
        sync_crc_annot: Some(crcs.annot),
        last_uid: records.iter().map(|r| r.uid).max().unwrap_or(0),
        highestmodseq: records.iter().map(|r| r.modseq).max().unwrap_or(1),
        uidvalidity: 1_795_299_501,
        partition: "default".into(),
        acl: "john\tlrswipkxtecdan\t".into(),
        options: "P".into(),
        records: Some(records),
        ..MailboxState::default()
    }
}

/// The line a client writes for `state`.
fn apply_line(state: &MailboxState) -> Vec<u8> {
    let mut enc = Encoder::new(LiteralStyle::NonSynchronizing);
    Command::Apply(ApplyCommand::Mailbox {
        local: false,
        mailbox: Box::new(state.clone()),
    })
    .encode(&mut enc);
    enc.bytes().to_vec()
}

/// The same line with the record of `uid` written as `replacement` (raw dlist text).
fn with_record_replaced(state: &MailboxState, uid: u32, replacement: &str) -> Vec<u8> {
    let line = String::from_utf8(apply_line(state)).unwrap();
    let start = line.find(&format!("%(UID {uid} ")).unwrap();
    let end = start + line[start..].find(" %(UID ").unwrap();
    format!("{}{replacement}{}", &line[..start], &line[end..]).into_bytes()
}

#[path = "support/reply.rs"]
mod reply;
use reply::execute_line;

const BIG: u32 = 20_000;
const BIG_ID: &str = "big00000000000000000000b";

/// Both harnesses get `line`; the replies and the stores must be the same.
fn both(whole: &mut Harness, streamed: &mut Harness, line: &[u8]) -> String {
    let want = whole.send(line);
    let got = streamed.send(line);
    assert_eq!(
        got,
        want,
        "{}",
        String::from_utf8_lossy(&line[..line.len().min(400)])
    );
    assert_eq!(streamed.dump(), whole.dump(), "stores differ after {want}");
    got
}

#[test]
fn a_20000_record_mailbox_streams_to_the_same_store_as_the_whole_line() {
    let msgs = messages(7);
    let mut whole = Harness::whole();
    let mut streamed = Harness::new(RECORD_BATCH, 64 * 1024);
    whole.upload(&msgs);
    streamed.upload(&msgs);

    let first = mailbox("user.john.Big", BIG_ID, records(BIG, &msgs, 0));
    assert_eq!(
        both(&mut whole, &mut streamed, &apply_line(&first)),
        "OK success\r\n"
    );
    assert_eq!(streamed.streamed_lines, 1);

    // Every record again with new flags, on top of what is there (the update path),
    // as a rolling client sends after a change to all of them.
    let mut second = first.clone();
    second.since = Some(Since {
        modseq: first.highestmodseq,
        crc: first.sync_crc,
        crc_annot: first.sync_crc_annot.unwrap(),
    });
    let mut updated = records(BIG, &msgs, u64::from(BIG));
    for r in &mut updated {
        if !r.is_expunged() {
            r.system_flags.insert(SystemFlags::ANSWERED);
        }
    }
    let second = MailboxState {
        since: second.since,
        ..mailbox("user.john.Big", BIG_ID, updated)
    };
    assert_eq!(
        both(&mut whole, &mut streamed, &apply_line(&second)),
        "OK success\r\n"
    );
    assert_eq!(streamed.streamed_lines, 2);
    streamed.assert_clean();

    // The memory check: the arena held a batch, never the mailbox; taken whole, the
    // same lines need many times that.
    assert!(
        streamed.arena_high_water < 2 << 20,
        "arena grew to {} bytes",
        streamed.arena_high_water
    );
    assert!(
        whole.arena_high_water > 8 * streamed.arena_high_water,
        "whole {} streamed {}",
        whole.arena_high_water,
        streamed.arena_high_water
    );
}

#[test]
fn a_bad_record_at_15000_refuses_the_mailbox_and_changes_nothing() {
    let msgs = messages(5);
    let unstaged = messages(6).pop().unwrap();
    let mut whole = Harness::whole();
    let mut streamed = Harness::new(RECORD_BATCH, 32 * 1024);
    whole.upload(&msgs);
    streamed.upload(&msgs);
    // A first, small state of the mailbox, which must survive every refusal below.
    let small = mailbox("user.john.Big", BIG_ID, records(10, &msgs, 0));
    assert_eq!(
        both(&mut whole, &mut streamed, &apply_line(&small)),
        "OK success\r\n"
    );
    let before = streamed.dump();

    let big = mailbox("user.john.Big", BIG_ID, records(BIG, &msgs, 10));
    let record_15000 = |edit: &dyn Fn(&mut Record)| {
        let mut state = big.clone();
        let records = state.records.as_mut().unwrap();
        edit(&mut records[14_999]);
        apply_line(&state)
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "descending uid",
            record_15000(&|r| r.uid = 14_000),
            "NO IMAP_PROTOCOL_ERROR Protocol error",
        ),
        (
            "a GUID never uploaded",
            record_15000(&|r| {
                r.guid = unstaged.guid;
                r.system_flags = SystemFlags::empty();
            }),
            "NO IMAP_PROTOCOL_ERROR Protocol error",
        ),
        (
            "no GUID",
            record_15000(&|r| r.guid = Guid([0; 20])),
            "NO IMAP_MAILBOX_NOTSUPPORTED Operation is not supported on mailbox",
        ),
        (
            "a record that does not parse",
            with_record_replaced(&big, 15_000, "%(UID 15000 MODSEQ x)"),
            "NO IMAP_PROTOCOL_ERROR Protocol error",
        ),
        (
            "a malformed tail",
            {
                let mut line = apply_line(&big);
                line.truncate(line.len() - 2);
                line.extend_from_slice(b" (\r\n");
                line
            },
            "BAD IMAP_PROTOCOL_ERROR Failed to parse APPLY line",
        ),
        (
            "a key after RECORD that does not read",
            {
                let mut line = apply_line(&big);
                line.truncate(line.len() - 3);
                line.extend_from_slice(b" FOLDERMODSEQ x)\r\n");
                line
            },
            "NO IMAP_PROTOCOL_BAD_PARAMETERS",
        ),
        (
            "SINCE_MODSEQ after RECORD that is not the replica's",
            {
                let mut line = apply_line(&big);
                line.truncate(line.len() - 3);
                line.extend_from_slice(b" SINCE_MODSEQ 3)\r\n");
                line
            },
            "NO IMAP_SYNC_CHANGED Changed since last sync",
        ),
    ];
    for (what, line, reply) in cases {
        assert_eq!(
            both(&mut whole, &mut streamed, &line),
            format!("{reply}\r\n"),
            "{what}"
        );
        assert_eq!(streamed.dump(), before, "{what}: the mailbox changed");
    }
    assert_eq!(streamed.streamed_lines, 7, "every big line streamed");
    streamed.assert_clean();
    // And the good line still goes through afterwards.
    assert_eq!(
        both(&mut whole, &mut streamed, &apply_line(&big)),
        "OK success\r\n"
    );
    streamed.assert_clean();
}

#[test]
fn a_connection_cut_in_the_middle_of_the_records_commits_nothing() {
    let msgs = messages(3);
    let mut h = Harness::new(RECORD_BATCH, 16 * 1024);
    h.upload(&msgs);
    let big = mailbox("user.john.Big", BIG_ID, records(BIG, &msgs, 0));
    let line = apply_line(&big);
    // Half the line arrives (several batches taken), then the connection ends, which
    // the session follows with RESTART's clean-up.
    assert!(!h.feed(&line[..line.len() / 2]));
    assert!(h.replica.is_streaming());
    h.replica.restart();
    assert!(!h.replica.is_streaming());
    assert_eq!(
        h.dump(),
        "user.john absent\nuser.john.Big absent\nuser.john.Gone absent\n"
    );
    h.assert_clean();
    // A new connection sends it all.
    let mut decoder = Decoder::new(Mode::Commands);
    decoder.stream_records(RECORD_BATCH);
    h.decoder = decoder;
    h.upload(&msgs);
    assert_eq!(h.send(&line), "OK success\r\n");
    let m = h.replica.store.mailbox("user.john.Big").unwrap().unwrap();
    assert_eq!(m.state.last_uid, BIG);
    h.assert_clean();
}

#[test]
fn key_orders_and_late_keys_get_the_whole_lines_replies() {
    // Small records, streamed one at a time, against the same lines taken whole, in a
    // sequence, so that each line meets the state the previous ones left.
    let msgs = messages(3);
    let mut whole = Harness::whole();
    let mut streamed = Harness::new(1, 7);
    whole.upload(&msgs);
    streamed.upload(&msgs);
    let base = mailbox(
        "user.john",
        "john0000000000000000000j",
        records(4, &msgs, 0),
    );
    let line = |s: &MailboxState| String::from_utf8(apply_line(s)).unwrap();
    let head_and_records = |s: &MailboxState| {
        let l = line(s);
        let at = l.find(" RECORD (").unwrap();
        (l[..at].to_owned(), l[at..l.len() - 3].to_owned())
    };
    let (head, recs) = head_and_records(&base);
    let fields = head.strip_prefix("APPLY MAILBOX %(").unwrap();
    let lines: Vec<String> = vec![
        // RECORD first: every key after it (kept whole).
        format!("APPLY MAILBOX %({}{} {fields})\r\n", &recs[1..], ""),
        line(&base),
        format!("APPLY LOCAL_MAILBOX %({fields}{recs})\r\n"),
        // Keys after RECORD: mailbox annotations, FOLDERMODSEQ, a wrong SYNC_CRC.
        format!(
            "APPLY MAILBOX %({fields}{recs} ANNOTATIONS (%(ENTRY /comment USERID \"\" \
             MODSEQ 4 VALUE late)) FOLDERMODSEQ 9)\r\n"
        ),
        format!(
            "APPLY MAILBOX %({}{recs} SYNC_CRC 7)\r\n",
            fields.replacen("SYNC_CRC", "X_SYNC_CRC", 1)
        ),
        // A type after RECORD: the master says sieve, intermediate, tombstone.
        format!("APPLY MAILBOX %({fields}{recs} MBOXTYPE f)\r\n"),
        format!("APPLY MAILBOX %({fields}{recs} MBOXTYPE e)\r\n"),
        // SINCE after RECORD, right and wrong.
        format!(
            "APPLY MAILBOX %({fields}{recs} SINCE_MODSEQ {} SINCE_CRC {} SINCE_CRC_ANNOT {})\r\n",
            base.highestmodseq,
            base.sync_crc,
            base.sync_crc_annot.unwrap()
        ),
        format!("APPLY MAILBOX %({fields}{recs} SINCE_MODSEQ 1)\r\n"),
        // A required key after RECORD (kept whole), and one missing.
        format!(
            "APPLY MAILBOX %({}{recs} ACL \"john\tlrs\t\")\r\n",
            fields.replacen("ACL", "X_ACL", 1)
        ),
        format!(
            "APPLY MAILBOX %({}{recs})\r\n",
            fields.replacen("ACL", "X_ACL", 1)
        ),
        // Two RECORD keys: the first counts.
        format!("APPLY MAILBOX %({fields}{recs} RECORD (x))\r\n"),
        // Another uniqueid under the same name; an unknown partition.
        format!(
            "APPLY MAILBOX %({}{recs})\r\n",
            fields.replacen("john0000000000000000000j", "other000000000000000000o", 1)
        ),
        format!(
            "APPLY MAILBOX %({}{recs})\r\n",
            fields.replacen("PARTITION default", "PARTITION nosuch", 1)
        ),
        // A master behind the replica.
        format!(
            "APPLY MAILBOX %({}{recs})\r\n",
            fields.replacen(
                &format!("HIGHESTMODSEQ {}", base.highestmodseq),
                "HIGHESTMODSEQ 1",
                1
            )
        ),
        // Records out of order, then an item that is not a record.
        format!(
            "APPLY MAILBOX %({fields} RECORD ({} {}))\r\n",
            &recs[9..recs.len() - 1],
            &recs[9..recs.len() - 1]
        ),
        format!(
            "APPLY MAILBOX %({fields}{} NIL))\r\n",
            &recs[..recs.len() - 1]
        ),
        // Placeholders: a tombstone after RECORD, an intermediate before it.
        format!(
            "APPLY MAILBOX %({}{recs} MBOXTYPE d)\r\n",
            fields.replacen("user.john", "user.john.Gone", 1)
        ),
        format!("APPLY MAILBOX %(MBOXTYPE i {fields}{recs})\r\n"),
        line(&base),
    ];
    for l in &lines {
        both(&mut whole, &mut streamed, l.as_bytes());
    }
    // Kept whole: RECORD first, a required key after it or missing, an intermediate.
    assert_eq!(streamed.streamed_lines, lines.len() - 4);
    streamed.assert_clean();
}
