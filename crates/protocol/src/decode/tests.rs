use super::*;
use crate::value::Value;

fn decode_all(mode: Mode, input: &[u8]) -> Vec<String> {
    let mut dec = Decoder::new(mode);
    let mut files = CollectFiles::default();
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < input.len() {
        let feed = dec.feed(&input[pos..], &mut files).expect("fatal");
        pos += feed.consumed;
        if feed.complete {
            out.push(describe(dec.line().unwrap()));
        }
    }
    out
}

fn describe(line: Line<'_>) -> String {
    let word = String::from_utf8_lossy(line.word);
    match line.body {
        Body::None => format!("{word}"),
        Body::Text(t) => format!("{word} text[{}]", String::from_utf8_lossy(t)),
        Body::Dlist(item) => format!("{word} {item:?}"),
        Body::Malformed(e) => format!("{word} malformed[{e}]"),
    }
}

#[test]
fn commands_words_and_dlists() {
    let out = decode_all(
        Mode::Commands,
        b"NOOP\r\nGET USER john\r\napply MAILBOXES (a \"b c\")\r\nAUTHENTICATE PLAIN AHJl=\r\n",
    );
    assert_eq!(
        out,
        vec![
            "NOOP",
            "GET USER john",
            "apply MAILBOXES (a \"b c\")",
            "AUTHENTICATE text[PLAIN AHJl=]",
        ]
    );
}

#[test]
fn trailing_space_is_an_error_like_cyrus() {
    let out = decode_all(Mode::Commands, b"GET USER john \r\nNOOP\r\n");
    assert!(out[0].contains("malformed"), "{out:?}");
    assert_eq!(out[1], "NOOP");
}

#[test]
fn bare_lf_ends_lines() {
    let out = decode_all(Mode::Commands, b"GET USER john\nNOOP\n");
    assert_eq!(out, vec!["GET USER john", "NOOP"]);
}

#[test]
fn nil_versus_quoted_nil() {
    let mut dec = Decoder::new(Mode::Responses);
    let feed = dec
        .feed(b"* X (NIL \"NIL\" nil)\r\n", &mut DiscardFiles)
        .unwrap();
    assert!(feed.complete);
    let Body::Dlist(root) = dec.line().unwrap().body else {
        panic!()
    };
    let kinds: Vec<_> = root.children().map(|c| c.kind()).collect();
    assert_eq!(kinds, vec![Kind::Nil, Kind::String, Kind::String]);
}

#[test]
fn literals_both_spellings_crlf_mandatory() {
    let out = decode_all(
        Mode::Commands,
        b"APPLY X (%(A {3+}\r\nabc B {2}\r\nde))\r\nAPPLY X {3}\nabc\r\n",
    );
    assert_eq!(out[0], "APPLY X (%(A abc B de))");
    assert!(out[1].contains("malformed"), "{out:?}");
}

#[test]
fn quoted_backslash_escapes_any_byte() {
    let mut dec = Decoder::new(Mode::Commands);
    dec.feed(b"GET USER \"a\\\"b\\\\c\\x\"\r\n", &mut DiscardFiles)
        .unwrap();
    let Body::Dlist(root) = dec.line().unwrap().body else {
        panic!()
    };
    assert_eq!(root.bytes().unwrap(), b"a\"b\\cx");
}

#[test]
fn atoms_are_liberal_inside() {
    let mut dec = Decoder::new(Mode::Commands);
    dec.feed(b"GET USER a{b%c*d\\e]\r\n", &mut DiscardFiles)
        .unwrap();
    let Body::Dlist(root) = dec.line().unwrap().body else {
        panic!()
    };
    assert_eq!(root.bytes().unwrap(), b"a{b%c*d\\e]");
}

#[test]
fn file_literals_stream_to_the_sink() {
    let input = b"APPLY MESSAGE (%{default 0123456789012345678901234567890123456789 5}\r\nhello %{p2 0123456789012345678901234567890123456789 0}\n)\r\n";
    for split in 1..input.len() {
        let mut dec = Decoder::new(Mode::Commands);
        let mut files = CollectFiles::default();
        let mut done = false;
        for part in [&input[..split], &input[split..]] {
            let mut pos = 0;
            while pos < part.len() {
                let feed = dec.feed(&part[pos..], &mut files).unwrap();
                pos += feed.consumed;
                done |= feed.complete;
            }
        }
        assert!(done);
        assert_eq!(files.files, vec![b"hello".to_vec(), Vec::new()]);
        let Body::Dlist(root) = dec.line().unwrap().body else {
            panic!()
        };
        let f: Vec<_> = root.children().map(|c| c.file().unwrap()).collect();
        assert_eq!(f[0].partition, b"default");
        assert_eq!(f[1].partition, b"p2");
        assert_eq!(f[1].index, 1);
    }
}

#[test]
fn recovery_skips_literal_payloads() {
    // The malformed line carries a literal whose payload looks like a command.
    let out = decode_all(
        Mode::Commands,
        b"APPLY X %(K) {6+}\r\nNOOP\r\n %{p g 6}\r\nEXIT\r\n\r\nRESTART\r\n",
    );
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(out[0].contains("malformed"));
    assert_eq!(out[1], "RESTART");
}

#[test]
fn sink_errors_consume_the_rest_and_report() {
    struct Full;
    impl FileSink for Full {
        fn begin_file(&mut self, _: &FileHeader<'_>) -> Result<(), SinkError> {
            Ok(())
        }
        fn file_bytes(&mut self, _: &[u8]) -> Result<(), SinkError> {
            Err(SinkError::msg("disk full"))
        }
        fn end_file(&mut self) -> Result<(), SinkError> {
            Ok(())
        }
    }
    let input = b"APPLY MESSAGE (%{default g 4}\r\nNOOP %{default g 4}\r\nEXIT)\r\nNOOP\r\n";
    let mut dec = Decoder::new(Mode::Commands);
    let feed = dec.feed(input, &mut Full).unwrap();
    assert!(feed.complete);
    match dec.line().unwrap().body {
        Body::Malformed(DecodeError::File { index: 0, .. }) => {}
        other => panic!("{other:?}"),
    }
    let feed2 = dec.feed(&input[feed.consumed..], &mut Full).unwrap();
    assert!(feed2.complete);
    assert_eq!(dec.line().unwrap().word, b"NOOP");
}

#[test]
fn fatal_limits() {
    let mut dec = Decoder::new(Mode::Commands);
    let err = dec
        .feed(b"APPLY SIEVE %(CONTENT {200000+}\r\n", &mut DiscardFiles)
        .unwrap_err();
    assert!(matches!(
        err,
        DecodeError::LiteralTooBig { size: 200000, .. }
    ));
    assert!(err.is_fatal());
    assert!(matches!(
        dec.feed(b"NOOP\r\n", &mut DiscardFiles),
        Err(DecodeError::Poisoned)
    ));

    let mut dec = Decoder::new(Mode::Commands);
    let err = dec
        .feed(b"APPLY X {4294967296+}\r\n", &mut DiscardFiles)
        .unwrap_err();
    assert!(matches!(err, DecodeError::NumberTooBig));

    let limits = Limits {
        max_word: 8,
        ..Limits::default()
    };
    let mut dec = Decoder::with_limits(Mode::Commands, limits);
    let err = dec
        .feed(b"GET USER abcdefghijk\r\n", &mut DiscardFiles)
        .unwrap_err();
    assert!(matches!(err, DecodeError::WordTooLong { .. }));
}

#[test]
fn depth_limit_is_a_clean_error() {
    let mut line = b"APPLY X ".to_vec();
    line.extend(std::iter::repeat_n(b'(', 100));
    line.extend(std::iter::repeat_n(b')', 100));
    line.extend_from_slice(b"\r\nNOOP\r\n");
    let out = decode_all(Mode::Commands, &line);
    assert!(out[0].contains("deeper"), "{out:?}");
    assert_eq!(out[1], "NOOP");
}

#[test]
fn responses_and_text() {
    let out = decode_all(
        Mode::Responses,
        b"* MISSING (a b)\r\nOK success\r\nNO IMAP_SYNC_CHANGED Changed (x\r\n+ \r\n",
    );
    assert_eq!(
        out,
        vec![
            "* MISSING (a b)",
            "OK text[success]",
            "NO text[IMAP_SYNC_CHANGED Changed (x]",
            "+ text[]",
        ]
    );
    let out = decode_all(Mode::Text, b"* SASL PLAIN LOGIN\r\n");
    assert_eq!(out, vec!["* SASL PLAIN LOGIN"]);
}

#[test]
fn kvlist_key_without_value_is_an_error() {
    let out = decode_all(Mode::Commands, b"APPLY X %(A)\r\nGET X\r\nGET\r\n");
    assert!(out[0].contains("malformed"));
    assert!(out[1].contains("malformed"), "{out:?}");
    assert!(out[2].contains("malformed"), "{out:?}");
}

#[test]
fn whitespace_including_newlines_separates_list_items() {
    let out = decode_all(Mode::Commands, b"APPLY X (a\r\n\tb)\r\n");
    assert_eq!(out, vec!["APPLY X (a b)"]);
}

// --- streamed RECORD lists (Decoder::stream_records) ---

/// An `APPLY MAILBOX` line with `n` records of every shape a record can take (system
/// and user flags, real and virtual annotations, quoted strings, literals).
fn mailbox_line(n: usize) -> Vec<u8> {
    let mut line = b"APPLY MAILBOX %(UNIQUEID u1 MBOXNAME user.john LAST_UID 9 \
        ANNOTATIONS (%(ENTRY /comment USERID \"\" MODSEQ 1 VALUE {3+}\r\nhi!)) RECORD ("
        .to_vec();
    for uid in 1..=n {
        let record = match uid % 4 {
            0 => format!(
                "%(UID {uid} MODSEQ {uid} LAST_UPDATED 1 FLAGS () INTERNALDATE 2 SIZE 3 \
                 GUID 0123456789012345678901234567890123456789)"
            ),
            1 => format!(
                "%(UID {uid} MODSEQ 7 LAST_UPDATED 1 FLAGS (\\Seen \\Flagged $Junk) \
                 INTERNALDATE 2 SIZE 3 GUID 0123456789012345678901234567890123456789 \
                 ANNOTATIONS (%(ENTRY /vendor/cmu/cyrus-imapd/thrid USERID \"\" MODSEQ 0 \
                 VALUE 1a2b)))"
            ),
            2 => format!(
                "%(UID {uid} MODSEQ 8 LAST_UPDATED 1 FLAGS (\\Deleted) INTERNALDATE 2 \
                 SIZE 3 GUID 0123456789012345678901234567890123456789 ANNOTATIONS \
                 (%(ENTRY /comment USERID john MODSEQ 3 VALUE {{3+}}\r\na\"b) \
                 %(ENTRY /x USERID \"\" MODSEQ 3 VALUE \"q \\\" q\")))"
            ),
            _ => format!("%(UID {uid} MODSEQ NIL FLAGS (\\Expunged))"),
        };
        if uid > 1 {
            line.push(b' ');
        }
        line.extend_from_slice(record.as_bytes());
    }
    line.extend_from_slice(b") SINCE_MODSEQ 4)\r\n");
    line
}

/// What a streaming decode of one line gave: every RECORD item, the MAILBOX kvlist
/// with the RECORD list put back together, the pauses' first indexes.
#[derive(Debug, PartialEq)]
struct Streamed {
    items: Vec<Value>,
    mailbox: Value,
    pauses: Vec<usize>,
    max_nodes: usize,
    max_heap: usize,
}

fn put_back(mailbox: Value, items: &[Value]) -> Value {
    let Value::KvList(mut keys) = mailbox else {
        panic!("not a kvlist")
    };
    if let Some((_, v)) = keys.iter_mut().find(|(k, _)| k == b"RECORD") {
        *v = Value::List(items.to_vec());
    }
    Value::KvList(keys)
}

fn stream_line(input: &[u8], batch: usize, chunks: &[usize]) -> Streamed {
    let mut dec = Decoder::new(Mode::Commands);
    dec.stream_records(batch);
    let mut items = Vec::new();
    let mut pauses = Vec::new();
    let (mut max_nodes, mut max_heap) = (0, 0);
    let mut start = 0;
    let mut bounds: Vec<usize> = chunks
        .iter()
        .copied()
        .filter(|&c| c < input.len())
        .collect();
    bounds.push(input.len());
    for end in bounds {
        let mut pos = start;
        while pos < end {
            let feed = dec.feed(&input[pos..end], &mut DiscardFiles).unwrap();
            pos += feed.consumed;
            max_nodes = max_nodes.max(dec.dlist().node_count());
            max_heap = max_heap.max(dec.dlist().heap_bytes());
            if feed.records {
                assert!(!feed.complete);
                let batch_now = dec.record_batch().expect("a batch after a pause");
                assert_eq!(batch_now.first_index, items.len());
                assert_eq!(batch_now.records.len(), batch);
                pauses.push(batch_now.first_index);
                items.extend(batch_now.records.children().map(|c| c.to_value()));
            }
            if feed.complete {
                assert_eq!(pos, input.len(), "one line");
                let line = dec.line().unwrap();
                let Body::Dlist(root) = line.body else {
                    panic!("{:?}", line.body)
                };
                if let Some(tail) = dec.record_batch() {
                    assert_eq!(tail.first_index, items.len());
                    assert_eq!(dec.records_released(), items.len());
                    items.extend(tail.records.children().map(|c| c.to_value()));
                } else {
                    items.extend(root.get("RECORD").unwrap().children().map(|c| c.to_value()));
                }
                return Streamed {
                    mailbox: put_back(root.to_value(), &items),
                    items,
                    pauses,
                    max_nodes,
                    max_heap,
                };
            }
        }
        start = end;
    }
    panic!("the line did not complete");
}

#[test]
fn streamed_records_are_the_whole_lines_records_under_any_split() {
    let input = mailbox_line(9);
    let whole = stream_line(&input, 0, &[]);
    assert_eq!(whole.items.len(), 9);
    assert!(whole.pauses.is_empty());
    for batch in [1, 2, 3, 4, 8, 9, 10] {
        let expected_pauses: Vec<usize> = (0..9 / batch).map(|i| i * batch).collect();
        // Every two-piece split, and pieces of every small size.
        let mut splits: Vec<Vec<usize>> = (1..input.len()).map(|c| vec![c]).collect();
        for size in 1..=13 {
            splits.push(
                (1..)
                    .map(|i| i * size)
                    .take_while(|&c| c < input.len())
                    .collect(),
            );
        }
        for cuts in &splits {
            let got = stream_line(&input, batch, cuts);
            assert_eq!(got.items, whole.items, "batch {batch} cuts {cuts:?}");
            assert_eq!(got.mailbox, whole.mailbox, "batch {batch} cuts {cuts:?}");
            assert_eq!(got.pauses, expected_pauses, "batch {batch} cuts {cuts:?}");
        }
    }
}

#[test]
fn the_arena_holds_one_batch_of_a_20000_record_mailbox() {
    let input = mailbox_line(20_000);
    let cuts: Vec<usize> = (1..)
        .map(|i| i * 65_536)
        .take_while(|&c| c < input.len())
        .collect();
    let whole = stream_line(&input, 0, &cuts);
    let streamed = stream_line(&input, 1024, &cuts);
    assert_eq!(streamed.items.len(), 20_000);
    assert!(streamed.items == whole.items, "streamed items differ");
    assert!(streamed.mailbox == whole.mailbox);
    assert_eq!(streamed.pauses.len(), 20_000 / 1024);
    // A record is about 8 to 25 nodes: one batch and the header, never the mailbox.
    let header_nodes = 12;
    assert!(
        streamed.max_nodes <= header_nodes + 1024 * 25,
        "{} nodes in the arena",
        streamed.max_nodes
    );
    assert!(
        streamed.max_heap < 2 << 20,
        "arena grew to {} bytes",
        streamed.max_heap
    );
    // The same line decoded whole needs many times that: the measure can fail.
    assert!(whole.max_nodes > 10 * streamed.max_nodes);
    assert!(whole.max_heap > 8 * streamed.max_heap);
}

fn pauses(input: &[u8], batch: usize) -> (usize, String) {
    let mut dec = Decoder::new(Mode::Commands);
    dec.stream_records(batch);
    let mut pauses = 0;
    let mut pos = 0;
    loop {
        let feed = dec.feed(&input[pos..], &mut DiscardFiles).unwrap();
        pos += feed.consumed;
        if feed.records {
            pauses += 1;
        }
        if feed.complete {
            if pauses > 0 {
                assert!(dec.record_batch().is_some());
            }
            return (pauses, describe(dec.line().unwrap()));
        }
    }
}

#[test]
fn only_the_first_record_list_of_apply_mailbox_streams() {
    let streams = [
        &b"APPLY MAILBOX %(RECORD (a b c))\r\n"[..],
        b"apply local_mailbox %(X 1 RECORD (a b c) Y 2)\r\n",
        b"APPLY MAILBOX %(RECORD (%(UID 1) NIL (x) %(UID 2)))\r\n",
    ];
    for input in streams {
        assert!(
            pauses(input, 2).0 >= 1,
            "{}",
            String::from_utf8_lossy(input)
        );
    }
    let whole = [
        &b"GET MAILBOXES (RECORD a b c)\r\n"[..],
        b"APPLY MAILBOXES %(RECORD (a b c))\r\n",
        b"APPLY RESERVE %(RECORD (a b c))\r\n",
        b"APPLY MAILBOX %(X %(RECORD (a b c)))\r\n",
        b"APPLY MAILBOX %(record (a b c))\r\n",
        b"APPLY MAILBOX %(RECORD %(A a B b C c))\r\n",
        b"APPLY MAILBOX (RECORD (a b c))\r\n",
        b"APPLY MAILBOX %(RECORD () RECORD (a b c))\r\n",
        b"RESTORE MAILBOX %(RECORD (a b c))\r\n",
    ];
    for input in whole {
        let (n, line) = pauses(input, 1);
        assert_eq!(n, 0, "{line}");
        assert!(!line.contains("malformed"), "{line}");
    }
    // Responses never stream (a client reading GET FULLMAILBOX).
    let mut dec = Decoder::new(Mode::Responses);
    dec.stream_records(1);
    let feed = dec
        .feed(b"* MAILBOX %(RECORD (a b c))\r\n", &mut DiscardFiles)
        .unwrap();
    assert!(feed.complete && !feed.records);
}

#[test]
fn keeping_the_records_at_the_first_pause_decodes_the_whole_line() {
    let input = mailbox_line(7);
    let whole = stream_line(&input, 0, &[]);
    let mut dec = Decoder::new(Mode::Commands);
    dec.stream_records(2);
    let mut pos = 0;
    let mut pauses = 0;
    loop {
        let feed = dec.feed(&input[pos..], &mut DiscardFiles).unwrap();
        pos += feed.consumed;
        if feed.records {
            pauses += 1;
            dec.keep_records();
            assert!(dec.record_batch().is_none());
        }
        if feed.complete {
            break;
        }
    }
    assert_eq!(pauses, 1);
    let Body::Dlist(root) = dec.line().unwrap().body else {
        panic!()
    };
    assert_eq!(root.to_value(), whole.mailbox);
    assert!(dec.record_batch().is_none());
}

#[test]
fn a_streamed_line_with_a_bad_tail_is_malformed_and_the_next_line_is_fine() {
    let mut input = mailbox_line(6);
    input.truncate(input.len() - 2);
    input.extend_from_slice(b" x\r\nAPPLY MAILBOX %(RECORD (a b c d e))\r\nNOOP\r\n");
    let mut dec = Decoder::new(Mode::Commands);
    dec.stream_records(2);
    let mut pos = 0;
    let mut lines = Vec::new();
    let mut pauses = Vec::new();
    while pos < input.len() {
        let feed = dec.feed(&input[pos..], &mut DiscardFiles).unwrap();
        pos += feed.consumed;
        if feed.records {
            pauses.push((lines.len(), dec.record_batch().unwrap().first_index));
        }
        if feed.complete {
            lines.push(describe(dec.line().unwrap()));
        }
    }
    assert_eq!(lines.len(), 3);
    assert!(lines[0].contains("malformed"), "{}", lines[0]);
    assert_eq!(lines[1], "APPLY MAILBOX %(RECORD (e))");
    assert_eq!(lines[2], "NOOP");
    assert_eq!(pauses, vec![(0, 0), (0, 2), (0, 4), (1, 0), (1, 2)]);
}
