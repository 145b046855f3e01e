//! sync_log records (§6.2) and their text form (§6.3): writing with Cyrus's exact
//! quoting, reading with the rules of Cyrus's log reader.
//!
//! Writing (`sync_log.c, sync_quote_name`): an argument is written bare unless it
//! is empty or contains a space, TAB, `(`, `)`, `\`, `"`, `{` or `}`; then it is
//! wrapped in double quotes and each `\`, `"`, `{`, `}` gets a backslash. CR, LF or
//! NUL cannot be written ([`RecordError`]). One deliberate difference: csync also
//! quotes arguments containing a vertical tab or form feed, which Cyrus writes bare
//! although its own reader ends an atom there (so the line would be lost).
//!
//! Reading (`sync_log_reader_getitem`): the type is a word ending at whitespace,
//! `(`, `)` or `"`, upper-cased, and must be followed by a space; then one or two
//! IMAP astrings (atom, quoted string with backslash escapes, or `{n}`/`{n+}`
//! literal followed by CRLF and n bytes) separated by single spaces; then LF or
//! CRLF. A blank line is skipped. Where Cyrus stops reading the whole file at a
//! malformed argument (it reports end of file), csync skips only that line and
//! reports it, and it refuses lines whose argument count does not fit the type
//! (Cyrus reads a missing second argument as NULL and ignores a surplus one).

use std::fmt;

/// One sync_log record. Names are internal mailbox names (§8.1), userids are plain.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SyncLogRecord {
    /// `USER <userid>`: full sync of the user.
    User { userid: String },
    /// `UNUSER <userid>`: the user was deleted (or renamed away).
    Unuser { userid: String },
    /// `META <userid>`: seen state, subscriptions and sieve of the user.
    Meta { userid: String },
    /// `SIEVE <userid>`: read as META; not written by Cyrus 3.6.
    Sieve { userid: String },
    /// `APPEND <mailbox>`: a message was appended.
    Append { mailbox: String },
    /// `MAILBOX <mailbox>`: any committed change to the mailbox.
    Mailbox { mailbox: String },
    /// `DOUBLEMAILBOX <source> <destination>`: COPY/MOVE, synced together.
    DoubleMailbox { source: String, destination: String },
    /// `RENAME <old> <new>`; Cyrus always follows it with `MAILBOX` of both names
    /// in the same write, see [`SyncLogRecord::rename_group`].
    Rename { old: String, new: String },
    /// `UNMAILBOX <mailbox>`: final removal.
    Unmailbox { mailbox: String },
    /// `QUOTA <root>`.
    Quota { root: String },
    /// `ANNOTATION <mailbox>`; `ANNOTATION ""` means the server annotations.
    Annotation { mailbox: String },
    /// `SEEN <userid> <uniqueid>`: seen state of a mailbox the user does not own.
    Seen { userid: String, uniqueid: String },
    /// `SUB <userid> <mailbox>`: subscription changed (either way).
    Sub { userid: String, mailbox: String },
    /// `UNSUB <userid> <mailbox>`: read like SUB; not written by Cyrus 3.6.
    Unsub { userid: String, mailbox: String },
}

/// A record that cannot be written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// A CR or LF would split the line; Cyrus dies with "Illegal line break".
    #[error("line break in sync_log argument {0:?}")]
    LineBreak(String),
    /// NUL cannot be represented (Cyrus's strings end there).
    #[error("NUL byte in sync_log argument {0:?}")]
    Nul(String),
}

impl SyncLogRecord {
    pub fn user(userid: impl Into<String>) -> Self {
        SyncLogRecord::User {
            userid: userid.into(),
        }
    }
    pub fn unuser(userid: impl Into<String>) -> Self {
        SyncLogRecord::Unuser {
            userid: userid.into(),
        }
    }
    pub fn meta(userid: impl Into<String>) -> Self {
        SyncLogRecord::Meta {
            userid: userid.into(),
        }
    }
    pub fn append(mailbox: impl Into<String>) -> Self {
        SyncLogRecord::Append {
            mailbox: mailbox.into(),
        }
    }
    pub fn mailbox(mailbox: impl Into<String>) -> Self {
        SyncLogRecord::Mailbox {
            mailbox: mailbox.into(),
        }
    }
    pub fn double_mailbox(source: impl Into<String>, destination: impl Into<String>) -> Self {
        SyncLogRecord::DoubleMailbox {
            source: source.into(),
            destination: destination.into(),
        }
    }
    pub fn rename(old: impl Into<String>, new: impl Into<String>) -> Self {
        SyncLogRecord::Rename {
            old: old.into(),
            new: new.into(),
        }
    }
    pub fn unmailbox(mailbox: impl Into<String>) -> Self {
        SyncLogRecord::Unmailbox {
            mailbox: mailbox.into(),
        }
    }
    pub fn quota(root: impl Into<String>) -> Self {
        SyncLogRecord::Quota { root: root.into() }
    }
    pub fn annotation(mailbox: impl Into<String>) -> Self {
        SyncLogRecord::Annotation {
            mailbox: mailbox.into(),
        }
    }
    pub fn seen(userid: impl Into<String>, uniqueid: impl Into<String>) -> Self {
        SyncLogRecord::Seen {
            userid: userid.into(),
            uniqueid: uniqueid.into(),
        }
    }
    pub fn sub(userid: impl Into<String>, mailbox: impl Into<String>) -> Self {
        SyncLogRecord::Sub {
            userid: userid.into(),
            mailbox: mailbox.into(),
        }
    }

    /// What Cyrus writes for a mailbox rename: `RENAME old new`, `MAILBOX old`,
    /// `MAILBOX new`, appended as one group.
    pub fn rename_group(old: &str, new: &str) -> [SyncLogRecord; 3] {
        [
            SyncLogRecord::rename(old, new),
            SyncLogRecord::mailbox(old),
            SyncLogRecord::mailbox(new),
        ]
    }

    /// The type word as written.
    pub fn kind(&self) -> &'static str {
        match self {
            SyncLogRecord::User { .. } => "USER",
            SyncLogRecord::Unuser { .. } => "UNUSER",
            SyncLogRecord::Meta { .. } => "META",
            SyncLogRecord::Sieve { .. } => "SIEVE",
            SyncLogRecord::Append { .. } => "APPEND",
            SyncLogRecord::Mailbox { .. } => "MAILBOX",
            SyncLogRecord::DoubleMailbox { .. } => "DOUBLEMAILBOX",
            SyncLogRecord::Rename { .. } => "RENAME",
            SyncLogRecord::Unmailbox { .. } => "UNMAILBOX",
            SyncLogRecord::Quota { .. } => "QUOTA",
            SyncLogRecord::Annotation { .. } => "ANNOTATION",
            SyncLogRecord::Seen { .. } => "SEEN",
            SyncLogRecord::Sub { .. } => "SUB",
            SyncLogRecord::Unsub { .. } => "UNSUB",
        }
    }

    /// The arguments in written order.
    pub fn args(&self) -> (&str, Option<&str>) {
        match self {
            SyncLogRecord::User { userid }
            | SyncLogRecord::Unuser { userid }
            | SyncLogRecord::Meta { userid }
            | SyncLogRecord::Sieve { userid } => (userid, None),
            SyncLogRecord::Append { mailbox }
            | SyncLogRecord::Mailbox { mailbox }
            | SyncLogRecord::Unmailbox { mailbox }
            | SyncLogRecord::Annotation { mailbox } => (mailbox, None),
            SyncLogRecord::Quota { root } => (root, None),
            SyncLogRecord::DoubleMailbox {
                source,
                destination,
            } => (source, Some(destination)),
            SyncLogRecord::Rename { old, new } => (old, Some(new)),
            SyncLogRecord::Seen { userid, uniqueid } => (userid, Some(uniqueid)),
            SyncLogRecord::Sub { userid, mailbox } | SyncLogRecord::Unsub { userid, mailbox } => {
                (userid, Some(mailbox))
            }
        }
    }

    /// Builds a record from an upper-case type word and its arguments.
    fn from_parts(kind: &str, args: Vec<String>) -> Result<SyncLogRecord, SkipReason> {
        let found = args.len();
        let mut args = args.into_iter();
        let mut one = |kind: &'static str, make: fn(String) -> SyncLogRecord| match (
            args.next(),
            args.next(),
        ) {
            (Some(a), None) => Ok(make(a)),
            _ => Err(SkipReason::WrongArgCount {
                kind,
                expected: 1,
                found,
            }),
        };
        match kind {
            "USER" => one("USER", |userid| SyncLogRecord::User { userid }),
            "UNUSER" => one("UNUSER", |userid| SyncLogRecord::Unuser { userid }),
            "META" => one("META", |userid| SyncLogRecord::Meta { userid }),
            "SIEVE" => one("SIEVE", |userid| SyncLogRecord::Sieve { userid }),
            "APPEND" => one("APPEND", |mailbox| SyncLogRecord::Append { mailbox }),
            "MAILBOX" => one("MAILBOX", |mailbox| SyncLogRecord::Mailbox { mailbox }),
            "UNMAILBOX" => one("UNMAILBOX", |mailbox| SyncLogRecord::Unmailbox { mailbox }),
            "QUOTA" => one("QUOTA", |root| SyncLogRecord::Quota { root }),
            "ANNOTATION" => one("ANNOTATION", |mailbox| SyncLogRecord::Annotation {
                mailbox,
            }),
            _ => {
                let two: fn(String, String) -> SyncLogRecord;
                let kind: &'static str = match kind {
                    "DOUBLEMAILBOX" => {
                        two = |source, destination| SyncLogRecord::DoubleMailbox {
                            source,
                            destination,
                        };
                        "DOUBLEMAILBOX"
                    }
                    "RENAME" => {
                        two = |old, new| SyncLogRecord::Rename { old, new };
                        "RENAME"
                    }
                    "SEEN" => {
                        two = |userid, uniqueid| SyncLogRecord::Seen { userid, uniqueid };
                        "SEEN"
                    }
                    "SUB" => {
                        two = |userid, mailbox| SyncLogRecord::Sub { userid, mailbox };
                        "SUB"
                    }
                    "UNSUB" => {
                        two = |userid, mailbox| SyncLogRecord::Unsub { userid, mailbox };
                        "UNSUB"
                    }
                    _ => {
                        return Err(SkipReason::UnknownType {
                            kind: kind.to_owned(),
                        });
                    }
                };
                match (args.next(), args.next()) {
                    (Some(a), Some(b)) => Ok(two(a, b)),
                    _ => Err(SkipReason::WrongArgCount {
                        kind,
                        expected: 2,
                        found,
                    }),
                }
            }
        }
    }

    /// The record as one log line, LF-terminated, quoted exactly as Cyrus quotes.
    pub fn to_line(&self) -> Result<String, RecordError> {
        let mut out = String::new();
        self.write_line(&mut out)?;
        Ok(out)
    }

    /// Appends [`to_line`](Self::to_line)'s text to `out` (nothing on error).
    pub fn write_line(&self, out: &mut String) -> Result<(), RecordError> {
        let (first, second) = self.args();
        let mut line = String::with_capacity(self.kind().len() + first.len() + 4);
        line.push_str(self.kind());
        line.push(' ');
        quote_arg(first, &mut line)?;
        if let Some(second) = second {
            line.push(' ');
            quote_arg(second, &mut line)?;
        }
        line.push('\n');
        out.push_str(&line);
        Ok(())
    }

    /// Reads one line with the log reader's rules. The line terminator is optional;
    /// a literal's data may contain line breaks. Anything after the first complete
    /// record is reported as [`SkipReason::GarbageAtEnd`].
    pub fn parse_line(line: &[u8]) -> ParsedLine {
        let owned;
        let input = if line.ends_with(b"\n") {
            line
        } else {
            owned = [line, b"\n"].concat();
            &owned
        };
        match next_item(input, 0) {
            Some(Step::Item { parsed, end }) if end == input.len() => parsed,
            Some(Step::Item {
                parsed: ParsedLine::Skipped(reason),
                ..
            }) => ParsedLine::Skipped(reason),
            Some(Step::Item { .. }) => ParsedLine::Skipped(SkipReason::GarbageAtEnd),
            Some(Step::Incomplete) | None => ParsedLine::Skipped(SkipReason::Truncated),
        }
    }
}

impl fmt::Display for SyncLogRecord {
    /// The record as it would be written, without the line feed; arguments that
    /// cannot be written are shown escaped.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_line() {
            Ok(line) => f.write_str(line.trim_end_matches('\n')),
            Err(_) => {
                let (first, second) = self.args();
                write!(f, "{} {first:?}", self.kind())?;
                match second {
                    Some(second) => write!(f, " {second:?}"),
                    None => Ok(()),
                }
            }
        }
    }
}

/// Writes one argument with Cyrus's quoting (see the module documentation).
pub fn quote_arg(arg: &str, out: &mut String) -> Result<(), RecordError> {
    if arg.contains(['\r', '\n']) {
        return Err(RecordError::LineBreak(arg.to_owned()));
    }
    if arg.contains('\0') {
        return Err(RecordError::Nul(arg.to_owned()));
    }
    let needs_quotes =
        arg.is_empty() || arg.contains([' ', '\t', '(', ')', '\\', '"', '{', '}', '\x0b', '\x0c']);
    if !needs_quotes {
        out.push_str(arg);
        return Ok(());
    }
    out.push('"');
    for c in arg.chars() {
        if matches!(c, '\\' | '"' | '{' | '}') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    Ok(())
}

/// Writes a group of records as one text (what one locked append writes).
pub fn encode_records(records: &[SyncLogRecord]) -> Result<String, RecordError> {
    let mut out = String::new();
    for record in records {
        record.write_line(&mut out)?;
    }
    Ok(out)
}

/// The result of reading one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ParsedLine {
    Record(SyncLogRecord),
    /// An empty line (also CRLF alone); ignored.
    Blank,
    /// A line the reader does not turn into a record, and why.
    Skipped(SkipReason),
}

/// Why a line was not read as a record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    /// The type word is not followed by a space (Cyrus: "Invalid input").
    #[error("invalid input: the type is not followed by a space")]
    InvalidInput,
    /// A type word alone on its line (Cyrus silently ignores it like a blank line).
    #[error("{kind} without arguments")]
    NoArguments { kind: String },
    /// An argument is not an atom, quoted string or literal (Cyrus stops reading
    /// the file here).
    #[error("malformed argument")]
    BadArgument,
    /// Something other than the end of the line after the arguments (Cyrus:
    /// "Garbage at end of input line"); also a third argument.
    #[error("garbage at end of line")]
    GarbageAtEnd,
    /// A literal announces more bytes than the line has.
    #[error("truncated literal")]
    Truncated,
    /// An argument is not UTF-8.
    #[error("argument is not UTF-8")]
    NotUtf8,
    /// Not one of the types of §6.2 (Cyrus: "Unknown action type").
    #[error("unknown record type {kind:?}")]
    UnknownType { kind: String },
    /// A known type with the wrong number of arguments.
    #[error("{kind} needs {expected} argument(s), found {found}")]
    WrongArgCount {
        kind: &'static str,
        expected: usize,
        found: usize,
    },
}

/// A line of a log that was not read as a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedLine {
    /// 1-based number of the line the record started on.
    pub line: usize,
    /// The line's text (lossily decoded), without its line break.
    pub text: String,
    pub reason: SkipReason,
}

/// Everything read from a log file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogContents {
    /// The records, in file order.
    pub records: Vec<SyncLogRecord>,
    /// Lines that were not records (blank lines are not listed).
    pub skipped: Vec<SkippedLine>,
    /// Bytes after the last complete line: a record still being written when a
    /// writer died. Not a record (Cyrus loses it too).
    pub incomplete_tail: Option<Vec<u8>>,
}

/// Reads a whole log text.
pub fn parse_log(input: &[u8]) -> LogContents {
    let mut contents = LogContents::default();
    let mut pos = 0;
    let mut line_no = 1;
    while let Some(step) = next_item(input, pos) {
        let Step::Item { parsed, end } = step else {
            contents.incomplete_tail = Some(input[pos..].to_vec());
            break;
        };
        let raw = &input[pos..end];
        match parsed {
            ParsedLine::Record(record) => contents.records.push(record),
            ParsedLine::Blank => {}
            ParsedLine::Skipped(reason) => contents.skipped.push(SkippedLine {
                line: line_no,
                text: String::from_utf8_lossy(raw.strip_suffix(b"\n").unwrap_or(raw))
                    .trim_end_matches('\r')
                    .to_owned(),
                reason,
            }),
        }
        line_no += raw.iter().filter(|&&c| c == b'\n').count();
        pos = end;
    }
    contents
}

/// One step of the reader.
enum Step {
    /// A line (with any literal data) ending before `end`.
    Item { parsed: ParsedLine, end: usize },
    /// The rest of the input is not a complete line.
    Incomplete,
}

/// Why an argument could not be read.
enum Fail {
    /// Ran out of input before the line ended.
    Incomplete,
    /// The line is bad; the offending byte is at this position.
    Skip(SkipReason, usize),
}

/// C `isspace` in the C locale.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// Ends a type word or atom (Cyrus's `getword` and atom rule).
fn ends_word(c: u8) -> bool {
    is_space(c) || matches!(c, b'(' | b')' | b'"')
}

/// Reads the item starting at `start`; `None` at the end of the input.
fn next_item(input: &[u8], start: usize) -> Option<Step> {
    if start >= input.len() {
        return None;
    }
    Some(match read_item(input, start) {
        Ok((parsed, end)) => Step::Item { parsed, end },
        Err(Fail::Incomplete) => Step::Incomplete,
        Err(Fail::Skip(reason, at)) => match input[at..].iter().position(|&c| c == b'\n') {
            Some(offset) => Step::Item {
                parsed: ParsedLine::Skipped(reason),
                end: at + offset + 1,
            },
            None => Step::Incomplete,
        },
    })
}

fn read_item(input: &[u8], start: usize) -> Result<(ParsedLine, usize), Fail> {
    let byte = |i: usize| input.get(i).copied().ok_or(Fail::Incomplete);
    let word_end = input[start..]
        .iter()
        .position(|&c| ends_word(c))
        .map(|offset| start + offset)
        .ok_or(Fail::Incomplete)?;
    let word = &input[start..word_end];
    let mut pos = word_end;
    let mut c = byte(pos)?;
    pos += 1;
    if c == b'\r' {
        c = byte(pos)?;
        pos += 1;
    }
    if c == b'\n' {
        let parsed = if word.is_empty() {
            ParsedLine::Blank
        } else {
            ParsedLine::Skipped(SkipReason::NoArguments {
                kind: String::from_utf8_lossy(word).to_ascii_uppercase(),
            })
        };
        return Ok((parsed, pos));
    }
    if c != b' ' {
        return Err(Fail::Skip(SkipReason::InvalidInput, pos - 1));
    }
    let mut args: Vec<Vec<u8>> = Vec::with_capacity(2);
    loop {
        let (arg, next) = read_astring(input, pos)?;
        args.push(arg);
        c = byte(next)?;
        pos = next + 1;
        if c != b' ' || args.len() == 2 {
            break;
        }
    }
    let mut end_at = pos - 1;
    if c == b'\r' {
        end_at = pos;
        c = byte(pos)?;
        pos += 1;
    }
    if c != b'\n' {
        return Err(Fail::Skip(SkipReason::GarbageAtEnd, end_at));
    }
    let kind = String::from_utf8_lossy(word).to_ascii_uppercase();
    let mut strings = Vec::with_capacity(args.len());
    for arg in args {
        match String::from_utf8(arg) {
            Ok(s) => strings.push(s),
            Err(_) => return Ok((ParsedLine::Skipped(SkipReason::NotUtf8), pos)),
        }
    }
    let parsed = match SyncLogRecord::from_parts(&kind, strings) {
        Ok(record) => ParsedLine::Record(record),
        Err(reason) => ParsedLine::Skipped(reason),
    };
    Ok((parsed, pos))
}

/// Reads an IMAP astring at `pos`; returns it and the position of the byte after
/// it (which the caller examines).
fn read_astring(input: &[u8], pos: usize) -> Result<(Vec<u8>, usize), Fail> {
    let byte = |i: usize| input.get(i).copied().ok_or(Fail::Incomplete);
    let bad = |at: usize| Fail::Skip(SkipReason::BadArgument, at);
    match byte(pos)? {
        b' ' | b'(' | b')' | b'\r' | b'\n' => Err(bad(pos)),
        b'"' => {
            let mut out = Vec::new();
            let mut i = pos + 1;
            loop {
                let mut c = byte(i)?;
                if c == b'\\' {
                    i += 1;
                    c = byte(i)?;
                    if c == b'\r' || c == b'\n' {
                        return Err(bad(i));
                    }
                } else if c == b'"' {
                    return Ok((out, i + 1));
                } else if c == b'\r' || c == b'\n' {
                    return Err(bad(i));
                }
                if c == 0 {
                    return Err(bad(i));
                }
                out.push(c);
                i += 1;
            }
        }
        b'{' => {
            let mut i = pos + 1;
            let digits_start = i;
            let mut len: u64 = 0;
            while let Some(d) = input.get(i).filter(|d| d.is_ascii_digit()) {
                len = len * 10 + u64::from(d - b'0');
                if len > u64::from(i32::MAX.unsigned_abs()) {
                    return Err(bad(i));
                }
                i += 1;
            }
            if i == digits_start {
                return Err(bad(i));
            }
            if byte(i)? == b'+' {
                i += 1;
            }
            for expected in [b'}', b'\r', b'\n'] {
                if byte(i)? != expected {
                    return Err(bad(i));
                }
                i += 1;
            }
            let len = usize::try_from(len).map_err(|_| bad(i))?;
            let end = i.checked_add(len).ok_or_else(|| bad(i))?;
            let data = input.get(i..end).ok_or(Fail::Incomplete)?;
            if data.contains(&0) {
                return Err(bad(end));
            }
            Ok((data.to_vec(), end))
        }
        _ => {
            let end = input[pos..]
                .iter()
                .position(|&c| ends_word(c))
                .map(|offset| pos + offset)
                .ok_or(Fail::Incomplete)?;
            let atom = &input[pos..end];
            if atom.contains(&0) {
                return Err(bad(pos));
            }
            Ok((atom.to_vec(), end))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn line(record: &SyncLogRecord) -> String {
        record.to_line().expect("writable")
    }

    fn parse(text: &str) -> ParsedLine {
        SyncLogRecord::parse_line(text.as_bytes())
    }

    #[test]
    fn every_type_is_written_as_cyrus_writes_it() {
        let cases = [
            (SyncLogRecord::user("john"), "USER john\n"),
            (SyncLogRecord::unuser("john"), "UNUSER john\n"),
            (SyncLogRecord::meta("john"), "META john\n"),
            (
                SyncLogRecord::Sieve {
                    userid: "john".into(),
                },
                "SIEVE john\n",
            ),
            (
                SyncLogRecord::append("user.john.Sent"),
                "APPEND user.john.Sent\n",
            ),
            (SyncLogRecord::mailbox("user.john"), "MAILBOX user.john\n"),
            (
                SyncLogRecord::double_mailbox("user.john", "user.john.Sent"),
                "DOUBLEMAILBOX user.john user.john.Sent\n",
            ),
            (
                SyncLogRecord::rename("user.john.Sent", "DELETED.user.john.Sent.6B0218D3"),
                "RENAME user.john.Sent DELETED.user.john.Sent.6B0218D3\n",
            ),
            (
                SyncLogRecord::unmailbox("DELETED.user.john.Sent.6B0218D3"),
                "UNMAILBOX DELETED.user.john.Sent.6B0218D3\n",
            ),
            (SyncLogRecord::quota("user.john"), "QUOTA user.john\n"),
            (SyncLogRecord::annotation(""), "ANNOTATION \"\"\n"),
            (
                SyncLogRecord::seen("john", "pehbuvnnaedto8n5yeipsmna"),
                "SEEN john pehbuvnnaedto8n5yeipsmna\n",
            ),
            (
                SyncLogRecord::sub("john", "user.john.Sent"),
                "SUB john user.john.Sent\n",
            ),
            (
                SyncLogRecord::Unsub {
                    userid: "john".into(),
                    mailbox: "user.john.Sent".into(),
                },
                "UNSUB john user.john.Sent\n",
            ),
        ];
        for (record, text) in cases {
            assert_eq!(line(&record), text);
            assert_eq!(parse(text), ParsedLine::Record(record));
        }
    }

    #[test]
    fn quoting_matches_cyrus() {
        let cases = [
            ("user.john", "user.john"),
            ("user.john.Other Stuff", "\"user.john.Other Stuff\""),
            (
                "user.john.a \"q\" {x} \\b",
                "\"user.john.a \\\"q\\\" \\{x\\} \\\\b\"",
            ),
            ("", "\"\""),
            ("a\"b", "\"a\\\"b\""),
            ("{5}", "\"\\{5\\}\""),
            ("back\\slash", "\"back\\\\slash\""),
            ("tab\there", "\"tab\there\""),
            ("(paren)", "\"(paren)\""),
            ("user.j&AOk-r&APQ-me", "user.j&AOk-r&APQ-me"),
            ("user.john.100%done*", "user.john.100%done*"),
            ("user.john^doe.[x]", "user.john^doe.[x]"),
            ("example.com!user.john", "example.com!user.john"),
            ("NIL", "NIL"),
            ("vt\x0bff\x0c", "\"vt\x0bff\x0c\""),
            ("caf\u{e9}", "caf\u{e9}"),
        ];
        for (name, quoted) in cases {
            let mut out = String::new();
            quote_arg(name, &mut out).unwrap();
            assert_eq!(out, quoted, "{name:?}");
            let record = SyncLogRecord::mailbox(name);
            assert_eq!(line(&record), format!("MAILBOX {quoted}\n"));
            assert_eq!(
                parse(&line(&record)),
                ParsedLine::Record(record),
                "{name:?}"
            );
        }
    }

    #[test]
    fn line_breaks_and_nul_cannot_be_written() {
        for (name, err) in [
            ("a\nb", RecordError::LineBreak("a\nb".into())),
            ("a\rb", RecordError::LineBreak("a\rb".into())),
            ("a\0b", RecordError::Nul("a\0b".into())),
        ] {
            assert_eq!(SyncLogRecord::mailbox(name).to_line(), Err(err.clone()));
            assert_eq!(SyncLogRecord::seen("john", name).to_line(), Err(err));
        }
        let mut out = String::from("kept");
        assert!(
            SyncLogRecord::sub("john", "bad\n")
                .write_line(&mut out)
                .is_err()
        );
        assert_eq!(out, "kept");
        assert!(encode_records(&[SyncLogRecord::user("a"), SyncLogRecord::user("b\n")]).is_err());
    }

    #[test]
    fn rename_group_is_three_lines() {
        assert_eq!(
            encode_records(&SyncLogRecord::rename_group(
                "user.john.Other Stuff",
                "user.john.Archive"
            ))
            .unwrap(),
            "RENAME \"user.john.Other Stuff\" user.john.Archive\n\
             MAILBOX \"user.john.Other Stuff\"\n\
             MAILBOX user.john.Archive\n"
        );
    }

    #[test]
    fn display_is_the_line_without_newline() {
        assert_eq!(
            SyncLogRecord::mailbox("user.john.Other Stuff").to_string(),
            "MAILBOX \"user.john.Other Stuff\""
        );
        assert_eq!(
            SyncLogRecord::mailbox("a\nb").to_string(),
            "MAILBOX \"a\\nb\""
        );
    }

    #[test]
    fn reader_accepts_what_cyrus_accepts() {
        let mbox = |n: &str| ParsedLine::Record(SyncLogRecord::mailbox(n));
        // type word is upper-cased; CRLF accepted; terminator optional here
        assert_eq!(parse("mailbox user.john\r\n"), mbox("user.john"));
        assert_eq!(parse("MaIlBoX user.john"), mbox("user.john"));
        // quoted with escapes of any character
        assert_eq!(parse("MAILBOX \"a\\b\\\\c\"\n"), mbox("ab\\c"));
        assert_eq!(parse("MAILBOX \"\"\n"), mbox(""));
        // literals, synchronising or not; data may hold anything but NUL
        assert_eq!(parse("MAILBOX {9}\r\nuser.john\n"), mbox("user.john"));
        assert_eq!(parse("MAILBOX {3+}\r\na\nb\n"), mbox("a\nb"));
        assert_eq!(parse("MAILBOX {0}\r\n\n"), mbox(""));
        assert_eq!(
            parse("SEEN {4}\r\njohn uid1\n"),
            ParsedLine::Record(SyncLogRecord::seen("john", "uid1"))
        );
        // atoms take specials other than blanks, parens and quotes
        assert_eq!(parse("MAILBOX a{b}\\c%*]\n"), mbox("a{b}\\c%*]"));
        // blank lines
        assert_eq!(parse("\n"), ParsedLine::Blank);
        assert_eq!(parse("\r\n"), ParsedLine::Blank);
        assert_eq!(parse(""), ParsedLine::Blank);
    }

    #[test]
    fn reader_skips_invalid_lines() {
        use SkipReason::*;
        let skipped = |text: &str| match parse(text) {
            ParsedLine::Skipped(reason) => reason,
            other => panic!("{text:?} parsed as {other:?}"),
        };
        assert_eq!(skipped("USER\tjohn\n"), InvalidInput);
        assert_eq!(skipped("USER(john)\n"), InvalidInput);
        assert_eq!(skipped("\tUSER john\n"), InvalidInput);
        assert_eq!(
            skipped("USER\n"),
            NoArguments {
                kind: "USER".into()
            }
        );
        assert_eq!(skipped("USER  john\n"), BadArgument);
        assert_eq!(skipped("USER \n"), BadArgument);
        assert_eq!(skipped("USER (john)\n"), BadArgument);
        assert_eq!(skipped("   \n"), BadArgument);
        assert_eq!(skipped("USER \"john\n"), BadArgument);
        assert_eq!(skipped("USER \"jo\\\nhn\"\n"), BadArgument);
        assert_eq!(skipped("USER {4}\njohn\n"), BadArgument);
        assert_eq!(skipped("USER {x}\r\njohn\n"), BadArgument);
        assert_eq!(skipped("USER {99999999999}\r\njohn\n"), BadArgument);
        assert_eq!(skipped("USER {4}\r\njo\0n\n"), BadArgument);
        assert_eq!(skipped("USER {10}\r\njohn\n"), Truncated);
        assert_eq!(skipped("USER john \n"), BadArgument);
        assert_eq!(skipped("SEEN john uid extra\n"), GarbageAtEnd);
        assert_eq!(skipped("USER \"john\"x\n"), GarbageAtEnd);
        assert_eq!(skipped("USER john\rx\n"), GarbageAtEnd);
        assert_eq!(skipped("USER john\nUSER bob\n"), GarbageAtEnd);
        assert_eq!(skipped("USER jo\u{0}hn\n"), BadArgument);
        assert_eq!(
            skipped("ACL user.john\n"),
            UnknownType { kind: "ACL".into() }
        );
        assert_eq!(skipped(" USER john\n"), UnknownType { kind: "".into() });
        assert_eq!(
            skipped("USER john bob\n"),
            WrongArgCount {
                kind: "USER",
                expected: 1,
                found: 2
            }
        );
        assert_eq!(
            skipped("RENAME user.a\n"),
            WrongArgCount {
                kind: "RENAME",
                expected: 2,
                found: 1
            }
        );
        assert_eq!(
            SyncLogRecord::parse_line(b"MAILBOX caf\xe9\n"),
            ParsedLine::Skipped(NotUtf8)
        );
    }

    #[test]
    fn log_reader_keeps_going_after_bad_lines() {
        let text = b"MAILBOX user.john\n\
            \n\
            USER  john\n\
            garbage(\n\
            MAILBOX {10}\r\nuser.a\nb.c\n\
            SEEN john \"unterminated\n\
            \r\n\
            SUB john user.john.Sent\r\n\
            APPEND user.john.Se";
        let contents = parse_log(text);
        assert_eq!(
            contents.records,
            vec![
                SyncLogRecord::mailbox("user.john"),
                SyncLogRecord::mailbox("user.a\nb.c"),
                SyncLogRecord::sub("john", "user.john.Sent"),
            ]
        );
        let skipped: Vec<(usize, &str, &SkipReason)> = contents
            .skipped
            .iter()
            .map(|s| (s.line, s.text.as_str(), &s.reason))
            .collect();
        assert_eq!(
            skipped,
            vec![
                (3, "USER  john", &SkipReason::BadArgument),
                (4, "garbage(", &SkipReason::InvalidInput),
                (8, "SEEN john \"unterminated", &SkipReason::BadArgument),
            ]
        );
        assert_eq!(
            contents.incomplete_tail.as_deref(),
            Some(&b"APPEND user.john.Se"[..])
        );
        // a complete file has no tail
        assert_eq!(parse_log(b"USER a\n").incomplete_tail, None);
        assert_eq!(parse_log(b""), LogContents::default());
        // an unterminated literal at the end is a tail, not a record
        assert_eq!(
            parse_log(b"USER {10}\r\njohn").incomplete_tail.as_deref(),
            Some(&b"USER {10}\r\njohn"[..])
        );
    }

    fn record_strategy() -> impl Strategy<Value = SyncLogRecord> {
        // any text Cyrus could hold: no CR, LF or NUL
        let arg = r"[^\r\n\x00]{0,40}";
        let named = r"user\.[a-zA-Z0-9&^ \-]{1,12}(\.[^\r\n\x00.]{1,10}){0,3}";
        prop_oneof![
            arg.prop_map(SyncLogRecord::user),
            arg.prop_map(SyncLogRecord::unuser),
            arg.prop_map(SyncLogRecord::meta),
            arg.prop_map(|userid| SyncLogRecord::Sieve { userid }),
            named.prop_map(SyncLogRecord::append),
            arg.prop_map(SyncLogRecord::mailbox),
            (arg, named).prop_map(|(a, b)| SyncLogRecord::double_mailbox(a, b)),
            (named, arg).prop_map(|(a, b)| SyncLogRecord::rename(a, b)),
            arg.prop_map(SyncLogRecord::unmailbox),
            arg.prop_map(SyncLogRecord::quota),
            arg.prop_map(SyncLogRecord::annotation),
            (arg, arg).prop_map(|(a, b)| SyncLogRecord::seen(a, b)),
            (arg, arg).prop_map(|(a, b)| SyncLogRecord::sub(a, b)),
            (arg, arg).prop_map(|(userid, mailbox)| SyncLogRecord::Unsub { userid, mailbox }),
        ]
    }

    proptest! {
        #[test]
        fn any_record_round_trips(record in record_strategy()) {
            let text = record.to_line().unwrap();
            prop_assert!(text.ends_with('\n'));
            prop_assert_eq!(text.matches('\n').count(), 1);
            prop_assert_eq!(
                SyncLogRecord::parse_line(text.as_bytes()),
                ParsedLine::Record(record)
            );
        }

        #[test]
        fn any_group_round_trips(records in proptest::collection::vec(record_strategy(), 0..20)) {
            let text = encode_records(&records).unwrap();
            let contents = parse_log(text.as_bytes());
            prop_assert_eq!(contents.records, records);
            prop_assert!(contents.skipped.is_empty());
            prop_assert_eq!(contents.incomplete_tail, None);
        }

        #[test]
        fn reader_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let contents = parse_log(&bytes);
            let _ = SyncLogRecord::parse_line(&bytes);
            prop_assert!(contents.records.len() + contents.skipped.len() <= bytes.len() + 1);
        }
    }
}
