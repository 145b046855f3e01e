//! Replays what a real Cyrus 3.6 `sync_client` sent to a real Cyrus replica (the
//! transcripts in `crates/protocol/tests/fixtures/cyrus-3.6/`, captured one after the
//! other against the same replica) into csync's replica, and requires csync to answer
//! every command with the bytes the Cyrus replica answered.

use csync_mailstore::{Store, StoreConfig};
use csync_protocol::command::Command;
use csync_protocol::decode::{Body, CollectFiles, Decoder, Mode};
use csync_protocol::response::{SyncStatus, lines};
use csync_protocol::transcript;
use csync_sync_server::replica::{Executed, Replica, StreamEnd};
use csync_sync_server::staging::Staging;

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../protocol/tests/fixtures/cyrus-3.6"
);

/// The sessions that talk csync to the replica, in capture order (12 went to imapd).
const SESSIONS: [&str; 12] = [
    "01-first-sync-new-user.txt",
    "02-incremental-flag-change.txt",
    "03-expunge.txt",
    "04-folder-create.txt",
    "05-folder-rename.txt",
    "06-folder-delete.txt",
    "07-rolling.txt",
    "08-compress-negotiation.txt",
    "09-uncompressed-session.txt",
    "10-sync-all-users.txt",
    "11-delete-user.txt",
    "11b-delete-user-via-sync-log.txt",
];

/// Splits a server stream into replies: the greeting, then one reply (data lines and
/// completion) per client command.
fn server_replies(server: &[u8]) -> Vec<Vec<u8>> {
    let mut replies = Vec::new();
    let mut dec = Decoder::new(Mode::Text);
    let mut files = CollectFiles::default();
    let mut pos = 0;
    let mut current = Vec::new();
    let mut in_greeting = true;
    while pos < server.len() {
        let start = pos;
        let feed = dec
            .feed(&server[pos..], &mut files)
            .expect("server stream decodes");
        pos += feed.consumed;
        current.extend_from_slice(&server[start..pos]);
        if !feed.complete {
            continue;
        }
        let line = dec.line().expect("complete");
        let word = line.word;
        let done = if in_greeting {
            let is_ok = word.len() >= 4 && word[..4].eq_ignore_ascii_case(b"* OK");
            if is_ok {
                in_greeting = false;
                dec.set_mode(Mode::Responses);
            }
            is_ok
        } else {
            word != b"*"
        };
        if done {
            replies.push(std::mem::take(&mut current));
        }
    }
    assert!(current.is_empty(), "server stream ends inside a reply");
    replies
}

#[test]
fn csync_answers_the_real_cyrus_client_exactly_as_the_real_cyrus_replica() {
    let streamed = replay(0);
    assert_eq!(streamed, 0);
}

/// The same sessions with every `APPLY MAILBOX`'s records streamed one at a time, as
/// the session streams big mailboxes: byte for byte the same replies.
#[test]
fn streamed_records_get_the_same_replies_from_the_real_cyrus_sessions() {
    let streamed = replay(1);
    // Every APPLY MAILBOX of the captures that has records.
    assert_eq!(streamed, 9, "APPLY MAILBOX lines streamed");
}

/// Replays every session; returns how many lines were applied as they streamed.
fn replay(batch: usize) -> usize {
    let mut streamed = 0;
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::single_dir(dir.path());
    let store = Store::open(config.clone()).unwrap();
    let mut replica = Replica::new(store, Staging::new(&config), true);
    let mut compared = 0;
    for name in SESSIONS {
        let text = std::fs::read_to_string(format!("{FIXTURES}/{name}")).unwrap();
        let sessions = transcript::parse(&text).unwrap();
        assert_eq!(sessions.len(), 1, "{name}");
        let session = &sessions[0];
        let replies = server_replies(&session.server);
        let mut expected = replies.into_iter();
        expected.next().expect("greeting");
        let mut dec = Decoder::new(Mode::Commands);
        dec.stream_records(batch);
        let mut pos = 0;
        let input = &session.client;
        let mut index = 0;
        while pos < input.len() {
            let feed = dec.feed(&input[pos..], &mut replica.staging).unwrap();
            pos += feed.consumed;
            if feed.records {
                replica.stream_records(&mut dec);
            }
            if !feed.complete {
                continue;
            }
            index += 1;
            let line = dec.line().unwrap();
            let want = expected
                .next()
                .unwrap_or_else(|| panic!("{name}: no reply for command {index}"));
            if let Some(end) = replica.finish_stream(&dec) {
                streamed += 1;
                let got = match end {
                    StreamEnd::Refused(e) => e.reply,
                    StreamEnd::Applied { outcome, .. } => match outcome {
                        Ok(()) => SyncStatus::Ok.line().to_owned(),
                        Err(f) => f.status.line().to_owned(),
                    },
                } + "\r\n";
                assert_eq!(
                    got,
                    String::from_utf8_lossy(&want),
                    "{name}, command {index} (streamed)"
                );
                compared += 1;
                continue;
            }
            let command = Command::parse(line).unwrap_or_else(|e| panic!("{name}: {e:?}"));
            if matches!(
                command,
                Command::Authenticate { .. } | Command::Compress { .. }
            ) {
                // Session set-up is the session layer's job (tested there).
                continue;
            }
            let shown = format!("{command:?}");
            let mut got = Vec::new();
            match replica.execute(command, &mut got) {
                Executed::Status(Ok(())) => {
                    got.extend_from_slice(SyncStatus::Ok.line().as_bytes());
                }
                Executed::Status(Err(f)) => {
                    got.extend_from_slice(f.status.line().as_bytes());
                }
                Executed::Line(l) => got.extend_from_slice(l.as_bytes()),
                Executed::NotMine => got.extend_from_slice(lines::UNRECOGNIZED.as_bytes()),
            }
            got.extend_from_slice(b"\r\n");
            assert_eq!(
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(&want),
                "{name}, command {index}: {}",
                &shown[..shown.len().min(300)]
            );
            compared += 1;
            if let Body::Malformed(e) = dec.line().unwrap().body {
                panic!("{name}: malformed client line: {e}");
            }
        }
        assert!(expected.next().is_none(), "{name}: replies left over");
    }
    assert!(compared > 50, "only {compared} replies compared");
    let report = replica.store.verify(None, true).unwrap();
    assert!(report.is_clean(), "{:?}", report.problems);
    streamed
}
