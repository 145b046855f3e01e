//! The `sync_server` binary over TCP: greeting, authentication and authorization,
//! compression, the session commands, hostile input, many clients at once, graceful
//! shutdown. Every reply is checked against the string Cyrus 3.6 sends.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use csync_protocol::compress::{Deflater, Inflater};
use csync_protocol::decode::{Body, CollectFiles, Decoder, Mode};

const M1: &[u8] = b"From: Alice <alice@example.com>\r\nTo: John <john@example.com>\r\nSubject: first\r\nDate: Tue, 14 Nov 2023 22:15:00 +0000\r\nMessage-ID: <m1@example.com>\r\n\r\nHello John.\r\n";
const M1_GUID: &str = "edaa9f52a858bda063269730eb4f9881ad296e5e";

/// A running sync_server on a free loopback port, killed when dropped.
struct Server {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Server {
    fn start(extra_conf: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let conf = root.join("imapd.conf");
        // Cyrus (and csync) refuse a key set twice: extra settings replace defaults.
        let mut lines = vec![
            format!("configdirectory: {}/conf", root.display()),
            format!("partition-default: {}/spool", root.display()),
            "servername: csync-replica.test".to_owned(),
            "admins: repluser".to_owned(),
            "allowplaintext: yes".to_owned(),
            "failedloginpause: 0".to_owned(),
        ];
        for extra in extra_conf.lines() {
            let key = extra.split(':').next().unwrap_or_default();
            lines.retain(|l| !l.starts_with(&format!("{key}:")));
            lines.push(extra.to_owned());
        }
        std::fs::write(&conf, lines.join("\n") + "\n").unwrap();
        std::fs::create_dir_all(root.join("conf")).unwrap();
        let mut passwords = csync_auth::passwd::PasswordFile::new(root.join("conf/csync.passwd"));
        passwords.set("repluser", "secret").unwrap();
        passwords.set("john", "johnpw").unwrap();
        passwords.save().unwrap();
        Server::spawn(dir, &conf)
    }

    fn spawn(dir: tempfile::TempDir, conf: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sync_server"))
            .arg("-C")
            .arg(conf)
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while stdout.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        let line = String::from_utf8(line).unwrap();
        let port = line
            .rsplit(':')
            .next()
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("no port in {line:?}"));
        Server { child, port, dir }
    }

    fn connect(&self) -> Client {
        Client::connect(self.port)
    }

    fn root(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal csync client speaking through the protocol crate.
struct Client {
    stream: TcpStream,
    decoder: Decoder,
    files: CollectFiles,
    inflater: Option<Inflater>,
    deflater: Option<Deflater>,
    pending: Vec<u8>,
}

impl Client {
    fn connect(port: u16) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Client {
            stream,
            decoder: Decoder::new(Mode::Text),
            files: CollectFiles::default(),
            inflater: None,
            deflater: None,
            pending: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        match &mut self.deflater {
            Some(d) => {
                let mut out = Vec::new();
                d.compress(bytes, &mut out).unwrap();
                self.stream.write_all(&out).unwrap();
            }
            None => self.stream.write_all(bytes).unwrap(),
        }
    }

    /// One line as text (word and rest), or None at EOF.
    fn line(&mut self) -> Option<String> {
        loop {
            if !self.pending.is_empty() {
                let feed = self.decoder.feed(&self.pending, &mut self.files).unwrap();
                self.pending.drain(..feed.consumed);
                if feed.complete {
                    let line = self.decoder.line().unwrap();
                    let word = String::from_utf8_lossy(line.word).into_owned();
                    return Some(match line.body {
                        Body::None => word,
                        Body::Text(t) => format!("{word} {}", String::from_utf8_lossy(t)),
                        Body::Dlist(item) => format!("{word} {item:?}"),
                        Body::Malformed(e) => format!("{word} <malformed: {e}>"),
                    });
                }
            }
            let mut buf = [0u8; 65536];
            let n = self.stream.read(&mut buf).unwrap_or(0);
            if n == 0 {
                return None;
            }
            match &mut self.inflater {
                Some(i) => i.decompress(&buf[..n], &mut self.pending).unwrap(),
                None => self.pending.extend_from_slice(&buf[..n]),
            }
        }
    }

    fn greeting(&mut self) -> Vec<String> {
        let mut lines = Vec::new();
        loop {
            let l = self.line().expect("greeting");
            let done = l.starts_with("* OK");
            lines.push(l);
            if done {
                self.decoder.set_mode(Mode::Responses);
                return lines;
            }
        }
    }

    /// Sends a command and returns every reply line up to the completion.
    fn command(&mut self, line: &[u8]) -> Vec<String> {
        self.send(line);
        let mut reply = Vec::new();
        loop {
            let l = self.line().expect("reply");
            let done = !l.starts_with("* ") && !l.starts_with("+ ") && l != "+";
            reply.push(l);
            if done {
                return reply;
            }
        }
    }

    fn login(&mut self, user: &str, password: &str) -> String {
        use base64::Engine;
        let ir = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"));
        self.command(format!("AUTHENTICATE PLAIN {ir}\r\n").as_bytes())
            .pop()
            .unwrap()
    }

    fn compress(&mut self) {
        assert_eq!(self.command(b"COMPRESS DEFLATE\r\n"), ["OK DEFLATE active"]);
        self.deflater = Some(Deflater::new(1));
        self.inflater = Some(Inflater::new());
    }
}

fn apply_message(body: &[u8], guid: &str) -> Vec<u8> {
    let mut line = format!("APPLY MESSAGE (%{{default {guid} {}}}\r\n", body.len()).into_bytes();
    line.extend_from_slice(body);
    line.extend_from_slice(b")\r\n");
    line
}

fn apply_mailbox(records: &str, last_uid: u32, modseq: u64) -> Vec<u8> {
    format!(
        "APPLY MAILBOX %(UNIQUEID c200jgj6thb3ssu8ep4jb0il MBOXNAME user.john SYNC_CRC 0 \
         SYNC_CRC_ANNOT 0 LAST_UID {last_uid} HIGHESTMODSEQ {modseq} RECENTUID 0 RECENTTIME 0 \
         LAST_APPENDDATE 0 POP3_LAST_LOGIN 0 POP3_SHOW_AFTER 0 UIDVALIDITY 1795299501 \
         PARTITION default ACL \"john\tlrswipkxtecdan\t\" OPTIONS P RECORD ({records}))\r\n"
    )
    .into_bytes()
}

fn record(uid: u32, modseq: u64) -> String {
    format!(
        "%(UID {uid} MODSEQ {modseq} LAST_UPDATED 1795299500 FLAGS () INTERNALDATE 1700000100 \
         SIZE {} GUID {M1_GUID})",
        M1.len()
    )
}

#[test]
fn greeting_authentication_and_authorization() {
    let server = Server::start("");
    let mut c = server.connect();
    let greeting = c.greeting();
    assert_eq!(
        greeting[..3],
        [
            "* SASL SCRAM-SHA-256 SCRAM-SHA-1 PLAIN LOGIN",
            "* COMPRESS DEFLATE",
            "* SIEVE-MAILBOX"
        ]
    );
    assert!(greeting[3].starts_with("* OK csync-replica.test Cyrus sync server csync-"));
    assert_eq!(
        c.command(b"GET USER john\r\n"),
        ["NO Please authenticate first"]
    );
    assert_eq!(
        c.command(b"FOO bar\r\n"),
        ["BAD IMAP_PROTOCOL_ERROR Unrecognized command"]
    );
    assert_eq!(c.command(b"\r\n"), ["BAD Null command"]);
    assert_eq!(
        c.command(b"STARTTLS\r\n"),
        ["BAD IMAP_PROTOCOL_ERROR Unrecognized command"]
    );
    assert_eq!(
        c.command(b"COMPRESS FOO\r\n"),
        ["NO Unknown compression algorithm: FOO"]
    );
    assert_eq!(c.login("repluser", "wrong"), "NO authentication failure");
    assert_eq!(c.login("nobody", "x"), "NO user not found");
    // No initial response: an empty challenge, which the client cancels.
    c.send(b"AUTHENTICATE PLAIN\r\n");
    c.decoder.set_mode(Mode::Text);
    assert_eq!(c.line().as_deref(), Some("+ "));
    c.decoder.set_mode(Mode::Responses);
    assert_eq!(c.command(b"*\r\n"), ["BAD Client canceled authentication"]);
    assert_eq!(c.login("repluser", "secret"), "OK Success (no protection)");
    assert_eq!(c.login("repluser", "secret"), "BAD Already authenticated");
    assert_eq!(c.command(b"NOOP\r\n"), ["OK Noop completed"]);
    assert_eq!(
        c.command(b"NOOP extra\r\n"),
        ["BAD Unexpected extra arguments to Noop"]
    );
    assert_eq!(c.command(b"EXIT\r\n"), ["OK Finished"]);
    assert!(c.line().is_none(), "connection closed after EXIT");

    // A valid login that is not an admin may do nothing at all.
    let mut c = server.connect();
    c.greeting();
    assert_eq!(c.login("john", "johnpw"), "OK Success (no protection)");
    assert_eq!(c.command(b"NOOP\r\n"), ["NO Permission denied"]);
    assert_eq!(c.command(b"GET USER john\r\n"), ["NO Permission denied"]);
    assert_eq!(c.command(b"EXIT\r\n"), ["NO Permission denied"]);
    // Nor may an admin acting for someone else.
    let mut c = server.connect();
    c.greeting();
    use base64::Engine;
    let ir = base64::engine::general_purpose::STANDARD.encode("john\0repluser\0secret");
    assert_eq!(
        c.command(format!("AUTHENTICATE PLAIN {ir}\r\n").as_bytes()),
        ["OK Success (no protection)"]
    );
    assert_eq!(c.command(b"NOOP\r\n"), ["NO Permission denied"]);
}

#[test]
fn plaintext_needs_tls_unless_allowed() {
    let server = Server::start("allowplaintext: no\n");
    let mut c = server.connect();
    let greeting = c.greeting();
    assert_eq!(greeting[0], "* SASL SCRAM-SHA-256 SCRAM-SHA-1");
    assert_eq!(
        c.login("repluser", "secret"),
        "NO encryption needed to use mechanism"
    );
}

#[test]
fn replicate_compressed_then_check_durably_stored() {
    let server = Server::start("");
    let mut c = server.connect();
    c.greeting();
    assert_eq!(c.login("repluser", "secret"), "OK Success (no protection)");
    c.compress();
    assert_eq!(
        c.command(b"APPLY CAPABILITIES (SIEVE-MAILBOX)\r\n"),
        ["* ENABLED (SIEVE-MAILBOX)", "OK success"]
    );
    assert_eq!(c.command(b"GET USER john\r\n"), ["OK success"]);
    assert_eq!(c.command(&apply_message(M1, M1_GUID)), ["OK success"]);
    assert_eq!(
        c.command(&apply_mailbox(&record(1, 2), 1, 2)),
        ["OK success"]
    );
    let reply = c.command(b"GET MAILBOXES (user.john)\r\n");
    assert_eq!(reply.len(), 2);
    assert!(reply[0].contains("LAST_UID 1 HIGHESTMODSEQ 2"), "{reply:?}");
    // A connection cut in the middle of a file literal leaves nothing behind.
    c.send(format!("APPLY MESSAGE (%{{default {M1_GUID} 1000}}\r\nonly a part").as_bytes());
    drop(c);
    std::thread::sleep(Duration::from_millis(200));
    // The data is in the store: read it back with the mailstore.
    let config = csync_mailstore::StoreConfig::single_dir(&server.root());
    let store = csync_mailstore::Store::open(config).unwrap();
    let m = store.real_mailbox("user.john").unwrap();
    let path = store.message_path(&m, 1).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), M1);
    assert!(store.verify(None, true).unwrap().is_clean());
}

#[test]
fn a_big_mailbox_streams_in_and_a_line_cut_in_its_records_commits_nothing() {
    // More records than one batch (RECORD_BATCH), so the session takes them as they
    // arrive: through compression, the record pauses, the spool and the commit.
    let records: Vec<String> = (1..=3000).map(|uid| record(uid, u64::from(uid))).collect();
    let line = apply_mailbox(&records.join(" "), 3000, 3000);
    let server = Server::start("");
    let staging = server.root().join("spool/sync.");
    let mut c = server.connect();
    c.greeting();
    assert_eq!(c.login("repluser", "secret"), "OK Success (no protection)");
    c.compress();
    assert_eq!(c.command(&apply_message(M1, M1_GUID)), ["OK success"]);
    // Half the line, then the connection goes.
    c.send(&line[..line.len() / 2]);
    std::thread::sleep(Duration::from_millis(300));
    drop(c);
    std::thread::sleep(Duration::from_millis(300));
    let mut c = server.connect();
    c.greeting();
    assert_eq!(c.login("repluser", "secret"), "OK Success (no protection)");
    assert_eq!(c.command(b"GET MAILBOXES (user.john)\r\n"), ["OK success"]);
    let left: Vec<_> = std::fs::read_dir(&staging)
        .map(|d| d.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(
        left.is_empty(),
        "the cut session's staging is left: {left:?}"
    );
    // The whole line on a new connection.
    assert_eq!(c.command(&apply_message(M1, M1_GUID)), ["OK success"]);
    assert_eq!(c.command(&line), ["OK success"]);
    let reply = c.command(b"GET MAILBOXES (user.john)\r\n");
    assert!(
        reply[0].contains("LAST_UID 3000 HIGHESTMODSEQ 3000"),
        "{reply:?}"
    );
    // A bad record late in the line: refused, nothing changes.
    let mut late = records.clone();
    late.push(record(3001, 3001));
    late.swap(2500, 2999);
    let bad = apply_mailbox(&late.join(" "), 3001, 3001);
    assert_eq!(c.command(&bad), ["NO IMAP_PROTOCOL_ERROR Protocol error"]);
    assert_eq!(c.command(b"GET MAILBOXES (user.john)\r\n"), reply);
    assert_eq!(c.command(b"EXIT\r\n"), ["OK Finished"]);
    std::thread::sleep(Duration::from_millis(200));
    let config = csync_mailstore::StoreConfig::single_dir(&server.root());
    let store = csync_mailstore::Store::open(config).unwrap();
    let m = store.real_mailbox("user.john").unwrap();
    assert_eq!(store.message_count(m.id).unwrap(), 3000);
    assert!(store.verify(None, false).unwrap().is_clean());
}

#[test]
fn hostile_input_gets_clear_answers_and_the_server_stays_up() {
    let server = Server::start("maxliteral: 4096\n");
    let mut c = server.connect();
    c.greeting();
    assert_eq!(c.login("repluser", "secret"), "OK Success (no protection)");
    assert_eq!(
        c.command(b"GET USER john \r\n"),
        ["BAD IMAP_PROTOCOL_ERROR Failed to parse GET line"]
    );
    // A synchronizing literal (which crashes Debian's Cyrus) is simply accepted.
    assert_eq!(c.command(b"GET USER {4}\r\njohn\r\n"), ["OK success"]);
    // An unknown partition in a file literal: Cyrus dies on an assertion.
    let reply = c.command(&apply_message(M1, M1_GUID).replace_partition());
    assert_eq!(reply.len(), 1);
    assert!(
        reply[0].starts_with("NO IMAP_PROTOCOL_ERROR unknown partition"),
        "{reply:?}"
    );
    // An append whose bytes were never uploaded: Cyrus aborts.
    assert_eq!(
        c.command(&apply_mailbox(&record(1, 2), 1, 2)),
        ["NO IMAP_PROTOCOL_ERROR Protocol error"]
    );
    assert_eq!(c.command(b"NOOP\r\n"), ["OK Noop completed"]);
    // Over the literal limit: fatal, as in Cyrus.
    c.send(b"APPLY SIEVE %(USERID john FILENAME x.script LAST_UPDATE 1 CONTENT {200000+}\r\n");
    c.decoder.set_mode(Mode::Text);
    let fatal = c.line().unwrap();
    assert!(fatal.starts_with("* Fatal error: [TOOBIG]"), "{fatal}");
    assert!(c.line().is_none());
    // The server is still there for the next client.
    let mut c = server.connect();
    c.greeting();
    assert_eq!(c.login("repluser", "secret"), "OK Success (no protection)");
}

trait ReplacePartition {
    fn replace_partition(self) -> Vec<u8>;
}

impl ReplacePartition for Vec<u8> {
    fn replace_partition(self) -> Vec<u8> {
        let text = self;
        let needle = b"%{default ";
        let pos = text
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap();
        let mut out = text[..pos].to_vec();
        out.extend_from_slice(b"%{nosuch ");
        out.extend_from_slice(&text[pos + needle.len()..]);
        out
    }
}

#[test]
fn a_hundred_clients_at_once() {
    let server = Server::start("");
    let port = server.port;
    let handles: Vec<_> = (0..100)
        .map(|i| {
            std::thread::spawn(move || {
                let mut c = Client::connect(port);
                c.greeting();
                assert_eq!(c.login("repluser", "secret"), "OK Success (no protection)");
                let user = format!("user{i}");
                let reply = c.command(format!("GET USER {user}\r\n").as_bytes());
                assert_eq!(reply, ["OK success"]);
                assert_eq!(c.command(b"EXIT\r\n"), ["OK Finished"]);
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn sigterm_says_bye_to_idle_sessions_and_exits() {
    let mut server = Server::start("");
    let mut c = server.connect();
    c.greeting();
    assert_eq!(c.login("repluser", "secret"), "OK Success (no protection)");
    let status = server.terminate();
    assert_eq!(c.line().as_deref(), Some("BYE shutting down"));
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_cyrus_imap_probe_is_turned_away_at_once() {
    let server = Server::start("");
    let mut c = server.connect();
    c.greeting();
    assert_eq!(
        c.command(b"C01 CAPABILITY\r\n"),
        ["BAD IMAP_PROTOCOL_ERROR Unrecognized command"]
    );
    assert!(
        c.line().is_none(),
        "closed so the client falls back to csync"
    );
}

fn scrape(port: u16) -> String {
    for _ in 0..50 {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            return out;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no metrics endpoint on {port}");
}

#[test]
fn metrics_count_what_happened() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Server::start(&format!("csync_metrics_listen: 127.0.0.1:{port}\n"));
    let mut c = server.connect();
    c.greeting();
    assert_eq!(c.login("repluser", "wrong"), "NO authentication failure");
    assert_eq!(c.login("repluser", "secret"), "OK Success (no protection)");
    assert_eq!(c.command(&apply_message(M1, M1_GUID)), ["OK success"]);
    assert_eq!(
        c.command(&apply_mailbox(&record(1, 2), 1, 2)),
        ["OK success"]
    );
    assert_eq!(c.command(b"GET USER nobody\r\n"), ["OK success"]);
    let text = scrape(port);
    assert!(text.starts_with("HTTP/1.0 200 OK"), "{text}");
    for line in [
        "csync_server_connections 1",
        "csync_server_logins_total{result=\"failed\"} 1",
        "csync_server_logins_total{result=\"admin\"} 1",
        "csync_server_messages_received_total 1",
        &format!("csync_server_message_bytes_received_total {}", M1.len()),
        "csync_server_records_applied_total 1",
        "csync_server_commands_total{command=\"APPLY MAILBOX\",result=\"ok\"} 1",
        "csync_server_commands_total{command=\"GET USER\",result=\"ok\"} 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

#[test]
fn applied_changes_reach_the_replicas_own_sync_log_only_when_chaining() {
    for chain in [false, true] {
        let server = Server::start(&format!(
            "sync_log: yes\nsync_log_chain: {}\n",
            if chain { "yes" } else { "no" }
        ));
        let mut c = server.connect();
        c.greeting();
        assert_eq!(c.login("repluser", "secret"), "OK Success (no protection)");
        assert_eq!(c.command(&apply_message(M1, M1_GUID)), ["OK success"]);
        assert_eq!(
            c.command(&apply_mailbox(&record(1, 2), 1, 2)),
            ["OK success"]
        );
        assert_eq!(
            c.command(b"APPLY SUB %(USERID john MBOXNAME user.john)\r\n"),
            ["OK success"]
        );
        let log = std::fs::read_to_string(server.root().join("conf/sync/log")).unwrap_or_default();
        if chain {
            // A relay logs what it applied, so its own sync_client passes it on.
            assert_eq!(log, "APPEND user.john\nSUB john user.john\n");
        } else {
            // A plain replica never feeds changes back (no loops).
            assert_eq!(log, "");
        }
    }
}
