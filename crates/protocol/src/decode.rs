//! The incremental line decoder (spec §1.2, §2.4, §2.5).
//!
//! [`Decoder::feed`] takes whatever bytes have arrived, in any split, and either
//! completes a line or asks for more. Strings go into a reused [`Dlist`] arena; the
//! bytes of `%{...}` file literals go out in chunks, straight from the caller's input
//! slice, to a [`FileSink`], so a 50 MB message is never held in memory.
//!
//! Errors come in two classes, as in Cyrus. Syntax errors are recoverable: the rest of
//! the line is consumed (skipping over `{n}` literals and `%{...}` files, so payload is
//! never read as commands) and the line is returned as [`Body::Malformed`]. Limit
//! violations (oversized literal, word or line, a number that overflows) are fatal:
//! `feed` returns the error and the connection must end, which is what Cyrus does.
//!
//! A server can also have the items of `APPLY MAILBOX`'s `RECORD` list handed out in
//! batches while the line is still arriving ([`Decoder::stream_records`]): a real
//! Cyrus client sends a whole mailbox, 20,000 records or more, in that one line, and
//! the arena would otherwise hold all of it at once.

use crate::value::{Dlist, Item, Kind, NONE, Node, Span};

/// Receives the bytes of file literals (`%{partition guid size}`) as they arrive.
pub trait FileSink {
    /// A file literal of `header.size` bytes starts. An error rejects it: its bytes are
    /// discarded, and the line finishes as [`Body::Malformed`] with that error.
    fn begin_file(&mut self, header: &FileHeader<'_>) -> Result<(), SinkError>;
    /// The next chunk of the current file.
    fn file_bytes(&mut self, bytes: &[u8]) -> Result<(), SinkError>;
    /// All bytes of the current file were delivered.
    fn end_file(&mut self) -> Result<(), SinkError>;
    /// Whether [`FileSink::file_bytes`] would take the next `len` bytes of the current
    /// file without blocking I/O (it only buffers them), so a caller on an async
    /// executor need not move the feed to a blocking thread. By default, no.
    fn buffers(&self, len: usize) -> bool {
        let _ = len;
        false
    }
}

/// A file literal's header, handed to [`FileSink::begin_file`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader<'a> {
    pub partition: &'a [u8],
    /// The GUID as received (the sink checks it is hex).
    pub guid: &'a [u8],
    pub size: u32,
    /// Ordinal of this file within its line.
    pub index: usize,
}

/// Why a sink refused a file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub Box<dyn std::error::Error + Send + Sync>);

impl SinkError {
    pub fn msg(message: impl Into<String>) -> Self {
        SinkError(message.into().into())
    }
}

/// A sink that throws file bodies away.
#[derive(Debug, Default)]
pub struct DiscardFiles;

impl FileSink for DiscardFiles {
    fn begin_file(&mut self, _: &FileHeader<'_>) -> Result<(), SinkError> {
        Ok(())
    }
    fn file_bytes(&mut self, _: &[u8]) -> Result<(), SinkError> {
        Ok(())
    }
    fn end_file(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// A sink that keeps every file in memory (tests and small tools).
#[derive(Debug, Default)]
pub struct CollectFiles {
    pub files: Vec<Vec<u8>>,
}

impl FileSink for CollectFiles {
    fn begin_file(&mut self, header: &FileHeader<'_>) -> Result<(), SinkError> {
        self.files.push(Vec::with_capacity(header.size as usize));
        Ok(())
    }
    fn file_bytes(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        if let Some(file) = self.files.last_mut() {
            file.extend_from_slice(bytes);
        }
        Ok(())
    }
    fn end_file(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// Limits on what one line may contain. The defaults are Debian Cyrus 3.6's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest atom, quoted string or first word (`maxword`/`maxquoted`: 128 KiB).
    pub max_word: usize,
    /// Largest `{n}` literal (`maxliteral`: 128 KiB). File literals are exempt.
    pub max_literal: u32,
    /// Largest `%{...}` file literal.
    pub max_file: u32,
    /// Deepest nesting of lists (Cyrus has no limit; real traffic nests 5 deep).
    pub max_depth: usize,
    /// Most bytes of one line, file bodies not counted.
    pub max_line: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_word: 128 * 1024,
            max_literal: 128 * 1024,
            max_file: u32::MAX,
            max_depth: 32,
            max_line: 256 * 1024 * 1024,
        }
    }
}

/// What the rest of a line is, decided from its first word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A server reading commands: `GET`, `APPLY` and `RESTORE` (any case) carry a
    /// keyed dlist; every other command carries plain text arguments.
    Commands,
    /// A client reading replies: `*` lines carry a keyed dlist; `OK`/`NO`/`BAD`/`BYE`/`+`
    /// carry text.
    Responses,
    /// Every line is plain text (greetings, SASL exchanges).
    Text,
}

/// Decoding failures.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("[TOOBIG] Literal size exceeds fixed limit ({size} > {limit} bytes)")]
    LiteralTooBig { size: u64, limit: u32 },
    #[error("[TOOBIG] File literal size exceeds limit ({size} > {limit} bytes)")]
    FileTooBig { size: u64, limit: u32 },
    #[error("[TOOBIG] Word exceeds fixed limit of {limit} bytes")]
    WordTooLong { limit: usize },
    #[error("[TOOBIG] Line exceeds limit of {limit} bytes")]
    LineTooLong { limit: usize },
    #[error("num too big")]
    NumberTooBig,
    #[error("decoder used after a fatal error")]
    Poisoned,
    #[error("syntax error at byte {offset} of the line: {reason}")]
    Syntax { offset: usize, reason: &'static str },
    #[error("lists nested deeper than {limit}")]
    TooDeep { limit: usize },
    #[error("file literal {index} rejected: {source}")]
    File {
        index: usize,
        #[source]
        source: SinkError,
    },
}

impl DecodeError {
    /// Fatal errors end the connection; the others end only the line.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            DecodeError::LiteralTooBig { .. }
                | DecodeError::FileTooBig { .. }
                | DecodeError::WordTooLong { .. }
                | DecodeError::LineTooLong { .. }
                | DecodeError::NumberTooBig
                | DecodeError::Poisoned
        )
    }
}

/// The outcome of one [`Decoder::feed`] call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Feed {
    /// Bytes of the input used; the caller feeds the rest again later.
    pub consumed: usize,
    /// A whole line is ready in [`Decoder::line`].
    pub complete: bool,
    /// A batch of RECORD items is ready in [`Decoder::record_batch`] (only with
    /// [`Decoder::stream_records`]). The line is not complete; the next `feed` drops
    /// the batch from the arena, so the caller takes what it needs first.
    pub records: bool,
}

/// RECORD items of an `APPLY MAILBOX` line handed out before the line is complete
/// (see [`Decoder::stream_records`]).
#[derive(Clone, Copy, Debug)]
pub struct RecordBatch<'a> {
    /// The MAILBOX kvlist as decoded so far: the keys before `RECORD`, and `RECORD`
    /// holding only the items of this batch. At the end of the line, every key.
    pub mailbox: Item<'a>,
    /// The `RECORD` list; its children are this batch's items, in wire order.
    pub records: Item<'a>,
    /// Position of this batch's first item in the whole `RECORD` list.
    pub first_index: usize,
}

/// Where the decoder is with the streamed RECORD list of the current line.
#[derive(Clone, Copy, Debug)]
struct RecordStream {
    /// Items per batch; 0 when streaming is off.
    batch: usize,
    /// The streamed `RECORD` list node of this line, or NONE.
    list: u32,
    /// Arena lengths just after the list node was pushed: releasing a batch truncates
    /// back to them (the list is the innermost open container, so everything after it
    /// belongs to its items).
    nodes_mark: usize,
    bytes_mark: usize,
    /// Items already handed out and released in this line.
    released: usize,
    /// A batch waits for the caller; the next `feed` releases it.
    ready: bool,
}

impl RecordStream {
    fn off(batch: usize) -> Self {
        RecordStream {
            batch,
            list: NONE,
            nodes_mark: 0,
            bytes_mark: 0,
            released: 0,
            ready: false,
        }
    }
}

/// A decoded line.
#[derive(Clone, Copy, Debug)]
pub struct Line<'a> {
    /// The first word (`APPLY`, `*`, `OK`, ...) as received; in [`Mode::Text`] the
    /// whole line.
    pub word: &'a [u8],
    pub body: Body<'a>,
}

/// What followed the first word.
#[derive(Clone, Copy, Debug)]
pub enum Body<'a> {
    /// Nothing: the word ended the line.
    None,
    /// Plain text after the single space that followed the word.
    Text(&'a [u8]),
    /// A keyed dlist value.
    Dlist(Item<'a>),
    /// The line did not parse; all of it has been consumed.
    Malformed(&'a DecodeError),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    Key,
    Value,
    Eol,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Word,
    WordCr,
    Text,
    TextCr,
    Ws,
    Atom {
        flag: bool,
    },
    Quoted,
    QuotedEscape,
    LitDigits {
        n: u64,
        digits: bool,
    },
    LitClose {
        n: u64,
    },
    LitCr {
        n: u64,
    },
    LitLf {
        n: u64,
    },
    LitBody {
        remaining: u64,
    },
    Percent,
    FileTok {
        field: u8,
        quoted: bool,
        escape: bool,
    },
    FileSize {
        n: u64,
        digits: bool,
    },
    FileEol {
        n: u64,
    },
    FileEolLf {
        n: u64,
    },
    FileBody {
        remaining: u64,
    },
    Eol,
    EolLf,
    Skip,
    SkipLitDigits {
        n: u64,
        digits: bool,
    },
    SkipLitClose {
        n: u64,
    },
    SkipLitCr {
        n: u64,
    },
    SkipLitLf {
        n: u64,
    },
    SkipPercent,
    SkipFileHeader {
        n: u64,
    },
    SkipFileEol {
        n: u64,
    },
    SkipBody {
        remaining: u64,
    },
}

/// The incremental decoder. One per connection direction.
#[derive(Debug)]
pub struct Decoder {
    mode: Mode,
    limits: Limits,
    list: Dlist,
    word: Vec<u8>,
    text: Vec<u8>,
    body_kind: BodyKind,
    state: State,
    expect: Expect,
    stack: Vec<u32>,
    pending_key: Option<Span>,
    token_start: u32,
    file_part: Span,
    file_guid: Span,
    files: u32,
    file_node: u32,
    line_len: usize,
    complete: bool,
    error: Option<DecodeError>,
    sink_failed: bool,
    poisoned: bool,
    /// The token being finished is an unquoted atom, so `NIL` means NIL.
    nil_candidate: bool,
    /// The literal being read is field 0 (partition) or 1 (GUID) of a file header.
    lit_file_field: Option<u8>,
    records: RecordStream,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyKind {
    None,
    Text,
    Dlist,
}

fn ends_atom(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b'(' | b')' | b'"')
}

impl Decoder {
    pub fn new(mode: Mode) -> Self {
        Self::with_limits(mode, Limits::default())
    }

    pub fn with_limits(mode: Mode, limits: Limits) -> Self {
        Decoder {
            mode,
            limits,
            list: Dlist::new(),
            word: Vec::new(),
            text: Vec::new(),
            body_kind: BodyKind::None,
            state: State::Word,
            expect: Expect::Key,
            stack: Vec::new(),
            pending_key: None,
            token_start: 0,
            file_part: Span::EMPTY,
            file_guid: Span::EMPTY,
            files: 0,
            file_node: NONE,
            line_len: 0,
            complete: false,
            error: None,
            sink_failed: false,
            poisoned: false,
            nil_candidate: false,
            lit_file_field: None,
            records: RecordStream::off(0),
        }
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Changes how the next line is read (takes effect at a line boundary).
    pub fn set_mode(&mut self, mode: Mode) {
        self.mode = mode;
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Bytes of the current file literal still to come, while inside one. Feeding
    /// fewer bytes than that only hands them to [`FileSink::file_bytes`].
    pub fn file_remaining(&self) -> Option<u64> {
        match self.state {
            State::FileBody { remaining } => Some(remaining),
            _ => None,
        }
    }

    /// Hands out the items of `APPLY MAILBOX`'s (or `APPLY LOCAL_MAILBOX`'s) `RECORD`
    /// list in batches of `batch` while the line arrives, and drops each batch from the
    /// arena once the caller had it, so the arena holds one batch rather than the whole
    /// mailbox. 0 turns it off (the default). Only [`Mode::Commands`] lines stream, and
    /// only the first `RECORD` key of the MAILBOX kvlist, when its value is a list:
    /// the list `MailboxState::decode` would read.
    ///
    /// When `feed` reports [`Feed::records`], [`Decoder::record_batch`] shows the batch;
    /// the caller either takes it (the next `feed` releases it) or calls
    /// [`Decoder::keep_records`] to have the line kept whole. At the end of a streamed
    /// line, [`Decoder::line`] shows `RECORD` with only the items after the last
    /// pause, which [`Decoder::record_batch`] presents too. A line with fewer than
    /// `batch` items never pauses and decodes exactly as without streaming.
    pub fn stream_records(&mut self, batch: usize) {
        self.records.batch = batch;
    }

    /// The RECORD items waiting after a [`Feed::records`] pause or, once a streamed
    /// line is complete, its last items. `None` when the current line does not stream.
    pub fn record_batch(&self) -> Option<RecordBatch<'_>> {
        let list = self.records.list;
        if list == NONE {
            return None;
        }
        Some(RecordBatch {
            mailbox: self.list.root()?,
            records: self.list.item(list),
            first_index: self.records.released,
        })
    }

    /// Stops streaming the current line: the batch of the last pause and every later
    /// item stay in the arena, and the line completes with its whole `RECORD` list.
    /// Only meaningful at the first pause, before anything was released: it is how a
    /// caller that cannot use a streamed line (keys in an unusual order) falls back to
    /// the whole line.
    pub fn keep_records(&mut self) {
        debug_assert_eq!(self.records.released, 0, "items were already released");
        self.records.list = NONE;
        self.records.ready = false;
    }

    /// RECORD items of the current line already handed out and released.
    pub fn records_released(&self) -> usize {
        self.records.released
    }

    /// True when no partial line is buffered (a safe point to switch compression on).
    pub fn at_line_start(&self) -> bool {
        self.complete || (self.state == State::Word && self.word.is_empty() && self.line_len == 0)
    }

    /// The line completed by the last `feed`, if it completed one.
    pub fn line(&self) -> Option<Line<'_>> {
        if !self.complete {
            return None;
        }
        let body = if let Some(err) = &self.error {
            Body::Malformed(err)
        } else {
            match self.body_kind {
                BodyKind::None => Body::None,
                BodyKind::Text => Body::Text(&self.text),
                BodyKind::Dlist => match self.list.root() {
                    Some(root) => Body::Dlist(root),
                    None => Body::None,
                },
            }
        };
        Some(Line {
            word: &self.word,
            body,
        })
    }

    /// The arena of the last complete dlist line.
    pub fn dlist(&self) -> &Dlist {
        &self.list
    }

    fn reset_line(&mut self) {
        self.list.clear();
        self.word.clear();
        self.text.clear();
        self.body_kind = BodyKind::None;
        self.state = State::Word;
        self.expect = Expect::Key;
        self.stack.clear();
        self.pending_key = None;
        self.files = 0;
        self.file_node = NONE;
        self.line_len = 0;
        self.complete = false;
        self.error = None;
        self.sink_failed = false;
        self.lit_file_field = None;
        self.records = RecordStream::off(self.records.batch);
    }

    /// Drops the RECORD items handed out at the last pause from the arena.
    fn release_records(&mut self) {
        let stream = &mut self.records;
        self.list.nodes.truncate(stream.nodes_mark);
        self.list.bytes.truncate(stream.bytes_mark);
        let list = &mut self.list.nodes[stream.list as usize];
        stream.released += list.size as usize;
        list.size = 0;
        list.first_child = NONE;
        list.last_child = NONE;
        stream.ready = false;
    }

    /// Whether the list about to open, under the pending key, is the RECORD list of an
    /// `APPLY MAILBOX` line that streams.
    fn opens_record_list(&self) -> bool {
        if self.records.batch == 0
            || self.mode != Mode::Commands
            || self.stack.len() != 1
            || self.stack[0] != 0
            || !self.word.eq_ignore_ascii_case(b"APPLY")
        {
            return false;
        }
        let Some(key) = self.pending_key else {
            return false;
        };
        if self.list.slice(key) != b"RECORD" {
            return false;
        }
        let Some(mailbox) = self.list.root() else {
            return false;
        };
        let subcommand = mailbox.key().unwrap_or_default();
        mailbox.kind() == Kind::KvList
            && (subcommand.eq_ignore_ascii_case(b"MAILBOX")
                || subcommand.eq_ignore_ascii_case(b"LOCAL_MAILBOX"))
            // Readers take the first RECORD key; a later one is decoded whole.
            && mailbox.get("RECORD").is_none()
    }

    /// Feeds bytes. Returns how many were used and whether a line is complete; a
    /// complete line stays readable through [`Decoder::line`] until the next call.
    pub fn feed(&mut self, input: &[u8], sink: &mut dyn FileSink) -> Result<Feed, DecodeError> {
        if self.poisoned {
            return Err(DecodeError::Poisoned);
        }
        if self.complete {
            self.reset_line();
        }
        if self.records.ready {
            self.release_records();
        }
        let mut pos = 0;
        while pos < input.len() {
            match self.step(input, &mut pos, sink) {
                Ok(true) => {
                    self.complete = true;
                    return Ok(Feed {
                        consumed: pos,
                        complete: true,
                        records: false,
                    });
                }
                Ok(false) if self.records.ready => {
                    return Ok(Feed {
                        consumed: pos,
                        complete: false,
                        records: true,
                    });
                }
                Ok(false) => {}
                Err(err) => {
                    self.poisoned = true;
                    return Err(err);
                }
            }
        }
        Ok(Feed {
            consumed: pos,
            complete: false,
            records: false,
        })
    }

    fn account(&mut self, n: usize) -> Result<(), DecodeError> {
        self.line_len += n;
        if self.line_len > self.limits.max_line {
            return Err(DecodeError::LineTooLong {
                limit: self.limits.max_line,
            });
        }
        Ok(())
    }

    /// Records a recoverable error and switches to skipping the rest of the line.
    fn fail(&mut self, reason: &'static str) {
        if self.error.is_none() {
            self.error = Some(DecodeError::Syntax {
                offset: self.line_len,
                reason,
            });
        }
        self.state = State::Skip;
    }

    fn push_bytes(&mut self, bytes: &[u8]) {
        self.list.bytes.extend_from_slice(bytes);
    }

    fn token_len(&self) -> usize {
        self.list.bytes.len() - self.token_start as usize
    }

    fn begin_token(&mut self) {
        self.token_start = self.list.bytes.len() as u32;
    }

    fn token_span(&self) -> Span {
        Span {
            start: self.token_start,
            end: self.list.bytes.len() as u32,
        }
    }

    fn new_node(&mut self, kind: Kind) -> Node {
        let key = self.pending_key.take();
        Node {
            kind,
            has_key: key.is_some(),
            key: key.unwrap_or(Span::EMPTY),
            text: Span::EMPTY,
            guid: Span::EMPTY,
            size: 0,
            file_index: 0,
            first_child: NONE,
            last_child: NONE,
            next_sibling: NONE,
        }
    }

    fn parent(&self) -> u32 {
        self.stack.last().copied().unwrap_or(NONE)
    }

    /// What comes after a complete value at the current level.
    fn after_value(&mut self) {
        self.expect = match self.stack.last() {
            None => Expect::Eol,
            Some(&top) => {
                if self.list.nodes[top as usize].kind == Kind::KvList {
                    Expect::Key
                } else {
                    Expect::Value
                }
            }
        };
        self.state = if self.expect == Expect::Eol {
            State::Eol
        } else {
            State::Ws
        };
        let stream = self.records;
        if stream.list != NONE
            && self.parent() == stream.list
            && self.list.nodes[stream.list as usize].size as usize >= stream.batch
        {
            if self.error.is_some() {
                // The line is malformed already: nobody will use these items.
                self.release_records();
            } else {
                self.records.ready = true;
            }
        }
    }

    /// A string token (atom, quoted or literal) is complete.
    fn finish_string(&mut self, kind: Kind) {
        if let Some(field) = self.lit_file_field.take() {
            // A literal partition or GUID: back to the file header.
            self.state = State::FileTok {
                field,
                quoted: false,
                escape: false,
            };
            return;
        }
        let span = self.token_span();
        match self.expect {
            Expect::Key => {
                if kind == Kind::Flag {
                    self.fail("a flag cannot be a key");
                    return;
                }
                self.pending_key = Some(span);
                self.expect = Expect::Value;
                self.state = State::Ws;
            }
            Expect::Value => {
                let kind = if kind == Kind::String
                    && self.list.slice(span) == b"NIL"
                    && self.nil_candidate
                {
                    Kind::Nil
                } else {
                    kind
                };
                let mut node = self.new_node(kind);
                if kind != Kind::Nil {
                    node.text = span;
                }
                let parent = self.parent();
                self.list.push_node(parent, node);
                self.after_value();
            }
            Expect::Eol => self.fail("unexpected data after the value"),
        }
    }

    fn open(&mut self, kind: Kind) {
        if self.expect != Expect::Value {
            self.fail("a list cannot be a key");
            return;
        }
        if self.stack.len() >= self.limits.max_depth {
            if self.error.is_none() {
                self.error = Some(DecodeError::TooDeep {
                    limit: self.limits.max_depth,
                });
            }
            self.state = State::Skip;
            return;
        }
        let streams = kind == Kind::List && self.opens_record_list();
        let node = self.new_node(kind);
        let parent = self.parent();
        let index = self.list.push_node(parent, node);
        self.stack.push(index);
        if streams {
            self.records.list = index;
            self.records.nodes_mark = self.list.nodes.len();
            self.records.bytes_mark = self.list.bytes.len();
        }
        self.expect = if kind == Kind::KvList {
            Expect::Key
        } else {
            Expect::Value
        };
        self.state = State::Ws;
    }

    /// One state transition; returns true when the line is complete.
    fn step(
        &mut self,
        input: &[u8],
        pos: &mut usize,
        sink: &mut dyn FileSink,
    ) -> Result<bool, DecodeError> {
        let b = input[*pos];
        match self.state {
            State::Word => {
                let rest = &input[*pos..];
                let n = rest
                    .iter()
                    .position(|&c| {
                        c == b'\r' || c == b'\n' || (c == b' ' && self.mode != Mode::Text)
                    })
                    .unwrap_or(rest.len());
                if self.word.len() + n > self.limits.max_word.max(self.text_limit()) {
                    return Err(DecodeError::WordTooLong {
                        limit: self.limits.max_word,
                    });
                }
                self.word.extend_from_slice(&rest[..n]);
                self.account(n)?;
                *pos += n;
                if n == rest.len() {
                    return Ok(false);
                }
                let end = rest[n];
                *pos += 1;
                self.account(1)?;
                match end {
                    b'\r' => self.state = State::WordCr,
                    b'\n' => return Ok(self.word_ended()),
                    _ => {
                        if self.wants_dlist() {
                            self.body_kind = BodyKind::Dlist;
                            self.expect = Expect::Key;
                            self.state = State::Ws;
                        } else {
                            self.body_kind = BodyKind::Text;
                            self.state = State::Text;
                        }
                    }
                }
            }
            State::WordCr => {
                if b == b'\n' {
                    *pos += 1;
                    self.account(1)?;
                    return Ok(self.word_ended());
                }
                // A lone CR is part of a malformed line.
                self.fail("CR without LF");
            }
            State::Text => {
                let rest = &input[*pos..];
                let n = rest
                    .iter()
                    .position(|&c| c == b'\r' || c == b'\n')
                    .unwrap_or(rest.len());
                if self.text.len() + n > self.text_limit() {
                    return Err(DecodeError::WordTooLong {
                        limit: self.text_limit(),
                    });
                }
                self.text.extend_from_slice(&rest[..n]);
                self.account(n)?;
                *pos += n;
                if n < rest.len() {
                    *pos += 1;
                    self.account(1)?;
                    if rest[n] == b'\n' {
                        return Ok(true);
                    }
                    self.state = State::TextCr;
                }
            }
            State::TextCr => {
                if b == b'\n' {
                    *pos += 1;
                    self.account(1)?;
                    return Ok(true);
                }
                self.fail("CR without LF");
            }
            State::Ws => {
                let top_level = self.stack.is_empty();
                match b {
                    b' ' | b'\t' => {
                        *pos += 1;
                        self.account(1)?;
                    }
                    b'\r' | b'\n' if top_level => {
                        self.fail(if self.expect == Expect::Key {
                            "missing argument"
                        } else {
                            "missing value"
                        });
                    }
                    b'\r' | b'\n' => {
                        *pos += 1;
                        self.account(1)?;
                    }
                    b')' if !top_level => {
                        let in_kvlist =
                            self.list.nodes[self.parent() as usize].kind == Kind::KvList;
                        if in_kvlist && self.expect == Expect::Value {
                            self.fail("kvlist key without a value");
                            return Ok(false);
                        }
                        *pos += 1;
                        self.account(1)?;
                        self.stack.pop();
                        self.after_value();
                    }
                    _ => self.start_token(b, pos)?,
                }
            }
            State::Atom { flag } => {
                let rest = &input[*pos..];
                let n = rest
                    .iter()
                    .position(|&c| ends_atom(c))
                    .unwrap_or(rest.len());
                if self.token_len() + n > self.limits.max_word {
                    return Err(DecodeError::WordTooLong {
                        limit: self.limits.max_word,
                    });
                }
                self.push_bytes(&rest[..n]);
                self.account(n)?;
                *pos += n;
                if n < rest.len() {
                    self.nil_candidate = !flag;
                    self.finish_string(if flag { Kind::Flag } else { Kind::String });
                    self.nil_candidate = false;
                }
            }
            State::Quoted => {
                let rest = &input[*pos..];
                let n = rest
                    .iter()
                    .position(|&c| matches!(c, b'"' | b'\\' | b'\r' | b'\n'))
                    .unwrap_or(rest.len());
                if self.token_len() + n > self.limits.max_word {
                    return Err(DecodeError::WordTooLong {
                        limit: self.limits.max_word,
                    });
                }
                self.push_bytes(&rest[..n]);
                self.account(n)?;
                *pos += n;
                if n < rest.len() {
                    match rest[n] {
                        b'"' => {
                            *pos += 1;
                            self.account(1)?;
                            self.finish_string(Kind::String);
                        }
                        b'\\' => {
                            *pos += 1;
                            self.account(1)?;
                            self.state = State::QuotedEscape;
                        }
                        _ => self.fail("end of line inside a quoted string"),
                    }
                }
            }
            State::QuotedEscape => {
                *pos += 1;
                self.account(1)?;
                if self.token_len() + 1 > self.limits.max_word {
                    return Err(DecodeError::WordTooLong {
                        limit: self.limits.max_word,
                    });
                }
                self.push_bytes(&[b]);
                self.state = State::Quoted;
            }
            State::LitDigits { n, digits } => match b {
                b'0'..=b'9' => {
                    *pos += 1;
                    self.account(1)?;
                    let n = n * 10 + u64::from(b - b'0');
                    if n > u64::from(u32::MAX) {
                        return Err(DecodeError::NumberTooBig);
                    }
                    self.state = State::LitDigits { n, digits: true };
                }
                b'+' if digits => {
                    *pos += 1;
                    self.account(1)?;
                    self.state = State::LitClose { n };
                }
                b'}' if digits => {
                    *pos += 1;
                    self.account(1)?;
                    self.state = State::LitCr { n };
                }
                _ => self.fail("bad literal header"),
            },
            State::LitClose { n } => {
                if b == b'}' {
                    *pos += 1;
                    self.account(1)?;
                    self.state = State::LitCr { n };
                } else {
                    self.fail("bad literal header");
                }
            }
            State::LitCr { n } => {
                if b == b'\r' {
                    *pos += 1;
                    self.account(1)?;
                    self.state = State::LitLf { n };
                } else {
                    self.fail("literal header must end in CRLF");
                }
            }
            State::LitLf { n } => {
                if b == b'\n' {
                    *pos += 1;
                    self.account(1)?;
                    if n > u64::from(self.limits.max_literal) {
                        return Err(DecodeError::LiteralTooBig {
                            size: n,
                            limit: self.limits.max_literal,
                        });
                    }
                    self.begin_token();
                    if n == 0 {
                        self.finish_string(Kind::String);
                    } else {
                        self.state = State::LitBody { remaining: n };
                    }
                } else {
                    self.fail("literal header must end in CRLF");
                }
            }
            State::LitBody { remaining } => {
                let rest = &input[*pos..];
                let n = rest.len().min(remaining as usize);
                self.push_bytes(&rest[..n]);
                self.account(n)?;
                *pos += n;
                let remaining = remaining - n as u64;
                if remaining == 0 {
                    self.finish_string(Kind::String);
                } else {
                    self.state = State::LitBody { remaining };
                }
            }
            State::Percent => match b {
                b'(' => {
                    *pos += 1;
                    self.account(1)?;
                    self.open(Kind::KvList);
                }
                b'{' => {
                    *pos += 1;
                    self.account(1)?;
                    if self.expect != Expect::Value {
                        self.fail("a file cannot be a key");
                    } else {
                        self.begin_token();
                        self.state = State::FileTok {
                            field: 0,
                            quoted: false,
                            escape: false,
                        };
                    }
                }
                _ => self.fail("% must be followed by ( or {"),
            },
            State::FileTok {
                field,
                quoted,
                escape,
            } => {
                *pos += 1;
                self.account(1)?;
                if self.token_len() >= self.limits.max_word {
                    return Err(DecodeError::WordTooLong {
                        limit: self.limits.max_word,
                    });
                }
                if escape {
                    self.push_bytes(&[b]);
                    self.state = State::FileTok {
                        field,
                        quoted,
                        escape: false,
                    };
                } else if quoted {
                    match b {
                        b'"' => {
                            self.state = State::FileTok {
                                field,
                                quoted: false,
                                escape: false,
                            }
                        }
                        b'\\' => {
                            self.state = State::FileTok {
                                field,
                                quoted,
                                escape: true,
                            }
                        }
                        b'\r' | b'\n' => {
                            *pos -= 1;
                            self.fail("end of line inside a file header");
                        }
                        _ => self.push_bytes(&[b]),
                    }
                } else {
                    match b {
                        b'"' if self.token_len() == 0 => {
                            self.state = State::FileTok {
                                field,
                                quoted: true,
                                escape: false,
                            }
                        }
                        // Both fields are astrings in Cyrus, so they may be literals
                        // (the encoder writes one for a partition it cannot quote).
                        b'{' if self.token_len() == 0 => {
                            self.lit_file_field = Some(field);
                            self.state = State::LitDigits {
                                n: 0,
                                digits: false,
                            };
                        }
                        b' ' => {
                            if field == 0 {
                                self.file_part = self.token_span();
                                self.begin_token();
                                self.state = State::FileTok {
                                    field: 1,
                                    quoted: false,
                                    escape: false,
                                };
                            } else {
                                self.file_guid = self.token_span();
                                self.state = State::FileSize {
                                    n: 0,
                                    digits: false,
                                };
                            }
                        }
                        // Cyrus reads these fields with getastring: `}` is an ordinary
                        // atom byte (and the encoder writes it unquoted).
                        b'\r' | b'\n' | b'(' | b')' => {
                            *pos -= 1;
                            self.fail("bad file literal header");
                        }
                        _ => self.push_bytes(&[b]),
                    }
                }
            }
            State::FileSize { n, digits } => match b {
                b'0'..=b'9' => {
                    *pos += 1;
                    self.account(1)?;
                    let n = n * 10 + u64::from(b - b'0');
                    if n > u64::from(u32::MAX) {
                        return Err(DecodeError::NumberTooBig);
                    }
                    self.state = State::FileSize { n, digits: true };
                }
                b'}' if digits => {
                    *pos += 1;
                    self.account(1)?;
                    self.state = State::FileEol { n };
                }
                _ => self.fail("bad file literal size"),
            },
            State::FileEol { n } => match b {
                b'\r' => {
                    *pos += 1;
                    self.account(1)?;
                    self.state = State::FileEolLf { n };
                }
                b'\n' => {
                    *pos += 1;
                    self.account(1)?;
                    self.begin_file(n, sink)?;
                }
                _ => self.fail("file literal header must end the line"),
            },
            State::FileEolLf { n } => {
                if b == b'\n' {
                    *pos += 1;
                    self.account(1)?;
                    self.begin_file(n, sink)?;
                } else {
                    self.fail("file literal header must end in CRLF");
                }
            }
            State::FileBody { remaining } => {
                let rest = &input[*pos..];
                let n = rest.len().min(remaining as usize);
                if !self.sink_failed
                    && let Err(source) = sink.file_bytes(&rest[..n])
                {
                    self.reject_file(source);
                }
                *pos += n;
                let remaining = remaining - n as u64;
                if remaining == 0 {
                    self.end_file(sink);
                } else {
                    self.state = State::FileBody { remaining };
                }
            }
            State::Eol => match b {
                b'\r' => {
                    *pos += 1;
                    self.account(1)?;
                    self.state = State::EolLf;
                }
                b'\n' => {
                    *pos += 1;
                    self.account(1)?;
                    return Ok(true);
                }
                _ => self.fail("unexpected data after the value"),
            },
            State::EolLf => {
                if b == b'\n' {
                    *pos += 1;
                    self.account(1)?;
                    return Ok(true);
                }
                self.fail("CR without LF");
            }
            State::Skip
            | State::SkipLitDigits { .. }
            | State::SkipLitClose { .. }
            | State::SkipLitCr { .. }
            | State::SkipLitLf { .. }
            | State::SkipPercent
            | State::SkipFileHeader { .. }
            | State::SkipFileEol { .. }
            | State::SkipBody { .. } => return self.skip_step(input, pos),
        }
        Ok(false)
    }

    fn text_limit(&self) -> usize {
        self.limits.max_word.max(self.limits.max_line.min(1 << 20))
    }

    fn wants_dlist(&self) -> bool {
        match self.mode {
            Mode::Commands => {
                self.word.eq_ignore_ascii_case(b"GET")
                    || self.word.eq_ignore_ascii_case(b"APPLY")
                    || self.word.eq_ignore_ascii_case(b"RESTORE")
            }
            Mode::Responses => self.word == b"*",
            Mode::Text => false,
        }
    }

    /// The first word ended the line.
    fn word_ended(&mut self) -> bool {
        if self.wants_dlist() && self.error.is_none() {
            self.error = Some(DecodeError::Syntax {
                offset: self.line_len,
                reason: "missing argument",
            });
        }
        true
    }

    fn start_token(&mut self, b: u8, pos: &mut usize) -> Result<(), DecodeError> {
        match b {
            b'(' => {
                *pos += 1;
                self.account(1)?;
                self.open(Kind::List);
            }
            b'%' => {
                *pos += 1;
                self.account(1)?;
                if self.expect == Expect::Value {
                    self.state = State::Percent;
                } else {
                    self.fail("a list cannot be a key");
                }
            }
            b'{' => {
                *pos += 1;
                self.account(1)?;
                self.state = State::LitDigits {
                    n: 0,
                    digits: false,
                };
            }
            b'"' => {
                *pos += 1;
                self.account(1)?;
                self.begin_token();
                self.state = State::Quoted;
            }
            b')' => self.fail("unexpected )"),
            b'\\' => {
                self.begin_token();
                self.state = State::Atom { flag: true };
            }
            _ => {
                self.begin_token();
                self.state = State::Atom { flag: false };
            }
        }
        Ok(())
    }

    fn begin_file(&mut self, size: u64, sink: &mut dyn FileSink) -> Result<(), DecodeError> {
        if size > u64::from(self.limits.max_file) {
            return Err(DecodeError::FileTooBig {
                size,
                limit: self.limits.max_file,
            });
        }
        let mut node = self.new_node(Kind::File);
        node.text = self.file_part;
        node.guid = self.file_guid;
        node.size = size as u32;
        node.file_index = self.files;
        let index = self.files as usize;
        self.files += 1;
        let parent = self.parent();
        self.file_node = self.list.push_node(parent, node);
        if !self.sink_failed {
            let header = FileHeader {
                partition: self.list.slice(self.file_part),
                guid: self.list.slice(self.file_guid),
                size: size as u32,
                index,
            };
            if let Err(source) = sink.begin_file(&header) {
                self.reject_file(source);
            }
        }
        if size == 0 {
            self.end_file(sink);
        } else {
            self.state = State::FileBody { remaining: size };
        }
        Ok(())
    }

    fn end_file(&mut self, sink: &mut dyn FileSink) {
        if !self.sink_failed
            && let Err(source) = sink.end_file()
        {
            self.reject_file(source);
        }
        self.after_value();
    }

    /// The sink refused the current file: discard the rest of its bytes and of every
    /// later file of this line, then report the line as malformed.
    fn reject_file(&mut self, source: SinkError) {
        self.sink_failed = true;
        if self.error.is_none() {
            let index = self.list.nodes[self.file_node as usize].file_index as usize;
            self.error = Some(DecodeError::File { index, source });
        }
    }

    fn skip_step(&mut self, input: &[u8], pos: &mut usize) -> Result<bool, DecodeError> {
        let b = input[*pos];
        match self.state {
            State::Skip => {
                let rest = &input[*pos..];
                let n = rest
                    .iter()
                    .position(|&c| matches!(c, b'\n' | b'{' | b'%'))
                    .unwrap_or(rest.len());
                *pos += n;
                self.account(n)?;
                if n < rest.len() {
                    *pos += 1;
                    self.account(1)?;
                    match rest[n] {
                        b'\n' => return Ok(true),
                        b'{' => {
                            self.state = State::SkipLitDigits {
                                n: 0,
                                digits: false,
                            }
                        }
                        _ => self.state = State::SkipPercent,
                    }
                }
            }
            State::SkipLitDigits { n, digits } => match b {
                b'0'..=b'9' => {
                    *pos += 1;
                    self.account(1)?;
                    let n = n * 10 + u64::from(b - b'0');
                    if n > u64::from(u32::MAX) {
                        return Err(DecodeError::NumberTooBig);
                    }
                    self.state = State::SkipLitDigits { n, digits: true };
                }
                b'+' if digits => {
                    *pos += 1;
                    self.account(1)?;
                    self.state = State::SkipLitClose { n };
                }
                b'}' if digits => {
                    *pos += 1;
                    self.account(1)?;
                    self.state = State::SkipLitCr { n };
                }
                _ => self.state = State::Skip,
            },
            State::SkipLitClose { n } => {
                if b == b'}' {
                    *pos += 1;
                    self.account(1)?;
                    self.state = State::SkipLitCr { n };
                } else {
                    self.state = State::Skip;
                }
            }
            State::SkipLitCr { n } => {
                if b == b'\r' {
                    *pos += 1;
                    self.account(1)?;
                    self.state = State::SkipLitLf { n };
                } else {
                    self.state = State::Skip;
                }
            }
            State::SkipLitLf { n } => {
                if b == b'\n' {
                    *pos += 1;
                    self.account(1)?;
                    if n > u64::from(self.limits.max_literal) {
                        return Err(DecodeError::LiteralTooBig {
                            size: n,
                            limit: self.limits.max_literal,
                        });
                    }
                    self.state = State::SkipBody { remaining: n };
                } else {
                    self.state = State::Skip;
                }
            }
            State::SkipPercent => {
                if b == b'{' {
                    *pos += 1;
                    self.account(1)?;
                    self.state = State::SkipFileHeader { n: 0 };
                } else {
                    self.state = State::Skip;
                }
            }
            State::SkipFileHeader { n } => {
                *pos += 1;
                self.account(1)?;
                match b {
                    b'0'..=b'9' => {
                        let n = n * 10 + u64::from(b - b'0');
                        if n > u64::from(u32::MAX) {
                            return Err(DecodeError::NumberTooBig);
                        }
                        self.state = State::SkipFileHeader { n };
                    }
                    b'}' => self.state = State::SkipFileEol { n },
                    b'\n' => return Ok(true),
                    _ => self.state = State::SkipFileHeader { n: 0 },
                }
            }
            State::SkipFileEol { n } => match b {
                b'\r' => {
                    *pos += 1;
                    self.account(1)?;
                }
                b'\n' => {
                    *pos += 1;
                    self.account(1)?;
                    if n > u64::from(self.limits.max_file) {
                        return Err(DecodeError::FileTooBig {
                            size: n,
                            limit: self.limits.max_file,
                        });
                    }
                    self.state = State::SkipBody { remaining: n };
                }
                _ => self.state = State::Skip,
            },
            State::SkipBody { remaining } => {
                let n = (input.len() - *pos).min(remaining as usize);
                *pos += n;
                let remaining = remaining - n as u64;
                self.state = if remaining == 0 {
                    State::Skip
                } else {
                    State::SkipBody { remaining }
                };
            }
            _ => self.state = State::Skip,
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests;
