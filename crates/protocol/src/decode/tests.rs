use super::*;

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
