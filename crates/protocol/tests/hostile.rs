//! The hostile and malformed inputs of spec §9.7 (and the parser rules of §2.4/§2.5 they
//! rest on), classified at the decoder level the way Cyrus classifies them:
//!
//! * **OK**: the line decodes; any refusal is the server's business above the decoder
//!   (authentication, unknown command, bad parameters, ...).
//! * **Malformed**: a recoverable syntax error; the whole line, literals included, is
//!   consumed and the next line decodes normally (Cyrus: `BAD ... Failed to parse`).
//! * **Fatal**: `feed` returns an error, the decoder is poisoned and the connection must
//!   end (Cyrus: `* Fatal error: ...` and exit).
//!
//! The reply strings are the server's job and are not tested here.

use csync_protocol::{
    Body, CollectFiles, DecodeError, Decoder, FileHeader, FileSink, Mode, SinkError, Value,
};

#[derive(Debug, PartialEq, Eq)]
enum Class {
    /// Decoded: first word and what followed it.
    Ok(String, Shape),
    Malformed(String),
    Fatal(String),
    /// The bytes so far are an unfinished line.
    Incomplete,
}

#[derive(Debug, PartialEq, Eq)]
enum Shape {
    None,
    Text(String),
    /// Root key and value.
    Dlist(String, Value),
}

/// Decodes one line from the start of `input`; also returns how many bytes it used.
fn first_line(mode: Mode, input: &[u8], sink: &mut dyn FileSink) -> (Class, usize) {
    let mut dec = Decoder::new(mode);
    let mut pos = 0;
    while pos < input.len() {
        match dec.feed(&input[pos..], sink) {
            Err(e) => {
                assert!(e.is_fatal());
                return (Class::Fatal(e.to_string()), pos);
            }
            Ok(feed) => {
                pos += feed.consumed;
                if feed.complete {
                    let line = dec.line().unwrap();
                    let word = String::from_utf8_lossy(line.word).into_owned();
                    let class = match line.body {
                        Body::None => Class::Ok(word, Shape::None),
                        Body::Text(t) => {
                            Class::Ok(word, Shape::Text(String::from_utf8_lossy(t).into()))
                        }
                        Body::Dlist(item) => Class::Ok(
                            word,
                            Shape::Dlist(
                                String::from_utf8_lossy(item.key().unwrap()).into(),
                                item.to_value(),
                            ),
                        ),
                        Body::Malformed(e) => {
                            assert!(!e.is_fatal(), "{e:?}");
                            Class::Malformed(e.to_string())
                        }
                    };
                    return (class, pos);
                }
            }
        }
    }
    (Class::Incomplete, pos)
}

fn command(input: &[u8]) -> Class {
    first_line(Mode::Commands, input, &mut CollectFiles::default()).0
}

fn ok(word: &str, shape: Shape) -> Class {
    Class::Ok(word.into(), shape)
}

fn dlist(key: &str, value: Value) -> Shape {
    Shape::Dlist(key.into(), value)
}

fn s(text: &str) -> Value {
    Value::str(text)
}

fn list<const N: usize>(items: [Value; N]) -> Value {
    Value::List(items.into())
}

fn text(s: &str) -> Shape {
    Shape::Text(s.into())
}

fn is_malformed(c: &Class) -> bool {
    matches!(c, Class::Malformed(_))
}

/// After a malformed line, the next line decodes: the decoder resynchronised.
fn recovers_after(bad: &[u8]) {
    let mut input = bad.to_vec();
    input.extend_from_slice(b"NOOP\r\n");
    let mut sink = CollectFiles::default();
    let mut dec = Decoder::new(Mode::Commands);
    let mut pos = 0;
    let mut lines = Vec::new();
    while pos < input.len() {
        let feed = dec.feed(&input[pos..], &mut sink).expect("not fatal");
        pos += feed.consumed;
        if feed.complete {
            let line = dec.line().unwrap();
            lines.push((line.word.to_vec(), matches!(line.body, Body::Malformed(_))));
        }
    }
    assert_eq!(
        lines,
        [
            (
                bad.split(|&b| matches!(b, b' ' | b'\r' | b'\n'))
                    .next()
                    .unwrap()
                    .to_vec(),
                true
            ),
            (b"NOOP".to_vec(), false)
        ],
        "{:?}",
        String::from_utf8_lossy(bad)
    );
}

// §9.7 "GET USER john before AUTHENTICATE" → `NO Please authenticate first`.
// Decoder: OK; the session layer refuses it.
#[test]
fn get_before_authenticate_decodes() {
    assert_eq!(
        command(b"GET USER john\r\n"),
        ok("GET", dlist("USER", s("john")))
    );
}

// §9.7 "FOO bar" → `BAD IMAP_PROTOCOL_ERROR Unrecognized command`.
// Decoder: OK, a text line; unknown words never carry a dlist.
#[test]
fn unknown_command_is_a_text_line() {
    assert_eq!(command(b"FOO bar\r\n"), ok("FOO", text("bar")));
    // Even with dlist-looking or literal-looking arguments: only GET/APPLY/RESTORE
    // have dlists, so `{3+}` here is just text to the end of the line.
    assert_eq!(command(b"FOO (a {3+}\r\n"), ok("FOO", text("(a {3+}")));
}

// §9.7 "empty line" → `BAD Null command`. Decoder: OK, an empty word and no body.
#[test]
fn empty_line_is_an_empty_word() {
    assert_eq!(command(b"\r\n"), ok("", Shape::None));
    assert_eq!(command(b"\n"), ok("", Shape::None));
}

// §9.7 "GET USER john " (trailing space) → `BAD IMAP_PROTOCOL_ERROR Failed to parse GET
// line`. Decoder: Malformed, recoverable (§2.4: trailing spaces are an error).
#[test]
fn trailing_space_is_malformed() {
    assert!(is_malformed(&command(b"GET USER john \r\n")));
    recovers_after(b"GET USER john \r\n");
}

// §9.7 "GET FOO x" / "APPLY FOO %()" → `NO IMAP_PROTOCOL_ERROR Protocol error`.
// Decoder: OK; the unknown subcommand is found by the dispatcher.
#[test]
fn unknown_subcommands_decode() {
    assert_eq!(command(b"GET FOO x\r\n"), ok("GET", dlist("FOO", s("x"))));
    assert_eq!(
        command(b"APPLY FOO %()\r\n"),
        ok("APPLY", dlist("FOO", Value::KvList(vec![])))
    );
}

// §9.7 "APPLY MAILBOX %(UNIQUEID x)" → `NO IMAP_PROTOCOL_BAD_PARAMETERS`.
// Decoder: OK; missing keys are a typed-read failure above it.
#[test]
fn missing_parameters_decode() {
    assert_eq!(
        command(b"APPLY MAILBOX %(UNIQUEID x)\r\n"),
        ok("APPLY", dlist("MAILBOX", Value::kv([("UNIQUEID", s("x"))])))
    );
}

// §9.7 "STARTTLS without TLS configured", "COMPRESS FOO", "second AUTHENTICATE",
// "AUTHENTICATE PLAIN =": all refusals of the session layer. Decoder: OK, text lines.
#[test]
fn session_commands_are_text() {
    assert_eq!(command(b"STARTTLS\r\n"), ok("STARTTLS", Shape::None));
    assert_eq!(command(b"COMPRESS FOO\r\n"), ok("COMPRESS", text("FOO")));
    assert_eq!(
        command(b"AUTHENTICATE PLAIN AHJlcGwAc2VjcmV0\r\n"),
        ok("AUTHENTICATE", text("PLAIN AHJlcGwAc2VjcmV0"))
    );
    assert_eq!(
        command(b"AUTHENTICATE PLAIN =\r\n"),
        ok("AUTHENTICATE", text("PLAIN ="))
    );
    // §1.9: extra text after NOOP is the session layer's `BAD Unexpected extra
    // arguments`; the decoder just reports it.
    assert_eq!(command(b"NOOP now\r\n"), ok("NOOP", text("now")));
}

// §9.7 "AUTHENTICATE PLAIN then *" → `+ ` then `BAD Client canceled authentication`.
// Decoder: OK, the `*` line is a bare word (read in Commands or Text mode).
#[test]
fn sasl_cancel_is_a_bare_word() {
    assert_eq!(command(b"*\r\n"), ok("*", Shape::None));
    let (class, _) = first_line(Mode::Text, b"*\r\n", &mut CollectFiles::default());
    assert_eq!(class, ok("*", Shape::None));
}

// §9.7 SINCE_MODSEQ / HIGHESTMODSEQ / existing-name / wrong-UNIQUEID rows are mailbox
// state decisions. Decoder: OK (a well-formed APPLY MAILBOX / APPLY EXPUNGE).
#[test]
fn state_conflicts_decode() {
    assert_eq!(
        command(b"APPLY EXPUNGE %(MBOXNAME user.john UNIQUEID wrong UID (1))\r\n"),
        ok(
            "APPLY",
            dlist(
                "EXPUNGE",
                Value::kv([
                    ("MBOXNAME", s("user.john")),
                    ("UNIQUEID", s("wrong")),
                    ("UID", list([s("1")])),
                ])
            )
        )
    );
}

/// A sink that knows one partition, as a server's staging area would.
struct Partitions;

impl FileSink for Partitions {
    fn begin_file(&mut self, header: &FileHeader<'_>) -> Result<(), SinkError> {
        if header.partition == b"default" {
            Ok(())
        } else {
            Err(SinkError::msg("unknown partition"))
        }
    }
    fn file_bytes(&mut self, _: &[u8]) -> Result<(), SinkError> {
        Ok(())
    }
    fn end_file(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

// §9.7 "%{nosuchpart ...} file literal" → Cyrus: `* Fatal error: Internal error:
// assertion failed ...`, exit. Decoder: the partition is the sink's decision. With a
// sink that rejects it, the line is Malformed (DecodeError::File) with all its bytes
// consumed, so the server can choose to answer and go on or to end the connection as
// Cyrus does; it is not a decoder-fatal error.
#[test]
fn unknown_partition_is_the_sinks_call() {
    let line = b"APPLY MESSAGE (%{nosuchpart 0123456789abcdef0123456789abcdef01234567 6}\r\nNOOP\r\n)\r\nEXIT\r\n";
    let (class, used) = first_line(Mode::Commands, line, &mut Partitions);
    assert!(
        matches!(&class, Class::Malformed(e) if e.contains("unknown partition")),
        "{class:?}"
    );
    assert_eq!(
        &line[used..],
        b"EXIT\r\n",
        "the body was consumed, not read as commands"
    );
    // The same line decodes with a sink that takes any partition.
    let (class, _) = first_line(Mode::Commands, line, &mut CollectFiles::default());
    assert!(matches!(class, Class::Ok(_, Shape::Dlist(..))), "{class:?}");
}

// §9.7 "APPLY MAILBOX with an append whose file was never staged" → Cyrus dies
// (SIGABRT). Decoder: OK; the staging lookup is above it.
#[test]
fn unstaged_append_decodes() {
    let input = b"APPLY MAILBOX %(UNIQUEID u MBOXNAME user.x RECORD (%(UID 1 GUID 0123456789abcdef0123456789abcdef01234567)))\r\n";
    assert!(matches!(command(input), Class::Ok(_, Shape::Dlist(..))));
}

// §9.7 "{3} synchronizing literal in any GET/APPLY" → Debian's sync_server crashes.
// We accept `{n}` like `{n+}` (§2.5, rule for a Rust server) and never wait for or send
// a continuation: the decoder has nothing to send.
#[test]
fn synchronizing_literal_is_accepted() {
    assert_eq!(
        command(b"GET USER {4}\r\njohn\r\n"),
        ok("GET", dlist("USER", s("john")))
    );
    assert_eq!(
        command(b"GET USER {4+}\r\njohn\r\n"),
        ok("GET", dlist("USER", s("john")))
    );
}

// §9.7 "{200000+} literal" → `* Fatal error: [TOOBIG] Literal size exceeds fixed limit`,
// exit. Decoder: Fatal LiteralTooBig as soon as the header is read, before any body
// byte, and the decoder is poisoned. `maxliteral` is 131072 (§2.5): that size is fine.
#[test]
fn oversized_literal_is_fatal() {
    let mut dec = Decoder::new(Mode::Commands);
    let mut sink = CollectFiles::default();
    let err = dec
        .feed(b"APPLY SIEVE %(CONTENT {200000+}\r\n", &mut sink)
        .unwrap_err();
    assert!(matches!(
        err,
        DecodeError::LiteralTooBig {
            size: 200000,
            limit: 131072
        }
    ));
    assert!(
        err.to_string()
            .starts_with("[TOOBIG] Literal size exceeds fixed limit")
    );
    assert!(matches!(
        dec.feed(b"NOOP\r\n", &mut sink),
        Err(DecodeError::Poisoned)
    ));
    // The synchronizing spelling too.
    assert!(matches!(command(b"GET USER {200000}\r\n"), Class::Fatal(_)));
    // At the limit: accepted.
    let mut line = b"APPLY X {131072+}\r\n".to_vec();
    line.resize(line.len() + 131072, b'a');
    line.extend_from_slice(b"\r\n");
    assert!(matches!(command(&line), Class::Ok(_, Shape::Dlist(..))));
    assert!(matches!(command(b"APPLY X {131073+}\r\n"), Class::Fatal(e) if e.contains("TOOBIG")));
    // A literal inside a malformed line is still checked while it is skipped: the
    // skipper applies the same limit.
    assert!(matches!(
        command(b"GET USER john x {200000+}\r\n"),
        Class::Fatal(_)
    ));
}

// §2.4/§2.5: decimal numbers that overflow while being read (literal and file sizes)
// are fatal ("num too big").
#[test]
fn overflowing_sizes_are_fatal() {
    assert!(matches!(command(b"APPLY X {4294967296+}\r\n"), Class::Fatal(e) if e == "num too big"));
    assert!(matches!(
        command(b"APPLY MESSAGE (%{default g 4294967296}\r\n"),
        Class::Fatal(e) if e == "num too big"
    ));
}

// §2.5: `maxword`/`maxquoted` (131072) exceeded is fatal.
#[test]
fn oversized_atoms_and_quoted_strings_are_fatal() {
    let mut atom = b"GET USER ".to_vec();
    atom.resize(atom.len() + 131073, b'a');
    atom.extend_from_slice(b"\r\n");
    assert!(matches!(command(&atom), Class::Fatal(e) if e.contains("TOOBIG")));
    let mut quoted = b"GET USER \"".to_vec();
    quoted.resize(quoted.len() + 131073, b'a');
    quoted.extend_from_slice(b"\"\r\n");
    assert!(matches!(command(&quoted), Class::Fatal(e) if e.contains("TOOBIG")));
    // 131072 bytes are fine.
    let mut fits = b"GET USER ".to_vec();
    fits.resize(fits.len() + 131072, b'a');
    fits.extend_from_slice(b"\r\n");
    assert!(matches!(command(&fits), Class::Ok(_, Shape::Dlist(..))));
}

// §2.5: the CRLF after a `{n}` literal header is mandatory; a bare LF is an error (but
// a bare LF is fine after a `%{...}` file header and at the end of a line, §1.2).
#[test]
fn literal_header_needs_crlf() {
    assert!(is_malformed(&command(b"GET USER {4+}\njohn\r\n")));
    assert_eq!(
        command(b"GET USER john\n"),
        ok("GET", dlist("USER", s("john")))
    );
    let (class, _) = first_line(
        Mode::Commands,
        b"APPLY MESSAGE (%{default g 2}\nhi)\n",
        &mut CollectFiles::default(),
    );
    let Class::Ok(_, Shape::Dlist(key, Value::List(items))) = class else {
        panic!("{class:?}")
    };
    assert_eq!(key, "MESSAGE");
    assert!(matches!(&items[..], [Value::File(f)] if f.partition == b"default"));
}

// §2.4: the other parse failures are recoverable, and the rest of the line is skipped
// with its literals so that payload is never read as commands.
#[test]
fn parse_errors_are_malformed_and_recoverable() {
    let cases: &[&[u8]] = &[
        b"GET\r\n",                  // missing argument
        b"GET USER\r\n",             // key without a value
        b"APPLY X %(A)\r\n",         // kvlist key without a value
        b"APPLY X %(A b C)\r\n",     // ditto, later in the kvlist
        b"APPLY X %x\r\n",           // % not followed by ( or {
        b"APPLY X \"ab\r\n",         // end of line inside quotes
        b"APPLY X )\r\n",            // stray )
        b"APPLY X (a) b\r\n",        // data after the value
        b"APPLY X %(\\Seen a)\r\n",  // a flag cannot be a key
        b"APPLY X %((a) b)\r\n",     // a list cannot be a key
        b"APPLY (a) b\r\n",          // nor can the top-level key
        b"APPLY X {3x}\r\n",         // bad literal header
        b"APPLY X (%{p g x})\r\n",   // bad file size
        b"APPLY X (%{p g 3} x)\r\n", // file header must end the line
        b"GET USER john\rx\r\n",     // CR without LF
    ];
    for &case in cases {
        assert!(
            is_malformed(&command(case)),
            "{:?}",
            String::from_utf8_lossy(case)
        );
        recovers_after(case);
    }
}

// §2.4 recovery (sync_eatline): a malformed line's literals and file literals are
// skipped whole, even when their payload looks like commands.
#[test]
fn recovery_skips_literal_payloads() {
    recovers_after(b"APPLY X ) {6+}\r\nEXIT\r\n\r\n");
    recovers_after(b"APPLY X ) %{p g 6}\r\nEXIT\r\n\r\n");
    // Cyrus only skips the `{n+}` spelling; we skip `{n}` as well, since we accept it
    // in well-formed lines too.
    recovers_after(b"APPLY X ) {6}\r\nEXIT\r\n\r\n");
}

// §2.4: there is no nesting limit in Cyrus; ours (32) gives a recoverable error, not a
// crash.
#[test]
fn deep_nesting_is_malformed_not_fatal() {
    let mut line = b"APPLY X ".to_vec();
    line.extend(std::iter::repeat_n(b'(', 10_000));
    line.extend(std::iter::repeat_n(b')', 10_000));
    line.extend_from_slice(b"\r\n");
    assert!(matches!(command(&line), Class::Malformed(e) if e.contains("deeper")));
    recovers_after(&line);
    // Real traffic nests 5 deep; 32 is fine.
    let mut ok_line = b"APPLY X ".to_vec();
    ok_line.extend(std::iter::repeat_n(b'(', 32));
    ok_line.extend(std::iter::repeat_n(b')', 32));
    ok_line.extend_from_slice(b"\r\n");
    assert!(matches!(command(&ok_line), Class::Ok(_, Shape::Dlist(..))));
}

// §2.4: list items are separated by any whitespace including CR/LF, so an unterminated
// list swallows the following lines, exactly as Cyrus's recursive parser does. The
// decoder waits for more; it does not split the line at the CRLF.
#[test]
fn unterminated_list_continues_on_the_next_line() {
    let (class, used) = first_line(
        Mode::Commands,
        b"APPLY X (a\r\nNOOP\r\n",
        &mut CollectFiles::default(),
    );
    assert_eq!((class, used), (Class::Incomplete, 18));
    assert_eq!(
        command(b"APPLY X (a\r\nNOOP\r\n)\r\n"),
        ok("APPLY", dlist("X", list([s("a"), s("NOOP")])))
    );
}

// §2.4: commands are matched case-insensitively; only the first byte decides a value's
// kind, atoms are liberal inside, NIL is NIL only unquoted.
#[test]
fn lenient_forms_cyrus_accepts() {
    assert_eq!(command(b"apply X y\r\n"), ok("apply", dlist("X", s("y"))));
    assert_eq!(
        command(b"GET USER a{b%c*d\\e]\r\n"),
        ok("GET", dlist("USER", s("a{b%c*d\\e]")))
    );
    assert_eq!(
        command(b"APPLY X\t\t(a\tb)\r\n"),
        ok("APPLY", dlist("X", list([s("a"), s("b")])))
    );
    assert_eq!(
        command(b"APPLY X \"NIL\"\r\n"),
        ok("APPLY", dlist("X", s("NIL")))
    );
    assert_eq!(
        command(b"APPLY X NIL\r\n"),
        ok("APPLY", dlist("X", Value::Nil))
    );
    assert_eq!(
        command(b"APPLY X nil\r\n"),
        ok("APPLY", dlist("X", s("nil")))
    );
    assert_eq!(
        command(b"APPLY X \\Seen\r\n"),
        ok("APPLY", dlist("X", Value::Flag(b"\\Seen".to_vec())))
    );
    assert_eq!(
        command(b"APPLY X \"a\\\"b\"\r\n"),
        ok("APPLY", dlist("X", s("a\"b")))
    );
}

// Replies a client may meet (§1.9, §1.10). Decoder in Responses mode: `*` lines carry a
// dlist, the rest are text. `* Fatal error: ...` is not a dlist line: Malformed (the
// client treats it as the end of the connection). `OK` without a space decodes with no
// body; the Cyrus client calls that a protocol error, so the client layer must too.
#[test]
fn replies_a_client_may_meet() {
    let reply = |input: &[u8]| first_line(Mode::Responses, input, &mut CollectFiles::default()).0;
    assert_eq!(reply(b"OK success\r\n"), ok("OK", text("success")));
    assert_eq!(
        reply(b"BYE shutting down\r\n"),
        ok("BYE", text("shutting down"))
    );
    assert_eq!(
        reply(b"BAD IMAP_PROTOCOL_ERROR Failed to parse GET line\r\n"),
        ok("BAD", text("IMAP_PROTOCOL_ERROR Failed to parse GET line"))
    );
    assert_eq!(reply(b"OK\r\n"), ok("OK", Shape::None));
    assert!(is_malformed(&reply(
        b"* Fatal error: [TOOBIG] Literal size exceeds fixed limit\r\n"
    )));
    assert_eq!(
        reply(b"* MISSING (a b)\r\n"),
        ok("*", dlist("MISSING", list([s("a"), s("b")])))
    );
    // The client accepts both literal spellings in replies (§2.5, Rust client rule).
    assert_eq!(reply(b"* X {1+}\r\na\r\n"), ok("*", dlist("X", s("a"))));
    assert_eq!(reply(b"* X {1}\r\na\r\n"), ok("*", dlist("X", s("a"))));
}

// The decoder's tree for a §9.7-style APPLY is the tree the typed layer reads.
#[test]
fn hostile_bytes_inside_literals_are_data() {
    let mut sink = CollectFiles::default();
    let mut dec = Decoder::new(Mode::Commands);
    let input = b"APPLY SIEVE %(CONTENT {12+}\r\nEXIT\r\n{9+}\r\n)\r\n";
    let feed = dec.feed(input, &mut sink).unwrap();
    assert!(feed.complete);
    assert_eq!(feed.consumed, input.len());
    let Body::Dlist(root) = dec.line().unwrap().body else {
        panic!()
    };
    assert_eq!(
        root.to_value(),
        Value::kv([("CONTENT", Value::str("EXIT\r\n{9+}\r\n"))])
    );
}
