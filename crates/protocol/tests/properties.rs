//! Property tests of the dlist codec: whatever the encoder writes, the decoder reads back
//! as the same tree, whichever literal spelling and however the bytes are cut; and no
//! input whatsoever makes the decoder panic or depend on how it was cut.

use csync_protocol::value::FileValue;
use csync_protocol::{
    Body, CollectFiles, DecodeError, Decoder, Encoder, Feed, LiteralStyle, Mode, Value,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};

// ---------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------

/// Cyrus's atom bytes (spec §2.3): 0x1F..=0x7E without SP { ( ) " % * \.
fn atom_chars() -> Vec<u8> {
    (0x1f..=0x7e)
        .filter(|b| !b" {()\"%*\\".contains(b))
        .collect()
}

fn atom(len: std::ops::Range<usize>) -> impl Strategy<Value = Vec<u8>> {
    vec(select(atom_chars()), len)
}

/// Any string the model can hold, weighted towards the interesting edges of the
/// atom / quoted / literal choice.
fn string() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => atom(1..12),
        3 => vec(any::<u8>(), 0..24),
        2 => vec(select(b"\"\\\r\n\0 \t%*{}()NIL\x7f\x80\xff\x1f\x01+".to_vec()), 0..10),
        1 => Just(b"NIL".to_vec()),
        1 => Just(b"nil".to_vec()),
        1 => Just(Vec::new()),
        1 => atom(1020..1030),
        1 => vec(any::<u8>(), 1020..1030),
        1 => vec(select(b"a b\t".to_vec()), 1020..1030),
    ]
}

/// A flag: a backslash then atom bytes (the encoder writes flags raw).
fn flag() -> impl Strategy<Value = Vec<u8>> {
    atom(0..10).prop_map(|mut v| {
        v.insert(0, b'\\');
        v
    })
}

/// A file literal: mostly a partition atom and a 40-hex GUID as in real traffic, but
/// both header fields are astrings, so any string must survive too (quoted or literal).
fn file() -> impl Strategy<Value = FileValue> {
    (
        prop_oneof![4 => atom(1..12), 1 => string()],
        prop_oneof![
            4 => vec(select(b"0123456789abcdef".to_vec()), 40),
            1 => string(),
        ],
        prop_oneof![
            3 => vec(any::<u8>(), 0..200),
            1 => vec(select(b"\r\n ()%{}".to_vec()), 0..50),
            1 => Just(Vec::new()),
        ],
    )
        .prop_map(|(partition, guid, body)| FileValue {
            partition,
            guid,
            body,
        })
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        1 => Just(Value::Nil),
        4 => string().prop_map(Value::String),
        1 => flag().prop_map(Value::Flag),
        1 => file().prop_map(Value::File),
    ];
    leaf.prop_recursive(5, 40, 6, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..6).prop_map(Value::List),
            vec((string(), inner), 0..6).prop_map(Value::KvList),
        ]
    })
}

fn root_key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![3 => Just(b"X".to_vec()), 1 => string()]
}

fn style() -> impl Strategy<Value = LiteralStyle> {
    prop_oneof![
        Just(LiteralStyle::NonSynchronizing),
        Just(LiteralStyle::Synchronizing)
    ]
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        Just(Mode::Commands),
        Just(Mode::Responses),
        Just(Mode::Text)
    ]
}

/// Bytes that look like the protocol as often as not.
fn protocolish() -> impl Strategy<Value = Vec<u8>> {
    let token = prop_oneof![
        3 => select(vec![
            &b"APPLY "[..], b"GET ", b"restore ", b"* ", b"OK ", b"NO ", b"+ ", b"NOOP",
            b"(", b")", b"%(", b"%{", b"%", b"{3+}\r\n", b"{2}\r\n", b"{0}\r\n", b"{",
            b"}", b"+", b"\"", b"\\", b" ", b"\t", b"\r\n", b"\n", b"\r", b"NIL", b"abc",
            b"\\Seen", b"0", b"4294967296", b"{200000+}\r\n",
            b"%{default 0123456789abcdef0123456789abcdef01234567 3}\r\n",
            b"%{p g 0}\n", b"MAILBOX ", b"%(UID 1 FLAGS ())",
        ])
        .prop_map(<[u8]>::to_vec),
        2 => vec(any::<u8>(), 1..4),
    ];
    vec(token, 0..48).prop_map(|t| t.concat())
}

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

/// The tree as the decoder reports it: file bodies are not in the tree.
fn without_bodies(v: &Value) -> Value {
    match v {
        Value::File(f) => Value::File(FileValue {
            body: Vec::new(),
            ..f.clone()
        }),
        Value::List(items) => Value::List(items.iter().map(without_bodies).collect()),
        Value::KvList(items) => Value::KvList(
            items
                .iter()
                .map(|(k, v)| (k.clone(), without_bodies(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// File bodies in wire order.
fn bodies(v: &Value, out: &mut Vec<Vec<u8>>) {
    match v {
        Value::File(f) => out.push(f.body.clone()),
        Value::List(items) => items.iter().for_each(|i| bodies(i, out)),
        Value::KvList(items) => items.iter().for_each(|(_, i)| bodies(i, out)),
        _ => {}
    }
}

fn encode_apply(key: &[u8], v: &Value, style: LiteralStyle) -> Vec<u8> {
    let mut enc = Encoder::new(style);
    enc.word("APPLY").string(key).value(v).end_line();
    enc.into_bytes()
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Decoded {
    None,
    Text(Vec<u8>),
    Dlist(Option<Vec<u8>>, Value),
    Malformed(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct DecodedLine {
    word: Vec<u8>,
    body: Decoded,
    files: Vec<Vec<u8>>,
    /// For dlist lines: the tree written back in the encoder's spelling.
    reencoded: Option<Vec<u8>>,
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    lines: Vec<DecodedLine>,
    fatal: Option<String>,
    /// Bytes of an unfinished line were left in the decoder.
    partial: bool,
}

/// Feeds `input` cut at `cuts` (any order, out-of-range ones ignored), checking the
/// `feed` contract on every call.
fn decode(mode: Mode, input: &[u8], cuts: &[usize], style: LiteralStyle) -> Outcome {
    let mut bounds: Vec<usize> = cuts
        .iter()
        .copied()
        .filter(|&c| c > 0 && c < input.len())
        .collect();
    bounds.push(input.len());
    bounds.sort_unstable();
    bounds.dedup();
    let mut dec = Decoder::new(mode);
    let mut sink = CollectFiles::default();
    let mut lines = Vec::new();
    let mut start = 0;
    for end in bounds {
        let mut chunk = &input[start..end];
        start = end;
        while !chunk.is_empty() {
            let Feed {
                consumed, complete, ..
            } = match dec.feed(chunk, &mut sink) {
                Ok(feed) => feed,
                Err(e) => {
                    assert!(e.is_fatal(), "feed returned a recoverable error: {e:?}");
                    assert!(matches!(
                        dec.feed(b"NOOP\r\n", &mut sink),
                        Err(DecodeError::Poisoned)
                    ));
                    return Outcome {
                        lines,
                        fatal: Some(e.to_string()),
                        partial: true,
                    };
                }
            };
            assert!(consumed <= chunk.len());
            chunk = &chunk[consumed..];
            if !complete {
                assert!(
                    chunk.is_empty(),
                    "an incomplete feed must use all its input"
                );
                assert!(dec.line().is_none());
                continue;
            }
            assert!(consumed > 0, "a line cannot complete on no bytes");
            assert!(dec.at_line_start());
            let line = dec.line().expect("complete line");
            let files = std::mem::take(&mut sink.files);
            let mut reencoded = None;
            let body = match line.body {
                Body::None => Decoded::None,
                Body::Text(t) => Decoded::Text(t.to_vec()),
                Body::Dlist(root) => {
                    let mut enc = Encoder::new(style);
                    enc.item(root, &mut |i| &files[i]);
                    reencoded = Some(enc.into_bytes());
                    Decoded::Dlist(root.key().map(<[u8]>::to_vec), root.to_value())
                }
                Body::Malformed(e) => Decoded::Malformed(e.to_string()),
            };
            lines.push(DecodedLine {
                word: line.word.to_vec(),
                body,
                files,
                reencoded,
            });
        }
    }
    Outcome {
        lines,
        fatal: None,
        partial: !dec.at_line_start(),
    }
}

fn cut_points(len: usize, picks: &[Index]) -> Vec<usize> {
    picks.iter().map(|i| i.index(len + 1)).collect()
}

// ---------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// encode → decode gives the same tree, key and file bodies, in both literal
    /// spellings, and writing the decoded tree again gives the same bytes.
    #[test]
    fn apply_lines_round_trip(key in root_key(), v in value(), style in style()) {
        let bytes = encode_apply(&key, &v, style);
        let out = decode(Mode::Commands, &bytes, &[], style);
        prop_assert_eq!(out.fatal, None);
        prop_assert!(!out.partial);
        prop_assert_eq!(out.lines.len(), 1);
        let line = &out.lines[0];
        prop_assert_eq!(&line.word, b"APPLY");
        prop_assert_eq!(&line.body, &Decoded::Dlist(Some(key.clone()), without_bodies(&v)));
        let mut expected = Vec::new();
        bodies(&v, &mut expected);
        prop_assert_eq!(&line.files, &expected);
        // The encoder's output is canonical: the decoded tree prints the same.
        let mut again = b"APPLY ".to_vec();
        again.extend_from_slice(line.reencoded.as_deref().unwrap());
        again.extend_from_slice(b"\r\n");
        prop_assert_eq!(again, bytes);
    }

    /// The literal spelling is the only difference between the two styles.
    #[test]
    fn literal_styles_differ_only_in_the_plus(key in root_key(), v in value()) {
        let nonsync = encode_apply(&key, &v, LiteralStyle::NonSynchronizing);
        let sync = encode_apply(&key, &v, LiteralStyle::Synchronizing);
        prop_assert!(nonsync.len() >= sync.len());
        let a = decode(Mode::Commands, &nonsync, &[], LiteralStyle::NonSynchronizing);
        let b = decode(Mode::Commands, &sync, &[], LiteralStyle::NonSynchronizing);
        prop_assert_eq!(a, b);
    }

    /// `* KEY value` responses decode the same as commands do.
    #[test]
    fn responses_round_trip(key in root_key(), v in value()) {
        let mut enc = Encoder::new(LiteralStyle::Synchronizing);
        enc.word("*").string(&key).value(&v).end_line();
        let bytes = enc.into_bytes();
        let out = decode(Mode::Responses, &bytes, &[], LiteralStyle::Synchronizing);
        prop_assert_eq!(out.fatal, None);
        prop_assert_eq!(out.lines.len(), 1);
        prop_assert_eq!(&out.lines[0].body, &Decoded::Dlist(Some(key), without_bodies(&v)));
    }

    /// However the encoded bytes are cut, the result is the same.
    #[test]
    fn any_chunking_decodes_the_same(
        key in root_key(),
        v in value(),
        style in style(),
        picks in vec(any::<Index>(), 0..12),
        piece in 1usize..9,
    ) {
        let mut bytes = encode_apply(&key, &v, style);
        bytes.extend_from_slice(b"NOOP\r\n");
        let whole = decode(Mode::Commands, &bytes, &[], style);
        prop_assert_eq!(whole.lines.len(), 2);
        let cuts = cut_points(bytes.len(), &picks);
        prop_assert_eq!(&decode(Mode::Commands, &bytes, &cuts, style), &whole);
        let pieces: Vec<usize> = (piece..bytes.len()).step_by(piece).collect();
        prop_assert_eq!(&decode(Mode::Commands, &bytes, &pieces, style), &whole);
    }

    /// Arbitrary bytes, in any mode and any cut: no panic, the `feed` contract holds
    /// (checked inside `decode`), and the outcome does not depend on the cut.
    #[test]
    fn arbitrary_bytes_never_panic_and_ignore_chunking(
        input in prop_oneof![vec(any::<u8>(), 0..300), protocolish()],
        mode in mode(),
        picks in vec(any::<Index>(), 0..16),
    ) {
        let style = LiteralStyle::NonSynchronizing;
        let whole = decode(mode, &input, &[], style);
        let cuts = cut_points(input.len(), &picks);
        prop_assert_eq!(&decode(mode, &input, &cuts, style), &whole);
        let bytes: Vec<usize> = (1..input.len()).collect();
        prop_assert_eq!(&decode(mode, &input, &bytes, style), &whole);
        if mode == Mode::Text {
            // Text mode never looks inside a line.
            prop_assert!(whole.lines.iter().all(|l| matches!(l.body, Decoded::None | Decoded::Malformed(_))));
        }
    }

    /// Whatever the decoder accepts as a dlist, written back by the encoder, decodes to
    /// the same tree (the fuzz target's oracle, here on generated input).
    #[test]
    fn decoded_trees_survive_reencoding(input in protocolish(), mode in mode()) {
        let style = LiteralStyle::Synchronizing;
        let out = decode(mode, &input, &[], style);
        for line in &out.lines {
            let (Decoded::Dlist(key, tree), Some(re)) = (&line.body, &line.reencoded) else {
                continue;
            };
            let mut bytes = line.word.clone();
            bytes.push(b' ');
            bytes.extend_from_slice(re);
            bytes.extend_from_slice(b"\r\n");
            let again = decode(mode, &bytes, &[], style);
            prop_assert_eq!(again.fatal, None);
            prop_assert_eq!(again.lines.len(), 1);
            prop_assert_eq!(&again.lines[0].body, &Decoded::Dlist(key.clone(), tree.clone()));
            prop_assert_eq!(&again.lines[0].files, &line.files);
        }
    }
}

#[test]
fn nil_and_the_string_nil_stay_apart() {
    let v = Value::List(vec![
        Value::Nil,
        Value::str("NIL"),
        Value::str(""),
        Value::str("nil"),
    ]);
    let bytes = encode_apply(b"X", &v, LiteralStyle::NonSynchronizing);
    assert_eq!(bytes, b"APPLY X (NIL \"NIL\" \"\" nil)\r\n");
    let out = decode(Mode::Commands, &bytes, &[], LiteralStyle::NonSynchronizing);
    assert_eq!(out.lines[0].body, Decoded::Dlist(Some(b"X".to_vec()), v));
}

#[test]
fn literal_spelling_follows_the_style() {
    let v = Value::str("a\r\nb");
    assert_eq!(
        encode_apply(b"X", &v, LiteralStyle::NonSynchronizing),
        b"APPLY X {4+}\r\na\r\nb\r\n"
    );
    assert_eq!(
        encode_apply(b"X", &v, LiteralStyle::Synchronizing),
        b"APPLY X {4}\r\na\r\nb\r\n"
    );
}

#[test]
fn file_header_fields_are_astrings() {
    // `}` is an atom byte; a field the encoder cannot quote becomes a literal.
    for partition in [
        &b"a}b"[..],
        b"a\\b",
        b"a\"b",
        b"\xe9t\xe9",
        b"",
        b"NIL",
        b"two words",
    ] {
        let v = Value::List(vec![Value::File(FileValue {
            partition: partition.to_vec(),
            guid: b"0123456789abcdef0123456789abcdef01234567".to_vec(),
            body: b"body".to_vec(),
        })]);
        for style in [LiteralStyle::NonSynchronizing, LiteralStyle::Synchronizing] {
            let bytes = encode_apply(b"MESSAGE", &v, style);
            let out = decode(Mode::Commands, &bytes, &[], style);
            assert_eq!(out.lines.len(), 1, "{:?}", String::from_utf8_lossy(&bytes));
            assert_eq!(
                out.lines[0].body,
                Decoded::Dlist(Some(b"MESSAGE".to_vec()), without_bodies(&v)),
                "{:?}",
                String::from_utf8_lossy(&bytes)
            );
            assert_eq!(out.lines[0].files, [b"body".to_vec()]);
        }
    }
    let bytes = encode_apply(
        b"X",
        &Value::File(FileValue {
            partition: b"a\"b".to_vec(),
            guid: b"g".to_vec(),
            body: Vec::new(),
        }),
        LiteralStyle::NonSynchronizing,
    );
    assert_eq!(bytes, b"APPLY X %{{3+}\r\na\"b g 0}\r\n\r\n");
}
