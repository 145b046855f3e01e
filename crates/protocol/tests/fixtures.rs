//! Every line of the real Cyrus 3.6 transcripts in `tests/fixtures/cyrus-3.6/` goes
//! through the decoder and back through the encoder, and must come out byte for byte
//! as Cyrus sent it.
//!
//! The transcripts are text (see `README.txt` there): one protocol line per `C:`/`S:`
//! line, CRLF removed, a few escapes. The loader below rebuilds each direction's exact
//! byte stream per connection and checks it against the byte counts the relay logged.
//! Where the relay notes that DEFLATE starts, the file already shows the inflated
//! plaintext, so the stream simply continues (we check that the switch falls on a line
//! boundary in both directions, which is what makes switching possible).

use csync_protocol::value::FileValue;
use csync_protocol::{Body, CollectFiles, Decoder, Encoder, Item, Kind, LiteralStyle, Mode, Value};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/cyrus-3.6");

// ---------------------------------------------------------------------------------
// Loader
// ---------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    /// sync_client <-> sync_server, the protocol this crate implements.
    Csync,
    /// sync_client <-> imapd (tagged `SYNCGET`/`SYNCAPPLY`, spec §1.12), or an imapd banner.
    Imap,
    /// An lmtpd banner (00-banners.txt only).
    Lmtp,
}

/// One connection of a transcript.
#[derive(Debug)]
struct Session {
    /// `file#n` for messages.
    name: String,
    protocol: Protocol,
    client: Vec<u8>,
    server: Vec<u8>,
    /// Stream offsets (client, server) from which the wire was DEFLATE.
    deflate_from: Option<(usize, usize)>,
    /// The relay's "(N plaintext)" counts (client->server, server->client).
    relay_plaintext: Option<(usize, usize)>,
}

#[derive(Debug)]
struct Fixture {
    file: String,
    sessions: Vec<Session>,
}

/// Undoes the README's escapes. Returns the bytes and whether the line had a CRLF.
fn unescape(text: &str, where_: &str) -> (Vec<u8>, bool) {
    const NO_CRLF: &str = "\\<no CRLF before close>";
    let (text, crlf) = match text.strip_suffix(NO_CRLF) {
        Some(t) => (t, false),
        None => (text, true),
    };
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'\\' {
            out.push(bytes[i]);
            i += 1;
            continue;
        }
        match bytes.get(i + 1) {
            Some(b'\\') => out.push(b'\\'),
            Some(b'r') => out.push(b'\r'),
            Some(b'n') => out.push(b'\n'),
            Some(b'x') => {
                let hex = text
                    .get(i + 2..i + 4)
                    .unwrap_or_else(|| panic!("{where_}: truncated \\x escape"));
                out.push(
                    u8::from_str_radix(hex, 16)
                        .unwrap_or_else(|_| panic!("{where_}: bad \\x escape {hex:?}")),
                );
                i += 2;
            }
            other => panic!("{where_}: unknown escape \\{:?}", other.map(|&b| b as char)),
        }
        i += 2;
    }
    (out, crlf)
}

/// `[1795302571.483] ` (07-rolling.txt): the relay's clock, not protocol bytes.
fn timestamp_len(body: &str) -> Option<usize> {
    let rest = body.strip_prefix('[')?;
    let close = rest.find("] ")?;
    let stamp = &rest[..close];
    let (secs, frac) = stamp.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits(secs) && digits(frac)).then_some(close + 3)
}

fn parse_count(text: &str, after: &str) -> usize {
    let start = text
        .find(after)
        .unwrap_or_else(|| panic!("no {after:?} in {text:?}"))
        + after.len();
    let rest = &text[start..];
    let open = rest.find('(').expect("(N plaintext)") + 1;
    let end = rest[open..].find(' ').expect("N plaintext") + open;
    rest[open..end].parse().expect("plaintext count")
}

fn load(file: &str) -> Fixture {
    let text = std::fs::read_to_string(format!("{DIR}/{file}")).expect("read fixture");
    let lines: Vec<&str> = text.lines().collect();
    // 00-banners.txt writes the line ends out ("CRLF shown as \r\n") instead of
    // dropping them.
    let explicit_crlf = lines
        .first()
        .is_some_and(|l| l.starts_with('#') && l.contains("CRLF shown as \\r\\n"));
    // 07-rolling.txt prefixes every protocol line with a timestamp; only strip it if all
    // protocol lines of the file have one.
    let is_protocol = |l: &&str| l.starts_with("C: ") || l.starts_with("S: ");
    let protocol_lines: Vec<&str> = lines.iter().copied().filter(is_protocol).collect();
    let stamped = !protocol_lines.is_empty()
        && protocol_lines
            .iter()
            .all(|l| timestamp_len(&l[3..]).is_some());

    let mut sessions: Vec<Session> = Vec::new();
    let new_session = |sessions: &mut Vec<Session>| {
        let n = sessions.len() + 1;
        sessions.push(Session {
            name: format!("{file}#{n}"),
            protocol: Protocol::Csync,
            client: Vec::new(),
            server: Vec::new(),
            deflate_from: None,
            relay_plaintext: None,
        });
    };
    for (number, line) in lines.iter().enumerate() {
        let where_ = format!("{file}:{}", number + 1);
        if let Some(comment) = line.strip_prefix('#') {
            let comment = comment.trim_start();
            if comment.starts_with("relay: session ") && comment.contains(" opened ") {
                new_session(&mut sessions);
            } else if comment.starts_with("relay: session ") && comment.contains(" closed") {
                let s = sessions.last_mut().expect("closed before opened");
                s.relay_plaintext = Some((
                    parse_count(comment, "client->server "),
                    parse_count(comment, "server->client "),
                ));
            } else if comment.starts_with("relay: DEFLATE active") {
                let s = sessions.last_mut().expect("DEFLATE outside a session");
                s.deflate_from = Some((s.client.len(), s.server.len()));
            } else if ["csync (", "imap (", "lmtp ("]
                .iter()
                .any(|p| comment.starts_with(p))
            {
                // 00-banners.txt: each banner is its own connection.
                new_session(&mut sessions);
            }
            continue;
        }
        if line.is_empty() {
            continue;
        }
        let (dir, body) = match line.split_at_checked(3) {
            Some(("C: ", body)) => ('C', body),
            Some(("S: ", body)) => ('S', body),
            _ => panic!("{where_}: not a C:/S:/# line: {line:?}"),
        };
        let body = if stamped {
            &body[timestamp_len(body).expect("timestamp")..]
        } else {
            body
        };
        let (mut bytes, crlf) = unescape(body, &where_);
        if explicit_crlf {
            assert!(bytes.ends_with(b"\r\n"), "{where_}: line end not shown");
        } else if crlf {
            bytes.extend_from_slice(b"\r\n");
        }
        if sessions.is_empty() {
            new_session(&mut sessions);
        }
        let s = sessions.last_mut().unwrap();
        match dir {
            'C' => s.client.extend_from_slice(&bytes),
            _ => s.server.extend_from_slice(&bytes),
        }
    }
    for s in &mut sessions {
        s.protocol = if s.server.starts_with(b"220 ") {
            Protocol::Lmtp
        } else if first_line_with(&s.server, b"* OK ")
            .is_some_and(|l| contains(l, b" Cyrus sync server "))
        {
            Protocol::Csync
        } else if first_line_with(&s.server, b"* OK ").is_some_and(|l| contains(l, b" Cyrus IMAP "))
        {
            Protocol::Imap
        } else {
            panic!("{}: cannot tell the protocol from the greeting", s.name)
        };
    }
    Fixture {
        file: file.to_string(),
        sessions,
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn first_line_with<'a>(stream: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    stream
        .split(|&b| b == b'\n')
        .find(|l| l.len() >= prefix.len() && l[..prefix.len()].eq_ignore_ascii_case(prefix))
}

fn fixture_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(DIR)
        .expect("fixture directory")
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".txt") && n != "README.txt")
        .collect();
    files.sort();
    files
}

fn all_fixtures() -> Vec<Fixture> {
    fixture_files().iter().map(|f| load(f)).collect()
}

// ---------------------------------------------------------------------------------
// Decoding a whole stream
// ---------------------------------------------------------------------------------

/// How the bytes are cut before they reach the decoder.
#[derive(Clone, Copy, Debug)]
enum Chunking {
    Whole,
    /// Two pieces: `[..k]` and `[k..]`.
    SplitAt(usize),
    /// Pieces of `n` bytes.
    Pieces(usize),
}

impl Chunking {
    fn next_boundary(self, pos: usize, len: usize) -> usize {
        match self {
            Chunking::Whole => len,
            Chunking::SplitAt(k) if pos < k => k,
            Chunking::SplitAt(_) => len,
            Chunking::Pieces(n) => ((pos / n + 1) * n).min(len),
        }
    }
}

/// The owned outcome of one decoded line.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Decoded {
    None,
    Text(Vec<u8>),
    /// Root key and value, file bodies filled in.
    Dlist(Option<Vec<u8>>, Value),
    Malformed(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct DecodedLine {
    /// Offsets of the whole line in the stream (including a stripped IMAP prefix).
    start: usize,
    end: usize,
    mode: Mode,
    /// The IMAP tag and `SYNC` prefix that were not fed to the decoder.
    prefix: Vec<u8>,
    word: Vec<u8>,
    body: Decoded,
    files: Vec<Vec<u8>>,
    /// The line written back by the encoder.
    reencoded: Vec<u8>,
}

impl DecodedLine {
    fn raw<'a>(&self, stream: &'a [u8]) -> &'a [u8] {
        &stream[self.start..self.end]
    }
}

/// What to do with the next line: the decoder mode, and how many leading bytes are an
/// IMAP tunnel prefix (`S3 SYNC` of `S3 SYNCAPPLY ...`) not to feed to the decoder.
struct Plan {
    mode: Mode,
    skip: usize,
}

/// `to_value` with the file bodies put back from the sink.
fn owned(item: Item<'_>, files: &[Vec<u8>]) -> Value {
    match item.kind() {
        Kind::File => {
            let f = item.file().unwrap();
            Value::File(FileValue {
                partition: f.partition.to_vec(),
                guid: f.guid.to_vec(),
                body: files[f.index].clone(),
            })
        }
        Kind::List => Value::List(item.children().map(|c| owned(c, files)).collect()),
        Kind::KvList => Value::KvList(
            item.children()
                .map(|c| (c.key().unwrap().to_vec(), owned(c, files)))
                .collect(),
        ),
        _ => item.to_value(),
    }
}

fn as_str<'a>(bytes: &'a [u8], what: &str) -> &'a str {
    std::str::from_utf8(bytes).unwrap_or_else(|_| panic!("{what} is not UTF-8: {bytes:?}"))
}

/// Decodes `stream` line by line. `plan` is asked at every line start, given the line
/// before (if any) and the bytes from this line start to the end of the stream.
/// Panics on a fatal decoder error or a partial line at the end.
fn decode_stream(
    name: &str,
    stream: &[u8],
    chunking: Chunking,
    style: LiteralStyle,
    plan: &mut dyn FnMut(Option<&DecodedLine>, &[u8]) -> Plan,
) -> Vec<DecodedLine> {
    let mut dec = Decoder::new(Mode::Commands);
    let mut sink = CollectFiles::default();
    let mut out: Vec<DecodedLine> = Vec::new();
    let mut pos = 0;
    while pos < stream.len() {
        let start = pos;
        let Plan { mode, skip } = plan(out.last(), &stream[start..]);
        dec.set_mode(mode);
        assert!(dec.at_line_start(), "{name}@{start}: not at a line start");
        pos += skip;
        let complete_at = loop {
            assert!(
                pos < stream.len(),
                "{name}@{start}: stream ends inside a line"
            );
            let end = chunking.next_boundary(pos, stream.len());
            let feed = dec
                .feed(&stream[pos..end], &mut sink)
                .unwrap_or_else(|e| panic!("{name}@{start}: fatal decoder error {e:?}"));
            assert!(feed.consumed <= end - pos);
            pos += feed.consumed;
            if feed.complete {
                break pos;
            }
            assert_eq!(
                pos, end,
                "{name}@{start}: incomplete feed must use all input"
            );
            assert!(dec.line().is_none());
        };
        let line = dec.line().expect("complete line");
        let files = std::mem::take(&mut sink.files);
        let prefix = stream[start..start + skip].to_vec();
        let mut enc = Encoder::new(style);
        if !prefix.is_empty() {
            // `S3 SYNC` + `APPLY`: the tag, then the tunnelled command word.
            let tag = &prefix[..prefix.len() - b" SYNC".len()];
            enc.word(as_str(tag, "tag"));
            enc.word(&format!("SYNC{}", as_str(line.word, "word")));
        } else {
            enc.word(as_str(line.word, "word"));
        }
        let body = match line.body {
            Body::None => Decoded::None,
            Body::Text(t) => {
                enc.text(t);
                Decoded::Text(t.to_vec())
            }
            Body::Dlist(root) => {
                enc.item(root, &mut |i| &files[i]);
                Decoded::Dlist(root.key().map(<[u8]>::to_vec), owned(root, &files))
            }
            Body::Malformed(e) => Decoded::Malformed(e.to_string()),
        };
        enc.end_line();
        out.push(DecodedLine {
            start,
            end: complete_at,
            mode,
            prefix,
            word: line.word.to_vec(),
            body,
            files,
            reencoded: enc.into_bytes(),
        });
    }
    out
}

/// A Cyrus client reading a csync server (spec §1.3, §1.5): plain text until the line
/// starting `* OK` ends the greeting, then responses; after `OK Begin TLS negotiation
/// now` the greeting comes again.
fn csync_server_plan() -> impl FnMut(Option<&DecodedLine>, &[u8]) -> Plan {
    let mut greeted = false;
    move |prev, _| {
        if let Some(prev) = prev {
            if prev.mode == Mode::Text
                && prev.word.len() >= 4
                && prev.word[..4].eq_ignore_ascii_case(b"* OK")
            {
                greeted = true;
            }
            if prev.word == b"OK"
                && prev.body == Decoded::Text(b"Begin TLS negotiation now".to_vec())
            {
                greeted = false;
            }
        }
        Plan {
            mode: if greeted { Mode::Responses } else { Mode::Text },
            skip: 0,
        }
    }
}

fn csync_client_plan(_: Option<&DecodedLine>, _: &[u8]) -> Plan {
    Plan {
        mode: Mode::Commands,
        skip: 0,
    }
}

/// sync_client over imapd (spec §1.12): `<tag> SYNC<CMD> <dlist>`. The tag and `SYNC`
/// are not fed to the decoder, which then sees a csync command line. Other lines
/// (`A01 AUTHENTICATE ...`, `Q01 LOGOUT`) decode as text lines of a command word.
fn imap_client_plan(_: Option<&DecodedLine>, rest: &[u8]) -> Plan {
    let skip = rest
        .iter()
        .position(|&b| b == b' ')
        .filter(|&sp| sp > 0 && rest[..sp].iter().all(u8::is_ascii_alphanumeric))
        .filter(|&sp| rest[sp + 1..].starts_with(b"SYNC"))
        .filter(|&sp| rest.get(sp + 5).is_some_and(u8::is_ascii_uppercase))
        .map_or(0, |sp| sp + 5);
    Plan {
        mode: Mode::Commands,
        skip,
    }
}

/// sync_client reading imapd: the greeting as text, then responses, except IMAP's own
/// untagged status and capability lines (`* BYE LOGOUT received`), which are not
/// dlists.
fn imap_server_plan() -> impl FnMut(Option<&DecodedLine>, &[u8]) -> Plan {
    let mut greeted = false;
    move |prev, rest| {
        if prev.is_some_and(|p| p.word.starts_with(b"* OK ")) {
            greeted = true;
        }
        let imap_untagged = ["OK", "NO", "BAD", "BYE", "PREAUTH", "CAPABILITY"]
            .iter()
            .any(|w| rest.starts_with(format!("* {w} ").as_bytes()));
        Plan {
            mode: if greeted && !imap_untagged {
                Mode::Responses
            } else {
                Mode::Text
            },
            skip: 0,
        }
    }
}

fn text_plan(_: Option<&DecodedLine>, _: &[u8]) -> Plan {
    Plan {
        mode: Mode::Text,
        skip: 0,
    }
}

fn decode_client(s: &Session, chunking: Chunking) -> Vec<DecodedLine> {
    let name = format!("{} client", s.name);
    let style = LiteralStyle::NonSynchronizing;
    match s.protocol {
        Protocol::Csync => decode_stream(&name, &s.client, chunking, style, &mut csync_client_plan),
        Protocol::Imap => decode_stream(&name, &s.client, chunking, style, &mut imap_client_plan),
        Protocol::Lmtp => decode_stream(&name, &s.client, chunking, style, &mut text_plan),
    }
}

fn decode_server(s: &Session, chunking: Chunking) -> Vec<DecodedLine> {
    let name = format!("{} server", s.name);
    let style = LiteralStyle::Synchronizing;
    match s.protocol {
        Protocol::Csync => {
            decode_stream(&name, &s.server, chunking, style, &mut csync_server_plan())
        }
        Protocol::Imap => decode_stream(&name, &s.server, chunking, style, &mut imap_server_plan()),
        Protocol::Lmtp => decode_stream(&name, &s.server, chunking, style, &mut text_plan),
    }
}

/// Every line decoded cleanly and re-encodes to exactly the bytes Cyrus sent.
fn assert_round_trip(name: &str, stream: &[u8], lines: &[DecodedLine]) {
    let mut pos = 0;
    for line in lines {
        assert_eq!(line.start, pos, "{name}: lines must tile the stream");
        pos = line.end;
        let raw = line.raw(stream);
        if let Decoded::Malformed(e) = &line.body {
            panic!(
                "{name}@{}: malformed ({e}): {:?}",
                line.start,
                String::from_utf8_lossy(raw)
            );
        }
        assert!(
            line.reencoded == raw,
            "{name}@{}: re-encoding differs\n  sent: {:?}\n  ours: {:?}",
            line.start,
            String::from_utf8_lossy(raw),
            String::from_utf8_lossy(&line.reencoded),
        );
    }
    assert_eq!(pos, stream.len(), "{name}: the lines must cover the stream");
}

fn csync_sessions(fixtures: &[Fixture]) -> Vec<&Session> {
    fixtures
        .iter()
        .flat_map(|f| &f.sessions)
        .filter(|s| s.protocol == Protocol::Csync)
        .collect()
}

// ---------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------

#[test]
fn loader_finds_every_connection_and_matches_the_relay_counts() {
    let fixtures = all_fixtures();
    assert_eq!(fixtures.len(), 14, "{:?}", fixture_files());
    let kinds: Vec<(String, Protocol)> = fixtures
        .iter()
        .flat_map(|f| f.sessions.iter().map(|s| (s.name.clone(), s.protocol)))
        .collect();
    // 00-banners.txt: csync, imap (replica), imap (master), lmtp; every other file is one
    // relayed connection, all csync except the IMAP-tunnelled 12.
    let count = |p| kinds.iter().filter(|(_, k)| *k == p).count();
    assert_eq!(count(Protocol::Csync), 13, "{kinds:?}");
    assert_eq!(count(Protocol::Imap), 3, "{kinds:?}");
    assert_eq!(count(Protocol::Lmtp), 1, "{kinds:?}");
    assert!(kinds.contains(&("12-replication-over-imap-port.txt#1".into(), Protocol::Imap)));

    let mut checked = 0;
    for f in &fixtures {
        for s in &f.sessions {
            if let Some((client, server)) = s.relay_plaintext {
                assert_eq!(
                    s.client.len(),
                    client,
                    "{}: client->server plaintext bytes",
                    s.name
                );
                assert_eq!(
                    s.server.len(),
                    server,
                    "{}: server->client plaintext bytes",
                    s.name
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 13, "every relayed session logs its byte counts");

    // The timestamps of 07 are gone, the escapes of the flags are undone.
    let rolling = fixtures.iter().find(|f| f.file.starts_with("07-")).unwrap();
    assert!(
        rolling.sessions[0]
            .server
            .starts_with(b"* SASL PLAIN LOGIN\r\n")
    );
    assert!(contains(&rolling.sessions[0].client, b"FLAGS (\\Answered)"));
    // 00-banners.txt shows its CRLFs; they are not doubled.
    let banners = &fixtures[0].sessions[0];
    assert!(
        banners
            .server
            .starts_with(b"* SASL PLAIN LOGIN\r\n* COMPRESS DEFLATE\r\n")
    );
}

#[test]
fn unescape_follows_the_readme() {
    assert_eq!(
        unescape(r"a\\b\r\n\x00\xff	c", "t"),
        (b"a\\b\r\n\x00\xff\tc".to_vec(), true)
    );
    assert_eq!(
        unescape(r"end\<no CRLF before close>", "t"),
        (b"end".to_vec(), false)
    );
    assert!(std::panic::catch_unwind(|| unescape(r"\q", "t")).is_err());
    assert_eq!(timestamp_len("[1795302571.483] * OK"), Some(17));
    assert_eq!(timestamp_len("[CAPABILITY x] y"), None);
}

#[test]
fn csync_client_lines_round_trip_byte_for_byte() {
    let fixtures = all_fixtures();
    let mut dlists = 0;
    let mut files = 0;
    for s in csync_sessions(&fixtures) {
        let lines = decode_client(s, Chunking::Whole);
        assert_round_trip(&s.name, &s.client, &lines);
        dlists += lines
            .iter()
            .filter(|l| matches!(l.body, Decoded::Dlist(..)))
            .count();
        files += lines.iter().map(|l| l.files.len()).sum::<usize>();
        if s.client.is_empty() {
            continue;
        }
        // What a Cyrus client sends first and last.
        assert!(
            lines[0].word.eq_ignore_ascii_case(b"AUTHENTICATE"),
            "{}",
            s.name
        );
        assert_eq!(lines.last().unwrap().word, b"EXIT", "{}", s.name);
    }
    // As counted with grep in the transcripts.
    assert_eq!(dlists, 63, "GET/APPLY lines");
    assert_eq!(files, 8, "file literals");
}

#[test]
fn csync_server_lines_round_trip_byte_for_byte() {
    let fixtures = all_fixtures();
    let mut star_lines = 0;
    for s in csync_sessions(&fixtures) {
        let lines = decode_server(s, Chunking::Whole);
        assert_round_trip(&s.name, &s.server, &lines);
        // The greeting is read as text up to and including `* OK`, then responses.
        let greeting = lines
            .iter()
            .position(|l| l.word.starts_with(b"* OK "))
            .unwrap_or_else(|| panic!("{}: no greeting", s.name));
        assert!(lines[..=greeting].iter().all(|l| l.mode == Mode::Text));
        assert!(
            lines[greeting + 1..]
                .iter()
                .all(|l| l.mode == Mode::Responses)
        );
        for l in &lines[greeting + 1..] {
            match (&l.word[..], &l.body) {
                (b"*", Decoded::Dlist(Some(_), _)) => star_lines += 1,
                (b"OK" | b"NO" | b"BAD" | b"BYE" | b"+", Decoded::Text(_)) => {}
                other => panic!("{}: unexpected response line {other:?}", s.name),
            }
        }
    }
    assert_eq!(star_lines, 45, "`*` lines after the greeting");
}

#[test]
fn compression_starts_on_a_line_boundary() {
    let fixtures = all_fixtures();
    let mut seen = 0;
    for s in csync_sessions(&fixtures) {
        let Some((c, sv)) = s.deflate_from else {
            continue;
        };
        seen += 1;
        let client = decode_client(s, Chunking::Whole);
        let server = decode_server(s, Chunking::Whole);
        let last_before = |lines: &[DecodedLine], at: usize| {
            lines
                .iter()
                .find(|l| l.end == at)
                .unwrap_or_else(|| panic!("{}: DEFLATE starts inside a line", s.name))
                .reencoded
                .clone()
        };
        assert_eq!(last_before(&client, c), b"COMPRESS DEFLATE\r\n");
        assert_eq!(last_before(&server, sv), b"OK DEFLATE active\r\n");
    }
    assert_eq!(seen, 11, "sessions with COMPRESS DEFLATE");
}

#[test]
fn banners_decode_as_text() {
    let banners = load("00-banners.txt");
    let csync = &banners.sessions[0];
    let lines = decode_server(csync, Chunking::Whole);
    assert_round_trip(&csync.name, &csync.server, &lines);
    let words: Vec<&[u8]> = lines.iter().map(|l| &l.word[..]).collect();
    assert_eq!(
        words,
        [
            &b"* SASL PLAIN LOGIN"[..],
            b"* COMPRESS DEFLATE",
            b"* SIEVE-MAILBOX",
            b"* OK cyrus-replica.test Cyrus sync server 3.6.1-Debian-3.6.1-4+deb12u5",
        ]
    );
    assert!(
        lines
            .iter()
            .all(|l| l.mode == Mode::Text && l.body == Decoded::None)
    );
    for s in &banners.sessions[1..] {
        let lines = decode_server(s, Chunking::Whole);
        assert_round_trip(&s.name, &s.server, &lines);
    }
}

#[test]
fn imap_tunnelled_session_round_trips() {
    let fixture = load("12-replication-over-imap-port.txt");
    let s = &fixture.sessions[0];
    assert_eq!(s.protocol, Protocol::Imap);

    let client = decode_client(s, Chunking::Whole);
    assert_round_trip(&s.name, &s.client, &client);
    let tunnelled: Vec<(&[u8], &[u8])> = client
        .iter()
        .filter(|l| !l.prefix.is_empty())
        .map(|l| (&l.prefix[..], &l.word[..]))
        .collect();
    assert_eq!(
        tunnelled,
        [
            (&b"S0 SYNC"[..], &b"APPLY"[..]),
            (b"S1 SYNC", b"GET"),
            (b"S2 SYNC", b"APPLY"),
            (b"S3 SYNC", b"APPLY"),
            (b"S4 SYNC", b"APPLY"),
        ]
    );
    assert!(
        client
            .iter()
            .filter(|l| !l.prefix.is_empty())
            .all(|l| matches!(l.body, Decoded::Dlist(..)))
    );
    let message = client.iter().find(|l| l.prefix == b"S3 SYNC").unwrap();
    assert_eq!(message.files.len(), 1);
    assert_eq!(message.files[0].len(), 1413);

    let server = decode_server(s, Chunking::Whole);
    assert_round_trip(&s.name, &s.server, &server);
    let dlists = server
        .iter()
        .filter(|l| matches!(l.body, Decoded::Dlist(..)))
        .count();
    assert_eq!(dlists, 3, "ENABLED, MAILBOX, MISSING");
}

#[test]
fn file_literals_reach_the_sink_whole() {
    let fixture = load("01-first-sync-new-user.txt");
    let s = &fixture.sessions[0];
    let lines = decode_client(s, Chunking::Whole);
    let message = lines
        .iter()
        .find(|l| matches!(&l.body, Decoded::Dlist(Some(k), _) if k == b"MESSAGE"))
        .expect("APPLY MESSAGE");
    let sizes: Vec<usize> = message.files.iter().map(Vec::len).collect();
    assert_eq!(sizes, [1014, 1453]);
    assert!(message.files[0].starts_with(b"Return-Path: <sender@harness.test>\r\n"));
    assert!(message.files[1].ends_with(b"sapelwilmi lojin?\r\n"));
    let Decoded::Dlist(_, Value::List(items)) = &message.body else {
        panic!("{:?}", message.body)
    };
    let Value::File(first) = &items[0] else {
        panic!("{:?}", items[0])
    };
    assert_eq!(first.partition, b"default");
    assert_eq!(first.guid, b"b56f91b0acf54b9dc209e41c6154b779ceab30d3");
}

/// The largest csync client stream (with file literals), cut at every single split
/// point and in 1-byte pieces, decodes to exactly the same lines.
#[test]
fn every_chunking_of_a_client_stream_decodes_the_same() {
    let fixtures = all_fixtures();
    let s = csync_sessions(&fixtures)
        .into_iter()
        .max_by_key(|s| s.client.len())
        .unwrap();
    assert!(
        s.client.len() > 3000 && contains(&s.client, b"%{default "),
        "{}",
        s.name
    );
    let whole = decode_client(s, Chunking::Whole);
    assert_round_trip(&s.name, &s.client, &whole);
    assert_eq!(
        decode_client(s, Chunking::Pieces(1)),
        whole,
        "1-byte pieces"
    );
    for k in 1..s.client.len() {
        assert_eq!(
            decode_client(s, Chunking::SplitAt(k)),
            whole,
            "split at {k}"
        );
    }
}

/// The same for a server stream, which also switches modes after the greeting.
#[test]
fn every_chunking_of_a_server_stream_decodes_the_same() {
    let fixtures = all_fixtures();
    let s = csync_sessions(&fixtures)
        .into_iter()
        .max_by_key(|s| s.server.len())
        .unwrap();
    let whole = decode_server(s, Chunking::Whole);
    assert_round_trip(&s.name, &s.server, &whole);
    for n in [1, 2, 3, 7, 64] {
        assert_eq!(
            decode_server(s, Chunking::Pieces(n)),
            whole,
            "{n}-byte pieces"
        );
    }
    for k in 1..s.server.len() {
        assert_eq!(
            decode_server(s, Chunking::SplitAt(k)),
            whole,
            "split at {k}"
        );
    }
}
