//! Fuzz target for the incremental dlist decoder, with oracles (see docs/FUZZING.md).
//!
//! Input: byte 0 picks where the rest is cut in two, byte 1 picks the mode
//! (Commands, Responses, Text), the rest is what the peer sent. Checked:
//!
//! 1. the `feed` contract (an incomplete feed uses all its input, a complete one at
//!    least one byte, `line()` is there exactly when a line completed, recoverable
//!    errors never come out of `feed`, a fatal one poisons the decoder);
//! 2. the `FileSink` contract (begin, bytes, end, in order, exactly `size` bytes, file
//!    ordinals counting from 0 per line, no call after the sink refused a file);
//! 3. cutting the input in two gives exactly the same lines and errors as feeding it
//!    whole;
//! 4. every complete, well-formed line, written back with the `Encoder` (both literal
//!    styles), decodes to the same word, key, tree and file bodies, and writing that
//!    again gives the same bytes (the encoder's output is a fixed point).
#![no_main]

use csync_protocol::value::FileValue;
use csync_protocol::{
    Body, DecodeError, Decoder, Encoder, FileHeader, FileSink, Item, Kind, LiteralStyle, Mode,
    SinkError, Value,
};
use libfuzzer_sys::fuzz_target;

/// Keeps file bodies, checks the decoder drives it correctly, and refuses files the
/// way a server's staging area can (unknown partition; disk full mid-file), so that
/// the rejection path is fuzzed too. Its decisions depend only on the bytes, never on
/// how they were cut.
#[derive(Default)]
struct CheckingSink {
    files: Vec<Vec<u8>>,
    /// Size of the file being received.
    open: Option<u32>,
    next_index: usize,
    refused: bool,
}

impl CheckingSink {
    /// The line is over: check nothing is left half-done and start afresh.
    fn end_line(&mut self) -> (Vec<Vec<u8>>, bool) {
        if !self.refused {
            assert!(self.open.is_none(), "line completed inside a file literal");
        }
        let refused = self.refused;
        self.open = None;
        self.next_index = 0;
        self.refused = false;
        (std::mem::take(&mut self.files), refused)
    }
}

impl FileSink for CheckingSink {
    fn begin_file(&mut self, header: &FileHeader<'_>) -> Result<(), SinkError> {
        assert!(!self.refused, "begin_file after the sink refused a file");
        assert!(self.open.is_none(), "begin_file inside a file");
        assert_eq!(header.index, self.next_index, "file ordinals");
        self.next_index += 1;
        if header.partition.starts_with(b"bad") {
            self.refused = true;
            return Err(SinkError::msg("unknown partition"));
        }
        self.files
            .push(Vec::with_capacity(header.size.min(1 << 16) as usize));
        self.open = Some(header.size);
        Ok(())
    }

    fn file_bytes(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        assert!(!self.refused, "file_bytes after the sink refused a file");
        let size = self.open.expect("file_bytes outside a file");
        assert!(!bytes.is_empty(), "empty file_bytes call");
        let file = self.files.last_mut().unwrap();
        file.extend_from_slice(bytes);
        assert!(
            file.len() <= size as usize,
            "more bytes than the header said"
        );
        if file.windows(4).any(|w| w == b"FULL") {
            // How much of it arrived depends on the cut: keep none of it.
            self.files.pop();
            self.refused = true;
            return Err(SinkError::msg("disk full"));
        }
        Ok(())
    }

    fn end_file(&mut self) -> Result<(), SinkError> {
        assert!(!self.refused, "end_file after the sink refused a file");
        let size = self.open.take().expect("end_file outside a file");
        assert_eq!(
            self.files.last().unwrap().len(),
            size as usize,
            "short file"
        );
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Decoded {
    None,
    Text(Vec<u8>),
    /// Root key and tree with the file bodies in place.
    Dlist(Option<Vec<u8>>, Value),
    Malformed(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Line {
    word: Vec<u8>,
    body: Decoded,
    files: Vec<Vec<u8>>,
    /// The line written back in each literal style (well-formed lines only).
    reencoded: Vec<Vec<u8>>,
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    lines: Vec<Line>,
    fatal: Option<String>,
}

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
                .map(|c| {
                    (
                        c.key().expect("kvlist child without key").to_vec(),
                        owned(c, files),
                    )
                })
                .collect(),
        ),
        _ => item.to_value(),
    }
}

const STYLES: [LiteralStyle; 2] = [LiteralStyle::NonSynchronizing, LiteralStyle::Synchronizing];

/// Decodes `chunks` one after the other.
fn run(mode: Mode, chunks: &[&[u8]]) -> Outcome {
    let mut dec = Decoder::new(mode);
    let mut sink = CheckingSink::default();
    let mut lines = Vec::new();
    for chunk in chunks {
        let mut rest = *chunk;
        while !rest.is_empty() {
            let feed = match dec.feed(rest, &mut sink) {
                Ok(feed) => feed,
                Err(e) => {
                    assert!(e.is_fatal(), "recoverable error out of feed: {e:?}");
                    assert!(matches!(
                        dec.feed(b"NOOP\r\n", &mut sink),
                        Err(DecodeError::Poisoned)
                    ));
                    return Outcome {
                        lines,
                        fatal: Some(e.to_string()),
                    };
                }
            };
            assert!(feed.consumed <= rest.len());
            rest = &rest[feed.consumed..];
            if !feed.complete {
                assert!(rest.is_empty(), "incomplete feed left input");
                assert!(dec.line().is_none());
                continue;
            }
            assert!(feed.consumed > 0, "line completed on no bytes");
            assert!(dec.at_line_start());
            let (files, refused) = sink.end_line();
            let line = dec.line().expect("complete line");
            let mut reencoded = Vec::new();
            let body = match line.body {
                Body::None => {
                    let mut enc = Encoder::new(LiteralStyle::NonSynchronizing);
                    enc.text(line.word).end_line();
                    reencoded.push(enc.into_bytes());
                    Decoded::None
                }
                Body::Text(t) => {
                    let mut enc = Encoder::new(LiteralStyle::NonSynchronizing);
                    enc.text(line.word).text(t).end_line();
                    reencoded.push(enc.into_bytes());
                    Decoded::Text(t.to_vec())
                }
                Body::Dlist(root) => {
                    let word = std::str::from_utf8(line.word).expect("dlist command word");
                    for style in STYLES {
                        let mut enc = Encoder::new(style);
                        enc.word(word).item(root, &mut |i| &files[i]).end_line();
                        reencoded.push(enc.into_bytes());
                    }
                    Decoded::Dlist(root.key().map(<[u8]>::to_vec), owned(root, &files))
                }
                Body::Malformed(e) => {
                    assert!(!e.is_fatal(), "fatal error reported as a malformed line");
                    assert_eq!(refused, matches!(e, DecodeError::File { .. }));
                    Decoded::Malformed(e.to_string())
                }
            };
            if !matches!(body, Decoded::Malformed(_)) {
                assert!(!refused, "a refused file must make the line malformed");
            }
            lines.push(Line {
                word: line.word.to_vec(),
                body,
                files,
                reencoded,
            });
        }
    }
    Outcome { lines, fatal: None }
}

fuzz_target!(|data: &[u8]| {
    let [cut, mode, input @ ..] = data else {
        return;
    };
    let mode = match mode % 3 {
        0 => Mode::Commands,
        1 => Mode::Responses,
        _ => Mode::Text,
    };
    let cut = usize::from(*cut) * input.len() / 255;

    // 3: chunking does not matter.
    let whole = run(mode, &[input]);
    let split = run(mode, &[&input[..cut], &input[cut..]]);
    assert_eq!(whole, split, "cut at {cut} changed the outcome");

    // 4: what was decoded survives the encoder.
    for line in &whole.lines {
        if matches!(line.body, Decoded::Malformed(_)) {
            continue;
        }
        for bytes in &line.reencoded {
            let again = run(mode, &[bytes]);
            assert_eq!(again.fatal, None, "re-encoded line is fatal: {bytes:?}");
            assert_eq!(again.lines.len(), 1, "re-encoded line split: {bytes:?}");
            let again = &again.lines[0];
            assert_eq!(again.word, line.word);
            assert_eq!(again.body, line.body, "re-encoded: {bytes:?}");
            assert_eq!(again.files, line.files);
            // Canonical: the re-decoded line prints exactly as before.
            assert_eq!(again.reencoded, line.reencoded);
        }
    }
});
