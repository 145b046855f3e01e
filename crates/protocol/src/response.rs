//! Replies: the greeting (spec §1.3), `* ` data lines and completion lines with the
//! exact strings of §1.9, §1.10 and §3.2.

use crate::decode::{Body, Line};
use crate::encode::{Encoder, LiteralStyle};
use crate::guid::Guid;
use crate::mailbox::{FieldError, FieldResult, MailboxState, Required, text_list};
use crate::metadata::{MailboxAnnotation, Quota, SeenRecord, SieveEntry, SieveScript};
use crate::value::{Item, Kind, TypeError};

/// The outcome of a GET/APPLY/RESTORE, with the completion line Cyrus writes
/// (`sync_support.c, sync_response`, spec §3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SyncStatus {
    Ok,
    InvalidUser,
    MailboxNonexistent,
    MailboxLocked,
    MailboxMoved,
    MailboxNotSupported,
    SyncChecksum,
    SyncChanged,
    SyncBadSieve,
    ProtocolError,
    BadParameters,
    /// Anything else (I/O error, mailbox exists, permission, ...).
    Unknown,
}

impl SyncStatus {
    /// The completion line without CRLF, byte-exact with Cyrus 3.6.
    pub fn line(self) -> &'static str {
        match self {
            SyncStatus::Ok => "OK success",
            SyncStatus::InvalidUser => "NO IMAP_INVALID_USER No Such User",
            SyncStatus::MailboxNonexistent => "NO IMAP_MAILBOX_NONEXISTENT No Such Mailbox",
            SyncStatus::MailboxLocked => "NO IMAP_MAILBOX_LOCKED Mailbox locked",
            SyncStatus::MailboxMoved => {
                "NO IMAP_MAILBOX_MOVED Mailbox exists with another name or uniqueid"
            }
            SyncStatus::MailboxNotSupported => {
                "NO IMAP_MAILBOX_NOTSUPPORTED Operation is not supported on mailbox"
            }
            SyncStatus::SyncChecksum => "NO IMAP_SYNC_CHECKSUM Checksum Failure",
            SyncStatus::SyncChanged => "NO IMAP_SYNC_CHANGED Changed since last sync",
            SyncStatus::SyncBadSieve => "NO IMAP_SYNC_BADSIEVE Sieve script compilation failure",
            SyncStatus::ProtocolError => "NO IMAP_PROTOCOL_ERROR Protocol error",
            SyncStatus::BadParameters => "NO IMAP_PROTOCOL_BAD_PARAMETERS",
            SyncStatus::Unknown => "NO Unknown error",
        }
    }

    /// How the Cyrus client maps the text of a `NO` reply (§1.10): by prefix, each code
    /// with its trailing space. The bare `IMAP_PROTOCOL_BAD_PARAMETERS` the 3.6 server
    /// sends has no space, so it maps to `Unknown` ("remote denied") there too.
    pub fn from_no_text(text: &[u8]) -> SyncStatus {
        const CODES: [(&str, SyncStatus); 10] = [
            ("IMAP_INVALID_USER ", SyncStatus::InvalidUser),
            ("IMAP_MAILBOX_NONEXISTENT ", SyncStatus::MailboxNonexistent),
            ("IMAP_MAILBOX_LOCKED ", SyncStatus::MailboxLocked),
            ("IMAP_MAILBOX_MOVED ", SyncStatus::MailboxMoved),
            (
                "IMAP_MAILBOX_NOTSUPPORTED ",
                SyncStatus::MailboxNotSupported,
            ),
            ("IMAP_SYNC_CHECKSUM ", SyncStatus::SyncChecksum),
            ("IMAP_SYNC_CHANGED ", SyncStatus::SyncChanged),
            ("IMAP_SYNC_BADSIEVE ", SyncStatus::SyncBadSieve),
            ("IMAP_PROTOCOL_ERROR ", SyncStatus::ProtocolError),
            ("IMAP_PROTOCOL_BAD_PARAMETERS ", SyncStatus::BadParameters),
        ];
        CODES
            .iter()
            .find(|(prefix, _)| text.starts_with(prefix.as_bytes()))
            .map(|(_, status)| *status)
            .unwrap_or(SyncStatus::Unknown)
    }
}

impl From<&FieldError> for SyncStatus {
    /// Missing or mistyped keys are BAD_PARAMETERS; broken records are PROTOCOL_ERROR.
    fn from(err: &FieldError) -> SyncStatus {
        match err {
            FieldError::Missing(_) | FieldError::Type { .. } | FieldError::Shape(_) => {
                SyncStatus::BadParameters
            }
            FieldError::Protocol(_) | FieldError::BadRecord { .. } => SyncStatus::ProtocolError,
        }
    }
}

/// Fixed reply lines of the session layer (spec §1.5–§1.9).
pub mod lines {
    pub const NOOP: &str = "OK Noop completed";
    pub const RESTART: &str = "OK Restarting";
    pub const EXIT: &str = "OK Finished";
    pub const NOT_AUTHENTICATED: &str = "NO Please authenticate first";
    pub const PERMISSION_DENIED: &str = "NO Permission denied";
    pub const UNRECOGNIZED: &str = "BAD IMAP_PROTOCOL_ERROR Unrecognized command";
    pub const NULL_COMMAND: &str = "BAD Null command";
    pub const SHUTDOWN: &str = "BYE shutting down";
    pub const STARTTLS_BEGIN: &str = "OK Begin TLS negotiation now";
    pub const STARTTLS_INIT_FAILED: &str = "NO Error initializing TLS";
    pub const STARTTLS_FAILED: &str = "NO Starttls failed";
    pub const STARTTLS_AFTER_AUTH: &str = "BAD Can't Starttls after authentication";
    pub const STARTTLS_TWICE: &str = "BAD Already did a successful Starttls";

    /// `BAD IMAP_PROTOCOL_ERROR Failed to parse GET line` (or APPLY, RESTORE).
    pub fn failed_to_parse(command: &str) -> String {
        format!(
            "BAD IMAP_PROTOCOL_ERROR Failed to parse {} line",
            command.to_ascii_uppercase()
        )
    }

    /// `BAD Unexpected extra arguments to Noop`.
    pub fn extra_arguments(command: &str) -> String {
        format!(
            "BAD Unexpected extra arguments to {}",
            super::normalised(command)
        )
    }

    /// `BAD Missing required argument to Compress`.
    pub fn missing_argument(command: &str) -> String {
        format!(
            "BAD Missing required argument to {}",
            super::normalised(command)
        )
    }

    /// `* Fatal error: <text>`, written before the server drops the connection.
    pub fn fatal(text: &str) -> String {
        format!("* Fatal error: {text}")
    }
}

/// Cyrus's spelling of a command word in messages: lower case, first letter capital.
pub fn normalised(command: &str) -> String {
    let lower = command.to_ascii_lowercase();
    let mut chars = lower.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

/// What the server announces before authentication (spec §1.3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Greeting {
    /// `* SASL ...`: omitted when empty.
    pub sasl: Vec<String>,
    pub starttls: bool,
    pub compress: bool,
    pub sieve_mailbox: bool,
    /// The text after `* OK ` (servername, product, version).
    pub banner: String,
}

impl Greeting {
    /// The greeting lines, each with CRLF, in Cyrus's order.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if !self.sasl.is_empty() {
            out.extend_from_slice(b"* SASL ");
            out.extend_from_slice(self.sasl.join(" ").as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if self.starttls {
            out.extend_from_slice(b"* STARTTLS\r\n");
        }
        if self.compress {
            out.extend_from_slice(b"* COMPRESS DEFLATE\r\n");
        }
        if self.sieve_mailbox {
            out.extend_from_slice(b"* SIEVE-MAILBOX\r\n");
        }
        out.extend_from_slice(b"* OK ");
        out.extend_from_slice(self.banner.as_bytes());
        out.extend_from_slice(b"\r\n");
        out
    }

    /// Takes one greeting line (without CRLF) the way the Cyrus client reads it
    /// (`backend.c, parse_capability`): returns true once the `* OK` line arrived.
    /// Unknown capability lines are ignored.
    pub fn read_line(&mut self, line: &[u8]) -> bool {
        let text = String::from_utf8_lossy(line);
        if text.len() >= 4 && text[..4].eq_ignore_ascii_case("* OK") {
            self.banner = text.get(5..).unwrap_or_default().to_owned();
            return true;
        }
        let mut words = text.split(' ');
        let _star = words.next();
        let Some(name) = words.next() else {
            return false;
        };
        let params: Vec<&str> = words.filter(|w| !w.is_empty()).collect();
        match name.to_ascii_uppercase().as_str() {
            "SASL" => self.sasl = params.iter().map(|s| (*s).to_owned()).collect(),
            "STARTTLS" => self.starttls = true,
            "COMPRESS" => self.compress |= params.iter().any(|p| p.eq_ignore_ascii_case("DEFLATE")),
            "SIEVE-MAILBOX" => self.sieve_mailbox = true,
            _ => {}
        }
        false
    }
}

/// A `* MESSAGE` reply to `GET FETCH`: the file literal's header, or `NIL` when the
/// replica's copy did not match its GUID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchedFile {
    pub partition: String,
    pub guid: Guid,
    pub size: u32,
    /// Ordinal of the file in the line (where the sink put its bytes).
    pub index: usize,
}

/// The typed content of a `* ` data line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataItem {
    Mailbox(Box<MailboxState>),
    Quota(Quota),
    Seen(SeenRecord),
    Lsub(Vec<String>),
    Sieve(SieveEntry),
    SieveScript(SieveScript),
    Missing(Vec<Guid>),
    Enabled(Vec<String>),
    Annotation(MailboxAnnotation),
    Message(Option<FetchedFile>),
}

impl DataItem {
    /// Reads a data line's keyed value. `mailbox` says which MAILBOX keys are required
    /// (list replies or FULLMAILBOX). Any other item kind is an error: the Cyrus client
    /// discards the whole reply then.
    pub fn decode(item: Item<'_>, mailbox: Required) -> FieldResult<DataItem> {
        let key = item.key().unwrap_or_default();
        Ok(match key {
            b"MAILBOX" => DataItem::Mailbox(Box::new(MailboxState::decode(item, mailbox)?)),
            b"QUOTA" => DataItem::Quota(Quota::decode(item)?),
            b"SEEN" => DataItem::Seen(SeenRecord::decode(item)?),
            b"LSUB" => DataItem::Lsub(text_list("LSUB", item)?),
            b"SIEVE" => {
                if item.get("CONTENT").is_some() {
                    DataItem::SieveScript(SieveScript::decode(item)?)
                } else {
                    DataItem::Sieve(SieveEntry::decode(item)?)
                }
            }
            b"MISSING" => DataItem::Missing(guid_list("MISSING", item)?),
            b"ENABLED" => DataItem::Enabled(text_list("ENABLED", item)?),
            b"ANNOTATION" => DataItem::Annotation(MailboxAnnotation::decode(item, true)?),
            b"MESSAGE" => DataItem::Message(match item.file() {
                Some(file) => Some(FetchedFile {
                    partition: String::from_utf8(file.partition.to_vec())
                        .map_err(|_| FieldError::Shape("partition is not UTF-8"))?,
                    guid: Guid::parse(file.guid).map_err(|error| FieldError::Type {
                        key: "MESSAGE",
                        error,
                    })?,
                    size: file.size,
                    index: file.index,
                }),
                None if item.is_nil() => None,
                None => return Err(FieldError::Shape("MESSAGE is not a file literal")),
            }),
            _ => return Err(FieldError::Protocol("unexpected data item")),
        })
    }

    /// Writes `* KEY value` CRLF (server side: `{n}` literals). A `Message` item writes
    /// only the file header; the caller sends the bytes and then CRLF.
    pub fn encode(&self, enc: &mut Encoder) {
        enc.word("*");
        match self {
            DataItem::Mailbox(m) => {
                enc.key("MAILBOX");
                m.encode(enc);
            }
            DataItem::Quota(q) => {
                enc.key("QUOTA");
                q.encode(enc);
            }
            DataItem::Seen(s) => {
                enc.key("SEEN");
                s.encode(None, enc);
            }
            DataItem::Lsub(names) => {
                enc.key("LSUB").begin_list();
                for n in names {
                    enc.string(n.as_bytes());
                }
                enc.end();
            }
            DataItem::Sieve(s) => {
                enc.key("SIEVE");
                s.encode(enc);
            }
            DataItem::SieveScript(s) => {
                enc.key("SIEVE");
                s.encode(enc);
            }
            DataItem::Missing(guids) => {
                enc.key("MISSING").begin_list();
                for g in guids {
                    enc.guid(g);
                }
                enc.end();
            }
            DataItem::Enabled(caps) => {
                enc.key("ENABLED").begin_list();
                for c in caps {
                    enc.string(c.as_bytes());
                }
                enc.end();
            }
            DataItem::Annotation(a) => {
                enc.key("ANNOTATION");
                a.encode(enc);
            }
            DataItem::Message(file) => {
                enc.key("MESSAGE");
                match file {
                    Some(f) => {
                        enc.file_header(f.partition.as_bytes(), &f.guid, f.size);
                    }
                    None => {
                        enc.nil();
                        enc.end_line();
                    }
                }
                return;
            }
        }
        enc.end_line();
    }

    /// Encodes into a fresh buffer with the server's literal style.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut enc = Encoder::new(LiteralStyle::Synchronizing);
        self.encode(&mut enc);
        enc.into_bytes()
    }
}

fn guid_list(key: &'static str, item: Item<'_>) -> FieldResult<Vec<Guid>> {
    if item.kind() != Kind::List {
        return Err(FieldError::Type {
            key,
            error: TypeError::NotAList(item.kind()),
        });
    }
    item.children()
        .map(|c| c.guid().map_err(|error| FieldError::Type { key, error }))
        .collect()
}

/// A completion line as the client reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Completion {
    Ok(String),
    No { status: SyncStatus, text: String },
    Bad(String),
    Bye(String),
}

/// One reply line as the client reads it (spec §1.10).
#[derive(Debug)]
pub enum Response<'a> {
    /// `* KEY value`, still untyped (decode with [`DataItem::decode`]).
    Data(Item<'a>),
    Done(Completion),
    /// `+ base64` during AUTHENTICATE.
    Continue(&'a [u8]),
}

/// Why a reply line is not acceptable (the Cyrus client's "received bad response").
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResponseError {
    #[error("malformed data line: {0}")]
    MalformedData(String),
    #[error("completion word {0:?} must be followed by a space and text")]
    NoText(String),
    #[error("unexpected reply {0:?}")]
    Unexpected(String),
}

impl<'a> Response<'a> {
    /// Classifies a decoded line (read with [`crate::Mode::Responses`]).
    pub fn from_line(line: Line<'a>) -> Result<Response<'a>, ResponseError> {
        let word = String::from_utf8_lossy(line.word).into_owned();
        match (line.word, line.body) {
            (b"*", Body::Dlist(item)) => Ok(Response::Data(item)),
            (b"*", Body::Malformed(e)) => Err(ResponseError::MalformedData(e.to_string())),
            (b"+", Body::Text(t)) => Ok(Response::Continue(t)),
            (b"+", Body::None) => Ok(Response::Continue(b"")),
            (_, Body::Text(t)) => {
                let text = String::from_utf8_lossy(t).into_owned();
                match word.as_str() {
                    "OK" => Ok(Response::Done(Completion::Ok(text))),
                    "NO" => Ok(Response::Done(Completion::No {
                        status: SyncStatus::from_no_text(t),
                        text,
                    })),
                    "BAD" => Ok(Response::Done(Completion::Bad(text))),
                    "BYE" => Ok(Response::Done(Completion::Bye(text))),
                    _ => Err(ResponseError::Unexpected(word)),
                }
            }
            (b"OK" | b"NO" | b"BAD" | b"BYE", Body::None) => Err(ResponseError::NoText(word)),
            _ => Err(ResponseError::Unexpected(word)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{CollectFiles, Decoder, Mode};

    #[test]
    fn completion_lines_are_exact() {
        assert_eq!(SyncStatus::Ok.line(), "OK success");
        assert_eq!(
            SyncStatus::BadParameters.line(),
            "NO IMAP_PROTOCOL_BAD_PARAMETERS"
        );
        assert_eq!(
            lines::failed_to_parse("get"),
            "BAD IMAP_PROTOCOL_ERROR Failed to parse GET line"
        );
        assert_eq!(
            lines::extra_arguments("NOOP"),
            "BAD Unexpected extra arguments to Noop"
        );
        assert_eq!(
            lines::missing_argument("compress"),
            "BAD Missing required argument to Compress"
        );
    }

    #[test]
    fn client_maps_no_text_by_prefix_with_space() {
        for status in [
            SyncStatus::InvalidUser,
            SyncStatus::MailboxNonexistent,
            SyncStatus::MailboxLocked,
            SyncStatus::MailboxMoved,
            SyncStatus::MailboxNotSupported,
            SyncStatus::SyncChecksum,
            SyncStatus::SyncChanged,
            SyncStatus::SyncBadSieve,
            SyncStatus::ProtocolError,
        ] {
            let text = &status.line()[3..];
            assert_eq!(SyncStatus::from_no_text(text.as_bytes()), status);
        }
        // The bare code the 3.6 server sends has no trailing space.
        assert_eq!(
            SyncStatus::from_no_text(b"IMAP_PROTOCOL_BAD_PARAMETERS"),
            SyncStatus::Unknown
        );
        assert_eq!(
            SyncStatus::from_no_text(b"IMAP_PROTOCOL_BAD_PARAMETERS x"),
            SyncStatus::BadParameters
        );
        assert_eq!(
            SyncStatus::from_no_text(b"Unknown error"),
            SyncStatus::Unknown
        );
    }

    #[test]
    fn greeting_round_trip() {
        let g = Greeting {
            sasl: vec!["PLAIN".into(), "LOGIN".into()],
            starttls: false,
            compress: true,
            sieve_mailbox: true,
            banner: "cyrus-replica.test Cyrus sync server 3.6.1-Debian-3.6.1-4+deb12u5".into(),
        };
        let bytes = g.encode();
        assert_eq!(
            bytes,
            b"* SASL PLAIN LOGIN\r\n* COMPRESS DEFLATE\r\n* SIEVE-MAILBOX\r\n\
              * OK cyrus-replica.test Cyrus sync server 3.6.1-Debian-3.6.1-4+deb12u5\r\n"
        );
        let mut read = Greeting::default();
        let mut done = false;
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            assert!(!done);
            done = read.read_line(&line[..line.len() - 1]);
        }
        assert!(done);
        assert_eq!(read, g);
    }

    #[test]
    fn data_items_round_trip() {
        let input = b"* MISSING (1236a97198cd57e4f3c90f70c66ac0020a113d4c)\r\n\
* ENABLED (SIEVE-MAILBOX)\r\n\
* LSUB (user.dave.Projects \"user.dave.Other Stuff\")\r\n\
* QUOTA %(ROOT user.john LIMIT 10240 STORAGE 10240 MESSAGE 500 MODSEQ 6)\r\n\
* SEEN %(UNIQUEID pehbuvnnaedto8n5yeipsmna LASTREAD 1795299531 LASTUID 1 LASTCHANGE 1795299531 SEENUIDS 1)\r\n\
* SIEVE %(FILENAME myfilter.script LAST_UPDATE 1795299657 GUID 0000000000000000000000000000000000000000 ISACTIVE 0)\r\n\
* ANNOTATION %(MBOXNAME user.test ENTRY /comment USERID \"\" VALUE {11}\r\nhello\r\nworl)\r\n\
* MESSAGE %{default edaa9f52a858bda063269730eb4f9881ad296e5e 3}\r\nabc\r\n\
* MESSAGE NIL\r\n";
        let mut dec = Decoder::new(Mode::Responses);
        let mut files = CollectFiles::default();
        let mut pos = 0;
        let mut out = Vec::new();
        while pos < input.len() {
            let feed = dec.feed(&input[pos..], &mut files).unwrap();
            pos += feed.consumed;
            if feed.complete {
                let line = dec.line().unwrap();
                let Response::Data(item) = Response::from_line(line).unwrap() else {
                    panic!("not data");
                };
                let data = DataItem::decode(item, Required::ListReply).unwrap();
                out.extend(data.to_bytes());
                if let DataItem::Message(Some(f)) = &data {
                    out.extend_from_slice(&files.files[f.index]);
                    out.extend_from_slice(b"\r\n");
                }
            }
        }
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(input)
        );
    }

    #[test]
    fn completions() {
        let mut dec = Decoder::new(Mode::Responses);
        let input = b"OK success\r\nNO IMAP_SYNC_CHANGED Changed since last sync\r\nOK\r\n";
        let mut pos = 0;
        let mut got = Vec::new();
        while pos < input.len() {
            let feed = dec
                .feed(&input[pos..], &mut CollectFiles::default())
                .unwrap();
            pos += feed.consumed;
            if feed.complete {
                got.push(match Response::from_line(dec.line().unwrap()) {
                    Ok(Response::Done(c)) => Ok(c),
                    Ok(_) => panic!(),
                    Err(e) => Err(e),
                });
            }
        }
        assert_eq!(got[0], Ok(Completion::Ok("success".into())));
        assert_eq!(
            got[1],
            Ok(Completion::No {
                status: SyncStatus::SyncChanged,
                text: "IMAP_SYNC_CHANGED Changed since last sync".into()
            })
        );
        assert_eq!(got[2], Err(ResponseError::NoText("OK".into())));
    }
}
